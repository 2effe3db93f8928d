"""The app's gradio-free parts: controls → RunConfig, safe reward arguments, the cutoff's σ, the figures."""

import math
import re
import shlex

import numpy as np
import pandas as pd
import pytest
import torch

from pgraft.cli.commands import build_parser
from pgraft.cli.run import config_from_args
from pgraft.core.acceptance import BestOfN, Quantile, Threshold
from pgraft.core.process import VPProcess
from pgraft.core.sampling import snap_cutoff
from pgraft.domains.toy2d.exact import Grid2D
from pgraft.domains.toy2d.plots import coarsen, mass_level
from pgraft.graft.config import RunConfig
from pgraft.plots.rounds import acceptance_cut, reward_histogram, round_curves, rule_reshaping
from pgraft.registry import MODELS
from pgraft.ui.controls import Controls, describe_cutoff, domain_defaults, parse_reward_args
from pgraft.ui.presets import PRESETS, available_presets

BASE = dict(
    model="toy2d",
    dataset="ring8",
    reward="distance",
    reward_args="px=1, py=-2",
    prompts=["3"],
    method="pgraft",
    cutoff=0.4,
    rule="best-of-n",
    threshold=0.0,
    quantile=0.75,
    n=4.0,
    k=64.0,
    beta=1.0,
    samples=512.0,
    rounds=2.0,
    finetune_steps=50.0,
    lr=1e-3,
    seed=3.0,
    num_inference_steps=40.0,
    sampler="ddpm",
    eta=1.0,
    batch_size=128.0,
    preview=64.0,
    anchoring="intermediate",
)


def test_controls_become_a_validated_config_with_only_the_rules_own_parameter():
    cfg = Controls(**BASE).to_config("cpu")
    assert cfg.reward_args == {"px": 1.0, "py": -2.0}
    assert cfg.samples == 512 and isinstance(cfg.samples, int) and cfg.n == 4
    assert cfg.prompts == []  # toy2d is not a prompted model: the prompt box is ignored
    assert cfg.threshold is None and cfg.quantile is None and cfg.beta is None
    quant = Controls(**{**BASE, "rule": "quantile"}).to_config("cpu")
    assert quant.quantile == 0.75 and quant.threshold is None


@pytest.mark.parametrize(
    ("change", "flag"),
    [
        ({"samples": 510.0}, "--n"),  # best-of-4 needs a multiple of 4
        ({"samples": 512.5}, "--samples"),
        ({"lr": None}, "--lr"),
        ({"rule": "quantile", "quantile": 1.0}, "--quantile"),
        ({"cutoff": 1.0}, "--cutoff"),
    ],
)
def test_invalid_controls_name_the_flag(change, flag):
    with pytest.raises(ValueError, match=flag):
        Controls(**{**BASE, **change}).to_config("cpu")


@pytest.mark.parametrize(
    "text",
    ["__import__('os').system('true')", "px=__import__('os')", "px=1; evil=2", "px", "px=1+1", "radius=2"],
)
def test_reward_arguments_are_parsed_never_executed(text):
    with pytest.raises(ValueError, match="--reward-arg"):
        parse_reward_args("distance", text)


def test_reward_arguments_take_the_declared_types():
    assert parse_reward_args("mode", "index=3") == {"index": 3}
    assert parse_reward_args("distance", " px = -1.5 ,\n py=2") == {"px": -1.5, "py": 2.0}
    assert parse_reward_args("x", "") == {}


def test_every_rewards_own_defaults_read_back_from_the_box_they_fill():
    """What the app writes into the reward-arguments box for a reward is accepted as it stands (the similarity
    reward's aspirin SMILES was refused as "not a plain word")."""
    from pgraft.registry import MODELS, domain_rewards
    from pgraft.ui.controls import format_reward_args, reward_params

    for model, spec in MODELS.items():
        for reward in domain_rewards(spec.domain):
            params = reward_params(reward, model)
            parsed = parse_reward_args(reward, format_reward_args(reward), model) if params else {}
            assert parsed == {k: float(v) if isinstance(v, float) else v for k, v in params.items()}, reward


def test_smiles_and_smarts_arguments_keep_their_characters_and_nothing_else():
    pytest.importorskip("rdkit")
    smiles = "CC(=O)Oc1ccccc1C(=O)O"
    assert parse_reward_args("similarity", f"target={smiles}, invalid_reward=-1", "molecules") == {
        "target": smiles,
        "invalid_reward": -1.0,
    }
    assert parse_reward_args("substructure", "smarts=[C,N]=O; invalid_reward=-1", "molecules")["smarts"] == "[C,N]=O"
    assert parse_reward_args("substructure", "smarts=[c;R]", "molecules") == {"smarts": "[c;R]"}
    assert parse_reward_args("logp", "target=2.5", "molecules") == {"target": "2.5"}  # a number, kept as text
    # the value only ever reaches RDKit's parser; what the pattern guarantees is its alphabet and length
    for bad in ("C O", "'CCO'", 'CC"', "C" * 501, "C`C", "C<C"):
        with pytest.raises(ValueError, match=r"--reward-arg target: .* SMILES or SMARTS"):
            parse_reward_args("similarity", f"target={bad}", "molecules")
    with pytest.raises(ValueError, match="plain word or number"):
        parse_reward_args("logp", f"target={smiles}", "molecules")  # not a notation there


