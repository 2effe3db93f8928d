"""Model cards of the shipped digits weights: what a file is, how it was trained, how good it is, and the
command that reproduces it. Written beside the weights (`assets/<name>.md`) by `pgraft pretrain`."""

from __future__ import annotations

import json
from typing import Any

from pgraft.models.base import DiffusionModel

KINDS = {
    "digits": "Unconditional DDPM (ε-prediction, linear β schedule, 1,000 training timesteps)",
    "digits-prompted": "Class-conditional DDPM (ε-prediction, linear β schedule); the prompt is the digit",
    "digits-flow": "Rectified flow (velocity prediction, `x_t = (1 − t) x_0 + t ε`)",
}

# Why the shipped size; the timings come from `python bench/bench_digits_sampler.py --sizes`.
SIZE_NOTE = """\
## Size

`UNet2DModel` with channels (32, 64), one ResNet layer per block, no attention in the down/up blocks
(651 k parameters). Candidates timed for one default app round (512 samples × 25 DDIM steps + 100
fine-tuning steps at batch 64) with `python bench/bench_digits_sampler.py --sizes`:

{sizes}

The (32, 64) × 2 UNet (918 k) is about 1.4× slower per round and per training step than the shipped
(32, 64) × 1; on the shared 2-core machine this project is built on (where other jobs take most of the
CPU) that is the difference between a round of well under half a minute and one that is not, and its
training would not have fitted. The (16, 32) × 1 UNet is faster again but draws visibly worse digits
at the same number of training steps.
"""


def model_card(model: DiffusionModel, quality: dict[str, Any], command: str, sizes: str = "") -> str:
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
        f"- training time: {info['train_seconds']} s with {info['torch_threads']} torch thread(s) on a shared "
        "2-core CPU (alone on the machine it is several times faster)",
        f"- final training loss (mean of the last tenth of the steps): {info['final_loss']}",
        f"- reproduce: `{command}`",
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
    lines += ["", SIZE_NOTE.format(sizes=sizes or "(not measured)")]
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
            f"- training time: {info['train_seconds']} s on a shared 2-core CPU",
            f"- train / held-out split: {info['train_size']} / {info['held_out_size']} images (stratified, seed 0)",
            f"- held-out accuracy: {info['held_out_accuracy']:.2%} (goal ≥ 97 %)",
            f"- held-out digits classified with confidence > 0.9: {info['held_out_confident_fraction']:.1%}",
            f"- reproduce: `{command}`",
            "",
        ]
    )
