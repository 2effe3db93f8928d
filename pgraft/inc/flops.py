"""FLOPs per image, counted with `torch.utils.flop_counter.FlopCounterMode` (docs/method.md §4.5).

The counter counts the multiply-adds of matrix products and convolutions (2 FLOPs each), not elementwise
work (activations, norms, bias adds, sinusoidal embeddings): the usual convention of FLOPs-per-image
figures. A closed-form velocity with no matrix product (the exact toy mixture) counts 0.
"""

from __future__ import annotations

import torch
from torch import nn


def forward_flops(network: nn.Module, *inputs: torch.Tensor) -> float:
    """FLOPs of one forward pass per sample: the counted total for the batch in `inputs` divided by its size."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(*inputs)
    return counter.get_total_flops() / len(inputs[0])


def flops_per_image(base: float, num_inference_steps: int, correction: float = 0.0, correction_steps: int = 0) -> float:
    """`m × FLOPs(correction) + K × FLOPs(base)`: the compute of one sample of `G_K(c_m(ε))`."""
    return correction_steps * correction + num_inference_steps * base
