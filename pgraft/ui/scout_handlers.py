"""Handlers of the "Scout" tab: validate the ranges, run `pgraft.studies.scout.scout_iter`, map its events.

Each trial is a Rounds-tab run: the base config is the Rounds tab's controls, validated the way its Run
validates them (`RoundsHandlers.config`: a model and reward this server offers, its per-request budgets); a
range box left blank keeps the Rounds tab's value, a filled one is parsed by the library (`parse_range`,
`SearchSpace.build`) and its errors are shown as they are. The study is written into the session's own
folder (`<session>/scout/study-*`, deleted with the session); nothing the page sends is a path or code.
"""

from __future__ import annotations

import queue
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
import yaml

from pgraft.core.acceptance import RULES
from pgraft.core.events import Progress
from pgraft.graft.config import RunConfig
from pgraft.plots.style import placeholder, style
from pgraft.registry import get_model_spec
from pgraft.rewards import RewardError
from pgraft.studies.scout import (
    INTEGER,
    OBJECTIVES,
    SEARCHABLE,
    Range,
    ScoutCancelled,
    ScoutFinished,
    ScoutSpec,
    SearchSpace,
    TrialDone,
    full_run_commands,
    pareto_figure,
    parse_range,
    scout_iter,
    trial_config,
)
from pgraft.ui.bias_variance_tab import parse_max_loss
from pgraft.ui.controls import RULE_PARAM, Controls, domain_defaults
from pgraft.ui.export import CPU_NOTE, export_yaml, reward_module_note
from pgraft.ui.limits import Limits
from pgraft.ui.sessions import Busy, SessionStore

TAB = "scout"
RANGES = ("cutoff", "rule", "n", "quantile", "k", "beta", "threshold", "samples", "finetune_steps", "lr", "lora_rank")
"""The searchable parameters in the tab's order (`studies.scout.SEARCHABLE`)."""
assert set(RANGES) == set(SEARCHABLE), "a searchable parameter without a box in the Scout tab"
SETTINGS = ("trials", "objective", "realism_weight", "max_realism_loss", "scale", "devices")
API_NAMES = (*Controls.names(), *(f"{name}_range" for name in RANGES), *SETTINGS)
"""The `/scout` API's parameters: the Rounds tab's controls (the base of every trial), one range per searchable
parameter (blank: not searched) and the study's settings."""
IDENTITY = ("model", "dataset", "reward", "reward_args", "prompts")
"""The Rounds tab's controls a trial never changes (the tab says which it studies)."""
CARRIED = tuple(n for n in Controls.names() if n not in IDENTITY)
"""The Rounds tab's controls "Use this trial" sets: every other one, so that Run there reruns the trial."""
SHOWN = ("final_reward", "realism_loss", "used_seconds")
PLOT_HEIGHT = 440
ConfigOf = Callable[[Controls, bool], RunConfig]


def default_ranges(base: RunConfig) -> dict[str, str]:
    """The library's default range of every searchable parameter around `base`, as the text of its box (blank:
    no default, e.g. the threshold, whose scale is the reward's; `lora_rank` of a small model)."""
    space = SearchSpace.build(base, [])
    with_k = SearchSpace.build(base, [], [Range("rule", choices=("top-k",))])  # k's default comes with top-k
    ranges = {**with_k.ranges, **space.ranges}
    return {name: ranges[name].describe().split("=", 1)[1] if name in ranges else "" for name in RANGES}


def model_ranges(model: str, samples: Any = None, finetune_steps: Any = None, lr: Any = None) -> dict[str, str]:
    """The default ranges for a model: around the given budget (the Rounds tab's), else its app defaults."""
    d = domain_defaults(model)
    values = {"samples": samples, "finetune_steps": finetune_steps, "lr": lr}
    chosen: dict[str, Any] = {
        k: (d[k] if v in (None, "") else (float(v) if k == "lr" else int(float(v)))) for k, v in values.items()
    }
    try:
        base = RunConfig(model=model, **chosen)
    except ValueError:
        base = RunConfig(model=model, **{k: d[k] for k in values})
    return default_ranges(base)


