"""The discrete Euler sampler `G` of a flow model, and its inversion by backward Euler (docs/method.md §4.1).

`G` is the sampler the flow model really uses: diffusers' `FlowMatchEulerDiscreteScheduler` on the grid
`σ_0 = 1 > σ_1 > … > σ_K = 0` of `FlowProcess`, stepping noise → data with

    y_{k+1} = y_k + (σ_{k+1} − σ_k) v(y_k, t_k)          (t_k = 1000 σ_k; η_k = σ_k − σ_{k+1} > 0)

Inversion walks the grid backwards: given `y_{k+1}`, the state `y_k` solves `y_k = y_{k+1} + η_k v(y_k, t_k)`.
Fixed-point iteration `y ← y_{k+1} + η_k v(y, t_k)` contracts when `η_k L < 1` (`L` the Lipschitz constant of
`v`); its residual `|y + (σ_{k+1} − σ_k) v(y, t_k) − y_{k+1}|` is exactly the distance from `y_{k+1}` of what
`G`'s step makes of `y`, so stopping on a residual tolerance gives `G(z) = x` up to the propagated residuals.
A step whose residual grows or stalls instead of shrinking raises `InversionError` naming the step, its
size and the residual (or, with `on_failure="drop"`, drops those samples and reports how many).

How hard a step is depends on the data: near a data manifold `v(y, σ) ≈ (y − x̂_0(y)) / σ` changes like `1/σ`
across it, so for the step from `σ_k` down to a much smaller `σ_{k+1}` the iteration multiplies the error in
those directions by `η_k / σ_k = 1 − σ_{k+1} / σ_k`, close to 1 *(derived)*. On the 2-D toy (modes of width
0.35) every step contracts fast; on 8×8 digits the step onto the grid's last point `σ = 0.001` takes about a
hundred iterations, and for some images it does not converge (measured on a partly trained digits flow).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import torch

from pgraft.core.events import Progress, drain
from pgraft.core.process import FlowProcess
from pgraft.families.base import Cond, DiffusionAdapter

STALL_PATIENCE = 20  # iterations without a new best residual that count as "does not contract"
SOLVERS = ("auto", "fixed-point", "anderson")
ANDERSON_MEMORY = 5
SWITCH_AFTER = 8
"""`auto`: rows still unconverged after this many fixed-point iterations continue with Anderson acceleration."""


class InversionError(ValueError):
    """The fixed-point iteration of one inversion step did not contract (`η L ≥ 1` there)."""


@dataclass(frozen=True)
class StepReport:
    """How the backward-Euler solve of sampler step `index` (0 = the step leaving pure noise) went."""

    index: int
    sigma: float
    sigma_next: float
    step_size: float
    iterations: int
    """Most fixed-point updates any sample needed (each costs one velocity evaluation)."""
    mean_iterations: float
    residual: float
    """Largest final residual `max_i |y_i + (σ_{k+1} − σ_k) v(y_i) − y_{k+1,i}|_∞` over the converged rows."""
    failed: int = 0
    """Rows whose iteration did not contract at this step."""
    failed_residual: float = 0.0
    failed_iterations: int = 0


@dataclass(frozen=True)
class Inversion:
    """Inverted noises `z` with `G(z) = x`, and the per-step record of the solve (in sampler order)."""

    noises: torch.Tensor
    """`(N, *shape)`; rows in `failed` are NaN."""
    failed: torch.Tensor
    """`(N,)` booleans: rows dropped because their iteration did not contract (only with `on_failure="drop"`)."""
    steps: tuple[StepReport, ...]
    tol: float
    num_inference_steps: int
    grid: str = "linear"
    """The sampler grid the noises belong to: `G` on another grid takes them elsewhere."""

    @property
    def kept(self) -> torch.Tensor:
        """The inverted noises of the rows that converged."""
        return self.noises[~self.failed]

    @property
    def max_residual(self) -> float:
        return max(s.residual for s in self.steps)

    @property
    def evaluations_per_sample(self) -> float:
        """Velocity evaluations per inverted sample (the explicit first guess included)."""
        return sum(1 + s.mean_iterations for s in self.steps)


def flow_grid(
    model: DiffusionAdapter, num_inference_steps: int, grid: str = "linear"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sampler's `timesteps (K,)` and `sigmas (K + 1,)`, exactly as the diffusers scheduler sets them on
    `grid` (`core.process.FLOW_GRIDS`)."""
    scheduler = _flow_process(model).make_scheduler(num_inference_steps, grid=grid)
    return scheduler.timesteps.clone(), scheduler.sigmas.clone()


