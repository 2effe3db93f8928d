"""The "Bias–variance" tab: the curves across cutoffs, streamed as cutoffs finish, and the sweep.

A thin layer over `pgraft.studies.bias_variance.study`: the handlers turn the controls into a `RunConfig`, a `CurveSpec`
and a `SweepSpec` (which validate), iterate `study_iter`, and map its events to the plot, the tables and
the status line. The base model and reward follow the Rounds tab; "Use recommended cutoff" writes the
sweep's recommendation into the Rounds tab's method and cutoff and switches to that tab.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from typing import Any

import gradio as gr
import pandas as pd

from pgraft.core.acceptance import RULES
from pgraft.core.events import Notice, Progress
from pgraft.domains.base import StudyDefaults
from pgraft.graft.config import RunConfig
from pgraft.plots.bias_variance import bias_variance_figure
from pgraft.registry import DOMAINS, MODELS, get_model_spec
from pgraft.rewards import RewardError
from pgraft.studies.bias_variance.curves import CurvePoint, CurveSpec
from pgraft.studies.bias_variance.study import ExactReady, StudyFinished, study_iter
from pgraft.studies.sweep import SweepPoint, SweepSpec
from pgraft.ui.context import TabContext
from pgraft.ui.controls import parse_reward_args
from pgraft.ui.forms import control, named_handler
from pgraft.ui.limits import Limits
from pgraft.ui.rounds_tab import DEFAULT_MODEL
from pgraft.ui.sessions import Busy, SessionStore
from pgraft.ui.study_time import StudyClock

TAB = "bias-variance"
RULE_PARAMS = {  # rule -> (RunConfig field, label of the one parameter, default), from the rules' declarations
    name: (rule.param.name, rule.param.label, float(rule.param.app_default))
    for name, rule in RULES.items()
    if rule.rewards_decide  # a(u) alone describes the rule (de-duplication also looks at the samples)
}
DEFAULT_CUTOFFS = " ".join(f"{c:g}" for c in StudyDefaults().cutoffs)
CURVE_SHOWN = ["cutoff", "cutoff_effective", "V", "V_lo", "V_hi", "B", "R2", "D", "D_lo", "D_hi", "D_plugin"]
API_NAMES = (
    "model",
    "reward",
    "dataset",
    "prompts",
    "rule",
    "rule_param",
    "cutoffs",
    "states",
    "continuations",
    "steps",
    "seed",
    "sweep",
    "samples",
    "rounds",
    "finetune_steps",
    "max_loss",
    "selected",
    "reward_args",
)
"""The `/bias_variance` API's parameters, in order (model, reward, reward arguments, data set and prompts are
the Rounds tab's controls: the study studies exactly what the Rounds tab runs)."""
INTRO = """
**Why a cutoff helps.** The final reward is a noisy label for an intermediate state: its noise
`V(t) = E[Var(r | Xₜ)]` rises with the cutoff `t`, while the correction the fine-tuned model must learn,
the tilt `D(t) = KL(p̃ₜ ‖ p̄ₜ)`, shrinks. Estimates use `M` base states per cutoff and `R` ancestral
continuations each (bands: bootstrap over states); on the toy the exact curves of the true mixture are drawn
underneath. The sweep runs one P-GRAFT run per cutoff (and GRAFT at 0) with the same budget.
"""
LESSONS: dict[str, tuple[str, dict[str, Any]]] = {
    "Variance grows with the cutoff": (
        "Watch **V(t)** in the first panel: the noise of the final reward given the state at level t grows "
        "with t — the noisier the state one judges, the less its reward says about it — and **R²(t)** falls. "
        "Labels at a high cutoff are noisy: that is the price P-GRAFT pays.",
        dict(rule="best-of-n", rule_param=4, cutoffs="0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9", states=128,
             continuations=8),
    ),
    "The tilt shrinks": (
        "Watch **D(t)** in the third panel: the KL between the tilted and the base distribution at level t — "
        "what the fine-tuned model has to learn there — shrinks as t grows: near pure noise the target barely "
        "differs from the base. A stronger rule (best of 8) makes the tilt larger at every t, and still shrinking.",
        dict(rule="best-of-n", rule_param=8, cutoffs="0.1 0.3 0.5 0.7 0.9", states=128, continuations=8),
    ),
}  # fmt: skip
"""Teaching settings of the tab, for whatever model the Rounds tab has: a note and the controls they set."""
LESSON_KEYS = ("rule", "rule_param", "cutoffs", "states", "continuations")
_DIRECT = SessionStore()
"""The session store of a tab's handlers called on their own (the app passes its own)."""


