"""The reward model of the digits domain: a small CNN trained by the project on the digits train split.

It stands in for VQAScore and for the Inception network of FID (docs/method.md §5): its softmax gives the
prompt-match and digit-probability rewards, its 64-dimensional penultimate activations are the feature
space of the Fréchet distances (`pgraft/image_metrics.py`). Inputs are `(N, 1, 8, 8)` pixels in [0, 1].

Weights ship as `assets/digits-classifier.safetensors` (training record and held-out accuracy in the
metadata, a card beside it); `pgraft pretrain digits-classifier` reproduces them from the seed.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pgraft.domains.digits.cards import machine_record
from pgraft.domains.digits.models import ASSETS, digits_split

CLASSIFIER_NAME = "digits-classifier"
FEATURES = 64
CLASSIFIER_STEPS = 2000


class DigitClassifier(nn.Module):
    """conv 16 → conv 32 → pool → conv 32 → pool → 64 features → 10 logits (about 23 k parameters)."""

    def __init__(self, features: int = FEATURES, dropout: float = 0.3):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 4×4
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 2×2
            nn.Flatten(),
            nn.Linear(32 * 4, features),
            nn.ReLU(),
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(features, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations `(N, 64)` of pixels `(N, 1, 8, 8)` in [0, 1]."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits `(N, 10)`."""
        return self.head(self.dropout(self.body(x)))

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x).softmax(-1)


def train_classifier(
    steps: int = CLASSIFIER_STEPS, batch_size: int = 128, lr: float = 2e-3, seed: int = 0
) -> tuple[DigitClassifier, dict[str, Any]]:
    """Train on the train split with ±1-pixel shifts and light pixel noise (so generated digits, which are
    never exactly on the data, are judged like real ones); report held-out accuracy."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    split = digits_split()
    net = DigitClassifier()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    start = time.perf_counter()
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, len(split.train_y), (batch_size,), generator=gen)
        x = _augment(split.train_x[idx], gen)
        loss = nn.functional.cross_entropy(net(x), split.train_y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    with torch.inference_mode():
        pred = net(split.held_x).argmax(-1)
    info = {
        "train_steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "train_seconds": round(time.perf_counter() - start, 1),
        "held_out_accuracy": round(float((pred == split.held_y).double().mean()), 4),
        "held_out_size": len(split.held_y),
        "train_size": len(split.train_y),
        **machine_record(),
    }
    return net, info


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to one pixel (zero fill) and add N(0, 0.05²) pixel noise, clamped to [0, 1]."""
    padded = nn.functional.pad(x, (1, 1, 1, 1))
    dy, dx = torch.randint(0, 3, (2, len(x)), generator=gen)
    rows = (dy[:, None] + torch.arange(8))[:, None, :, None].expand(-1, 1, 8, 10)
    shifted = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(8))[:, None, None, :].expand(-1, 1, 8, 8)
    shifted = shifted.gather(3, cols)
    return (shifted + 0.05 * torch.randn(shifted.shape, generator=gen)).clamp(0, 1)


def classifier_path() -> Path:
    return ASSETS / f"{CLASSIFIER_NAME}.safetensors"


def save_classifier(net: DigitClassifier, info: dict[str, Any], path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    meta = {"name": CLASSIFIER_NAME, "features": str(FEATURES), "training": json.dumps(info)}
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(tmp), metadata=meta)
    tmp.replace(path)


@lru_cache(maxsize=4)
def load_classifier(device: str = "cpu", path: str | None = None) -> DigitClassifier:
    """The shipped classifier, frozen, in eval mode (cached per device)."""
    from safetensors.torch import load_file

    file = Path(path) if path is not None else classifier_path()
    if not file.exists():
        raise ValueError(
            f"--reward: classifier weights {str(file)!r} are missing; run `pgraft pretrain {CLASSIFIER_NAME}`"
        )
    net = DigitClassifier()
    net.load_state_dict(load_file(str(file)))
    return net.to(device).eval().requires_grad_(False)