def _flow_process(model: DiffusionAdapter) -> FlowProcess:
    """The model's rectified-flow process (`ValueError` naming `--model` for any other)."""
    if not isinstance(model.process, FlowProcess):
        raise ValueError(
            f"--model: {model.name!r} is not a flow model; inverse noise correction needs a rectified flow"
        )
    return model.process


def _rows(cond: Cond | torch.Tensor | None, index: torch.Tensor | slice, device: torch.device) -> Any:
    """The conditioning of rows `index` on `device` (None stays None)."""
    return None if cond is None else cond[index].to(device)


def euler_sample(
    model: DiffusionAdapter,
    z: torch.Tensor,
    num_inference_steps: int,
    batch_size: int | None = None,
    cond: Cond | torch.Tensor | None = None,
    grid: str = "linear",
) -> torch.Tensor:
    """`G(z)`: the flow model's discrete Euler sampler from given noises (the loop of `sampling.sample_iter`)
    on `grid`; `cond`: row-aligned conditioning of a prompted model (a pipeline's `Cond`, a class-label
    tensor)."""
    process = _flow_process(model)
    device = model.device
    out = torch.empty_like(z, dtype=torch.float32, device="cpu")
    size = batch_size or model.sampling_batch_size
    for lo in range(0, len(z), size):
        x = z[lo : lo + size].to(device)
        c = _rows(cond, slice(lo, lo + size), device)
        scheduler = process.make_scheduler(num_inference_steps, grid=grid)
        with torch.inference_mode():
            for t in scheduler.timesteps:
                v = model(x, t.to(device).expand(len(x)), c)
                x = process.step(scheduler, v, t, x, 0.0, None)
        out[lo : lo + size] = x.float().cpu()
    return out


def _step_error(report: StepReport, rows: int) -> InversionError:
    return InversionError(
        f"inversion does not contract at sampler step {report.index} (sigma {report.sigma:.4g} -> "
        f"{report.sigma_next:.4g}, step size {report.step_size:.4g}): residual {report.failed_residual:.3g} after "
        f"{report.failed_iterations} iterations for {report.failed} of {rows} samples (it grows, stalls or "
        "outlasts --max-iter). Backward Euler contracts when step size x Lipschitz(v) < 1: use more steps "
        "(smaller step sizes), a smoother model, or drop the samples that fail (--on-failure drop)"
    )


