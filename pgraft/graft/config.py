"""The run configuration: one dataclass, one help string per field, validated on creation.

The command line flags, the YAML config file and the app's controls all use these names (a flag is the
field name with dashes). Every invalid value raises `ValueError` naming the flag, the value and what is
allowed, before any work starts.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pgraft.core.acceptance import RULE_PARAMS, RULES
from pgraft.graft.plain_yaml import read_plain_yaml
from pgraft.graft.validation import (  # noqa: F401  (the config's vocabulary, importable from here)
    ANCHORINGS,
    DEVICE,
    LIMITS,
    MAX_SEED,
    METHODS,
    SAMPLERS,
    check_types,
    check_values,
    ignored_options,
    read_prompt_file,
)

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
        "base model: a registered name (see `pgraft models`) or a diffusers pipeline folder",
        {"widget": "dropdown", "label": "Base model", "elem_id": "model"},
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
            "widget": "tags",
            "label": "Prompts",
            "info": "Pick or type prompts; each gets its own samples, and the rule compares a prompt's samples "
            "among themselves.",
        },
        default_factory=list,
    )
    method: str = _help(
        "graft (fine-tune at every noise level), pgraft (only above the cutoff), ddpo (policy gradient with PPO "
        "clipping over the denoising steps) or bon-sampling (no training: best of --n draws per delivered sample)",
        {
            "widget": "radio",
            "label": "Method",
            "choices": [
                ("GRAFT", "graft"),
                ("P-GRAFT", "pgraft"),
                ("DDPO", "ddpo"),
                ("Best-of-n sampling", "bon-sampling"),
            ],
            "info": "GRAFT fine-tunes at every noise level; P-GRAFT only above the cutoff, handing over to the base; "
            "DDPO is the policy-gradient rival; best-of-n sampling trains nothing and keeps the best of n draws.",
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
        {"widget": "slider", "label": "Samples per round", "minimum": 4, "maximum": 8192, "step": 4},
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
        {"widget": "slider", "label": "Fine-tuning batch size", "minimum": 1, "maximum": 2048, "step": 1},
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
    # -- pipeline models (a diffusers folder as --model) ----------------------------------------------------
    prompt_file: str | None = _help(
        "a UTF-8 file of prompts, one a line (added to --prompts; config.yaml then holds the prompts)", default=None
    )
    negative_prompt: str = _help("pipelines: the negative prompt of classifier-free guidance", default="")
    guidance_scale: float | None = _help(
        "pipelines: guidance scale (1: none; default the family's: SD 7.5, SDXL 5, SD3 7, Flux 3.5); "
        "classifier-free guidance, or Flux's guidance embedding; sampling and fine-tuning use the same output",
        default=None,
    )
    true_cfg_scale: float = _help(
        "Flux: true classifier-free guidance with --negative-prompt when > 1 (doubles the transformer calls)",
        default=1.0,
    )
    height: int | None = _help("pipelines: image height in pixels (default: the folder's)", default=None)
    width: int | None = _help("pipelines: image width in pixels (default: the folder's)", default=None)
    dtype: str = _help("pipelines: auto (bf16 on a GPU, fp32 on a CPU), fp32, bf16 or fp16", default="auto")
    lora_rank: int = _help("pipelines: LoRA rank of the fine-tuned adapter", default=8)
    lora_alpha: float | None = _help("pipelines: LoRA alpha (default: the rank)", default=None)
    lora_targets: list[str] = _help(
        "pipelines: modules the LoRA adapts (default: the family's attention projections, e.g. to_q to_k to_v "
        "to_out.0)",
        default_factory=list,
    )

    ddpo_clip_range: float = _help("ddpo: PPO clip range of the importance ratio (DDPO's default 1e-4)", default=1e-4)
    ddpo_adv_clip: float = _help("ddpo: advantages (per-prompt standardised rewards) clipped to +-this", default=5.0)
    ddpo_timestep_fraction: float = _help("ddpo: fraction of each sample's denoising steps trained", default=1.0)
    ddpo_inner_epochs: int = _help("ddpo: PPO epochs over each round's samples", default=1)
    ddpo_batch_size: int | None = _help("ddpo: samples per minibatch (default: --batch-size)", default=None)
    ddpo_accumulation: int = _help("ddpo: minibatches accumulated per optimizer step", default=1)
    ddpo_lr: float = _help(
        "ddpo: learning rate (DDPO's 3e-4; --lr is the supervised fine-tuning's: Adam's first policy step moves "
        "every weight by about the learning rate, and the digits' 2e-3 breaks the UNet in one step)",
        default=3e-4,
    )

    def __post_init__(self) -> None:
        check_types(self)
        if self.prompt_file is not None:  # read once: the config then holds the prompts themselves
            object.__setattr__(self, "prompts", [*self.prompts, *read_prompt_file(self.prompt_file)])
            object.__setattr__(self, "prompt_file", None)
        # Frozen: the model's defaults are resolved in place, so config.yaml holds the numbers.
        for name, value in model_defaults(self.model).items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.preview is None:
            object.__setattr__(self, "preview", min(DEFAULT_PREVIEW, self.samples))
        check_values(self)

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
