"""Validation of a `RunConfig`: types first (a YAML file can give anything), then ranges and each rule's needs,
and the options a run would not use. Every error is a `ValueError` naming the flag, the value and what is
allowed."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from pgraft.core.acceptance import RULE_PARAMS, RULES

METHODS = ("graft", "pgraft", "ddpo", "bon-sampling")
ANCHORINGS = ("intermediate", "final")
SAMPLERS = ("ddpm", "ddim")
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")  # whole strings only: fullmatch (a `$` matches before "\n")
MAX_SEED = 2**32
LIMITS = {"rounds": 10_000, "finetune_steps": 10_000_000, "num_inference_steps": 100_000, "n": 1_000_000}
"""Upper bounds of values that cost only time: beyond these a value is surely a typo."""

_STRINGS = (
    "model",
    "dataset",
    "reward",
    "method",
    "anchoring",
    "rule",
    "sampler",
    "device",
    "prompt_file",
    "negative_prompt",
    "dtype",
)
_INTEGERS = (
    "n",
    "k",
    "samples",
    "rounds",
    "num_inference_steps",
    "finetune_steps",
    "batch_size",
    "preview",
    "seed",
    "height",
    "width",
    "lora_rank",
    "ddpo_inner_epochs",
    "ddpo_batch_size",
    "ddpo_accumulation",
)
_NUMBERS = (
    "cutoff",
    "threshold",
    "quantile",
    "beta",
    "dedup_resolution",
    "eta",
    "lr",
    "reward_timeout",
    "guidance_scale",
    "true_cfg_scale",
    "lora_alpha",
    "ddpo_clip_range",
    "ddpo_adv_clip",
    "ddpo_timestep_fraction",
    "ddpo_lr",
)
DTYPES = ("auto", "fp32", "bf16", "fp16")
MAX_PROMPTS = 10_000


def _bad(flag: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"--{flag.replace('_', '-')}: {value!r} is invalid; {allowed}")


def check_types(config: Any) -> None:
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
    if not isinstance(config.lora_targets, list) or not all(isinstance(m, str) and m for m in config.lora_targets):
        raise _bad("lora_targets", config.lora_targets, "give a list of module names (e.g. to_q to_k)")
    if not isinstance(config.reward_args, dict):
        raise ValueError(f"--reward-arg: {config.reward_args!r} is invalid; give key=value pairs (a mapping in YAML)")
    for key, value in config.reward_args.items():
        if not isinstance(key, str) or not isinstance(value, str | int | float | bool):
            raise ValueError(f"--reward-arg: {key!r}={value!r} is invalid; give a name and a number or a word")


def check_values(config: Any) -> None:
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
    if c.method == "ddpo":
        if (1.0 if c.sampler == "ddpm" else c.eta) <= 0:
            raise _bad("eta", c.eta, "--method ddpo needs a stochastic sampler: --sampler ddpm, or --eta > 0")
        for name, ok, allowed in (
            ("ddpo_clip_range", c.ddpo_clip_range >= 0, "a number >= 0"),
            ("ddpo_adv_clip", c.ddpo_adv_clip > 0, "a number > 0"),
            ("ddpo_timestep_fraction", 0 < c.ddpo_timestep_fraction <= 1, "a fraction in (0, 1]"),
            ("ddpo_inner_epochs", 1 <= c.ddpo_inner_epochs <= 1000, "an integer in 1..1000"),
            ("ddpo_batch_size", c.ddpo_batch_size is None or c.ddpo_batch_size >= 1, "an integer >= 1"),
            ("ddpo_accumulation", 1 <= c.ddpo_accumulation <= 10_000, "an integer in 1..10000"),
            ("ddpo_lr", 0 < c.ddpo_lr < 1, "a number in (0, 1)"),
        ):
            if not ok:
                raise _bad(name, getattr(c, name), f"it must be {allowed}")
    if c.method == "bon-sampling" and c.rule != "best-of-n":
        raise _bad("rule", c.rule, "--method bon-sampling keeps the best of --n draws: use --rule best-of-n")
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
    if c.dtype not in DTYPES:
        raise _bad("dtype", c.dtype, f"choose one of {list(DTYPES)}")
    if c.guidance_scale is not None and not 0 <= c.guidance_scale <= 100:
        raise _bad("guidance_scale", c.guidance_scale, "it must lie in [0, 100] (1: no guidance)")
    if not 1 <= c.true_cfg_scale <= 100:
        raise _bad("true_cfg_scale", c.true_cfg_scale, "it must lie in [1, 100] (1: off)")
    for name in ("height", "width"):
        value = getattr(c, name)
        if value is not None and not 8 <= value <= 4096:
            raise _bad(name, value, "it must be a number of pixels in [8, 4096]")
    if not 1 <= c.lora_rank <= 1024:
        raise _bad("lora_rank", c.lora_rank, "it must be an integer in [1, 1024]")
    if c.lora_alpha is not None and not c.lora_alpha > 0:
        raise _bad("lora_alpha", c.lora_alpha, "it must be > 0")
    if len(c.prompts) > MAX_PROMPTS:
        raise _bad("prompts", f"{len(c.prompts)} prompts", f"give at most {MAX_PROMPTS:,}")
    if any(not p.strip() for p in c.prompts):
        raise _bad("prompts", c.prompts, "every prompt must have text")
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


def ignored_options(config: Any) -> list[str]:
    """Values that the run will not use (a different rule's parameter, a cutoff with GRAFT, ...), as
    warnings to show before it starts."""
    from pgraft.registry import get_model_spec

    default = {f.name: f.default for f in dataclasses.fields(config)}
    notes = []
    if config.method != "ddpo":
        for f in dataclasses.fields(config):
            if f.name.startswith("ddpo_") and getattr(config, f.name) != default[f.name]:
                shown = f"--{f.name.replace('_', '-')} {getattr(config, f.name)}"
                notes.append(f"{shown} has no effect with --method {config.method}")
    if config.method == "bon-sampling":
        notes.append("--method bon-sampling trains nothing: each round delivers the best of --n fresh base draws")
    if config.method != "pgraft":
        for name in ("cutoff", "anchoring"):
            if getattr(config, name) != default[name]:
                notes.append(f"--{name} {getattr(config, name)} has no effect with --method {config.method}")
    own = RULES[config.rule].param.name
    for name in RULE_PARAMS:
        value = getattr(config, name)
        if name != own and value is not None and value != default[name]:
            notes.append(f"--{name} {value} has no effect with --rule {config.rule} (it uses --{own})")
    if config.sampler == "ddpm" and config.eta != default["eta"]:
        notes.append(f"--eta {config.eta} has no effect with --sampler ddpm (eta = 1); use --sampler ddim")
    if config.rule != "dedup-top-k" and config.dedup_resolution != default["dedup_resolution"]:
        notes.append(f"--dedup-resolution {config.dedup_resolution} has no effect with --rule {config.rule}")
    options = get_model_spec(config.model).options
    pipeline_fields = ("negative_prompt", "guidance_scale", "true_cfg_scale", "height", "width", "dtype")
    for name in ("dataset", *pipeline_fields, "lora_rank", "lora_alpha"):
        value = getattr(config, name)
        if value != default[name] and name not in options:
            notes.append(f"--{name.replace('_', '-')} {value} has no effect with --model {config.model}")
    if config.lora_targets and "lora_targets" not in options:
        notes.append(f"--lora-targets has no effect with --model {config.model}")
    return notes


def read_prompt_file(path: str) -> list[str]:
    """The prompts of a file, one a line (blank lines skipped): `ValueError` naming `--prompt-file` otherwise."""
    from pathlib import Path

    file = Path(path).expanduser()
    shown = repr(path)
    if not file.is_file():
        raise ValueError(f"--prompt-file: {shown} is not a file")
    if file.stat().st_size > 1_000_000:
        raise ValueError(f"--prompt-file: {shown} is over 1 MB; give at most {MAX_PROMPTS:,} prompts")
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"--prompt-file: {shown} is not a UTF-8 text file") from None
    except OSError as exc:
        raise ValueError(f"--prompt-file: cannot read {shown}: {exc.strerror or exc}") from None
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise ValueError(f"--prompt-file: {shown} holds no prompt (one a line)")
    if len(prompts) > MAX_PROMPTS:
        raise ValueError(f"--prompt-file: {shown} holds {len(prompts):,} prompts; give at most {MAX_PROMPTS:,}")
    return prompts
