"""Molecules: rewards against hand-computed values (docs/domains.md §B.3), SELFIES round trips, metrics on a
hand-made batch, the dedup key, the masked sampler, and dedup-top-k against plain top-K on a low-entropy model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("rdkit", reason="the molecules domain needs the mol extra: pip install 'pgraft[mol]'")
pytest.importorskip("selfies", reason="the molecules domain needs the mol extra: pip install 'pgraft[mol]'")

from pgraft.domains.molecules import data as D
from pgraft.domains.molecules import rewards as R
from pgraft.domains.molecules.model import MaskedProcess, state_of, tokens_of
from pgraft.registry import make_reward

# name: (canonical SMILES, QED, SA, logP, rings, aromatic rings, carbonyl)
TABLE = {
    "benzene": ("c1ccccc1", 0.4426, 1.0000, 1.6866, 1, 1, False),
    "ethanol": ("CCO", 0.4068, 1.9803, -0.0014, 0, 0, False),
    "cyclohexane": ("C1CCCCC1", 0.4223, 1.0000, 2.3406, 1, 0, False),
    "aspirin": ("CC(=O)Oc1ccccc1C(=O)O", 0.5501, 1.5800, 1.3101, 1, 1, True),
    "caffeine": ("Cn1c(=O)c2c(ncn2C)n(C)c1=O", 0.5385, 2.2980, -1.0293, 2, 2, True),
    "naphthalene": ("c1ccc2ccccc2c1", 0.5114, 1.0000, 2.8398, 2, 2, False),
    "methane": ("C", 0.3598, 7.3284, 0.6361, 0, 0, False),
}
HEAVY = {"benzene": 6, "ethanol": 3, "cyclohexane": 6, "aspirin": 13, "caffeine": 14, "naphthalene": 10, "methane": 1}
NAMES = list(TABLE)
SMILES = [TABLE[n][0] for n in NAMES]


def reward(name: str, **args: object) -> torch.Tensor:
    return make_reward(name, "molecules", dict(args))([*SMILES, "", "C(C"])  # type: ignore[arg-type]


def column(i: int) -> torch.Tensor:
    return torch.tensor([float(TABLE[n][i]) for n in NAMES], dtype=torch.float64)


def test_canonical_smiles_of_the_table():
    assert [D.canonical(s) for s in SMILES] == SMILES
    assert D.canonical("C1=CC=CC=C1") == "c1ccccc1" and D.canonical("C(C") == "" and D.canonical("") == ""


def test_every_reward_on_the_hand_computed_molecules():
    invalid = slice(len(SMILES), None)
    qed, sa, logp = reward("qed"), reward("sa"), reward("logp")
    torch.testing.assert_close(qed[: len(SMILES)], column(1), atol=1e-3, rtol=0)
    torch.testing.assert_close(sa[: len(SMILES)], (10 - column(2)) / 9, atol=1e-3, rtol=0)
    torch.testing.assert_close(logp[: len(SMILES)], column(3), atol=1e-3, rtol=0)
    torch.testing.assert_close(reward("rings")[: len(SMILES)], column(4))
    torch.testing.assert_close(reward("aromatic-rings")[: len(SMILES)], column(5))
    torch.testing.assert_close(reward("substructure")[: len(SMILES)], column(6))  # [#6X3]=[OX1] finds caffeine's
    plogp = column(3) - column(2)  # no ring above 6 atoms in the table
    torch.testing.assert_close(reward("penalized-logp")[: len(SMILES)], plogp, atol=2e-3, rtol=0)
    target = torch.tensor([float(-abs(HEAVY[n] - 9)) for n in NAMES], dtype=torch.float64)
    torch.testing.assert_close(reward("heavy-atoms")[: len(SMILES)], target)
    torch.testing.assert_close(reward("logp", target=1.0)[: len(SMILES)], -(column(3) - 1).abs(), atol=1e-3, rtol=0)
    torch.testing.assert_close(reward("rings", target=2)[: len(SMILES)], -(column(4) - 2).abs())
    sim = reward("similarity")
    assert sim[NAMES.index("aspirin")] == 1.0 and 0 <= float(sim[NAMES.index("methane")]) < 0.1
    # invalid and empty molecules get the named sentinel, never NaN
    for name, sentinel in (("qed", 0.0), ("sa", 0.0), ("logp", -10.0), ("penalized-logp", -20.0), ("rings", -10.0)):
        values = reward(name)
        assert torch.isfinite(values).all()
        assert values[invalid].tolist() == [sentinel, sentinel], name
    assert reward("qed", invalid_reward=-1.0)[invalid].tolist() == [-1.0, -1.0]


def test_qed_matches_rdkits_doctests():
    assert R.qed(R.mol_of("N=C(CCSCc1csc(N=C(N)N)n1)NS(N)(=O)=O")) == pytest.approx(0.253, abs=1e-3)
    assert R.qed(R.mol_of("CNC(=NCCSCc1nc[nH]c1C)NC#N")) == pytest.approx(0.234, abs=1e-3)


def test_bad_reward_arguments_name_the_field():
    with pytest.raises(ValueError, match=r"--reward-arg smarts: '\[C' is not a SMARTS"):
        make_reward("substructure", "molecules", {"smarts": "[C"})
    with pytest.raises(ValueError, match="--reward-arg target: 'C1CC' is not a SMILES"):
        make_reward("similarity", "molecules", {"target": "C1CC"})
    with pytest.raises(ValueError, match="--reward-arg target: 'abc' is invalid for reward 'logp'"):
        make_reward("logp", "molecules", {"target": "abc"})
    with pytest.raises(ValueError, match="--reward-arg target: -1 is invalid"):
        make_reward("heavy-atoms", "molecules", {"target": -1})


def test_selfies_round_trips_and_nop_padding():
    for s in [*SMILES[:3], *QM9_LIKE]:
        row = D.to_tokens(D.encode(s) or "")
        assert row is not None, s
        assert D.decode_tokens(row[None]) == [D.canonical(s)]
        shuffled = np.insert(row[row != D.NOP], [1, 2], D.NOP)  # [nop] anywhere is ignored
        assert D.decode_tokens(shuffled[None]) == [D.canonical(s)]
    assert D.decode_tokens(np.zeros((1, D.LENGTH), dtype=np.uint8)) == [""]  # all [nop]: invalid
    random_rows = np.random.default_rng(0).integers(0, len(D.VOCAB), (200, D.LENGTH))
    assert len(D.decode_tokens(random_rows)) == 200  # never raises
    assert D.encode("c1ccccc1") == D.encode("C1=CC=CC=C1")  # kekulised first


QM9_LIKE = ["CC1=CC(=O)NC1=O", "OC1COC1C#N", "CN1C(=O)CC1(C)O", "[NH3+]CC([O-])=O", "FC(F)(F)C1CC1", "C#CC1(O)CN1"]


def test_fixture_csv_is_parsed_without_importing_qm9pack(tmp_path):
    import sys

    path = tmp_path / "qm9_part1.csv"
    path.write_text('XYZ_file,Index,SMILES,InChi\n"a",1,"C","x"\n"b",2,"CCO","y"\n"c",3,"OCC","z"\n')
    raw = D.read_smiles_csv([path])
    assert raw == ["C", "CCO", "OCC"]
    smiles, tokens = D.encode_all(raw)
    assert smiles == ["C", "CCO", "CCO"] and tokens.shape == (3, D.LENGTH)
    assert "qm9pack" not in sys.modules
    with pytest.raises(ValueError, match="no 'SMILES_X' column"):
        D.read_smiles_csv([path], column="SMILES_X")


def test_qm9_files_are_found_from_the_wheels_metadata():
    import sys

    pytest.importorskip("importlib.metadata")
    files = D.qm9_files()
    assert [f.name for f in files] == ["qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv"]
    assert "qm9pack" not in sys.modules


def states(smiles: list[str]) -> torch.Tensor:
    rows = np.stack([D.to_tokens(D.encode(s) or "") for s in smiles])
    return state_of(torch.from_numpy(rows.astype(np.int64)), len(D.VOCAB))


def test_dedup_key_is_the_canonical_smiles():
    from pgraft.domains.molecules.metrics import MoleculesEvaluator

    batch = ["CCO", "OCC", "C(O)C", "c1ccccc1", "C1=CC=CC=C1", "CC"]
    keys = MoleculesEvaluator(None, None, None, None, True).dedup_key(0.0)(states(batch))
    assert keys == ["CCO", "CCO", "CCO", "c1ccccc1", "c1ccccc1", "CC"]
    from rdkit import Chem

    assert {Chem.inchi.MolToInchiKey(Chem.MolFromSmiles(s)) for s in batch[:3]} == {"LFQSCWFLJHTTHZ-UHFFFAOYSA-N"}


def test_validity_uniqueness_novelty_on_the_hand_made_batch():
    from pgraft.domains.molecules.training import generation_stats

    batch = [D.canonical(s) for s in ["CCO", "OCC", "C(O)C", "c1ccccc1", "CC", "C(C"]]
    stats = generation_stats(batch, frozenset({"CC"}), frozenset({"CC", "CCO"}))
    assert stats["validity"] == pytest.approx(5 / 6)
    assert stats["uniqueness"] == pytest.approx(3 / 5)
    assert stats["novelty"] == pytest.approx(2 / 3)
    assert stats["in_qm9"] == pytest.approx(4 / 5)


def test_grid_image_size_and_invalid_tiles():
    from PIL import Image

    from pgraft.domains.molecules.metrics import grid_png

    png = grid_png(["CCO", "", "CCO"], [0.5, 0.0, 0.5], per_row=3, size=100)
    import io

    assert Image.open(io.BytesIO(png)).size == (300, 100)


def test_the_masked_step_reveals_at_the_posterior_rate():
    """From all-masked at t, a step to s reveals each position with probability (t - s)/t, and draws the
    token from the model's probabilities; the last step reveals everything."""
    process = MaskedProcess()
    grid = process.make_scheduler(4)
    assert grid.timesteps.tolist() == [1000, 750, 500, 250]
    n, length, vocab = 4000, 5, 3
    x = torch.randn(n, length, vocab + 1)  # the engine's initial noise is the all-masked row
    assert (tokens_of(x) == vocab).all()
    probs = torch.tensor([0.2, 0.3, 0.5]).expand(n, length, vocab)
    noise = torch.randn(n, length, vocab + 1, generator=torch.Generator().manual_seed(0))
    out = tokens_of(process.step(grid, probs, torch.tensor(500), x, 1.0, noise))
    revealed = out != vocab
    assert float(revealed.double().mean()) == pytest.approx(0.5, abs=0.02)  # (500 - 250) / 500
    freq = torch.bincount(out[revealed], minlength=vocab).double() / revealed.sum()
    torch.testing.assert_close(freq, torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64), atol=0.02, rtol=0)
    last = tokens_of(process.step(grid, probs, torch.tensor(250), x, 1.0, noise))
    assert (last != vocab).all()
    kept = tokens_of(process.step(grid, probs, torch.tensor(250), state_of(out, vocab), 1.0, noise))
    assert (kept[revealed] == out[revealed]).all()  # revealed tokens stay
    det = tokens_of(process.step(grid, probs, torch.tensor(500), x, 0.0, None))
    assert ((det != vocab).sum(1) == round(length * 0.5)).all() and (det[det != vocab] == 2).all()


