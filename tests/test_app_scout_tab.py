"""Issue 15, the app's Scout tab, handlers called directly: a 3-trial toy study streams its rows into the
table and the plot, writes into the session's folder, "Use this trial" sets the Rounds tab so that its Run reruns
the trial, "Export full run" gives full_run.yaml with its accelerate command and the cost, a bad range or budget
is refused before anything starts, and Stop keeps the finished trials."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest

from pgraft.graft.config import RunConfig
from pgraft.ui.controls import Controls
from pgraft.ui.export import applicable
from pgraft.ui.limits import Limits
from pgraft.ui.models import BaseModels
from pgraft.ui.rounds_handlers import RoundsHandlers
from pgraft.ui.scout_handlers import CARRIED, RANGES, TAB, ScoutHandlers, export_full_run, model_ranges, use_trial
from pgraft.ui.sessions import SessionStore

pytest.importorskip("optuna")

ROUNDS = dict(  # the Rounds tab's controls, at a tiny budget
    model="toy2d", dataset="ring8", reward="x", reward_args="", prompts=[], method="graft", cutoff=0.5,
    rule="best-of-n", threshold=0.0, quantile=0.75, n=4, k=64, beta=1.0, samples=128, rounds=1,
    finetune_steps=20, lr=1e-3, seed=0, num_inference_steps=8, sampler="ddpm", eta=1.0, batch_size=128,
    preview=16, anchoring="intermediate",
)  # fmt: skip
RANGES_SET = {"cutoff": "0:0.8:0.1", "rule": "best-of-n,quantile", "n": "2,4,8", "quantile": "0.5:0.95:0.05"}
STUDY = dict(trials=3, objective="pareto", realism_weight=1.0, max_realism_loss="", scale=4, devices=8)


def _values(ranges=RANGES_SET, **changes):
    boxes = {f"{n}_range": ranges.get(n, "") for n in RANGES}
    return {**ROUNDS, **boxes, **STUDY, **changes}


def _request(name):
    return SimpleNamespace(session_hash=name, cookies={})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return SessionStore(tmp_path_factory.mktemp("sessions"))


@pytest.fixture(scope="module")
def handlers(store):
    models = BaseModels("cpu")
    rounds = RoundsHandlers(store, models, "cpu")
    return ScoutHandlers(store, Limits(), rounds.config, "cpu", models.get_for)  # the model loaded once


@pytest.fixture(scope="module")
def study(handlers):
    return list(handlers.run(_values(), _request("three")))


def test_a_three_trial_study_streams_three_rows_into_the_table_and_the_plot(study, store):
    tables = [out[0] for out in study]
    assert [len(t) for t in tables] == [0, 1, 2, 3, 3]  # start, one update per trial, the end
    table, plot, status, pick, data = study[-1]
    assert {"trial", "cutoff", "rule", "final_reward", "realism_loss"} <= set(table.columns)
    assert sorted(table["trial"]) == [0, 1, 2]
    assert "**Done** (3 complete). Recommended: trial" in status and "loglik loss" in status
    points = [tr for tr in plot.data if tr.name == "trials"]
    assert points and len(points[0].x) == 3 and any(str(tr.name).startswith("chosen: trial") for tr in plot.data)
    assert plot.layout.template.layout.paper_bgcolor == "white"  # the app's look (the page makes it transparent)
    assert [v for _, v in pick["choices"]] == [0, 1, 2] and pick["value"] == data["best"]
    folder = store.get(_request("three")).folder / TAB  # the session's folder, never one the page names
    assert len(list(folder.glob("study-*/trials/trial_*"))) == 3 and list(folder.glob("study-*/full_run.yaml"))


def test_use_this_trial_sets_the_rounds_tab_to_rerun_it(study):
    data = study[-1][-1]
    for number, config in data["configs"].items():
        updates = use_trial(data, number, "toy2d", "x", bounds=(0.05, 0.95))
        values = {n: (updates[n].get("value", ROUNDS[n]) if n in updates else ROUNDS[n]) for n in Controls.names()}
        assert updates["method"]["value"] == config["method"] and updates["rule"]["value"] == config["rule"]
        param = {"best-of-n": "n", "quantile": "quantile"}[config["rule"]]
        assert updates[param] == {"__type__": "update", "value": config[param], "visible": True}
        assert all(updates[p]["visible"] is False for p in ("threshold", "quantile", "n", "k", "beta") if p != param)
        if config["method"] == "pgraft":
            assert updates["cutoff"]["value"] == pytest.approx(config["cutoff"])
        rerun = applicable(Controls(**values).to_config("cpu"))  # what the run uses: Run there reruns the trial
        assert rerun == applicable(RunConfig.from_dict({**config, "device": "cpu"})), number
    assert set(updates) == set(CARRIED)
    with pytest.raises(gr.Error, match="Pick a finished trial"):
        use_trial(data, 99, "toy2d", "x")


def test_export_full_run_gives_the_config_its_accelerate_command_and_the_cost(study, store):
    text, commands, cost = export_full_run(study[-1][-1])
    best = study[-1][-1]["configs"][study[-1][-1]["best"]]
    full = RunConfig.from_dict(_yaml(text))
    assert full.finetune_steps == 4 * best["finetune_steps"] and full.samples >= 3 * best["samples"]
    assert "accelerate launch --multi_gpu --num_processes 8 -m pgraft run --config full_run.yaml" in commands
    assert "#   accelerate launch" in text and "pgraft run --config full_run.yaml" in text
    assert str(store.root) not in text + commands  # no server folder in what the page shows
    assert "device:" not in text and "beta:" not in text  # what applies, as the Rounds tab's Export
    assert list(cost["devices"]) == [1, 8] and (cost["predicted_s"] > 0).all()
    assert cost["predicted_s"].iloc[1] < cost["predicted_s"].iloc[0]


def _yaml(text):
    import yaml

    return yaml.safe_load(text)


def test_a_bad_range_or_budget_is_refused_and_starts_nothing(handlers, store):
    request = _request("bad")
    cases = [
        ({**RANGES_SET, "cutoff": "0:1.5"}, {}, "--search cutoff: cutoffs lie in [0, 1)"),
        ({**RANGES_SET, "rule": "best-of-n,nonsense"}, {}, "unknown rule 'nonsense'"),
        ({**RANGES_SET, "lr": "fast"}, {}, "--search lr=fast: write LOW:HIGH"),
        ({}, {}, "every range is blank"),
        (RANGES_SET, {"trials": 500}, "trials: 500 is above this server's limit of 32"),
        ({**RANGES_SET, "samples": "64:100000"}, {}, "samples (the top of its range): 100000 is above"),
        (RANGES_SET, {"samples": 10**6}, "--samples: 1e+06 is above"),
        (RANGES_SET, {"objective": "fastest"}, "--objective: 'fastest' is invalid"),
        (
            {**RANGES_SET, "samples": "8:64"},
            {},
            "ranges: a trial at their low end (rule best-of-n, n 2, cutoff 0, "
            "samples 8) cannot run: --preview: 16 is invalid; it must be <= --samples (8)",
        ),  # every trial would fail
    ]
    for ranges, changes, message in cases:
        with pytest.raises(gr.Error) as err:
            next(handlers.run(_values(ranges, **changes), request))
        assert message in str(err.value.message), (ranges, changes, str(err.value.message))
    session = store.get(request)
    assert not session.job(TAB).running and not (session.folder / TAB).exists()


def test_stop_keeps_the_finished_trials(handlers, store):
    request = _request("stopped")
    outs = []
    for out in handlers.run(_values(trials=5), request):
        outs.append(out)
        if len(out[0]) == 1 and len(outs) == 2:  # the first trial is in: press Stop
            assert handlers.stop(request).startswith("Stopping")
    table, _plot, status, pick, data = outs[-1]
    assert status.startswith("**Stopped.** The 1 finished trial is kept") and len(table) == 1
    assert [v for _, v in pick["choices"]] == [int(table["trial"][0])]
    assert use_trial(data, int(table["trial"][0]), "toy2d", "x")["rule"]["value"] in ("best-of-n", "quantile")
    with pytest.raises(gr.Error, match="Nothing to export yet"):
        export_full_run(data)
    assert not store.get(request).job(TAB).running and handlers.stop(request) == "Nothing is running."


def test_default_ranges_follow_the_budget():
    texts = model_ranges("toy2d", 128, 20, 1e-3)
    assert texts["cutoff"] == "0:0.8:0.1" and texts["rule"] == "best-of-n,quantile" and texts["n"] == "2,4,8"
    assert texts["samples"] == "64:128:32" and texts["finetune_steps"] == "10:40" and texts["lora_rank"] == ""
    assert texts["k"] and texts["threshold"] == ""


def test_a_study_whose_every_trial_fails_ends_with_the_error(tmp_path):
    from pgraft.studies.scout import ScoutSpec, SearchSpace, parse_range, scout_iter

    base = RunConfig(model="toy2d", reward="x", rounds=1, samples=128, preview=100, num_inference_steps=8,
                     finetune_steps=20, batch_size=128)  # fmt: skip
    space = SearchSpace.build(base, ["cutoff", "rule", "n", "quantile", "beta", "finetune_steps", "lr"],
                              [parse_range("samples=8:64")])  # fmt: skip
    with pytest.raises(ValueError, match="--trials: 5 trials in a row failed, the last with ValueError: --preview"):
        list(scout_iter(base, space, ScoutSpec(trials=3), tmp_path / "s"))  # was: new failing trials for ever
