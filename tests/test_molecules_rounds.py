"""The shipped molecule model: its card's figures, the shipping bar, and GRAFT / P-GRAFT rounds that raise QED
while uniqueness and realism hold."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("rdkit", reason="the molecules domain needs the mol extra: pip install 'pgraft[mol]'")
pytest.importorskip("selfies", reason="the molecules domain needs the mol extra: pip install 'pgraft[mol]'")

from pgraft.domains.molecules.cards import BAR_IN_QM9, BAR_UNIQUENESS
from pgraft.domains.molecules.model import weights_path
from pgraft.families.small import read_safetensors_metadata


def shipped() -> tuple[dict, dict, dict, str]:
    meta = read_safetensors_metadata(weights_path("molecules"))
    card = weights_path("molecules").with_suffix(".md").read_text()
    stats = json.loads(meta["evaluation"])
    stats["t1"] = json.loads(meta["evaluation_t1"])
    stats["temperature"] = json.loads(meta["sampling_temperature"])
    return json.loads(meta["training"]), stats, json.loads(meta["baseline"]), card


def test_the_card_states_the_figures_stored_with_the_weights():
    record, stats, baseline, card = shipped()
    assert f"{record['steps']} steps of batch {record['batch_size']}" in card
    assert f"**{record['seconds']:.0f} s**" in card
    assert f"sampling temperature {stats['temperature']:g} (shipped)" in card
    for s in (stats, stats["t1"], baseline):
        row = f"| {s['validity']:.3f} | {s['uniqueness']:.3f} | {s['novelty']:.3f} | {s['in_qm9']:.3f} |"
        assert row in card
    met = stats["in_qm9"] >= BAR_IN_QM9 and stats["uniqueness"] >= BAR_UNIQUENESS
    assert ("**met**" in card) == met
    assert stats["in_qm9"] > baseline["in_qm9"] + 0.05  # clearly above sampling each position from its marginal
    assert stats["uniqueness"] >= BAR_UNIQUENESS and stats["validity"] == 1.0
    assert stats["t1"]["in_qm9"] > 0.304  # the continuous prototype after the same 6,000 steps


@pytest.mark.slow
def test_the_card_figures_are_reproduced_by_sampling_the_shipped_model():
    from pgraft.domains.molecules.training import evaluate
    from pgraft.registry import load_model

    _, stats, _, _ = shipped()
    model = load_model("molecules")
    assert model.temperature == stats["temperature"]
    again = evaluate(model, 2000)
    for key in ("validity", "uniqueness", "novelty", "in_qm9", "heavy_atoms_mean"):
        assert again[key] == pytest.approx(stats[key], abs=0.01), key


@pytest.mark.slow
@pytest.mark.parametrize("method", ["graft", "pgraft"])
def test_a_dedup_round_raises_qed_and_holds_uniqueness(method):
    from pgraft.graft.config import RunConfig
    from pgraft.graft.runner import RoundRunner, run_to_end

    config = RunConfig(
        model="molecules",
        reward="qed",
        rule="dedup-top-k",
        k=200,
        samples=1000,
        preview=12,
        num_inference_steps=25,
        finetune_steps=100,
        batch_size=128,
        lr=2e-4,
        rounds=1,
        method=method,
        cutoff=0.5,
        seed=0,
    )
    first, last = run_to_end(RoundRunner(config))
    assert first.metrics["n_accepted"] == 200 and first.metrics["distinct_accepted_frac"] == 1.0
    assert last.metrics["qed_mean"] > first.metrics["qed_mean"] + 0.01, (first.metrics, last.metrics)
    print({k: (first.metrics[k], last.metrics[k]) for k in ("qed_mean", "uniqueness", "in_qm9", "fd_descriptors")})
    assert last.metrics["uniqueness"] >= first.metrics["uniqueness"] - 0.03
    assert last.metrics["in_qm9"] >= first.metrics["in_qm9"] - 0.05
