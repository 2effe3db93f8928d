"""The pgraft app: a Gradio 6 page to run GRAFT / P-GRAFT rounds and see why the distribution moved.

`build_demo()` lays out the Rounds tab and, when their modules are installed, the bias–variance and inverse
noise correction tabs (each exposes `build_tab(ctx: TabContext)`). All heavy work of every tab goes through
one bounded queue (`HEAVY_ID`), so the machine is never oversubscribed; light events never wait behind it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import threading
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr

from pgraft.core.devices import resolve_device
from pgraft.registry import load_reward_modules
from pgraft.ui.context import TabContext
from pgraft.ui.controls import Controls
from pgraft.ui.limits import Limits
from pgraft.ui.models import BaseModels
from pgraft.ui.rounds_handlers import RoundsHandlers
from pgraft.ui.rounds_tab import DEFAULT_MODEL, build_rounds_tab
from pgraft.ui.sessions import SessionCookie, SessionStore

HEAVY_ID = "heavy"
QUEUE_SIZE = 16
CACHE_SWEEP_S, CACHE_AGE_S = 1800, 3600  # Gradio's file cache: swept every 30 min of files older than an hour
ROUNDS_TAB_ID = "rounds"
OPTIONAL_TABS = (
    ("pgraft.ui.bias_variance_tab", "Bias–variance", "bias-variance"),
    ("pgraft.ui.scout_tab", "Scout", "scout"),
    ("pgraft.ui.inc_tab", "Inverse noise correction", "inc"),
)
HEADER = """
# pgraft — shape a diffusion model with a reward
Sample, keep what an acceptance rule accepts, fine-tune on it, repeat (**GRAFT**), or do it at an intermediate
noise level and let the base model finish (**P-GRAFT**) — and compare each round with its exact target.
The method: the **Method notes** tab (offline) · round 0 is always the base model.
"""
METHOD_TAB_ID = "method"
PAPER = "https://arxiv.org/abs/2510.02692"
CSS = """
.gradio-container { max-width: 1500px !important; }
#status { min-height: 2.6em; }
#progress { min-height: 1.6em; }
#run-row { align-items: center; }
.hint { padding: 4px 10px 8px 10px; font-size: 0.9em; opacity: 0.85; }
/* Plots follow the page's theme: transparent backgrounds, and in dark mode light text and faint grid lines. */
.js-plotly-plot .plotly .main-svg { background: transparent !important; }
.js-plotly-plot .plotly .bg { fill: transparent !important; }
.dark .js-plotly-plot .plotly text { fill: var(--body-text-color) !important; }
.dark .js-plotly-plot .plotly .gridlayer path, .dark .js-plotly-plot .plotly .zerolinelayer path {
  stroke: rgba(255, 255, 255, 0.14) !important;
}
.dark .js-plotly-plot .plotly .legend .bg { fill: transparent !important; }
"""
THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="slate", radius_size="sm")


class AppBlocks(gr.Blocks):
    """The app's Blocks: every launch installs the session cookie (`ui.sessions.SessionCookie`), however it
    is launched (the launcher, a test, a script)."""

    def launch(self, *args: Any, **kwargs: Any) -> Any:
        from starlette.middleware import Middleware

        app_kwargs = dict(kwargs.pop("app_kwargs", None) or {})
        app_kwargs["middleware"] = [*app_kwargs.get("middleware", []), Middleware(SessionCookie)]
        return super().launch(*args, app_kwargs=app_kwargs, **kwargs)


def heavy_limit(device: str) -> int:
    """How many heavy events run at once: one on a CPU (torch already uses every core), two on a GPU."""
    return 1 if device == "cpu" else 2


def warm_up(models: BaseModels, dataset: str = "ring8") -> threading.Thread:
    """In the background after start-up: load the default model and run one tiny round with its figures, so
    the first click does not pay for imports, caches and plotly's first figures."""

    def work() -> None:
        from pgraft.graft.config import RunConfig
        from pgraft.graft.runner import RoundResult, RoundRunner
        from pgraft.graft.setup import build_setup
        from pgraft.ui.views import RunView

        try:
            base = models.get(DEFAULT_MODEL, dataset)
            models.base_rewards(DEFAULT_MODEL, dataset, "x", {}, [])
            config = RunConfig(
                model=DEFAULT_MODEL,
                dataset=dataset,
                samples=64,
                preview=16,
                num_inference_steps=4,
                finetune_steps=2,
                rounds=1,
                method="pgraft",
                device=models.device,
            )
            setup = build_setup(config, base=base)
            view = RunView(setup)
            for event in RoundRunner(config, setup=setup).run():
                if isinstance(event, RoundResult):
                    view.add(event)
                    view.figures()
        except Exception:  # a warm-up failure only costs the first click its speed; the click reports it
            return

    thread = threading.Thread(target=work, name="pgraft-warm-up", daemon=True)
    thread.start()
    return thread


