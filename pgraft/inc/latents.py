"""Inverting real images through a flow pipeline's own sampler, in latent space (docs/method.md §4.1).

A latent flow pipeline (SD3, Flux) samples latents with its `FlowMatchEulerDiscreteScheduler` (shift or dynamic
shifting at the image's `mu`, as `families.flow` sets it) and decodes them with its VAE. Inverting an image is:

1. read it from a local folder (PNG, JPEG, WebP or BMP; resized and centre-cropped to the run's size);
2. encode it with the pipeline's VAE (the posterior's mode, then the VAE's shift and scaling), `x = E(image)`;
3. solve the sampler backwards from `x` (backward Euler, `inc.inversion`) through the *guided* velocity the
   sampler uses with the image's prompt embeddings, so that `G(z, prompt) = x` to the tolerance.

The result holds the noises, the latents, the per-step record of the solve, the round trip `|G(z) − x|_∞`
measured by sampling again from `z`, and how far the noises are from `N(0, I)` (`inc.diagnostics`). The noises
are what a correction flow trains on (`pgraft inc`), and the natural starting point of editing.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pgraft.core.events import Progress, drain
from pgraft.inc.diagnostics import MIN_NOISES, NoiseDiagnostics, diagnose
from pgraft.inc.inversion import Inversion, euler_sample, invert_iter

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def image_files(folder: Path, limit: int | None = None) -> list[Path]:
    """The image files directly in `folder`, by name (`ValueError` naming `--images` when there are none)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ValueError(f"--images: {str(folder)!r} is not a folder; give a folder of image files")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"--images: {str(folder)!r} holds no image files; allowed: {', '.join(IMAGE_SUFFIXES)}")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--limit: {limit!r} is invalid; allowed: an integer >= 1")
        files = files[:limit]
    return files


def read_images(files: list[Path], height: int, width: int) -> torch.Tensor:
    """`(N, 3, height, width)` in [0, 1]: each file in RGB, scaled to cover the size, centre-cropped."""
    import numpy as np
    from PIL import Image, ImageOps

    out = []
    for path in files:
        try:
            with Image.open(path) as opened:
                im = ImageOps.fit(opened.convert("RGB"), (width, height), Image.Resampling.BICUBIC)
                out.append(torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1))
        except (OSError, ValueError) as exc:
            raise ValueError(f"--images: {path.name!r} cannot be read as an image ({exc})") from None
    return torch.stack(out)


MAX_DIAGNOSED = 1024
"""Noises of more dimensions are diagnosed on this many coordinates (a seeded choice): under `N(0, I)` any set
of coordinates is `N(0, I)` too, and the covariance test of a 1024-px SD3 latent (262 k dimensions) would need a
262 k × 262 k matrix."""


def coordinates(z: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """`z` `(n, d)`, or `MAX_DIAGNOSED` of its coordinates chosen with `seed` when `d` is larger."""
    if z.shape[1] <= MAX_DIAGNOSED:
        return z
    pick = torch.randperm(z.shape[1], generator=torch.Generator().manual_seed(seed))[:MAX_DIAGNOSED]
    return z[:, pick.sort().values]


@dataclass(frozen=True)
class ImageInversion:
    """Noises `z` with `G(z, prompt) ≈ E(image)` for every image that inverted, and how well it went."""

    names: list[str]
    prompts: list[str]
    latents: torch.Tensor
    """`E(image)`, `(N, *sample_shape)`."""
    inversion: Inversion
    resampled: torch.Tensor
    """`G(z)`: the latents sampled again from the noises (NaN where the inversion failed)."""
    diagnostics: NoiseDiagnostics | None
    """The kept noises against `N(0, I)` (None with fewer than `diagnostics.MIN_NOISES` kept)."""

    @property
    def noises(self) -> torch.Tensor:
        return self.inversion.noises

    @property
    def roundtrip(self) -> torch.Tensor:
        """`(N,)`: `|G(z) − E(image)|_∞` per image (NaN where the inversion failed)."""
        return (self.resampled - self.latents).flatten(1).abs().amax(1)

    def summary(self) -> dict[str, Any]:
        inv = self.inversion
        kept = ~inv.failed
        return {
            "images": len(self.names),
            "inverted": int(kept.sum()),
            "failed": int(inv.failed.sum()),
            "num_inference_steps": inv.num_inference_steps,
            "grid": inv.grid,
            "tol": inv.tol,
            "max_residual": inv.max_residual,
            "evaluations_per_image": inv.evaluations_per_sample,
            "roundtrip_max": float(self.roundtrip[kept].max()) if bool(kept.any()) else float("nan"),
            "latent_abs_max": float(self.latents.abs().max()) if len(self.latents) else 0.0,
            "noise_std": float(inv.kept.std()) if int(kept.sum()) > 1 else float("nan"),
            "diagnosed_coordinates": min(MAX_DIAGNOSED, int(self.latents[0].numel())) if len(self.latents) else 0,
            **({"diagnostics": self.diagnostics.to_dict()} if self.diagnostics is not None else {}),
        }


def invert_images_iter(
    model: Any,
    images: torch.Tensor,
    prompts: list[str],
    num_inference_steps: int,
    names: list[str] | None = None,
    tol: float = 1e-4,
    max_iter: int = 200,
    on_failure: str = "drop",
    solver: str = "auto",
    grid: str = "linear",
) -> Generator[Progress, None, ImageInversion]:
    """Encode `images` with the pipeline's VAE and invert their latents through its K-step Euler sampler
    (on `grid`: `linear` is the pipeline's own) under `prompts` (one per image); then sample again from the
    noises to measure the round trip."""
    encode = getattr(model, "encode_images", None)
    if encode is None:
        raise ValueError(
            f"--model: {model.name!r} has no image encoder; inverting image files needs a latent flow pipeline "
            "(SD3, Flux); small flows invert their own data with `pgraft inc`"
        )
    if len(prompts) != len(images):
        raise ValueError(f"--prompt: {len(prompts)} prompts for {len(images)} images; give one per image")
    yield Progress("encoding", 0, 1)
    latents = encode(images)
    cond = model.encode(list(prompts))
    inversion = yield from invert_iter(
        model, latents, num_inference_steps, tol=tol, max_iter=max_iter, on_failure=on_failure, solver=solver,
        cond=cond, grid=grid,
    )  # fmt: skip
    yield Progress("round trip", 0, 1)
    kept = ~inversion.failed
    resampled = torch.full_like(latents, float("nan"))
    if bool(kept.any()):
        resampled[kept] = euler_sample(model, inversion.noises[kept], num_inference_steps, cond=cond[kept], grid=grid)
    diagnostics = diagnose(coordinates(inversion.kept.flatten(1))) if int(kept.sum()) >= MIN_NOISES else None
    return ImageInversion(
        names or [str(i) for i in range(len(images))], list(prompts), latents, inversion, resampled, diagnostics
    )


def invert_images(model: Any, images: torch.Tensor, prompts: list[str], num_inference_steps: int, **kw: Any) -> Any:
    """`invert_images_iter` run to the end."""
    return drain(invert_images_iter(model, images, prompts, num_inference_steps, **kw))
