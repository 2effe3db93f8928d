"""The small-model family: a denoising network we train, plus its noise process (`DiffusionAdapter`).

A network is any `torch.nn.Module` called as `network(x_t, timesteps, cond)` that returns the prediction
of its process's parameterisation (ε, v or flow velocity); `cond` is one tensor (a class label per sample).
Domains wrap their architecture (an MLP, a diffusers `UNet2DModel`, the analytic score of a mixture) in that
signature; the engine never looks inside. Fine-tuning trains a deep copy of the whole network (they are
small), saved whole every round; samples are what the rewards see (`decode` is the identity).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pgraft.core.process import NoiseProcess
from pgraft.families.base import Cond


@dataclass
class DiffusionModel:
    """A network and its noise process, with what is needed to sample, fine-tune and save it.

    `domain` names the kind of data ("toy2d", "image", ...) so rewards and metrics can be matched to it;
    `conditional` models take a `cond` tensor (one entry per sample, e.g. a class label for a prompt).
    """

    network: nn.Module
    process: NoiseProcess
    sample_shape: tuple[int, ...]
    name: str
    domain: str
    conditional: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    encode_prompts: Callable[[list[str]], torch.Tensor] | None = None
    sample_batch_size: int = 4096
    """Rows per network call when sampling on an accelerator."""
    cpu_sample_batch_size: int | None = None
    """Rows per network call on a CPU, where a chunk whose activations stay in cache runs faster than one big
    batch (None: `sample_batch_size`). Measured per model (see `bench/bench_digits_sampler.py`)."""

    def predict(
        self, x: torch.Tensor, timesteps: torch.Tensor, cond: Cond | torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.network(x, timesteps, cond.single() if isinstance(cond, Cond) else cond)

    __call__ = predict

    def encode(self, prompts: list[str]) -> Cond:
        """The conditioning of each prompt (`ValueError` naming `--prompts` for one the model cannot read)."""
        if self.encode_prompts is None:
            raise ValueError(f"--prompts: {self.name!r} is not a prompted model; leave --prompts out")
        return Cond({"labels": self.encode_prompts(list(prompts))})

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """What the rewards see: the samples themselves."""
        return x

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.network.parameters() if p.requires_grad]

    def train_mode(self, on: bool) -> None:
        self.network.train(on)

    @property
    def sampling_batch_size(self) -> int:
        """Rows per network call when sampling on this model's device."""
        if self.device.type == "cpu" and self.cpu_sample_batch_size is not None:
            return self.cpu_sample_batch_size
        return self.sample_batch_size

    @property
    def device(self) -> torch.device:
        for p in self.network.parameters():
            return p.device
        for b in self.network.buffers():
            return b.device
        return torch.device("cpu")

    def to(self, device: torch.device | str) -> DiffusionModel:
        self.network.to(device)
        return self

    def trainable_copy(self, seed: int = 0) -> DiffusionModel:
        """An independent copy whose parameters train; the base stays frozen and untouched.

        A network may define `trainable_copy()` itself (the exact mixture model adds a zero-initialised
        residual, so the copy starts equal to the base); whatever it initialises draws from the global RNG
        seeded with `seed` (and the RNG is restored after), so a run is reproducible from its own seed.
        """
        make = getattr(self.network, "trainable_copy", None)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            network = make() if callable(make) else copy.deepcopy(self.network)
        network.requires_grad_(True)
        network.train()
        return DiffusionModel(
            network=network,
            process=self.process,
            sample_shape=self.sample_shape,
            name=self.name,
            domain=self.domain,
            conditional=self.conditional,
            info=dict(self.info),
            encode_prompts=self.encode_prompts,
            sample_batch_size=self.sample_batch_size,
            cpu_sample_batch_size=self.cpu_sample_batch_size,
        )

    def frozen(self) -> DiffusionModel:
        self.network.requires_grad_(False)
        self.network.eval()
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().contiguous() for k, v in self.network.state_dict().items()}

    def save(self, path: Path, extra: dict[str, Any] | None = None) -> None:
        """Weights as safetensors, the model's description in the metadata (never a pickle)."""
        from safetensors.torch import save_file

        metadata = {"name": self.name, "domain": self.domain, "process": json.dumps(self.process_config())}
        metadata.update({k: json.dumps(v) for k, v in (extra or {}).items()})
        save_file({k: v.cpu() for k, v in self.state_dict().items()}, str(path), metadata=metadata)

    def load_weights(self, path: Path) -> None:
        from safetensors.torch import load_file

        state = load_file(str(path), device=str(self.device))
        self.network.load_state_dict(state)

    def process_config(self) -> dict[str, Any]:
        config = getattr(self.process, "config", None)
        return config() if callable(config) else {"kind": self.process.kind}


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})
