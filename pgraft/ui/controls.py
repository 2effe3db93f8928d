"""The app's control values and what they mean: the run configuration, reward arguments, the cutoff's
noise level, per-domain defaults and teaching presets. No gradio here, so all of it is unit-testable.

Nothing typed in the browser is executed: reward arguments are parsed as numbers, plain words or, for the
arguments a reward declares as `notations`, a SMILES or SMARTS that only RDKit reads, against the reward's
declared parameters; rewards are chosen from the registry only (`allow_import` is never set).
"""

from __future__ import annotations

import math
import re
from typing import Any

from pgraft.core.acceptance import RULES
from pgraft.core.process import NoiseProcess
from pgraft.core.sampling import snap_cutoff
from pgraft.graft.config import DEFAULT_PREVIEW, RunConfig
from pgraft.registry import REWARDS, default_reward, domain_of, domain_rewards, get_model_spec, reward_spec

__all__ = ["Controls", "default_reward", "describe_cutoff", "domain_defaults", "parse_reward_args"]

RULE_PARAM = {name: rule.param.name for name, rule in RULES.items()}
"""The `RunConfig` field of each rule's parameter (declared beside the rule)."""
CONTROL_FIELDS = (
    "model",
    "dataset",
    "reward",
    "reward_args",
    "prompts",
    "method",
    "cutoff",
    "rule",
    "threshold",
    "quantile",
    "n",
    "k",
    "beta",
    "samples",
    "rounds",
    "finetune_steps",
    "lr",
    "seed",
    "num_inference_steps",
    "sampler",
    "eta",
    "batch_size",
    "preview",
    "anchoring",
)
"""The `RunConfig` fields the Rounds tab has a control for, in the order of the `/run` API's parameters."""
INTEGERS = ("samples", "rounds", "finetune_steps", "seed", "num_inference_steps", "batch_size", "preview")


class Controls:
    """Every value the Rounds tab sends, as the browser sends it (numbers may arrive as floats or None), by
    `CONTROL_FIELDS` name: positionally in that order or by name."""

    def __init__(self, *values: Any, **named: Any) -> None:
        if len(values) > len(CONTROL_FIELDS):
            raise TypeError(f"Controls: {len(values)} values for {len(CONTROL_FIELDS)} controls")
        data = dict(zip(CONTROL_FIELDS, values))
        unknown = set(named) - set(CONTROL_FIELDS)
        if unknown:
            raise TypeError(f"Controls: unknown controls {sorted(unknown)}")
        data.update(named)
        missing = [n for n in CONTROL_FIELDS if n not in data]
        if missing:
            raise TypeError(f"Controls: missing {missing}")
        self._values = data

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("_values", {})
        if name in values:
            return values[name]
        raise AttributeError(name)

    @classmethod
    def names(cls) -> list[str]:
        return list(CONTROL_FIELDS)

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def replace(self, **changes: Any) -> Controls:
        return Controls(**{**self._values, **changes})

    def to_config(self, device: str) -> RunConfig:
        """The validated `RunConfig` (`ValueError` naming the flag otherwise); only the chosen rule's parameter."""
        spec = get_model_spec(self.model)
        param = RULE_PARAM.get(self.rule)
        values: dict[str, Any] = dict(
            model=self.model,
            reward=self.reward,
            reward_args=parse_reward_args(self.reward, self.reward_args, self.model),
            prompts=[str(p) for p in (self.prompts or [])] if spec.conditional else [],
            method=self.method,
            cutoff=_number("cutoff", self.cutoff) if self.method == "pgraft" else RunConfig.cutoff,
            anchoring=self.anchoring if self.method == "pgraft" else RunConfig.anchoring,
            rule=self.rule,
            sampler=self.sampler,
            eta=_number("eta", self.eta),
            lr=_number("lr", self.lr),
            device=device,
        )
        if "dataset" in spec.options:
            values["dataset"] = self.dataset
        for name in INTEGERS:
            values[name] = _integer(name, getattr(self, name))
        if param in ("n", "k"):
            values[param] = _integer(param, getattr(self, param))
        elif param is not None:
            values[param] = _number(param, getattr(self, param))
        return RunConfig(**values)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _number(name: str, value: Any) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{_flag(name)}: {value!r} is invalid; enter a number") from None
    if not math.isfinite(x):
        raise ValueError(f"{_flag(name)}: {value!r} is invalid; enter a finite number")
    return x


def _integer(name: str, value: Any) -> int:
    x = _number(name, value)
    if not x.is_integer():
        raise ValueError(f"{_flag(name)}: {value!r} is invalid; enter a whole number")
    return int(x)


