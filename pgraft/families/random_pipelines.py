"""Stable Diffusion pipelines with random weights, built from component configs and saved as a folder: the
tiny ones the tests use on a CPU (offline, seconds), and SD 1.5-, SD 2- and SDXL-sized ones for benchmarks
(speed does not depend on the weights). Text encoders read prompts through a byte-level tokenizer made here,
so nothing is downloaded.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

KINDS = ("sd", "sd2-v", "sdxl")
SIZES = ("tiny", "full")


def byte_tokenizer(folder: Path, max_length: int) -> Any:
    """A CLIP tokenizer with one token per byte (no merges), saved in `folder`."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    chars = [chr(c) for c in cs]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)


def _text_encoder(tok: Any, hidden: int, layers: int, heads: int, max_length: int, projection: bool) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_attention_heads=heads,
        num_hidden_layers=layers,
        max_position_embeddings=max_length,
        projection_dim=hidden,
        bos_token_id=len(tok) - 2,
        eos_token_id=len(tok) - 1,
        pad_token_id=len(tok) - 1,
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def build_pipeline(kind: str, folder: Path, size: str = "tiny", seed: int = 0) -> Path:
    """Build a `kind` pipeline ("sd": ε, SD 1.x; "sd2-v": v-prediction, SD 2.x at 768; "sdxl") of `size`
    with random weights and `save_pretrained` it (safetensors) into `folder`; returns the folder."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )

    if kind not in KINDS or size not in SIZES:
        raise ValueError(f"build_pipeline: kind in {KINDS}, size in {SIZES}")
    torch.manual_seed(seed)
    tiny = size == "tiny"
    max_length = 16 if tiny else 77
    with tempfile.TemporaryDirectory() as source:
        tok = byte_tokenizer(Path(source), max_length)
    hidden = 32 if tiny else (1024 if kind == "sd2-v" else 768)
    te = _text_encoder(tok, hidden, 2 if tiny else 12, 4 if tiny else 12, max_length, projection=False)
    vae_channels = (8, 16) if tiny else (128, 256, 512, 512)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(vae_channels),
        block_out_channels=vae_channels,
        layers_per_block=1 if tiny else 2,
        latent_channels=4,
        norm_num_groups=8 if tiny else 32,
        sample_size=16 if tiny else 512,
    )
    scale = 2 ** (len(vae_channels) - 1)
    if kind == "sdxl":
        hidden2 = 32 if tiny else 1280
        te2 = _text_encoder(tok, hidden2, 2 if tiny else 32, 4 if tiny else 20, max_length, projection=True)
        time_dim = 8 if tiny else 256
        unet: Any = UNet2DConditionModel(
            sample_size=8 if tiny else 128,
            in_channels=4,
            out_channels=4,
            layers_per_block=1 if tiny else 2,
            block_out_channels=(16, 32) if tiny else (320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D")
            if tiny
            else ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D")
            if tiny
            else ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 1) if tiny else (1, 2, 10),
            attention_head_dim=(2, 4) if tiny else (5, 10, 20),
            use_linear_projection=True,
            cross_attention_dim=hidden + hidden2,
            addition_embed_type="text_time",
            addition_time_embed_dim=time_dim,
            projection_class_embeddings_input_dim=6 * time_dim + hidden2,
            norm_num_groups=8 if tiny else 32,
        )
        scheduler: Any = EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            steps_offset=1,
            timestep_spacing="leading",
        )
        pipe: Any = StableDiffusionXLPipeline(
            vae, te, te2, tok, tok, unet, scheduler, force_zeros_for_empty_prompt=True
        )
    else:
        unet = UNet2DConditionModel(
            sample_size=8 if tiny else (96 if kind == "sd2-v" else 64),
            in_channels=4,
            out_channels=4,
            layers_per_block=1 if tiny else 2,
            block_out_channels=(16, 32) if tiny else (320, 640, 1280, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D")
            if tiny
            else ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D")
            if tiny
            else ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=hidden,
            attention_head_dim=4 if tiny else ((5, 10, 20, 20) if kind == "sd2-v" else 8),
            use_linear_projection=kind == "sd2-v",
            norm_num_groups=8 if tiny else 32,
        )
        scheduler = DDIMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
            timestep_spacing="leading",
            prediction_type="v_prediction" if kind == "sd2-v" else "epsilon",
        )
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=te,
            tokenizer=tok,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    info = {"kind": kind, "size": size, "seed": seed, "image_size": int(unet.config.sample_size) * scale}
    (folder / "pgraft_random.json").write_text(json.dumps(info))
    return folder
