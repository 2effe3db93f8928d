"""Issue 16, handlers called directly: the bugs a first-time user tripped over, the run list and its
comparison, runs kept in `--runs-dir` and reopened after a restart, rewards given at launch, the Export panel."""

import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest

from pgraft.cli.commands import build_parser
from pgraft.cli.run import config_from_args
from pgraft.graft.config import RunConfig
from pgraft.ui.controls import Controls, domain_defaults
from pgraft.ui.models import BaseModels
from pgraft.ui.presets import available_presets
from pgraft.ui.rounds_handlers import RUN_OUTPUTS, RoundsHandlers
from pgraft.ui.sessions import SessionStore

FAST = dict(samples=256, preview=64, num_inference_steps=20, finetune_steps=20, batch_size=128)
FRESH = dict(  # the Rounds tab's controls on a fresh page (the default model's values)
    model="toy2d", dataset="ring8", reward="x", reward_args="", prompts=[], method="graft", cutoff=0.5,
    rule="best-of-n", threshold=0.0, quantile=0.75, n=4, k=64, beta=1.0, seed=0, anchoring="intermediate",
    lr=1e-3, sampler="ddpm", eta=1.0,
)  # fmt: skip


def _request(name: str = "scout") -> SimpleNamespace:
    return SimpleNamespace(session_hash=name, cookies={})


@pytest.fixture(scope="module")
def models() -> BaseModels:
    return BaseModels("cpu")


@pytest.fixture
def handlers(tmp_path, models) -> RoundsHandlers:
    return RoundsHandlers(SessionStore(tmp_path / "sessions"), models, "cpu")


def _controls(**changes) -> Controls:
    values = {**FRESH, **{k: v for k, v in domain_defaults("toy2d").items() if k in Controls.names()}, **FAST}
    return Controls(**{**values, **changes})


def _run(handlers: RoundsHandlers, request, **changes) -> tuple:
    outs = list(handlers.run(_controls(**changes), request, lambda *a, **k: None))
    return outs[-1]


def _ordered(controls: Controls) -> list:
    return [controls.as_dict()[name] for name in Controls.names()]


def _value(update, default):
    return update.get("value", default) if isinstance(update, dict) else default


# -- bugs -------------------------------------------------------------------------------------------------
def test_bias_variance_studies_the_reward_arguments_of_the_rounds_tab():
    from pgraft.studies.bias_variance.curves import CurvePoint, CurveSpec
    from pgraft.studies.bias_variance.study import study_iter
    from pgraft.ui.bias_variance_tab import make_specs, run_study, studied

    args = ("toy2d-exact", "mode", "asymmetric", "", "best-of-n", 4, "0.3", 16, 2, 20, 0, False, 64, 1, 5, None)
    config, curve, _ = make_specs(*args, "cpu", reward_args="index=4")
    assert config.reward_args == {"index": 4} and config.dataset == "asymmetric"
    assert "index=4" in studied("toy2d-exact", "asymmetric", "mode", "index=4", [])
    shown = [o[1] for o in run_study(*args, 0.4, reward_args="index=4")][-1]
    expected = [e.row for e in study_iter(config, CurveSpec((0.3,), 16, 2)) if isinstance(e, CurvePoint)]
    other = [e.row for e in study_iter(config.replace(reward_args={"index": 0}), curve) if isinstance(e, CurvePoint)]
    v = float(shown["V"].iloc[0])
    assert v == pytest.approx(float(expected[0]["V"]), rel=1e-4)  # exactly what the CLI computes for index=4
    assert abs(v - float(other[0]["V"])) > 1e-3  # and not index 0's curve
    with pytest.raises(gr.Error, match="not an argument of reward 'mode'"):
        list(run_study(*args, 0.4, reward_args="digit=3"))


def test_sweep_max_loss_blank_is_the_documented_bound_and_the_box_shows_blank():
    from pgraft.ui.bias_variance_tab import build_tab, make_specs, parse_max_loss
    from pgraft.ui.context import TabContext

    with gr.Blocks() as demo, gr.Tabs() as tabs:
        with gr.Tab("Rounds", id="rounds"):
            parts = gr.Dropdown(["toy2d"], value="toy2d"), gr.Dropdown(["x"], value="x"), gr.Slider(), gr.Radio()
        with gr.Tab("Bias–variance"):
            build_tab(TabContext("cpu", "heavy", 1, *parts, tabs, "rounds"))
    box = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "bv-max-loss")
    assert box.value == "" and isinstance(box, gr.Textbox)  # a blank gr.Number shows, and sends, 0
    args = ("toy2d-exact", "x", "ring8", "", "best-of-n", 4, "0.3", 16, 2, 20, 0, True, 64, 1, 5)
    assert make_specs(*args, box.preprocess(box.value), "cpu")[2].max_realism_loss is None
    assert make_specs(*args, "0.25", "cpu")[2].max_realism_loss == 0.25
    assert parse_max_loss("0") == 0.0
    with pytest.raises(ValueError, match="max realism loss: 'lots' is invalid"):
        parse_max_loss("lots")


