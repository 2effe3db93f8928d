"""The Rounds tab: controls on the left, what a run shows on the right, and the events that connect them.

Layout only; the handlers live in `rounds_handlers.py` and all logic in the library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from pgraft.core.acceptance import RULES
from pgraft.registry import default_reward, get_domain, get_model_spec
from pgraft.ui.controls import Controls, domain_defaults, format_reward_args, reward_choices
from pgraft.ui.forms import control, named_handler
from pgraft.ui.presets import available_presets
from pgraft.ui.rounds_handlers import (
    COMPARE_OUTPUTS,
    RUN_LIST_OUTPUTS,
    RUN_OUTPUTS,
    RoundsHandlers,
    model_choices,
    model_info,
)
from pgraft.ui.views import empty_figures

DEFAULT_MODEL = "toy2d"
DEFAULTED = (
    "samples",
    "num_inference_steps",
    "finetune_steps",
    "batch_size",
    "lr",
    "rounds",
    "preview",
    "sampler",
    "eta",
)
"""The controls a model's domain sets when the model changes (`controls.domain_defaults`)."""


@dataclass
class RoundsTab:
    components: dict[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.components[name]


def _controls(c: dict[str, Any], models_dir: Any = None) -> None:
    """The left column's controls, stored in `c` under the `Controls` names; each comes from its `RunConfig`
    field's metadata (`ui.forms.control`), with the default model's values."""
    d = domain_defaults(DEFAULT_MODEL)
    spec, domain = get_model_spec(DEFAULT_MODEL), get_domain(get_model_spec(DEFAULT_MODEL).domain)
    reward = default_reward(DEFAULT_MODEL)
    with gr.Group():
        c["model"] = control(
            "model", choices=model_choices(models_dir), value=DEFAULT_MODEL, info=model_info(DEFAULT_MODEL)
        )
        c["dataset"] = control(
            "dataset", choices=list(domain.datasets), value="ring8", visible="dataset" in spec.options
        )
        c["prompts"] = control(
            "prompts",
            choices=list(domain.prompt_choices),
            value=list(domain.prompt_choices[:1]),
            visible=spec.conditional,
        )
        # Custom values pass the dropdown so that API clients can pick any model's rewards; the library still
        # refuses a reward of another domain and anything that looks like module:function.
        c["reward"] = control(
            "reward", choices=reward_choices(DEFAULT_MODEL), value=reward, allow_custom_value=True, elem_id="reward"
        )
        c["reward_args"] = control("reward_args", value=format_reward_args(reward), visible=False)
    with gr.Group():
        c["method"] = control("method")
        c["cutoff"] = control("cutoff", visible=False)
        c["cutoff_info"] = gr.Markdown(elem_classes=["hint"])
    with gr.Group():
        rules = [(f"{name} — {rule.label}", name) for name, rule in RULES.items()]
        c["rule"] = control("rule", choices=rules, value="best-of-n", elem_id="rule")
        for name in ("threshold", "quantile", "n", "k", "beta"):
            # The threshold's range follows the base rewards: the handler, not the slider, bounds what is typed.
            c[name] = control(name, visible=name == "n", elem_id=f"rule-{name}", free=name == "threshold")
    with gr.Group():
        with gr.Row():
            c["samples"] = control("samples", value=d["samples"])
            c["rounds"] = control("rounds", value=d["rounds"], elem_id="rounds")
        with gr.Row():
            c["finetune_steps"] = control("finetune_steps", value=d["finetune_steps"])
            c["lr"] = control("lr", value=d["lr"])
        c["seed"] = control("seed")
    with gr.Accordion("Sampler and fine-tuning details", open=False):
        c["num_inference_steps"] = control("num_inference_steps", value=d["num_inference_steps"])
        c["sampler"] = control("sampler", value=d["sampler"])
        c["eta"] = control("eta", value=d["eta"])
        c["batch_size"] = control("batch_size", value=d["batch_size"])
        c["preview"] = control("preview", value=d["preview"])
        c["anchoring"] = control("anchoring")


def _results(c: dict[str, Any], runs_dir: Any = None) -> None:
    hist, samples, curves = empty_figures()
    with gr.Row(equal_height=True, elem_id="run-row"):
        c["run"] = gr.Button("Run", variant="primary", elem_id="run", scale=2, min_width=120)
        c["stop"] = gr.Button("Stop", variant="stop", interactive=False, elem_id="stop", scale=1, min_width=80)
    c["status"] = gr.Markdown("Choose a setting (or a preset) and press **Run**.", elem_id="status")
    c["progress"] = gr.Markdown("", elem_id="progress")  # the progress bar's own place, below the status
    with gr.Row(equal_height=True):
        c["histogram"] = gr.Plot(hist, label="Reward histogram", elem_id="histogram")
        c["reshaping"] = gr.Plot(label="What the rule optimises", elem_id="reshaping")
    c["samples_plot"] = gr.Plot(samples, label="Samples before / after", elem_id="samples")
    c["curves"] = gr.Plot(curves, label="Per-round curves", elem_id="curves")
    with gr.Accordion("Compare runs: every run of this session", open=True, elem_id="compare"):
        c["run_list"] = gr.Dataframe(
            label="Runs (newest last)", interactive=False, max_height=240, elem_id="run-list", wrap=True
        )
        c["compare_pick"] = gr.CheckboxGroup(
            [], label="Tick runs to overlay", info="Curves, last-round histograms and samples from the same seeds.",
            elem_id="compare-pick",
        )  # fmt: skip
        with gr.Row(visible=runs_dir is not None):
            c["earlier"] = gr.Dropdown(
                [],
                label=f"Earlier runs kept in {runs_dir}" if runs_dir is not None else "Earlier runs",
                visible=runs_dir is not None,
                elem_id="earlier",
                scale=3,
            )
            c["reopen"] = gr.Button("Reopen", size="sm", elem_id="reopen", scale=1, min_width=80)
        c["compare_curves"] = gr.Plot(label="Per-round curves of the ticked runs", elem_id="compare-curves")
        with gr.Row(equal_height=True):
            c["compare_histograms"] = gr.Plot(label="Last-round rewards", elem_id="compare-histograms")
            c["compare_samples"] = gr.Plot(label="Last-round samples, same seeds", elem_id="compare-samples")
    with gr.Accordion("Results table and downloads", open=False):
        c["table"] = gr.Dataframe(label="Every round (round 0 = base model)", interactive=False, max_height=320)
        with gr.Row():
            c["csv"] = gr.DownloadButton("Download metrics.csv", interactive=False, size="sm")
            c["archive"] = gr.DownloadButton("Download the run folder (.zip)", interactive=False, size="sm")
    with gr.Accordion("Export: reproduce this as a full run", open=False, elem_id="export-panel"):
        c["export"] = gr.Button("Export current settings", size="sm", elem_id="export")
        c["yaml"] = gr.Code(
            language="yaml", label="config.yaml (every setting the run uses)", buttons=["copy", "download"]
        )
        c["launch"] = gr.Code(
            language="shell",
            label="Run config.yaml: one process, or N processes / GPUs with accelerate",
            lines=3,
            buttons=["copy"],
            elem_id="launch",
        )
        c["command"] = gr.Code(
            language="shell", label="The same as one pgraft run command, every flag explicit", lines=2, buttons=["copy"]
        )


def build_rounds_tab(handlers: RoundsHandlers, heavy_id: str, heavy_limit: int) -> RoundsTab:
    """Lay out the tab inside the current `gr.Tab` and wire its events."""
    c: dict[str, Any] = {}
    with gr.Row():
        with gr.Column(scale=4, min_width=340):
            presets = [p.name for p in available_presets()]
            c["preset"] = gr.Dropdown(
                presets,
                value=None,
                label="Presets: teaching scenarios",
                info="Sets the controls below.",
                elem_id="preset",
            )
            c["note"] = gr.Markdown()
            _controls(c, handlers.models_dir)
        with gr.Column(scale=7, min_width=600):  # below about 950 px the results go under the controls
            _results(c, handlers.runs_dir)
    _wire(c, handlers, heavy_id, heavy_limit)
    return RoundsTab(c)


def _wire(c: dict[str, Any], h: RoundsHandlers, heavy_id: str, heavy_limit: int) -> None:
    inputs = [c[n] for n in Controls.names()]
    light: dict[str, Any] = dict(concurrency_limit=None, api_visibility="undocumented")
    rule_out = [c[k] for k in ("threshold", "quantile", "n", "k", "beta", "reshaping")]
    rule: dict[str, Any] = dict(
        concurrency_id="base-rewards", concurrency_limit=1, trigger_mode="always_last", api_visibility="undocumented"
    )
    # The rule panel follows what the user changes (`.input`, `.release`, `.submit`), and runs once after a
    # handler that sets several controls at once (model, reward, preset) has set them all: a `.change` trigger
    # would also fire halfway through such an update, with a state that mixes old and new values.
    domain_keys = ["model", "dataset", "prompts", "reward", "reward_args", *DEFAULTED]
    c["model"].input(
        lambda m: _ordered(h.model_changed(m), domain_keys), c["model"], [c[k] for k in domain_keys], **light
    ).then(h.rule_changed, inputs, rule_out, **rule)
    c["reward"].input(h.reward_changed, c["reward"], c["reward_args"], **light).then(
        h.rule_changed, inputs, rule_out, **rule
    )
    preset_keys = [*Controls.names(), "note"]
    c["preset"].input(
        lambda p: _ordered(h.preset(p), preset_keys), c["preset"], [c[k] for k in preset_keys], **light
    ).then(h.rule_changed, inputs, rule_out, **rule)
    c["method"].change(lambda m: gr.update(visible=m == "pgraft"), c["method"], c["cutoff"], **light)
    cut_in = [c[k] for k in ("model", "dataset", "method", "cutoff", "num_inference_steps")]
    gr.on([x.change for x in cut_in], h.cutoff_info, cut_in, c["cutoff_info"], **light)
    triggers = [c[k].input for k in ("rule", "dataset", "prompts")] + [c["reward_args"].submit]
    triggers += [c[k].release if isinstance(c[k], gr.Slider) else c[k].input for k in ("n", "k", "beta", "samples")]
    triggers += [c["quantile"].release]
    gr.on(triggers, h.rule_changed, inputs, rule_out, **rule)
    c["threshold"].release(h.threshold_typed, inputs, rule_out, **rule)

    run = named_handler(
        Controls.names(),
        lambda values, request, progress: h.run(Controls(**values), request, progress),
        "Run the rounds; the parameters are the `Controls` (the `RunConfig` fields of the tab).",
        stream=True,
    )
    list_out = [c[k] for k in RUN_LIST_OUTPUTS]
    compare_out = [c[k] for k in COMPARE_OUTPUTS]
    c["run"].click(
        run,
        inputs,
        [c[k] for k in RUN_OUTPUTS],
        api_name="run",
        concurrency_id=heavy_id,
        concurrency_limit=heavy_limit,
        show_progress_on=c["progress"],  # one progress bar, below the status line, not over it or the figures
    ).then(h.run_list, c["compare_pick"], list_out, **light).then(h.compare, c["compare_pick"], compare_out, **light)
    c["stop"].click(h.stop, None, c["status"], api_name="stop", concurrency_limit=None, show_progress="hidden")
    c["export"].click(
        h.export, inputs, [c[k] for k in ("yaml", "command", "launch")], api_name="export", concurrency_limit=None
    )
    c["compare_pick"].input(h.compare, c["compare_pick"], compare_out, **light)
    c["reopen"].click(
        h.reopen, c["earlier"], [c[k] for k in RUN_OUTPUTS], api_name="reopen", concurrency_id=heavy_id,
        concurrency_limit=heavy_limit,
    ).then(h.run_list, c["compare_pick"], list_out, **light).then(
        h.compare, c["compare_pick"], compare_out, **light
    )  # fmt: skip


def _ordered(updates: dict[str, Any], keys: list[str]) -> tuple[Any, ...]:
    return tuple(updates.get(k, gr.update()) for k in keys)
