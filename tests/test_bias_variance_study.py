"""The cutoff study around the estimators: exact toy curves, the equal-budget sweep and its recommendation,
`pgraft bias-variance`, the figure, and the app tab on its own (docs/method.md §3)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from pgraft.core.acceptance import BestOfN, Quantile
from pgraft.domains.toy2d.exact import ExactChain
from pgraft.domains.toy2d.exact_curves import ExactCurves
from pgraft.domains.toy2d.mixture import ring8
from pgraft.graft.config import RunConfig
from pgraft.rewards import Reward
from pgraft.studies.sweep import BUDGET_COLUMNS, SweepSpec, recommend, run_sweep

X_REWARD = Reward("x", "toy2d", lambda x: x[:, 0].double())


def test_exact_curves_obey_total_variance_limits_and_the_exact_chain():
    curves = ExactCurves(ring8(), X_REWARD, BestOfN(4))
    rows = [curves.at(s) for s in (0.0, 0.2, 0.6, 1.5, 4.0, 200.0)]
    for row in rows:
        assert row["V"] + row["B"] == pytest.approx(curves.var_r, rel=1e-6)  # law of total variance
    v, d, tv = (np.array([row[k] for row in rows]) for k in ("V", "D", "tv_to_graft"))
    assert np.all(np.diff(v) > 0) and np.all(np.diff(d) < 0) and np.all(np.diff(tv) > 0)
    assert rows[0]["V"] == 0 and rows[0]["D"] == pytest.approx(math.log(4) - 3 / 4, abs=3e-3)  # GRAFT
    assert rows[-1]["V"] == pytest.approx(curves.var_r, rel=0.01) and rows[-1]["D"] < 1e-3  # pure noise
    for s, row in zip((0.6, 1.5), rows[2:4]):
        assert row["pgraft_reward"] == pytest.approx(ExactChain(ring8(), X_REWARD, BestOfN(4), s).expected_reward(1))


def test_exact_variance_matches_monte_carlo_posterior_means():
    """For r = x, V = E[(x_0 − E[x_0 | x_t])²]: the mixture's closed-form posterior mean, sampled."""
    mix, gen = ring8(), torch.Generator().manual_seed(0)
    x0 = mix.sample(200_000, gen)
    curves = ExactCurves(mix, X_REWARD, Quantile(0.75))
    for s in (0.4, 1.2):
        y = x0 + s * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
        one = torch.ones(len(y), dtype=torch.float64)
        mc = float(((x0[:, 0] - mix.posterior_mean(y, one, s * one)[:, 0]) ** 2).mean())
        assert curves.at(s)["V"] == pytest.approx(mc, rel=0.02)


SMALL = dict(samples=256, preview=16, rounds=1, num_inference_steps=20, finetune_steps=10, batch_size=64)


def test_sweep_keeps_the_budget_equal_across_cutoffs():
    cfg = RunConfig(model="toy2d", reward="x", **SMALL)
    table, rec = run_sweep(cfg, SweepSpec((0.7, 0.3)))
    assert list(table["cutoff"]) == [0.0, 0.3, 0.7] and list(table["method"]) == ["graft", "pgraft", "pgraft"]
    assert table["candidates"].eq(2 * 256).all()  # rounds 0 and 1
    assert table["reward_calls"].eq(2 * (256 + 16)).all()
    assert table["finetune_steps"].eq(10).all()
    for column in BUDGET_COLUMNS:
        assert table[column].nunique() == 1, column
    assert table["realism_base"].nunique() == 1  # round 0 is the same base sample in every run
    assert table["cutoff_effective"].iloc[1:].tolist() == pytest.approx([0.3, 0.7], abs=0.05)
    assert rec is not None and rec.cutoff in set(table["cutoff"]) and rec.budget["candidates"] == 512


def test_recommendation_is_the_best_reward_within_the_realism_bound():
    table = pd.DataFrame(
        {
            "cutoff": [0.0, 0.2, 0.5, 0.8],
            "final_reward": [3.0, 2.5, 2.0, 0.5],
            "realism_metric": ["loglik"] * 4,
            "realism_loss": [2.0, 0.4, 0.1, 0.0],
            **{k: [1, 1, 1, 1] for k in BUDGET_COLUMNS},
        }
    )
    assert recommend(table).cutoff == 0.2  # default loglik bound 0.5 nats
    assert recommend(table, max_realism_loss=3.0).cutoff == 0.0
    fallback = recommend(table.assign(realism_loss=[2.0, 1.5, 1.2, 0.9]), max_realism_loss=0.5)
    assert fallback is not None and fallback.cutoff == 0.8 and not fallback.within_bound
    assert "no cutoff kept" in fallback.describe()
    with pytest.raises(ValueError, match="--max-realism-loss"):
        SweepSpec((0.5,), max_realism_loss=-1.0)


CLI = [
    "bias-variance",
    "--model",
    "toy2d-exact",
    "--reward",
    "x",
    "--cutoffs",
    "0.3",
    "0.6",
    "--states",
    "16",
    "--continuations",
    "2",
    "--bootstrap",
    "50",
    "--exact-points",
    "6",
    "--quiet",
]