def invert_step(
    model: DiffusionAdapter,
    y_next: torch.Tensor,
    timestep: torch.Tensor,
    sigma: torch.Tensor,
    sigma_next: torch.Tensor,
    k: int,
    tol: float,
    max_iter: int,
    solver: str = "auto",
    cond: Cond | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, StepReport]:
    """Solve `y + (σ_{k+1} − σ_k) v(y, t_k) = y_{k+1}` for `y` by fixed-point iteration, row by row.

    `solver`: `fixed-point` alone; `anderson` (Anderson acceleration of the same map, type II with the last
    `ANDERSON_MEMORY` iterates: the next iterate is the combination of the last `g` values whose residuals'
    combination is least, a secant method that converges where `η L ≥ 1` makes plain iteration stall or
    diverge, at one velocity evaluation per iteration as before); `auto` (default): fixed-point iteration
    where it contracts, and Anderson for the rows it has not converged after `SWITCH_AFTER` iterations.

    Every row iterates `y ← g(y) = y_{k+1} − (σ_{k+1} − σ_k) v(y, t_k)` until its own residual `|g(y) − y|_∞` is
    below `tol` (converged rows stop costing evaluations); the returned `y` is the iterate whose residual was
    measured, so the report is exact. A row whose best residual has not improved for `STALL_PATIENCE`
    iterations, turns non-finite or outlasts `max_iter` does not contract: it is returned in the `failed`
    mask, its `y` is NaN. (The residual of a contracting but nonlinear step need not fall every iteration:
    on the digits flow it rises for a few iterations and then converges.)
    """
    dt = (sigma_next - sigma).to(y_next.device)  # negative: σ decreases along the sampler
    n = len(y_next)
    flat = y_next.reshape(n, -1)
    y = (y_next - dt * model(y_next, timestep.expand(n), cond)).reshape(n, -1)  # explicit first guess
    best = torch.full((n,), float("inf"), device=y.device)
    residual = best.clone()
    since_best = torch.zeros(n, dtype=torch.long, device=y.device)
    iterations = torch.zeros(n, dtype=torch.long, device=y.device)
    failed = torch.zeros(n, dtype=torch.bool, device=y.device)
    active = torch.arange(n, device=y.device)
    if solver not in SOLVERS:
        raise ValueError(f"--solver: {solver!r} is invalid; allowed: {', '.join(SOLVERS)}")
    start = 1 if solver == "anderson" else (SWITCH_AFTER if solver == "auto" else max_iter + 1)
    hist_g: list[torch.Tensor] = []  # the last iterates' g and residual vectors of the active rows
    hist_f: list[torch.Tensor] = []
    for it in range(1, max_iter + 1):
        ya = y[active]
        c = None if cond is None else cond[active]
        v = model(ya.reshape(-1, *y_next.shape[1:]), timestep.expand(len(active)), c).reshape(len(ya), -1)
        g = flat[active] - dt * v
        f = g - ya
        res = f.abs().amax(1).nan_to_num(float("inf"))  # = |ya + dt v(ya) − y_next|_∞
        iterations[active], residual[active] = it, res
        improved = res < best[active]
        best[active] = torch.minimum(best[active], res)
        since_best[active] = torch.where(improved, 0, since_best[active] + 1)
        done = res <= tol
        bad = ~done & (~torch.isfinite(res) | (since_best[active] >= STALL_PATIENCE) | (it == max_iter))
        failed[active[bad]] = True
        keep = ~(done | bad)
        if it >= start:
            hist_g.append(g)
            hist_f.append(f)
            hist_g, hist_f = hist_g[-(ANDERSON_MEMORY + 1) :], hist_f[-(ANDERSON_MEMORY + 1) :]
            step = _anderson(hist_g, hist_f) if len(hist_g) > 1 else g
        else:
            step = g
        y[active[keep]] = step[keep]
        active = active[keep]
        hist_g, hist_f = [h[keep] for h in hist_g], [h[keep] for h in hist_f]
        if len(active) == 0:
            break
    y[failed] = float("nan")
    ok = ~failed
    report = StepReport(
        index=k,
        sigma=float(sigma),
        sigma_next=float(sigma_next),
        step_size=float(sigma - sigma_next),
        iterations=int(iterations.max()),
        mean_iterations=float(iterations.double().mean()),
        residual=float(residual[ok].max()) if bool(ok.any()) else float("inf"),
        failed=int(failed.sum()),
        failed_residual=float(residual[failed].max()) if bool(failed.any()) else 0.0,
        failed_iterations=int(iterations[failed].max()) if bool(failed.any()) else 0,
    )
    return y.reshape(y_next.shape), failed, report


def _anderson(hist_g: list[torch.Tensor], hist_f: list[torch.Tensor]) -> torch.Tensor:
    """Type-II Anderson step per row: `g_m − ΔG γ` with `γ = argmin |f_m − ΔF γ|` over the history's
    differences (a batched least-squares solve; `(n, D)` tensors, oldest first). A non-finite solve (a
    degenerate history) falls back to the plain iterate."""
    g_m, f_m = hist_g[-1].double(), hist_f[-1].double()
    d_g = torch.stack([b - a for a, b in zip(hist_g[:-1], hist_g[1:], strict=True)], dim=2).double()
    d_f = torch.stack([b - a for a, b in zip(hist_f[:-1], hist_f[1:], strict=True)], dim=2).double()
    # ridge-regularised normal equations, scaled to the differences: stable when the history is near collinear
    gram = d_f.transpose(1, 2) @ d_f
    scale = gram.diagonal(dim1=1, dim2=2).amax(1).clamp_min(1e-300)[:, None, None]
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    gamma = torch.linalg.solve(gram + 1e-10 * scale * eye, d_f.transpose(1, 2) @ f_m[:, :, None])
    out = g_m - (d_g @ gamma)[:, :, 0]
    ok = torch.isfinite(out).all(1, keepdim=True)
    return torch.where(ok, out, g_m).to(hist_g[-1].dtype)


