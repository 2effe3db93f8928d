"""The "Inverse noise correction" tab (docs/method.md §4): invert real data through a flow model's sampler,
check the inverted noises against N(0, I), train a correction flow, and compare quality against FLOPs.

Handlers validate the controls (a bad value becomes `gr.Error` naming the setting), call `pgraft.inc.run`, and
map its events to `gr.Progress` and component updates; every figure comes from `pgraft.plots.inc`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Generator
from typing import Any

import gradio as gr

from pgraft.core.events import Notice, Progress, drain
from pgraft.domains.base import IncSupport
from pgraft.inc.config import IncConfig
from pgraft.inc.report import diagnostics_table, figures, write_outputs
from pgraft.inc.run import IncResult, run_inc_iter
from pgraft.registry import DOMAINS, MODELS
from pgraft.ui.context import TabContext
from pgraft.ui.forms import control
from pgraft.ui.limits import Limits
from pgraft.ui.sessions import Busy, SessionStore

TAB = "inc"
FALLBACK: dict[str, Any] = {"steps": "8, 16, 32", "correction_steps": "1, 2, 4", "train_steps": 3000, "invert": 1000}
"""Starting values for a flow model whose domain gives none."""


def _support(model: str | None) -> IncSupport | None:
    """The inverse-noise-correction support of the model's domain (None for an unknown model)."""
    return DOMAINS[MODELS[model].domain].inc if model in MODELS else None


def model_defaults(model: str) -> dict[str, Any]:
    """The tab's starting values for a flow model: its domain's (`IncSupport.app_defaults`), else `FALLBACK`;
    the grid starts at "the model's default" (`""`) with no reference ticked, which a run reads as the domain's
    grid and references (`make_config`)."""
    support = _support(model)
    values = dict(support.app_defaults.get(model, {})) if support is not None else {}
    return {**FALLBACK, "grid": "", "reference_grids": [], **values}


def grid_choices(model: str | None) -> list[Any]:
    """The grid dropdown's choices: first the model's default (value `""`, labelled with what it is: the
    library resolves it, so an API call that leaves the grid out gets the same), then every grid."""
    from pgraft.core.process import FLOW_GRIDS

    support = _support(model)
    default = support.grid if support is not None else "linear"
    extra = "" if default == "linear" else ", with the linear base beside it"
    return [(f"the model's default: {default}{extra}", ""), *FLOW_GRIDS]


INTRO = """
A flow model's K-step Euler sampler `G` maps noise to data imperfectly. **Invert** real data through `G`
(backward Euler, stopped on a residual tolerance), see how far the inverted noises are from N(0, I), train a
small **correction flow** from N(0, I) to them, and sample `G(c(ε))`. The curve shows quality against FLOPs per
image (counted): the base flow at several K, and base + correction with m correction steps.
"""


def model_choices() -> list[str]:
    """Every registered flow model whose domain supports inverse noise correction."""
    return [n for n, s in MODELS.items() if s.kind == "flow" and DOMAINS[s.domain].inc is not None]


def parse_steps(flag: str, text: str, empty: bool = False) -> tuple[int, ...]:
    """`"8, 16, 32"` → `(8, 16, 32)` (`empty`: `""` → `()`); anything else raises `ValueError` naming the
    setting."""
    try:
        values = tuple(int(part) for part in str(text or "").replace(",", " ").split())
    except ValueError:
        raise ValueError(
            f"{flag}: {text!r} is invalid; allowed: integers separated by commas, e.g. 8, 16, 32"
        ) from None
    if not values and not empty:
        raise ValueError(f"{flag}: {text!r} is empty; allowed: integers separated by commas, e.g. 8, 16, 32")
    return values


def _trains(model: str) -> bool:
    """Whether the model takes a training length (`--train-steps`: a deliberately under-trained flow)."""
    return model in MODELS and "train_steps" in MODELS[model].options


def make_config(
    model: str, train_steps: float | None, steps: str, correction_steps: str, invert: float, samples: float,
    correction_train_steps: float, seed: float, device: str, grid: str | None = None,
    reference_grids: list[str] | None = None, search_hidden: str = "", search_train_steps: str = "",
) -> IncConfig:  # fmt: skip
    """The library config of the tab's controls (models with a training length take `train_steps`). `grid`
    `""` or None is the domain's; with it and no reference ticked, the references are the domain's too."""
    refs = tuple(g for g in reference_grids or () if g != grid)
    return IncConfig(
        grid=grid or None,
        reference_grids=None if not grid and not refs else refs,
        model=model,
        train_steps=int(train_steps) if _trains(model) and train_steps is not None else None,
        steps=parse_steps("K (base sampler steps)", steps),
        correction_steps=parse_steps("m (correction steps)", correction_steps),
        invert=int(invert),
        samples=int(samples),
        preview=_preview(model),
        correction_train_steps=int(correction_train_steps),
        search_hidden=parse_steps("Search: correction widths", search_hidden, empty=True),
        search_train_steps=parse_steps("Search: correction training steps", search_train_steps, empty=True),
        seed=int(seed),
        device=device,
    )


