"""Training the shipped `layouts` model from a seed, judging its samples, and writing its model card.

`pgraft pretrain layouts` trains the denoiser of `models.py` on `POOL` synthetic pages (`generator.generate`
from the training seed; generating a fresh batch every step cost a quarter of the step) or, with
`--data PATH --format F`, on pages read from a real data set (`io.read_layouts`). Loss (domains.md §A.4):
cross-entropy on the class logits plus 10 × MSE on the box values (empty slots' boxes included: they are
0), timesteps uniform on 0..999, AdamW with a warm-up, an EMA of the weights. The quality report samples
`QUALITY_SAMPLES` pages and compares them with as many held-out pages (a generator seed training never uses).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from pgraft.domains.layouts.generator import CLASSES, Layouts, decode, encode, generate
from pgraft.domains.layouts.models import CLASS_DIMS, build_layout_model, weights_path
from pgraft.families.small import DiffusionModel

TRAIN_STEPS = 10000
POOL = 60_000
BATCH_SIZE = 128
LR = 5e-4
WARMUP = 200
BOX_WEIGHT = 10.0
HELD_OUT_SEED = 10_000_019
"""Generator seed of the held-out pages (the training pool uses the training seed)."""
QUALITY_SAMPLES = 1000
QUALITY_STEPS = 50


def held_out_pages(n: int = QUALITY_SAMPLES) -> Layouts:
    return generate(n, HELD_OUT_SEED)


def layout_loss(network: Any, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, process: Any) -> torch.Tensor:
    """CE on classes + `BOX_WEIGHT` × MSE on boxes at `x_t = a_t x_0 + σ_t ε`, with self-conditioning."""
    x_t = process.add_noise(x0, noise, t)
    previous = network.self_condition(x_t, t)
    logits, box = network.logits_and_box(x_t, t, previous)
    target = x0[..., :CLASS_DIMS].argmax(-1)
    ce = F.cross_entropy(logits.reshape(-1, CLASS_DIMS), target.reshape(-1))
    return ce + BOX_WEIGHT * F.mse_loss(box, x0[..., CLASS_DIMS:])


def train_layouts(
    steps: int = TRAIN_STEPS,
    seed: int = 0,
    size: str = "default",
    data: Layouts | None = None,
    batch_size: int = BATCH_SIZE,
    lr: float = LR,
    ema_decay: float = 0.999,
    log: Callable[[int, float], None] | None = None,
    snapshot: Callable[[int, Any], None] | None = None,
) -> DiffusionModel:
    """Train a layout model (see the module docstring); the returned weights are the EMA.

    `snapshot(step, ema_network)` is called after every step (the schedule does not depend on the total
    number of steps, so the EMA after `N` steps of a longer run is that of a run with `steps=N`)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_layout_model(size, seed=seed)
    net, process = model.network, model.process
    ema = copy.deepcopy(net).requires_grad_(False)
    fixed = encode(data if data is not None else generate(POOL, seed))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / WARMUP))
    start, losses = time.perf_counter(), []
    net.train()
    for step in range(steps):
        x0 = fixed[torch.randint(0, len(fixed), (batch_size,), generator=gen)]
        t = torch.randint(0, process.num_train_timesteps, (batch_size,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        loss = layout_loss(net, x0, t, noise, process)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), net.parameters()):
                e.lerp_(p, 1 - decay)
        losses.append(float(loss.detach()))
        if log is not None:
            log(step + 1, losses[-1])
        if snapshot is not None:
            snapshot(step + 1, ema)
    ema.cache, ema.coin = net.cache, net.coin
    model.network = ema.eval()
    tail = losses[-max(1, steps // 10) :]
    from pgraft.domains.digits.cards import machine_record

    model.info["training"] = {
        "train_steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "ema_decay": ema_decay,
        "size": size,
        "parameters": sum(p.numel() for p in net.parameters()),
        "train_seconds": round(time.perf_counter() - start, 1),
        "final_loss": round(sum(tail) / len(tail), 5),
        "data": f"{POOL:,} synthetic pages (seed {seed})" if data is None else f"{len(data):,} pages read from disk",
        **machine_record(),
    }
    return model.frozen()


def judge(pages: Layouts, reference: Layouts) -> dict[str, Any]:
    """The card's quality columns of `pages` against `reference` pages."""
    from pgraft.domains.layouts.measures import alignment, class_counts, inside_fraction, overlap
    from pgraft.domains.layouts.metrics import frechet_layouts
    from pgraft.domains.layouts.rewards import title_at_top

    counts = class_counts(pages)
    freq = counts.sum(0) / counts.sum().clamp_min(1)
    return {
        "alignment_x100": round(float(alignment(pages).mean()) * 100, 3),
        "overlap_x100": round(float(overlap(pages).mean()) * 100, 2),
        "title_on_top": round(float(title_at_top(pages).mean()), 3),
        "elements": round(float(pages.counts.double().mean()), 2),
        "class_freqs": [round(float(f), 3) for f in freq],
        "inside_page": round(inside_fraction(pages), 4),
        "frechet": round(frechet_layouts(pages, reference), 3),
    }


def quality_report(
    model: DiffusionModel, n: int = QUALITY_SAMPLES, steps: int = QUALITY_STEPS, seed: int = 1234
) -> dict[str, Any]:
    """`judge` of `n` samples per sampler (DDIM η = 1 and η = 0) and of held-out data, against held-out pages."""
    from pgraft.core.sampling import sample, sample_seeds

    reference = held_out_pages(n)
    report: dict[str, Any] = {"samples": n, "num_inference_steps": steps, "classes": list(CLASSES)}
    for eta in (1.0, 0.0):
        t0 = time.perf_counter()
        traj = sample(model, sample_seeds(seed, 0, n), steps, eta=eta)
        report[f"eta={eta:g}"] = {
            **judge(decode(traj.samples), reference),
            "sampling_seconds": round(time.perf_counter() - t0, 1),
        }
    report["data (other held-out pages)"] = judge(generate(n, HELD_OUT_SEED + 1), reference)
    return report


def pretrain_layouts(
    out: Path | None = None,
    steps: int | None = None,
    seed: int = 0,
    size: str = "default",
    data: Path | None = None,
    data_format: str | None = None,
    eval_samples: int = QUALITY_SAMPLES,
    log: Callable[[str], None] = print,
) -> Path:
    """Train, judge, save (safetensors, config and records in the metadata, atomically) and write the card."""
    steps = steps or TRAIN_STEPS
    pages, dropped = None, None
    if data is not None:
        from pgraft.domains.layouts.io import read_layouts

        if data_format is None:
            raise ValueError("--format: give the format of --data (publaynet, rico, magazine, crello)")
        read = read_layouts(Path(data), data_format)
        pages, dropped = read.layouts, read.report()
        log(f"layouts: read {len(pages)} pages from {data}; {dropped}")
    every = max(1, steps // 50)

    def progress(step: int, loss: float) -> None:
        if step % every == 0 or step == steps:
            log(f"layouts: step {step}/{steps} loss {loss:.4f}")

    model = train_layouts(steps, seed, size, pages, log=progress)
    command = f"pgraft pretrain layouts --steps {steps} --seed {seed}" + (
        f" --size {size}" if size != "default" else ""
    )
    if data is not None:
        command += f" --data {data} --format {data_format}"
    return finish_pretrain(model, out, command, dropped, eval_samples, log)


def finish_pretrain(
    model: DiffusionModel,
    out: Path | None,
    command: str,
    dropped: dict[str, Any] | None = None,
    eval_samples: int = QUALITY_SAMPLES,
    log: Callable[[str], None] = print,
) -> Path:
    """Judge a trained model, save it to `out` (atomically) with its metadata, and write the card beside it."""
    from pgraft.domains.layouts.cards import model_card

    quality = quality_report(model, n=eval_samples)
    out = Path(out) if out is not None else weights_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    extra = {
        "network_config": model.info["network_config"],
        "training": model.info["training"],
        "quality": quality,
        "command": command,
    }
    if dropped is not None:
        extra["data"] = dropped
    model.save(tmp, extra=extra)
    tmp.replace(out)
    out.with_suffix(".md").write_text(model_card(model, quality, command))
    log(f"layouts: {json.dumps(quality)}")
    return out
