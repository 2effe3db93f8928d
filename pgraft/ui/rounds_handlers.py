"""Event handlers of the Rounds tab: validate the controls, call the library, map its events to updates.

The run handler is a generator: it streams the figures after every round and reports sampling and
fine-tuning steps to `gr.Progress`. Bad input becomes `gr.Error` with the library's message; a failing
reward stops the run with its name and error while the finished rounds stay on screen and on disk.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from pgraft.core.events import Finished, Notice, Progress
from pgraft.graft.config import RunConfig
from pgraft.graft.runner import RoundResult, RoundRunner, RunCancelled
from pgraft.graft.setup import build_setup, make_rule_for
from pgraft.plots.rounds import rule_reshaping
from pgraft.plots.style import placeholder
from pgraft.registry import MODELS, default_reward, get_domain, get_model_spec
from pgraft.rewards import RewardError
from pgraft.ui.controls import (
    RULE_PARAM,
    Controls,
    describe_cutoff,
    domain_defaults,
    format_reward_args,
    parse_reward_args,
    reward_choices,
    reward_params,
)
from pgraft.ui.export import export_texts
from pgraft.ui.limits import Limits
from pgraft.ui.models import BaseModels
from pgraft.ui.presets import get_preset
from pgraft.ui.run_list import RunListHandlers
from pgraft.ui.runs import RunRecord, run_name
from pgraft.ui.sessions import ROUNDS, Busy, Session, SessionStore
from pgraft.ui.views import RunView, per_prompt_rewards

LOG = logging.getLogger("pgraft.app")
PROGRESS_UPDATES = 10  # per stage: each update re-renders the progress bar in every open page
ALMOST_NOTHING = 0.01
"""A round that accepts less than this fraction of its samples gets a warning (none at all: the runner's)."""
MAX_RUNS = 24
"""Runs a session's run list keeps (the oldest is dropped, and its temporary folder deleted, beyond)."""
RUN_OUTPUTS = (
    "status",
    "histogram",
    "reshaping",
    "samples_plot",
    "curves",
    "table",
    "csv",
    "archive",
    "yaml",
    "command",
    "launch",
    "run",
    "stop",
)
RUN_LIST_OUTPUTS = ("run_list", "compare_pick", "earlier")
COMPARE_OUTPUTS = ("compare_curves", "compare_histograms", "compare_samples")


class RoundsHandlers(RunListHandlers):
    def __init__(
        self,
        sessions: SessionStore,
        models: BaseModels,
        device: str,
        limits: Limits | None = None,
        models_dir: Path | None = None,
        runs_dir: Path | None = None,
    ) -> None:
        self.sessions = sessions
        self.models = models
        self.device = device
        self.limits = Limits() if limits is None else limits
        self.models_dir = Path(models_dir) if models_dir is not None else None
        self.runs_dir = Path(runs_dir).resolve() if runs_dir is not None else None

    # -- light events ---------------------------------------------------------------------------------
    def config(self, controls: Controls, limited: bool = False) -> RunConfig:
        """The run config of the controls; `limited`: also within this server's per-request budgets. Models and
        reward files are only what this server offers: a model from the list, model arguments naming a file
        found in `--models-dir` (nothing typed in the page is a path)."""
        try:
            if controls.model not in self.model_values():
                raise ValueError(f"--model: {controls.model!r} is not offered here; choose one from the list")
            offered = [name for _, name in reward_choices(controls.model)]
            if controls.reward not in offered:
                raise ValueError(
                    f"--reward: {controls.reward!r} is not a reward this app offers for {controls.model!r}; "
                    f"choose one of {offered}"
                )
            config = resolve_reward_paths(controls.to_config(self.device), self.models_dir)
            if limited:
                self.limits.check_run(config)
            return config
        except ValueError as exc:
            raise gr.Error(str(exc), title="Invalid setting") from None

    def model_values(self) -> list[str]:
        return [value for _, value in model_choices(self.models_dir)]

    def export(self, *values: Any) -> tuple[str, str, str]:
        """The YAML config, the `pgraft run` command with every flag that applies, and the commands that run
        the YAML on one process or under `accelerate launch` (`ui.export`)."""
        return export_texts(self.config(Controls(*values)))

    def stop(self, request: gr.Request) -> str:
        if not self.sessions.request_stop(request, ROUNDS):
            return "Nothing is running."
        return "Stopping at the next step; finished rounds are kept…"

    def close(self, request: gr.Request) -> None:
        self.sessions.close(request)
        self.sessions.sweep()

    def model_changed(self, model: str) -> dict[str, Any]:
        """The domain's controls: data set, prompts, rewards, defaults that run in seconds."""
        spec = get_model_spec(model)
        domain = get_domain(spec.domain)
        choices = reward_choices(model)
        reward = default_reward(model)
        defaults = domain_defaults(model)
        return dict(
            model=gr.update(info=model_info(model)),
            dataset=_dataset_update(spec, domain),
            prompts=_prompts_update(spec, domain, list(domain.prompt_choices[:1])),
            reward=gr.update(choices=choices, value=reward),
            reward_args=self._reward_args_update(reward),
            **{k: gr.update(value=v) for k, v in defaults.items()},
        )

    def _reward_args_update(self, reward: str | None) -> Any:
        text = format_reward_args(reward) if reward else ""
        return gr.update(value=text, visible=bool(text))

    def reward_changed(self, reward: str) -> Any:
        return self._reward_args_update(reward)

    def preset(self, name: str) -> dict[str, Any]:
        """Every control a preset sets: its model's defaults, then the preset's own values."""
        preset = get_preset(name)
        model = preset.values["model"]
        spec = get_model_spec(model)
        domain = get_domain(spec.domain)
        values = {**domain_defaults(model), **preset.values}
        updates: dict[str, Any] = {
            k: gr.update(value=v) for k, v in values.items() if k not in ("reward", "reward_args")
        }
        updates.update(
            model=gr.update(value=model, info=model_info(model)),
            dataset=_dataset_update(spec, domain, values.get("dataset")),
            prompts=_prompts_update(spec, domain, values.get("prompts")),
            reward=gr.update(choices=reward_choices(model), value=values["reward"]),
            reward_args=gr.update(value=values.get("reward_args", ""), visible=bool(reward_params(values["reward"]))),
            note=f"**{preset.name}.** {preset.note}",
        )
        return updates

    def cutoff_info(self, model: str, dataset: str, method: str, cutoff: float, steps: float | None) -> str:
        if method != "pgraft":
            return "GRAFT fine-tunes at every noise level (cutoff t_c = 0). Choose P-GRAFT to shape at a noise level."
        try:
            n = int(steps or 0)
            if n < 2:
                return "Set at least 2 sampling steps."
            return describe_cutoff(self.models.get(model, dataset).process, n, float(cutoff))
        except (ValueError, TypeError) as exc:
            return f"Cannot place the cutoff: {exc}"

    def rule_changed(self, request: gr.Request, *values: Any) -> tuple[Any, ...]:
        """Show the chosen rule's own parameter, span the threshold over base rewards, preview the reshaping.
        A threshold outside the new range (left from another reward) moves to the base rewards' 75 % quantile."""
        return self._rule(request, Controls(*values), typed=False)

    def threshold_typed(self, request: gr.Request, *values: Any) -> tuple[Any, ...]:
        """As `rule_changed`, after the user set the threshold: a value outside the base rewards' range is
        brought to its nearest end, and a warning says so; one that would accept (almost) nothing is warned of."""
        return self._rule(request, Controls(*values), typed=True)

    def _rule(self, request: gr.Request, controls: Controls, typed: bool) -> tuple[Any, ...]:
        view = self.sessions.get(request).view
        if view is not None:
            view.reshaping_shown = False  # this preview replaces the run's own rule plot: a running run redraws it
        if controls.reward not in [name for _, name in reward_choices(controls.model)]:
            return tuple(gr.update() for _ in range(6))  # the reward list is about to follow the model
        shown = RULE_PARAM.get(controls.rule)
        visibility = [gr.update(visible=shown == p) for p in ("threshold", "quantile", "n", "k", "beta")]
        try:
            args = parse_reward_args(controls.reward, controls.reward_args)
            prompts = list(controls.prompts or []) if get_model_spec(controls.model).conditional else []
            rewards = self.models.base_rewards(controls.model, controls.dataset, controls.reward, args, prompts)
        except (ValueError, RewardError) as exc:
            return (*visibility, placeholder(f"Cannot sample the base model's rewards:\n{exc}"))
        lo, hi = _nice_range(rewards)
        threshold = _threshold_in_range(controls.threshold, rewards, lo, hi, typed and shown == "threshold")
        visibility[0] = gr.update(
            visible=shown == "threshold", minimum=lo, maximum=hi, value=round(threshold, 3), step=(hi - lo) / 200
        )
        try:
            config = controls.replace(threshold=threshold).to_config(self.device)
            figure = rule_reshaping(make_rule_for(config, None), rewards, source="base samples")
        except ValueError as exc:
            figure = placeholder(str(exc))
        return (*visibility, figure)

    # -- the run --------------------------------------------------------------------------------------
    def run(
        self, controls: Controls, request: gr.Request, progress: gr.Progress
    ) -> Generator[tuple[Any, ...], None, None]:
        self.sessions.sweep()  # forget sessions idle past their time, whose tabs never said goodbye
        config = self.config(controls, limited=True)
        try:
            base = self.models.get_for(config)
            setup = build_setup(config, base=base)
        except (ValueError, RewardError) as exc:
            raise gr.Error(str(exc), title="Cannot start") from None
        try:
            session, _job = self.sessions.start(request, ROUNDS)
        except Busy:
            raise gr.Error("A run is already going in this browser tab: press Stop first.", title="Busy") from None
        try:
            yield from self._rounds(session, config, setup, progress)
        finally:
            self.sessions.finish(session, ROUNDS)

    def _new_record(self, session: Session, config: RunConfig, setup: Any) -> RunRecord:
        """A new run in the session's run list, with a folder of its own (in `--runs-dir` when given)."""
        root = self.runs_dir if self.runs_dir is not None else session.folder / "runs"
        index = len(session.runs) + 1
        name = run_name(index, config, stamp=self.runs_dir is not None)
        taken = {r.name for r in session.runs}
        suffix = 1
        while name in taken or (root / name).exists():
            suffix += 1
            name = f"{run_name(index, config, stamp=self.runs_dir is not None)}-{suffix}"
        record = RunRecord(name, config, root / name, RunView(setup))
        session.runs.append(record)
        while len(session.runs) > MAX_RUNS:
            old = session.runs.pop(0)
            if self.runs_dir is None:
                shutil.rmtree(old.folder, ignore_errors=True)
        session.current_run = record.folder
        session.view = record.view
        return record

    def _rounds(
        self, session: Session, config: RunConfig, setup: Any, progress: gr.Progress
    ) -> Generator[tuple[Any, ...], None, None]:
        record = self._new_record(session, config, setup)
        runner = RoundRunner(config, out=record.folder, should_stop=session.stop.is_set, setup=setup)
        view = record.view
        start = time.perf_counter()
        exports = export_texts(config)
        notes: list[str] = []
        yield self._outputs(session, view, "**Starting…** round 0 samples the base model.", exports, running=True)
        try:
            for event in runner.run():
                if isinstance(event, Progress):
                    if event.done == event.total or event.done % max(1, event.total // PROGRESS_UPDATES) == 0:
                        desc = f"Round {event.round} of {config.rounds}: {event.stage}"
                        progress((event.done, event.total), desc=desc)
                elif isinstance(event, Notice):
                    notes.append(event.message)
                    gr.Warning(event.message)
                elif isinstance(event, RoundResult):
                    view.add(event)
                    starved = starved_round(event)
                    if starved is not None:
                        notes.append(starved)
                        gr.Warning(starved)
                    status = _round_status(view, config, time.perf_counter() - start, notes)
                    yield self._outputs(session, view, status, exports, running=True)
                elif isinstance(event, RunCancelled):
                    record.status = "stopped"
                    kept = (
                        f"rounds 0–{event.completed_rounds - 1} kept" if event.completed_rounds else "no round finished"
                    )
                    yield self._outputs(session, view, f"**Stopped** ({kept}).", exports, running=False, redraw=False)
                elif isinstance(event, Finished):
                    record.status = "finished"
                    status = _round_status(view, config, time.perf_counter() - start, notes, finished=True)
                    yield self._outputs(session, view, status, exports, running=False, redraw=False)
        except RewardError as exc:
            record.status = "failed"
            yield self._outputs(session, view, f"**Stopped: the reward failed.** {exc}", exports, running=False)
            raise gr.Error(str(exc), title="Reward failed") from None
        except Exception as exc:  # a bug: say so in the page; the traceback goes to the server's log
            record.status = "failed"
            LOG.exception("run failed")
            message = f"The run failed: {type(exc).__name__}: {exc}"
            yield self._outputs(session, view, f"**{message}**", exports, running=False)
            raise gr.Error(message, title="Run failed") from None

    def _outputs(
        self,
        session: Session,
        view: RunView,
        status: str,
        exports: tuple[str, ...],
        running: bool,
        redraw: bool = True,
    ) -> tuple[Any, ...]:
        """Every output of the run, in `RUN_OUTPUTS` order; the download of the folder once the run ended.
        `redraw=False` keeps the figures on screen (the last round's are already there)."""
        buttons = (gr.update(interactive=not running), gr.update(interactive=running))
        if view.latest is None:
            return (status, *(gr.update() for _ in range(7)), *exports, *buttons)
        csv = session.run_dir / "metrics.csv"
        zip_path = None if running else _archive(session)
        figs = view.figures() if redraw else None
        return (
            status,
            *(
                (figs.histogram, figs.reshaping or gr.update(), figs.samples, figs.curves)
                if figs
                else (gr.update(),) * 4
            ),
            view.table(),
            gr.update(value=str(csv), interactive=True) if csv.exists() else gr.update(),
            gr.update(value=str(zip_path), interactive=True) if zip_path else gr.update(interactive=False),
            *exports,
            *buttons,
        )


def _threshold_in_range(value: Any, rewards: np.ndarray, lo: float, hi: float, typed: bool) -> float:
    """The threshold to show for the base rewards spanning [lo, hi]. A stale value (left from another reward
    or model) outside the range moves to the rewards' 75 % quantile; a typed one to the nearest end, and a
    warning says what was changed and what it keeps."""
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return float(np.quantile(rewards, 0.75))
    x = float(value)
    if not typed:
        return x if lo <= x <= hi else float(np.quantile(rewards, 0.75))
    clamped = min(max(x, lo), hi)
    kept = float(np.mean(rewards >= clamped))
    what = f"keeps {kept:.1%} of the base samples"
    if kept < ALMOST_NOTHING:
        what += ": a round would fine-tune on (almost) nothing"
    if clamped != x:
        side = "above every" if x > hi else "below every"
        gr.Warning(
            f"Threshold τ: {x:g} is {side} base reward (they span {lo:g} to {hi:g}); set to {clamped:g}, which {what}."
        )
    elif kept < ALMOST_NOTHING:
        gr.Warning(f"Threshold τ {x:g} {what}. Lower it.")
    return clamped


def starved_round(result: RoundResult) -> str | None:
    """A warning when the round accepted (almost) nothing, else None."""
    n, total = int(result.metrics.get("n_accepted", 0)), len(result.rewards)
    if n == 0 or n / total >= ALMOST_NOTHING:  # none at all: the runner's own notice says so
        return None
    return (
        f"Round {result.round} accepted {n} of {total} samples ({n / total:.1%}): the next round fine-tunes on "
        "(almost) nothing. Loosen the rule (a lower threshold, a larger quantile's share, more samples)."
    )


def _nice_range(rewards: np.ndarray) -> tuple[float, float]:
    """The observed reward range, its ends rounded outwards to a hundredth of its width, so the slider reads well."""
    lo, hi = float(np.min(rewards)), float(np.max(rewards))
    if hi - lo < 1e-9:
        return lo - 0.5, hi + 0.5
    unit = 10 ** (math.floor(math.log10(hi - lo)) - 2)
    return round(math.floor(lo / unit) * unit, 12), round(math.ceil(hi / unit) * unit, 12)


def _archive(session: Session) -> Path | None:
    """The run folder as a zip beside it, in the session's own folder (None once the tab has gone)."""
    if session.closed:
        return None
    try:
        return Path(shutil.make_archive(str(session.folder / "pgraft-run"), "zip", root_dir=session.run_dir))
    except OSError:
        return None


TIME_PARTS = (
    ("time_finetune", "fine-tuning"),
    ("time_sampling", "sampling"),
    ("time_scoring", "scoring"),
    ("time_acceptance", "acceptance"),
    ("time_metrics", "metrics"),
)
"""The runner's timings, as the status line names them (parts under 0.05 s are left out)."""


def _round_status(view: RunView, config: RunConfig, elapsed: float, notes: list[str], finished: bool = False) -> str:
    assert view.latest is not None
    m = view.latest.metrics
    after = view.latest.round
    head = (
        f"**Finished: {after} round{'s' if after != 1 else ''} after the base** (round 0 is the base model)"
        if finished
        else f"**Round {view.latest.round} of {config.rounds} done**"
    )
    parts = [f"{head} in {elapsed:.1f} s", f"mean reward {m['reward_mean']:.3g}"]
    if "target_reward" in m:
        parts[-1] += f" (exact target {m['target_reward']:.3g}"
        if "learning_gap" in m and m["learning_gap_se"] > 0:
            sigmas = m["learning_gap"] / m["learning_gap_se"]
            what = "sampler error" if view.latest.round == 0 else "learning error"
            parts[-1] += f"; {what} {m['learning_gap']:+.3g}, {sigmas:+.1f} standard errors"
        parts[-1] += ")"
    parts.append(f"accepted {m['n_accepted']} of {len(view.latest.rewards)}")
    by_prompt = per_prompt_rewards(view.latest, list(config.prompts))
    if by_prompt:
        parts.append("mean reward per prompt: " + ", ".join(f"{p!r} {v:.3g}" for p, v in by_prompt.items()))
    text = " · ".join(parts)
    spent = [f"{label} {m[key]:.1f} s" for key, label in TIME_PARTS if m.get(key, 0) >= 0.05]
    if "peak_gpu_memory_gb" in m:
        spent.append(f"peak GPU memory {m['peak_gpu_memory_gb']:.2f} GiB")
    if spent:
        text += f"  \nround {view.latest.round}: " + ", ".join(spent)
    if view.latest.round == 0 and not finished:
        text += " — round 0 is the base model; round 1 is the first fine-tuned one."
    if notes:
        text += "\n\n" + "\n".join(f"- {n}" for n in notes[-3:])
    return text


def model_choices(models_dir: Path | None = None) -> list[tuple[str, str]]:
    """`(label, value)` of every model the app offers: the registered ones, and the pipeline folders found
    directly under `models_dir`."""
    from pgraft.families.loading import find_pipelines

    found = find_pipelines(models_dir) if models_dir is not None else []
    pipelines = [(f"{folder.name} (pipeline)", str(folder.resolve())) for folder in found]
    return [(name, name) for name in MODELS] + pipelines


def resolve_reward_paths(config: RunConfig, models_dir: Path | None) -> RunConfig:
    """The reward's file arguments (`model=`, `head=`) given as names of entries of `models_dir`, as paths."""
    from pgraft.families.loading import find_files
    from pgraft.registry import reward_spec

    spec = reward_spec(config.reward, get_model_spec(config.model).domain)
    if spec is None or not spec.paths:
        return config
    names = find_files(models_dir) if models_dir is not None else []
    args = dict(config.reward_args)
    for key in spec.paths:
        value = str(args.get(key, ""))
        if value not in names:
            where = f"in {str(models_dir)!r}" if models_dir is not None else "(no --models-dir)"
            raise ValueError(f"--reward-arg {key}: {value!r} is not one of the model files found {where}: {names}")
        args[key] = str((Path(models_dir) / value).resolve())  # type: ignore[arg-type]
    return config.replace(reward_args=args)


def model_info(model: str) -> str:
    spec = get_model_spec(model)
    return spec.description + (" · prompted" if spec.conditional else "")


def _dataset_update(spec: Any, domain: Any, value: str | None = None) -> Any:
    """The data set control: shown with the domain's data sets for models that take one."""
    shown = "dataset" in spec.options and bool(domain.datasets)
    if not shown:
        return gr.update(visible=False)
    return gr.update(choices=list(domain.datasets), value=value or domain.datasets[0], visible=True)


def _prompts_update(spec: Any, domain: Any, value: list[str] | None = None) -> Any:
    """The prompts control: shown with the domain's prompts for prompted models."""
    if not spec.conditional:
        return gr.update(visible=False)
    update: dict[str, Any] = {"choices": list(domain.prompt_choices), "visible": True}
    if value is not None:
        update["value"] = list(value)
    return gr.update(**update)
