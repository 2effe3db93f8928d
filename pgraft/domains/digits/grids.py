"""Sample grids of a round as PNG bytes: the preview (the same seeds every round, so rounds compare
picture by picture) and the candidates, accepted ones framed in green.

Images are the model's samples `(N, 1, H, W)` in [-1, 1]; each is shown enlarged (nearest neighbour), one
row block per prompt group. Pure functions of tensors; PIL does the encoding.
"""

from __future__ import annotations

import io

import numpy as np
import torch

ACCEPTED = (40, 200, 70)
REJECTED = (70, 70, 70)
BACKGROUND = (20, 20, 20)


def grid_png(
    images: torch.Tensor,
    frames: torch.Tensor | None = None,
    columns: int = 16,
    scale: int = 4,
    border: int = 2,
) -> bytes:
    """A grid of images `(N, C, H, W)` in [-1, 1] (C = 1 or 3); `frames` (bool, `(N,)`) picks each cell's frame
    colour: green when true, grey when false; no frame colour (background) when `frames` is None."""
    from PIL import Image

    n, c, h, w = images.shape
    columns = max(1, min(columns, n))
    rows = max(1, -(-n // columns))
    cell_h, cell_w = h * scale + 2 * border, w * scale + 2 * border
    canvas = np.zeros((rows * cell_h, columns * cell_w, 3), dtype=np.uint8)
    canvas[:] = BACKGROUND
    pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
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


def preview_png(samples: torch.Tensor, groups: torch.Tensor, per_group: int = 64, columns: int = 16) -> bytes:
    """The preview samples, up to `per_group` of each prompt (a multiple of `columns` keeps groups on their rows)."""
    idx = _by_group(groups, per_group)
    return grid_png(samples[idx], None, columns)


def candidates_png(
    samples: torch.Tensor, groups: torch.Tensor, accepted: torch.Tensor, per_group: int = 64, columns: int = 16
) -> bytes:
    """The first candidates of each prompt; accepted ones in a green frame, the others in grey."""
    idx = _by_group(groups, per_group)
    return grid_png(samples[idx], accepted[idx], columns)