def _preview(model: str) -> int:
    support = _support(model)
    return support.preview if support is not None else 32


def status_text(result: IncResult, seconds: float) -> str:
    """What the run found, in words (`inc.tables.verdict`), with its notices."""
    from pgraft.inc.tables import verdict

    table = result.table()
    word = "Stopped" if result.cancelled else "Done"
    lines = [f"**{word}** in {seconds:.0f} s: {len(table)} samplers scored on `{result.model_name}`."]
    lines += [text] if (text := verdict(table, result.primary)) else []
    lines += [f"⚠ {note}" for note in result.notices]
    return "\n\n".join(lines)


class IncHandlers:
    """Run, stop and re-view; each browser session's job (stop flag, output folder) lives in the session store,
    so a run's files are deleted with the session."""

    def __init__(self, device: str, sessions: SessionStore | None = None, limits: Limits | None = None) -> None:
        self.device = device
        self.sessions = SessionStore() if sessions is None else sessions
        self.limits = Limits() if limits is None else limits

    def run(
        self, model: str, train_steps: float | None, steps: str, correction_steps: str, invert: float,
        samples: float, correction_train_steps: float, seed: float, grid: str | None = None,
        reference_grids: list[str] | None = None, search_hidden: str = "", search_train_steps: str = "",
        request: gr.Request | None = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008  (Gradio finds the tracker by its default)
    ) -> Generator[tuple[Any, ...], None, None]:  # fmt: skip
        try:
            config = make_config(
                model, train_steps, steps, correction_steps, invert, samples, correction_train_steps, seed,
                self.device, grid, reference_grids, search_hidden, search_train_steps,
            )  # fmt: skip
            self.check_limits(config)
        except ValueError as exc:
            raise gr.Error(str(exc), title="Invalid setting") from None
        try:
            session, job = self.sessions.start(request, TAB)
        except Busy:
            raise gr.Error("A correction is already running in this browser tab: press Stop first.") from None
        start = time.perf_counter()
        try:
            yield ("Loading the model…", *(gr.update() for _ in range(10)))

            def show(ev: Any) -> None:
                if isinstance(ev, Progress):
                    progress((ev.done, ev.total), desc=ev.describe())
                elif isinstance(ev, Notice):
                    gr.Warning(ev.message)

            try:
                result = drain(run_inc_iter(config, should_stop=job.stop.is_set), show)
            except (ValueError, FileNotFoundError) as exc:
                raise gr.Error(str(exc), title="Cannot run") from None
            assert result is not None
            yield self.outputs(result, time.perf_counter() - start, job.folder)
        finally:
            self.sessions.finish(session, TAB)

    def check_limits(self, config: IncConfig) -> None:
        """The request within this server's budgets (`ValueError` naming the setting)."""
        self.limits.check("train_steps", config.train_steps)
        self.limits.check("invert", config.invert)
        self.limits.check("correction_samples", config.samples, "--samples")
        self.limits.check("correction_train_steps", config.correction_train_steps)
        if config.search_hidden or config.search_train_steps:  # every candidate trains, one after another
            widths = len(config.search_hidden) or 1
            steps = sum(config.search_train_steps) or config.correction_train_steps
            self.limits.check("correction_train_steps", widths * steps, "--search-* (training steps of all candidates)")
        self.limits.check("num_inference_steps", max(config.steps), "--steps")
        widest = max(config.search_hidden or (config.correction_hidden,))
        self.limits.check("correction_width", widest, "--search-hidden")
        references = config.resolved(MODELS[config.model].domain).reference_grids or ()
        runs = len(config.steps) * (len(config.correction_steps) + len(references))
        self.limits.check("correction_runs", runs, "--steps x (--correction-steps + --reference-grids) (count)")

    def outputs(self, result: IncResult, seconds: float, out: Any) -> tuple[Any, ...]:
        """Everything the tab shows of a finished run; its files are written into `out` (the session's)."""
        shutil.rmtree(out, ignore_errors=True)
        write_outputs(result, out)
        ks = sorted(result.inversions)
        ms = list(result.config.correction_steps)
        views = self.view(result, ks[0] if ks else None, ms[-1])
        files = [str(out / "quality_vs_flops.csv"), str(out / "diagnostics.json"), str(out / "report.html")]
        return (
            status_text(result, seconds),
            *views,
            result,
            gr.update(choices=ks, value=ks[0] if ks else None),
            gr.update(choices=ms, value=ms[-1]),
            files,
        )

    def view(self, result: IncResult | None, k: int | None, m: int | None) -> tuple[Any, ...]:
        """Figures and tables of a finished run for the chosen K and m (a light event)."""
        if result is None:
            return tuple(gr.update() for _ in range(6))
        figs = figures(result, k, m)
        quality = figs.get(f"quality_{result.primary}")
        return (
            quality,
            figs.get("noise_norms"),
            gr.update(value=figs.get("noise_scatter"), visible="noise_scatter" in figs),
            figs.get("samples"),
            result.table().round(5),
            diagnostics_table(result).round(5),
        )

    def stop(self, request: gr.Request) -> str:
        if not self.sessions.request_stop(request, TAB):
            return "Nothing is running."
        return "Stopping after the current step…"


