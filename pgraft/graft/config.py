"""The run configuration: one dataclass, one help string per field, validated on creation.

The command line flags, the YAML config file and the app's controls all use these names (a flag is the
field name with dashes). Every invalid value raises `ValueError` naming the flag, the value and what is
allowed, before any work starts.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pgraft.core.acceptance import RULE_PARAMS, RULES

METHODS = ("graft", "pgraft")
ANCHORINGS = ("intermediate", "final")
SAMPLERS = ("ddpm", "ddim")
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")  # whole strings only: fullmatch (a `$` matches before "\n")
MAX_SEED = 2**32
LIMITS = {"rounds": 10_000, "finetune_steps": 10_000_000, "num_inference_steps": 100_000, "n": 1_000_000}
"""Upper bounds of values that cost only time: beyond these a value is surely a typo."""
DEFAULT_PREVIEW = 512
BY_MODEL = ("reward", "samples", "rounds", "num_inference_steps", "finetune_steps", "batch_size", "lr", "preview")
"""Fields whose default comes from the model's domain (`Domain.defaults`, `registry.default_reward`): None
until resolved, so `config.yaml` always holds the numbers a run used."""


def _help(text: str, ui: dict[str, Any] | None = None, **kw: Any) -> Any:
    """A field with its CLI help and, for the app's form, its control (`ui`: widget, label, range, ...)."""
    return field(metadata={"help": text, "ui": ui or {}}, **kw)


def _rule_field(name: str) -> Any:
    """A rule's parameter, declared beside its rule (`core.acceptance.RULE_PARAMS`)."""
    param = RULE_PARAMS[name]
    ui = {"widget": param.widget, "label": param.label, "value": param.app_default, "minimum": param.minimum}
    ui.update(maximum=param.maximum, step=param.step, precision=0 if param.kind is int else None)
    return _help(param.help, ui, default=param.default)


