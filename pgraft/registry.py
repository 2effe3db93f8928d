"""The one lookup by name: domains, their base models and rewards, and the acceptance rules.

Domains register themselves as a whole (`register_domain`): the built-in ones listed in `pgraft.domains`,
then any installed package that declares an entry point in the group `pgraft.domains`. Their models and
rewards land in `MODELS` and `REWARDS`; a single reward can also be added on its own
(`register_reward`, for tests and scripts). Every unknown name raises `ValueError` listing
the choices. Nothing here imports a domain's heavy modules: a `ModelSpec` loads its model when asked.
"""

from __future__ import annotations

import logging
from typing import Any

from pgraft.core.acceptance import RULES, AcceptanceRule, RuleParam, make_rule, rule_param
from pgraft.domains.base import Domain, ModelSpec
from pgraft.rewards import Reward, RewardSpec, SampleView, build_reward, import_reward

LOG = logging.getLogger("pgraft")
ENTRY_POINT_GROUP = "pgraft.domains"

DOMAINS: dict[str, Domain] = {}
MODELS: dict[str, ModelSpec] = {}
REWARDS: dict[str, RewardSpec] = {}


def register_domain(domain: Domain) -> Domain:
    """Add a domain with its models and rewards (a later registration of the same name replaces it).

    Reward names are per domain: two domains may both have `jpeg-compressibility`. `REWARDS` lists every name
    once (the first domain's spec, or one added with `register_reward`); `domain_rewards` is the full view."""
    DOMAINS[domain.name] = domain
    MODELS.update(domain.models)
    for name, spec in domain.rewards.items():
        REWARDS.setdefault(name, spec)
    return domain


def register_reward(name: str, spec: RewardSpec) -> None:
    if spec.domain not in DOMAINS:
        raise ValueError(f"reward {name!r}: unknown domain {spec.domain!r}; register the domain first")
    REWARDS[name] = spec


def load_reward_modules(names: tuple[str, ...] | list[str], flag: str = "--rewards") -> list[str]:
    """Import each module (named by the operator: trusted code, like any module one runs) and register its
    rewards: a module either calls `register_reward` when imported, or defines `REWARDS = {name: RewardSpec}`.
    The working directory is searched last. Returns the names added (`ValueError` naming `flag` when a module
    cannot be imported or adds nothing). The app's and the command line's `--rewards`."""
    import importlib
    import os
    import sys

    here = os.getcwd()
    if here not in sys.path:
        sys.path.append(here)
    added: list[str] = []
    for name in names:
        before = set(REWARDS)
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # any import failure, reported with the module's name
            raise ValueError(f"{flag}: cannot import {name!r}: {type(exc).__name__}: {exc}") from None
        for reward, spec in dict(getattr(module, "REWARDS", {}) or {}).items():
            register_reward(str(reward), spec)
        new = sorted(set(REWARDS) - before) or [r for r in getattr(module, "REWARDS", {}) or {}]
        if not new:
            raise ValueError(
                f"{flag}: module {name!r} registered no reward; define REWARDS = {{name: RewardSpec(...)}} "
                "or call pgraft.registry.register_reward when it is imported"
            )
        added += new
    return added


def _load_domains() -> None:
    from importlib.metadata import entry_points

    from pgraft.domains import builtin_domains

    for domain in builtin_domains():
        register_domain(domain)
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            found = point.load()
        except Exception as exc:  # a broken plug-in must not take the built-in domains down with it
            LOG.warning("pgraft: the domain entry point %r failed to load: %s", point.name, exc)
            continue
        if isinstance(found, Domain):
            register_domain(found)


# --- lookups ---------------------------------------------------------------------------------------------
def get_domain(name: str) -> Domain:
    if name not in DOMAINS:
        raise ValueError(f"domain: unknown {name!r}; choose one of {sorted(DOMAINS)}")
    return DOMAINS[name]