def parse_space(base: RunConfig, texts: dict[str, Any]) -> SearchSpace:
    """The search space of the boxes: a filled box is `parse_range("NAME=TEXT")`, a blank one fixes the parameter
    at `base`'s value. `ValueError` with the library's message, or when nothing is searched."""
    given, fixed = [], []
    for name in RANGES:
        text = str(texts.get(name) or "").strip()
        if text:
            given.append(parse_range(f"{name.replace('_', '-')}={text}"))
        else:
            fixed.append(name)
    if not given:
        raise ValueError("--search: every range is blank, so every trial would be the same run; fill at least one")
    return SearchSpace.build(base, fixed, given)


def _top(space: SearchSpace, name: str, fixed: float) -> float:
    r = space.ranges.get(name)
    if r is None:
        return fixed
    return float(max(r.choices)) if r.choices is not None else float(r.high or 0)


def check_scout_limits(limits: Limits, base: RunConfig, space: SearchSpace, trials: int) -> None:
    """The trial count and each trial's budget within this server's limits (the fixed budget was checked with
    the Rounds tab's controls; here the top of each searched budget)."""
    limits.check("trials", trials, "trials")
    limits.check("samples", _top(space, "samples", base.samples), "samples (the top of its range)")
    top = _top(space, "finetune_steps", base.finetune_steps)
    limits.check("finetune_steps", top, "finetune-steps (the top of its range)")


def check_corners(base: RunConfig, space: SearchSpace) -> None:
    """Refuse, before anything runs, ranges whose every trial would fail: the trial configs at the ranges'
    low and high ends, for each rule tried, must validate (a preview above the searched samples, a k above
    them); `ValueError` saying which end and the config's own message."""
    for rule in space.rules(base):
        param = RULES[rule].param.name
        for end in ("low", "high"):
            values: dict[str, Any] = {"rule": rule}
            for name in (param, "cutoff", "samples", "finetune_steps", "lr", "lora_rank"):
                r = space.ranges.get(name)
                if r is not None:
                    ends = sorted(r.choices) if r.choices is not None else [r.low, r.high]
                    values[name] = ends[0] if end == "low" else ends[-1]
                    values[name] = int(values[name]) if name in INTEGER else values[name]
            try:
                trial_config(base, values)
            except ValueError as exc:
                shown = ", ".join(f"{k.replace('_', '-')} {v:g}" if not isinstance(v, str) else f"{k} {v}"
                                  for k, v in values.items())  # fmt: skip
                raise ValueError(f"ranges: a trial at their {end} end ({shown}) cannot run: {exc}") from None


def with_all_rule_params(config: RunConfig, controls: Controls) -> RunConfig:
    """`config` with every rule's parameter at the Rounds tab's value (its Run sets only the chosen rule's),
    so that a rule searched with a blank parameter box takes that parameter from the Rounds tab too."""
    for name, rule in RULES.items():
        param = RULE_PARAM[name]
        value = getattr(controls, param, None)
        if param == RULE_PARAM[config.rule] or value is None or getattr(config, param) is not None:
            continue
        try:
            config = config.replace(**{param: rule.param.kind(float(value))})
            RunConfig.from_dict(config.to_dict())  # validates
        except (TypeError, ValueError):
            config = config.replace(**{param: None})
    return config


def _whole(name: str, value: Any) -> int:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: {value!r} is invalid; enter a whole number") from None
    if not x.is_integer():
        raise ValueError(f"{name}: {value!r} is invalid; enter a whole number")
    return int(x)


def make_spec(values: dict[str, Any], seed: int) -> ScoutSpec:
    if values.get("objective") not in OBJECTIVES:
        raise ValueError(f"--objective: {values.get('objective')!r} is invalid; choose from {', '.join(OBJECTIVES)}")
    try:
        weight, scale = float(values.get("realism_weight") or 0), float(values.get("scale") or 0)
    except (TypeError, ValueError):
        raise ValueError("--realism-weight and --scale: enter numbers") from None
    return ScoutSpec(
        trials=_whole("--trials", values.get("trials")), objective=str(values["objective"]), realism_weight=weight,
        max_realism_loss=parse_max_loss(values.get("max_realism_loss")), workers=1, scale=scale,
        devices=_whole("--devices", values.get("devices")), seed=seed,
    )  # fmt: skip


