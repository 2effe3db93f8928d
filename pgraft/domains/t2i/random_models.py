"""Reward models with random weights, built from configs and saved as local folders: a tiny `CLIPModel` (with
its byte-level tokenizer and image processor) and a tiny LLaVA image-text-to-text model (with a word-level
tokenizer that has single "Yes" and "No" tokens, and a chat template). The tests exercise every reward's code
path on them offline; nothing here is a trained judge.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

WORDS = [
    "<unk>",
    "<pad>",
    "<s>",
    "</s>",
    "<image>",
    "Yes",
    "No",
    "USER:",
    "ASSISTANT:",
    "Does",
    "this",
    "figure",
    "show",
    "Please",
    "answer",
    "yes",
    "or",
    "no.",
    "a",
    "red",
    "green",
    "blue",
    "square",
    "circle",
    '"',
    "?",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}<image> {% else %}"
    "{{ c['text'] }}{% endif %}{% endfor %}{% endfor %}{% if add_generation_prompt %} ASSISTANT:{% endif %}"
)


def build_clip(folder: Path, seed: int = 0, image_size: int = 16, size: str = "tiny") -> Path:
    """A CLIP folder with random weights: `tiny` for the tests, `large` shaped as ViT-L/14 at 224 px (the
    aesthetic and PickScore backbone) for benchmarks."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTextConfig, CLIPVisionConfig

    from pgraft.families.random_pipelines import byte_tokenizer

    if size not in ("tiny", "large"):
        raise ValueError(f"build_clip: size {size!r}; use tiny or large")
    large = size == "large"
    image_size = 224 if large else image_size
    max_length = 77 if large else 16
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as source:
        tok = byte_tokenizer(Path(source), max_length)
    width, layers, heads = (768, 12, 12) if large else (32, 2, 4)
    text = CLIPTextConfig(
        vocab_size=len(tok), hidden_size=width, intermediate_size=4 * width if large else 37,
        num_attention_heads=heads, num_hidden_layers=layers, max_position_embeddings=max_length,
        bos_token_id=len(tok) - 2, eos_token_id=len(tok) - 1, pad_token_id=len(tok) - 1,
    )  # fmt: skip
    vision = CLIPVisionConfig(
        hidden_size=1024 if large else 32, intermediate_size=4096 if large else 37,
        num_attention_heads=16 if large else 4, num_hidden_layers=24 if large else 2, image_size=image_size,
        patch_size=14 if large else 4,
    )  # fmt: skip
    torch.manual_seed(seed)
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=768 if large else 16)
    model = CLIPModel(config)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    edge = {"shortest_edge": image_size}
    CLIPImageProcessor(size=edge, crop_size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder


def build_vlm(folder: Path, seed: int = 0, image_size: int = 16) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {w: i for i, w in enumerate(WORDS)}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # type: ignore[assignment]
    tok = PreTrainedTokenizerFast(
        tokenizer_object=word_level, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    images = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = LlavaProcessor(
        image_processor=images, tokenizer=tok, patch_size=4, vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE, num_additional_image_tokens=1,
    )  # fmt: skip
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, image_size=image_size,
        patch_size=4,
    )  # fmt: skip
    text = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
        num_key_value_heads=4, pad_token_id=1, bos_token_id=2, eos_token_id=3,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=vocab["<image>"],
        vision_feature_select_strategy="default",
    )  # fmt: skip
    torch.manual_seed(seed)
    LlavaForConditionalGeneration(config).save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    return folder