def test_sampler_and_training_loss_run_through_the_engine():
    from pgraft.core.events import drain
    from pgraft.core.finetune import FinetuneData, finetune_iter
    from pgraft.core.sampling import sample, sample_seeds
    from pgraft.domains.molecules.model import build_model, build_network

    torch.manual_seed(0)
    model = build_model(build_network("tiny"))
    traj = sample(model, sample_seeds(0, 1, 8), 10, cutoff=0.5, finetuned=model.trainable_copy(1).frozen())
    assert (tokens_of(traj.samples) < len(D.VOCAB)).all()
    assert traj.x_cut is not None and ((tokens_of(traj.x_cut) == len(D.VOCAB)).double().mean() > 0.2)
    copy = model.trainable_copy(0)
    data = FinetuneData(traj.x_cut, None, traj.cutoff_timestep, traj.cutoff_timestep)
    losses = drain(finetune_iter(copy, data, 3, 8, 1e-3, 0))
    assert all(math.isfinite(v) for v in losses)


class PeakedMarginals(torch.nn.Module):
    """A low-entropy 'model': every position puts probability `peak` on one molecule's token (seeded rest)."""

    def __init__(self, smiles: str, peak: float = 0.93) -> None:
        super().__init__()
        row = torch.from_numpy(D.to_tokens(D.encode(smiles) or "").astype(np.int64))  # type: ignore[union-attr]
        v = len(D.VOCAB)
        rest = torch.rand(D.LENGTH, v, generator=torch.Generator().manual_seed(0))
        rest = (1 - peak) * rest / rest.sum(1, keepdim=True)
        probs = torch.where(torch.nn.functional.one_hot(row, v).bool(), torch.tensor(peak), rest)
        self.table = torch.nn.Parameter(probs.log())
        self.vocab = v
        self.config = {"vocab": v, "length": D.LENGTH}

    def logits(self, tokens: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return self.table.expand(len(tokens), -1, -1)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, cond: object = None) -> torch.Tensor:
        return self.logits(tokens_of(x), timesteps)