class ScoutHandlers:
    """The tab's handlers. `config_of(controls, limited)`: the Rounds tab's own validation (`RoundsHandlers.config`);
    `base_for(config)`: the app's cache of loaded base models (`BaseModels.get_for`)."""

    def __init__(
        self,
        sessions: SessionStore,
        limits: Limits | None,
        config_of: ConfigOf | None,
        device: str = "cpu",
        base_for: Callable[[RunConfig], Any] | None = None,
    ) -> None:
        self.sessions = sessions
        self.base_for = base_for
        self.limits = Limits() if limits is None else limits
        self.config_of: ConfigOf = config_of or (lambda controls, limited: _plain_config(controls, device, self.limits))

    def prepare(self, values: dict[str, Any]) -> tuple[RunConfig, SearchSpace, ScoutSpec]:
        """Everything the study needs from the page, validated (`gr.Error`, nothing started, on a bad value)."""
        controls = Controls(**{n: values[n] for n in Controls.names()})
        base = self.config_of(controls, True)  # raises gr.Error naming the Rounds tab's setting
        try:
            base = with_all_rule_params(base, controls)
            space = parse_space(base, {n: values.get(f"{n}_range") for n in RANGES})
            check_corners(base, space)
            spec = make_spec(values, base.seed)
            check_scout_limits(self.limits, base, space, spec.trials)
        except ValueError as exc:
            raise gr.Error(str(exc), title="Cannot start") from None
        return base, space, spec

    def run(self, values: dict[str, Any], request: Any, progress: Any = None) -> Generator[tuple[Any, ...], None, None]:
        """Stream (table, Pareto plot, status, trial picker, state) as trials finish."""
        base, space, spec = self.prepare(values)
        try:
            session, job = self.sessions.start(request, TAB)
        except Busy:
            raise gr.Error("A scout is already running in this browser tab: press Stop first.", title="Busy") from None
        try:
            shutil.rmtree(job.folder, ignore_errors=True)  # the session keeps its latest study only
            out = job.folder / f"study-{secrets.token_hex(4)}"
            searched = [n.replace("_", "-") for n in space.ranges]
            data: dict[str, Any] = {"rows": [], "configs": {}, "model": base.model, "reward": base.reward}
            data.update(searched=searched, trials=spec.trials)
            yield (
                *_views(data),
                f"**Starting** {spec.trials} trials: searching `{space.describe()}`.",
                _pick(data),
                data,
            )
            start = time.perf_counter()
            events = scout_iter(base, space, spec, out, should_stop=job.stop.is_set, base_for=self.base_for)
            for ev in in_one_thread(events, job.stop):
                if isinstance(ev, Progress):
                    if progress is not None:
                        progress((ev.done, ev.total), desc=ev.describe())
                    continue
                status = _fold(ev, data, out, spec, time.perf_counter() - start)
                if status is not None:
                    yield (*_views(data), status, _pick(data), dict(data))
        except (ValueError, RewardError) as exc:
            raise gr.Error(str(exc), title="Cannot run") from None
        finally:
            self.sessions.finish(session, TAB)

    def stop(self, request: gr.Request) -> str:
        if not self.sessions.request_stop(request, TAB):
            return "Nothing is running."
        return "Stopping at the next step; finished trials are kept…"


def in_one_thread(events: Iterator[Any], stop: threading.Event) -> Generator[Any, None, None]:
    """The events of `events`, iterated on one thread of its own. Gradio advances a streaming handler on any of
    its worker threads, and the study's SQLite connections belong to the thread that opened them: advanced
    from another thread, a commit waited on the first thread's lock (the browser test hung there). If the
    handler is closed early (the page went away), the study is asked to stop and waited for."""
    items: queue.Queue[Any] = queue.Queue()
    end = object()

    def work() -> None:
        try:
            for ev in events:
                items.put(ev)
        except BaseException as exc:  # raised again in the handler's thread
            items.put(_Raised(exc))
        finally:
            items.put(end)

    thread = threading.Thread(target=work, name="pgraft-scout", daemon=True)
    thread.start()
    try:
        while (item := items.get()) is not end:
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        if thread.is_alive():
            stop.set()
            thread.join()


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _plain_config(controls: Controls, device: str, limits: Limits) -> RunConfig:
    """The Rounds tab's config for a tab built on its own (the app passes `RoundsHandlers.config`)."""
    try:
        config = controls.to_config(device)
        limits.check_run(config)
        return config
    except ValueError as exc:
        raise gr.Error(str(exc), title="Invalid setting") from None


