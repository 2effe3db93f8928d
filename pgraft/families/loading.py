"""Loading a diffusers pipeline folder as a base model: `--model PATH` (or a Hub id, from diffusers' cache).

The family comes from `model_index.json`'s `_class_name`; weights load with `use_safetensors=True` (a folder
with pickled `.bin` weights only is refused, as is anything but a folder the user chose). The pipeline
folder is only ever read.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

FAMILIES = {
    "StableDiffusionPipeline": "pgraft.families.sd:StableDiffusionAdapter",
    "StableDiffusionXLPipeline": "pgraft.families.sd:StableDiffusionXLAdapter",
    "StableDiffusion3Pipeline": "pgraft.families.flow:StableDiffusion3Adapter",
    "FluxPipeline": "pgraft.families.flow:FluxAdapter",
}
"""Pipeline class -> its adapter."""
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
DTYPES = ("auto", "fp32", "bf16", "fp16")
PIPELINE_OPTIONS = (
    "guidance_scale",
    "negative_prompt",
    "true_cfg_scale",
    "height",
    "width",
    "dtype",
    "lora_rank",
    "lora_alpha",
    "lora_targets",
)
"""The RunConfig fields a pipeline model takes."""


def looks_like_pipeline(name: str) -> bool:
    """A folder with `model_index.json`, or something shaped like a Hub id (`org/name`)."""
    path = Path(name).expanduser()
    return (path / "model_index.json").is_file() or (not path.exists() and bool(HUB_ID.match(name)))


def pipeline_class(name: str) -> str:
    """The `_class_name` of a pipeline folder (`ValueError` naming `--model` for a folder that is not one)."""
    path = Path(name).expanduser()
    index = path / "model_index.json"
    if not index.is_file():
        raise ValueError(f"--model: {name!r} has no model_index.json; give a diffusers pipeline folder")
    try:
        data = json.loads(index.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"--model: {str(index)!r} is not readable JSON: {exc}") from None
    class_name = str(data.get("_class_name", "")) if isinstance(data, dict) else ""
    if class_name not in FAMILIES:
        raise ValueError(
            f"--model: {name!r} is a {class_name or 'unnamed'} folder; supported pipelines: {sorted(FAMILIES)}"
        )
    _check_safetensors(path, data)
    return class_name


def _check_safetensors(path: Path, index: dict[str, Any]) -> None:
    """Every component folder with weights has them as safetensors (pickles are never loaded)."""
    for component, entry in index.items():
        if component.startswith("_") or not isinstance(entry, list) or entry[0] is None:
            continue
        folder = path / component
        if not folder.is_dir():
            continue
        names = [p.name for p in folder.iterdir()]
        pickled = [n for n in names if n.endswith((".bin", ".pt", ".pth", ".ckpt"))]
        if pickled and not any(n.endswith(".safetensors") for n in names):
            raise ValueError(
                f"--model: {str(folder)!r} holds only pickled weights ({', '.join(sorted(pickled))}); pgraft loads "
                "safetensors only. Convert the folder once (load it and save_pretrained(..., safe_serialization=True))"
            )


def quiet_loading() -> None:
    """No progress bars or info lines from diffusers / transformers while loading (a log gets pgraft's rows)."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()


def torch_dtype(dtype: str, device: str) -> Any:
    """`auto`: bf16 on a GPU, fp32 on a CPU."""
    import torch

    if dtype not in DTYPES:
        raise ValueError(f"--dtype: {dtype!r} is invalid; choose one of {list(DTYPES)}")
    if dtype == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]


def load_pipeline_model(name: str, device: str = "cpu", **options: Any) -> Any:
    """The adapter of a pipeline folder (or Hub id) with the run's pipeline options."""
    from importlib import import_module

    from diffusers import DiffusionPipeline

    from pgraft.families.pipeline import PipelineOptions

    local = Path(name).expanduser()
    absent: dict[str, Any] = {"safety_checker": None, "requires_safety_checker": False}
    if local.exists():
        class_name = pipeline_class(name)
        source = str(local)
        # Components the folder saved as [null, null] (SD3 without its T5 encoder) must be passed as None.
        index = json.loads((local / "model_index.json").read_text())
        absent.update({k: None for k, v in index.items() if isinstance(v, list) and v[:1] == [None]})
    else:
        class_name, source = "", name
    dtype = torch_dtype(str(options.get("dtype") or "auto"), device)
    quiet_loading()
    try:
        pipe = DiffusionPipeline.from_pretrained(source, dtype=dtype, use_safetensors=True, **absent)
    except OSError as exc:
        if not local.exists():
            raise ValueError(
                f"--model: {name!r} is not a local folder and could not be loaded from the Hub cache ({exc}); "
                "give the path of a diffusers pipeline folder on this machine"
            ) from None
        raise ValueError(f"--model: {name!r} could not be loaded: {exc}") from None
    class_name = class_name or type(pipe).__name__
    if class_name not in FAMILIES:
        raise ValueError(f"--model: {name!r} is a {class_name}; supported pipelines: {sorted(FAMILIES)}")
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    for part in ("unet", "transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        module = getattr(pipe, part, None)
        if module is not None:
            module.requires_grad_(False)
            module.eval()
    known = {f.name for f in fields(PipelineOptions)}
    given = {k: v for k, v in options.items() if k in known and v is not None}
    if "lora_targets" in given:
        given["lora_targets"] = tuple(given["lora_targets"])
    if str(device).startswith("cuda"):
        given.setdefault("sample_batch_size", 16)
    module_name, cls = FAMILIES[class_name].split(":")
    adapter = getattr(import_module(module_name), cls)(pipe, str(name), PipelineOptions(**given))
    adapter.info["dtype"] = str(dtype).removeprefix("torch.")
    return adapter


def find_pipelines(root: Path) -> list[Path]:
    """The supported pipeline folders directly under `root` (the app's `--models-dir`), by name."""
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            pipeline_class(str(folder))
        except ValueError:
            continue
        found.append(folder)
    return found


def find_files(root: Path) -> list[str]:
    """Names of the folders and safetensors files directly under `root` that are not pipelines: what a reward's
    model arguments may name in the app (`model=clip-vit-b32`)."""
    if not root.is_dir():
        return []
    pipelines = set(find_pipelines(root))
    return sorted(
        p.name
        for p in root.iterdir()
        if p not in pipelines and ((p.is_dir() and (p / "config.json").is_file()) or p.suffix == ".safetensors")
    )