TARGET = "CC1=CC(=O)NC1=O"


def test_dedup_top_k_on_a_low_entropy_model_keeps_k_distinct_where_top_k_takes_copies():
    from pgraft.core.acceptance import make_rule
    from pgraft.core.sampling import sample, sample_seeds
    from pgraft.domains.molecules.metrics import MoleculesEvaluator
    from pgraft.domains.molecules.model import build_model

    base = build_model(PeakedMarginals(TARGET))  # type: ignore[arg-type]
    x = sample(base, sample_seeds(0, 1, 200), 10).samples
    smiles = R.smiles_of(x)
    assert smiles.count(TARGET) > 20  # one molecule alone fills the top 20
    rewards = make_reward("similarity", "molecules", {"target": TARGET})(x)
    key = MoleculesEvaluator(base, None, None, None, True).dedup_key(0.0)
    plain = make_rule("top-k", k=20, group_size=200).select(rewards)
    dedup = make_rule("dedup-top-k", k=20, group_size=200, key=key).with_samples(x).select(rewards)  # type: ignore[attr-defined]
    assert {smiles[i] for i in plain.nonzero().flatten().tolist()} == {TARGET}
    kept = [smiles[i] for i in dedup.nonzero().flatten().tolist()]
    assert len(kept) == 20 and len(set(kept)) == 20 and TARGET in kept


