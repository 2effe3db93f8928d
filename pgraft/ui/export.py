"""The Export panel: the scouted settings as a full run's `config.yaml`, its `pgraft run` command, and the same
command under `accelerate launch` for several processes (no gradio here).

The export names every setting that applies to the run explicitly, defaults included: a command that left
out what equals today's CLI default would change meaning when a default changes. Settings that do not apply
(a GRAFT run's cutoff, the parameters of the rules not chosen, pipeline options of a small model) are left
out of both, so the YAML says only what the run uses. The device is left to the machine of the full run.
"""

from __future__ import annotations

import shlex
from typing import Any

import yaml

from pgraft.core.acceptance import RULES
from pgraft.graft.config import RunConfig
from pgraft.registry import get_model_spec

PGRAFT_ONLY = ("cutoff", "anchoring")
RULE_PARAMS = {rule.param.name for rule in RULES.values()}
DEDUP = {"dedup-top-k": "dedup_resolution"}
"""A rule's extra setting besides its parameter."""
LEFT_TO_THE_MACHINE = ("device", "reward_timeout", "prompt_file")
OUT = "runs/my-run"
CPU_NOTE = "On a machine without a GPU, prefix ACCELERATE_USE_CPU=true (two or more CPU processes over gloo)."


def _pipeline_options() -> tuple[str, ...]:
    from pgraft.families.loading import PIPELINE_OPTIONS

    return (*PIPELINE_OPTIONS, "lora_rank", "lora_alpha", "lora_targets")


def applicable(config: RunConfig) -> dict[str, Any]:
    """The settings that apply to this run, by field name, in `RunConfig` order."""
    spec = get_model_spec(config.model)
    rule_param = RULES[config.rule].param.name
    skip = set(LEFT_TO_THE_MACHINE)
    if config.method != "pgraft":
        skip.update(PGRAFT_ONLY)
    skip.update(RULE_PARAMS - {rule_param})
    if config.rule not in DEDUP:
        skip.add("dedup_resolution")
    if "dataset" not in spec.options:
        skip.add("dataset")
    skip.update(o for o in _pipeline_options() if o not in spec.options)
    if not spec.conditional:
        skip.add("prompts")
    if config.sampler == "ddpm":
        skip.add("eta")  # DDPM is eta 1 whatever the field says
    values = config.to_dict()
    return {k: v for k, v in values.items() if k not in skip and v is not None}


def export_yaml(config: RunConfig) -> str:
    return yaml.safe_dump(applicable(config), sort_keys=False)


def command_args(config: RunConfig) -> list[str]:
    """`--flag value` words of every applicable setting (shell-quoted)."""
    parts: list[str] = []
    for name, value in applicable(config).items():
        flag = "--" + name.replace("_", "-")
        if name == "reward_args":
            parts += [f"--reward-arg {shlex.quote(f'{k}={v}')}" for k, v in value.items()]
        elif isinstance(value, list):
            if value:
                parts.append(flag + " " + " ".join(shlex.quote(str(p)) for p in value))
        else:
            parts.append(f"{flag} {shlex.quote(str(value))}")
    return parts


def run_command(config: RunConfig) -> str:
    """The `pgraft run` command with every applicable setting on the command line."""
    return " ".join(["pgraft run", *command_args(config), "--out", OUT])


def launch_commands(processes: int = 2, config: RunConfig | None = None) -> str:
    """The commands for a full run from the exported `config.yaml`: one process, and N under accelerate (and a
    note when the reward was added by a module given to the app with `--rewards`, which the CLI does not load)."""
    text = (
        f"pgraft run --config config.yaml --out {OUT}\n"
        f"accelerate launch --multi_gpu --num_processes {processes} -m pgraft run --config config.yaml --out {OUT}\n"
        f"# {CPU_NOTE}"
    )
    note = reward_module_note(config)
    return text + (f"\n# {note}" if note else "")


def reward_module_note(config: RunConfig | None) -> str | None:
    """A note when the config's reward was added by a module given to the app with `--rewards`, which the
    command line does not load (None otherwise)."""
    module = _outside_module(config)
    if module is None or config is None:
        return None
    return (
        f"The reward {config.reward!r} comes from the module {module!r} the app was given (--rewards): "
        "the command line registers only pgraft's rewards and installed domains."
    )


def _outside_module(config: RunConfig | None) -> str | None:
    """The module of the config's reward when it is not pgraft's own (None otherwise)."""
    if config is None:
        return None
    from pgraft.registry import reward_spec

    spec = reward_spec(config.reward, get_model_spec(config.model).domain)
    module = getattr(getattr(spec, "factory", None), "__module__", "pgraft") or "pgraft"
    return None if module.split(".")[0] == "pgraft" else module


def export_texts(config: RunConfig, processes: int = 2) -> tuple[str, str, str]:
    """(config.yaml, the `pgraft run` command with every flag, the config-file commands incl. accelerate)."""
    return export_yaml(config), run_command(config), launch_commands(processes, config)