def invert_iter(
    model: DiffusionAdapter,
    x: torch.Tensor,
    num_inference_steps: int,
    tol: float = 1e-5,
    max_iter: int = 100,
    batch_size: int | None = None,
    on_failure: str = "raise",
    solver: str = "auto",
    cond: Cond | torch.Tensor | None = None,
    grid: str = "linear",
) -> Generator[Progress, None, Inversion]:
    """Invert data `x` through the K-step Euler sampler, last step first (docs/method.md §4.1); `cond`:
    row-aligned conditioning of a prompted model (a pipeline's prompt embeddings: its latents are inverted
    through the guided velocity the sampler uses, so `G(z, cond) = x`).

    Yields progress after every step of every batch and returns the `Inversion`; per-step reports are
    merged over batches (worst residual, most iterations, mean iterations averaged over batches). A row
    that does not contract raises `InversionError` (`on_failure="raise"`) or is dropped and marked in
    `Inversion.failed` (`"drop"`).
    """
    if not tol > 0:
        raise ValueError(f"--tol: {tol!r} is invalid; allowed: a positive number")
    if max_iter < 1:
        raise ValueError(f"--max-iter: {max_iter!r} is invalid; allowed: an integer >= 1")
    if on_failure not in ("raise", "drop"):
        raise ValueError(f"--on-failure: {on_failure!r} is invalid; allowed: raise, drop")
    timesteps, sigmas = flow_grid(model, num_inference_steps, grid)
    num_steps = len(timesteps)
    size = batch_size or model.sampling_batch_size
    n_batches = max(1, -(-len(x) // size))
    noises = torch.full(x.shape, float("nan"))
    failed = torch.zeros(len(x), dtype=torch.bool)
    reports: list[list[StepReport]] = [[] for _ in range(num_steps)]
    device = model.device
    for b in range(n_batches):
        rows = torch.arange(b * size, min(len(x), (b + 1) * size))
        y = x[rows].to(device, torch.float32)
        c = _rows(cond, rows, device)
        for j, k in enumerate(reversed(range(num_steps))):
            if len(y) == 0:  # every row of this batch failed at an earlier step
                break
            with torch.inference_mode():
                y, bad, rep = invert_step(
                    model, y, timesteps[k].to(device), sigmas[k], sigmas[k + 1], k, tol, max_iter, solver, c
                )
            if rep.failed and on_failure == "raise":
                raise _step_error(rep, len(x))
            reports[k].append(rep)
            failed[rows[bad.cpu()]] = True
            rows, y = rows[~bad.cpu()], y[~bad]
            c = None if c is None else c[~bad]
            yield Progress("inverting", b * num_steps + j + 1, n_batches * num_steps)
        noises[rows] = y.float().cpu()
    if bool(failed.all()):
        worst = max((r for rs in reports for r in rs), key=lambda r: r.failed)
        raise _step_error(worst, len(x))
    return Inversion(noises, failed, tuple(_merge(r) for r in reports), tol, num_inference_steps, grid)


def _merge(reports: list[StepReport]) -> StepReport:
    """One step's reports over batches (a batch whose rows all failed earlier has no report)."""
    first = reports[0]
    return StepReport(
        index=first.index,
        sigma=first.sigma,
        sigma_next=first.sigma_next,
        step_size=first.step_size,
        iterations=max(r.iterations for r in reports),
        mean_iterations=sum(r.mean_iterations for r in reports) / len(reports),
        residual=max(r.residual for r in reports),
        failed=sum(r.failed for r in reports),
        failed_residual=max(r.failed_residual for r in reports),
        failed_iterations=max(r.failed_iterations for r in reports),
    )


def invert(model: DiffusionAdapter, x: torch.Tensor, num_inference_steps: int, **kwargs: object) -> Inversion:
    """`invert_iter` run to the end."""
    inversion = drain(invert_iter(model, x, num_inference_steps, **kwargs))  # type: ignore[arg-type]
    assert inversion is not None
    return inversion
