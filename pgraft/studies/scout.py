"""Scouting: search the cutoff, the rule, the budget and the learning rate with Optuna, then export the run.

Each trial is a short run through the same round runner as `pgraft run`, in a run folder of its own
(`OUT/trials/trial_00007/`, whose `config.yaml` reruns it exactly); what the flags fix stays fixed, and the
rest is drawn from the search space (`SearchSpace`; `--search cutoff=0:0.8` style ranges). Cutoff 0 is GRAFT.

Objectives (`--objective`):

- `pareto` (default): the final round's mean reward (up) and the domain's realism loss against the base model
  (down, as in the cutoff sweep); Optuna keeps the Pareto front. Multi-objective trials cannot be pruned
  (Optuna's pruners compare one value), so every trial runs to the end;
- `reward`: the final reward alone; `penalised`: reward − w · max(0, realism loss) (`--realism-weight w`).
  Both report every round to Optuna, whose median pruner stops trials that trail the others; a pruned
  trial's folder is removed.

The chosen trial is the cutoff sweep's recommendation (`sweep.recommend`: the best final reward among the
trials whose realism loss is within the domain's bound) for `pareto`, and the best value otherwise. Its
config is `best.yaml`; `full_run.yaml` scales its budget by `--scale`, and `predict_cost` turns the parts the
trials timed into the full run's predicted wall time on 1 and N devices.
"""

from __future__ import annotations

import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pgraft.core.acceptance import RULE_PARAMS, RULES
from pgraft.core.events import Cancelled, Finished, Progress
from pgraft.graft.config import RunConfig
from pgraft.graft.runner import RoundResult, RoundRunner
from pgraft.graft.setup import build_setup
from pgraft.graft.storage import check_out
from pgraft.registry import domain_of, get_model_spec
from pgraft.studies.sweep import BUDGET_COLUMNS, Recommendation, recommend, run_row

OBJECTIVES = ("pareto", "reward", "penalised")
NUMERIC = ("cutoff", "samples", "finetune_steps", "lr", "lora_rank", *RULE_PARAMS)
SEARCHABLE = ("rule", *NUMERIC)
INTEGER = ("samples", "finetune_steps", "lora_rank", "n", "k")
DEFAULT_RULES = ("best-of-n", "quantile")
PARTS = ("sampling", "scoring", "finetune", "acceptance", "metrics")
FAILED_IN_A_ROW = 5
"""Trials failing one after another that end the study (a config every trial inherits that cannot run, e.g.
a preview above every searched sample count, would otherwise fail new trials for ever)."""


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Range:
    """One searched parameter: numbers in [low, high] (on a `step` grid, or log-uniform), or `choices`."""

    name: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        where = f"--search {self.name.replace('_', '-')}"
        if self.name not in SEARCHABLE:
            raise ValueError(f"--search: {self.name.replace('_', '-')!r} cannot be searched; choose from "
                             f"{', '.join(n.replace('_', '-') for n in SEARCHABLE)}")  # fmt: skip
        if self.choices is not None:
            if not self.choices:
                raise ValueError(f"{where}: give at least one choice")
            if self.name == "rule":
                bad = [c for c in self.choices if c not in RULES]
                if bad:
                    raise ValueError(f"{where}: unknown rule {bad[0]!r}; choose from {', '.join(RULES)}")
            return
        assert self.low is not None and self.high is not None
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low > self.high:
            raise ValueError(f"{where}={self.low:g}:{self.high:g}: the range must be LOW:HIGH with LOW <= HIGH")
        if self.log and self.low <= 0:
            raise ValueError(f"{where}: a log range needs LOW > 0, got {self.low:g}")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"{where}: the step must be > 0, got {self.step:g}")
        if self.name == "cutoff" and not (self.low >= 0 and self.high < 1):
            raise ValueError(f"{where}: cutoffs lie in [0, 1) (0 is GRAFT), got {self.low:g}:{self.high:g}")
        if self.name in INTEGER and (self.low != int(self.low) or self.high != int(self.high) or self.low < 1):
            raise ValueError(f"{where}: {self.name.replace('_', '-')} takes whole numbers >= 1")

    def suggest(self, trial: Any) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        assert self.low is not None and self.high is not None
        if self.name in INTEGER:
            step = int(self.step or 1)
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=step, log=self.log and step == 1)
        if self.log:
            return trial.suggest_float(self.name, self.low, self.high, log=True)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step)

    def describe(self) -> str:
        if self.choices is not None:
            return f"{self.name.replace('_', '-')}={','.join(map(str, self.choices))}"
        extra = ":log" if self.log else f":{self.step:g}" if self.step else ""
        return f"{self.name.replace('_', '-')}={self.low:g}:{self.high:g}{extra}"