def build_demo(
    device: str = "auto",
    sessions_root: Path | None = None,
    warm: bool = True,
    limits: Limits | None = None,
    models_dir: Path | None = None,
    runs_dir: Path | None = None,
    reward_modules: tuple[str, ...] | list[str] = (),
) -> gr.Blocks:
    """The app. `runs_dir`: keep every run there and offer the runs found there to reopen (default: each
    session's temporary folder). `reward_modules`: modules imported now, on the server, whose rewards join the
    lists (`load_reward_modules`); nothing typed in the page is imported."""
    load_reward_modules(reward_modules)
    resolved = resolve_device(device)
    sessions = SessionStore(sessions_root)
    models = BaseModels(resolved)
    limits = Limits() if limits is None else limits
    if runs_dir is not None:
        Path(runs_dir).mkdir(parents=True, exist_ok=True)
    handlers = RoundsHandlers(sessions, models, device, limits, models_dir, runs_dir)  # configs keep "auto"
    limit = heavy_limit(resolved)
    with AppBlocks(
        title="pgraft: GRAFT and P-GRAFT rounds", fill_width=True, delete_cache=(CACHE_SWEEP_S, CACHE_AGE_S)
    ) as demo:
        gr.Markdown(HEADER, elem_id="header")
        with gr.Tabs() as tabs:
            with gr.Tab("Rounds", id=ROUNDS_TAB_ID):
                rounds = build_rounds_tab(handlers, HEAVY_ID, limit)
            ctx = TabContext(
                device=resolved,
                heavy_concurrency_id=HEAVY_ID,
                heavy_concurrency_limit=limit,
                rounds_model=rounds["model"],
                rounds_reward=rounds["reward"],
                rounds_cutoff=rounds["cutoff"],
                rounds_method=rounds["method"],
                rounds_dataset=rounds["dataset"],
                rounds_prompts=rounds["prompts"],
                rounds_reward_args=rounds["reward_args"],
                rounds_controls={name: rounds[name] for name in Controls.names()},
                tabs=tabs,
                rounds_tab_id=ROUNDS_TAB_ID,
                sessions=sessions,
                limits=limits,
                rounds_config=handlers.config,
                rounds_base=models.get_for,
            )
            for module, label, tab_id in OPTIONAL_TABS:
                if importlib.util.find_spec(module) is not None:
                    with gr.Tab(label, id=tab_id):
                        importlib.import_module(module).build_tab(ctx)
            with gr.Tab("Method notes", id=METHOD_TAB_ID):
                gr.Markdown(method_notes(), latex_delimiters=LATEX, elem_id="method-notes")
        demo.load(
            handlers.cutoff_info,
            [rounds[k] for k in ("model", "dataset", "method", "cutoff", "num_inference_steps")],
            rounds["cutoff_info"],
            api_visibility="undocumented",
        )
        rule_inputs = [rounds[name] for name in Controls.names()]
        rule_outputs = [rounds[k] for k in ("threshold", "quantile", "n", "k", "beta", "reshaping")]
        demo.load(
            handlers.rule_changed,
            rule_inputs,
            rule_outputs,
            concurrency_id="base-rewards",
            concurrency_limit=1,
            api_visibility="undocumented",
        )
        list_out = [rounds[k] for k in ("run_list", "compare_pick", "earlier")]
        demo.load(handlers.run_list, None, list_out, api_visibility="undocumented", concurrency_limit=None)
        demo.unload(handlers.close)
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=None)
    demo.pgraft_sessions = sessions  # type: ignore[attr-defined]  # for tests and the launcher
    if warm:
        warm_up(models)
    return demo


LATEX: list[dict[str, str | bool]] = [
    {"left": "$$", "right": "$$", "display": True},
    {"left": "$", "right": "$", "display": False},
]


def method_notes() -> str:
    """The method notes (`docs/method.md` of the source tree), served by the app itself so they read offline."""
    path = Path(__file__).resolve().parents[2] / "docs" / "method.md"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        text = "The method notes (`docs/method.md`) are not installed with this copy of pgraft."
    return f"{text}\n\n---\nThe paper: {PAPER} (online)."


def launch(
    demo: gr.Blocks,
    host: str = "127.0.0.1",
    port: int | None = None,
    auth: tuple[str, str] | None = None,
    **kwargs: Any,
) -> Any:
    """Serve the demo with the app's theme and style; `auth` is (user, password) or None."""
    return demo.launch(
        server_name=host,
        server_port=port,
        auth=auth,
        share=False,  # never open a public tunnel
        theme=THEME,
        css=CSS,
        footer_links=[],
        **kwargs,
    )
