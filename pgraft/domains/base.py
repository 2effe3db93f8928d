"""What a domain provides to the rest of pgraft: one `Domain` description, registered by name.

A domain (the 2-D toy, digits, later layouts, molecules, text-to-image) is one folder under
`pgraft/domains/` whose `__init__.py` defines `DOMAIN`. Everything that differs between domains is a field
here, so nothing outside `pgraft/domains/` branches on a domain's name:

- its base models (`ModelSpec`) and rewards (`RewardSpec`), what a user reward receives (`SampleView`);
- the defaults a run uses when a flag is not given (`RunDefaults`), the smaller ones the app starts with,
  and those of the bias–variance study (`StudyDefaults`);
- per-round metrics (`Evaluator`), the realism figure a sweep trades the reward against (`Realism`), the
  panels of the per-round curves, the before/after picture, exact references when the domain has them;
- teaching presets, inverse-noise-correction support, and how `pgraft pretrain` rebuilds its shipped files.

Heavy modules (torch models, plots) are imported inside the callables a domain gives, so registering a
domain costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from pgraft.rewards import RewardSpec, SampleView


def asset_dir(package: str) -> Path:
    """The `assets/` folder shipped inside a domain's package (found with `importlib.resources`, so it works
    from a checkout, an editable install and an installed wheel alike)."""
    return Path(str(resources.files(package) / "assets"))


@dataclass(frozen=True)
class ModelSpec:
    """How to load one registered base model, and what it is."""

    loader: Callable[..., Any]
    """`loader(device=..., **options) -> model` (the family adapter, e.g. `families.small.DiffusionModel`)."""
    domain: str
    description: str
    options: tuple[str, ...] = ()
    """`RunConfig` fields the loader takes (e.g. "dataset")."""
    conditional: bool = False
    """Prompted: the model takes `--prompts`."""
    kind: str = "vp"
    """"vp" (DDPM/DDIM) or "flow" (rectified flow): known without loading the weights."""
    default_reward: str | None = None
    """The reward this model starts with, when not its domain's (a prompted model's prompt-following one)."""


@dataclass(frozen=True)
class RunDefaults:
    """The values a run of this domain uses for the flags that are not given (CLI, YAML, the app)."""

    samples: int
    num_inference_steps: int
    finetune_steps: int
    batch_size: int
    lr: float
    rounds: int = 3
    preview: int | None = None
    """None: 512, or `samples` if fewer."""

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class StudyDefaults:
    """Defaults of `pgraft bias-variance` and the app's study tab for this domain."""

    cutoffs: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    states: int = 256
    continuations: int = 8
    num_inference_steps: int | None = None
    """None: the run defaults' sampling steps."""


@dataclass(frozen=True)
class Realism:
    """The per-round metric that says how real the samples still are, for sweeps and scouting."""

    metric: str
    """A column of `metrics.csv`."""
    higher_is_better: bool
    bound: float
    """Default bound on its loss against round 0 when a cutoff is recommended (in the metric's units)."""
    unit: str


@dataclass(frozen=True)
class CurvePanel:
    """One quality panel of the per-round curves: a title and `(metrics.csv column, legend label)` pairs."""

    title: str
    metrics: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Preset:
    """A teaching scenario of the app: a note and the control values it sets (only what differs from the
    model's domain defaults)."""

    name: str
    note: str
    values: dict[str, Any] = field(default_factory=dict)


class Evaluator(Protocol):
    """Per-run metrics of a domain, asked for every round's samples (shown next to the reward so reward
    hacking and collapse are visible). It may also render files into the round folder
    (`round_artifacts(result) -> {name: bytes}`) and carry exact references for the domain's pictures."""

    def round_metrics(self, round_index: int, samples: Any, rewards: Any) -> dict[str, float]: ...

    def dedup_key(self, resolution: float) -> Callable[[Any], Sequence[Hashable]]: ...


class NoEvaluator:
    """For domains without metrics of their own: only the reward statistics are reported; duplicates are
    samples with identical bytes."""

    def round_metrics(self, round_index: int, samples: Any, rewards: Any) -> dict[str, float]:
        return {}

    def dedup_key(self, resolution: float) -> Callable[[Any], Sequence[Hashable]]:
        return lambda x: [bytes(row.numpy().tobytes()) for row in x.detach().cpu().contiguous()]