def parse_range(text: str) -> Range:
    """`cutoff=0:0.8`, `cutoff=0:0.8:0.1` (a grid), `lr=1e-4:1e-2:log`, `rule=best-of-n,quantile`, `n=2,4,8`."""
    if "=" not in text:
        raise ValueError(f"--search: {text!r} must be NAME=LOW:HIGH[:STEP|:log] or NAME=A,B,C")
    key, spec = (s.strip() for s in text.split("=", 1))
    name = key.replace("-", "_")
    if name not in SEARCHABLE:
        Range(name, 0, 0)  # raises the error that lists the searchable names
    if name == "rule" or ("," in spec and ":" not in spec):
        parts = [p.strip() for p in spec.split(",") if p.strip()]
        values: list[Any] = parts
        if name != "rule":
            try:
                values = [int(p) if name in INTEGER else float(p) for p in parts]
            except ValueError:
                raise ValueError(f"--search {key}={spec}: the choices must be numbers") from None
        return Range(name, choices=tuple(values))
    fields = spec.split(":")
    if len(fields) not in (2, 3):
        raise ValueError(f"--search {key}={spec}: write LOW:HIGH, LOW:HIGH:STEP or LOW:HIGH:log")
    try:
        low, high = float(fields[0]), float(fields[1])
        log = len(fields) == 3 and fields[2].strip().lower() == "log"
        step = float(fields[2]) if len(fields) == 3 and not log else None
    except ValueError:
        raise ValueError(f"--search {key}={spec}: LOW, HIGH and STEP must be numbers") from None
    return Range(name, low, high, step, log)