def parse_cutoffs(text: str) -> tuple[float, ...]:
    """Cutoffs typed as numbers separated by spaces or commas; every one must lie in (0, 1)."""
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"cutoffs: {text!r} must be numbers in (0, 1) separated by spaces or commas") from None
    return CurveSpec(values).cutoffs


def _prompt_list(prompts: str | list[str] | None) -> list[str]:
    if isinstance(prompts, (list, tuple)):
        return [str(p) for p in prompts if str(p).strip()]
    return [p for p in re.split(r"[,;]\s*", (prompts or "").strip()) if p]


def parse_max_loss(value: Any) -> float | None:
    """The sweep's realism tolerance: blank (or None) is the domain's documented bound, else a number >= 0."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"max realism loss: {value!r} is invalid; leave it blank for the domain's bound or enter a number >= 0"
        ) from None
    if not x >= 0 or x == float("inf"):
        raise ValueError(f"max realism loss: {value!r} is invalid; enter a finite number >= 0 (or leave it blank)")
    return x


def make_specs(
    model: str,
    reward: str,
    dataset: str,
    prompts: str | list[str],
    rule: str,
    rule_param: float,
    cutoffs: str,
    states: float,
    continuations: float,
    steps: float,
    seed: float,
    sweep: bool,
    samples: float,
    rounds: float,
    finetune_steps: float,
    max_loss: float | str | None,
    device: str,
    reward_args: str | None = None,
) -> tuple[RunConfig, CurveSpec, SweepSpec | None]:
    """The study's configuration from the tab's controls; every bad value raises `ValueError` naming it.
    `reward_args` is the Rounds tab's `key=value, ...` text, parsed against the reward's declared arguments."""
    if rule not in RULE_PARAMS:
        raise ValueError(f"rule: {rule!r} is not offered here; choose one of {list(RULE_PARAMS)}")
    field, _label, _default = RULE_PARAMS[rule]
    rule_value: dict[str, Any] = {field: int(rule_param) if field in ("n", "k") else float(rule_param)}
    spec = get_model_spec(model)
    config = RunConfig(
        model=model,
        dataset=dataset if "dataset" in spec.options else RunConfig.dataset,
        reward=reward,
        reward_args=parse_reward_args(reward, reward_args, model),
        prompts=_prompt_list(prompts) if spec.conditional else [],
        rule=rule,
        samples=int(samples),
        rounds=int(rounds),
        finetune_steps=int(finetune_steps),
        preview=0,
        num_inference_steps=int(steps),
        seed=int(seed),
        device=device,
        **rule_value,
    )
    cut = parse_cutoffs(cutoffs)
    curve = CurveSpec(cut, int(states), int(continuations))
    sweep_spec = SweepSpec(cut, True, parse_max_loss(max_loss)) if sweep else None
    return config, curve, sweep_spec


def check_limits(limits: Limits, config: RunConfig, curve: CurveSpec, sweep: SweepSpec | None) -> None:
    """The study's request within this server's budgets (`ValueError` naming the setting)."""
    limits.check("cutoffs", len(curve.cutoffs), "cutoffs (count)")
    limits.check("states", curve.states)
    limits.check("continuations", curve.continuations)
    limits.check("num_inference_steps", config.num_inference_steps, "steps")
    if sweep is not None:
        for name in ("samples", "rounds", "finetune_steps"):
            limits.check(name, getattr(config, name))


def _view(data: dict[str, Any], selected: float | None) -> Any:
    rec = data.get("recommended")
    return bias_variance_figure(data.get("curves"), data.get("exact"), data.get("sweep"), selected, rec)


def _tables(data: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    curves = data.get("curves")
    sweep = data.get("sweep")
    shown = curves[[c for c in CURVE_SHOWN if c in curves]].round(4) if curves is not None else pd.DataFrame()
    return shown, (sweep.round(4) if sweep is not None else pd.DataFrame())


def run_study(
    model: str,
    reward: str,
    dataset: str,
    prompts: str,
    rule: str,
    rule_param: float,
    cutoffs: str,
    states: float,
    continuations: float,
    steps: float,
    seed: float,
    sweep: bool,
    samples: float,
    rounds: float,
    finetune_steps: float,
    max_loss: float | str | None,
    selected: float | None,
    reward_args: str | None = None,
    device: str = "cpu",
    request: gr.Request | None = None,
    progress: gr.Progress | None = None,
    sessions: SessionStore | None = None,
    limits: Limits | None = None,
) -> Generator[tuple[Any, ...], None, None]:
    """Stream (figure, curves table, sweep table, status, state) as the study's parts finish."""
    try:
        config, curve_spec, sweep_spec = make_specs(
            model, reward, dataset, prompts, rule, rule_param, cutoffs, states, continuations, steps, seed,
            sweep, samples, rounds, finetune_steps, max_loss, device, reward_args,
        )  # fmt: skip
        check_limits(Limits() if limits is None else limits, config, curve_spec, sweep_spec)
    except ValueError as exc:
        raise gr.Error(str(exc), title="Cannot start") from None
    store = _DIRECT if sessions is None else sessions
    try:
        session, job = store.start(request, TAB)
    except Busy:
        raise gr.Error("A study is already running in this browser tab: press Stop first.", title="Busy") from None
    data: dict[str, Any] = {"curves": None, "exact": None, "sweep": None, "recommended": None}
    data["settings"] = carried_settings(config)
    rows: list[dict[str, Any]] = []
    sweep_rows: list[dict[str, Any]] = []
    try:
        clock = StudyClock(config, curve_spec, sweep_spec)
        yield (_view(data, selected), *_tables(data), f"**Starting.** {clock.estimate()}", dict(data))
        for ev in study_iter(config, curve_spec, sweep_spec, should_stop=job.stop.is_set):
            status = _event_status(ev, data, rows, sweep_rows, progress)
            if status is not None:
                yield (_view(data, selected), *_tables(data), clock.with_time_left(status, ev), dict(data))
    except (ValueError, RewardError) as exc:
        raise gr.Error(str(exc), title="Cannot run") from None
    finally:
        store.finish(session, TAB)