@dataclass(frozen=True)
class RunConfig:
    model: str = _help(
        "base model: toy2d, toy2d-exact, or another registered model (see `pgraft models`)",
        {"widget": "dropdown", "label": "Base model"},
        default="toy2d",
    )
    dataset: str = _help(
        "data set of the toy models: ring8 or asymmetric", {"widget": "radio", "label": "Data set"}, default="ring8"
    )
    reward: str = _help(
        "reward name (see `pgraft rewards`) or module:function (default: the model's domain default)",
        {"widget": "dropdown", "label": "Reward"},
        default=None,
    )
    reward_args: dict[str, Any] = _help(
        "reward arguments, e.g. {px: 1.0}; on the CLI --reward-arg px=1.0",
        {
            "widget": "textbox",
            "label": "Reward arguments",
            "placeholder": "key=value, key=value",
            "info": "Numbers or plain words only; nothing typed here is executed.",
        },
        default_factory=dict,
    )
    prompts: list[str] = _help(
        "prompts of a prompted model (e.g. digits 2 5); N samples per prompt",
        {
            "widget": "checkboxes",
            "label": "Prompts",
            "info": "Each prompt gets its own samples; the rule compares a prompt's samples among themselves.",
        },
        default_factory=list,
    )
    method: str = _help(
        "graft (fine-tune at every noise level) or pgraft (only above the cutoff)",
        {
            "widget": "radio",
            "label": "Method",
            "choices": [("GRAFT", "graft"), ("P-GRAFT", "pgraft")],
            "info": "GRAFT fine-tunes at every noise level; P-GRAFT only above the cutoff, handing over to the base.",
        },
        default="graft",
    )
    cutoff: float = _help(
        "P-GRAFT cutoff t_c in (0, 1): fraction of the noise range; snapped to the sampler's grid",
        {
            "widget": "slider",
            "label": "Cutoff t_c (fraction of the noise range)",
            "minimum": 0.05,
            "maximum": 0.95,
            "step": 0.05,
            "value": 0.4,
        },
        default=0.5,
    )
    anchoring: str = _help(
        "P-GRAFT training anchors: intermediate (accepted x_tc) or final (accepted x_0)",
        {
            "widget": "radio",
            "label": "P-GRAFT anchors",
            "choices": ["intermediate", "final"],
            "info": "intermediate: train on the accepted handoff states x_tc (the paper); final: on the accepted x_0.",
        },
        default="intermediate",
    )
    rule: str = _help(
        "acceptance rule: " + ", ".join(RULES), {"widget": "dropdown", "label": "Acceptance rule"}, default="best-of-n"
    )
    threshold: float | None = _rule_field("threshold")
    quantile: float | None = _rule_field("quantile")
    n: int = _rule_field("n")
    k: int | None = _rule_field("k")
    beta: float | None = _rule_field("beta")
    dedup_resolution: float = _help(
        "dedup-top-k on the toy: samples closer than this grid are duplicates", default=0.25
    )
    samples: int = _help(
        "candidates per round (per prompt) (default: the model's domain default)",
        {"widget": "slider", "label": "Samples per round", "minimum": 256, "maximum": 8192, "step": 256},
        default=None,
    )
    rounds: int = _help(
        "rounds of sample -> accept -> fine-tune",
        {"widget": "slider", "label": "Rounds", "minimum": 1, "maximum": 10, "step": 1},
        default=None,
    )
    sampler: str = _help(
        "ddpm (ancestral, eta = 1) or ddim (with --eta)",
        {"widget": "radio", "label": "Sampler (ddpm = ancestral; ddim uses η)", "choices": list(SAMPLERS)},
        default="ddpm",
    )
    eta: float = _help(
        "DDIM eta in [0, 1]; ddpm means eta = 1",
        {"widget": "slider", "label": "DDIM η (0 = deterministic)", "minimum": 0.0, "maximum": 1.0, "step": 0.05},
        default=1.0,
    )
    num_inference_steps: int = _help(
        "sampling steps per sample",
        {"widget": "slider", "label": "Sampling steps", "minimum": 2, "maximum": 200, "step": 1},
        default=None,
    )
    finetune_steps: int = _help(
        "fine-tuning steps per round",
        {"widget": "slider", "label": "Fine-tuning steps", "minimum": 0, "maximum": 1000, "step": 10},
        default=None,
    )
    batch_size: int = _help(
        "fine-tuning batch size",
        {"widget": "slider", "label": "Fine-tuning batch size", "minimum": 16, "maximum": 2048, "step": 16},
        default=None,
    )
    lr: float = _help(
        "fine-tuning learning rate", {"widget": "number", "label": "Learning rate", "minimum": 0}, default=None
    )
    preview: int = _help(
        f"samples (per prompt) drawn from the same seeds every round, for before/after views "
        f"(default: the domain's, else {DEFAULT_PREVIEW} or --samples if fewer)",
        {
            "widget": "slider",
            "label": "Preview samples (same seeds every round)",
            "minimum": 0,
            "maximum": 1024,
            "step": 8,
        },
        default=None,
    )
    seed: int = _help(
        f"seed of everything random in the run, an integer in [0, {MAX_SEED})",
        {"widget": "number", "label": "Seed", "precision": 0},
        default=0,
    )
    device: str = _help("auto, cpu, cuda, cuda:N or mps", default="auto")
    reward_timeout: float | None = _help(
        "seconds a reward may take for one batch before the run stops, naming it (default: no limit)", default=None
    )

    def __post_init__(self) -> None:
        _check_types(self)
        # Frozen: the model's defaults are resolved in place, so config.yaml holds the numbers.
        for name, value in model_defaults(self.model).items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.preview is None:
            object.__setattr__(self, "preview", min(DEFAULT_PREVIEW, self.samples))
        _check_values(self)

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
    def read_yaml(cls, path: Path) -> dict[str, Any]:
        """The options a YAML file sets, by field name (unresolved: the model's defaults are not filled in).

        Plain YAML only: tags (`!!python/...`), aliases (`*name`, which can expand without bound) and
        repeated keys are refused, and so is a file over 1 MB; each error is one line naming `--config`."""
        data = read_plain_yaml(Path(path), "--config")
        if not isinstance(data, dict):
            raise ValueError(f"--config: {str(path)!r} must hold a mapping of option names to values")
        values = {str(k).replace("-", "_"): v for k, v in data.items()}
        unknown = set(values) - set(cls.field_names())
        if unknown:
            raise ValueError(f"--config {path}: unknown keys {sorted(unknown)}; allowed: {cls.field_names()}")
        return values

    @classmethod
    def from_yaml(cls, path: Path) -> RunConfig:
        return cls.from_dict(cls.read_yaml(path), source=f"--config {path}")

    def command_line(self) -> str:
        """The `pgraft run` command that reproduces this configuration (values equal to the model's defaults
        are left out)."""
        default = {f.name: f.default for f in dataclasses.fields(self)} | model_defaults(self.model)
        if default.get("preview") is None and isinstance(self.samples, int):
            default["preview"] = min(DEFAULT_PREVIEW, self.samples)
        parts = ["pgraft run"]
        for name in self.field_names():
            value = getattr(self, name)
            if value == default.get(name) or value is None or value == {} or value == []:
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


