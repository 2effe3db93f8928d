"""The 8×8 digits base models: `digits` (DDPM), `digits-prompted` (class-conditional) and `digits-flow`.

The stand-ins for the paper's image experiments (docs/method.md §5). Data: `sklearn.datasets.load_digits`
(1,797 images of 8×8 pixels with values 0..16), one channel. A fixed, seeded, stratified split holds out
20 % of every class; everything in pgraft uses the same split: the base models and the reward classifier
train on the train part, classifier accuracy and the Fréchet reference use the held-out part.

Two pixel scales, one conversion each way: the diffusion models see images in [-1, 1] (`to_model`), the
classifier and the image rewards see floats in [0, 1] (`to_unit`, which clamps).

Networks are diffusers `UNet2DModel`s wrapped in `UNetDenoiser` (`forward(x, timesteps, cond)`); the
prompted model embeds the digit as a class label (`num_class_embeds=10`). A prompt is a digit: "7",
"a 7", "seven", "the digit 7", "number seven". Weights ship in `assets/` as safetensors with the UNet
config, the noise process and the training record in the metadata; `pgraft pretrain NAME` reproduces them
(`pgraft/models/digits_training.py`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pgraft.core.process import FlowProcess, NoiseProcess, VPProcess, process_from_config
from pgraft.domains.base import asset_dir
from pgraft.families.small import DiffusionModel, read_safetensors_metadata

ASSETS = asset_dir("pgraft.domains.digits")
DOMAIN = "digits"
DIGIT_MODELS = ("digits", "digits-prompted", "digits-prompted-early", "digits-flow")
SPLIT_SEED = 0
HELD_OUT_FRACTION = 0.2
SAMPLE_BATCH_SIZE = 512  # on an accelerator (not timed: no GPU was available)
# On a CPU, 256 rows per UNet call keep the activations in cache: 1,024 samples x 25 steps took 4.8 s in
# chunks of 256 against 6.2 s in chunks of 512 and 6.5 s as one batch (1 thread; bench/bench_digits_sampler.py).
CPU_SAMPLE_BATCH_SIZE = 256
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PROMPT_FORMS = "a digit 0-9 written as '7', 'a 7', 'seven' or 'the digit 7'"

# UNet sizes: "default" is the shipped one (see the model cards for why), "deep" the next candidate
# (918 k parameters), "tiny" is for tests.
UNET_SIZES: dict[str, dict[str, Any]] = {
    "default": {"block_out_channels": [32, 64], "layers_per_block": 1, "norm_num_groups": 8},
    "deep": {"block_out_channels": [32, 64], "layers_per_block": 2, "norm_num_groups": 8},
    "tiny": {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4},
}


# --- data ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DigitsSplit:
    """Images `(N, 1, 8, 8)` in [0, 1] and labels, for the train and held-out parts."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    held_x: torch.Tensor
    held_y: torch.Tensor


@lru_cache(maxsize=1)
def digits_split(seed: int = SPLIT_SEED, held_out: float = HELD_OUT_FRACTION) -> DigitsSplit:
    """The fixed stratified split: per class, a seeded permutation; the first `held_out` fraction is held out."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(data.target, dtype=torch.long)
    rng = np.random.default_rng(seed)
    held: list[int] = []
    for c in range(10):
        idx = np.flatnonzero(data.target == c)
        held += rng.permutation(idx)[: round(held_out * len(idx))].tolist()
    mask = torch.zeros(len(labels), dtype=torch.bool)
    mask[held] = True
    return DigitsSplit(images[~mask], labels[~mask], images[mask], labels[mask])


def to_model(x: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] to the diffusion models' scale [-1, 1]."""
    return x * 2.0 - 1.0


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Model samples (nominally [-1, 1]) to pixels in [0, 1], clamped: what rewards and the classifier see."""
    return ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0)


# --- prompts -------------------------------------------------------------------------------------------
_PROMPT = re.compile(r"^(?:(?:a|an|the)\s+)?(?:(?:digit|number)\s+)?(\w+)$")


def parse_digit(prompt: str) -> int:
    """The digit a prompt asks for: "7", "a 7", "seven", "the digit 7", "number seven" (case-insensitive)."""
    m = _PROMPT.match(" ".join(str(prompt).strip().lower().split()))
    word = m.group(1) if m else ""
    if len(word) == 1 and word.isdigit():
        return int(word)
    if word in DIGIT_WORDS:
        return DIGIT_WORDS.index(word)
    raise ValueError(f"--prompts: {prompt!r} is not a digit prompt; allowed: {PROMPT_FORMS}")


def encode_digit_prompts(prompts: list[str]) -> torch.Tensor:
    """Class labels `(len(prompts),)` of the prompted model (`ValueError` naming `--prompts` otherwise)."""
    return torch.tensor([parse_digit(p) for p in prompts], dtype=torch.long)


# --- the network ---------------------------------------------------------------------------------------
class UNetDenoiser(nn.Module):
    """`UNet2DModel` in the engine's signature: `(x_t, timesteps, cond) ↦ prediction`; `cond` are class labels."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.unet(x, timesteps, class_labels=cond).sample


