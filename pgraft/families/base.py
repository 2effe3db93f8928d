"""The contract between the engine and a model family: what the samplers, fine-tuning and the round runner
may ask of a base model, whatever it is (a small network we train, a Stable Diffusion pipeline, a flow
pipeline).

A family is one adapter implementing `DiffusionAdapter`, as k-diffusion wraps each foreign model family in
one small class with one signature:

- `encode(prompts) -> Cond`: the conditioning of each prompt, row-aligned (`Cond` holds any number of
  tensors with one row per prompt: a class label, or text embeddings, pooled embeddings and time ids);
- `predict(x, timesteps, cond)` (also `model(x, t, cond)`): the output of the process's parameterisation
  (ε, v or flow velocity) at per-sample timesteps, with whatever guidance the family applies;
- `decode(x)`: the final sample as the reward sees it (identity for small models; a VAE decode for latent
  pipelines);
- `trainable_copy(seed)` / `frozen()`: a model whose trainable part starts from this one's and trains (any new
  parameters initialised from `seed`), the base staying untouched (a deep copy for small networks; for
  pipelines a LoRA adapter over the same weights, the base obtained by disabling it, as TRL obtains its
  reference model);
- `trainable_parameters()`, `train_mode(on)`, and `save(path, extra)` / `load_weights(path)` of the trainable
  part only, as safetensors with the description in the metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from pgraft.core.process import NoiseProcess


@dataclass(frozen=True)
class Cond:
    """Row-aligned conditioning: every tensor has one row per sample (or per prompt, before selection)."""

    tensors: dict[str, torch.Tensor]

    def __post_init__(self) -> None:
        rows = {len(t) for t in self.tensors.values()}
        if len(rows) > 1:
            sizes = {k: len(t) for k, t in self.tensors.items()}
            raise ValueError(f"Cond: tensors disagree on the number of rows: {sizes}")

    def __len__(self) -> int:
        return next((len(t) for t in self.tensors.values()), 0)

    def __getitem__(self, index: Any) -> Cond:
        """The rows `index` (a slice, an index tensor or a boolean mask), as for a tensor."""
        return Cond({k: t[index] for k, t in self.tensors.items()})

    def to(self, device: torch.device | str) -> Cond:
        return Cond({k: t.to(device) for k, t in self.tensors.items()})

    def cpu(self) -> Cond:
        return self.to("cpu")

    def repeat_interleave(self, repeats: int, dim: int = 0) -> Cond:
        """Each row `repeats` times in a row (like `Tensor.repeat_interleave(repeats, 0)`)."""
        if dim != 0:
            raise ValueError("Cond.repeat_interleave: only rows (dim 0) can be repeated")
        return Cond({k: t.repeat_interleave(repeats, 0) for k, t in self.tensors.items()})

    @staticmethod
    def cat(parts: Sequence[Cond]) -> Cond:
        keys = parts[0].tensors.keys()
        return Cond({k: torch.cat([p.tensors[k] for p in parts]) for k in keys})

    def single(self) -> torch.Tensor:
        """The one tensor of a single-tensor conditioning (a class label)."""
        if len(self.tensors) != 1:
            raise ValueError(f"Cond: expected one tensor, got {sorted(self.tensors)}")
        return next(iter(self.tensors.values()))


def cat_rows(parts: Sequence[Any]) -> Any:
    """Rows of several conditionings (tensors or `Cond`) one after the other; None when every part is None."""
    present = [p for p in parts if p is not None]
    if not present:
        return None
    if len(present) != len(parts):
        raise ValueError("cat_rows: some parts have conditioning and some do not")
    if isinstance(present[0], Cond):
        return Cond.cat(present)
    return torch.cat(present)


@runtime_checkable
class DiffusionAdapter(Protocol):
    """A base model as the engine sees it (see the module docstring)."""

    name: str
    domain: str
    process: NoiseProcess
    sample_shape: tuple[int, ...]
    conditional: bool
    info: dict[str, Any]

    @property
    def device(self) -> torch.device: ...

    @property
    def sampling_batch_size(self) -> int: ...

    def encode(self, prompts: list[str]) -> Cond: ...

    def predict(self, x: torch.Tensor, timesteps: torch.Tensor, cond: Any = None) -> torch.Tensor: ...

    def __call__(self, x: torch.Tensor, timesteps: torch.Tensor, cond: Any = None) -> torch.Tensor: ...

    def decode(self, x: torch.Tensor) -> torch.Tensor: ...

    def trainable_copy(self, seed: int = 0) -> DiffusionAdapter: ...

    def frozen(self) -> DiffusionAdapter: ...

    def trainable_parameters(self) -> list[torch.nn.Parameter]: ...

    def train_mode(self, on: bool) -> None: ...

    def save(self, path: Path, extra: dict[str, Any] | None = None) -> None: ...

    def load_weights(self, path: Path) -> None: ...
