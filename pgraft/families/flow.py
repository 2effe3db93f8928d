"""Stable Diffusion 3 / 3.5 and Flux folders as `DiffusionAdapter`s: rectified flows in pgraft's loop
(docs: scaleout §1).

Both are `FlowProcess` models, `x_σ = (1 − σ) x_0 + σ ε`, velocity `v = ε − x_0`, on the folder's
`FlowMatchEulerDiscreteScheduler` configuration with explicit sigmas `linspace(1, 1/n, n)` (as FluxPipeline
passes them; a shifted scheduler would otherwise shift its endpoints twice) and, for dynamic shifting, `mu`
from the image's sequence length as the pipelines compute it. At η = 0 the sampler is the pipelines' Euler
step; P-GRAFT and the bias–variance study default to η = 1, the flow's stochastic sampler (`FlowProcess`).

- **SD3** (`StableDiffusion3Pipeline`): three text encoders through `encode_prompt` (a folder without the T5
  encoder gets its zeros, as the pipeline does), pooled projections, classifier-free guidance on a doubled
  batch (`families.pipeline`).
- **Flux** (`FluxPipeline`): CLIP pooled and T5 sequence embeddings, latents packed into 2×2 patches for the
  transformer (pgraft's samples stay unpacked `(C, H/8, W/8)`, so seeds, records and rewards look like every
  other latent model's), image and text position ids, timesteps divided by 1000. FLUX.1-dev is
  guidance-distilled: `--guidance-scale` is the guidance *embedding* of one call; true classifier-free
  guidance (two calls combined) only with `--true-cfg-scale > 1` and a `--negative-prompt`.
"""

from __future__ import annotations

from typing import Any

import torch

from pgraft.core.process import FlowProcess
from pgraft.families.base import Cond
from pgraft.families.pipeline import PipelineAdapter

SD3_TARGETS = (
    "attn.add_k_proj",
    "attn.add_q_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
    "attn.to_k",
    "attn.to_out.0",
    "attn.to_q",
    "attn.to_v",
)
FLUX_TARGETS = (*SD3_TARGETS, "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2")
"""The LoRA targets of diffusers' DreamBooth LoRA examples for each transformer."""


def calculate_shift(seq_len: int, config: dict[str, Any], max_shift: float) -> float:
    """`mu` of dynamic shifting for `seq_len` image tokens (diffusers' `calculate_shift`, with the folder's
    bounds; the pipelines' own defaults for `max_shift` differ: SD3 1.16, Flux 1.15)."""
    base_len, max_len = int(config.get("base_image_seq_len", 256)), int(config.get("max_image_seq_len", 4096))
    base, top = float(config.get("base_shift", 0.5)), float(config.get("max_shift", max_shift))
    m = (top - base) / (max_len - base_len)
    return seq_len * m + base - m * base_len


