"""The Rounds tab: controls on the left, what a run shows on the right, and the events that connect them.

Layout only; the handlers live in `rounds_handlers.py` and all logic in the library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from pgraft.core.acceptance import RULES
from pgraft.domains.toy2d.mixture import DATASETS
from pgraft.ui.controls import DIGIT_PROMPTS, Controls, domain_defaults, format_reward_args, reward_choices
from pgraft.ui.presets import available_presets
from pgraft.ui.rounds_handlers import RUN_OUTPUTS, RoundsHandlers, model_choices, model_info
from pgraft.ui.views import empty_figures

DEFAULT_MODEL = "toy2d"
RULE_LABELS = {
    "best-of-n": "best of n — keep the best of each group of n",
    "quantile": "quantile — keep the top fraction of the batch",
    "threshold": "threshold — keep rewards above a value",
    "top-k": "top-k — keep the k best of the batch",
    "soft": "soft — accept with probability exp((r − r_max)/β)",
    "dedup-top-k": "de-duplicated top-k — top-k counting near-duplicates once",
}


@dataclass
class RoundsTab:
    components: dict[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.components[name]


def _controls(c: dict[str, Any]) -> None:
    """The left column's controls, stored in `c` under the `Controls` field names."""
    d = domain_defaults(DEFAULT_MODEL)
    with gr.Group():
        c["model"] = gr.Dropdown(
            model_choices(), value=DEFAULT_MODEL, label="Base model", info=model_info(DEFAULT_MODEL), elem_id="model"
        )
        c["dataset"] = gr.Radio(sorted(DATASETS), value="ring8", label="Data set of the toy")
        c["prompts"] = gr.CheckboxGroup(
            DIGIT_PROMPTS,
            value=["3"],
            label="Prompts (digits to generate)",
            visible=False,
            info="Each prompt gets its own samples; the rule compares a prompt's samples among themselves.",
        )
        # Custom values pass the dropdown so that API clients can pick any model's rewards; the library still
        # refuses a reward of another domain and anything that looks like module:function.
        c["reward"] = gr.Dropdown(
            reward_choices(DEFAULT_MODEL), value="x", label="Reward", allow_custom_value=True, elem_id="reward"
        )
        c["reward_args"] = gr.Textbox(
            format_reward_args("x"),
            label="Reward arguments",
            placeholder="key=value, key=value",
            visible=False,
            info="Numbers or plain words only; nothing typed here is executed.",
        )
    with gr.Group():
        c["method"] = gr.Radio(
            [("GRAFT", "graft"), ("P-GRAFT", "pgraft")],
            value="graft",
            label="Method",
            info="GRAFT fine-tunes at every noise level; P-GRAFT only above the cutoff, handing over to the base.",
        )
        c["cutoff"] = gr.Slider(
            0.05, 0.95, value=0.4, step=0.05, label="Cutoff t_c (fraction of the noise range)", visible=False
        )
        c["cutoff_info"] = gr.Markdown(elem_classes=["hint"])
    with gr.Group():
        c["rule"] = gr.Dropdown(
            [(RULE_LABELS[r], r) for r in RULES], value="best-of-n", label="Acceptance rule", elem_id="rule"
        )
        c["threshold"] = gr.Slider(-1, 1, value=0.0, label="Threshold τ (range: base rewards)", visible=False)
        c["quantile"] = gr.Slider(
            0.5, 0.99, value=0.75, step=0.01, label="Quantile q (keeps the top 1 − q)", visible=False
        )
        c["n"] = gr.Slider(2, 16, value=4, step=1, label="n (best of n)")
        c["k"] = gr.Number(64, precision=0, label="k (kept per prompt)", visible=False)
        c["beta"] = gr.Number(1.0, label="Temperature β", visible=False)
    with gr.Group():
        with gr.Row():
            c["samples"] = gr.Slider(256, 8192, value=d["samples"], step=256, label="Samples per round")
            c["rounds"] = gr.Slider(1, 10, value=d["rounds"], step=1, label="Rounds", elem_id="rounds")
        with gr.Row():
            c["finetune_steps"] = gr.Slider(0, 1000, value=d["finetune_steps"], step=10, label="Fine-tuning steps")
            c["lr"] = gr.Number(d["lr"], label="Learning rate", minimum=0)
        c["seed"] = gr.Number(0, precision=0, label="Seed")
    with gr.Accordion("Sampler and fine-tuning details", open=False):
        c["num_inference_steps"] = gr.Slider(2, 200, value=d["num_inference_steps"], step=1, label="Sampling steps")
        c["sampler"] = gr.Radio(["ddpm", "ddim"], value=d["sampler"], label="Sampler (ddpm = ancestral; ddim uses η)")
        c["eta"] = gr.Slider(0.0, 1.0, value=d["eta"], step=0.05, label="DDIM η (0 = deterministic)")
        c["batch_size"] = gr.Slider(16, 2048, value=d["batch_size"], step=16, label="Fine-tuning batch size")
        c["preview"] = gr.Slider(0, 1024, value=d["preview"], step=8, label="Preview samples (same seeds every round)")
        c["anchoring"] = gr.Radio(
            ["intermediate", "final"],
            value="intermediate",
            label="P-GRAFT anchors",
            info="intermediate: train on the accepted handoff states x_tc (the paper); final: on the accepted x_0.",
        )