def test_cutoff_label_gives_the_noise_level_of_the_snapped_timestep():
    process = VPProcess(beta_schedule="squaredcos_cap_v2")
    k, timestep = snap_cutoff(process, 100, 0.4)
    text = describe_cutoff(process, 100, 0.4)
    assert f"σ = {process.noise_to_signal(timestep):.2f}" in text
    assert f"first {k} of 100 steps" in text
    assert "equals GRAFT" in describe_cutoff(process, 100, 0.001)


def test_command_line_quotes_values_and_round_trips_through_the_cli():
    cfg = RunConfig(model="toy2d", reward="distance", reward_args={"px": 1.5}, prompts=[], method="pgraft", n=8)
    spaced = cfg.replace(prompts=["a 7", "3"])
    assert "--prompts 'a 7' 3" in spaced.command_line()
    argv = shlex.split(cfg.command_line())[1:]
    back = config_from_args(build_parser().parse_args(argv))
    assert back.replace(reward_args={}) == cfg.replace(reward_args={})
    assert float(back.reward_args["px"]) == 1.5


def test_presets_are_valid_configurations_with_valid_rewards():
    from pgraft.registry import REWARDS

    presets = available_presets()
    assert {"Push right: GRAFT basics", "Reward hacking: a ring off the data"} <= {p.name for p in presets}
    for preset in presets:
        values = {**BASE, "prompts": [], **domain_defaults(preset.values["model"]), **preset.values}
        config = Controls(**values).to_config("cpu")
        assert REWARDS[config.reward].domain == MODELS[config.model].domain
        assert parse_reward_args(config.reward, values["reward_args"]) == config.reward_args
    assert len(presets) == sum(p.values["model"] in MODELS for p in PRESETS)


def test_histogram_fractions_and_accepted_mass():
    gen = np.random.default_rng(0)
    base, cur = gen.normal(size=1000), gen.normal(1.0, 1.0, size=800)
    accepted = cur > np.quantile(cur, 0.75)
    fig = reward_histogram(base, cur, accepted, 2, cut=acceptance_cut(Quantile(0.75), cur, accepted))
    base_bar, cur_bar, acc_bar = fig.data
    assert sum(base_bar.y) == pytest.approx(1.0) and sum(cur_bar.y) == pytest.approx(1.0)
    assert sum(acc_bar.y) == pytest.approx(accepted.mean())  # accepted mass as a share of the round's batch
    assert "accepted: 25" in acc_bar.name
    assert fig.layout.shapes[0].x0 == pytest.approx(cur[accepted].min())  # the cut line sits at the cut
    assert acceptance_cut(Threshold(0.3), cur, accepted) == 0.3
    assert acceptance_cut(BestOfN(4), cur, accepted) is None


def _kl_in_title(fig) -> float:
    match = re.search(r"KL\(accepted ‖ current\) = ([0-9.]+)", fig.layout.title.text)
    assert match, fig.layout.title.text
    return float(match.group(1))


def test_reshaping_of_best_of_4_shows_u_cubed_and_kl_0636():
    fig = rule_reshaping(BestOfN(4), np.random.default_rng(0).normal(size=500))
    u, a = np.asarray(fig.data[0].x), np.asarray(fig.data[0].y)
    np.testing.assert_allclose(a, u**3)
    np.testing.assert_allclose(np.asarray(fig.data[1].y), 3 * np.log(u))
    assert "closed form 0.636" in fig.layout.title.text
    assert _kl_in_title(fig) == pytest.approx(math.log(4) - 3 / 4, abs=2e-3)


def test_reshaping_of_a_threshold_marks_the_never_accepted_part():
    rewards = np.linspace(0, 1, 1001)
    fig = rule_reshaping(Threshold(0.7), rewards)
    assert "keeps 30 %" in fig.layout.title.text
    assert _kl_in_title(fig) == pytest.approx(-math.log(0.3), abs=0.01)  # KL of keeping the top 30 %


def test_round_curves_draw_reward_band_target_and_quality():
    table = pd.DataFrame(
        dict(
            round=[0, 1, 2],
            reward_mean=[0.0, 1.0, 2.0],
            reward_std=[1.0, 1.0, 0.5],
            accept_rate=[0.25] * 3,
            target_reward=[0.0, 1.1, 2.1],
            ks_to_target=[0.1, 0.2, 0.1],
            tv_to_target=[0.3, 0.3, 0.2],
            loglik=[-3.0, -3.2, -3.5],
        )
    )
    fig = round_curves(table, "toy2d")
    names = [t.name for t in fig.data]
    assert {"reward (measured)", "reward of the exact target", "accepted", "KS, rewards", "log-likelihood"} <= set(
        names
    )
    band = fig.data[0]
    np.testing.assert_allclose(band.y[:3], [1.0, 2.0, 2.5])  # mean + std, then mean − std backwards


