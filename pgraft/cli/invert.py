"""`pgraft invert`: real images from a local folder to the noises a flow pipeline's sampler maps onto them.

pgraft invert --model ~/models/sd3-medium --images photos/ --prompt "a photo" --num-inference-steps 28 \
    --height 512 --width 512 --out runs/invert-photos

The images are encoded with the pipeline's VAE and their latents inverted through its own flow-matching Euler
sampler (`pgraft.inc.latents`). Written to `--out`: `noises.safetensors` (`noises`, `latents`, `failed`, with
the file names and prompts in the metadata), `steps.csv` (iterations and residuals per sampler step),
`summary.json` (round trip, failures, the noises against N(0, I)) and `roundtrip.png` (the images, the VAE's
reconstruction and the decode of `G(z)`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    from pgraft.core.process import FLOW_GRIDS
    from pgraft.inc.inversion import SOLVERS

    p = sub.add_parser(
        "invert", help="invert images from a folder through a flow pipeline's sampler (SD3, Flux) to their noises"
    )
    p.add_argument("--model", required=True, help="a local SD3 or Flux pipeline folder (safetensors)")
    p.add_argument("--images", type=Path, required=True, help="a folder of PNG, JPEG, WebP or BMP files")
    p.add_argument("--prompt", default="", help="the prompt every image is inverted under (default: empty)")
    p.add_argument("--limit", type=int, default=None, help="invert at most this many files (by name)")
    p.add_argument("--num-inference-steps", type=int, default=28, help="sampler steps K (default: 28)")
    p.add_argument(
        "--guidance-scale",
        type=float,
        default=1.0,
        help="guidance of the velocity inverted (default 1: the prompt's branch alone; the round trip holds "
        "for any scale, since G uses the same)",
    )
    p.add_argument("--height", type=int, default=None, help="image height (default: the pipeline's)")
    p.add_argument("--width", type=int, default=None, help="image width (default: the pipeline's)")
    p.add_argument("--tol", type=float, default=1e-4, help="residual tolerance of every backward step")
    p.add_argument("--max-iter", type=int, default=200, help="iterations per step before a row counts as failed")
    p.add_argument("--solver", default="auto", choices=SOLVERS, help="backward-Euler solver (default: auto)")
    p.add_argument(
        "--grid", default="linear", choices=tuple(FLOW_GRIDS),
        help="sampler grid: linear (the pipeline's own), karras or exponential (short last steps)",
    )  # fmt: skip
    p.add_argument("--on-failure", default="drop", choices=("drop", "raise"), help="images whose solve stalls")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on a GPU), fp32, bf16 or fp16")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: runs/invert-<timestamp>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_invert(args: argparse.Namespace) -> int:
    from pgraft.cli.progress import StageBar
    from pgraft.core.devices import resolve_device
    from pgraft.core.events import Progress, drain
    from pgraft.families.loading import looks_like_pipeline
    from pgraft.inc.latents import image_files, invert_images_iter, read_images

    if not looks_like_pipeline(args.model):
        raise ValueError(
            f"--model: {args.model!r} is not a pipeline folder; give a local SD3 or Flux folder (small flows "
            "invert their own data with `pgraft inc`)"
        )
    if args.num_inference_steps < 1:
        raise ValueError(f"--num-inference-steps: {args.num_inference_steps} is invalid; allowed: an integer >= 1")
    files = image_files(args.images, args.limit)
    from pgraft.registry import load_model

    device = resolve_device(args.device)
    options = dict(guidance_scale=args.guidance_scale, height=args.height, width=args.width, dtype=args.dtype)
    model = load_model(args.model, device, **options)
    if model.process.kind != "flow":
        raise ValueError(f"--model: {args.model!r} is a {model.info.get('pipeline')}, not a flow pipeline (SD3, Flux)")
    images = read_images(files, model.height, model.width)
    out = args.out or Path("runs") / f"invert-{time.strftime('%Y%m%d-%H%M%S')}"
    size = f"{model.height}x{model.width}"
    print(f"pgraft invert: {len(files)} images at {size}, K = {args.num_inference_steps} -> {out}")
    bar = StageBar(quiet=args.quiet)

    def show(ev: Any) -> None:
        if isinstance(ev, Progress):
            bar.update(ev.describe(), ev.done, ev.total)

    names = [f.name for f in files]
    result = drain(
        invert_images_iter(
            model, images, [args.prompt] * len(files), args.num_inference_steps, names=names, tol=args.tol,
            max_iter=args.max_iter, on_failure=args.on_failure, solver=args.solver, grid=args.grid,
        ),
        show,
    )  # fmt: skip
    bar.close()
    assert result is not None
    write_inversion(result, model, images, out)
    summary = result.summary()
    print(
        f"inverted {summary['inverted']} of {summary['images']} (failed {summary['failed']}); round trip "
        f"|G(z) - E(x)| <= {summary['roundtrip_max']:.3g}; {summary['evaluations_per_image']:.1f} evaluations "
        f"per image; noise std {summary['noise_std']:.3f}"
    )
    if summary["failed"]:
        print(f"warning: {summary['failed']} images did not invert (see steps.csv)", file=sys.stderr)
    print(f"done: noises.safetensors, steps.csv, summary.json, roundtrip.png in {out}")
    return 0


def write_inversion(result: Any, model: Any, images: Any, out: Path) -> None:
    """The files of the module docstring (each written whole, then renamed into place)."""
    import pandas as pd
    import torch
    from safetensors.torch import save

    from pgraft.graft.storage import atomic_write_bytes

    out.mkdir(parents=True, exist_ok=True)
    meta = {"names": json.dumps(result.names), "prompts": json.dumps(result.prompts), "model": str(model.name)}
    inv = result.inversion  # the sampler the noises belong to
    meta |= {"num_inference_steps": str(inv.num_inference_steps), "grid": inv.grid, "tol": str(inv.tol)}
    tensors = {
        "noises": result.noises.contiguous(),
        "latents": result.latents.contiguous(),
        "failed": result.inversion.failed.to(torch.uint8),
    }
    atomic_write_bytes(out / "noises.safetensors", save(tensors, metadata=meta))
    steps = pd.DataFrame([vars(s) for s in result.inversion.steps])
    atomic_write_bytes(out / "steps.csv", steps.to_csv(index=False).encode())
    atomic_write_bytes(out / "summary.json", json.dumps(result.summary(), indent=1).encode())
    atomic_write_bytes(out / "roundtrip.png", roundtrip_png(result, model, images))


def roundtrip_png(result: Any, model: Any, images: Any, limit: int = 8) -> bytes:
    """Rows: the images, the VAE's reconstruction `D(E(x))`, and the decode of `G(z)` (grey where it failed)."""
    import io

    import torch
    from PIL import Image

    n = min(limit, len(images))
    kept = ~result.inversion.failed[:n]
    recon = model.decode(result.latents[:n])
    again = torch.full_like(recon, 0.5)
    if bool(kept.any()):
        again[kept] = model.decode(result.resampled[:n][kept])
    rows = torch.cat([images[:n], recon, again])  # (3n, 3, H, W)
    h, w = rows.shape[-2:]
    grid = rows.reshape(3, n, 3, h, w).permute(0, 3, 1, 4, 2).reshape(3 * h, n * w, 3)
    buf = io.BytesIO()
    Image.fromarray((grid.clamp(0, 1) * 255).round().to(torch.uint8).numpy()).save(buf, format="PNG")
    return buf.getvalue()
