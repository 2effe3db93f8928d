"""Inverse noise correction end to end (docs/method.md §4), shared by `pgraft inc`, the app and the tests.

`run_inc_iter(config)` is a generator of events (`Progress`, `Notice`) that returns an `IncResult`:

1. the base line: the flow's K-step Euler sampler on `grid` for every K in `steps`, scored on the same seeds
   (and, as reference rows, the same on every grid of `reference_grids`);
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
from dataclasses import dataclass, field
from typing import Any

import torch

from pgraft.core.devices import resolve_device
from pgraft.core.events import Notice, Progress, Stopped, drain, never, relay, stoppable
from pgraft.core.sampling import sample_seeds
from pgraft.families.base import DiffusionAdapter
from pgraft.inc.config import IncConfig
from pgraft.inc.correction import CorrectionFlow, corrected_sample, search_correction_iter, train_correction_iter
from pgraft.inc.diagnostics import NoiseDiagnostics, diagnose
from pgraft.inc.flops import flops_per_image, forward_flops
from pgraft.inc.inversion import Inversion, InversionError, invert_iter
from pgraft.inc.quality import Quality, make_quality

EVAL_STREAM, PREVIEW_STREAM = 11, 12
MIN_INVERTED = 10  # fewer inverted noises than this train no correction (a notice says so)


@dataclass
class IncResult:
    """Everything a run produced; `previews[(K, m)]` are drawn from the same seeds (m = 0: base)."""

    config: IncConfig
    model_name: str
    domain: str
    primary: str
    higher_is_better: bool
    flops: dict[str, float]
    labels: dict[str, str] = field(default_factory=dict)
    """Axis label of each quality metric."""
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
        from pgraft.inc.tables import quality_table

        return quality_table(self.rows, self.primary, self.higher_is_better)


IncEvent = Progress | Notice


def load_flow_model(config: IncConfig) -> DiffusionAdapter:
    from pgraft.core.process import FlowProcess
    from pgraft.registry import load_model

    device = resolve_device(config.device)
    try:
        model = load_model(config.model, device, dataset=config.dataset, train_steps=config.train_steps)
    except FileNotFoundError as exc:
        raise ValueError(f"--model: {config.model!r} cannot be loaded: {exc}") from None
    if not isinstance(model.process, FlowProcess):
        raise ValueError(f"--model: {config.model!r} is not a rectified flow; inverse noise correction needs one")
    return model


def count_flops(model: Any, config: IncConfig) -> dict[str, float]:
    """Forward FLOPs per sample of the base network and of the correction network, counted once each."""
    x = torch.zeros(4, *model.sample_shape, device=model.device)
    base = forward_flops(model.network, x, torch.full((4,), 500.0, device=model.device))
    c = config.correction_config()
    flow = CorrectionFlow(model.sample_shape, c.hidden, c.path)
    corr = forward_flops(flow, torch.zeros(4, flow.dim), torch.full((4,), 0.5))
    return {"base": base, "correction": corr}


def _row(
    result: IncResult, quality: Quality, k: int, m: int, samples: torch.Tensor, grid: str | None = None
) -> dict[str, Any]:
    """One table row; `grid` other than the run's marks a reference base sampler."""
    flops = flops_per_image(result.flops["base"], k, result.flops["correction"], m)
    run_grid = result.config.grid
    grid = grid or run_grid
    method = "corrected" if m else "base" if grid == run_grid else "reference"
    row = {
        "method": method, "grid": grid, "num_inference_steps": k, "correction_steps": m, "nfe": k + m,
        "flops_per_image": flops,
    }  # fmt: skip
    return {**row, **quality.score(samples)}


