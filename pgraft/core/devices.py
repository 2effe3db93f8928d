"""The one device resolver: `auto` picks the GPU when one is visible; an unavailable device is refused."""

from __future__ import annotations

import torch


def resolve_device(device: str) -> str:
    """`"auto"` → `"cuda"` when CUDA is available, else `"cpu"`; an explicit device must exist here."""
    if device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device: {device!r} asked for, but no CUDA device is available; use cpu or auto")
        if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError("--device: 'mps' asked for, but no MPS device is available; use cpu or auto")
        return device
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"