@pytest.mark.slow
def test_a_round_of_dedup_top_k_writes_candidates_and_the_grid(tmp_path):
    import csv

    from pgraft.domains.molecules.model import build_model
    from pgraft.graft.config import RunConfig
    from pgraft.graft.runner import RoundRunner, build_setup, run_to_end

    target = TARGET
    base = build_model(PeakedMarginals(target))  # type: ignore[arg-type]
    results = {}
    for rule in ("top-k", "dedup-top-k"):
        config = RunConfig(
            model="molecules",
            reward="similarity",
            reward_args={"target": target},
            rule=rule,
            k=20,
            samples=200,
            preview=6,
            num_inference_steps=10,
            rounds=1,
            finetune_steps=2,
            batch_size=16,
            seed=0,
        )
        runner = RoundRunner(config, out=tmp_path / rule, setup=build_setup(config, base=base))
        rounds = run_to_end(runner)
        results[rule] = rounds[0]
    from pgraft.registry import get_domain

    draw = get_domain("molecules").samples_figure
    assert draw is not None
    figure = draw(rounds[0], rounds[-1], runner.setup.evaluator)  # the app's before/after grids and histograms
    assert [t.type for t in figure.data[:2]] == ["image", "image"]
    assert figure.layout.shapes  # the acceptance cut on the reward histogram
    smiles = R.smiles_of(results["top-k"].samples)
    assert smiles.count(target) > 20  # the model repeats one molecule: it fills the top 20 on its own
    plain, dedup = (results[r] for r in ("top-k", "dedup-top-k"))
    assert {smiles[i] for i in plain.accepted.nonzero().flatten().tolist()} == {target}
    kept = [smiles[i] for i in dedup.accepted.nonzero().flatten().tolist()]
    assert len(kept) == 20 and len(set(kept)) == 20
    assert plain.metrics["distinct_accepted_frac"] == 1 / 20 and dedup.metrics["distinct_accepted_frac"] == 1.0
    folder = dedup.path
    rows = list(csv.DictReader((folder / "candidates.csv").read_text().splitlines()))
    assert [r["smiles"] for r in rows] == smiles and sum(int(r["accepted"]) for r in rows) == 20
    assert all(r["dedup_key"] == r["smiles"] for r in rows)
    assert (folder / "preview.png").read_bytes()[:4] == b"\x89PNG"


def test_a_user_reward_receives_smiles_with_empty_strings_for_invalid(tmp_path, monkeypatch):
    (tmp_path / "my_mol_reward.py").write_text(
        "import torch\n\ndef length(smiles):\n    assert isinstance(smiles, list)\n"
        "    return torch.tensor([float(len(s)) for s in smiles])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = make_reward("my_mol_reward:length", "molecules", allow_import=True)
    rows = states(["CCO", "c1ccccc1"])
    empty = state_of(torch.zeros(1, D.LENGTH, dtype=torch.long), len(D.VOCAB))  # all [nop]: invalid
    assert fn(torch.cat([rows, empty])).tolist() == [3.0, 8.0, 0.0]
