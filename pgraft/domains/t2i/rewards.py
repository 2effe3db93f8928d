"""Rewards of text-to-image models, on transformers 5 models loaded from local folders (docs: scaleout §3).

Every reward receives the decoded images `(N, 3, H, W)` in [0, 1] (and the prompts), runs batched without
gradients on the base model's device, and loads its model once per folder:

- `clip-score` (`model=` a `CLIPModel` folder): `100 · max(cos(image, prompt), 0)` of CLIP's projected
  embeddings (the torchmetrics convention);
- `pickscore` (`model=` a PickScore `CLIPModel` folder): `logit_scale.exp() · cos(image, prompt)`;
- `aesthetic` (`model=` CLIP ViT-L/14, `head=` safetensors): a LAION-style head on the normalised CLIP image
  embedding, linear or the MLP of the improved predictor, read from the safetensors keys;
- `vqa-score` (`model=` any `AutoModelForImageTextToText` folder with its processor): P("Yes") to
  `Does this figure show "{prompt}"? Please answer yes or no.` from the last position's logits of one
  forward pass, softmax over the whole vocabulary (VQAScore's convention; `normalise=yes-no` gives
  P(Yes) / (P(Yes) + P(No)));
- `jpeg-compressibility`, `jpeg-incompressibility`: minus / plus the JPEG size in bytes (DDPO's).

transformers 5 returns an output object from `CLIPModel.get_image_features` / `get_text_features`; the
projected embedding is its `.pooler_output` (the snippets of DDPO and PickScore break on this).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from pgraft.images import jpeg_size
from pgraft.rewards import RewardFn, RewardSpec, SampleView

QUESTION = 'Does this figure show "{}"? Please answer yes or no.'
NORMALISATIONS = ("vocabulary", "yes-no")
BATCH = 16


def _folder(value: str, arg: str, what: str, files: str) -> Path:
    """A local model folder given as `--reward-arg {arg}=PATH` (`ValueError` naming it and the files)."""
    if not value:
        raise ValueError(f"--reward-arg {arg}: give the folder of {what} ({files})")
    path = Path(value).expanduser()
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ValueError(f"--reward-arg {arg}: {value!r} is not a folder of {what}; it needs {files}")
    names = [p.name for p in path.iterdir()]
    if not any(n.endswith(".safetensors") for n in names):
        pickled = [n for n in names if n.endswith((".bin", ".pt", ".pth"))]
        extra = f" (it holds only pickled weights: {', '.join(sorted(pickled))})" if pickled else ""
        raise ValueError(
            f"--reward-arg {arg}: {value!r} has no safetensors weights{extra}; pgraft loads safetensors only"
        )
    return path


def _device(context: dict[str, Any]) -> torch.device:
    model = context.get("model")
    return model.device if model is not None else torch.device("cpu")


def _dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


@lru_cache(maxsize=4)
def clip_model(folder: str, device: str) -> tuple[Any, Any, Any]:
    """`(CLIPModel, tokenizer, image processor)` of a folder, cached per folder and device."""
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    dev = torch.device(device)
    model: Any = CLIPModel.from_pretrained(folder, dtype=_dtype(dev), use_safetensors=True)
    return model.to(dev).eval(), AutoTokenizer.from_pretrained(folder), AutoImageProcessor.from_pretrained(folder)


def _embedding(out: Any) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def clip_pixels(images: torch.Tensor, processor: Any, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """CLIP's preprocessing in torch: shortest side to `size`, centre crop, mean/std normalisation."""
    size = processor.size.get("shortest_edge") or min(
        processor.size.get("height", 224), processor.size.get("width", 224)
    )
    crop = processor.crop_size
    x = images.to(device, torch.float32)
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    x = torch.nn.functional.interpolate(
        x,
        size=(max(1, round(h * scale)), max(1, round(w * scale))),
        mode="bicubic",
        antialias=True,
        align_corners=False,
    )
    top, left = (x.shape[-2] - crop["height"]) // 2, (x.shape[-1] - crop["width"]) // 2
    x = x[..., top : top + crop["height"], left : left + crop["width"]]
    mean = torch.tensor(processor.image_mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(processor.image_std, device=device).view(1, -1, 1, 1)
    return ((x - mean) / std).to(dtype)


def clip_image_embeddings(images: torch.Tensor, folder: str, device: torch.device) -> torch.Tensor:
    """Unit-norm CLIP image embeddings `(N, D)`, float32 on the CPU."""
    model, _tok, proc = clip_model(folder, str(device))
    out = []
    with torch.no_grad():
        for chunk in images.split(BATCH):
            e = _embedding(model.get_image_features(pixel_values=clip_pixels(chunk, proc, device, model.dtype)))
            out.append(torch.nn.functional.normalize(e.float(), dim=-1).cpu())
    return torch.cat(out)


def clip_text_embeddings(prompts: list[str], folder: str, device: torch.device) -> torch.Tensor:
    model, tok, _proc = clip_model(folder, str(device))
    with torch.no_grad():
        batch = tok(prompts, padding=True, truncation=True, return_tensors="pt").to(device)
        e = _embedding(model.get_text_features(input_ids=batch.input_ids, attention_mask=batch.attention_mask))
    return torch.nn.functional.normalize(e.float(), dim=-1).cpu()


def _clip_similarity(context: dict[str, Any], model: str, kind: str) -> RewardFn:
    folder = str(
        _folder(model, "model", "a CLIPModel", "config.json, model.safetensors, tokenizer and preprocessor files")
    )
    device = _device(context)
    clip_model(folder, str(device))  # load now: a wrong folder fails before the run

    def fn(x: torch.Tensor, prompts: list[str] | None) -> torch.Tensor:
        if prompts is None or len(prompts) != len(x):
            raise ValueError(f"{kind} needs one prompt per image")
        images = clip_image_embeddings(x, folder, device)
        unique = sorted(set(prompts))
        texts = clip_text_embeddings(unique, folder, device)[[unique.index(p) for p in prompts]]
        cos = (images * texts).sum(-1).double()
        if kind == "pickscore":
            return clip_model(folder, str(device))[0].logit_scale.exp().double().cpu() * cos
        return 100.0 * cos.clamp_min(0.0)

    return fn


def _clip_score(context: dict[str, Any], model: str) -> RewardFn:
    return _clip_similarity(context, model, "clip-score")


def _pickscore(context: dict[str, Any], model: str) -> RewardFn:
    return _clip_similarity(context, model, "pickscore")


def aesthetic_head(path: str) -> torch.nn.Sequential:
    """A LAION-style head from safetensors: the Linear layers in the order of their keys (`weight`/`bias`, or
    `layers.N.weight`/`layers.N.bias` of the improved predictor, whose MLP has dropouts and no activations)."""
    from safetensors.torch import load_file

    file = Path(path).expanduser()
    if not file.is_file() or file.suffix != ".safetensors":
        raise ValueError(f"--reward-arg head: {path!r} is not a .safetensors file of an aesthetic head")
    state = load_file(str(file))
    prefixes = sorted({k.rsplit(".", 1)[0] if "." in k else "" for k in state if k.endswith("weight")},
                      key=lambda p: [int(s) if s.isdigit() else s for s in p.split(".")])  # fmt: skip
    layers = []
    for prefix in prefixes:
        key = f"{prefix}.weight" if prefix else "weight"
        weight = state[key]
        layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=f"{prefix}.bias" in state or "bias" in state)
        layer.weight.data.copy_(weight)
        bias = state.get(f"{prefix}.bias" if prefix else "bias")
        if bias is not None and layer.bias is not None:
            layer.bias.data.copy_(bias)
        layers.append(layer)
    if not layers or layers[-1].out_features != 1:
        raise ValueError(f"--reward-arg head: {path!r} is not a head that ends in one output")
    return torch.nn.Sequential(*layers).eval()