def model_changed(model: str) -> tuple[Any, ...]:
    d = model_defaults(model)
    return (
        gr.update(visible=_trains(model), value=d["train_steps"]),
        d["steps"],
        d["correction_steps"],
        d["invert"],
        gr.update(choices=grid_choices(model), value=d["grid"]),
        d["reference_grids"],
    )


def build_tab(ctx: TabContext) -> None:
    """Lay out the tab inside the current `gr.Tab` and wire its events (heavy ones on the shared queue)."""
    handlers = IncHandlers(ctx.device, ctx.sessions, ctx.limits)
    choices = model_choices()
    first = choices[0] if choices else None
    d = model_defaults(first) if first else FALLBACK
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=3, min_width=320):
            model = control("model", IncConfig, choices=choices, value=first)
            train_steps = control(
                "train_steps", IncConfig, value=d["train_steps"], visible=bool(first and _trains(first))
            )
            steps = control("steps", IncConfig, value=d["steps"], elem_id="inc-steps")
            correction_steps = control(
                "correction_steps", IncConfig, value=d["correction_steps"], elem_id="inc-correction-steps"
            )
            grid = control("grid", IncConfig, choices=grid_choices(first), value=d["grid"], elem_id="inc-grid")
            reference_grids = control(
                "reference_grids", IncConfig, value=d["reference_grids"], elem_id="inc-reference-grids"
            )
            with gr.Accordion("Data and training", open=False):
                invert = control("invert", IncConfig, value=d["invert"])
                samples = control("samples", IncConfig)
                correction_train = control("correction_train_steps", IncConfig)
                search_hidden = control("search_hidden", IncConfig, value="")
                search_train_steps = control("search_train_steps", IncConfig, value="")
                seed = control("seed", IncConfig)
            with gr.Row():
                run = gr.Button("Run", variant="primary", elem_id="inc-run")
                stop = gr.Button("Stop", variant="stop", elem_id="inc-stop")
            files = gr.File(label="Downloads", file_count="multiple", interactive=False)
        with gr.Column(scale=7):
            status = gr.Markdown("Press **Run**.", elem_id="inc-status")
            quality = gr.Plot(label="Quality against FLOPs per image")
            with gr.Row():
                view_k = gr.Dropdown([], label="Show K", interactive=True)
                view_m = gr.Dropdown([], label="Show m", interactive=True)
            with gr.Row(equal_height=True):
                norms = gr.Plot(label="Norms of the inverted noises")
                scatter = gr.Plot(label="Inverted noises (toy)")
            samples_plot = gr.Plot(label="Base vs corrected, same seeds")
            with gr.Accordion("Tables", open=False):
                table = gr.Dataframe(label="Quality vs FLOPs", interactive=False, elem_id="inc-table")
                diag = gr.Dataframe(label="Inverted noise against N(0, I), per K", interactive=False)
    state = gr.State(None)
    view_outputs = [quality, norms, scatter, samples_plot, table, diag]
    inputs = [model, train_steps, steps, correction_steps, invert, samples, correction_train, seed]
    inputs += [grid, reference_grids, search_hidden, search_train_steps]  # newer ones last: the /inc API's
    # earlier positional parameters keep their places
    run.click(
        handlers.run,
        inputs,
        [status, *view_outputs, state, view_k, view_m, files],
        api_name="inc",
        concurrency_id=ctx.heavy_concurrency_id,
        concurrency_limit=ctx.heavy_concurrency_limit,
    )
    stop.click(handlers.stop, None, status, api_name="inc_stop", concurrency_limit=None)
    for chooser in (view_k, view_m):
        chooser.change(
            handlers.view, [state, view_k, view_m], view_outputs, api_visibility="undocumented", concurrency_limit=None
        )
    model.change(
        model_changed,
        model,
        [train_steps, steps, correction_steps, invert, grid, reference_grids],
        api_visibility="undocumented",
        concurrency_limit=None,
    )
