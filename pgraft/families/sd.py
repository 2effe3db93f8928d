"""Stable Diffusion 1.x / 2.x and SDXL folders as `DiffusionAdapter`s: the pipeline's own pieces inside pgraft's
loop (docs: scaleout §1).

The pipeline supplies `encode_prompt`, the scheduler configuration of the folder, the UNet and
`vae.decode`; the loop, the seeds, the cutoff, recording and cancellation stay pgraft's (`core.sampling`).
The noise process is the folder's: ε or v-prediction, its betas, its timestep spacing ("leading" with the
folder's offset; a "linspace" folder samples on "trailing", see `VPProcess`). Guidance, LoRA and saving are
`families.pipeline`'s, shared with the flow families.
"""

from __future__ import annotations

from typing import Any

import torch

from pgraft.core.process import VPProcess
from pgraft.families.base import Cond
from pgraft.families.pipeline import PipelineAdapter, PipelineOptions, doubled

__all__ = ["PipelineOptions", "StableDiffusionAdapter", "StableDiffusionXLAdapter", "doubled"]


class StableDiffusionAdapter(PipelineAdapter):
    """A Stable Diffusion 1.x / 2.x pipeline (ε or v) on the folder's DDPM chain, sampled with DDIM."""

    denoiser_name = "unet"
    default_guidance = 7.5

    @property
    def unet(self) -> Any:
        return self.denoiser

    def make_process(self) -> VPProcess:
        return VPProcess.from_scheduler_config(dict(self.pipe.scheduler.config))

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

    def _call(self, x: torch.Tensor, t: torch.Tensor, cond: Cond, negative: bool) -> torch.Tensor:
        key = "negative_prompt_embeds" if negative else "prompt_embeds"
        emb = cond.tensors[key].to(self.device, self.dtype)
        return self.denoiser(x, t, encoder_hidden_states=emb, return_dict=False)[0]


class StableDiffusionXLAdapter(StableDiffusionAdapter):
    """SDXL: two text encoders, pooled text embeddings and the size/crop time ids as added conditions (a
    negative prompt left empty is zeros, the folder's `force_zeros_for_empty_prompt`)."""

    default_guidance = 5.0

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

    def _call(self, x: torch.Tensor, t: torch.Tensor, cond: Cond, negative: bool) -> torch.Tensor:
        c = cond.tensors
        added = {
            "text_embeds": c["pooled_prompt_embeds"].to(self.device, self.dtype),
            "time_ids": c["time_ids"].to(self.device, self.dtype),
        }
        emb = c["prompt_embeds"].to(self.device, self.dtype)
        return self.denoiser(x, t, encoder_hidden_states=emb, added_cond_kwargs=added, return_dict=False)[0]
