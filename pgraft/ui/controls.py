"""The app's control values and what they mean: the run configuration, reward arguments, the cutoff's
noise level, per-domain defaults and teaching presets. No gradio here, so all of it is unit-testable.

Nothing typed in the browser is executed: reward arguments are parsed as numbers or plain words against
the reward's declared parameters, and rewards are chosen from the registry only (`allow_import` is never set).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, fields
from typing import Any

from pgraft.core.process import NoiseProcess
from pgraft.core.sampling import snap_cutoff
from pgraft.graft.config import RunConfig
from pgraft.registry import get_model_spec
from pgraft.rewards import REWARDS, _ensure_builtin, rewards_for

RULE_PARAM = {
    "threshold": "threshold",
    "quantile": "quantile",
    "best-of-n": "n",
    "top-k": "k",
    "dedup-top-k": "k",
    "soft": "beta",
}
DIGIT_PROMPTS = [str(d) for d in range(10)]

# Defaults per domain that give a visible result within seconds on a CPU (measured in bench/bench_app.py).
DOMAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "toy2d": dict(
        samples=1024,
        preview=256,
        num_inference_steps=50,
        finetune_steps=150,
        batch_size=256,
        lr=1e-3,
        rounds=3,
        sampler="ddpm",
        eta=1.0,
    ),
    # Measured: reward "digit-prob" of a 3 rises 0.11 -> 0.38 -> 0.72 in two rounds at about 14 s of CPU per round.
    "digits": dict(
        samples=256,
        preview=12,
        num_inference_steps=25,
        finetune_steps=40,
        batch_size=64,
        lr=2e-3,
        rounds=2,
        sampler="ddpm",
        eta=1.0,
    ),
}
GENERIC_DEFAULTS = DOMAIN_DEFAULTS["digits"]
DOMAIN_REWARD = {"toy2d": "x", "digits": "digit-prob"}  # the reward a model of the domain starts with


@dataclass(frozen=True)
class Controls:
    """Every value the Rounds tab sends, as the browser sends it (numbers may arrive as floats or None)."""

    model: str
    dataset: str
    reward: str
    reward_args: str
    prompts: list[str]
    method: str
    cutoff: float
    rule: str
    threshold: float | None
    quantile: float | None
    n: float | None
    k: float | None
    beta: float | None
    samples: float | None
    rounds: float | None
    finetune_steps: float | None
    lr: float | None
    seed: float | None
    num_inference_steps: float | None
    sampler: str
    eta: float | None
    batch_size: float | None
    preview: float | None
    anchoring: str

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def replace(self, **changes: Any) -> Controls:
        return dataclasses.replace(self, **changes)

    def to_config(self, device: str) -> RunConfig:
        """The validated `RunConfig` (`ValueError` naming the flag otherwise); only the chosen rule's parameter."""
        spec = get_model_spec(self.model)
        param = RULE_PARAM.get(self.rule)
        values: dict[str, Any] = dict(
            model=self.model,
            reward=self.reward,
            reward_args=parse_reward_args(self.reward, self.reward_args),
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
        if spec.domain == "toy2d":
            values["dataset"] = self.dataset
        for name in ("samples", "rounds", "finetune_steps", "seed", "num_inference_steps", "batch_size", "preview"):
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


_WORD = re.compile(r"^[A-Za-z_][\w.-]*$")


def parse_reward_args(reward: str, text: str | None) -> dict[str, Any]:
    """`"px=1, py=-2"` into `{px: 1.0, py: -2.0}`, typed like the reward's declared defaults.

    Only the reward's own parameters are accepted; values are numbers, true/false or plain words.
    """
    params = reward_params(reward)
    out: dict[str, Any] = {}
    for item in re.split(r"[,\n;]", text or ""):
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
        out[key] = _typed(key, raw, params[key])
    return out


def _typed(key: str, raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        if raw.lower() not in ("true", "false"):
            raise ValueError(f"--reward-arg {key}: {raw!r} is invalid; write true or false")
        return raw.lower() == "true"
    if isinstance(default, int):
        return _integer(f"reward-arg {key}", raw)
    if isinstance(default, float):
        return _number(f"reward-arg {key}", raw)
    if not _WORD.match(raw):
        raise ValueError(f"--reward-arg {key}: {raw!r} is invalid; write a plain word or number")
    return raw


def reward_params(reward: str) -> dict[str, Any]:
    """The declared arguments of a registered reward and their defaults ({} for an unknown name)."""
    _ensure_builtin()
    return dict(REWARDS[reward].params) if reward in REWARDS else {}


def format_reward_args(reward: str) -> str:
    """The reward's declared defaults as `key=value, ...` (empty for a reward without arguments)."""
    params = reward_params(reward)
    return ", ".join(f"{k}={v}" for k, v in params.items())


def reward_choices(model: str) -> list[tuple[str, str]]:
    """`(label, name)` of every reward valid for the model's domain, the label carrying its description."""
    domain = get_model_spec(model).domain
    return [(f"{name} — {REWARDS[name].description}", name) for name in rewards_for(domain)]


def default_reward(model: str) -> str | None:
    """The reward a model starts with: one that reads the prompts for a prompted model, else the first."""
    spec = get_model_spec(model)
    names = rewards_for(spec.domain)
    prompted = [n for n in names if REWARDS[n].takes_prompts]
    if spec.conditional and prompted:
        return prompted[0]
    if DOMAIN_REWARD.get(spec.domain) in names:
        return DOMAIN_REWARD[spec.domain]
    return next((n for n in names if not REWARDS[n].takes_prompts), names[0] if names else None)


def domain_defaults(model: str) -> dict[str, Any]:
    return DOMAIN_DEFAULTS.get(get_model_spec(model).domain, GENERIC_DEFAULTS)


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