@dataclass(frozen=True)
class IncSupport:
    """Inverse noise correction on this domain's flow models (docs/method.md §4)."""

    quality: Callable[[Any, int], Any]
    """`quality(model, seed) -> inc.quality.Quality`: real data to invert and the judge of samples."""
    tol: float
    max_iter: int
    """Default residual tolerance and fixed-point iterations of every backward-Euler step."""
    samples_figure: Callable[[Any, Any, str], Any]
    """`(base samples, corrected samples, title) -> figure`, both drawn from the same seeds."""
    preview: int = 256
    grid: str = "linear"
    """Default grid of the sampler that is inverted and corrected (`core.process.FLOW_GRIDS`)."""
    tol_by_grid: Mapping[str, float] = field(default_factory=dict)
    """The default tolerance on grids where it differs from `tol`."""
    app_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per flow model, the app's starting values (steps, correction_steps, train_steps, invert)."""


@dataclass(frozen=True)
class Pretrainer:
    """`pgraft pretrain NAME`: rebuilds a shipped file from its seed.

    `run(out, steps, seed, options) -> Path`; `options` holds the pretrain command's other flags
    (`dataset`, `size`, `eval_samples`), of which each pretrainer reads its own."""

    run: Callable[[Path | None, int | None, int, dict[str, Any]], Path]
    help: str


@dataclass(frozen=True)
class Domain:
    """Everything pgraft needs to know about one kind of data (see the module docstring)."""

    name: str
    description: str
    models: Mapping[str, ModelSpec]
    rewards: Mapping[str, RewardSpec]
    default_reward: str
    defaults: RunDefaults
    app_defaults: Mapping[str, Any] = field(default_factory=dict)
    """Overrides of `defaults` that keep an app round interactive (the app starts with these)."""
    sample_view: SampleView = field(default_factory=lambda: SampleView("the model's samples tensor"))
    reward_context: Callable[[Any], dict[str, Any]] | None = None
    """Extra context for the reward factories of a base model (e.g. the toy's mixture)."""
    evaluator: Callable[..., Evaluator] | None = None
    """`evaluator(model, reward, rule, cutoff_timestep, stochastic_continuation, prompts=None)` for one run
    (`cutoff_timestep` None for GRAFT); None: `NoEvaluator`."""
    realism: Realism | None = None
    curve_panels: tuple[CurvePanel, ...] = ()
    samples_figure: Callable[[Any, Any, Any], Any] | None = None
    """`(first round, latest round, evaluator) -> figure`: the before/after picture from the same seeds
    (None: the generic image grids for image-shaped samples)."""
    datasets: tuple[str, ...] = ()
    """Choices of the `--dataset` option of its models (empty: none)."""
    prompt_choices: tuple[str, ...] = ()
    """Prompts the app offers for its prompted models."""
    presets: tuple[Preset, ...] = ()
    study: StudyDefaults = field(default_factory=StudyDefaults)
    exact_curves: Callable[..., Any] | None = None
    """`exact_curves(model, reward, rule, timesteps, rounds) -> DataFrame`: the exact bias–variance curves of
    a base model, where the domain has a closed form (the toy's mixture)."""
    inc: IncSupport | None = None
    pretrain: Mapping[str, Pretrainer] = field(default_factory=dict)
    resolve_model: Callable[[str], ModelSpec | None] | None = None
    """Models that are not registered by name: `resolve_model(name)` gives a spec for a name the domain
    recognises (a pipeline folder for text-to-image), None otherwise."""

    def __post_init__(self) -> None:
        for name, spec in self.models.items():
            if spec.domain != self.name:
                raise ValueError(f"domain {self.name!r}: model {name!r} says it belongs to {spec.domain!r}")
        for name, reward in self.rewards.items():
            if reward.domain != self.name:
                raise ValueError(f"domain {self.name!r}: reward {name!r} says it belongs to {reward.domain!r}")
        if self.default_reward not in self.rewards:
            raise ValueError(f"domain {self.name!r}: default reward {self.default_reward!r} is not one of its rewards")
        unknown = set(self.app_defaults) - set(RunDefaults.__dataclass_fields__)
        if unknown:
            raise ValueError(f"domain {self.name!r}: app_defaults has unknown keys {sorted(unknown)}")

    def run_defaults(self, app: bool = False) -> dict[str, Any]:
        """The defaults of a run (CLI and YAML), or the app's (the same, with `app_defaults` applied)."""
        values = self.defaults.as_dict()
        if app:
            values.update(self.app_defaults)
        return values
