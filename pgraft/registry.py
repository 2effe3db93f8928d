"""Registry of base models: a plain dict from a name to a loader; heavy imports happen inside loaders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pgraft.families.small import DiffusionModel


@dataclass(frozen=True)
class ModelSpec:
    """How to load one registered base model, and what it is."""

    loader: Callable[..., DiffusionModel]
    domain: str
    description: str
    options: tuple[str, ...] = ()
    conditional: bool = False


def _toy2d(**kw: Any) -> DiffusionModel:
    from pgraft.domains.toy2d.models import load_toy2d

    return load_toy2d(**kw)


def _toy2d_exact(**kw: Any) -> DiffusionModel:
    from pgraft.domains.toy2d.models import load_toy2d_exact

    return load_toy2d_exact(**kw)


def _toy2d_flow(**kw: Any) -> DiffusionModel:
    from pgraft.domains.toy2d.models import load_toy2d

    return load_toy2d(kind="flow", **kw)


def _toy2d_flow_exact(**kw: Any) -> DiffusionModel:
    from pgraft.domains.toy2d.models import load_toy2d_exact

    return load_toy2d_exact(kind="flow", **kw)


MODELS: dict[str, ModelSpec] = {
    "toy2d": ModelSpec(_toy2d, "toy2d", "2-D Gaussian mixture, small learned MLP denoiser (DDPM)", ("dataset",)),
    "toy2d-exact": ModelSpec(
        _toy2d_exact, "toy2d", "2-D Gaussian mixture, exact analytic score: no learning error", ("dataset",)
    ),
    "toy2d-flow": ModelSpec(
        _toy2d_flow,
        "toy2d",
        "2-D Gaussian mixture, small learned MLP rectified flow (train_steps < 3000: under-trained)",
        ("dataset", "train_steps"),
    ),
    "toy2d-flow-exact": ModelSpec(
        _toy2d_flow_exact,
        "toy2d",
        "2-D Gaussian mixture, exact rectified-flow velocity: no learning error",
        ("dataset",),
    ),
}


def _digits_loader(name: str) -> Callable[..., DiffusionModel]:
    def load(device: str = "cpu") -> DiffusionModel:
        from pgraft.domains.digits.models import load_digits_model

        return load_digits_model(name, device)

    return load


MODELS.update(
    {
        "digits": ModelSpec(_digits_loader("digits"), "digits", "8x8 digits, UNet2DModel DDPM (651 k parameters)"),
        "digits-prompted": ModelSpec(
            _digits_loader("digits-prompted"),
            "digits",
            "8x8 digits, class-conditional UNet2DModel DDPM; the prompt is the digit ('7', 'a 7', 'seven')",
            conditional=True,
        ),
        "digits-flow": ModelSpec(
            _digits_loader("digits-flow"), "digits", "8x8 digits, UNet2DModel rectified flow (651 k parameters)"
        ),
    }
)


def register_model(name: str, spec: ModelSpec) -> None:
    MODELS[name] = spec


def get_model_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"model: unknown {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name]


def load_model(name: str, device: str = "cpu", **options: Any) -> DiffusionModel:
    spec = get_model_spec(name)
    kwargs = {k: v for k, v in options.items() if k in spec.options and v is not None}
    return spec.loader(device=device, **kwargs)


__all__ = ["MODELS", "DiffusionModel", "ModelSpec", "get_model_spec", "load_model", "register_model"]