def test_cli_writes_curves_sweep_and_a_standalone_plot(tmp_path, capsys):
    from pgraft.cli import main

    args = [*CLI, "--num-inference-steps", "20", "--sweep", "--samples", "128", "--preview", "0"]
    args += ["--rounds", "1", "--finetune-steps", "5", "--batch-size", "64", "--out", str(tmp_path)]
    assert main(args) == 0
    curves = pd.read_csv(tmp_path / "curves.csv")
    assert list(curves["cutoff"]) == [0.3, 0.6] and curves["V_exact"].notna().all()
    sweep = pd.read_csv(tmp_path / "sweep.csv")
    assert list(sweep["cutoff"]) == [0.0, 0.3, 0.6] and sweep["candidates"].nunique() == 1
    assert (tmp_path / "exact.csv").exists() and (tmp_path / "recommendation.json").exists()
    html = (tmp_path / "bias_variance.html").read_text()
    assert len(html) > 1_000_000 and "plotly.js" in html  # the library is inlined: works offline
    assert "recommended:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "flag"),
    [(["--states", "1"], "--states"), (["--continuations", "1"], "--continuations"), (["--eta", "0.0"], "--eta")],
)
def test_cli_validation_names_the_flag(tmp_path, capsys, extra, flag):
    from pgraft.cli import main

    args = [*CLI, "--out", str(tmp_path), *extra]
    if flag == "--eta":
        args += ["--sampler", "ddim"]
    assert main(args) == 2
    assert flag in capsys.readouterr().err


def _tables():
    curves = pd.DataFrame(
        {
            "cutoff": [0.2, 0.5],
            "cutoff_effective": [0.2, 0.5],
            **{f"{q}{s}": [0.1, 0.6] for q in ("V", "B", "R2", "D") for s in ("", "_lo", "_hi")},
            "D_plugin": [0.2, 0.7],
            "states": [64, 64],
            "continuations": [4, 4],
            "level": [0.95, 0.95],
        }
    )
    exact = pd.DataFrame({"cutoff": [0.1, 0.9], **{k: [0.1, 0.9] for k in ("V", "B", "R2", "D", "pgraft_reward")}})
    sweep = pd.DataFrame(
        {"cutoff": [0.0, 0.5], "final_reward": [1.0, 2.0], "realism_loss": [0.3, 0.1], "realism_metric": ["loglik"] * 2}
    )
    return curves, exact, sweep


def test_figure_draws_estimates_over_exact_curves_and_marks_cutoffs():
    from pgraft.plots.bias_variance import bias_variance_figure

    curves, exact, sweep = _tables()
    fig = bias_variance_figure(curves, exact, sweep, selected=0.4, recommended=0.5)
    names = [t.name for t in fig.data]
    assert names.index("exact (true mixture)") < names.index("V: E[Var(r | Xₜ)]")  # exact drawn underneath
    assert "D, plug-in (biased up)" in names and "final reward (one run per cutoff)" in names
    assert sorted({s.x0 for s in fig.layout.shapes}) == [0.4, 0.5] and len(fig.layout.shapes) == 8
    empty = bias_variance_figure(None)
    assert not empty.data and "Run the study" in empty.layout.annotations[0].text


def _tab_demo():
    import gradio as gr

    from pgraft.ui.bias_variance_tab import build_tab
    from pgraft.ui.context import TabContext

    with gr.Blocks() as demo, gr.Tabs() as tabs:
        with gr.Tab("Rounds", id="rounds"):
            model = gr.Dropdown(["toy2d-exact"], value="toy2d-exact")
            reward = gr.Dropdown(["x"], value="x")
            cutoff = gr.Slider(0.05, 0.95, value=0.4)
            method = gr.Radio(["graft", "pgraft"], value="graft")
        ctx = TabContext("cpu", "heavy", 1, model, reward, cutoff, method, tabs, "rounds")
        with gr.Tab("Bias–variance", id="bias-variance"):
            build_tab(ctx)
    return demo


TAB_ARGS = ("toy2d-exact", "x", "ring8", "3", "best-of-n", 4, "0.3, 0.6", 16, 2, 20, 0)  # prompts ignored


def test_tab_handlers_stream_recommend_and_validate():
    import gradio as gr

    from pgraft.ui.bias_variance_tab import run_study, use_recommended

    demo = _tab_demo()
    heavy = [f for f in demo.fns.values() if f.api_name == "bias_variance"]
    assert len(heavy) == 1 and heavy[0].concurrency_id == "heavy" and heavy[0].concurrency_limit == 1
    outs = list(run_study(*TAB_ARGS, True, 64, 1, 5, None, 0.4))
    statuses = [o[3] for o in outs]
    assert any("Cutoff 0.3 done" in s for s in statuses) and statuses[-1].startswith("**Done.** Recommended")
    state = outs[-1][4]
    assert state["recommended"] in (0.0, 0.3, 0.6) and len(state["curves"]) == 2
    slider, method, tab = use_recommended({"recommended": 0.3}, "rounds")
    assert slider["value"] == 0.3 and method["value"] == "pgraft" and tab.selected == "rounds"
    slider, method, _ = use_recommended({"recommended": 0.0}, "rounds")
    assert "value" not in slider and method["value"] == "graft"  # cutoff 0 is GRAFT: the slider is left alone
    with pytest.warns(UserWarning, match="outside the slider"):
        assert use_recommended({"recommended": 0.99}, "rounds", (0.05, 0.95))[0]["value"] == 0.95
    with pytest.raises(gr.Error):
        use_recommended({}, "rounds")
    with pytest.raises(gr.Error, match="cutoffs"):
        list(run_study(*TAB_ARGS[:6], "0.3 nope", *TAB_ARGS[7:], False, 128, 1, 5, None, 0.4))
    with pytest.raises(gr.Error, match="--states"):
        list(run_study(*TAB_ARGS[:7], 1, *TAB_ARGS[8:], False, 128, 1, 5, None, 0.4))


def test_tab_round_trip_through_gradio_client():
    from gradio_client import Client

    demo = _tab_demo()
    demo.queue()
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        result = client.predict(*TAB_ARGS, False, 256, 1, 0, None, 0.4, api_name="/bias_variance")
        assert "Done" in result[3]
        assert [row[0] for row in result[1]["data"]] == [0.3, 0.6]
    finally:
        demo.close()
