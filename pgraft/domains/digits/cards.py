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
    "digits-flow": "Rectified flow (velocity prediction, `x_t = (1 − t) x_0 + t ε`)",
}

# Why the shipped size: `python bench/bench_digits_sampler.py --sizes --threads N` on an idle 2-core machine,
# and `quality_report` of a (32, 64) x 2 model trained with `pgraft pretrain digits --size deep` (same recipe).
SIZE_NOTE = """\
## Size

`UNet2DModel` with channels (32, 64), one ResNet layer per block, attention only in the 4×4 middle block
(651 k parameters unconditional, 652 k with the class embedding). One round with the app's digits defaults
(268 samples × 25 steps, 40 fine-tuning steps at batch 64), seconds on an idle 2-core CPU, random weights
(`python bench/bench_digits_sampler.py --sizes --threads N`; the app uses all cores but one, so 1 thread on
2 cores):

| UNet | parameters | MFLOP / sample | round, 1 thread | round, 2 threads |
|---|---|---|---|---|
| (16, 32) × 1 | 164 k | 7.7 | 1.75 | 1.40 |
| **(32, 64) × 1 (shipped)** | 651 k | 30.5 | 3.56 | 2.54 |
| (32, 64) × 2 | 918 k | 42.9 | 4.78 | 3.29 |
| (64, 128) × 1 | 2.59 M | 122.0 | 9.88 | 5.97 |
| (64, 128) × 2 | 3.66 M | 171.5 | 12.78 | 7.89 |

The (64, 128) UNets take 6-13 s per round: with round 0 and the app's two rounds that is half a minute of
waiting, not an interactive demo. Of the two sizes that stay within about 5 s, the larger, (32, 64) × 2,
trained with the same recipe (`pgraft pretrain digits --size deep`, 4,000 steps, 296 s against 205 s on one
thread) draws no better digits: 94.5 % confident and Fréchet distance 5.05 (eta = 1), 91.9 % and 4.48
(eta = 0), against the shipped 93.7 % and 4.83, 91.3 % and 4.26 (1,000 samples, the same seeds and judge; one
standard error of a confident fraction is 0.8 points). It would cost a third more per round for nothing
measurable, so the shipped size is (32, 64) × 1.
"""

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
    lines += ["", SIZE_NOTE]
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
