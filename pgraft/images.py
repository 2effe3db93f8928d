"""What every image domain shares: images as `(N, C, H, W)` floats, their JPEG sizes (the (in)compressibility
rewards of DDPO), and the PNG grids of a round (the preview drawn from the same seeds every round, so rounds
compare picture by picture; the candidates, accepted ones framed in green), one row block per prompt group."""

from __future__ import annotations

import io

import numpy as np
import torch

JPEG_QUALITY = 95


def jpeg_size(p: torch.Tensor, quality: int = JPEG_QUALITY) -> torch.Tensor:
    """Size in bytes of each image encoded as a JPEG by PIL (grayscale for one channel, RGB for three)."""
    from PIL import Image

    arr = (p.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    sizes = []
    for img in arr:
        pil = (
            Image.fromarray(img[0])
            if img.shape[0] == 1
            else Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0)))
        )
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=quality)
        sizes.append(buf.tell())
    return torch.tensor(sizes, dtype=torch.float64)


ACCEPTED = (40, 200, 70)
REJECTED = (70, 70, 70)
BACKGROUND = (20, 20, 20)


def grid_png(
    images: torch.Tensor,
    frames: torch.Tensor | None = None,
    columns: int = 16,
    scale: int = 4,
    border: int = 2,
    value_range: tuple[float, float] = (-1.0, 1.0),
) -> bytes:
    """A grid of images `(N, C, H, W)` with values in `value_range` (C = 1 or 3); `frames` (bool, `(N,)`) picks
    each cell's frame colour: green when true, grey when false; no frame colour (background) when None."""
    from PIL import Image

    n, c, h, w = images.shape
    columns = max(1, min(columns, n))
    rows = max(1, -(-n // columns))
    cell_h, cell_w = h * scale + 2 * border, w * scale + 2 * border
    canvas = np.zeros((rows * cell_h, columns * cell_w, 3), dtype=np.uint8)
    canvas[:] = BACKGROUND
    lo, hi = value_range
    pixels = ((images.float().clamp(lo, hi) - lo) * (255.0 / (hi - lo))).round().to(torch.uint8)
    pixels = pixels.repeat_interleave(scale, 2).repeat_interleave(scale, 3).expand(-1, 3 if c == 1 else c, -1, -1)
    for i in range(n):
        r, col = divmod(i, columns)
        top, left = r * cell_h, col * cell_w
        if frames is not None:
            canvas[top : top + cell_h, left : left + cell_w] = ACCEPTED if bool(frames[i]) else REJECTED
        canvas[top + border : top + cell_h - border, left + border : left + cell_w - border] = (
            pixels[i].permute(1, 2, 0).numpy()
        )
    buf = io.BytesIO()
    Image.fromarray(canvas).save(buf, format="PNG")
    return buf.getvalue()


def _by_group(groups: torch.Tensor, per_group: int) -> torch.Tensor:
    """Indices of the first `per_group` items of each group, group after group."""
    picks = [torch.nonzero(groups == g).flatten()[:per_group] for g in torch.unique(groups)]
    return torch.cat(picks) if picks else torch.zeros(0, dtype=torch.long)


def preview_png(
    samples: torch.Tensor, groups: torch.Tensor, per_group: int = 64, columns: int = 16, **grid: object
) -> bytes:
    """The preview samples, up to `per_group` of each prompt (a multiple of `columns` keeps groups on their rows)."""
    idx = _by_group(groups, per_group)
    return grid_png(samples[idx], None, columns, **grid)  # type: ignore[arg-type]


def candidates_png(
    samples: torch.Tensor,
    groups: torch.Tensor,
    accepted: torch.Tensor,
    per_group: int = 64,
    columns: int = 16,
    **grid: object,
) -> bytes:
    """The first candidates of each prompt; accepted ones in a green frame, the others in grey."""
    idx = _by_group(groups, per_group)
    return grid_png(samples[idx], accepted[idx], columns, **grid)  # type: ignore[arg-type]
