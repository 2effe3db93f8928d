"""FLOPs per image, counted with `torch.utils.flop_counter.FlopCounterMode` (docs/method.md §4.5)."""

from __future__ import annotations

import torch
from torch import nn


def forward_flops(network: nn.Module, *inputs: torch.Tensor) -> float:
    """FLOPs of one forward pass per sample: the counted total for the batch in `inputs` divided by its size."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(*inputs)
    return counter.get_total_flops() / len(inputs[0])
