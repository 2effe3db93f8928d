"""What every diffusers pipeline adapter shares: options, the view of LoRA weights over one loaded denoiser,
decoding, fine-tuning, saving and loading the adapter (docs: scaleout §1–2).

A family (`families.sd`: Stable Diffusion 1.x / 2.x and SDXL; `families.flow`: SD3 and Flux) subclasses
`PipelineAdapter` with its noise process, its prompt encoding and one call of its denoiser; the guidance,
the LoRA switching and everything a round stores live here once.

Classifier-free guidance. The model's output is the guided one, `u + s (c − u)`, at sampling *and* in
fine-tuning: the function that is trained is the function that samples, with LoRA active in both branches
(what DDPO does too). The accepted samples are drawn from the guided sampler, so fitting its output makes
the stitched sampler's law move towards the accepted one. No prompt dropout: the unconditional branch is
only ever used inside the guided combination. `--guidance-scale 1` trains and samples the conditional
branch alone. (Flux is guidance-distilled: its scale is an input of one call, see `families.flow`.)

Fine-tuning is LoRA (`families.lora`): a view holds its adapter weights; the base is the adapter switched
off. A round folder holds the view's weights as diffusers LoRA safetensors that a stock pipeline loads with
`load_lora_weights(round_dir)`; the pipeline folder itself is never written to.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from pgraft.core.process import NoiseProcess
from pgraft.families.base import Cond
from pgraft.families.lora import WEIGHTS, LoraSlot, load_diffusers_lora, save_diffusers_lora, slot_for


@dataclass(frozen=True)
class PipelineOptions:
    """The options of a pipeline model (RunConfig fields of the same names); None: the family's default."""

    guidance_scale: float | None = None
    negative_prompt: str = ""
    true_cfg_scale: float = 1.0
    height: int | None = None
    width: int | None = None
    lora_rank: int = 8
    lora_alpha: float | None = None
    lora_targets: tuple[str, ...] = ()
    sample_batch_size: int = 8
    decode_batch_size: int = 8


