"""Stable Diffusion 1.x / 2.x and SDXL folders as `DiffusionAdapter`s: the pipeline's own pieces inside pgraft's
loop (docs: scaleout §1).

The pipeline supplies `encode_prompt`, the scheduler configuration of the folder, the UNet and
`vae.decode`; the loop, the seeds, the cutoff, recording and cancellation stay pgraft's (`core.sampling`).
The noise process is the folder's: ε or v-prediction, its betas, its timestep spacing ("leading" with the
folder's offset; a "linspace" folder samples on "trailing", see `VPProcess`).

Classifier-free guidance. The model's output is the guided one, `u + s (c − u)`, at sampling *and* in
fine-tuning: the function that is trained is the function that samples, with LoRA active in both branches
(what DDPO does too). The accepted samples are drawn from the guided sampler, so fitting its output makes
the stitched sampler's law move towards the accepted one. No prompt dropout: the unconditional branch is
only ever used inside the guided combination. `--guidance-scale 1` trains and samples the conditional
branch alone.

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

from pgraft.core.process import VPProcess
from pgraft.families.base import Cond
from pgraft.families.lora import DEFAULT_TARGETS, WEIGHTS, LoraSlot, load_diffusers_lora, save_diffusers_lora, slot_for


@dataclass(frozen=True)
class PipelineOptions:
    """The options of a pipeline model (RunConfig fields of the same names)."""

    guidance_scale: float = 7.5
    negative_prompt: str = ""
    height: int | None = None
    width: int | None = None
    lora_rank: int = 8
    lora_alpha: float | None = None
    lora_targets: tuple[str, ...] = ()
    sample_batch_size: int = 8
    decode_batch_size: int = 8


class StableDiffusionAdapter:
    """A Stable Diffusion 1.x / 2.x pipeline (ε or v) as a model pgraft samples, fine-tunes and saves."""

    conditional = True
    domain = "t2i"
    weights_name = WEIGHTS
    gpu_sized = True
    """Minutes per image on a CPU at full size: the runner warns when it runs on one."""
    range_samples, range_steps = 4, 20
    """What the app draws to span a threshold slider before a run (a pipeline costs seconds per image)."""

    def __init__(self, pipe: Any, name: str, options: PipelineOptions, slot: LoraSlot | None = None) -> None:
        self.pipe, self.name, self.options = pipe, name, options
        self.unet = pipe.unet
        targets = options.lora_targets or DEFAULT_TARGETS
        self.slot = slot or slot_for(self.unet, options.lora_rank, options.lora_alpha, tuple(targets))
        self.lora: dict[str, torch.Tensor] | None = None  # None: the base (adapter off)
        self.process = VPProcess.from_scheduler_config(dict(pipe.scheduler.config))
        scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
        self.vae_scale = scale
        default = int(self.unet.config.sample_size) * scale
        self.height, self.width = options.height or default, options.width or default
        for flag, value in (("--height", self.height), ("--width", self.width)):
            if value < scale or value % scale:
                raise ValueError(f"{flag}: {value} is invalid; give a multiple of {scale} (the VAE's downsampling)")
        self.sample_shape = (int(self.unet.config.in_channels), self.height // scale, self.width // scale)
        self.info: dict[str, Any] = {"pipeline": type(pipe).__name__, "height": self.height, "width": self.width}
        self.sample_batch_size = options.sample_batch_size
        # Read once: diffusers' `ModelMixin.device` walks every module (a fifth of a tiny pipeline's sampling
        # time when asked per step). The pipeline is placed before the adapter is made and never moved.
        self._device, self._dtype = self.unet.device, self.unet.dtype

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
    def guided(self) -> bool:
        return self.options.guidance_scale > 1.0

    def encode(self, prompts: list[str]) -> Cond:
        """Text embeddings of each prompt (and of the negative prompt, for guidance), on the CPU."""
        with torch.no_grad():
            pe, npe = self.pipe.encode_prompt(
                list(prompts),
                self.device,
                1,
                self.guided,
                negative_prompt=self._negative(len(prompts)),
            )
        tensors = {"prompt_embeds": pe.float().cpu()}
        if self.guided:
            tensors["negative_prompt_embeds"] = npe.float().cpu()
        return Cond(tensors)

    def _negative(self, n: int) -> list[str] | None:
        """The negative prompts of `n` rows; None for none given, as the pipelines take it (SDXL then uses zeros,
        its `force_zeros_for_empty_prompt`)."""
        return [self.options.negative_prompt] * n if self.guided and self.options.negative_prompt else None

    def _unet(self, x: torch.Tensor, t: torch.Tensor, cond: Cond, negative: bool) -> torch.Tensor:
        key = "negative_prompt_embeds" if negative else "prompt_embeds"
        emb = cond.tensors[key].to(self.device, self.dtype)
        return self.unet(x, t, encoder_hidden_states=emb, return_dict=False)[0]

    def predict(self, x: torch.Tensor, timesteps: torch.Tensor, cond: Any = None) -> torch.Tensor:
        """The guided prediction of this view (LoRA weights active, or the base), in float32."""
        if not isinstance(cond, Cond):
            raise ValueError("a pipeline model needs its prompts' conditioning (Cond) for every sample")
        with self.slot.lock:
            self.slot.use(self, self.lora)
            t = timesteps.to(self.device).reshape(-1).expand(len(x)) if timesteps.dim() <= 1 else timesteps
            xin = x.to(self.device, self.dtype)
            if not self.guided:
                return self._unet(xin, t, cond, negative=False).float()
            both = self._unet(torch.cat([xin, xin]), torch.cat([t, t]), _both(cond), negative=False).float()
            uncond, text = both.chunk(2)
            return uncond + self.options.guidance_scale * (text - uncond)

    __call__ = predict

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images `(N, 3, H, W)` in [0, 1] on the CPU, decoded in chunks."""
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

    # -- fine-tuning ------------------------------------------------------------------------------------
    def trainable_copy(self, seed: int = 0) -> StableDiffusionAdapter:
        """A view whose LoRA starts from this view's (fresh weights from `seed`, equal to the base, for the
        base) and trains."""
        view = copy.copy(self)
        view.lora = self.slot.fresh(seed) if self.lora is None else {k: v.clone() for k, v in self.lora.items()}
        self.slot.holder = None
        view.slot.use(view, view.lora)
        for p in view.slot.parameters():
            p.requires_grad_(True)
        return view

    def frozen(self) -> StableDiffusionAdapter:
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
        self.unet.train(on)
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
        save_diffusers_lora(type(self.pipe), weights, path.parent, self.slot)
        written = path.parent / WEIGHTS
        if written != path:
            written.replace(path)
        info = {"name": self.name, "lora_rank": self.slot.rank, "lora_alpha": self.slot.alpha, **(extra or {})}
        (path.parent / "lora.json").write_text(json.dumps(info, indent=1, default=str))

    def load_weights(self, path: Path) -> None:
        self.lora = load_diffusers_lora(type(self.pipe), path)
        self.slot.holder = None

    def process_config(self) -> dict[str, Any]:
        return self.process.config()

    def configured(self, **options: Any) -> StableDiffusionAdapter:
        """This pipeline with other options (guidance, size, LoRA settings): a new base view over the same loaded
        weights, with the LoRA slot of its settings."""
        known = {k: v for k, v in options.items() if k in PipelineOptions.__dataclass_fields__ and v is not None}
        if "lora_targets" in known:
            known["lora_targets"] = tuple(known["lora_targets"])
        merged = replace(self.options, **known)
        view = type(self)(self.pipe, self.name, merged)
        view.info.update({k: v for k, v in self.info.items() if k == "dtype"})
        return view