def test_sample_picture_helpers_preserve_mass():
    grid = Grid2D(np.linspace(-1, 1, 30), np.linspace(-2, 2, 30))
    masses = torch.rand(900, generator=torch.Generator().manual_seed(0)).numpy()
    _, _, block = coarsen(grid, masses, 3)
    assert block.shape == (10, 10) and block.sum() == pytest.approx(masses.sum())
    level = mass_level(masses, 0.5)
    assert masses[masses >= level].sum() >= 0.5 * masses.sum()
    assert masses[masses > level].sum() < 0.5 * masses.sum()


@pytest.mark.skipif("digits-prompted" not in MODELS, reason="the digits models (issue 3) are not registered")
def test_digit_pictures_mark_accepted_samples_and_show_every_prompt():
    from pgraft.domains.digits.models import build_digits_model, unet_config
    from pgraft.graft.runner import RoundRunner, build_setup, run_to_end
    from pgraft.ui.views import RunView

    model = build_digits_model("digits-prompted", unet_config("tiny", conditional=True)).frozen()
    cfg = RunConfig(
        model="digits-prompted",
        prompts=["3", "8"],
        reward="prompt-match",
        samples=16,
        preview=4,
        rounds=1,
        num_inference_steps=4,
        finetune_steps=2,
        batch_size=8,
        rule="best-of-n",
        n=4,
        device="cpu",
    )
    setup = build_setup(cfg, base=model)
    view = RunView(setup)
    for result in run_to_end(RoundRunner(cfg, setup=setup)):
        view.add(result)
    figs = view.figures()
    assert len([t for t in figs.samples.data if t.type == "heatmap"]) == 3  # before, after, candidates
    shown = view.latest.groups.numpy()
    picked = [i for pair in zip(np.flatnonzero(shown == 0), np.flatnonzero(shown == 1)) for i in pair][:12]
    frames = [s for s in figs.samples.layout.shapes if s.type == "rect"]
    assert len(frames) == int(view.latest.accepted.numpy()[picked].sum())  # one green frame per accepted sample
    rewards = [a.text for a in figs.samples.layout.annotations if a.text and a.text[0].isdigit()]
    assert len(rewards) == 4 * 2 + 4 * 2 + 12  # previews (4 per prompt) before and after, 12 candidates
    assert {"to real digits", "class entropy (nats; 2.30 = all ten)"} <= {t.name for t in figs.curves.data}


@pytest.mark.parametrize(("rule", "redrawn"), [("best-of-n", False), ("threshold", True)])
def test_rule_plot_is_redrawn_only_when_it_depends_on_the_rewards(rule, redrawn):
    from pgraft.graft.runner import RoundRunner, build_setup, run_to_end
    from pgraft.ui.views import RunView

    cfg = RunConfig(
        model="toy2d-exact", reward="x", rule=rule, threshold=0.5, samples=64, preview=8, rounds=2,
        num_inference_steps=10, finetune_steps=2, batch_size=32, device="cpu",
    )  # fmt: skip
    setup = build_setup(cfg)
    view = RunView(setup)
    drawn = []
    for result in run_to_end(RoundRunner(cfg, setup=setup)):
        view.add(result)
        drawn.append(view.figures().reshaping is not None)
    assert drawn == [True, redrawn, redrawn]  # a rank rule's a(u) is the same every round
    view.reshaping_shown = False  # the page previewed another rule: the run's own plot comes back next round
    assert view.figures().reshaping is not None


def _launcher():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("pgraft_app_launcher", Path(__file__).parents[1] / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launcher_requires_a_login_beyond_loopback(capsys):
    launcher = _launcher()
    assert launcher.parse_args([]).host == "127.0.0.1"
    assert launcher.parse_args(["--host", "::1"]).auth is None
    with pytest.raises(SystemExit):
        launcher.parse_args(["--host", "0.0.0.0"])
    assert "--auth" in capsys.readouterr().err
    args = launcher.parse_args(["--host", "0.0.0.0", "--auth", "ada:s3cret:x"])
    assert args.auth == ("ada", "s3cret:x")
    with pytest.raises(SystemExit, match="user:password"):
        launcher.parse_args(["--auth", "nopassword"])


def test_threshold_slider_spans_the_observed_rewards_with_round_ends():
    from pgraft.ui.rounds_handlers import _nice_range

    rewards = np.random.default_rng(1).normal(0.3, 2.0, size=256)
    lo, hi = _nice_range(rewards)
    assert lo <= rewards.min() and hi >= rewards.max()
    assert hi - lo < 1.1 * (rewards.max() - rewards.min())  # not much wider than what was seen
    assert len(repr(lo)) <= 6 and len(repr(hi)) <= 6  # e.g. -5.6 and 6.3, not -5.6447925...