def model_defaults(model: str) -> dict[str, Any]:
    """The defaults of the `BY_MODEL` fields for a registered model: its domain's run defaults and reward
    (`ValueError` naming `--model` for an unknown model)."""
    from pgraft.registry import default_reward, domain_of

    if not isinstance(model, str):
        raise ValueError(f"--model: {model!r} is invalid; give the name of a registered model")
    values = domain_of(model).run_defaults()
    values["reward"] = default_reward(model)
    return values


def defaulted_fields(values: dict[str, Any]) -> list[str]:
    """Of the `BY_MODEL` fields, those that `values` leave to the model's defaults (for saying which were used)."""
    return [name for name in BY_MODEL if values.get(name) is None]


_STRINGS = ("model", "dataset", "reward", "method", "anchoring", "rule", "sampler", "device")
_INTEGERS = ("n", "k", "samples", "rounds", "num_inference_steps", "finetune_steps", "batch_size", "preview", "seed")
_NUMBERS = ("cutoff", "threshold", "quantile", "beta", "dedup_resolution", "eta", "lr", "reward_timeout")


def _bad(flag: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"--{flag.replace('_', '-')}: {value!r} is invalid; {allowed}")


def _check_types(config: RunConfig) -> None:
    """Every field has its type (a YAML file can give anything): one error naming the flag otherwise."""
    for name in _STRINGS:
        value = getattr(config, name)
        if value is not None and not isinstance(value, str):
            raise _bad(name, value, "give a name (text)")
    for name in _INTEGERS:
        value = getattr(config, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise _bad(name, value, "give a whole number")
    for name in _NUMBERS:
        value = getattr(config, name)
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            raise _bad(name, value, "give a number")
        if value is not None and not math.isfinite(value):
            raise _bad(name, value, "give a finite number")
    if not isinstance(config.prompts, list) or not all(isinstance(p, str | int) for p in config.prompts):
        raise _bad("prompts", config.prompts, "give a list of prompts (text)")
    object.__setattr__(config, "prompts", [str(p) for p in config.prompts])
    if not isinstance(config.reward_args, dict):
        raise ValueError(f"--reward-arg: {config.reward_args!r} is invalid; give key=value pairs (a mapping in YAML)")
    for key, value in config.reward_args.items():
        if not isinstance(key, str) or not isinstance(value, str | int | float | bool):
            raise ValueError(f"--reward-arg: {key!r}={value!r} is invalid; give a name and a number or a word")


def _check_values(config: RunConfig) -> None:
    """Ranges and the rules' needs, after the model's defaults are in."""
    c = config
    if c.method not in METHODS:
        raise _bad("method", c.method, f"choose one of {list(METHODS)}")
    if c.rule not in RULES:
        raise _bad("rule", c.rule, f"choose one of {list(RULES)}")
    if c.anchoring not in ANCHORINGS:
        raise _bad("anchoring", c.anchoring, f"choose one of {list(ANCHORINGS)}")
    if c.sampler not in SAMPLERS:
        raise _bad("sampler", c.sampler, f"choose one of {list(SAMPLERS)}")
    if not (0.0 < c.cutoff < 1.0):
        raise _bad("cutoff", c.cutoff, "it must lie strictly between 0 and 1")
    if not (0.0 <= c.eta <= 1.0):
        raise _bad("eta", c.eta, "it must lie in [0, 1]")
    for name, low in (
        ("samples", 2),
        ("rounds", 1),
        ("num_inference_steps", 2),
        ("finetune_steps", 0),
        ("batch_size", 1),
        ("preview", 0),
    ):
        value = getattr(c, name)
        if value < low:
            raise _bad(name, value, f"it must be an integer >= {low}")
        if name in LIMITS and value > LIMITS[name]:
            raise _bad(name, value, f"it must be at most {LIMITS[name]:,}")
    if not (c.lr > 0 and c.lr < 1):
        raise _bad("lr", c.lr, "it must lie in (0, 1)")
    if not DEVICE.fullmatch(c.device):
        raise _bad("device", c.device, "use auto, cpu, cuda, cuda:N or mps")
    if not 0 <= c.seed < MAX_SEED:
        raise _bad("seed", c.seed, f"it must be an integer in [0, {MAX_SEED})")
    if c.reward_timeout is not None and not c.reward_timeout > 0:
        raise _bad("reward_timeout", c.reward_timeout, "it must be a number of seconds > 0")
    if c.rule == "threshold" and c.threshold is None:
        raise _bad("threshold", None, "the threshold rule needs --threshold")
    if c.rule == "quantile" and (c.quantile is None or not 0.0 < c.quantile < 1.0):
        raise _bad("quantile", c.quantile, "the quantile rule needs --quantile strictly between 0 and 1")
    if c.rule == "best-of-n":
        if not 2 <= c.n <= LIMITS["n"]:
            raise _bad("n", c.n, f"best-of-n needs 2 <= n <= {LIMITS['n']:,}")
        if c.samples % c.n:
            raise _bad("n", c.n, f"--samples ({c.samples}) must be a multiple of n")
    if c.rule in ("top-k", "dedup-top-k") and (c.k is None or not 1 <= c.k <= c.samples):
        raise _bad("k", c.k, f"top-k needs 1 <= k <= --samples ({c.samples})")
    if c.rule == "soft" and (c.beta is None or not c.beta > 0):
        raise _bad("beta", c.beta, "the soft rule needs a temperature beta > 0")
    if c.dedup_resolution <= 0:
        raise _bad("dedup_resolution", c.dedup_resolution, "it must be > 0")
    if c.preview > c.samples:
        raise _bad("preview", c.preview, f"it must be <= --samples ({c.samples})")


def ignored_options(config: RunConfig) -> list[str]:
    """Values that the run will not use (a different rule's parameter, a cutoff with GRAFT, ...), as
    warnings to show before it starts."""
    from pgraft.registry import get_model_spec

    default = {f.name: f.default for f in dataclasses.fields(config)}
    notes = []
    if config.method == "graft":
        for name in ("cutoff", "anchoring"):
            if getattr(config, name) != default[name]:
                notes.append(f"--{name} {getattr(config, name)} has no effect with --method graft")
    own = RULES[config.rule].param.name
    for name in RULE_PARAMS:
        value = getattr(config, name)
        if name != own and value is not None and value != default[name]:
            notes.append(f"--{name} {value} has no effect with --rule {config.rule} (it uses --{own})")
    if config.sampler == "ddpm" and config.eta != default["eta"]:
        notes.append(f"--eta {config.eta} has no effect with --sampler ddpm (eta = 1); use --sampler ddim")
    if config.rule != "dedup-top-k" and config.dedup_resolution != default["dedup_resolution"]:
        notes.append(f"--dedup-resolution {config.dedup_resolution} has no effect with --rule {config.rule}")
    if config.dataset != default["dataset"] and "dataset" not in get_model_spec(config.model).options:
        notes.append(f"--dataset {config.dataset} has no effect with --model {config.model}")
    return notes


MAX_CONFIG_BYTES = 1_000_000


class _PlainLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` without aliases and with unique keys."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.MarkedYAMLError(
                "while reading the file", None, "aliases (*name) are not allowed", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        for key in keys:
            if keys.count(key) > 1:
                raise yaml.MarkedYAMLError("while reading a mapping", node.start_mark, f"{key!r} is given twice", None)
        return super().construct_mapping(node, deep=deep)


def read_plain_yaml(path: Path, flag: str) -> Any:
    """The data of a small, plain YAML file; every problem is a `ValueError` naming `flag`."""
    shown = repr(str(path))
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ValueError(f"{flag}: cannot read {shown}: {exc.strerror or exc}") from None
    if path.is_dir():
        raise ValueError(f"{flag}: {shown} is a folder; give a YAML file")
    if size > MAX_CONFIG_BYTES:
        raise ValueError(f"{flag}: {shown} is {size:,} bytes; a config file is at most {MAX_CONFIG_BYTES:,}")
    try:
        text = path.read_text(encoding="utf-8")
        return yaml.load(text, Loader=_PlainLoader)
    except UnicodeDecodeError:
        raise ValueError(f"{flag}: {shown} is not a UTF-8 text file") from None
    except OSError as exc:
        raise ValueError(f"{flag}: cannot read {shown}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{flag}: {shown} is not plain YAML{line}: {problem}") from None