def _results(c: dict[str, Any]) -> None:
    hist, samples, curves = empty_figures()
    c["status"] = gr.Markdown("Choose a setting (or a preset) and press **Run**.", elem_id="status")
    with gr.Row(equal_height=True):
        c["histogram"] = gr.Plot(hist, label="Reward histogram", elem_id="histogram")
        c["reshaping"] = gr.Plot(label="What the rule optimises", elem_id="reshaping")
    c["samples_plot"] = gr.Plot(samples, label="Samples before / after", elem_id="samples")
    c["curves"] = gr.Plot(curves, label="Per-round curves", elem_id="curves")
    with gr.Accordion("Results table and downloads", open=False):
        c["table"] = gr.Dataframe(label="Every round (round 0 = base model)", interactive=False, max_height=320)
        with gr.Row():
            c["csv"] = gr.DownloadButton("Download metrics.csv", interactive=False, size="sm")
            c["archive"] = gr.DownloadButton("Download the run folder (.zip)", interactive=False, size="sm")
    with gr.Accordion("Export: reproduce this as a full run", open=False):
        c["export"] = gr.Button("Export current settings", size="sm")
        c["yaml"] = gr.Code(
            language="yaml", label="config.yaml (pgraft run --config config.yaml)", buttons=["copy", "download"]
        )
        c["command"] = gr.Code(language="shell", label="pgraft run command", lines=2, buttons=["copy"])


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
            _controls(c)
            with gr.Row():
                c["run"] = gr.Button("Run", variant="primary", elem_id="run")
                c["stop"] = gr.Button("Stop", variant="stop", interactive=False, elem_id="stop")
        with gr.Column(scale=7):
            _results(c)
    _wire(c, handlers, heavy_id, heavy_limit)
    return RoundsTab(c)


def _wire(c: dict[str, Any], h: RoundsHandlers, heavy_id: str, heavy_limit: int) -> None:
    inputs = [c[n] for n in Controls.names()]
    light: dict[str, Any] = dict(concurrency_limit=None, api_visibility="undocumented")
    domain_keys = ["model", "dataset", "prompts", "reward", "reward_args", *domain_defaults(DEFAULT_MODEL)]
    c["model"].input(
        lambda m: _ordered(h.model_changed(m), domain_keys), c["model"], [c[k] for k in domain_keys], **light
    )
    c["reward"].input(h.reward_changed, c["reward"], c["reward_args"], **light)
    preset_keys = [*Controls.names(), "note"]
    c["preset"].input(lambda p: _ordered(h.preset(p), preset_keys), c["preset"], [c[k] for k in preset_keys], **light)
    c["method"].change(lambda m: gr.update(visible=m == "pgraft"), c["method"], c["cutoff"], **light)
    cut_in = [c[k] for k in ("model", "dataset", "method", "cutoff", "num_inference_steps")]
    gr.on([x.change for x in cut_in], h.cutoff_info, cut_in, c["cutoff_info"], **light)
    rule_out = [c[k] for k in ("threshold", "quantile", "n", "k", "beta", "reshaping")]
    triggers = [c[k].change for k in ("rule", "reward", "model", "dataset", "n", "k", "beta", "prompts", "samples")]
    triggers += [c[k].release for k in ("threshold", "quantile")] + [c["reward_args"].submit]
    gr.on(
        triggers,
        h.rule_changed,
        inputs,
        rule_out,
        concurrency_id="base-rewards",
        concurrency_limit=1,
        trigger_mode="always_last",
        api_visibility="undocumented",
    )

    def run(
        model: str,
        dataset: str,
        reward: str,
        reward_args: str,
        prompts: list[str],
        method: str,
        cutoff: float,
        rule: str,
        threshold: float,
        quantile: float,
        n: float,
        k: float,
        beta: float,
        samples: float,
        rounds: float,
        finetune_steps: float,
        lr: float,
        seed: float,
        num_inference_steps: float,
        sampler: str,
        eta: float,
        batch_size: float,
        preview: float,
        anchoring: str,
        request: gr.Request,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> Any:
        """Run the rounds; the parameters are the `Controls` fields, named for API clients."""
        values = locals()
        yield from h.run(Controls(**{name: values[name] for name in Controls.names()}), request, progress)

    c["run"].click(
        run,
        inputs,
        [c[k] for k in RUN_OUTPUTS],
        api_name="run",
        concurrency_id=heavy_id,
        concurrency_limit=heavy_limit,
        show_progress_on=c["status"],  # one progress bar, not an overlay on every figure
    )
    c["stop"].click(h.stop, None, c["status"], api_name="stop", concurrency_limit=None, show_progress="hidden")
    c["export"].click(h.export, inputs, [c["yaml"], c["command"]], api_name="export", concurrency_limit=None)


def _ordered(updates: dict[str, Any], keys: list[str]) -> tuple[Any, ...]:
    return tuple(updates.get(k, gr.update()) for k in keys)