@pytest.mark.parametrize(
    "preset",
    [  # a digits preset samples 256 base digits for the rule panel: about 10 s each on 2 cores
        pytest.param(p.name, marks=[pytest.mark.slow] if not p.values["model"].startswith("toy") else [])
        for p in available_presets()
    ],
)
def test_every_preset_sets_a_consistent_state_from_a_fresh_page(handlers, preset):
    updates = handlers.preset(preset)
    values = {k: _value(updates.get(k), v) for k, v in _controls().as_dict().items()}
    threshold, _q, _n, _k, _b, figure = handlers.rule_changed(_request(), *_ordered(Controls(**values)))
    text = " ".join(a.text for a in figure.layout.annotations or [])
    assert "Cannot" not in text and "not an argument" not in text
    lo, hi, value = threshold["minimum"], threshold["maximum"], threshold["value"]
    assert lo <= value <= hi  # a stale hidden threshold (0 on a fresh page) is replaced, never left outside


def test_the_threshold_slider_never_refuses_what_the_page_sends():
    from pgraft.ui import forms
    from pgraft.ui.forms import control

    with gr.Blocks():
        slider = control("threshold", free=True)
    slider.maximum = -0.1  # the range the base rewards of reward 'mode' gave it
    assert slider.preprocess(0.0) == 0.0  # Gradio's own slider: "Value 0 is greater than maximum value -0.1"
    # After an update Gradio keeps a new instance of the class, built from the component's config, per session.
    rebuilt = slider.__class__(**{**slider.recover_kwargs(slider.get_config()), "maximum": -0.1})
    assert rebuilt.preprocess(0.0) == 0.0 and rebuilt.get_block_name() == "slider"
    assert not list(Path(forms.__file__).parent.glob("*.pyi"))  # Gradio wrote no stub beside the module


def test_a_threshold_typed_out_of_range_is_brought_back_and_said(handlers):
    values = _ordered(_controls(rule="threshold", threshold=100.0))
    with pytest.warns(UserWarning, match=r"Threshold τ: 100 is above every base reward .* set to"):
        threshold, *_rest, figure = handlers.threshold_typed(_request(), *values)
    assert threshold["value"] == threshold["maximum"] < 100
    assert "Cannot" not in " ".join(a.text for a in figure.layout.annotations or [])


def test_a_round_that_accepts_almost_nothing_is_warned_of(handlers):
    with pytest.warns(UserWarning, match=r"Round 0 accepted 1 of 256 samples \(0.4%\)"):
        last = _run(handlers, _request(), rule="top-k", k=1, rounds=1)
    assert "accepted 1 of 256" in last[0] and "(almost) nothing" in last[0]
    with pytest.warns(UserWarning, match=r"no sample was accepted"):  # none at all: the runner says so
        _run(handlers, _request("none"), rule="threshold", threshold=100.0, rounds=1)


def test_the_status_counts_the_rounds_after_the_base():
    from pgraft.ui.rounds_handlers import _round_status

    latest = SimpleNamespace(round=3, metrics={"reward_mean": 1.0, "n_accepted": 4}, rewards=np.zeros(16))
    view = SimpleNamespace(latest=latest, rows=[{}] * 4)
    text = _round_status(view, RunConfig(rounds=3), 1.0, [], finished=True)
    assert "3 rounds after the base" in text and "4 rounds" not in text


def test_export_names_every_flag_that_applies_and_nothing_that_does_not():
    from pgraft.ui.export import export_texts

    graft = RunConfig(model="toy2d", reward="mode", reward_args={"index": 4}, method="graft", rule="best-of-n", n=4)
    yaml_text, command, launch = export_texts(graft)
    assert "cutoff" not in yaml_text and "anchoring" not in yaml_text and "quantile" not in yaml_text
    for flag in ("--rule best-of-n", "--n 4", "--method graft", "--seed 0", "--sampler ddpm", "--dataset ring8"):
        assert flag in command  # each equals today's default, and is still given
    back = config_from_args(build_parser().parse_args(shlex.split(command)[1:]))
    assert back.replace(reward_args={}, device="auto") == graft.replace(reward_args={})
    pgraft = graft.replace(method="pgraft", cutoff=0.3)
    assert "cutoff: 0.3" in export_texts(pgraft)[0] and "--cutoff 0.3" in export_texts(pgraft)[1]
    assert "accelerate launch --multi_gpu --num_processes 2 -m pgraft run --config config.yaml" in launch
    assert "ACCELERATE_USE_CPU=true" in launch


