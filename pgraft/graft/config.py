"""The run configuration: one dataclass, one help string per field, validated on creation.

The command line flags, the YAML config file and the app's controls all use these names (a flag is the
field name with dashes). Every invalid value raises `ValueError` naming the flag, the value and what is
allowed, before any work starts.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pgraft.core.acceptance import RULES

METHODS = ("graft", "pgraft")
ANCHORINGS = ("intermediate", "final")
SAMPLERS = ("ddpm", "ddim")
DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
DEFAULT_PREVIEW = 512


def _help(text: str, **kw: Any) -> Any:
    return field(metadata={"help": text}, **kw)


@dataclass(frozen=True)
class RunConfig:
    model: str = _help("base model: toy2d, toy2d-exact, or another registered model", default="toy2d")
    dataset: str = _help("data set of the toy models: ring8 or asymmetric", default="ring8")
    reward: str = _help("reward name (see `pgraft rewards`) or module:function", default="x")
    reward_args: dict[str, Any] = _help(
        "reward arguments, e.g. {px: 1.0}; on the CLI --reward-arg px=1.0", default_factory=dict
    )
    prompts: list[str] = _help(
        "prompts of a prompted model (e.g. digits 2 5); N samples per prompt", default_factory=list
    )
    method: str = _help("graft (fine-tune at every noise level) or pgraft (only above the cutoff)", default="graft")
    cutoff: float = _help(
        "P-GRAFT cutoff t_c in (0, 1): fraction of the noise range; snapped to the sampler's grid",
        default=0.5,
    )
    anchoring: str = _help(
        "P-GRAFT training anchors: intermediate (accepted x_tc) or final (accepted x_0)",
        default="intermediate",
    )
    rule: str = _help("acceptance rule: " + ", ".join(RULES), default="best-of-n")
    threshold: float | None = _help("threshold rule: accept rewards >= this", default=None)
    quantile: float | None = _help("quantile rule: accept rewards >= the batch q-quantile, q in (0, 1)", default=None)
    n: int = _help("best-of-n rule: group size n >= 2", default=4)
    k: int | None = _help("top-k rules: keep the k best of each prompt's samples", default=None)
    beta: float | None = _help("soft rule: temperature beta > 0", default=None)
    dedup_resolution: float = _help(
        "dedup-top-k on the toy: samples closer than this grid are duplicates", default=0.25
    )
    samples: int = _help("candidates per round (per prompt)", default=4096)
    rounds: int = _help("rounds of sample -> accept -> fine-tune", default=3)
    sampler: str = _help("ddpm (ancestral, eta = 1) or ddim (with --eta)", default="ddpm")
    eta: float = _help("DDIM eta in [0, 1]; ddpm means eta = 1", default=1.0)
    num_inference_steps: int = _help("sampling steps per sample", default=100)
    finetune_steps: int = _help("fine-tuning steps per round", default=300)
    batch_size: int = _help("fine-tuning batch size", default=512)
    lr: float = _help("fine-tuning learning rate", default=1e-3)
    preview: int = _help(
        f"samples (per prompt) drawn from the same seeds every round, for before/after views "
        f"(default: {DEFAULT_PREVIEW}, or --samples if fewer)",
        default=None,
    )
    seed: int = _help("seed of everything random in the run", default=0)
    device: str = _help("auto, cpu, cuda, cuda:N or mps", default="auto")

    def __post_init__(self) -> None:
        def bad(flag: str, value: Any, allowed: str) -> ValueError:
            return ValueError(f"--{flag.replace('_', '-')}: {value!r} is invalid; {allowed}")

        if self.preview is None:  # frozen: resolve the default in place, so config.yaml holds the number
            object.__setattr__(
                self,
                "preview",
                min(DEFAULT_PREVIEW, self.samples) if isinstance(self.samples, int) else DEFAULT_PREVIEW,
            )
        if self.method not in METHODS:
            raise bad("method", self.method, f"choose one of {list(METHODS)}")
        if self.rule not in RULES:
            raise bad("rule", self.rule, f"choose one of {list(RULES)}")
        if self.anchoring not in ANCHORINGS:
            raise bad("anchoring", self.anchoring, f"choose one of {list(ANCHORINGS)}")
        if self.sampler not in SAMPLERS:
            raise bad("sampler", self.sampler, f"choose one of {list(SAMPLERS)}")
        if not (0.0 < self.cutoff < 1.0):
            raise bad("cutoff", self.cutoff, "it must lie strictly between 0 and 1")
        if not (0.0 <= self.eta <= 1.0):
            raise bad("eta", self.eta, "it must lie in [0, 1]")
        for name, low in (
            ("samples", 2),
            ("rounds", 1),
            ("num_inference_steps", 2),
            ("finetune_steps", 0),
            ("batch_size", 1),
            ("preview", 0),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise bad(name, value, f"it must be an integer >= {low}")
        if not (self.lr > 0 and self.lr < 1):
            raise bad("lr", self.lr, "it must lie in (0, 1)")
        if not DEVICE.match(self.device):
            raise bad("device", self.device, "use auto, cpu, cuda, cuda:N or mps")
        if self.rule == "threshold" and self.threshold is None:
            raise bad("threshold", None, "the threshold rule needs --threshold")
        if self.rule == "quantile" and (self.quantile is None or not 0.0 < self.quantile < 1.0):
            raise bad("quantile", self.quantile, "the quantile rule needs --quantile strictly between 0 and 1")
        if self.rule == "best-of-n":
            if self.n < 2:
                raise bad("n", self.n, "best-of-n needs n >= 2")
            if self.samples % self.n:
                raise bad("n", self.n, f"--samples ({self.samples}) must be a multiple of n")
        if self.rule in ("top-k", "dedup-top-k") and (self.k is None or not 1 <= self.k <= self.samples):
            raise bad("k", self.k, f"top-k needs 1 <= k <= --samples ({self.samples})")
        if self.rule == "soft" and (self.beta is None or not self.beta > 0):
            raise bad("beta", self.beta, "the soft rule needs a temperature beta > 0")
        if self.dedup_resolution <= 0:
            raise bad("dedup_resolution", self.dedup_resolution, "it must be > 0")
        if self.preview > self.samples:
            raise bad("preview", self.preview, f"it must be <= --samples ({self.samples})")

    @property
    def effective_eta(self) -> float:
        return 1.0 if self.sampler == "ddpm" else self.eta

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> RunConfig:
        unknown = set(data) - set(cls.field_names())
        if unknown:
            raise ValueError(f"{source}: unknown keys {sorted(unknown)}; allowed: {cls.field_names()}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: Path) -> RunConfig:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"--config: {str(path)!r} must hold a mapping of option names to values")
        return cls.from_dict({k.replace("-", "_"): v for k, v in data.items()}, source=f"--config {path}")

    def command_line(self) -> str:
        """The `pgraft run` command that reproduces this configuration."""
        default = RunConfig()
        parts = ["pgraft run"]
        for name in self.field_names():
            value = getattr(self, name)
            if value == getattr(default, name) or value is None:
                continue
            flag = "--" + name.replace("_", "-")
            # Values are shell-quoted, so prompts and paths with spaces survive copy and paste.
            if name == "reward_args":
                parts += [f"--reward-arg {shlex.quote(f'{k}={v}')}" for k, v in value.items()]
            elif name == "prompts":
                parts.append(flag + " " + " ".join(shlex.quote(str(p)) for p in value))
            else:
                parts.append(f"{flag} {shlex.quote(str(value))}")
        return " ".join(parts)
