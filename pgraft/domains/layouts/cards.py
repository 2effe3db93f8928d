"""The model card of the shipped `layouts` weights: what the file is, how it was trained, how good its
samples are against held-out pages, and the command that reproduces it (`assets/layouts.md`)."""

from __future__ import annotations

import json
from typing import Any

from pgraft.domains.digits.cards import describe_machine
from pgraft.families.small import DiffusionModel

COLUMNS = (
    ("alignment_x100", "Align×100"),
    ("overlap_x100", "Overlap×100"),
    ("title_on_top", "title on top"),
    ("elements", "elements"),
    ("class_freqs", "class freqs (text/title/list/table/figure)"),
    ("inside_page", "boxes inside page"),
    ("frechet", "Fréchet to held-out"),
    ("sampling_seconds", "sampling s"),
)


def model_card(model: DiffusionModel, quality: dict[str, Any], command: str) -> str:
    info, config = model.info["training"], model.info["network_config"]
    lines = [
        f"# {model.name}",
        "",
        "x₀-predicting, self-conditioned transformer over 20 layout slots (class one-hot with an empty class,",
        'box `(x_c, y_c, w, h)`), DDPM cosine schedule, sampled with diffusers\' DDIM (`prediction_type="sample"`).',
        f"Trained on {info['data']} (PubLayNet-like classes: text, title, list, table, figure).",
        "",
        f"- network: {json.dumps(config)}",
        f"- noise process: {json.dumps(model.process_config())}",
        f"- parameters: {info['parameters']:,}",
        f"- training: {info['train_steps']} steps at batch {info['batch_size']}, AdamW lr {info['lr']} "
        f"(200 warm-up steps), EMA {info['ema_decay']}, seed {info['seed']}; loss CE(classes) + 10 × MSE(boxes)",
        f"- training time: {info['train_seconds']} s {describe_machine(info)}",
        f"- final training loss (mean of the last tenth of the steps): {info['final_loss']}",
        f"- reproduce: `{command}`",
        *([f"- note: {info['note']}"] if "note" in info else []),
        "",
        f"## Quality: {quality['samples']} samples, {quality['num_inference_steps']} DDIM steps, against "
        f"{quality['samples']} held-out pages",
        "",
        "| sampler | " + " | ".join(label for _, label in COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for key, q in quality.items():
        if isinstance(q, dict):
            cells = [
                "/".join(f"{v:.2f}" for v in q[c]) if c == "class_freqs" else str(q.get(c, "-")) for c, _ in COLUMNS
            ]
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "The data row is another set of held-out synthetic pages judged the same way: its Fréchet distance is",
        "the floor set by the finite sample, its alignment and overlap are exactly 0 (the generator snaps",
        "every block to a column edge).",
        "",
    ]
    return "\n".join(lines)