def _fold(ev: Any, data: dict[str, Any], out: Path, spec: ScoutSpec, elapsed: float) -> str | None:
    """One study event into `data`; the status line when the view should update."""
    if isinstance(ev, TrialDone):
        row = ev.row
        number = int(row["trial"])
        config = RunConfig.read_yaml(out / "trials" / f"trial_{number:05d}" / "config.yaml")
        data["rows"] = [*data["rows"], row]
        data["configs"] = {**data["configs"], number: config}
        done = len(data["rows"])
        left = elapsed / done * max(0, spec.trials - done)
        left_text = f" About {left:.0f} s left." if done < spec.trials else ""
        return f"Trial {number} done ({done} of {spec.trials}): {_outcome(row)}.{left_text}"
    if isinstance(ev, ScoutCancelled):
        done = len(data["rows"])
        return (
            f"**Stopped.** The {done} finished trial{'s are' if done != 1 else ' is'} kept: *Use this trial* "
            "works on them; *Export full run* needs a study that ran to the end."
        )
    if isinstance(ev, ScoutFinished):
        data["rows"] = [r for r in ev.table.to_dict("records") if r.get("state") == "complete"] or data["rows"]
        states = ev.table["state"].value_counts().to_dict() if "state" in ev.table else {}
        counts = ", ".join(f"{n} {s}" for s, n in states.items())
        if ev.best is None:
            return f"**Done** ({counts}); no trial completed, so there is nothing to use or export."
        data["best"] = int(ev.best["trial"])
        data["configs"] = {**data["configs"], data["best"]: ev.best["config"]}
        data["export"] = _export(ev, spec)
        if ev.recommendation is not None:  # the cutoff sweep's rule, in its words
            chosen = f"Recommended: trial {data['best']}, {ev.recommendation.describe()}"
        else:
            chosen = f"Chosen: trial {data['best']} (the best {spec.objective} value)"
        return (
            f"**Done** ({counts}). {chosen}. *Use this trial* sets the Rounds tab to a trial's settings; "
            f"*Export full run* gives its config at {spec.scale:g}× the budget, the commands and the predicted cost."
        )
    return None


def _outcome(row: dict[str, Any]) -> str:
    parts = [f"final reward {row.get('final_reward', float('nan')):.4g}"]
    if row.get("realism_metric"):
        parts.append(f"{row['realism_metric']} loss {row.get('realism_loss', float('nan')):.3g}")
    if "used_seconds" in row:
        parts.append(f"{float(row['used_seconds']):.1f} s")
    return ", ".join(parts)


def _export(ev: ScoutFinished, spec: ScoutSpec) -> dict[str, Any]:
    """What "Export full run" shows: full_run.yaml headed by commands that run it where it is downloaded (not
    the server's folder), the commands, and the cost table."""
    commands = full_run_commands(Path("."), spec.devices)
    config = RunConfig.from_dict(ev.best["config"]) if ev.best else None
    # As the Rounds tab's Export: every setting that applies, the device left to the machine of the full run.
    body = export_yaml(RunConfig.from_dict(yaml.safe_load(ev.files["full_run"].read_text())))
    header = f"# trial {ev.best['trial'] if ev.best else '?'} of the app's scout, budget x{spec.scale:g}; run it with\n"
    text = header + "".join(f"#   {c}\n" for c in commands) + body
    note = reward_module_note(config)
    shell = "\n".join([*commands, f"# {CPU_NOTE}", *([f"# {note}"] if note else [])])
    cost = ev.cost.round(3) if ev.cost is not None else pd.DataFrame()
    if not cost.empty:
        cost.insert(1, "predicted", [_duration(s) for s in cost["predicted_s"]])
    return {"yaml": text, "commands": shell, "cost": cost}


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def trials_frame(data: dict[str, Any]) -> pd.DataFrame:
    """The finished trials: number, every searched parameter under its flag name, the outcome."""
    rows = data.get("rows") or []
    if not rows:
        return pd.DataFrame(columns=["trial", *data.get("searched", []), *SHOWN])
    table = pd.DataFrame(rows)
    columns = ["trial", *[c for c in data.get("searched", []) if c in table], "method"]
    columns += [c for c in SHOWN if c in table]
    shown = table[[c for c in columns if c in table]].sort_values("trial").reset_index(drop=True)
    return shown.round(4)