def _aesthetic(context: dict[str, Any], model: str, head: str) -> RewardFn:
    folder = str(
        _folder(model, "model", "a CLIPModel (ViT-L/14 for the LAION heads)", "config.json, model.safetensors")
    )
    net = aesthetic_head(head).double()
    device = _device(context)
    dim = clip_model(folder, str(device))[0].config.projection_dim
    if net[0].in_features != dim:
        raise ValueError(
            f"--reward-arg head: {head!r} takes {net[0].in_features} features; the CLIP folder gives {dim}"
        )

    def fn(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return net(clip_image_embeddings(x, folder, device).double()).squeeze(-1)

    return fn


@lru_cache(maxsize=2)
def vlm(folder: str, device: str) -> tuple[Any, Any]:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    dev = torch.device(device)
    processor = AutoProcessor.from_pretrained(folder)
    processor.tokenizer.padding_side = "left"  # position -1 is every row's last real token
    model: Any = AutoModelForImageTextToText.from_pretrained(folder, dtype=_dtype(dev), use_safetensors=True)
    return model.to(dev).eval(), processor


def answer_token(tokenizer: Any, word: str) -> int:
    """The one token of `word` (no BOS: `add_special_tokens=False`), checked to decode back to it."""
    ids = tokenizer.encode(word, add_special_tokens=False)
    if not ids or tokenizer.decode(ids[:1]).strip().lower() != word.lower():
        raise ValueError(f"--reward-arg model: the tokenizer has no single token for {word!r}; vqa-score needs one")
    return int(ids[0])


def _vqa_score(context: dict[str, Any], model: str, normalise: str) -> RewardFn:
    if normalise not in NORMALISATIONS:
        raise ValueError(f"--reward-arg normalise: {normalise!r} is invalid; choose one of {list(NORMALISATIONS)}")
    folder = str(
        _folder(model, "model", "an image-text-to-text model", "config.json, safetensors, processor and chat template")
    )
    device = _device(context)
    net, processor = vlm(folder, str(device))
    yes, no = answer_token(processor.tokenizer, "Yes"), answer_token(processor.tokenizer, "No")

    def fn(x: torch.Tensor, prompts: list[str] | None) -> torch.Tensor:
        from PIL import Image

        if prompts is None or len(prompts) != len(x):
            raise ValueError("vqa-score needs one prompt per image")
        scores = []
        for lo in range(0, len(x), BATCH):
            chunk, asked = x[lo : lo + BATCH], prompts[lo : lo + BATCH]
            images = [
                Image.fromarray((img.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy())
                for img in chunk
            ]
            messages = [
                [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION.format(p)}]}]
                for p in asked
            ]
            texts = [processor.apply_chat_template(m, add_generation_prompt=True) for m in messages]
            inputs = processor(images=images, text=texts, return_tensors="pt", padding=True).to(device)
            with torch.no_grad():
                probs = net(**inputs).logits[:, -1].float().softmax(-1)
            p_yes = probs[:, yes]
            scores.append((p_yes if normalise == "vocabulary" else p_yes / (p_yes + probs[:, no])).double().cpu())
        return torch.cat(scores)

    return fn


