"""One peft LoRA adapter on a pipeline's denoiser, shared by every view of a base model (docs: scaleout §1–2).

A pipeline is loaded once; its UNet (or transformer) carries one adapter, "graft". A *view* of the model is
a set of LoRA weights (`None` for the base): before a view predicts, `LoraSlot.use(view)` loads its weights
into the adapter and enables it, or disables the adapter for the base. The stitched sampler therefore
switches between the fine-tuned model above the cutoff and the untouched base below it with one copy of
the network and no fuse/unfuse (which does not restore bf16 weights exactly). The trainable weights are fp32
whatever the pipeline's dtype (`cast_training_params`: bf16 would round most Adam steps away).
"""

from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import Any

import torch

ADAPTER = "graft"
WEIGHTS = "pytorch_lora_weights.safetensors"


class LoraSlot:
    """The adapter of one denoiser and which view's weights it holds.

    `slot_for` gives one slot per (denoiser, rank, alpha, targets): two runs with other LoRA settings on one
    loaded pipeline (the app) get adapters of their own, named apart, never each other's weights."""

    def __init__(
        self, denoiser: Any, rank: int, alpha: float | None, targets: tuple[str, ...], name: str = ADAPTER
    ) -> None:
        self.denoiser = denoiser
        self.rank, self.alpha, self.targets = rank, alpha if alpha is not None else float(rank), targets
        self.name = name
        self.added = False
        self.holder: object | None = None
        self.shared = _STATE.setdefault(denoiser, _Shared())
        self.lock = self.shared.lock

    def _add(self) -> None:
        if self.added:
            return
        from diffusers.training_utils import cast_training_params
        from peft import LoraConfig

        config = LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,  # type: ignore[arg-type]
            init_lora_weights="gaussian",
            target_modules=list(self.targets),
        )
        try:
            self.denoiser.add_adapter(config, adapter_name=self.name)
        except ValueError as exc:
            raise ValueError(
                f"--lora-targets: {list(self.targets)} do not name modules of the denoiser: {exc}"
            ) from None
        cast_training_params(self.denoiser, dtype=torch.float32)
        self.added = True
        self.shared.enabled = self.shared.active = None  # add_adapter leaves peft's own state: set it on next use

    def fresh(self, seed: int) -> dict[str, torch.Tensor]:
        """New LoRA weights initialised from `seed` (B = 0, so the adapter starts equal to the base)."""
        from peft.tuners.lora import LoraLayer

        with self.lock:
            self._add()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                for module in self.denoiser.modules():
                    if isinstance(module, LoraLayer) and self.name in module.lora_A:
                        module.reset_lora_parameters(self.name, "gaussian")
            self.holder = None
            return self.state()

    def state(self) -> dict[str, torch.Tensor]:
        """The adapter's current weights (peft names, fp32, on the CPU)."""
        from peft.utils import get_peft_model_state_dict

        state = get_peft_model_state_dict(self.denoiser, adapter_name=self.name)
        return {k: v.detach().to("cpu", torch.float32).clone() for k, v in state.items()}

    def use(self, view: object, weights: dict[str, torch.Tensor] | None) -> None:
        """Make the denoiser compute `view`: its LoRA `weights`, or the bare base for None."""
        with self.lock:
            if weights is None:
                if self.added and self.shared.enabled is not False:
                    self.denoiser.disable_adapters()
                    self.shared.enabled = False
                self.holder = None
                return
            self._add()
            if self.holder is not view or self.shared.active is not self:
                from peft.utils import set_peft_model_state_dict

                set_peft_model_state_dict(self.denoiser, weights, adapter_name=self.name)
                self.holder = view
            if self.shared.active is not self:
                self.denoiser.set_adapters(self.name)
                self.shared.active = self
                self.shared.enabled = None
            # Toggled only on a change: peft's enable/disable walk every module of the denoiser.
            if self.shared.enabled is not True:
                self.denoiser.enable_adapters()
                self.shared.enabled = True

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for n, p in self.denoiser.named_parameters() if "lora_" in n and f".{self.name}." in n]


class _Shared:
    """What the slots of one denoiser share: its lock, its slots by settings, the one that is active."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.slots: dict[tuple[Any, ...], LoraSlot] = {}
        self.active: LoraSlot | None = None
        self.enabled: bool | None = None
        """Whether the adapters are switched on (None: unknown, set them on next use)."""


_STATE: weakref.WeakKeyDictionary[Any, _Shared] = weakref.WeakKeyDictionary()


def slot_for(denoiser: Any, rank: int, alpha: float | None, targets: tuple[str, ...]) -> LoraSlot:
    """The one slot of these LoRA settings on this denoiser."""
    slots = _STATE.setdefault(denoiser, _Shared()).slots
    key = (rank, float(alpha if alpha is not None else rank), tuple(targets))
    if key not in slots:
        name = ADAPTER if not slots else f"{ADAPTER}_{len(slots)}"
        slots[key] = LoraSlot(denoiser, rank, alpha, tuple(targets), name)
    return slots[key]


def save_diffusers_lora(
    pipeline_class: Any,
    weights: dict[str, torch.Tensor],
    folder: Path,
    slot: LoraSlot | None = None,
    denoiser: str = "unet",
) -> Path:
    """Write `weights` as the diffusers LoRA file a stock pipeline loads with `load_lora_weights(folder)`; with
    the slot's LoRA config in the metadata, so the pipeline scales the adapter by the same alpha / rank.
    `denoiser` is the pipeline's component ("unet", or "transformer" for SD3 / Flux, whose loaders take the
    peft names as diffusers' training examples write them)."""
    from diffusers.utils import convert_state_dict_to_diffusers

    folder.mkdir(parents=True, exist_ok=True)
    metadata = None
    if slot is not None and slot.added:
        config = slot.denoiser.peft_config[slot.name].to_dict()
        metadata = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}
    layers = convert_state_dict_to_diffusers(weights) if denoiser == "unet" else dict(weights)
    pipeline_class.save_lora_weights(
        save_directory=str(folder),
        weight_name=WEIGHTS,
        **{f"{denoiser}_lora_layers": layers, f"{denoiser}_lora_adapter_metadata": metadata},
    )
    return folder / WEIGHTS


def load_diffusers_lora(pipeline_class: Any, path: Path, denoiser: str = "unet") -> dict[str, torch.Tensor]:
    """The peft-named weights of a diffusers LoRA file written by `save_diffusers_lora` (safetensors only)."""
    from diffusers.utils import convert_unet_state_dict_to_peft

    out = pipeline_class.lora_state_dict(str(path.parent), weight_name=path.name, use_safetensors=True)
    state = out[0] if isinstance(out, tuple) else out  # SD returns (state, alphas); SD3 and Flux the state alone
    prefix = f"{denoiser}."
    own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    converted = convert_unet_state_dict_to_peft(own) if denoiser == "unet" else own
    return {k: v.to(torch.float32) for k, v in converted.items()}
