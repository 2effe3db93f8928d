"""Diffusers pipelines with random weights, built from component configs and saved as a folder: the tiny
ones the tests use on a CPU (offline, seconds), and SD 1.5-, SD 2-, SDXL-, SD3- and Flux-sized ones for
benchmarks (speed does not depend on the weights). Text encoders read prompts through byte-level tokenizers
made here, so nothing is downloaded. The SD3 folders leave out the optional T5 encoder (the pipeline then
uses zeros for its part, as diffusers documents for saving memory); Flux needs its T5 and gets one.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

KINDS = ("sd", "sd2-v", "sdxl", "sd3", "flux")
FLOW_KINDS = ("sd3", "flux")
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
    """Build a `kind` pipeline ("sd": ε, SD 1.x; "sd2-v": v-prediction, SD 2.x at 768; "sdxl"; "sd3": SD3
    medium; "flux": FLUX.1-dev, guidance-distilled) of `size` with random weights and `save_pretrained` it
    (safetensors; full-size flows in bf16, Flux's 12 B transformer being 48 GB in fp32) into `folder`."""
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
    if kind in FLOW_KINDS:
        return _build_flow(kind, folder, size, seed)
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


def t5_tokenizer(max_length: int) -> Any:
    """A T5 tokenizer (transformers' tokenizers-backed `T5Tokenizer`, a Unigram model as T5's own) whose pieces
    are single characters: printable ASCII and the word-start mark."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import T5Tokenizer

    pieces = ["<pad>", "</s>", "<unk>", "▁", *(chr(c) for c in range(33, 127))]
    unigram = Tokenizer(models.Unigram([(p, 0.0 if i > 2 else -100.0) for i, p in enumerate(pieces)], unk_id=2))
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()  # type: ignore[assignment]
    unigram.decoder = decoders.Metaspace()  # type: ignore[assignment]
    return T5Tokenizer(
        tokenizer_object=unigram, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0,
        model_max_length=max_length,
    )  # fmt: skip


def _flow_vae(tiny: bool, kind: str) -> Any:
    from diffusers import AutoencoderKL

    channels = (8, 16) if tiny else (128, 256, 512, 512)
    # The real factors at full size; tiny VAEs scale latents up as SD's 0.18215 does, so that their random
    # decoders' images depend on the latents enough for a reward to tell samples apart.
    factors = (0.2, 0.1) if tiny else {"sd3": (1.5305, 0.0609), "flux": (0.3611, 0.1159)}[kind]
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels), block_out_channels=channels,
        layers_per_block=1 if tiny else 2, latent_channels=4 if tiny else 16, norm_num_groups=8 if tiny else 32,
        sample_size=16 if tiny else 1024, scaling_factor=factors[0], shift_factor=factors[1],
        use_quant_conv=False, use_post_quant_conv=False,
    )  # fmt: skip


def _build_flow(kind: str, folder: Path, size: str, seed: int) -> Path:
    import torch
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )

    tiny = size == "tiny"
    max_length = 16 if tiny else 77
    with tempfile.TemporaryDirectory() as source:
        tok = byte_tokenizer(Path(source), max_length)
    vae = _flow_vae(tiny, kind)
    pipe: Any
    if kind == "sd3":
        # SD3 medium: CLIP-L/14 and CLIP-G/14 with projections, a 24-layer MMDiT (2 B parameters).
        h1, h2 = (32, 32) if tiny else (768, 1280)
        te = _text_encoder(tok, h1, 2 if tiny else 12, 4 if tiny else 12, max_length, projection=True)
        te2 = _text_encoder(tok, h2, 2 if tiny else 32, 4 if tiny else 20, max_length, projection=True)
        transformer: Any = SD3Transformer2DModel(
            sample_size=8 if tiny else 128, patch_size=2, in_channels=4 if tiny else 16,
            num_layers=2 if tiny else 24, attention_head_dim=8 if tiny else 64,
            num_attention_heads=4 if tiny else 24, joint_attention_dim=h1 + h2 if tiny else 4096,
            caption_projection_dim=32 if tiny else 1536, pooled_projection_dim=h1 + h2,
            out_channels=4 if tiny else 16, pos_embed_max_size=16 if tiny else 192,
        )  # fmt: skip
        scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
        pipe = StableDiffusion3Pipeline(
            transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=te, tokenizer=tok,
            text_encoder_2=te2, tokenizer_2=tok, text_encoder_3=None, tokenizer_3=None,
        )  # fmt: skip
    else:
        # FLUX.1-dev: CLIP-L/14 (pooled), T5-XXL (sequence), 19 double and 38 single blocks (12 B parameters).
        from transformers import T5Config, T5EncoderModel

        te = _text_encoder(tok, 32 if tiny else 768, 2 if tiny else 12, 4 if tiny else 12, max_length, False)
        t5_tok = t5_tokenizer(512)
        t5 = T5EncoderModel(
            T5Config(
                vocab_size=len(t5_tok), d_model=32 if tiny else 4096, d_kv=8 if tiny else 64,
                d_ff=37 if tiny else 10240, num_layers=2 if tiny else 24, num_heads=4 if tiny else 64,
                feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1,
            )
        )  # fmt: skip
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=16 if tiny else 64, num_layers=1 if tiny else 19,
            num_single_layers=1 if tiny else 38, attention_head_dim=16 if tiny else 128,
            num_attention_heads=2 if tiny else 24, joint_attention_dim=32 if tiny else 4096,
            pooled_projection_dim=32 if tiny else 768, guidance_embeds=True,
            axes_dims_rope=(4, 4, 8) if tiny else (16, 56, 56),
        )  # fmt: skip
        scheduler = FlowMatchEulerDiscreteScheduler(
            shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
            max_image_seq_len=4096,
        )  # fmt: skip
        pipe = FluxPipeline(
            scheduler=scheduler, vae=vae, text_encoder=te, tokenizer=tok, text_encoder_2=t5, tokenizer_2=t5_tok,
            transformer=transformer,
        )  # fmt: skip
    if not tiny:
        pipe.to(torch.bfloat16)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    image = 16 if tiny else 1024
    info = {"kind": kind, "size": size, "seed": seed, "image_size": image}
    (folder / "pgraft_random.json").write_text(json.dumps(info))
    return folder