CARRIED = ("samples", "rounds", "finetune_steps", "rule", "threshold", "quantile", "n", "k", "beta")
"""The Rounds tab's controls that "Use recommended cutoff" sets from the sweep's settings."""


def carry_settings(data: dict[str, Any] | None, names: list[str]) -> list[Any]:
    """Updates of the Rounds tab's `names` controls to the sweep's budget and rule (the rest left alone)."""
    settings = (data or {}).get("settings") or {}
    return [gr.update(value=settings[k]) if k in settings else gr.update() for k in names]


def carried_settings(config: RunConfig) -> dict[str, Any]:
    """What "Use recommended cutoff" carries to the Rounds tab besides the cutoff: the sweep's budget and rule."""
    param = RULE_PARAMS[config.rule][0]
    return {
        "samples": config.samples,
        "rounds": config.rounds,
        "finetune_steps": config.finetune_steps,
        "rule": config.rule,
        param: getattr(config, param),
    }


def _event_status(
    ev: Any, data: dict[str, Any], rows: list[dict[str, Any]], sweep_rows: list[dict[str, Any]], progress: Any
) -> str | None:
    """Fold one study event into `data`; the status line when the view should update, else None."""
    if isinstance(ev, Progress):
        if progress is not None:
            progress((ev.done, ev.total), desc=ev.describe())
        return None
    if isinstance(ev, Notice):
        data["note"] = ev.message
        return f"Running: {ev.message}."
    if isinstance(ev, ExactReady):
        data["exact"] = ev.table
        return "Exact curves of the true mixture ready; estimating…"
    if isinstance(ev, CurvePoint):
        rows.append(ev.row)
        data["curves"] = pd.DataFrame(rows).sort_values("cutoff")
        return f"Cutoff {ev.row['cutoff']:g} done ({len(rows)} so far, {ev.row['seconds']:.1f} s)."
    if isinstance(ev, SweepPoint):
        sweep_rows.append(ev.row)
        data["sweep"] = pd.DataFrame(sweep_rows).sort_values("cutoff")
        return f"Sweep: cutoff {ev.row['cutoff']:g} done (final reward {ev.row['final_reward']:.4g})."
    if isinstance(ev, StudyFinished):
        data.update(curves=ev.curves, sweep=ev.sweep)
        if ev.cancelled:
            return "**Stopped.** Finished cutoffs are kept."
        if ev.recommendation is None:
            return "**Done.** Tick the sweep to get a recommended cutoff." + _note(data)
        data["recommended"] = ev.recommendation.cutoff
        carried = ", ".join(f"{k.replace('_', ' ')} {v:g}" if not isinstance(v, str) else f"{k} {v}"
                            for k, v in (data.get("settings") or {}).items())  # fmt: skip
        return (
            f"**Done.** Recommended: {ev.recommendation.describe()}. *Use recommended cutoff* also sets the "
            f"Rounds tab to the sweep's settings ({carried})." + _note(data)
        )
    return None


