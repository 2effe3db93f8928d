"""The "Inverse noise correction" tab: its handlers called directly (gr.Progress is a no-op there) and its
layout inside a tiny `gr.Blocks` with a stand-in `TabContext`."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import gradio as gr
import plotly.graph_objects as go
import pytest

from pgraft.ui.context import TabContext
from pgraft.ui.inc_tab import IncHandlers, build_tab, model_changed, parse_steps

REQUEST: Any = SimpleNamespace(session_hash="test-session")
TINY = ("toy2d-flow", 3000, "16", "1", 100, 200, 20, 0)  # shipped flow, one K, one m, tiny budgets


@pytest.fixture(scope="module", autouse=True)
def _one_thread():  # type: ignore[no-untyped-def]
    """Tiny tensors: a second torch thread only adds synchronisation on a busy 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _finish(gen: Any) -> tuple[Any, ...]:
    last = None
    for last in gen:  # noqa: B007
        pass
    assert last is not None
    return last


def test_run_handler_returns_figures_tables_and_files() -> None:
    out = _finish(IncHandlers("cpu").run(*TINY, request=REQUEST))
    status, quality, norms, scatter, samples, table, diag, result, view_k, view_m, files = out
    assert status.startswith("**Done**")
    assert isinstance(quality, go.Figure) and isinstance(norms, go.Figure) and isinstance(samples, go.Figure)
    assert scatter["visible"] is True and isinstance(scatter["value"], go.Figure)
    assert list(table["method"]) == ["base", "corrected"] and list(diag["num_inference_steps"]) == [16]
    assert view_k["choices"] == [16] and view_m["value"] == 1
    assert {f.rsplit("/", 1)[-1] for f in files} == {"quality_vs_flops.csv", "diagnostics.json", "report.html"}
    # The light re-view event draws from the stored result.
    again = IncHandlers("cpu").view(result, 16, 1)
    assert isinstance(again[0], go.Figure) and len(again) == 6


def test_stop_during_a_run_keeps_what_finished() -> None:
    handlers = IncHandlers("cpu")
    gen = handlers.run(*TINY, request=REQUEST)
    assert next(gen)[0].startswith("Loading")
    assert handlers.stop(REQUEST).startswith("Stopping")
    status = _finish(gen)[0]
    assert status.startswith("**Stopped**")


def test_bad_settings_become_gradio_errors_naming_the_setting() -> None:
    handlers = IncHandlers("cpu")
    with pytest.raises(gr.Error, match="m \\(correction steps\\)"):
        next(handlers.run("toy2d-flow", 300, "8", "two", 100, 200, 20, 0, request=REQUEST))
    with pytest.raises(gr.Error, match="--steps"):
        next(handlers.run("toy2d-flow", 300, "0", "1", 100, 200, 20, 0, request=REQUEST))
    assert parse_steps("K", "8, 16 32") == (8, 16, 32)


def test_model_change_sets_defaults_and_hides_training_steps_for_other_models() -> None:
    train_steps, steps, _, _, grid, references = model_changed("toy2d-flow-exact")
    assert train_steps["visible"] is False and steps == "64, 128"
    assert (grid["value"], references) == ("", [])  # the model's default, resolved by the library
    assert grid["choices"][0] == ("the model's default: linear", "")
    assert model_changed("toy2d-flow")[0]["visible"] is True
    digits = model_changed("digits-flow")[4]
    assert digits["choices"][0] == ("the model's default: karras, with the linear base beside it", "")


def test_the_grid_and_its_reference_reach_the_table() -> None:
    """The grid controls come last in the API's parameters; the chosen grid's own base is `base`, the other
    one's a reference row, and a reference equal to the grid is ignored."""
    out = _finish(IncHandlers("cpu").run(*TINY, "karras", ["linear", "karras"], request=REQUEST))
    table, result = out[5], out[7]
    assert list(zip(table["method"], table["grid"], strict=True)) == [
        ("base", "karras"),
        ("reference", "linear"),
        ("corrected", "karras"),
    ]
    assert result.config.grid == "karras" and result.config.reference_grids == ("linear",)
    with pytest.raises(gr.Error, match="--grid"):
        next(IncHandlers("cpu").run(*TINY, "cosine", [], request=REQUEST))
    # the model's default grid, nothing ticked (also what an API call without these parameters sends): the
    # domain's grid and references; an explicit grid with nothing ticked has none
    from pgraft.ui.inc_tab import make_config

    default = make_config("digits-flow", None, "8", "1", 100, 100, 10, 0, "cpu", "", [])
    assert (default.grid, default.reference_grids) == (None, None)
    assert default.resolved("digits").reference_grids == ("linear",)
    explicit = make_config("digits-flow", None, "8", "1", 100, 100, 10, 0, "cpu", "karras", [])
    assert explicit.resolved("digits").reference_grids == ()
    ticked = make_config("digits-flow", None, "8", "1", 100, 100, 10, 0, "cpu", "", ["exponential"])
    assert ticked.resolved("digits").reference_grids == ("exponential",)