_WORD = re.compile(r"^(?:[A-Za-z_][\w.-]*|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)$")
"""A text argument: a plain word or a number (kept as text: the reward reads it)."""
_NOTATION = re.compile(r"^[A-Za-z0-9@+\-\[\]()=#$:./\\%*~&!,;>]{1,500}$")
"""A SMILES or SMARTS (`RewardSpec.notations`): its characters only, no spaces or quotes, at most 500."""
_SPLIT = re.compile(r"\n|[,;](?=\s*[A-Za-z_]\w*\s*=(?!=))")
"""Between arguments: a newline, or a comma or semicolon followed by the next `key=` (a SMARTS keeps its own
`[C,N]` and `[c;R]`)."""


def parse_reward_args(reward: str, text: str | None, model: str | None = None) -> dict[str, Any]:
    """`"px=1, py=-2"` into `{px: 1.0, py: -2.0}`, typed like the reward's declared defaults.

    Only the reward's own parameters are accepted; values are numbers, true/false, plain words, or for the
    reward's `notations` a SMILES or SMARTS.
    """
    spec = _spec_of(reward, model)
    params, notations = (dict(spec.params), spec.notations) if spec is not None else ({}, ())
    out: dict[str, Any] = {}
    for item in _SPLIT.split(text or ""):
        if not item.strip():
            continue
        key, sep, raw = (s.strip() for s in item.partition("="))
        if not sep or not key:
            raise ValueError(
                f"--reward-arg: {item.strip()!r} is invalid; write key=value, e.g. {format_reward_args(reward)}"
            )
        if key not in params:
            raise ValueError(
                f"--reward-arg: {key!r} is not an argument of reward {reward!r}; it takes {sorted(params) or 'none'}"
            )
        out[key] = _typed(key, raw, params[key], key in notations)
    return out


def _typed(key: str, raw: str, default: Any, notation: bool = False) -> Any:
    if isinstance(default, bool):
        if raw.lower() not in ("true", "false"):
            raise ValueError(f"--reward-arg {key}: {raw!r} is invalid; write true or false")
        return raw.lower() == "true"
    if isinstance(default, int):
        return _integer(f"reward-arg {key}", raw)
    if isinstance(default, float):
        return _number(f"reward-arg {key}", raw)
    if notation:
        if not _NOTATION.fullmatch(raw):
            raise ValueError(
                f"--reward-arg {key}: {raw!r} is invalid; write a SMILES or SMARTS (its characters only, no spaces, "
                "at most 500)"
            )
        return raw
    if not _WORD.fullmatch(raw):
        raise ValueError(f"--reward-arg {key}: {raw!r} is invalid; write a plain word or number")
    return raw


def reward_params(reward: str, model: str | None = None) -> dict[str, Any]:
    """The declared arguments of a reward (of the model's domain, when given) and their defaults ({} for an
    unknown name)."""
    spec = _spec_of(reward, model)
    return dict(spec.params) if spec is not None else {}


def _spec_of(reward: str, model: str | None) -> Any:
    """The reward's spec (of the model's domain, when given), or None for an unknown name."""
    return reward_spec(reward, get_model_spec(model).domain) if model is not None else REWARDS.get(reward)


def format_reward_args(reward: str) -> str:
    """The reward's declared defaults as `key=value, ...` (empty for a reward without arguments)."""
    params = reward_params(reward)
    return ", ".join(f"{k}={v}" for k, v in params.items())


def reward_choices(model: str) -> list[tuple[str, str]]:
    """`(label, name)` of every reward valid for the model's domain, the label carrying its description."""
    domain = get_model_spec(model).domain
    specs = domain_rewards(domain)
    return [(f"{name} — {specs[name].description}", name) for name in sorted(specs)]


def domain_defaults(model: str) -> dict[str, Any]:
    """The values the app's controls take for a model: its domain's run defaults with the app's overrides,
    and the sampler's defaults."""
    values = {**domain_of(model).run_defaults(app=True), "sampler": RunConfig.sampler, "eta": RunConfig.eta}
    values.setdefault("preview", min(DEFAULT_PREVIEW, int(values["samples"])))
    return values


def describe_cutoff(process: NoiseProcess, num_inference_steps: int, cutoff: float) -> str:
    """What the cutoff means on this model's grid: steps on each side of the handoff and its noise level σ."""
    k, timestep = snap_cutoff(process, num_inference_steps, cutoff)
    if timestep is None or k >= num_inference_steps:
        return f"**t_c = {cutoff:.2f}**: below the last sampling step, so P-GRAFT equals GRAFT here."
    if k == 0:
        return f"**t_c = {cutoff:.2f}**: above every sampling step; nothing would be fine-tuned. Lower it."
    sigma = process.noise_to_signal(timestep)
    return (
        f"**t_c = {cutoff:.2f} → noise level σ = {sigma:.2f}** (σ_t/a_t at timestep {timestep:g}). "
        f"The fine-tuned model runs the first {k} of {num_inference_steps} steps, the base model the last "
        f"{num_inference_steps - k}: detail finer than about σ is left to the base."
    )
