"""Everything a run builds from its config before any work: the base model, reward, rule and evaluator.

Building the set-up is where bad input is refused (naming the flag), so a run folder is never created for
a config that cannot run. The app, the command line, the studies and the tests share `build_setup`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from pgraft.core.acceptance import AcceptanceRule, make_rule
from pgraft.core.devices import resolve_device
from pgraft.core.sampling import inference_timesteps, snap_cutoff
from pgraft.domains.base import Evaluator, NoEvaluator
from pgraft.graft.budget import check_memory
from pgraft.graft.config import RunConfig
from pgraft.registry import domain_of, get_model_spec, load_model, make_reward, reward_context
from pgraft.rewards import Reward


@dataclass
class RunSetup:
    """Everything built from a config before any work: building it is where bad input is refused."""

    config: RunConfig
    base: Any
    reward: Reward
    rule: AcceptanceRule
    evaluator: Evaluator
    cutoff_timestep: float | None
    prompts: list[str] = field(default_factory=list)
    cond: torch.Tensor | None = None


def build_setup(
    config: RunConfig, allow_import: bool = False, base: Any | None = None, device: str | None = None
) -> RunSetup:
    """The set-up of `config`; `base` reuses an already loaded base model (the app's shared cache); `device`
    overrides the config's (a rank's own GPU on a multi-GPU launch)."""
    spec = get_model_spec(config.model)
    if spec.conditional and not config.prompts:
        raise ValueError(f"--prompts: the prompted model {config.model!r} needs at least one prompt")
    if not spec.conditional and config.prompts:
        raise ValueError(f"--prompts: {config.model!r} is not a prompted model; leave --prompts out")
    device = device or resolve_device(config.device)
    if base is None:
        options = {name: getattr(config, name) for name in spec.options if hasattr(config, name)}
        base = load_model(config.model, device=device, **options)
    reward = make_reward(
        config.reward, base.domain, config.reward_args, reward_context(base), allow_import=allow_import
    ).with_timeout(config.reward_timeout)
    base.process.check_steps(config.num_inference_steps)
    cut_ts = None
    if config.method == "pgraft":
        k, cut_ts = snap_cutoff(base.process, config.num_inference_steps, config.cutoff)
        if k == 0:
            raise ValueError(
                f"--cutoff: {config.cutoff} leaves no sampling step above it on a "
                f"{config.num_inference_steps}-step grid; lower it"
            )
        if cut_ts is None:
            lowest = inference_timesteps(base.process, config.num_inference_steps)[-1]
            raise ValueError(
                f"--cutoff: {config.cutoff:g} lies below the last sampling step (t = "
                f"{base.process.fraction(float(lowest)):.4g} on the {config.num_inference_steps}-step grid), so "
                "P-GRAFT would run as GRAFT; raise it, or use --method graft"
            )
    check_memory(config, base, device)
    evaluator = make_evaluator(base, reward, make_rule_for(config, None), cut_ts, config, list(config.prompts))
    rule = make_rule_for(config, evaluator.dedup_key(config.dedup_resolution))
    cond = base.encode(config.prompts) if spec.conditional else None
    return RunSetup(config, base, reward, rule, evaluator, cut_ts, list(config.prompts), cond)


def make_evaluator(
    base: Any, reward: Reward, rule: AcceptanceRule, cut_ts: float | None, config: RunConfig, prompts: list[str]
) -> Evaluator:
    """The evaluator of the model's domain for this run (`NoEvaluator` when the domain has none); the run's
    prompts are passed (as `prompts=`) only when there are some."""
    factory = domain_of(config.model).evaluator
    if factory is None:
        return NoEvaluator()
    stochastic = config.effective_eta > 0 and base.process.stochastic_samplers
    extra = {"prompts": list(prompts)} if prompts else {}
    evaluator: Evaluator = factory(base, reward, rule, cut_ts, stochastic, **extra)
    return evaluator


def make_rule_for(config: RunConfig, key: Any) -> AcceptanceRule:
    """The config's acceptance rule; `key` tells the de-duplicating rule which candidates are duplicates."""
    return make_rule(
        config.rule,
        threshold=config.threshold,
        quantile=config.quantile,
        n=config.n,
        k=config.k,
        beta=config.beta,
        group_size=config.samples,
        key=key,
    )