def run_inc_iter(
    config: IncConfig, should_stop: Callable[[], bool] = never, model: DiffusionAdapter | None = None
) -> Generator[IncEvent, None, IncResult]:
    """The whole run of the module docstring, as a generator of events returning the `IncResult` (with
    `cancelled` set when `should_stop()` turned true; what finished is kept)."""
    if model is None:
        try:
            with stoppable(should_stop):  # a flow trained on first use checks the flag at every step
                model = load_flow_model(config)
        except Stopped:
            from pgraft.registry import get_model_spec

            domain = get_model_spec(config.model).domain
            return IncResult(config, config.model, domain, "", True, {}, cancelled=True)
    config = config.resolved(model.domain)
    quality = make_quality(model, config.seed)
    result = IncResult(
        config,
        model.name,
        model.domain,
        quality.primary,
        quality.higher_is_better,
        count_flops(model, config),
        dict(getattr(quality, "labels", {})),
    )
    eval_seeds = sample_seeds(config.seed, EVAL_STREAM, config.samples)
    preview_seeds = sample_seeds(config.seed, PREVIEW_STREAM, config.preview)
    grid = config.inversion_options()[2]
    try:
        for g in (grid, *(config.reference_grids or ())):  # the run's grid, then the reference rows' grids
            stage = "sampling the base flow" + ("" if g == grid else f" on the {g} grid")
            for i, k in enumerate(config.steps):
                result.rows.append(_row(result, quality, k, 0, corrected_sample(model, eval_seeds, k, grid=g), g))
                if g == grid:
                    result.previews[(k, 0)] = corrected_sample(model, preview_seeds, k, grid=g)
                yield Progress(stage, i + 1, len(config.steps), scope=(("K", k),))
                if should_stop():
                    raise Stopped
        data = quality.real_data(config.invert)
        for k in config.steps:
            yield from _correct_at(result, quality, model, data, k, eval_seeds, preview_seeds, should_stop)
    except Stopped:
        result.cancelled = True
    return result


def _correct_at(
    result: IncResult,
    quality: Quality,
    model: DiffusionAdapter,
    data: torch.Tensor,
    k: int,
    eval_seeds: torch.Tensor,
    preview_seeds: torch.Tensor,
    should_stop: Callable[[], bool],
) -> Generator[IncEvent, None, None]:
    """Invert at K steps, diagnose, train the correction, score and preview every correction step count."""
    config = result.config
    tol, max_iter, grid = config.inversion_options()
    stage = f"inverting {len(data)} real samples"
    try:
        inversion: Inversion = yield from relay(
            invert_iter(model, data, k, tol, max_iter, on_failure=config.on_failure, solver=config.solver, grid=grid),
            should_stop,
            stage=stage,
            K=k,
        )
    except InversionError as exc:
        if config.on_failure == "raise":
            raise
        result.notices.append(f"K={k}: no correction: {exc}")
        yield Notice(result.notices[-1])
        return
    n_failed = int(inversion.failed.sum())
    if len(data) - n_failed < MIN_INVERTED:
        result.notices.append(f"K={k}: no correction: only {len(data) - n_failed} of {len(data)} samples inverted")
        yield Notice(result.notices[-1])
        return
    if n_failed:
        worst = max(inversion.steps, key=lambda s: s.failed)
        note = (
            f"K={k}: {n_failed} of {len(data)} real samples did not invert to --tol {tol:g} (backward Euler does "
            f"not contract, mostly at step {worst.index}, sigma {worst.sigma:.3g} -> {worst.sigma_next:.3g}); they "
            "are left out of the correction"
        )
        if grid == "linear":
            note += "; --grid karras ends with shorter steps, where more samples have a preimage"
        result.notices.append(note)
        yield Notice(note)
    result.inversions[k] = inversion
    result.diagnostics[k] = diagnose(inversion.kept, seed=config.seed)
    # The training loop checks `should_stop` at every step itself (it yields only every 50 steps).
    if config.search_hidden or config.search_train_steps:
        train = search_correction_iter(
            inversion.kept, config.correction_config(), config.search_hidden, config.search_train_steps,
            should_stop, model.device,
        )  # fmt: skip
    else:
        train = train_correction_iter(inversion.kept, config.correction_config(), should_stop, model.device)
    flow, record = yield from relay(train, should_stop, K=k)
    if should_stop():
        raise Stopped
    result.corrections[k], result.training[k] = flow, record
    for j, m in enumerate(config.correction_steps):
        result.rows.append(_row(result, quality, k, m, corrected_sample(model, eval_seeds, k, flow, m, grid)))
        result.previews[(k, m)] = corrected_sample(model, preview_seeds, k, flow, m, grid)
        yield Progress("sampling base + correction", j + 1, len(config.correction_steps), scope=(("K", k),))


def run_inc(config: IncConfig, **kwargs: Any) -> IncResult:
    """`run_inc_iter` run to the end."""
    result = drain(run_inc_iter(config, **kwargs))
    assert result is not None
    return result
