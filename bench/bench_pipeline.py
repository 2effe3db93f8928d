"""Stable Diffusion pipelines: pgraft's sampler against the stock pipeline, rewards, LoRA steps, one round.

    python bench/bench_pipeline.py                                   # tiny random SD on the CPU (seconds)
    python bench/bench_pipeline.py --kind sd --size full --device cuda --dtype bf16   # SD 1.5-sized, 512 px
    python bench/bench_pipeline.py --kind sd2-v --size full --device cuda             # SD 2-sized, 768 px
    python bench/bench_pipeline.py --kind sdxl --size full --device cuda              # SDXL-sized, 1024 px
    python bench/bench_pipeline.py --kind sd3 --size full --device cuda --steps 28    # SD3-medium-sized, 1024 px
    python bench/bench_pipeline.py --kind flux --size full --device cuda --steps 28 --guidance 3.5  # FLUX.1-dev-sized
    python bench/bench_pipeline.py --folder /models/sd-2-1 --device cuda              # a real folder

Speed does not depend on the weights, so the pipelines are built from their configs with random weights
(`pgraft.families.random_pipelines`) unless `--folder` names a real one. Rows:

- **sampling**: images/s of the stock pipeline's `__call__` (`output_type="latent"`; DDIM with η = 1 for the
  Stable Diffusion families, the folder's Euler on explicit sigmas for SD3 / Flux) and of pgraft's loop
  (`core.sampling.sample`, seeded per sample, recording the trajectory, the same sampler) on the same
  prompts, batch, steps and guidance, alternating in one process, the median of `--repeats`; the ratio is
  pgraft's images/s over the pipeline's (goal ≥ 1.0). Full-size flow folders are built in bf16 (Flux: about
  34 GB on disk with its T5).
- **decode**: images/s of the VAE decoding the latents.
- **rewards**: images/s of `jpeg-compressibility` and of `clip-score` on a CLIP folder (`--clip`, else a random
  ViT-L/14-shaped one at full size and a tiny one at tiny size).
- **LoRA**: fine-tuning steps/s at `--batch`, rank `--lora-rank`, as a round trains.
- **round**: round 1 of a GRAFT run end to end (sample → score → accept → fine-tune), in samples/s per GPU,
  against DDPO's published 0.22 samples/s/GPU (SD 1.5, 512 px, 8 A100s; `../shared/docs/scaleout.md`; goal
  ≥ 5×). Each row gives the peak memory it needed on CUDA.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from round_parts import round_parts

from pgraft.core.devices import peak_memory_gb, reset_peak_memory, resolve_device
from pgraft.core.finetune import FinetuneData, finetune_iter
from pgraft.core.sampling import sample, sample_seeds, seeded_noise
from pgraft.families.random_pipelines import KINDS
from pgraft.graft.config import RunConfig
from pgraft.registry import load_model, make_reward, reward_context
from pgraft.rewards import score

DDPO_SAMPLES_PER_S_PER_GPU = 0.22
PROMPTS = ("a photo of a cat", "a lighthouse on a cliff at sunset", "two blue birds on a branch", "a red apple")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str) -> tuple[float, float | None]:
    """Seconds of one call, and its peak CUDA memory in GiB (None off CUDA)."""
    sync(device)
    reset_peak_memory(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0, peak_memory_gb(device)


def stock_pipeline(folder: Path, device: str, dtype: torch.dtype) -> Any:
    """The folder's own pipeline class, with DDIM on the folder's scheduler config (what pgraft samples with)."""
    import diffusers
    from diffusers import DDIMScheduler

    from pgraft.families.loading import pipeline_class

    cls = getattr(diffusers, pipeline_class(str(folder)))
    extra: dict[str, Any] = {"safety_checker": None} if cls.__name__ == "StableDiffusionPipeline" else {}
    index = json.loads((folder / "model_index.json").read_text())
    extra.update({k: None for k, v in index.items() if isinstance(v, list) and v[:1] == [None]})
    pipe = cls.from_pretrained(str(folder), dtype=dtype, use_safetensors=True, **extra)
    if not is_flow(pipe):
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def is_flow(pipe: Any) -> bool:
    return hasattr(pipe, "transformer")


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, what: str, rate: float, unit: str, peak: float | None, note: str = "") -> None:
        memory = f"{peak:.2f}" if peak is not None else "-"
        self.rows.append((what, f"{rate:.3g} {unit}", memory, note))

    def print(self, title: str) -> None:
        print(f"\n{title}")
        widths = [max(len(r[i]) for r in [("row", "rate", "peak GiB", "note"), *self.rows]) for i in range(4)]
        for row in [("row", "rate", "peak GiB", "note"), *self.rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", default="sd", choices=KINDS)
    parser.add_argument("--size", default="tiny", choices=("tiny", "full"))
    parser.add_argument("--folder", type=Path, default=None, help="a real pipeline folder instead of random weights")
    parser.add_argument("--clip", type=Path, default=None, help="a CLIP folder for the clip-score row")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    parser.add_argument("--batch", type=int, default=4, help="images per sampling batch and LoRA step")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--lora-steps", type=int, default=20)
    parser.add_argument("--round-samples", type=int, default=16, help="candidates per prompt in the round row")
    parser.add_argument("--round-prompts", type=int, default=4)
    parser.add_argument("--round-finetune-steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-round", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)
    work = Path(tempfile.mkdtemp(prefix="pgraft-bench-pipeline-"))
    if args.folder is None:
        from pgraft.families.random_pipelines import build_pipeline

        t0 = time.perf_counter()
        folder = build_pipeline(args.kind, work / args.kind, size=args.size)
        print(f"built a random {args.size} {args.kind} pipeline in {time.perf_counter() - t0:.1f} s")
    else:
        folder = args.folder
    size: dict[str, Any] = {"height": 16, "width": 16} if args.kind == "flux" and args.size == "tiny" else {}
    model = load_model(str(folder), device=device, dtype=args.dtype, guidance_scale=args.guidance, **size)
    dtype = model.dtype
    cpu = f"CPU, {torch.get_num_threads()} threads"
    hardware = torch.cuda.get_device_name(device) if device.startswith("cuda") else cpu
    title = (
        f"{folder.name} ({model.info.get('dtype')}, {model.height}x{model.width} px, {args.steps} steps, guidance "
        f"{args.guidance}, batch {args.batch}) on {hardware}; torch {torch.__version__}"
    )
    table = Table()

    # -- sampling, side by side ------------------------------------------------------------------------
    pipe = stock_pipeline(folder, device, dtype)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.batch)]
    seeds = sample_seeds(0, 1, args.batch)
    init = seeded_noise(seeds, model.sample_shape, 1)[:, 0].to(device, dtype)

    flow = is_flow(pipe)
    if flow:  # the folder's Euler (eta 0) on the explicit sigmas pgraft uses; Flux takes packed latents
        extra: dict[str, Any] = {"sigmas": np.linspace(1.0, 1 / args.steps, args.steps).tolist()}
        latents = pipe._pack_latents(init, *init.shape) if hasattr(pipe, "_pack_latents") else init
    else:
        extra, latents = {"eta": 1.0}, init
    eta = 0.0 if flow else 1.0

    def stock(pipe: Any = pipe) -> Any:
        return pipe(
            prompts, latents=latents.clone(), height=model.height, width=model.width, num_inference_steps=args.steps,
            guidance_scale=args.guidance, output_type="latent", **extra,
        ).images  # fmt: skip

    def ours() -> Any:
        return sample(model, seeds, args.steps, eta=eta, cond=model.encode(prompts)).samples

    with torch.inference_mode():
        stock(), ours()  # warm-up: kernels, allocator
        times: dict[str, list[float]] = {"stock": [], "pgraft": []}
        peaks: dict[str, float | None] = {}
        for _ in range(args.repeats):
            for name, fn in (("stock", stock), ("pgraft", ours)):
                seconds, peaks[name] = timed(fn, device)
                times[name].append(seconds)
    rate = {k: args.batch / statistics.median(v) for k, v in times.items()}
    table.add(f"sampling: {type(pipe).__name__}.__call__", rate["stock"], "img/s", peaks["stock"])
    table.add(
        "sampling: pgraft (records x_c, x_0)", rate["pgraft"], "img/s", peaks["pgraft"],
        f"{rate['pgraft'] / rate['stock']:.2f}x the pipeline (goal >= 1.0)",
    )  # fmt: skip
    del pipe, stock
    if device.startswith("cuda"):
        torch.cuda.empty_cache()

    # -- decode and rewards ----------------------------------------------------------------------------
    with torch.inference_mode():
        latents = ours()
        seconds, peak = timed(lambda: model.decode(latents), device)
        table.add("decode: vae", args.batch / seconds, "img/s", peak)
        images = model.decode(latents)
    clip = args.clip
    if clip is None:
        from pgraft.domains.t2i.random_models import build_clip

        clip = build_clip(work / "clip", size="large" if args.size == "full" else "tiny")
    for reward, reward_args in (("jpeg-compressibility", {}), ("clip-score", {"model": str(clip)})):
        reward_fn = make_reward(reward, "t2i", reward_args, reward_context(model))
        call = partial(score, reward_fn, images, prompts)
        call()  # warm-up (loads the folder)
        seconds = statistics.median(timed(call, device)[0] for _ in range(args.repeats))
        _, peak = timed(call, device)
        table.add(f"reward: {reward}", args.batch / seconds, "img/s", peak)

    # -- LoRA steps ------------------------------------------------------------------------------------
    trainable = model.configured(lora_rank=args.lora_rank).trainable_copy(seed=0)
    data = FinetuneData(latents.float(), trainable.encode(prompts))
    steps = args.lora_steps

    def train() -> None:
        for _ in finetune_iter(trainable, data, steps, args.batch, 1e-4, seed=0):
            pass

    train()  # warm-up
    seconds, peak = timed(train, device)
    table.add(f"LoRA rank {args.lora_rank}: steps", steps / seconds, "steps/s", peak, f"batch {args.batch}")

    # -- one round end to end --------------------------------------------------------------------------
    if not args.skip_round:
        cfg = RunConfig(
            model=str(folder), prompts=list(PROMPTS[: args.round_prompts]), reward="jpeg-compressibility",
            samples=args.round_samples, preview=0, num_inference_steps=args.steps, guidance_scale=args.guidance,
            finetune_steps=args.round_finetune_steps, batch_size=args.batch, lr=1e-4, rounds=1, rule="quantile",
            quantile=0.875, device=device, dtype=args.dtype, lora_rank=args.lora_rank, **size,
        )  # fmt: skip
        reset_peak_memory(device)
        parts = round_parts(cfg, repeats=1)
        peak = peak_memory_gb(device)
        n = args.round_samples * args.round_prompts
        per_s = n / parts["round_total"]
        split = ", ".join(f"{k} {v:.1f} s" for k, v in parts.items() if k != "round_total")
        table.add(f"round: {n} samples, {args.round_finetune_steps} LoRA steps", per_s, "samples/s", peak, split)
        table.add(
            "round vs DDPO (0.22 samples/s/GPU)", per_s / DDPO_SAMPLES_PER_S_PER_GPU, "x", None,
            "goal >= 5x; DDPO: SD 1.5 at 512 px, 50 steps" + ("" if args.size == "full" else " (tiny: not comparable)"),
        )  # fmt: skip
    table.print(title)


if __name__ == "__main__":
    main()