def _jpeg(sign: float) -> Any:
    def factory(context: dict[str, Any]) -> RewardFn:
        return lambda x: sign * jpeg_size(x)

    return factory


REWARDS: dict[str, RewardSpec] = {
    "clip-score": RewardSpec(
        _clip_score, "t2i", "CLIP image-prompt similarity, 100 max(cos, 0)", {"model": ""}, True, ("model",)
    ),
    "pickscore": RewardSpec(
        _pickscore, "t2i", "PickScore: logit scale x cos(image, prompt)", {"model": ""}, True, ("model",)
    ),
    "aesthetic": RewardSpec(
        _aesthetic,
        "t2i",
        "LAION-style aesthetic head on CLIP image embeddings",
        {"model": "", "head": ""},
        paths=("model", "head"),
    ),
    "vqa-score": RewardSpec(
        _vqa_score,
        "t2i",
        "P(Yes) that the image shows the prompt, from an image-text-to-text model",
        {"model": "", "normalise": "vocabulary"},
        True,
        ("model",),
    ),
    "jpeg-compressibility": RewardSpec(_jpeg(-1.0), "t2i", "minus the JPEG size in bytes (smaller files score higher)"),
    "jpeg-incompressibility": RewardSpec(_jpeg(1.0), "t2i", "the JPEG size in bytes (larger files score higher)"),
}
SAMPLE_VIEW = SampleView("an (N, 3, H, W) tensor of images in [0, 1] (decoded by the pipeline's VAE)")
