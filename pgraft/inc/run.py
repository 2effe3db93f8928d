"""Inverse noise correction end to end (docs/method.md §4), shared by `pgraft inc`, the app and the tests.

`run_inc_iter(config)` is a generator of events (`IncProgress`, `IncNotice`) that returns an `IncResult`:

1. the base line: the flow's K-step Euler sampler for every K in `steps`, scored on the same seeds;
2. for every K: invert real data through that sampler (backward Euler), diagnose the inverted noises
   against `N(0, I)`, train a correction flow on them, and score `G_K(c(ε))` for every number of
   correction steps m, again on the same seeds;
3. FLOPs per image, counted once per network: `m × FLOPs(c) + K × FLOPs(base)`.

The real data that is inverted is disjoint from the data the samples are scored against (`inc_quality`).
Cancellation: `should_stop()` is checked between steps of every loop; a stopped run returns what it has,
with `cancelled=True`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from pgraft.core.sampling import sample_seeds
from pgraft.families.small import DiffusionModel
from pgraft.inc.correction import CorrectionConfig, CorrectionFlow, corrected_sample, train_correction_iter
from pgraft.inc.diagnostics import NoiseDiagnostics, diagnose
from pgraft.inc.flops import flops_per_image, forward_flops
from pgraft.inc.inversion import Inversion, InversionError, invert_iter
from pgraft.inc.quality import Quality, make_quality

EVAL_STREAM, PREVIEW_STREAM = 11, 12
ON_FAILURE = ("drop", "raise")
MIN_INVERTED = 10  # fewer inverted noises than this train no correction (a notice says so)
# Per domain (tol, max_iter): pixels in [-1, 1] need no 1e-5, and the last step of a digits grid takes ~100
# fixed-point iterations (see `inversion.py`).
INVERSION_DEFAULTS: dict[str, tuple[float, int]] = {"toy2d": (1e-5, 100), "digits": (1e-4, 400)}


def _ints(flag: str, values: tuple[int, ...], low: int, high: int) -> None:
    if not values or any(not isinstance(v, int) or not low <= v <= high for v in values):
        raise ValueError(f"{flag}: {list(values)!r} is invalid; allowed: one or more integers in [{low}, {high}]")
    if len(set(values)) != len(values):
        raise ValueError(f"{flag}: {list(values)!r} repeats a value; allowed: distinct integers in [{low}, {high}]")


@dataclass(frozen=True)
class IncConfig:
    """Every option of `pgraft inc`; a field `foo_bar` is the flag `--foo-bar`."""

    model: str = field(
        default="toy2d-flow", metadata={"help": "a flow model: toy2d-flow, toy2d-flow-exact, digits-flow"}
    )
    dataset: str = field(default="ring8", metadata={"help": "toy mixture (toy models only)"})
    train_steps: int | None = field(
        default=None, metadata={"help": "toy2d-flow only: its training steps (< 3000 under-trains)"}
    )
    steps: tuple[int, ...] = field(default=(8, 16, 32), metadata={"help": "base sampler step counts K (both lines)"})
    correction_steps: tuple[int, ...] = field(default=(1, 2, 4), metadata={"help": "Euler steps m of the correction"})
    invert: int = field(default=2000, metadata={"help": "real samples to invert (train split for digits)"})
    samples: int = field(default=2000, metadata={"help": "generated samples scored per table row"})
    preview: int = field(
        default=256, metadata={"help": "samples drawn from fixed seeds for the base-vs-corrected view"}
    )
    tol: float | None = field(
        default=None, metadata={"help": "residual tolerance of every backward-Euler step (toy 1e-5, digits 1e-4)"}
    )
    max_iter: int | None = field(
        default=None, metadata={"help": "fixed-point iterations allowed per step (toy 100, digits 400)"}
    )
    on_failure: str = field(
        default="drop", metadata={"help": "samples whose inversion does not contract: drop | raise"}
    )
    correction_hidden: int = field(default=64, metadata={"help": "width of the correction MLP"})
    correction_train_steps: int = field(default=1000, metadata={"help": "training steps of each correction flow"})
    correction_batch_size: int = field(default=512, metadata={"help": "batch size of correction training"})
    correction_lr: float = field(default=1e-2, metadata={"help": "peak learning rate of correction training"})
    correction_path: str = field(default="trig", metadata={"help": "interpolant of the correction: trig | linear"})
    seed: int = field(default=0, metadata={"help": "seed of data, noises and training"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda, cuda:N or auto"})

    def __post_init__(self) -> None:
        from pgraft.registry import MODELS

        if self.model not in MODELS:
            raise ValueError(f"--model: {self.model!r} is not registered; allowed: {sorted(MODELS)}")
        if self.train_steps is not None:
            if "train_steps" not in MODELS[self.model].options:
                with_option = sorted(n for n, s in MODELS.items() if "train_steps" in s.options)
                raise ValueError(
                    f"--train-steps: {self.train_steps!r} is not an option of --model {self.model!r}; "
                    f"allowed only with --model in {with_option}"
                )
            if not 1 <= self.train_steps <= 10**6:
                raise ValueError(f"--train-steps: {self.train_steps!r} is invalid; allowed: an integer in [1, 1e6]")
        _ints("--steps", self.steps, 1, 1000)
        _ints("--correction-steps", self.correction_steps, 1, 1000)
        checks: list[tuple[str, Any, bool, str]] = [
            ("--invert", self.invert, 10 <= self.invert <= 10**6, "an integer in [10, 1e6]"),
            ("--samples", self.samples, 10 <= self.samples <= 10**6, "an integer in [10, 1e6]"),
            ("--preview", self.preview, 1 <= self.preview <= 10**5, "an integer in [1, 1e5]"),
            ("--tol", self.tol, self.tol is None or 0 < self.tol < 1, "a number in (0, 1)"),
            (
                "--max-iter",
                self.max_iter,
                self.max_iter is None or 1 <= self.max_iter <= 10**5,
                "an integer in [1, 1e5]",
            ),
            ("--on-failure", self.on_failure, self.on_failure in ON_FAILURE, ", ".join(ON_FAILURE)),
            ("--seed", self.seed, 0 <= self.seed < 2**31, "an integer in [0, 2^31)"),
            (
                "--device",
                self.device,
                self.device in ("cpu", "cuda", "auto") or self.device.startswith("cuda:"),
                "cpu, cuda, cuda:N, auto",
            ),
        ]
        for flag, value, ok, allowed in checks:
            if not ok:
                raise ValueError(f"{flag}: {value!r} is invalid; allowed: {allowed}")
        self.correction_config()  # validates the correction flags

    def inversion_settings(self, domain: str) -> tuple[float, int]:
        """`(tol, max_iter)`: the given values, or the domain's defaults (digits steps converge slowly)."""
        tol, max_iter = INVERSION_DEFAULTS.get(domain, INVERSION_DEFAULTS["toy2d"])
        return (self.tol if self.tol is not None else tol), (self.max_iter if self.max_iter is not None else max_iter)

    def correction_config(self) -> CorrectionConfig:
        return CorrectionConfig(
            hidden=self.correction_hidden,
            train_steps=self.correction_train_steps,
            batch_size=self.correction_batch_size,
            lr=self.correction_lr,
            path=self.correction_path,
            seed=self.seed,
        )

    def to_dict(self) -> dict[str, Any]:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}