# -- the run list and the comparison ------------------------------------------------------------------------
def test_every_run_is_kept_listed_and_compared(handlers):
    request = _request("compare")
    _run(handlers, request, method="pgraft", cutoff=0.2, rounds=1)
    _run(handlers, request, method="graft", rounds=1)
    session = handlers.sessions.get(request)
    assert [r.status for r in session.runs] == ["finished", "finished"]
    assert session.runs[0].folder != session.runs[1].folder and all(r.folder.is_dir() for r in session.runs)
    table, picks, earlier = handlers.run_list(request, [session.runs[0].name])
    assert len(table) == 2 and {"final reward", "final loglik"} <= set(table.columns)
    assert picks["value"] == [r.name for r in session.runs] and earlier["visible"] is False
    curves, histograms, samples = handlers.compare(request, picks["value"])
    names = {t.name for t in curves.data}
    assert names == set(picks["value"])  # one line per run, overlaid
    assert len(histograms.data) == 2 and len(samples.data) == 2
    a, b = (np.asarray(t.y) for t in histograms.data)
    assert a.sum() == pytest.approx(1.0) and b.sum() == pytest.approx(1.0) and not np.allclose(a, b)


def test_runs_dir_keeps_runs_and_reopens_them_after_a_restart(tmp_path, models):
    runs = tmp_path / "kept"
    first = RoundsHandlers(SessionStore(tmp_path / "s1"), models, "cpu", runs_dir=runs)
    out = _run(first, _request("before"), rounds=1)
    kept = first.sessions.get(_request("before")).runs[0]
    assert kept.folder.parent == runs.resolve() and (kept.folder / "metrics.csv").exists()
    first.sessions.close(_request("before"))
    assert kept.folder.exists()  # kept after the session went
    again = RoundsHandlers(SessionStore(tmp_path / "s2"), models, "cpu", runs_dir=runs)  # a restart
    _table, _picks, earlier = again.run_list(_request("after"))
    assert earlier["choices"] == [kept.name] or [c[0] for c in earlier["choices"]] == [kept.name]
    reopened = again.reopen(_request("after"), kept.name)
    assert len(reopened) == len(RUN_OUTPUTS) and f"Reopened {kept.name}" in reopened[0]
    before, after = out[RUN_OUTPUTS.index("table")], reopened[RUN_OUTPUTS.index("table")]
    assert list(after["reward_mean"]) == pytest.approx(list(before["reward_mean"]))  # read back, not recomputed
    assert again.sessions.get(_request("after")).runs[0].view.latest.round == 1
    for name in ("../kept", str(kept.folder), "nope"):
        with pytest.raises(gr.Error, match="is not one of the runs found"):
            again.reopen(_request("after"), name)


# -- rewards given at launch --------------------------------------------------------------------------------
MODULE = """
import torch
from pgraft.rewards import RewardSpec

def _upper_right(context, weight: float = 1.0):
    return lambda x: weight * (x[:, 0] + x[:, 1]).double()

REWARDS = {"scout-upper-right": RewardSpec(_upper_right, "toy2d", "x + y, from a module given at launch",
                                           {"weight": 1.0})}
"""


def test_a_reward_module_given_at_launch_is_offered_and_names_typed_in_the_page_are_refused(
    tmp_path, monkeypatch, handlers
):
    from pgraft.registry import REWARDS
    from pgraft.ui.app import load_reward_modules
    from pgraft.ui.controls import reward_choices

    (tmp_path / "scout_rewards_mod.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert load_reward_modules(["scout_rewards_mod"]) == ["scout-upper-right"]
        assert "scout-upper-right" in [name for _, name in reward_choices("toy2d")]
        config = handlers.config(_controls(reward="scout-upper-right", reward_args="weight=2"))
        assert config.reward_args == {"weight": 2.0}
        assert (
            "comes from the module 'scout_rewards_mod'"
            in handlers.export(*_ordered(_controls(reward="scout-upper-right")))[2]
        )
        for typed in ("not-registered", "os:system", "scout_rewards_mod:_upper_right"):
            with pytest.raises(gr.Error, match="is not a reward this app offers"):
                handlers.config(_controls(reward=typed))
        with pytest.raises(ValueError, match="--rewards: cannot import 'no_such_module_16'"):
            load_reward_modules(["no_such_module_16"])
    finally:
        REWARDS.pop("scout-upper-right", None)
        sys.modules.pop("scout_rewards_mod", None)


def test_launcher_takes_runs_dir_and_rewards():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("pgraft_app_launcher", Path(__file__).parents[1] / "app.py")
    launcher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launcher)

    args = launcher.parse_args(["--runs-dir", "/tmp/kept", "--rewards", "a_mod", "--rewards", "b_mod"])
    assert args.runs_dir == "/tmp/kept" and args.rewards == ["a_mod", "b_mod"]
    assert launcher.parse_args([]).runs_dir is None


