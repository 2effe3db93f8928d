"""Rewards: what a reward is, user rewards as `module:function`, and the checked call that names the reward
when it fails.

A reward maps a batch of final samples (and, for prompted models, their prompts) to one float per
sample, higher is better. Named rewards are declared by domains (`RewardSpec`) and looked up through
`pgraft.registry`. `score` is the only way the engine calls a reward: it turns an exception, a wrong shape
or a non-finite value into a `RewardError` that says which reward failed and how.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

RewardFn = Callable[..., torch.Tensor]


class RewardError(RuntimeError):
    """A reward raised, or returned something other than one finite float per sample."""


@dataclass(frozen=True)
class Reward:
    name: str
    domain: str
    fn: RewardFn
    description: str = ""
    takes_prompts: bool = False

    def __call__(self, x: torch.Tensor, prompts: list[str] | None = None) -> torch.Tensor:
        return self.fn(x, prompts) if self.takes_prompts else self.fn(x)


@dataclass(frozen=True)
class RewardSpec:
    """A named reward: `factory(context, **params)` builds it; `params` lists its arguments and defaults."""

    factory: Callable[..., RewardFn]
    domain: str
    description: str
    params: dict[str, Any] = field(default_factory=dict)
    takes_prompts: bool = False


@dataclass(frozen=True)
class SampleView:
    """What a user reward of a domain is called with: `convert` of the model's samples, described for help."""

    description: str
    convert: Callable[[torch.Tensor], torch.Tensor] | None = None


USER_REWARD = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def build_reward(
    name: str, spec: RewardSpec, domain: str, args: dict[str, Any] | None = None, context: dict[str, Any] | None = None
) -> Reward:
    """The reward `name` of `spec` for a model of `domain`, with its arguments checked against the spec's."""
    args = dict(args or {})
    if spec.domain != domain:
        raise ValueError(f"reward: {name!r} is for {spec.domain} models, not {domain}")
    unknown = set(args) - set(spec.params)
    if unknown:
        raise ValueError(
            f"--reward-arg: {sorted(unknown)} not accepted by reward {name!r}; it takes {sorted(spec.params) or 'none'}"
        )
    params = {k: type(v)(args[k]) if k in args and v is not None else args.get(k, v) for k, v in spec.params.items()}
    fn = spec.factory(context or {}, **params)
    shown = ", ".join(f"{k}={v}" for k, v in params.items())
    return Reward(f"{name}({shown})" if shown else name, domain, fn, spec.description, spec.takes_prompts)


def import_reward(target: str, view: SampleView) -> Reward:
    """A user's `module:function`, called with the domain's sample view (digits: pixels in [0, 1], like the
    built-in image rewards), and with the prompts when it takes a second argument."""
    if not USER_REWARD.match(target):
        raise ValueError(f"reward: {target!r} is not of the form module:function")
    module_name, func_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ValueError(f"reward: cannot import module {module_name!r} for {target!r}: {exc}") from exc
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise ValueError(f"reward: {module_name!r} has no callable {func_name!r}")
    try:
        n_params = len(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        n_params = 1
    convert = view.convert
    if convert is not None:
        user_fn = fn
        fn = (lambda x, prompts: user_fn(convert(x), prompts)) if n_params >= 2 else (lambda x: user_fn(convert(x)))
    return Reward(target, "user", fn, f"user reward {target}", takes_prompts=n_params >= 2)


def score(reward: Reward, x: torch.Tensor, prompts: list[str] | None = None) -> torch.Tensor:
    """Call `reward` and check what it returns: one finite value per sample, as float64 on the CPU."""
    try:
        with torch.inference_mode():
            out = reward(x, prompts)
    except Exception as exc:
        raise RewardError(f"reward {reward.name!r} raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(out, torch.Tensor):
        try:
            out = torch.as_tensor(out)
        except Exception as exc:
            raise RewardError(f"reward {reward.name!r} returned {type(out).__name__}, not a tensor") from exc
    if out.shape != (len(x),):
        raise RewardError(
            f"reward {reward.name!r} returned shape {tuple(out.shape)}; expected ({len(x)},), one value per sample"
        )
    out = out.detach().to("cpu", torch.float64)
    bad = ~torch.isfinite(out)
    if bad.any():
        raise RewardError(
            f"reward {reward.name!r} returned {int(bad.sum())} non-finite values (NaN or inf) of {len(out)}, "
            f"first at sample {int(bad.nonzero()[0])}"
        )
    return out
