"""The "Scout" tab: search the cutoff, the rule and the budget with short runs, then export the full run.

Layout and wiring only; the handlers are in `scout_handlers.py` and the study in `pgraft.studies.scout`. Every
trial is a run of the Rounds tab's settings with the searched ones changed; trials stream into a table and a
Pareto plot; "Use this trial" writes a trial's settings into the Rounds tab, "Export full run" shows the
chosen trial's `full_run.yaml`, its commands and the predicted cost.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import gradio as gr
import pandas as pd

from pgraft.studies.scout import OBJECTIVES
from pgraft.ui.bias_variance_tab import studied
from pgraft.ui.context import TabContext
from pgraft.ui.controls import Controls
from pgraft.ui.forms import named_handler
from pgraft.ui.rounds_tab import DEFAULT_MODEL
from pgraft.ui.scout_handlers import (
    API_NAMES,
    CARRIED,
    RANGES,
    SETTINGS,
    ScoutHandlers,
    export_full_run,
    figure,
    has_lora,
    model_ranges,
    trials_frame,
    use_trial,
)
from pgraft.ui.sessions import SessionStore

INTRO = """
**Scout before a full run.** Each trial is a short run of the Rounds tab's settings with the searched ones
drawn by [Optuna](https://optuna.org) from the ranges below (cutoff 0 is GRAFT). A range left blank keeps the
Rounds tab's value. The study ranks trials by final reward and realism loss against the base: **pareto**
keeps the front and recommends as the bias–variance sweep does (the best reward within the realism bound);
**reward** and **penalised** (reward − weight × realism loss) stop weak trials early.
"""
RANGE_HELP = {
    "cutoff": "LOW:HIGH[:STEP]; 0 is GRAFT",
    "rule": "rules to try, comma-separated",
    "n": "best-of-n's n, e.g. 2,4,8",
    "quantile": "quantile rule's level",
    "k": "top-k's k (drawn with top-k only)",
    "beta": "soft rule's temperature; :log for a log scale",
    "threshold": "threshold rule's value, in reward units",
    "samples": "candidates per round",
    "finetune_steps": "fine-tuning steps per round",
    "lr": "learning rate; :log for a log scale",
    "lora_rank": "LoRA rank (pipelines only)",
}
_DIRECT = SessionStore()


def _studied(model: Any, dataset: Any, reward: Any, reward_args: Any, prompts: Any) -> str:
    text = studied(model, dataset, reward, reward_args, prompts, verb="Scouts")
    return text + " Every other setting is the Rounds tab's too, unless a range below searches it."


def _value(component: Any, default: Any) -> Any:
    return getattr(component, "value", default) if component is not None else default


def _range_updates(model: str, samples: Any = None, finetune_steps: Any = None, lr: Any = None) -> list[Any]:
    texts = model_ranges(model, samples, finetune_steps, lr)
    return [gr.update(value=texts[n], visible=n != "lora_rank" or has_lora(model)) for n in RANGES]


def build_tab(ctx: TabContext) -> None:
    """Lay out the tab's components inside the `gr.Tab` the shell opened, and wire its events."""
    if ctx.rounds_controls is None:
        raise ValueError("the Scout tab needs the Rounds tab's controls (TabContext.rounds_controls)")
    if importlib.util.find_spec("optuna") is None:
        gr.Markdown("Scouting needs Optuna: `pip install 'pgraft[scout]'` (the `dev` extra has it).")
        return
    rc = ctx.rounds_controls
    sessions = _DIRECT if ctx.sessions is None else ctx.sessions
    handlers = ScoutHandlers(sessions, ctx.limits, ctx.rounds_config, ctx.device, ctx.rounds_base)
    model0 = _value(rc["model"], DEFAULT_MODEL)
    texts = model_ranges(
        model0, _value(rc["samples"], None), _value(rc["finetune_steps"], None), _value(rc["lr"], None)
    )
    gr.Markdown(INTRO)
    c: dict[str, Any] = {}
    with gr.Row():
        with gr.Column(scale=4, min_width=320):
            shown = [rc[k] for k in ("model", "dataset", "reward", "reward_args", "prompts")]
            studies = gr.Markdown(_studied(*(_value(x, "") for x in shown)), elem_id="scout-studies")
            with gr.Accordion("Ranges to search (blank: the Rounds tab's value)", open=True):
                for pair in (RANGES[i : i + 2] for i in range(0, len(RANGES), 2)):
                    with gr.Row():
                        for name in pair:
                            c[f"{name}_range"] = gr.Textbox(
                                texts[name], label=name.replace("_", "-"), info=RANGE_HELP[name], max_lines=1,
                                placeholder="blank: not searched", visible=name != "lora_rank" or has_lora(model0),
                                elem_id=f"scout-range-{name.replace('_', '-')}", min_width=140,
                            )  # fmt: skip
                c["reset"] = gr.Button(
                    "Default ranges around the Rounds tab's budget", size="sm", elem_id="scout-reset"
                )
            with gr.Group():
                limit = int(getattr(ctx.limits, "trials", 32) or 32)
                c["trials"] = gr.Number(8, label=f"Trials (at most {limit} here)", precision=0, minimum=1,
                                        elem_id="scout-trials")  # fmt: skip
                c["objective"] = gr.Radio(
                    list(OBJECTIVES), value="pareto", label="Objective", elem_id="scout-objective"
                )
                c["realism_weight"] = gr.Number(
                    1.0, label="Realism weight w (penalised: reward − w × loss)", visible=False
                )
                c["max_realism_loss"] = gr.Textbox(
                    "", label="Max realism loss of the recommended trial (pareto)",
                    placeholder="blank: the domain's bound (loglik 0.5, fid_real 5)",
                )  # fmt: skip
            with gr.Accordion("Full run", open=False):
                c["scale"] = gr.Number(4.0, label="Budget × (candidates and fine-tuning steps of the chosen trial)")
                c["devices"] = gr.Number(
                    8, label="GPUs for the accelerate command and the cost", precision=0, minimum=1
                )
            with gr.Row():
                c["run"] = gr.Button("Scout", variant="primary", elem_id="scout-run")
                c["stop"] = gr.Button("Stop", variant="stop", interactive=False, elem_id="scout-stop")
            c["progress"] = gr.Markdown("", elem_id="scout-progress")
        with gr.Column(scale=7):
            status = gr.Markdown("Model and reward follow the Rounds tab.", elem_id="scout-status")
            plot = gr.Plot(figure({}), label="Trials: final reward against realism loss", elem_id="scout-plot")
            table = gr.Dataframe(trials_frame({}), label="Finished trials", interactive=False, elem_id="scout-table")
            with gr.Row(equal_height=True):
                pick = gr.Dropdown([], value=None, label="Trial", elem_id="scout-pick", scale=2)
                use = gr.Button("Use this trial", elem_id="scout-use", scale=1)
                export = gr.Button("Export full run", elem_id="scout-export", scale=1)
            with gr.Accordion("Full run: config, commands, predicted cost", open=True, elem_id="scout-export-panel"):
                full_yaml = gr.Code(language="yaml", label="full_run.yaml", buttons=["copy", "download"])
                commands = gr.Code(language="shell", label="Run it: one process, or N GPUs with accelerate", lines=3,
                                   buttons=["copy"], elem_id="scout-commands")  # fmt: skip
                cost = gr.Dataframe(
                    pd.DataFrame(columns=["devices", "predicted", "predicted_s"]),
                    label="Predicted wall time (from the trials' timed parts)",
                    interactive=False,
                    elem_id="scout-cost",
                )
    data = gr.State({})
    rounds_inputs = [rc[n] for n in Controls.names()]
    inputs = [*rounds_inputs, *(c[f"{n}_range"] for n in RANGES), *(c[n] for n in SETTINGS)]

    run = named_handler(
        API_NAMES,
        lambda values, request, progress: handlers.run(values, request, progress),
        "Scout: the Rounds tab's controls, one range per searchable parameter (blank: not searched), the study.",
        stream=True,
    )
    light: dict[str, Any] = dict(concurrency_limit=None, api_visibility="undocumented")
    ctx.wire_heavy(c["run"], c["stop"], run, inputs, [table, plot, status, pick, data], "scout", c["progress"])
    c["stop"].click(handlers.stop, None, status, api_name="scout_stop", concurrency_limit=None)

    c["objective"].change(
        lambda o: (gr.update(visible=o == "penalised"), gr.update(visible=o == "pareto")),
        c["objective"], [c["realism_weight"], c["max_realism_loss"]], **light,
    )  # fmt: skip
    range_boxes = [c[f"{n}_range"] for n in RANGES]
    rc["model"].change(lambda m: _range_updates(m), rc["model"], range_boxes, **light)
    budget = [rc[k] for k in ("model", "samples", "finetune_steps", "lr")]
    c["reset"].click(_range_updates, budget, range_boxes, **light)
    gr.on([x.change for x in shown], _studied, shown, studies, **light)

    bounds = (float(getattr(rc["cutoff"], "minimum", 0.0)), float(getattr(rc["cutoff"], "maximum", 1.0)))

    def use_it(d: dict[str, Any] | None, trial: Any, model: Any, reward: Any) -> tuple[Any, ...]:
        updates = use_trial(d, trial, model, reward, bounds)
        return (*(updates[n] for n in CARRIED), gr.Tabs(selected=ctx.rounds_tab_id))

    use.click(use_it, [data, pick, rc["model"], rc["reward"]], [*(rc[n] for n in CARRIED), ctx.tabs], **light)
    export.click(export_full_run, data, [full_yaml, commands, cost], **light)