@dataclass(frozen=True)
class SearchSpace:
    """The searched parameters; everything else comes from the base config."""

    ranges: dict[str, Range]

    @classmethod
    def build(cls, base: RunConfig, fixed: Sequence[str], given: Sequence[Range] = ()) -> SearchSpace:
        """The default space around `base` (the domain's defaults) without the `fixed` fields, then the
        `given` ranges on top. A field both fixed by a flag and given a range is refused."""
        clash = [r.name for r in given if r.name in fixed]
        if clash:
            raise ValueError(
                f"--search {clash[0].replace('_', '-')}: {flag(clash[0])} is also given as a flag; a flag fixes "
                "a parameter for every trial, a --search range searches it: give one"
            )
        ranges: dict[str, Range] = {}
        defaults: dict[str, Range] = {
            "cutoff": Range("cutoff", 0.0, 0.8, 0.1),
            "rule": Range("rule", choices=DEFAULT_RULES),
            "n": Range("n", choices=(2, 4, 8)),
            "quantile": Range("quantile", 0.5, 0.95, 0.05),
            "beta": Range("beta", 0.1, 10.0, log=True),
            "samples": Range("samples", max(1, base.samples // 2), base.samples, max(1, base.samples // 4)),
            "finetune_steps": Range("finetune_steps", max(1, base.finetune_steps // 2), 2 * base.finetune_steps),
            "lr": Range("lr", base.lr / 3, base.lr * 3, log=True),
        }
        if base.rule in ("top-k", "dedup-top-k") or any(r.name == "rule" and set(r.choices or ()) & {"top-k"}
                                                         for r in given):  # fmt: skip
            defaults["k"] = Range("k", max(1, base.samples // 16), max(1, base.samples // 2))
        if "lora_rank" in get_model_spec(base.model).options:
            defaults["lora_rank"] = Range("lora_rank", choices=(4, 8, 16))
        if base.method == "graft" and "method" in fixed:
            fixed = [*fixed, "cutoff"]  # --method graft given: GRAFT only
        for name, r in defaults.items():
            if name not in fixed:
                ranges[name] = r
        for r in given:
            ranges[r.name] = r
        return cls(ranges)

    def rules(self, base: RunConfig) -> tuple[str, ...]:
        r = self.ranges.get("rule")
        return tuple(r.choices) if r is not None and r.choices else (base.rule,)

    def suggest(self, trial: Any, base: RunConfig) -> dict[str, Any]:
        """The trial's config values; a rule's parameter is drawn only with its rule (conditional space)."""
        values: dict[str, Any] = {}
        rule = self.ranges["rule"].suggest(trial) if "rule" in self.ranges else base.rule
        values["rule"] = rule
        param = RULES[rule].param
        if param is not None and param.name in self.ranges:
            values[param.name] = self.ranges[param.name].suggest(trial)
        elif param is not None and getattr(base, param.name) is None:
            raise ValueError(
                f"--search: rule {rule!r} needs {flag(param.name)}; fix it with the flag or search it with "
                f"--search {param.name}=LOW:HIGH"
            )
        for name in ("cutoff", "samples", "finetune_steps", "lr", "lora_rank"):
            if name in self.ranges:
                values[name] = self.ranges[name].suggest(trial)
        return values

    def describe(self) -> str:
        return " ".join(r.describe() for r in self.ranges.values())


def trial_config(base: RunConfig, values: dict[str, Any]) -> RunConfig:
    """The trial's run config: GRAFT at cutoff 0, and the candidates a multiple of best-of-n's group size."""
    values = dict(values)
    cutoff = float(values.pop("cutoff", base.cutoff if base.method == "pgraft" else 0.0))
    if values.get("rule", base.rule) == "best-of-n":
        n = int(values.get("n", base.n or 1))
        samples = int(values.get("samples", base.samples))
        values["samples"] = max(n, samples - samples % n)
    if cutoff <= 0:
        return base.replace(method="graft", cutoff=RunConfig.cutoff, anchoring=RunConfig.anchoring, **values)
    return base.replace(method="pgraft", cutoff=round(cutoff, 6), **values)


@dataclass(frozen=True)
class ScoutSpec:
    trials: int
    objective: str = "pareto"
    realism_weight: float = 1.0
    max_realism_loss: float | None = None
    workers: int = 1
    storage: str | None = None
    study_name: str = "pgraft-scout"
    scale: float = 4.0
    devices: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.trials, int) or self.trials < 1:
            raise ValueError(f"--trials: {self.trials!r} is invalid; it must be an integer >= 1")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"--objective: {self.objective!r} is invalid; choose from {', '.join(OBJECTIVES)}")
        if not self.realism_weight >= 0:
            raise ValueError(f"--realism-weight: {self.realism_weight!r} is invalid; it must be >= 0")
        if not isinstance(self.workers, int) or not 1 <= self.workers <= 64:
            raise ValueError(f"--workers: {self.workers!r} is invalid; it must be an integer in 1..64")
        if not self.scale > 0:
            raise ValueError(f"--scale: {self.scale!r} is invalid; it must be > 0")
        if not isinstance(self.devices, int) or self.devices < 1:
            raise ValueError(f"--devices: {self.devices!r} is invalid; it must be an integer >= 1")


# -- events ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrialDone:
    row: dict[str, Any]


@dataclass(frozen=True)
class ScoutFinished(Finished):
    table: pd.DataFrame
    best: dict[str, Any] | None
    recommendation: Recommendation | None
    files: dict[str, Path] = field(default_factory=dict)
    cost: pd.DataFrame | None = None


@dataclass(frozen=True)
class ScoutCancelled(Cancelled):
    table: pd.DataFrame


ScoutEvent = Progress | TrialDone | ScoutFinished | ScoutCancelled


# -- the study -------------------------------------------------------------------------------------------
def storage_url(out: Path, storage: str | None) -> str:
    return storage or f"sqlite:///{(Path(out) / 'study.db').resolve()}"


def _storage(url: str) -> Any:
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    return optuna.storages.RDBStorage(url, **kwargs)


def _directions(spec: ScoutSpec, has_realism: bool) -> list[Any]:
    return ["maximize", "minimize"] if spec.objective == "pareto" and has_realism else ["maximize"]


def open_study(base: RunConfig, spec: ScoutSpec, out: Path, resume: bool, worker: int = 0) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    has_realism = domain_of(base.model).realism is not None
    directions = _directions(spec, has_realism)
    with warnings.catch_warnings():  # `group` (conditional spaces: a rule's parameter only with its rule)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            seed=spec.seed + 1000 * worker, multivariate=True, group=True,
            n_startup_trials=min(10, max(2, spec.trials // 3)),
        )  # fmt: skip
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    storage = _storage(storage_url(out, spec.storage))
    names = optuna.study.get_all_study_names(storage)
    if spec.study_name in names and not resume and worker == 0:
        raise ValueError(
            f"--out: {str(out)!r} already holds the study {spec.study_name!r}; pass --resume to add trials to it"
        )
    if resume and spec.study_name not in names and worker == 0:
        raise ValueError(f"--resume: no study {spec.study_name!r} in {storage_url(out, spec.storage)}")
    study = optuna.create_study(
        storage=storage, study_name=spec.study_name, directions=directions, sampler=sampler, pruner=pruner,
        load_if_exists=True,
    )  # fmt: skip
    if len(study.directions) != len(directions):
        raise ValueError(f"--objective {spec.objective}: the study {spec.study_name!r} was made with another objective")
    return study


def _value(row: dict[str, Any], spec: ScoutSpec, directions: int) -> Any:
    reward, loss = row["final_reward"], row["realism_loss"]
    if directions == 2:
        return reward, loss
    if spec.objective == "penalised" and not math.isnan(loss):
        return reward - spec.realism_weight * max(0.0, loss)
    return reward


def run_trial(
    trial: Any,
    base: RunConfig,
    space: SearchSpace,
    spec: ScoutSpec,
    out: Path,
    should_stop: Callable[[], bool],
    base_for: Callable[[RunConfig], Any] | None = None,
) -> Generator[Progress, None, Any]:
    """One trial: its run in `OUT/trials/trial_NNNNN`, each round reported (and pruned) when the objective is
    one number; the row goes to the trial's user attributes, from which `trials.csv` is made. `base_for`: the
    base model of a trial's config, already loaded (the app's cache), instead of loading it for every trial."""
    import optuna

    config = trial_config(base, space.suggest(trial, base))
    folder = Path(out) / "trials" / f"trial_{trial.number:05d}"
    trial.set_user_attr("config", config.to_dict())
    trial.set_user_attr("folder", str(folder))
    setup = build_setup(config, allow_import=True, base=base_for(config)) if base_for is not None else None
    runner = RoundRunner(config, out=folder, mode="new", should_stop=should_stop, allow_import=True, setup=setup)
    single = len(trial.study.directions) == 1
    results: list[RoundResult] = []
    steps: dict[int, int] = {}
    start = time.perf_counter()
    for ev in runner.run():
        if isinstance(ev, Progress):
            if ev.stage == "fine-tuning" and ev.round is not None:
                steps[ev.round] = max(steps.get(ev.round, 0), ev.done)
            yield ev.within(trial=trial.number)
        elif isinstance(ev, RoundResult):
            results.append(ev)
            if single and ev.round > 0:
                row = run_row(float(config.cutoff if config.method == "pgraft" else 0.0), config, results, 0, 0, 0.0)
                trial.report(float(_value(row, spec, 1)), ev.round)
                if trial.should_prune():
                    shutil.rmtree(folder, ignore_errors=True)
                    raise optuna.TrialPruned(f"trial {trial.number} pruned after round {ev.round}")
        elif isinstance(ev, Cancelled):
            shutil.rmtree(folder, ignore_errors=True)
            raise KeyboardInterrupt("scout stopped")
    cutoff = float(config.cutoff) if config.method == "pgraft" else 0.0
    params = sum(p.numel() for p in runner.setup.base.trainable_copy().trainable_parameters())
    row = run_row(cutoff, config, results, sum(steps.values()), params, time.perf_counter() - start)
    row.update(_timings(results, config))
    trial.set_user_attr("row", _jsonable(row))
    return _value(row, spec, len(trial.study.directions))


def _timings(results: Sequence[RoundResult], config: RunConfig) -> dict[str, float]:
    """The parts a trial timed, per unit: sampling per sample-step, scoring per sample, fine-tuning per
    training example (step × batch), and the rest per round; `predict_cost` scales them to a full run."""
    rows = sum(len(r.samples) + len(r.preview_samples) for r in results)
    t = {p: sum(float(r.metrics.get(f"time_{p}", 0.0)) for r in results) for p in PARTS}
    examples = config.finetune_steps * config.batch_size * max(0, len(results) - 1)
    return {
        "s_per_sample_step": t["sampling"] / max(1, rows * config.num_inference_steps),
        "s_per_scored_sample": t["scoring"] / max(1, rows),
        "s_per_train_example": t["finetune"] / max(1, examples),
        "s_other_per_round": (t["acceptance"] + t["metrics"]) / max(1, len(results)),
    }


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in row.items():
        if isinstance(v, np.generic):
            v = v.item()
        out[k] = None if isinstance(v, float) and math.isnan(v) else v
    return out


def _optimize(
    base: dict[str, Any], space: SearchSpace, spec: ScoutSpec, out: str, worker: int, threads: int, quota: int
) -> None:
    """A worker process: its share of the cores, its share of the trials."""
    import torch

    torch.set_num_threads(threads)
    config = RunConfig.from_dict(base)
    study = open_study(config, spec, Path(out), resume=True, worker=worker)
    for _ in _drive(study, config, space, spec, Path(out), lambda: False, quota=quota):
        pass


def _drive(
    study: Any,
    base: RunConfig,
    space: SearchSpace,
    spec: ScoutSpec,
    out: Path,
    stop: Callable[[], bool],
    quota: int | None = None,
    base_for: Callable[[RunConfig], Any] | None = None,
) -> Generator[ScoutEvent, None, None]:
    """Ask-and-tell until the study holds `spec.trials` trials that did not fail, or (a worker) for `quota`
    trials: the parent splits the remaining count, so that racing workers never overshoot it."""
    import optuna
    from optuna.trial import TrialState

    asked = failed = 0
    while True:
        states = [t.state for t in study.get_trials(deepcopy=False)]
        done = asked >= quota if quota is not None else sum(s != TrialState.FAIL for s in states) >= spec.trials
        if done or stop():
            return
        asked += 1
        trial = study.ask()
        try:
            value = yield from run_trial(trial, base, space, spec, out, stop, base_for)
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
            continue
        except KeyboardInterrupt:
            study.tell(trial, state=TrialState.FAIL)
            return
        except Exception as exc:  # a config the space produced that does not validate, a failing reward, ...
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            study.tell(trial, state=TrialState.FAIL)
            if isinstance(exc, ValueError) and str(exc).startswith("--search"):
                raise
            failed += 1
            if failed >= FAILED_IN_A_ROW:
                raise ValueError(
                    f"--trials: {failed} trials in a row failed, the last with {type(exc).__name__}: {exc}"
                ) from exc
            continue
        failed = 0
        study.tell(trial, value)
        yield TrialDone(trial_row(study.trials[trial.number]))


def scout_iter(
    base: RunConfig,
    space: SearchSpace,
    spec: ScoutSpec,
    out: Path,
    resume: bool = False,
    should_stop: Callable[[], bool] | None = None,
    base_for: Callable[[RunConfig], Any] | None = None,
) -> Generator[ScoutEvent, None, None]:
    """The study: trials (in this process, or in `spec.workers` processes sharing the storage), then the
    files. Yields each finished trial's row as it lands. `base_for(config)`: the loaded base model of a
    trial (one process only; workers load their own)."""
    check_out(out)
    stop = should_stop or (lambda: False)
    Path(out).mkdir(parents=True, exist_ok=True)
    study = open_study(base, spec, Path(out), resume)
    if resume and spec.storage is None:
        _fail_stale(study)
    if spec.workers == 1:
        for ev in _drive(study, base, space, spec, Path(out), stop, base_for=base_for):
            yield ev
            if stop():
                break
    else:
        yield from _with_workers(study, base, space, spec, Path(out), stop)
    table = trials_table(study)
    if stop():
        yield ScoutCancelled(table)
        return
    best, rec = choose(study, table, spec)
    files = write_outputs(study, table, best, base, spec, Path(out))
    cost = predict_cost(table, _full_config(best, spec), spec.devices) if best is not None else None
    if cost is not None:
        cost.to_csv(Path(out) / "cost.csv", index=False)
        files["cost"] = Path(out) / "cost.csv"
    yield ScoutFinished(table, best, rec, files, cost)


def _fail_stale(study: Any) -> None:
    """Trials left running by a scout that was killed (this folder's own study, so none runs now): failed,
    so that the study does not count them and they are not reported as results."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)
        if t.user_attrs.get("folder"):  # a folder this study made for the trial, never a user's
            shutil.rmtree(Path(t.user_attrs["folder"]), ignore_errors=True)


def _with_workers(
    study: Any, base: RunConfig, space: SearchSpace, spec: ScoutSpec, out: Path, stop: Callable[[], bool]
) -> Generator[ScoutEvent, None, None]:
    """K processes on one storage. They share the cores: each gets cores // K torch threads, and OpenMP
    waits passively (a spinning wait takes the cores the others need)."""
    import multiprocessing as mp

    from optuna.trial import TrialState

    threads = max(1, (os.cpu_count() or 1) // spec.workers)
    existing = sum(t.state != TrialState.FAIL for t in study.get_trials(deepcopy=False))
    left = max(0, spec.trials - existing)
    quotas = [left // spec.workers + (1 if w < left % spec.workers else 0) for w in range(spec.workers)]
    saved = {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    os.environ.update(OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(threads))
    try:
        ctx = mp.get_context("spawn")
        procs = [
            ctx.Process(target=_optimize, args=(base.to_dict(), space, spec, str(out), w + 1, threads, quotas[w]))
            for w in range(spec.workers)
            if quotas[w]
        ]
        for p in procs:
            p.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    seen: set[int] = set()
    while any(p.is_alive() for p in procs):
        if stop():
            for p in procs:
                p.terminate()
            break
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.number not in seen:
                seen.add(t.number)
                yield TrialDone(trial_row(t))
        time.sleep(0.5)
    for p in procs:
        p.join()
    failed = [p.exitcode for p in procs if p.exitcode not in (0, None, -15)]
    if failed and not stop():
        raise RuntimeError(f"--workers: {len(failed)} worker(s) exited with codes {failed}; see their messages above")
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.number not in seen:
            yield TrialDone(trial_row(t))


# -- the results -----------------------------------------------------------------------------------------
def trial_row(trial: Any) -> dict[str, Any]:
    """One row of trials.csv: number, state, every searched parameter under its flag name, the outcome."""
    row: dict[str, Any] = {"trial": trial.number, "state": trial.state.name.lower()}
    row.update({flag(k)[2:]: v for k, v in trial.params.items()})
    done = trial.user_attrs.get("row") or {}
    for key in ("method", "final_reward", "realism_metric", "realism_final", "realism_loss"):
        if key in done:
            row[key] = done[key]
    for key in (*BUDGET_COLUMNS, "seconds"):  # what the trial spent (the searched values are the flag columns)
        if key in done and key not in ("rounds", "seed"):
            row[f"used_{key}"] = done[key]
    for key in ("s_per_sample_step", "s_per_scored_sample", "s_per_train_example", "s_other_per_round"):
        if key in done:
            row[key] = done[key]
    config = trial.user_attrs.get("config") or {}
    if "samples" in config:
        row["samples_used"] = config["samples"]  # after rounding to best-of-n's group size
    if "error" in trial.user_attrs:
        row["error"] = trial.user_attrs["error"]
    return row


def trials_table(study: Any) -> pd.DataFrame:
    rows = [trial_row(t) for t in study.get_trials(deepcopy=False)]
    table = pd.DataFrame(rows)
    for column in ("final_reward", "realism_loss"):
        if column in table:
            table[column] = pd.to_numeric(table[column], errors="coerce")
    return table


def choose(study: Any, table: pd.DataFrame, spec: ScoutSpec) -> tuple[dict[str, Any] | None, Recommendation | None]:
    """The trial to export: the sweep's recommendation for `pareto`, the best value otherwise."""
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        return None, None
    if len(study.directions) == 1:
        best = max(complete, key=lambda t: t.value)
        return {"trial": best.number, **best.user_attrs}, None
    rows = pd.DataFrame([{**t.user_attrs["row"], "trial": t.number} for t in complete])
    rows["realism_loss"] = pd.to_numeric(rows["realism_loss"], errors="coerce")
    rec = recommend(rows, spec.max_realism_loss)
    assert rec is not None and rec.row is not None
    number = int(rows.loc[rec.row, "trial"])
    trial = next(t for t in complete if t.number == number)
    return {"trial": number, **trial.user_attrs}, rec


def _full_config(best: dict[str, Any], spec: ScoutSpec) -> RunConfig:
    """The chosen trial's config with its budget scaled: `--scale` times the candidates per round and the
    fine-tuning steps (the accepted set grows with the candidates)."""
    config = RunConfig.from_dict(best["config"])
    samples = max(1, round(config.samples * spec.scale))
    if config.rule == "best-of-n" and config.n:
        samples = max(config.n, samples - samples % config.n)
    changes: dict[str, Any] = {"samples": samples, "finetune_steps": max(1, round(config.finetune_steps * spec.scale))}
    changes["device"] = RunConfig.device  # the full run picks its own device (a CPU scout exports a GPU run)
    if config.rule in ("top-k", "dedup-top-k") and config.k:
        changes["k"] = max(1, round(config.k * spec.scale))
    return config.replace(**changes)


def write_outputs(
    study: Any, table: pd.DataFrame, best: dict[str, Any] | None, base: RunConfig, spec: ScoutSpec, out: Path
) -> dict[str, Path]:
    files = {"trials": out / "trials.csv", "study": out / "study.db"}
    table.to_csv(files["trials"], index=False)
    if spec.storage is not None:
        files.pop("study")
    files["pareto"] = out / "pareto.html"
    pareto_figure(table, study, best).write_html(files["pareto"], include_plotlyjs=True, full_html=True)
    if best is not None:
        files["best"] = out / "best.yaml"
        files["best"].write_text(Path(best["folder"], "config.yaml").read_text())
        full = _full_config(best, spec)
        files["full_run"] = out / "full_run.yaml"
        commands = full_run_commands(out, spec.devices)
        files["full_run"].write_text(
            f"# trial {best['trial']} of {out}, budget x{spec.scale:g}; run it with\n"
            + "".join(f"#   {c}\n" for c in commands)
            + full.to_yaml()
        )
    return files


def full_run_commands(out: Path, devices: int) -> list[str]:
    config = Path(out) / "full_run.yaml"
    target = Path(out) / "full"
    return [
        f"pgraft run --config {config} --out {target}",
        f"accelerate launch --multi_gpu --num_processes {devices} -m pgraft run --config {config} --out {target}",
    ]


def pareto_figure(table: pd.DataFrame, study: Any, best: dict[str, Any] | None) -> Any:
    """Final reward against realism loss per complete trial, the Pareto front joined, the chosen ringed."""
    import plotly.graph_objects as go

    done = table[table["state"] == "complete"] if "state" in table else table
    fig = go.Figure()
    if done.empty or "realism_loss" not in done or done["realism_loss"].isna().all():
        y: Any = done.get("final_reward", [])
        fig.add_bar(x=[f"trial {t}" for t in done.get("trial", [])], y=y, name="final reward")
        fig.update_layout(title="Final reward per trial (no realism metric)")
        return fig
    hover = [
        "<br>".join(f"{k}: {v}" for k, v in r.items() if k not in ("state",) and not str(k).startswith("s_"))
        for r in done.to_dict("records")
    ]
    fig.add_scatter(
        x=done["realism_loss"], y=done["final_reward"], mode="markers", name="trials", hovertext=hover,
        hoverinfo="text", marker={"size": 9, "color": done.get("cutoff", 0), "colorscale": "Viridis",
                                  "colorbar": {"title": "cutoff"}, "showscale": "cutoff" in done},
    )  # fmt: skip
    front = pareto_front(done["realism_loss"].to_numpy(float), done["final_reward"].to_numpy(float))
    f = done.iloc[front].sort_values("realism_loss")
    fig.add_scatter(x=f["realism_loss"], y=f["final_reward"], mode="lines", name="Pareto front", line={"dash": "dot"})
    if best is not None:
        b = done[done["trial"] == best["trial"]]
        fig.add_scatter(
            x=b["realism_loss"], y=b["final_reward"], mode="markers", name=f"chosen: trial {best['trial']}",
            marker={"size": 18, "symbol": "circle-open", "line": {"width": 2}},
        )  # fmt: skip
    metric = str(done["realism_metric"].iloc[0]) if "realism_metric" in done else "realism"
    fig.update_layout(
        title="Scout: final reward against realism loss", xaxis_title=f"{metric} loss vs the base (lower is better)",
        yaxis_title="final mean reward", legend={"orientation": "h", "y": -0.2},
    )  # fmt: skip
    return fig


def pareto_front(loss: np.ndarray, reward: np.ndarray) -> list[int]:
    """Indices not dominated: no other point has lower-or-equal loss and higher-or-equal reward, one strictly."""
    keep = []
    for i in range(len(loss)):
        dominated = np.any((loss <= loss[i]) & (reward >= reward[i]) & ((loss < loss[i]) | (reward > reward[i])))
        if not dominated and np.isfinite(loss[i]) and np.isfinite(reward[i]):
            keep.append(i)
    return keep


def predict_cost(table: pd.DataFrame, full: RunConfig, devices: int) -> pd.DataFrame:
    """The full run's predicted wall time from the trials' per-unit times (their medians): sampling scales
    with candidates × steps, scoring with candidates, fine-tuning with steps × batch; on N devices the first
    three divide by N (sharded samples, the batch split across ranks) and the rest does not."""
    done = table[table["state"] == "complete"] if "state" in table else table
    if done.empty or "s_per_sample_step" not in done:
        return pd.DataFrame()
    rate = {c: float(done[c].median()) for c in ("s_per_sample_step", "s_per_scored_sample",
                                                   "s_per_train_example", "s_other_per_round")}  # fmt: skip
    rounds = full.rounds + 1
    rows = full.samples * max(1, len(full.prompts)) + full.preview * max(1, len(full.prompts))
    parts = {
        "sampling_s": rounds * rows * full.num_inference_steps * rate["s_per_sample_step"],
        "scoring_s": rounds * rows * rate["s_per_scored_sample"],
        "finetune_s": full.rounds * full.finetune_steps * full.batch_size * rate["s_per_train_example"],
        "other_s": rounds * rate["s_other_per_round"],
    }
    out = []
    for n in sorted({1, devices}):
        split = (parts["sampling_s"] + parts["scoring_s"] + parts["finetune_s"]) / n
        out.append({"devices": n, **{k: v / (n if k != "other_s" else 1) for k, v in parts.items()},
                    "predicted_s": split + parts["other_s"]})  # fmt: skip
    return pd.DataFrame(out)