def _note(data: dict[str, Any]) -> str:
    return f"\n\n{data['note']}." if data.get("note") else ""


def study_steps(model: str) -> Any:
    """The sampling-steps control for a model: its domain's study default (the model's own chain on the toy)."""
    spec = get_model_spec(model) if model in MODELS else None
    if spec is None:
        return gr.update()
    steps = DOMAINS[spec.domain].study.num_inference_steps or DOMAINS[spec.domain].defaults.num_inference_steps
    return gr.update(value=steps)


def stop_study(request: gr.Request | None = None, sessions: SessionStore | None = None) -> str:
    if not (_DIRECT if sessions is None else sessions).request_stop(request, TAB):
        return "Nothing is running."
    return "Stopping at the next step; finished cutoffs are kept…"


def redraw(data: dict[str, Any] | None, selected: float | None) -> Any:
    """The figure again with the Rounds tab's current cutoff marked (a light event)."""
    return _view(data or {}, selected)


def use_recommended(
    data: dict[str, Any] | None, rounds_tab_id: str, bounds: tuple[float, float] = (0.0, 1.0)
) -> tuple[Any, Any, Any]:
    """The recommendation carried to the Rounds tab: its cutoff slider (kept within `bounds`), its method
    (cutoff 0 is GRAFT), and the switch there."""
    rec = (data or {}).get("recommended")
    if rec is None:
        raise gr.Error("No recommendation yet: run the study with the sweep ticked first.", title="Nothing to use")
    if rec == 0:
        gr.Info("The sweep recommends GRAFT (cutoff 0): the Rounds tab is set to GRAFT.")
        return gr.update(), gr.update(value="graft"), gr.Tabs(selected=rounds_tab_id)
    value = min(max(float(rec), bounds[0]), bounds[1])
    if value != rec:
        gr.Warning(f"The recommended cutoff {rec:g} lies outside the slider; set to {value:g}.")
    gr.Info(f"P-GRAFT with cutoff {value:g} set in the Rounds tab.")
    return gr.update(value=value), gr.update(value="pgraft"), gr.Tabs(selected=rounds_tab_id)


