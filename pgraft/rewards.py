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
import math
import os
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
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
    timeout: float | None = None
    """Seconds one call may take (`--reward-timeout`); `score` enforces it wherever the reward is called."""
    args: dict[str, Any] = field(default_factory=dict)
    """The arguments it was built with (evaluators may read them, e.g. the feature model of a reward)."""

    def __call__(self, x: torch.Tensor, prompts: list[str] | None = None) -> torch.Tensor:
        return self.fn(x, prompts) if self.takes_prompts else self.fn(x)

    def with_timeout(self, timeout: float | None) -> Reward:
        return replace(self, timeout=timeout)


@dataclass(frozen=True)
class RewardSpec:
    """A named reward: `factory(context, **params)` builds it; `params` lists its arguments and defaults."""

    factory: Callable[..., RewardFn]
    domain: str
    description: str
    params: dict[str, Any] = field(default_factory=dict)
    takes_prompts: bool = False
    paths: tuple[str, ...] = ()
    """Parameters that name local files or folders (a model folder): the app offers only what it found."""
    notations: tuple[str, ...] = ()
    """Parameters whose value is a line notation (a SMILES, a SMARTS) that only the reward's parser reads: the
    app accepts that notation's characters for them, where other text parameters take plain words."""


@dataclass(frozen=True)
class SampleView:
    """What a user reward of a domain is called with: `convert` of the model's samples, described for help."""

    description: str
    convert: Callable[[torch.Tensor], torch.Tensor] | None = None
    arguments: int = 1
    """How many tensors `convert` returns (as a tuple when more than one); a user reward takes them as that
    many positional arguments (layouts: boxes and labels), then the prompts if it has one more."""


USER_REWARD = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def build_reward(
    name: str, spec: RewardSpec, domain: str, args: dict[str, Any] | None = None, context: dict[str, Any] | None = None
) -> Reward:
    """The reward `name` of `spec` for a model of `domain`, with its arguments checked against the spec's."""
    args = dict(args or {})
    if spec.domain != domain:
        raise ValueError(f"--reward: {name!r} is for {spec.domain} models, not {domain}")
    unknown = set(args) - set(spec.params)
    if unknown:
        raise ValueError(
            f"--reward-arg: {sorted(unknown)} not accepted by reward {name!r}; it takes {sorted(spec.params) or 'none'}"
        )
    params = {k: _typed(name, k, args[k], v) if k in args else v for k, v in spec.params.items()}
    fn = spec.factory(context or {}, **params)
    shown = ", ".join(f"{k}={v}" for k, v in params.items())
    return Reward(
        f"{name}({shown})" if shown else name, domain, fn, spec.description, spec.takes_prompts, args=dict(params)
    )


def _typed(reward: str, key: str, value: Any, default: Any) -> Any:
    """A reward argument converted to its declared default's type (`ValueError` naming `--reward-arg`)."""
    if default is None:
        return value
    kind = type(default)
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if str(value).strip().lower() in ("true", "false"):
                return str(value).strip().lower() == "true"
            raise ValueError
        if kind is int and isinstance(value, float | bool):
            raise ValueError
        converted = kind(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"--reward-arg {key}: {value!r} is invalid for reward {reward!r}; give {kind.__name__} "
            f"(its default is {default!r})"
        ) from None
    if isinstance(converted, float) and not math.isfinite(converted):
        raise ValueError(f"--reward-arg {key}: {value!r} is invalid for reward {reward!r}; give a finite number")
    return converted


def import_reward(target: str, view: SampleView) -> Reward:
    """A user's `module:function`, called with the domain's sample view (digits: pixels in [0, 1], like the
    built-in image rewards), and with the prompts when it takes a second argument."""
    if not USER_REWARD.match(target):
        raise ValueError(f"--reward: {target!r} is not of the form module:function")
    module_name, func_name = target.split(":")
    # The working directory is searched last, and only now that a user reward is asked for: a `yaml.py` there
    # never shadows an installed module.
    here = os.getcwd()
    if here not in sys.path:
        sys.path.append(here)
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:
        raise ValueError(f"--reward: cannot import module {module_name!r} for {target!r}: {exc}") from exc
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise ValueError(f"--reward: {module_name!r} has no callable {func_name!r}")
    try:
        n_params = len(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        n_params = 1
    convert, arity = view.convert, view.arguments
    if convert is not None and arity > 1:
        spread_fn = fn

        def spread(x: torch.Tensor, prompts: list[str] | None = None) -> Any:
            args = tuple(convert(x))  # type: ignore[arg-type]
            return spread_fn(*args, prompts) if n_params > arity else spread_fn(*args)

        return Reward(target, "user", spread, f"user reward {target}", takes_prompts=n_params > arity)
    if convert is not None:
        user_fn = fn
        fn = (lambda x, prompts: user_fn(convert(x), prompts)) if n_params >= 2 else (lambda x: user_fn(convert(x)))
    return Reward(target, "user", fn, f"user reward {target}", takes_prompts=n_params >= 2)


def score(
    reward: Reward, x: torch.Tensor, prompts: list[str] | None = None, timeout: float | None = None
) -> torch.Tensor:
    """Call `reward` and check what it returns: one finite real value per sample, as float64 on the CPU.

    The reward gets a copy of the samples, so one that writes into its input cannot change what the run
    stores. Whatever goes wrong (an exception, `sys.exit`, a wrong shape or type, complex or non-finite
    values, a tensor without data, more than `timeout` seconds) becomes a `RewardError` naming the reward; a
    Ctrl-C while it runs says which reward was running.
    """
    x = x.detach().clone()
    timeout = reward.timeout if timeout is None else timeout
    try:
        out = _call(reward, x, prompts, timeout)
    except RewardError:
        raise
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"while reward {reward.name!r} ran") from None
    except SystemExit as exc:
        raise RewardError(f"reward {reward.name!r} called sys.exit({exc.code!r})") from None
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
    if out.is_complex():
        raise RewardError(f"reward {reward.name!r} returned complex values; a reward is one real number per sample")
    if out.dtype == torch.bool:
        out = out.to(torch.float64)
    try:
        out = out.detach().to("cpu", torch.float64)
    except Exception as exc:  # e.g. a tensor on the meta device holds no values
        raise RewardError(
            f"reward {reward.name!r} returned a tensor whose values cannot be read ({out.device}): {exc}"
        ) from None
    bad = ~torch.isfinite(out)
    if bad.any():
        raise RewardError(
            f"reward {reward.name!r} returned {int(bad.sum())} non-finite values (NaN or inf) of {len(out)}, "
            f"first at sample {int(bad.nonzero()[0])}"
        )
    return out


def _call(reward: Reward, x: torch.Tensor, prompts: list[str] | None, timeout: float | None) -> Any:
    """The reward's output; with a timeout it runs in a daemon thread that is abandoned if it overruns."""
    if timeout is None:
        with torch.inference_mode():
            return reward(x, prompts)
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            with torch.inference_mode():
                box["out"] = reward(x, prompts)
        except BaseException as exc:  # handed back to the caller's thread below
            box["error"] = exc

    thread = threading.Thread(target=work, name=f"pgraft-reward-{reward.name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise RewardError(
            f"reward {reward.name!r} did not return within {timeout:g} s (--reward-timeout); the run stops here"
        )
    if "error" in box:
        raise box["error"]
    return box.get("out")