@dataclass(frozen=True)
class IncProgress:
    stage: str
    done: int
    total: int
    steps: int | None = None
    loss: float | None = None


@dataclass(frozen=True)
class IncNotice:
    message: str


@dataclass
class IncResult:
    """Everything a run produced; `previews[(K, m)]` are drawn from the same seeds (m = 0: base)."""

    config: IncConfig
    model_name: str
    domain: str
    primary: str
    higher_is_better: bool
    flops: dict[str, float]
    rows: list[dict[str, Any]] = field(default_factory=list)
    diagnostics: dict[int, NoiseDiagnostics] = field(default_factory=dict)
    inversions: dict[int, Inversion] = field(default_factory=dict)
    corrections: dict[int, CorrectionFlow] = field(default_factory=dict)
    training: dict[int, dict[str, Any]] = field(default_factory=dict)
    previews: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    cancelled: bool = False

    def table(self) -> Any:
        """The quality-vs-FLOPs table (pandas), with the equal-compute comparison of every corrected row."""
        from pgraft.inc.report import quality_table

        return quality_table(self.rows, self.primary, self.higher_is_better)


IncEvent = IncProgress | IncNotice


def load_flow_model(config: IncConfig) -> DiffusionModel:
    from pgraft.core.process import FlowProcess
    from pgraft.registry import load_model

    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        model = load_model(config.model, device, dataset=config.dataset, train_steps=config.train_steps)
    except FileNotFoundError as exc:
        raise ValueError(f"--model: {config.model!r} cannot be loaded: {exc}") from None
    if not isinstance(model.process, FlowProcess):
        raise ValueError(f"--model: {config.model!r} is not a rectified flow; inverse noise correction needs one")
    return model