def figure(data: dict[str, Any]) -> Any:
    """The Pareto plot of the finished trials (the library's figure in the app's look), or what will appear."""
    rows = data.get("rows") or []
    if not rows:
        return placeholder("Trials appear here as they finish: final reward against realism loss.", PLOT_HEIGHT)
    table = pd.DataFrame(rows)
    best = {"trial": data["best"]} if data.get("best") is not None else None
    fig = pareto_figure(table, None, best)
    return style(fig, str(fig.layout.title.text or ""), PLOT_HEIGHT)


def _views(data: dict[str, Any]) -> tuple[Any, Any]:
    return trials_frame(data), figure(data)


def _pick(data: dict[str, Any]) -> Any:
    numbers = sorted(int(n) for n in data.get("configs", {}))
    value = data.get("best", numbers[-1] if numbers else None)
    return gr.update(choices=[(f"trial {n}", n) for n in numbers], value=value)


def use_trial(
    data: dict[str, Any] | None, trial: Any, model: Any, reward: Any, bounds: tuple[float, float] = (0.0, 1.0)
) -> dict[str, Any]:
    """Updates of the Rounds tab's controls (by `Controls` name) to the picked trial's config, so that Run
    there reruns it; the rule's own parameter is shown and the others hidden, and the cutoff is kept on the
    slider. The trial must be one this study finished (its number is looked up, never used as a path)."""
    configs = (data or {}).get("configs") or {}
    try:
        number = int(float(trial))
    except (TypeError, ValueError):
        number = None
    if number is None or number not in configs:
        raise gr.Error(
            "Pick a finished trial of the latest scout from the list first (run the scout if there is none).",
            title="Nothing to use",
        )
    config = configs[number]
    if (model, reward) != ((data or {}).get("model"), (data or {}).get("reward")):
        gr.Warning(f"The Rounds tab's model or reward changed since the scout ({data['model']}, {data['reward']}).")  # type: ignore[index]
    param = RULE_PARAM[config["rule"]]
    updates: dict[str, Any] = {}
    for name in CARRIED:
        if name in RULE_PARAM.values():
            shown = name == param
            updates[name] = gr.update(value=config[name], visible=True) if shown else gr.update(visible=False)
        elif name in ("cutoff", "anchoring") and config["method"] != "pgraft":
            updates[name] = gr.update()
        elif name in config and config[name] is not None:
            updates[name] = gr.update(value=config[name])
        else:
            updates[name] = gr.update()
    if config["method"] == "pgraft":
        cutoff = min(max(float(config["cutoff"]), bounds[0]), bounds[1])
        if cutoff != float(config["cutoff"]):
            gr.Warning(f"Trial {number}'s cutoff {config['cutoff']:g} lies outside the slider; set to {cutoff:g}.")
        updates["cutoff"] = gr.update(value=cutoff)
    where = f"P-GRAFT with cutoff {config['cutoff']:g}" if config["method"] == "pgraft" else "GRAFT"
    gr.Info(f"Trial {number} set in the Rounds tab: {where}, rule {config['rule']}.")
    return updates


def export_full_run(data: dict[str, Any] | None) -> tuple[str, str, pd.DataFrame]:
    """full_run.yaml, its `pgraft run` and `accelerate launch` commands, and the predicted cost."""
    export = (data or {}).get("export")
    if not export:
        raise gr.Error("Nothing to export yet: run a scout to the end first.", title="Nothing to export")
    return export["yaml"], export["commands"], export["cost"]


def has_lora(model: str) -> bool:
    try:
        return "lora_rank" in get_model_spec(model).options
    except (KeyError, ValueError):
        return False