def studied(model: str, dataset: str, reward: str, reward_args: str, prompts: Any, verb: str = "Studies") -> str:
    """What the study will study: exactly the Rounds tab's model, data set, reward, its arguments and prompts
    (`verb`: how the tab says it, e.g. "Scouts")."""
    if model not in MODELS:
        return f"{verb} the Rounds tab's model {model!r}, which is not a registered model."
    spec = get_model_spec(model)
    parts = [f"**{verb}:** model `{model}`"]
    if "dataset" in spec.options:
        parts.append(f"data set `{dataset}`")
    try:
        args = parse_reward_args(reward, reward_args, model)
    except ValueError as exc:
        return f"**{verb}:** model `{model}`, reward `{reward}` — its arguments are invalid: {exc}"
    shown = ", ".join(f"{k}={v}" for k, v in args.items())
    parts.append(f"reward `{reward}`" + (f" with `{shown}`" if shown else " (no arguments)"))
    if spec.conditional:
        parts.append(f"prompts {_prompt_list(prompts) or '(none chosen)'}")
    return ", ".join(parts) + ". These follow the Rounds tab: change them there."


def _studied_default(ctx: TabContext) -> str:
    def value(component: Any, default: Any) -> Any:
        return getattr(component, "value", default) if component is not None else default

    return studied(
        value(ctx.rounds_model, DEFAULT_MODEL),
        value(ctx.rounds_dataset, RunConfig.dataset),
        value(ctx.rounds_reward, "x"),
        value(ctx.rounds_reward_args, ""),
        value(ctx.rounds_prompts, []),
    )


def build_tab(ctx: TabContext) -> None:
    """Lay out the tab's components inside the `gr.Tab` the shell opened, and wire its events."""
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=4, min_width=320):
            studies = gr.Markdown(_studied_default(ctx), elem_id="bv-studies")
            lesson = gr.Dropdown(
                list(LESSONS), value=None, label="Lessons", info="Sets the study's controls below.", elem_id="bv-lesson"
            )
            lesson_note = gr.Markdown(elem_id="bv-lesson-note")
            c = _controls()
        with gr.Column(scale=7):
            status = gr.Markdown("Model and reward follow the Rounds tab.", elem_id="bv-status")
            plot = gr.Plot(bias_variance_figure(None), label="Curves")
            curves_table = gr.Dataframe(label="Estimated curves", interactive=False)
            sweep_table = gr.Dataframe(label="Sweep (one run per cutoff, equal budget)", interactive=False)
    data = gr.State({})
    # Model, reward, its arguments, data set and prompts are the Rounds tab's own controls (a tab built on
    # its own, as in a test, gets hidden boxes with the defaults, so the API's parameters stay the same).
    dataset = ctx.rounds_dataset if ctx.rounds_dataset is not None else gr.Textbox(RunConfig.dataset, visible=False)
    prompts = ctx.rounds_prompts if ctx.rounds_prompts is not None else gr.Textbox("", visible=False)
    reward_args = ctx.rounds_reward_args if ctx.rounds_reward_args is not None else gr.Textbox("", visible=False)
    names = ("rule", "rule_param", "cutoffs", "states", "continuations", "steps", "seed")
    inputs = [ctx.rounds_model, ctx.rounds_reward, dataset, prompts, *(c[k] for k in names)]
    inputs += [c[k] for k in ("sweep", "samples", "rounds", "finetune_steps", "max_loss")] + [ctx.rounds_cutoff]
    inputs.append(reward_args)

    sessions = _DIRECT if ctx.sessions is None else ctx.sessions

    def body(values: dict[str, Any], request: gr.Request, progress: Any) -> Any:
        return run_study(
            **values, device=ctx.device, request=request, progress=progress, sessions=sessions, limits=ctx.limits
        )

    run = named_handler(API_NAMES, body, "Run the study; the parameters are the tab's controls.", stream=True)

    light: dict[str, Any] = dict(concurrency_limit=None, api_visibility="undocumented")
    outputs = [plot, curves_table, sweep_table, status, data]
    ctx.wire_heavy(c["run"], c["stop"], run, inputs, outputs, "bias_variance", c["progress"])

    def stop(request: gr.Request) -> str:
        return stop_study(request, sessions)

    c["stop"].click(
        stop,
        None,
        status,
        api_name="bias_variance_stop",
        concurrency_limit=None,
    )
    c["rule"].input(  # the user's choice only: a lesson sets the rule and its parameter together
        lambda r: gr.update(label=RULE_PARAMS[r][1], value=RULE_PARAMS[r][2]), c["rule"], c["rule_param"], **light
    )
    ctx.rounds_cutoff.change(redraw, [data, ctx.rounds_cutoff], plot, **light)
    ctx.rounds_model.change(study_steps, ctx.rounds_model, c["steps"], **light)
    shown_in = [ctx.rounds_model, dataset, ctx.rounds_reward, reward_args, prompts]
    gr.on([x.change for x in shown_in], studied, shown_in, studies, **light)
    bounds = (float(getattr(ctx.rounds_cutoff, "minimum", 0.0)), float(getattr(ctx.rounds_cutoff, "maximum", 1.0)))
    use_outputs = [ctx.rounds_cutoff, ctx.rounds_method, ctx.tabs]
    carried = [k for k in CARRIED if ctx.rounds_controls and k in ctx.rounds_controls]
    use_outputs += [ctx.rounds_controls[k] for k in carried]

    def use(d: dict[str, Any] | None) -> tuple[Any, ...]:
        return (*use_recommended(d, ctx.rounds_tab_id, bounds), *carry_settings(d, carried))

    c["use"].click(use, data, use_outputs, **light)
    lesson.input(choose_lesson, lesson, [lesson_note, *(c[k] for k in LESSON_KEYS)], **light)


