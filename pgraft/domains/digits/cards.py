"""Model cards of the shipped digits weights: what a file is, how it was trained, how good it is, and the
command that reproduces it. Written beside the weights (`assets/<name>.md`) by `pgraft pretrain`."""

from __future__ import annotations

import json
import os
import platform
from typing import Any

import torch

from pgraft.families.small import DiffusionModel

KINDS = {
    "digits": "Unconditional DDPM (ε-prediction, linear β schedule, 1,000 training timesteps)",
    "digits-prompted": "Class-conditional DDPM (ε-prediction, linear β schedule); the prompt is the digit",
    "digits-prompted-early": (
        "An early snapshot of `digits-prompted` (the same run stopped after its first steps): a class-conditional "
        "DDPM that follows its prompt only part of the time, so a prompt-following reward has room to move; the "
        "prompt is the digit"
    ),
    "digits-flow": "Rectified flow (velocity prediction, `x_t = (1 − t) x_0 + t ε`)",
}

SIZE_STUDY = "size-study.md"
"""The measured size study (an asset beside the weights) that every digits model card includes."""


def size_note() -> str:
    """The size study, without its leading comment."""
    from pgraft.domains.digits.models import ASSETS

    text = (ASSETS / SIZE_STUDY).read_text()
    return text.split("-->", 1)[1].lstrip("\n") if text.startswith("<!--") else text


REPRODUCIBILITY = (
    "Reruns of the command with the same torch thread count on the same kind of CPU give identical weights; "
    "another thread count or CPU changes float rounding (a rerun of `digits` on another machine matched the "
    "file to 3.3e-4 with the same quality; the classifier, whose weights are not averaged, ends elsewhere at "
    "the same accuracy)."
)


def machine_record() -> dict[str, Any]:
    """Where a training ran, for its card: threads, cores and the 1-minute load average when it finished (a
    load well above the thread count means other jobs shared the CPU, and the time is inflated)."""
    return {
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average": round(os.getloadavg()[0], 2),
        "machine": platform.machine(),
    }


def describe_machine(info: dict[str, Any]) -> str:
    """ "with 1 torch thread(s) on a 2-core CPU, load average 1.1 at the end" from a training record."""
    return (
        f"with {info['torch_threads']} torch thread(s) on a {info['cpu_count']}-core CPU, "
        f"load average {info['load_average']} at the end"
    )


def model_card(model: DiffusionModel, quality: dict[str, Any], command: str) -> str:
    info, config = model.info["training"], model.info["unet_config"]
    lines = [
        f"# {model.name}",
        "",
        f"{KINDS.get(model.name, model.name)} of the 8×8 `sklearn` digits (train split, pixels in [-1, 1]).",
        "",
        f"- network: `UNet2DModel` {json.dumps(config)}",
        f"- noise process: {json.dumps(model.process_config())}",
        f"- parameters: {info['parameters']:,}",
        f"- training: {info['train_steps']} steps at batch {info['batch_size']}, AdamW, lr {info['lr']} "
        f"(constant after 100 warm-up steps), EMA {info['ema_decay']}, seed {info['seed']}",
        f"- training time: {info['train_seconds']} s {describe_machine(info)}",
        f"- final training loss (mean of the last tenth of the steps): {info['final_loss']}",
        f"- reproduce: `{command}`. {REPRODUCIBILITY}",
        *([f"- note: {info['note']}"] if "note" in info else []),
        "",
        f"## Quality: {quality['samples']} samples, {quality['num_inference_steps']} sampler steps, "
        "judged by `digits-classifier`",
        "",
        "| sampler | confident > 0.9 | classes present | Fréchet to held-out | prompt match | sampling s |",
        "|---|---|---|---|---|---|",
    ]
    rows = {k: q for k, q in quality.items() if isinstance(q, dict)}
    for key, q in rows.items():
        match = f"{q['prompt_match']:.1%}" if "prompt_match" in q else "-"
        lines.append(
            f"| {key} | {q['confident_fraction']:.1%} | {q['classes_present']} | {q['fid_real']:.2f} | {match} | "
            f"{q.get('sampling_seconds', '-')} |"
        )
    lines += ["", "`eta=1` is the runs' default sampler (`--sampler ddpm`); `real_held_out` is the same judge on", ""]
    lines[-2] += " the 359 held-out real digits. Class histograms (fraction per digit 0..9):"
    lines += [f"- {k}: {q['class_histogram']}" for k, q in rows.items()]
    lines += ["", size_note()]
    return "\n".join(lines)


def classifier_card(info: dict[str, Any], parameters: int, command: str) -> str:
    return "\n".join(
        [
            "# digits-classifier",
            "",
            "Small CNN digit classifier: the reward model of the digits domain (prompt-match, digit-prob) and",
            "the feature extractor (64 penultimate activations) of its Fréchet distances.",
            "Input: (N, 1, 8, 8) pixels in [0, 1].",
            "",
            f"- parameters: {parameters:,}",
            f"- training: {info['train_steps']} steps at batch {info['batch_size']}, AdamW one-cycle lr {info['lr']}, "
            f"seed {info['seed']}, ±1-pixel shifts and N(0, 0.05²) pixel noise",
            f"- training time: {info['train_seconds']} s {describe_machine(info)}",
            f"- train / held-out split: {info['train_size']} / {info['held_out_size']} images (stratified, seed 0)",
            f"- held-out accuracy: {info['held_out_accuracy']:.2%} (goal ≥ 97 %)",
            f"- held-out digits classified with confidence > 0.9: {info['held_out_confident_fraction']:.1%}",
            f"- reproduce: `{command}`. {REPRODUCIBILITY}",
            "",
        ]
    )