def get_model_spec(name: str) -> ModelSpec:
    """The spec of a registered model, or of one a domain recognises (a pipeline folder as `--model PATH`)."""
    if name in MODELS:
        return MODELS[name]
    if not isinstance(name, str):
        raise ValueError(f"--model: {name!r} is invalid; give a model name or folder")
    for domain in DOMAINS.values():
        if domain.resolve_model is not None:
            spec = domain.resolve_model(name)
            if spec is not None:
                return spec
    raise ValueError(f"--model: unknown {name!r}; choose one of {sorted(MODELS)} or give a diffusers pipeline folder")


def domain_of(model: str) -> Domain:
    """The domain of a registered base model."""
    return get_domain(get_model_spec(model).domain)


def load_model(name: str, device: str = "cpu", **options: Any) -> Any:
    """Load a registered base model; `options` it does not take (e.g. `dataset` for digits) are ignored."""
    spec = get_model_spec(name)
    kwargs = {k: v for k, v in options.items() if k in spec.options and v is not None}
    return spec.loader(device=device, **kwargs)


def default_reward(model: str) -> str:
    """The reward a model starts with: its own (`ModelSpec.default_reward`), else its domain's."""
    spec = get_model_spec(model)
    return spec.default_reward or get_domain(spec.domain).default_reward


def domain_rewards(domain: str) -> dict[str, RewardSpec]:
    """The rewards of a domain by name: those it declares, and those added with `register_reward`."""
    declared = dict(DOMAINS[domain].rewards) if domain in DOMAINS else {}
    return {**declared, **{n: s for n, s in REWARDS.items() if s.domain == domain}}


def reward_spec(name: str, domain: str) -> RewardSpec | None:
    return domain_rewards(domain).get(name)


def rewards_for(domain: str) -> list[str]:
    return sorted(domain_rewards(domain))


def sample_view(domain: str) -> SampleView:
    """What a user reward of `domain` receives."""
    return DOMAINS[domain].sample_view if domain in DOMAINS else SampleView("the model's samples tensor")


def reward_context(model: Any) -> dict[str, Any]:
    """What a reward factory may read of a base model: the model, and its domain's extras."""
    context: dict[str, Any] = {"model": model}
    domain = DOMAINS.get(model.domain)
    if domain is not None and domain.reward_context is not None:
        context.update(domain.reward_context(model))
    return context


def make_reward(
    name: str,
    domain: str,
    args: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    allow_import: bool = False,
) -> Reward:
    """Build a reward by name for a model's domain, or import `module:function` when `allow_import`.

    The app never sets `allow_import`: nothing typed in a browser is imported or executed.
    """
    if ":" in name:
        if not allow_import:
            raise ValueError(
                f"--reward: {name!r} looks like module:function; user rewards are only allowed from the command line"
            )
        return import_reward(name, sample_view(domain))
    spec = reward_spec(name, domain)
    if spec is None:
        other = REWARDS.get(name)
        if other is not None:
            raise ValueError(
                f"--reward: {name!r} is for {other.domain} models, not {domain}; choose one of {rewards_for(domain)}"
            )
        raise ValueError(f"--reward: unknown {name!r}; choose one of {rewards_for(domain)} or give module:function")
    return build_reward(name, spec, domain, args, context)


def presets() -> list[Any]:
    """Every domain's teaching presets, domain after domain."""
    return [p for d in DOMAINS.values() for p in d.presets]


_load_domains()

__all__ = [
    "DOMAINS",
    "MODELS",
    "REWARDS",
    "RULES",
    "AcceptanceRule",
    "Domain",
    "ModelSpec",
    "RuleParam",
    "default_reward",
    "domain_of",
    "domain_rewards",
    "get_domain",
    "get_model_spec",
    "load_model",
    "load_reward_modules",
    "make_reward",
    "make_rule",
    "register_domain",
    "register_reward",
    "reward_context",
    "rewards_for",
    "rule_param",
    "sample_view",
]