def choose_lesson(name: str | None) -> tuple[Any, ...]:
    """The lesson's note and the values of the study's controls it sets."""
    if name not in LESSONS:
        return ("", *(gr.update() for _ in LESSON_KEYS))
    note, values = LESSONS[name]
    rule_update = gr.update(value=values["rule"])
    param = gr.update(value=values["rule_param"], label=RULE_PARAMS[values["rule"]][1])
    rest = [gr.update(value=values[k]) for k in LESSON_KEYS[2:]]
    return (f"**{name}.** {note}", rule_update, param, *rest)


def _controls() -> dict[str, Any]:
    """The tab's controls, each from its config field's metadata (`RunConfig`, `CurveSpec`)."""
    c: dict[str, Any] = {}
    with gr.Group():
        c["rule"] = control("rule", choices=list(RULE_PARAMS), value="best-of-n")
        c["rule_param"] = gr.Number(RULE_PARAMS["best-of-n"][2], label=RULE_PARAMS["best-of-n"][1])
    with gr.Group():
        c["cutoffs"] = control("cutoffs", CurveSpec, value=DEFAULT_CUTOFFS)
        c["states"] = control("states", CurveSpec)
        c["continuations"] = control("continuations", CurveSpec)
        c["steps"] = control(
            "num_inference_steps",
            minimum=20,
            maximum=1000,
            step=10,
            value=study_steps(DEFAULT_MODEL)["value"],
            label="Sampler steps (DDPM ancestral; the model's own chain has no discretisation error)",
        )
        c["seed"] = control("seed")
    with gr.Accordion("End-to-end sweep", open=False):
        c["sweep"] = gr.Checkbox(False, label="Also run one P-GRAFT run per cutoff (and GRAFT)")
        c["samples"] = control("samples", value=1024)
        c["rounds"] = control("rounds", maximum=5, value=2)
        c["finetune_steps"] = control("finetune_steps", step=50, value=200, label="Fine-tuning steps per round")
        # A textbox, not a number box: a blank number box shows (and sends) 0, which is a tolerance of 0.
        c["max_loss"] = gr.Textbox(
            "",
            label="Max realism loss",
            placeholder="blank: the domain's bound (loglik 0.5, fid_real 5)",
            info="How much realism the recommended cutoff may lose against the base; blank: the documented bound.",
            elem_id="bv-max-loss",
        )
    with gr.Row():
        c["run"] = gr.Button("Run", variant="primary", elem_id="bv-run")
        c["stop"] = gr.Button("Stop", variant="stop", interactive=False, elem_id="bv-stop")
    c["progress"] = gr.Markdown("", elem_id="bv-progress")
    c["use"] = gr.Button("Use recommended cutoff", elem_id="bv-use")
    return c