def unet_config(size: str = "default", conditional: bool = False) -> dict[str, Any]:
    """The `UNet2DModel` config of a size (`UNET_SIZES`): one channel, 8×8, two resolutions, attention only
    in the 4×4 middle block (diffusers' default)."""
    if size not in UNET_SIZES:
        raise ValueError(f"--size: {size!r} is not a digits UNet size; choose one of {sorted(UNET_SIZES)}")
    return {
        "sample_size": 8,
        "in_channels": 1,
        "out_channels": 1,
        "down_block_types": ["DownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "UpBlock2D"],
        "num_class_embeds": 10 if conditional else None,
        **UNET_SIZES[size],
    }


def build_network(config: dict[str, Any]) -> UNetDenoiser:
    from diffusers import UNet2DModel

    unet: Any = UNet2DModel(**config)
    return UNetDenoiser(unet)


def digits_process(kind: str) -> NoiseProcess:
    """VP with DDPM's linear β schedule (ε-prediction), or a rectified flow.

    Not the cosine schedule: its last β is capped at 0.999, so ᾱ at t = 999 is about 2e-9, and the first
    step of the sampler ("trailing" grid, starting at pure noise) multiplies the network's ε error by
    sqrt(ᾱ_959 / ᾱ_999) ≈ 1,300: samples blow up to |x| ~ 1e3 (measured). With the linear schedule the
    factor is 1.5.
    """
    if kind == "flow":
        return FlowProcess()
    return VPProcess(beta_schedule="linear")


def model_kind(name: str) -> tuple[str, bool]:
    """`(process kind, conditional)` of a digits model name."""
    if name not in DIGIT_MODELS:
        raise ValueError(f"--model: {name!r} is not a digits model; choose one of {list(DIGIT_MODELS)}")
    return ("flow" if name == "digits-flow" else "vp"), name.startswith("digits-prompted")


def build_digits_model(
    name: str, config: dict[str, Any], info: dict[str, Any] | None = None, process: NoiseProcess | None = None
) -> DiffusionModel:
    """A digits `DiffusionModel` with a freshly initialised network of the given UNet config."""
    kind, conditional = model_kind(name)
    return DiffusionModel(
        build_network(config),
        process or digits_process(kind),
        (1, 8, 8),
        name,
        DOMAIN,
        conditional=conditional,
        info={"unet_config": config, **(info or {})},
        encode_prompts=encode_digit_prompts if conditional else None,
        sample_batch_size=SAMPLE_BATCH_SIZE,
        cpu_sample_batch_size=CPU_SAMPLE_BATCH_SIZE,
    )


def weights_path(name: str) -> Path:
    return ASSETS / f"{name}.safetensors"


def load_digits_model(name: str, device: str = "cpu", path: Path | None = None) -> DiffusionModel:
    """Load shipped (or given) weights; the UNet config comes from the file's metadata."""
    path = Path(path) if path is not None else weights_path(name)
    if not path.exists():
        raise ValueError(f"--model: weights {str(path)!r} are missing; run `pgraft pretrain {name}`")
    meta = read_safetensors_metadata(path)
    config = json.loads(meta["unet_config"])
    info = {k: json.loads(v) for k, v in meta.items() if k in ("training", "quality")}
    model = build_digits_model(name, config, info, process_from_config(json.loads(meta["process"])))
    model.load_weights(path)
    use_sampling_layout(model)
    return model.to(device).frozen()


def use_sampling_layout(model: DiffusionModel) -> None:
    """Channels-last weights: the UNet's convolutions sampled 5-10 % faster on a CPU (and it is the layout GPU
    convolutions prefer); fine-tuning a copy ran at the same speed. Training from scratch (`pretrain`) keeps
    the default layout, in which the shipped weights were trained, so it reproduces them."""
    model.network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # (torch stubs lack it)