class StableDiffusion3Adapter(PipelineAdapter):
    """An SD3 / SD3.5 pipeline: a rectified-flow MMDiT with classifier-free guidance."""

    denoiser_name = "transformer"
    default_guidance = 7.0
    default_targets = SD3_TARGETS
    max_shift = 1.16

    @property
    def size_multiple(self) -> int:  # type: ignore[override]
        return int(self.denoiser.config.patch_size)

    def image_seq_len(self) -> int:
        patch = int(self.denoiser.config.patch_size)
        return (self.sample_shape[1] // patch) * (self.sample_shape[2] // patch)

    def make_process(self) -> FlowProcess:
        config = dict(self.pipe.scheduler.config)
        dynamic = config.get("use_dynamic_shifting")
        mu = calculate_shift(self.image_seq_len(), config, self.max_shift) if dynamic else None
        return FlowProcess.from_scheduler_config(config, mu)

    def encode(self, prompts: list[str]) -> Cond:
        with torch.no_grad():
            pe, npe, pooled, npooled = self.pipe.encode_prompt(
                prompt=list(prompts),
                prompt_2=None,
                prompt_3=None,
                device=self.device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=self.guided,
                negative_prompt=self._negative(len(prompts)),
            )
        tensors = {"prompt_embeds": pe.float().cpu(), "pooled_prompt_embeds": pooled.float().cpu()}
        if self.guided:
            tensors["negative_prompt_embeds"] = npe.float().cpu()
            tensors["negative_pooled_prompt_embeds"] = npooled.float().cpu()
        return Cond(tensors)

    def _call(self, x: torch.Tensor, t: torch.Tensor, cond: Cond, negative: bool) -> torch.Tensor:
        c = cond.tensors
        return self.denoiser(
            hidden_states=x,
            timestep=t,
            encoder_hidden_states=c["prompt_embeds"].to(self.device, self.dtype),
            pooled_projections=c["pooled_prompt_embeds"].to(self.device, self.dtype),
            return_dict=False,
        )[0]


class FluxAdapter(PipelineAdapter):
    """A Flux pipeline: packed latents, the guidance embedding, true CFG only when asked for."""

    denoiser_name = "transformer"
    default_guidance = 3.5
    default_targets = FLUX_TARGETS
    size_multiple = 2
    max_shift = 1.15

    def default_size(self) -> int:
        return int(getattr(self.pipe, "default_sample_size", 128)) * self.vae_scale

    def latent_shape(self) -> tuple[int, ...]:
        channels = int(self.denoiser.config.in_channels) // 4
        return (channels, self.height // self.vae_scale, self.width // self.vae_scale)

    def make_process(self) -> FlowProcess:
        config = dict(self.pipe.scheduler.config)
        seq_len = (self.sample_shape[1] // 2) * (self.sample_shape[2] // 2)
        mu = calculate_shift(seq_len, config, self.max_shift) if config.get("use_dynamic_shifting") else None
        return FlowProcess.from_scheduler_config(config, mu)

    @property
    def cfg_scale(self) -> float:
        """True classifier-free guidance: `--true-cfg-scale` with a negative prompt, else none."""
        return self.options.true_cfg_scale if self.options.negative_prompt else 1.0

    @property
    def guided(self) -> bool:
        return self.cfg_scale > 1.0

    def _encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        pe, pooled, _text_ids = self.pipe.encode_prompt(
            prompt=list(prompts), prompt_2=None, device=self.device, num_images_per_prompt=1
        )
        return pe.float().cpu(), pooled.float().cpu()

    def encode(self, prompts: list[str]) -> Cond:
        with torch.no_grad():
            pe, pooled = self._encode(prompts)
            tensors = {"prompt_embeds": pe, "pooled_prompt_embeds": pooled}
            if self.guided:
                npe, npooled = self._encode([self.options.negative_prompt] * len(prompts))
                tensors.update(negative_prompt_embeds=npe, negative_pooled_prompt_embeds=npooled)
        return Cond(tensors)

    def _call(self, x: torch.Tensor, t: torch.Tensor, cond: Cond, negative: bool) -> torch.Tensor:
        c = cond.tensors
        n, channels, h, w = x.shape
        emb = c["prompt_embeds"].to(self.device, self.dtype)
        packed = self.pipe._pack_latents(x, n, channels, h, w)
        image_ids, text_ids, guidance = self._ids(n, h, w, emb.shape[1])
        out = self.denoiser(
            hidden_states=packed,
            timestep=t.to(self.dtype) / 1000,
            guidance=guidance,
            pooled_projections=c["pooled_prompt_embeds"].to(self.device, self.dtype),
            encoder_hidden_states=emb,
            txt_ids=text_ids,
            img_ids=image_ids,
            return_dict=False,
        )[0]
        return self.pipe._unpack_latents(out, self.height, self.width, self.vae_scale)

    def _ids(self, n: int, h: int, w: int, text_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Image and text position ids and the guidance embedding's input, made once per shape (the pipeline
        makes them once per call; per step they cost a tenth of a tiny Flux's sampling time)."""
        key = (n, h, w, text_len)
        cache: dict[tuple[int, ...], Any] = self.__dict__.setdefault("_id_cache", {})
        if key not in cache:
            image_ids = self.pipe._prepare_latent_image_ids(n, h // 2, w // 2, self.device, self.dtype)
            text_ids = torch.zeros(text_len, 3, device=self.device, dtype=self.dtype)
            guidance = None
            if self.denoiser.config.guidance_embeds:
                guidance = torch.full([n], self.guidance_scale, device=self.device, dtype=torch.float32)
            cache.clear()
            cache[key] = (image_ids, text_ids, guidance)
        return cache[key]  # type: ignore[no-any-return]
