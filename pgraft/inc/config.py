"""The options of inverse noise correction (`pgraft inc`, the app's tab): one dataclass, one help string per
field, validated on creation; a field `foo_bar` is the flag `--foo-bar`."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from pgraft.core.process import FLOW_GRIDS
from pgraft.inc.correction import CorrectionConfig

ON_FAILURE = ("drop", "raise")


def _ints(flag: str, values: tuple[int, ...], low: int, high: int) -> None:
    if not values or any(not isinstance(v, int) or not low <= v <= high for v in values):
        raise ValueError(f"{flag}: {list(values)!r} is invalid; allowed: one or more integers in [{low}, {high}]")
    if len(set(values)) != len(values):
        raise ValueError(f"{flag}: {list(values)!r} repeats a value; allowed: distinct integers in [{low}, {high}]")


@dataclass(frozen=True)
class IncConfig:
    """Every option of `pgraft inc`; a field `foo_bar` is the flag `--foo-bar`."""

    model: str = field(
        default="toy2d-flow",
        metadata={
            "help": "a flow model: toy2d-flow, toy2d-flow-exact, digits-flow",
            "ui": {"widget": "dropdown", "label": "Flow model"},
        },
    )
    dataset: str = field(default="ring8", metadata={"help": "toy mixture (toy models only)"})
    train_steps: int | None = field(
        default=None,
        metadata={
            "help": "toy2d-flow and digits-flow: the flow's training steps (the shipped files have 3000 and "
            "4000; fewer give the same run stopped early, deliberately under-trained)",
            "ui": {
                "widget": "number",
                "label": "Training steps of the flow",
                "precision": 0,
                "minimum": 1,
                "info": "3000 (toy) and 4000 (digits) are the shipped models; fewer steps give a deliberately "
                "under-trained flow (trained on first use: ~1 s per 100 steps for the toy, ~5 s for digits).",
            },
        },
    )
    steps: tuple[int, ...] = field(
        default=(8, 16, 32),
        metadata={
            "help": "base sampler step counts K (both lines)",
            "ui": {"widget": "textbox", "label": "Base sampler steps K (both lines)"},
        },
    )
    correction_steps: tuple[int, ...] = field(
        default=(1, 2, 4),
        metadata={
            "help": "Euler steps m of the correction",
            "ui": {"widget": "textbox", "label": "Correction steps m"},
        },
    )
    grid: str | None = field(
        default=None,
        metadata={
            "help": "grid of the base sampler G (default: the domain's; toy linear, digits karras): linear (the grid "
            "pgraft samples on everywhere else), karras or exponential (diffusers' respacings with short last "
            "steps, so that real digits have a preimage)",
            "ui": {
                "widget": "dropdown",
                "label": "Sampler grid",
                "choices": list(FLOW_GRIDS),
                "info": "linear: the usual grid; its long last step has no preimage for most real digits at a tight "
                "tolerance. karras / exponential: short last steps, where almost every digit inverts at K >= 8, "
                "but the base sampler is weaker at small K.",
            },
        },
    )
    reference_grids: tuple[str, ...] | None = field(
        default=None,
        metadata={
            "help": "other grids whose base samplers are scored as reference rows; a corrected sampler's gain at "
            "equal FLOPs is taken against the best base of any grid (default: linear when --grid is not; "
            "'none' for none)",
            "ui": {
                "widget": "checkboxes",
                "label": "Also score the base sampler on",
                "choices": list(FLOW_GRIDS),
            },
        },
    )
    invert: int = field(
        default=2000,
        metadata={
            "help": "real samples to invert (train split for digits)",
            "ui": {"widget": "slider", "label": "Real samples to invert", "minimum": 100, "maximum": 4000, "step": 100},
        },
    )
    samples: int = field(
        default=2000,
        metadata={
            "help": "generated samples scored per table row",
            "ui": {
                "widget": "slider",
                "label": "Samples scored per sampler",
                "minimum": 200,
                "maximum": 8000,
                "step": 100,
            },
        },
    )
    preview: int = field(
        default=256, metadata={"help": "samples drawn from fixed seeds for the base-vs-corrected view"}
    )
    tol: float | None = field(
        default=None,
        metadata={
            "help": "residual tolerance of every backward-Euler step (toy 1e-5; digits 1e-4, 1e-2 on the linear grid)"
        },
    )
    max_iter: int | None = field(
        default=None, metadata={"help": "solver iterations allowed per step (toy 100, digits 400)"}
    )
    solver: str = field(
        default="auto",
        metadata={
            "help": "backward-Euler solver: auto (fixed-point where it contracts, Anderson acceleration for the "
            "rows it has not converged after a few iterations), anderson, fixed-point"
        },
    )
    on_failure: str = field(
        default="drop", metadata={"help": "samples whose inversion does not contract: drop | raise"}
    )
    correction_hidden: int = field(default=64, metadata={"help": "width of the correction MLP"})
    correction_train_steps: int = field(
        default=1000,
        metadata={
            "help": "training steps of each correction flow",
            "ui": {
                "widget": "slider",
                "label": "Correction training steps",
                "minimum": 50,
                "maximum": 4000,
                "step": 50,
                "value": 600,
            },
        },
    )
    search_hidden: tuple[int, ...] = field(
        default=(),
        metadata={
            "help": "correction widths to choose from by validation loss on a held-out fifth of the inverted noises "
            "(with --search-train-steps; empty: --correction-hidden, no search)",
            "ui": {
                "widget": "textbox",
                "label": "Search: correction widths",
                "placeholder": "e.g. 16, 64, 256 (empty: width 64, no search)",
            },
        },
    )
    search_train_steps: tuple[int, ...] = field(
        default=(),
        metadata={
            "help": "correction training steps to choose from by the same validation loss (empty: no search)",
            "ui": {
                "widget": "textbox",
                "label": "Search: correction training steps",
                "placeholder": "e.g. 200, 500, 2000 (empty: the slider's, no search)",
            },
        },
    )
    correction_batch_size: int = field(default=512, metadata={"help": "batch size of correction training"})
    correction_lr: float = field(default=1e-2, metadata={"help": "peak learning rate of correction training"})
    correction_path: str = field(default="trig", metadata={"help": "interpolant of the correction: trig | linear"})
    seed: int = field(
        default=0,
        metadata={
            "help": "seed of data, noises and training",
            "ui": {"widget": "number", "label": "Seed", "precision": 0},
        },
    )
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
        if self.search_hidden:
            _ints("--search-hidden", self.search_hidden, 4, 4096)
        if self.search_train_steps:
            _ints("--search-train-steps", self.search_train_steps, 1, 10**6)
        grids = ", ".join(FLOW_GRIDS)
        if self.grid is not None and self.grid not in FLOW_GRIDS:
            raise ValueError(f"--grid: {self.grid!r} is invalid; allowed: {grids}")
        refs = self.reference_grids
        if refs is not None:
            if tuple(refs) == ("none",):
                object.__setattr__(self, "reference_grids", refs := ())
            if any(g not in FLOW_GRIDS for g in refs) or len(set(refs)) != len(refs) or self.grid in refs:
                raise ValueError(
                    f"--reference-grids: {list(refs)!r} is invalid; allowed: distinct grids among {grids} other "
                    f"than --grid {self.grid!r}, or none"
                )
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
            (
                "--solver",
                self.solver,
                self.solver in ("auto", "anderson", "fixed-point"),
                "auto, anderson, fixed-point",
            ),
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

    def resolved(self, domain: str) -> IncConfig:
        """This config with every unset inversion setting (`tol`, `max_iter`, `grid`, `reference_grids`) taken
        from the domain (`Domain.inc`; `tol` per grid where it says): what a run uses and writes.
        `reference_grids` defaults to `linear` when the grid is another, so that a corrected sampler is compared
        with the usual base sampler too; a reference equal to the grid (the domain's, when none was given) is
        dropped, its rows being the base's."""
        from pgraft.registry import get_domain

        support = get_domain(domain).inc
        if support is None:
            raise ValueError(f"--model: the {domain} domain has no inverse noise correction")
        grid = self.grid if self.grid is not None else support.grid
        refs = self.reference_grids
        if refs is None:
            refs = () if grid == "linear" else ("linear",)
        return replace(
            self,
            tol=self.tol if self.tol is not None else support.tol_by_grid.get(grid, support.tol),
            max_iter=self.max_iter if self.max_iter is not None else support.max_iter,
            grid=grid,
            reference_grids=tuple(g for g in refs if g != grid),  # the domain's grid named as a reference: its rows
        )

    def inversion_options(self) -> tuple[float, int, str]:
        """`(tol, max_iter, grid)` of a `resolved` config (`ValueError` if it was not resolved)."""
        if self.tol is None or self.max_iter is None or self.grid is None:
            raise ValueError("IncConfig.inversion_options: resolve the config first (IncConfig.resolved(domain))")
        return self.tol, self.max_iter, self.grid

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