def test_tab_builds_and_runs_heavy_events_on_the_shared_queue() -> None:
    with gr.Blocks() as demo, gr.Tabs() as tabs:
        with gr.Tab("Rounds", id="rounds"):
            model, reward, cutoff = gr.Dropdown(["toy2d"]), gr.Dropdown(["x"]), gr.Slider(0, 1)
            method = gr.Radio(["graft", "pgraft"])
        ctx = TabContext("cpu", "heavy", 1, model, reward, cutoff, method, tabs, "rounds")
        with gr.Tab("Inverse noise correction", id="inc"):
            build_tab(ctx)
    heavy = [fn for fn in demo.fns.values() if getattr(fn, "concurrency_id", None) == "heavy"]
    assert len(heavy) == 1 and heavy[0].concurrency_limit == 1
    assert heavy[0].fn.__name__ == "run" and heavy[0].api_name == "inc"


def test_outputs_live_in_the_session_folder_and_go_with_the_session(tmp_path) -> None:
    from pathlib import Path

    from pgraft.ui.sessions import SessionStore

    store = SessionStore(tmp_path)
    files = _finish(IncHandlers("cpu", store).run(*TINY, request=REQUEST))[-1]
    folder = store.get(REQUEST).folder
    assert files and all(Path(f).is_relative_to(folder) and Path(f).exists() for f in files)
    store.close(REQUEST)
    assert not folder.exists() and not any(Path(f).exists() for f in files)


def test_the_correction_search_runs_from_the_tab_within_the_servers_budget() -> None:
    from pgraft.ui.limits import Limits

    out = _finish(IncHandlers("cpu").run(*TINY, "linear", [], "16, 32", "5, 10", request=REQUEST))
    result = out[7]
    table = result.training[16]["search"]
    assert sorted((r["hidden"], r["train_steps"]) for r in table) == [(16, 5), (16, 10), (32, 5), (32, 10)]
    best = min(table, key=lambda r: r["validation_loss"])
    assert result.corrections[16].hidden == best["hidden"]
    small = IncHandlers("cpu", limits=Limits(correction_train_steps=100))
    with pytest.raises(gr.Error, match="--search-\\* \\(training steps of all candidates\\): 120"):
        next(small.run(*TINY, "linear", [], "16, 32", "20, 40", request=REQUEST))
    with pytest.raises(gr.Error, match="--search-hidden: 4096 is above this server's limit of 256"):
        next(IncHandlers("cpu").run(*TINY, "linear", [], "4096", "10", request=REQUEST))
    with pytest.raises(gr.Error, match="Search: correction widths"):
        next(IncHandlers("cpu").run(*TINY, "linear", [], "wide", "", request=REQUEST))


def test_the_status_names_the_best_corrected_sampler_and_what_it_was_compared_with() -> None:
    from types import SimpleNamespace

    from pgraft.ui.inc_tab import status_text

    def row(method, grid, k, m, flops, fd):
        return {"method": method, "grid": grid, "num_inference_steps": k, "correction_steps": m,
                "flops_per_image": flops, "fd": fd, "fd_se": 1.0}  # fmt: skip

    rows = [row("base", "karras", 8, 0, 8.0, 36.0), row("reference", "linear", 8, 0, 8.0, 8.6)]
    rows += [row("corrected", "karras", 8, 1, 8.1, 31.0), row("corrected", "karras", 8, 4, 8.2, 9.4)]
    from pgraft.inc.tables import quality_table

    result = SimpleNamespace(
        table=lambda: quality_table(rows, "fd", False), cancelled=False, model_name="digits-flow", primary="fd",
        notices=[],
    )  # fmt: skip
    text = status_text(result, 12.0)  # type: ignore[arg-type]
    assert "K=8, m=4, karras grid" in text and "not better (fd -0.8 ± 2.8)" in text
    assert "own grid's base: fd +26.6 ± 2.8" in text and "at least its FLOPs" not in text  # no richer base
    from pgraft.inc.tables import verdict

    assert verdict(quality_table([], "fd", False), "fd") == ""  # nothing run
    assert verdict(quality_table(rows[:2], "fd", False), "fd") == ""  # nothing corrected
    nan_own = [{**rows[0], "fd": float("nan")}, *rows[1:]]  # the own grid's base could not be scored
    said = verdict(quality_table(nan_own, "fd", False), "fd")
    assert "nan" not in said and "own grid" not in said and "not better (fd -0.8 ± 2.8)" in said
    rows.append(row("reference", "linear", 16, 0, 16.0, 5.1))
    assert "at least its FLOPs (K=16, linear grid): fd -4.3 ± 2.8" in status_text(result, 12.0)  # type: ignore[arg-type]
