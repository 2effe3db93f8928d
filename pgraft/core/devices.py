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


def reset_peak_memory(device: str) -> None:
    """Start counting the peak memory of `device` afresh (CUDA only; nothing elsewhere)."""
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device: str) -> float | None:
    """GiB of `device` memory that tensors held at most since `reset_peak_memory` (None off CUDA)."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated(device) / 2**30
    return None