def _both(cond: Cond) -> Cond:
    """The conditioning of a doubled batch: the negative rows first, then the prompts (as the pipelines do);
    a tensor without a negative twin (SDXL's time ids) is repeated."""
    t = cond.tensors
    return Cond({k: torch.cat([t.get(f"negative_{k}", v), v]) for k, v in t.items() if not k.startswith("negative_")})


class StableDiffusionXLAdapter(StableDiffusionAdapter):
    """SDXL: two text encoders, pooled text embeddings and the size/crop time ids as added conditions."""

    def encode(self, prompts: list[str]) -> Cond:
        neg = self._negative(len(prompts))
        with torch.no_grad():
            pe, npe, pooled, npooled = self.pipe.encode_prompt(
                prompt=list(prompts),
                device=self.device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=self.guided,
                negative_prompt=neg,
            )
        projection = self.pipe.text_encoder_2.config.projection_dim
        ids = self.pipe._get_add_time_ids(
            (self.height, self.width),
            (0, 0),
            (self.height, self.width),
            pe.dtype,
            text_encoder_projection_dim=projection,
        )
        tensors = {
            "prompt_embeds": pe.float().cpu(),
            "pooled_prompt_embeds": pooled.float().cpu(),
            "time_ids": ids.float().cpu().repeat(len(prompts), 1),
        }
        if self.guided:
            tensors["negative_prompt_embeds"] = npe.float().cpu()
            tensors["negative_pooled_prompt_embeds"] = npooled.float().cpu()
        return Cond(tensors)

    def _unet(self, x: torch.Tensor, t: torch.Tensor, cond: Cond, negative: bool) -> torch.Tensor:
        c = cond.tensors
        added = {
            "text_embeds": c["pooled_prompt_embeds"].to(self.device, self.dtype),
            "time_ids": c["time_ids"].to(self.device, self.dtype),
        }
        emb = c["prompt_embeds"].to(self.device, self.dtype)
        return self.unet(x, t, encoder_hidden_states=emb, added_cond_kwargs=added, return_dict=False)[0]