# -- the bias-variance tab's polish -------------------------------------------------------------------------
def test_the_study_gives_an_estimate_first_then_the_time_left_and_carries_the_sweeps_settings():
    from pgraft.plots.bias_variance import bias_variance_figure
    from pgraft.ui.bias_variance_tab import carry_settings, run_study

    args = ("toy2d-exact", "x", "ring8", "", "best-of-n", 4, "0.3 0.6", 16, 2, 20, 0, True, 64, 1, 5, None, 0.4)
    outs = list(run_study(*args))
    statuses = [o[3] for o in outs]
    assert statuses[0].startswith("**Starting.** Estimated time for the curves: roughly")
    assert "plus the sweep: 3 runs of 1 rounds" in statuses[0]
    assert any("Cutoff" in s and "left for the curves" in s for s in statuses)  # after the first of two cutoffs
    state = outs[-1][4]
    assert state["settings"] == {"samples": 64, "rounds": 1, "finetune_steps": 5, "rule": "best-of-n", "n": 4}
    assert "also sets the Rounds tab to the sweep's settings" in statuses[-1]
    updates = carry_settings(state, ["samples", "rounds", "finetune_steps", "rule", "n", "quantile"])
    assert [u.get("value") for u in updates] == [64, 1, 5, "best-of-n", 4, None]  # quantile left alone
    hint = bias_variance_figure(state["curves"])  # curves without a sweep: the empty panel says why
    assert any("Empty without the sweep" in a.text for a in hint.layout.annotations)


def test_bias_variance_lessons_set_the_studys_controls_and_say_what_to_watch():
    from pgraft.ui.bias_variance_tab import LESSONS, choose_lesson, make_specs

    for name in LESSONS:
        note, rule, param, cutoffs, states, continuations = choose_lesson(name)
        assert note.startswith(f"**{name}.**") and ("V(t)" in note or "D(t)" in note)
        args = ("toy2d", "x", "ring8", "", rule["value"], param["value"], cutoffs["value"])
        config, curve, _ = make_specs(
            *args, states["value"], continuations["value"], 100, 0, False, 64, 1, 5, "", "cpu"
        )
        assert config.rule == rule["value"] and len(curve.cutoffs) >= 5  # a valid study, across the range


def test_prompted_runs_label_samples_by_prompt_and_give_the_reward_per_prompt():
    import torch

    from pgraft.graft.runner import RoundResult
    from pgraft.plots.samples import images_before_after
    from pgraft.ui.views import _names, per_prompt_rewards

    groups = torch.tensor([0, 1, 0, 1])
    result = RoundResult(1, {}, torch.zeros(4, 1, 8, 8), torch.tensor([1.0, 0.0, 0.5, 0.2]), torch.ones(4).bool(),
                         groups, torch.zeros(0), torch.zeros(0), torch.zeros(0))  # fmt: skip
    assert per_prompt_rewards(result, ["3", "8"]) == pytest.approx({"3": 0.75, "8": 0.1})
    assert per_prompt_rewards(result, ["3"]) == {}
    names = _names(["3", "8"], groups.numpy())
    images = np.zeros((4, 1, 8, 8))
    fig = images_before_after(images, images, np.ones(4), np.ones(4), images, np.ones(4), np.ones(4, bool), 1,
                              preview_labels=names, candidate_labels=names)  # fmt: skip
    assert "3<br>1.00" in [a.text for a in fig.layout.annotations] and "prompts" in fig.layout.title.text


def test_compared_image_samples_keep_square_pixels_in_every_cell():
    """Each cell's y axis is scaled to its own x axis: with one anchor ("x") for all, every image but the
    first was stretched to its cell's width (seen in a browser: 8x8 digits drawn 340 px wide, 75 px tall)."""
    import numpy as np
    import pandas as pd

    from pgraft.plots.compare import RunSummary, compare_samples

    images = np.random.default_rng(0).uniform(-1, 1, (6, 1, 8, 8))
    runs = [RunSummary(f"run {i}", pd.DataFrame(), np.zeros(6), images, np.zeros(6)) for i in range(2)]
    layout = compare_samples(runs).layout
    anchors = {name: layout[name].scaleanchor for name in layout if name.startswith("yaxis")}
    assert len(anchors) == 12  # 6 rows x 2 runs
    assert all(anchor == "x" + name.removeprefix("yaxis") for name, anchor in anchors.items()), anchors
