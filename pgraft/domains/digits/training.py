"""Training the shipped digits models from a seed, judging their samples, and writing their model cards.

`pgraft pretrain digits|digits-prompted|digits-flow|digits-classifier` runs `pretrain_digits` or
`pretrain_classifier`: it trains, saves the weights (safetensors, UNet config, noise process, training
record and quality figures in the metadata) and writes `<weights>.md`, the model card, beside them.

Quality (`quality_report`): 1,000 samples from per-sample seeds with 25 sampler steps, judged by the
reward classifier: the fraction classified with confidence > 0.9 (goal ≥ 90 %; real held-out digits score
it too, for comparison), the class histogram (every class present), for the prompted model how often the
predicted class is the prompted one, and the Fréchet distance to the held-out digits in the classifier's
features (`pgraft/image_metrics.py`).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pgraft.domains.digits.cards import classifier_card, machine_record, model_card
from pgraft.domains.digits.metrics import CONFIDENT, classify, frechet_to_held_out
from pgraft.domains.digits.models import (
    build_digits_model,
    digits_split,
    model_kind,
    to_model,
    to_unit,
    unet_config,
    weights_path,
)
from pgraft.families.small import DiffusionModel

TRAIN_STEPS = 4000
# Steps of the shipped files (the prompted model met the quality goal early, so it was stopped there).
SHIPPED_STEPS = {"digits": 4000, "digits-flow": 4000, "digits-prompted": 1500, "digits-prompted-early": 150}
WARMUP_STEPS = 100
QUALITY_SAMPLES = 1000
QUALITY_STEPS = 25


def train_digits(
    name: str,
    size: str = "default",
    steps: int = TRAIN_STEPS,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    ema_decay: float = 0.999,
    progress: Callable[[int, float, torch.nn.Module], None] | None = None,
) -> tuple[DiffusionModel, dict[str, Any]]:
    """Train a digits model with its process's ordinary loss (ε-MSE or flow-velocity MSE) on the train
    split; AdamW with a warm-up and a constant rate; the returned weights are the exponential moving average.

    `progress(step, loss, ema_network)` is called after every step (to log, or to save snapshots)."""
    kind, conditional = model_kind(name)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    config = unet_config(size, conditional)
    model = build_digits_model(name, config)
    net, process = model.network, model.process
    ema = copy.deepcopy(net).requires_grad_(False)
    split = digits_split()
    data, labels = to_model(split.train_x), split.train_y
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    sched = warmup_constant(opt)
    start, losses = time.perf_counter(), []
    net.train()
    for step in range(steps):
        idx = torch.randint(0, len(data), (batch_size,), generator=gen)
        x0, cond = data[idx], (labels[idx] if conditional else None)
        noise = torch.randn(x0.shape, generator=gen)
        t = process.sample_training_timesteps(batch_size, None, gen, torch.device("cpu"))
        x_t = process.add_noise(x0, noise, t)
        loss = ((net(x_t, t, cond) - process.target(x0, noise, x_t, t)) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        decay = min(ema_decay, (1 + step) / (10 + step))  # warm-up of the average
        with torch.no_grad():
            for e, p in zip(ema.parameters(), net.parameters()):
                e.lerp_(p, 1 - decay)
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step + 1, losses[-1], ema)
    model.network = ema.eval()
    tail = losses[-max(1, steps // 10) :]
    info = {
        "train_steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "ema_decay": ema_decay,
        "size": size,
        "parameters": sum(p.numel() for p in net.parameters()),
        "train_seconds": round(time.perf_counter() - start, 1),
        "final_loss": round(sum(tail) / len(tail), 5),
        "process": kind,
        **machine_record(),
    }
    model.info["training"] = info
    return model.frozen(), info


def warmup_constant(opt: torch.optim.Optimizer, warmup_steps: int = WARMUP_STEPS) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then a constant rate: the schedule does not depend on the total number of steps, so
    the (EMA) weights after `N` steps of a longer run equal those of a run with `--steps N`."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup_steps))


def judge(x_unit: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
    """Confident fraction, class histogram, prompt match and Fréchet distance to held-out digits."""
    probs = classify(x_unit)
    conf, pred = probs.max(-1)
    hist = torch.bincount(pred, minlength=10).double() / len(pred)
    out: dict[str, Any] = {
        "confident_fraction": round(float((conf > CONFIDENT).double().mean()), 4),
        "class_histogram": [round(float(h), 3) for h in hist],
        "classes_present": int((hist > 0.01).sum()),
        "fid_real": round(frechet_to_held_out(x_unit), 3),
    }
    if labels is not None:
        out["prompt_match"] = round(float((pred == labels).double().mean()), 4)
        out["confident_and_match"] = round(float(((pred == labels) & (conf > CONFIDENT)).double().mean()), 4)
    return out


def quality_report(
    model: DiffusionModel, n: int = QUALITY_SAMPLES, steps: int = QUALITY_STEPS, seed: int = 1234
) -> dict:
    """`judge` of `n` samples per sampler (VP: DDPM-like eta = 1 and DDIM eta = 0; flow: Euler), with timings."""
    from pgraft.core.sampling import sample, sample_seeds

    seeds = sample_seeds(seed, 0, n)
    labels = torch.arange(n) % 10 if model.conditional else None
    etas = (1.0, 0.0) if model.process.stochastic_samplers else (0.0,)
    report: dict[str, Any] = {"samples": n, "num_inference_steps": steps}
    for eta in etas:
        t0 = time.perf_counter()
        traj = sample(model, seeds, steps, eta=eta, cond=labels)
        key = f"eta={eta:g}" if model.process.stochastic_samplers else "euler"
        report[key] = {**judge(to_unit(traj.samples), labels), "sampling_seconds": round(time.perf_counter() - t0, 1)}
    report["real_held_out"] = judge(digits_split().held_x, digits_split().held_y if model.conditional else None)
    return report


def pretrain_digits(
    name: str,
    out: Path,
    steps: int = TRAIN_STEPS,
    seed: int = 0,
    size: str = "default",
    eval_samples: int = QUALITY_SAMPLES,
    log: Callable[[str], None] = print,
) -> Path:
    """Train `name`, judge it, save weights + metadata atomically, and write the model card beside them."""
    every = max(1, steps // 20)

    def progress(step: int, loss: float, ema: torch.nn.Module) -> None:
        if step % every == 0 or step == steps:
            log(f"{name}: step {step}/{steps} loss {loss:.4f}")

    model, _ = train_digits(name, size=size, steps=steps, seed=seed, progress=progress)
    return finish_pretrain(model, out, eval_samples, log)


def finish_pretrain(
    model: DiffusionModel, out: Path, eval_samples: int = QUALITY_SAMPLES, log: Callable[[str], None] = print
) -> Path:
    """Judge a trained model, save it to `out` (atomically) with its metadata, and write the card beside it."""
    info = model.info["training"]
    name, config = model.name, model.info["unet_config"]
    quality = quality_report(model, n=eval_samples)
    size = info["size"]
    command = f"pgraft pretrain {name} --steps {info['train_steps']} --seed {info['seed']}" + (
        f" --size {size}" if size != "default" else ""
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    model.save(tmp, extra={"unet_config": config, "training": info, "quality": quality, "command": command})
    tmp.replace(out)
    out.with_suffix(".md").write_text(model_card(model, quality, command))
    log(f"{name}: {json.dumps(quality)}")
    return out


def pretrain_classifier(out: Path, steps: int | None = None, seed: int = 0, log: Callable[[str], None] = print) -> Path:
    """Train the reward classifier, save it and write its card (accuracy and confidence on held-out digits)."""
    from pgraft.domains.digits.classifier import CLASSIFIER_STEPS, train_classifier

    net, info = train_classifier(steps=steps or CLASSIFIER_STEPS, seed=seed)
    return finish_classifier(net, info, out, log)


def finish_classifier(net: Any, info: dict[str, Any], out: Path, log: Callable[[str], None] = print) -> Path:
    """Save a trained classifier to `out` and write its card beside it."""
    from pgraft.domains.digits.classifier import load_classifier, save_classifier

    seed = info["seed"]
    split = digits_split()
    with torch.inference_mode():
        conf = net.eval().probabilities(split.held_x).max(-1).values
    info = {**info, "held_out_confident_fraction": round(float((conf > CONFIDENT).double().mean()), 4)}
    save_classifier(net, info, out)
    load_classifier.cache_clear()
    command = f"pgraft pretrain digits-classifier --steps {info['train_steps']} --seed {seed}"
    out.with_suffix(".md").write_text(classifier_card(info, sum(p.numel() for p in net.parameters()), command))
    log(f"digits-classifier: {json.dumps(info)}")
    return out


def pretrain_named(
    name: str,
    out: Path | None,
    steps: int | None,
    seed: int,
    size: str = "default",
    eval_samples: int = QUALITY_SAMPLES,
) -> Path:
    """What `pgraft pretrain NAME` runs for the digits models (default output: the shipped asset path)."""
    from pgraft.domains.digits.models import ASSETS

    path = out or ASSETS / f"{name}.safetensors"
    if name == "digits-classifier":
        return pretrain_classifier(path, steps, seed)
    return pretrain_digits(name, path, steps or SHIPPED_STEPS.get(name, TRAIN_STEPS), seed, size, eval_samples)


def trained_weights(name: str, train_steps: int) -> Path:
    """The weights of `name` after `train_steps` steps of its shipped recipe: the shipped file for its own
    count, else a cache file (a deliberately under-trained model: trained now if absent, about 50 ms a step on
    a CPU; the toy models' cache and its pruning)."""
    from pgraft.cache import cache_dir, ensure_weights

    if not isinstance(train_steps, int) or not 1 <= train_steps <= 10**6:
        raise ValueError(f"--train-steps: {train_steps!r} is invalid; allowed: an integer in [1, 1e6]")
    if train_steps == SHIPPED_STEPS.get(name):
        return weights_path(name)

    def make(path: Path) -> None:
        model, info = train_digits(name, steps=train_steps)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        model.save(tmp, extra={"unet_config": model.info["unet_config"], "training": info})
        tmp.replace(path)

    return ensure_weights(cache_dir() / f"{name}-{train_steps}steps.safetensors", make)