def count_flops(model: DiffusionModel, config: IncConfig) -> dict[str, float]:
    """Forward FLOPs per sample of the base network and of the correction network, counted once each."""
    x = torch.zeros(4, *model.sample_shape, device=model.device)
    base = forward_flops(model.network, x, torch.full((4,), 500.0, device=model.device))
    c = config.correction_config()
    flow = CorrectionFlow(model.sample_shape, c.hidden, c.path)
    corr = forward_flops(flow, torch.zeros(4, flow.dim), torch.full((4,), 0.5))
    return {"base": base, "correction": corr}


def _row(result: IncResult, quality: Quality, k: int, m: int, samples: torch.Tensor) -> dict[str, Any]:
    flops = flops_per_image(result.flops["base"], k, result.flops["correction"], m)
    method = "corrected" if m else "base"
    row = {"method": method, "num_inference_steps": k, "correction_steps": m, "nfe": k + m, "flops_per_image": flops}
    return {**row, **quality.score(samples)}


def run_inc_iter(
    config: IncConfig, should_stop: Callable[[], bool] = lambda: False, model: DiffusionModel | None = None
) -> Generator[IncEvent, None, IncResult]:
    """The whole run of the module docstring, as a generator of events returning the `IncResult`."""
    model = model or load_flow_model(config)
    quality = make_quality(model, config.seed)
    result = IncResult(
        config, model.name, model.domain, quality.primary, quality.higher_is_better, count_flops(model, config)
    )
    eval_seeds = sample_seeds(config.seed, EVAL_STREAM, config.samples)
    preview_seeds = sample_seeds(config.seed, PREVIEW_STREAM, config.preview)
    for i, k in enumerate(config.steps):
        result.rows.append(_row(result, quality, k, 0, corrected_sample(model, eval_seeds, k)))
        result.previews[(k, 0)] = corrected_sample(model, preview_seeds, k)
        yield IncProgress("sampling the base flow", i + 1, len(config.steps), k)
        if should_stop():
            result.cancelled = True
            return result
    data = quality.real_data(config.invert)
    for k in config.steps:
        yield from _correct_at(result, quality, model, data, k, eval_seeds, preview_seeds, should_stop)
        if result.cancelled:
            break
    return result


def _correct_at(
    result: IncResult,
    quality: Quality,
    model: DiffusionModel,
    data: torch.Tensor,
    k: int,
    eval_seeds: torch.Tensor,
    preview_seeds: torch.Tensor,
    should_stop: Callable[[], bool],
) -> Generator[IncEvent, None, None]:
    """Invert at K steps, diagnose, train the correction, score and preview every correction step count."""
    config = result.config
    tol, max_iter = config.inversion_settings(model.domain)
    inv_gen = invert_iter(model, data, k, tol, max_iter, on_failure=config.on_failure)
    while True:
        try:
            ev = next(inv_gen)
        except StopIteration as stop:
            inversion: Inversion = stop.value
            break
        except InversionError as exc:
            if config.on_failure == "raise":
                raise
            result.notices.append(f"K={k}: no correction: {exc}")
            yield IncNotice(result.notices[-1])
            return
        yield IncProgress(f"inverting {len(data)} real samples", ev.done, ev.total, k)
        if should_stop():
            result.cancelled = True
            return
    n_failed = int(inversion.failed.sum())
    if len(data) - n_failed < MIN_INVERTED:
        result.notices.append(f"K={k}: no correction: only {len(data) - n_failed} of {len(data)} samples inverted")
        yield IncNotice(result.notices[-1])
        return
    if n_failed:
        worst = max(inversion.steps, key=lambda s: s.failed)
        note = (
            f"K={k}: {n_failed} of {len(data)} real samples did not invert (backward Euler does not contract, "
            f"mostly at step {worst.index}, step size {worst.step_size:.3g}); they are left out of the correction"
        )
        result.notices.append(note)
        yield IncNotice(note)
    result.inversions[k] = inversion
    result.diagnostics[k] = diagnose(inversion.kept, seed=config.seed)
    train_gen = train_correction_iter(inversion.kept, config.correction_config(), should_stop, model.device)
    while True:
        try:
            tev = next(train_gen)
        except StopIteration as stop:
            flow, record = stop.value
            break
        yield IncProgress("training the correction", tev.done, tev.total, k, tev.loss)
    if should_stop():
        result.cancelled = True
        return
    result.corrections[k], result.training[k] = flow, record
    for j, m in enumerate(config.correction_steps):
        result.rows.append(_row(result, quality, k, m, corrected_sample(model, eval_seeds, k, flow, m)))
        result.previews[(k, m)] = corrected_sample(model, preview_seeds, k, flow, m)
        yield IncProgress("sampling base + correction", j + 1, len(config.correction_steps), k)


def run_inc(config: IncConfig, **kwargs: Any) -> IncResult:
    """`run_inc_iter` run to the end."""
    gen = run_inc_iter(config, **kwargs)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