class PipelineAdapter:
    """A diffusers pipeline as a model pgraft samples, fine-tunes and saves (`families.base.DiffusionAdapter`).

    A subclass sets `denoiser_name` ("unet" / "transformer"), `default_guidance`, `default_targets`, and
    implements `make_process()`, `encode(prompts)`, `_call(x, t, cond, negative)` (one branch of the denoiser on
    the model's sample layout) and, when it differs from the UNet's, `latent_size()`."""

    conditional = True
    domain = "t2i"
    weights_name = WEIGHTS
    gpu_sized = True
    """Minutes per image on a CPU at full size: the runner warns when it runs on one."""
    range_samples, range_steps = 4, 20
    """What the app draws to span a threshold slider before a run (a pipeline costs seconds per image)."""
    denoiser_name = "unet"
    default_guidance = 7.5
    default_targets: tuple[str, ...] = ("to_k", "to_q", "to_v", "to_out.0")
    size_multiple = 1
    """Image sides must be multiples of the VAE's downsampling times this (Flux packs 2x2 latent patches)."""

    def __init__(self, pipe: Any, name: str, options: PipelineOptions, slot: LoraSlot | None = None) -> None:
        self.pipe, self.name, self.options = pipe, name, options
        self.denoiser = getattr(pipe, self.denoiser_name)
        targets = options.lora_targets or self.default_targets
        self.slot = slot or slot_for(self.denoiser, options.lora_rank, options.lora_alpha, tuple(targets))
        self.lora: dict[str, torch.Tensor] | None = None  # None: the base (adapter off)
        self.guidance_scale = self.default_guidance if options.guidance_scale is None else options.guidance_scale
        scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
        self.vae_scale = scale
        default = self.default_size()
        self.height, self.width = options.height or default, options.width or default
        step = scale * self.size_multiple
        for flag, value in (("--height", self.height), ("--width", self.width)):
            if value < step or value % step:
                raise ValueError(f"{flag}: {value} is invalid; give a multiple of {step} (the VAE's downsampling)")
        self.sample_shape = self.latent_shape()
        self.process: NoiseProcess = self.make_process()
        self.info: dict[str, Any] = {"pipeline": type(pipe).__name__, "height": self.height, "width": self.width}
        self.sample_batch_size = options.sample_batch_size
        # Read once: diffusers' `ModelMixin.device` walks every module (a fifth of a tiny pipeline's sampling
        # time when asked per step). The pipeline is placed before the adapter is made and never moved.
        self._device, self._dtype = self.denoiser.device, self.denoiser.dtype

    # -- what a family provides -------------------------------------------------------------------------
    def default_size(self) -> int:
        return int(self.denoiser.config.sample_size) * self.vae_scale

    def latent_shape(self) -> tuple[int, ...]:
        return (int(self.denoiser.config.in_channels), self.height // self.vae_scale, self.width // self.vae_scale)

    def make_process(self) -> NoiseProcess:
        raise NotImplementedError

    def encode(self, prompts: list[str]) -> Cond:
        raise NotImplementedError

    def _call(self, x: torch.Tensor, t: torch.Tensor, cond: Cond, negative: bool) -> torch.Tensor:
        raise NotImplementedError

    # -- what the engine asks ---------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def sampling_batch_size(self) -> int:
        return self.sample_batch_size

    @property
    def cfg_scale(self) -> float:
        """The classifier-free guidance scale of the combination `u + s (c − u)` (1: the prompt's branch alone)."""
        return self.guidance_scale

    @property
    def guided(self) -> bool:
        """Whether a step evaluates an unconditional (negative) branch beside the prompt's."""
        return self.cfg_scale > 1.0

    def _negative(self, n: int) -> list[str] | None:
        """The negative prompts of `n` rows; None for none given, as the pipelines take it."""
        return [self.options.negative_prompt] * n if self.guided and self.options.negative_prompt else None

    def predict(self, x: torch.Tensor, timesteps: torch.Tensor, cond: Any = None) -> torch.Tensor:
        """The guided prediction of this view (LoRA weights active, or the base), in float32."""
        if not isinstance(cond, Cond):
            raise ValueError("a pipeline model needs its prompts' conditioning (Cond) for every sample")
        with self.slot.lock:
            self.slot.use(self, self.lora)
            t = timesteps.to(self.device).reshape(-1).expand(len(x)) if timesteps.dim() <= 1 else timesteps
            xin = x.to(self.device, self.dtype)
            if not self.guided:
                return self._call(xin, t, cond, negative=False).float()
            both = self._call(torch.cat([xin, xin]), torch.cat([t, t]), doubled(cond), negative=False).float()
            uncond, text = both.chunk(2)
            return uncond + self.cfg_scale * (text - uncond)

    __call__ = predict

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images `(N, 3, H, W)` in [0, 1] on the CPU, decoded in chunks (the VAE's scaling and shift)."""
        vae = self.pipe.vae
        out = []
        with torch.no_grad():
            for chunk in latents.split(self.options.decode_batch_size):
                z = chunk.to(self.device, vae.dtype) / vae.config.scaling_factor
                shift = getattr(vae.config, "shift_factor", None)
                if shift:
                    z = z + shift
                image = vae.decode(z, return_dict=False)[0]
                out.append(((image.float() + 1) / 2).clamp(0, 1).cpu())
        return torch.cat(out) if out else torch.empty(0, 3, self.height, self.width)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Latents `(N, *sample_shape)` of images `(N, 3, H, W)` in [0, 1]: the VAE's encoder (the mode of its
        posterior, deterministic), then its shift and scaling, so `decode(encode_images(x)) ≈ x`."""
        vae = self.pipe.vae
        out = []
        with torch.no_grad():
            for chunk in images.split(self.options.decode_batch_size):
                posterior = vae.encode(chunk.to(self.device, vae.dtype) * 2 - 1).latent_dist
                z = posterior.mode()
                shift = getattr(vae.config, "shift_factor", None)
                if shift:
                    z = z - shift
                out.append((z * vae.config.scaling_factor).float().cpu())
        return torch.cat(out) if out else torch.empty(0, *self.sample_shape)

    # -- fine-tuning ------------------------------------------------------------------------------------
    def trainable_copy(self, seed: int = 0) -> PipelineAdapter:
        """A view whose LoRA starts from this view's (fresh weights from `seed`, equal to the base, for the
        base) and trains."""
        view = copy.copy(self)
        view.lora = self.slot.fresh(seed) if self.lora is None else {k: v.clone() for k, v in self.lora.items()}
        self.slot.holder = None
        view.slot.use(view, view.lora)
        for p in view.slot.parameters():
            p.requires_grad_(True)
        return view

    def frozen(self) -> PipelineAdapter:
        """Keep the trained weights (a snapshot) and stop their gradients."""
        if self.lora is not None and self.slot.holder is self:
            self.lora = self.slot.state()
        for p in self.slot.parameters():
            p.requires_grad_(False)
        return self

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        with self.slot.lock:
            self.slot.use(self, self.lora)
            params = self.slot.parameters()
            for p in params:
                p.requires_grad_(True)
            return params

    def train_mode(self, on: bool) -> None:
        self.denoiser.train(on)
        if not on and self.lora is not None and self.slot.holder is self:
            self.lora = self.slot.state()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.lora or {})

    def save(self, path: Path, extra: dict[str, Any] | None = None) -> None:
        """The view's LoRA as diffusers safetensors (`path` names the file; a stock pipeline loads its folder
        with `load_lora_weights`), and what pgraft knows of it beside it."""
        weights = self.slot.state() if self.slot.holder is self else self.lora
        if weights is None:
            raise ValueError("the base model has no fine-tuned weights to save")
        save_diffusers_lora(type(self.pipe), weights, path.parent, self.slot, self.denoiser_name)
        written = path.parent / WEIGHTS
        if written != path:
            written.replace(path)
        info = {"name": self.name, "lora_rank": self.slot.rank, "lora_alpha": self.slot.alpha, **(extra or {})}
        (path.parent / "lora.json").write_text(json.dumps(info, indent=1, default=str))

    def load_weights(self, path: Path) -> None:
        self.lora = load_diffusers_lora(type(self.pipe), path, self.denoiser_name)
        self.slot.holder = None

    def process_config(self) -> dict[str, Any]:
        return self.process.config()  # type: ignore[attr-defined, no-any-return]

    def configured(self, **options: Any) -> PipelineAdapter:
        """This pipeline with other options (guidance, size, LoRA settings): a new base view over the same loaded
        weights, with the LoRA slot of its settings."""
        known = {k: v for k, v in options.items() if k in PipelineOptions.__dataclass_fields__ and v is not None}
        if "lora_targets" in known:
            known["lora_targets"] = tuple(known["lora_targets"])
        merged = replace(self.options, **known)
        view = type(self)(self.pipe, self.name, merged)
        view.info.update({k: v for k, v in self.info.items() if k == "dtype"})
        return view


def doubled(cond: Cond) -> Cond:
    """The conditioning of a doubled batch: the negative rows first, then the prompts (as the pipelines do);
    a tensor without a negative twin (SDXL's time ids) is repeated."""
    t = cond.tensors
    return Cond({k: torch.cat([t.get(f"negative_{k}", v), v]) for k, v in t.items() if not k.startswith("negative_")})
