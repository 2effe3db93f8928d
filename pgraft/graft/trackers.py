"""Experiment trackers for `pgraft run --report-to ...`, through accelerate's tracker classes.

Each round logs its numeric metrics, the reward distribution (a histogram where the backend has one, and its
quantiles everywhere, so any backend can plot the distribution's spread per round) and the round's PNGs
(the preview grid drawn from the same seeds every round, and the candidates with the accepted framed) where
the domain renders them. Only the main process logs; the backends are optional dependencies, and a missing
one is named with the command that installs it before the run starts.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPORT_TO = ("none", "tensorboard", "trackio", "wandb", "mlflow")
PACKAGES = {"tensorboard": "tensorboard", "trackio": "trackio", "wandb": "wandb", "mlflow": "mlflow"}
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
IMAGES = ("preview.png", "candidates.png")


def parse_report_to(value: str | Sequence[str]) -> list[str]:
    """`"tensorboard,wandb"` -> `["tensorboard", "wandb"]`; `"none"` -> `[]`; anything else is refused."""
    names = [n.strip() for n in (value.split(",") if isinstance(value, str) else value) if n.strip()]
    bad = [n for n in names if n not in REPORT_TO]
    if bad or not names:
        shown = ",".join(bad) or value
        raise ValueError(f"--report-to: {shown!r} is not a tracker; choose from {', '.join(REPORT_TO)}")
    if "none" in names and len(names) > 1:
        raise ValueError("--report-to: 'none' cannot be combined with a tracker")
    return [n for n in names if n != "none"]


def check_installed(names: Sequence[str]) -> None:
    """Refuse, before the run starts, a tracker whose package (or accelerate) is missing."""
    import importlib.util

    for name in ["accelerate", *names] if names else []:
        if importlib.util.find_spec(name) is None:
            package = PACKAGES.get(name, name)
            raise ValueError(
                f"--report-to {','.join(names)}: the {name!r} package is not installed; pip install {package} "
                "(pgraft[trackers] brings accelerate and tensorboard)"
            )


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numeric metrics (round 0's NaN loss is left out rather than plotted as a gap or a zero)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            out[key] = float(value)
    return out


def reward_quantiles(rewards: np.ndarray) -> dict[str, float]:
    if rewards.size == 0:
        return {}
    qs = np.quantile(rewards, QUANTILES)
    return {f"reward_q{round(q * 100):02d}": float(v) for q, v in zip(QUANTILES, qs, strict=True)}


def round_images(folder: Path | None) -> dict[str, np.ndarray]:
    """The round's PNGs as HWC uint8 arrays (what the domain rendered into the round folder)."""
    if folder is None:
        return {}
    from PIL import Image

    images = {}
    for name in IMAGES:
        path = Path(folder) / name
        if path.exists():
            with Image.open(io.BytesIO(path.read_bytes())) as im:
                images[name.removesuffix(".png")] = np.asarray(im.convert("RGB"))
    return images


class Trackers:
    """The run's trackers; `log_round(result)` after each round, `close()` at the end (also after a failure)."""

    def __init__(self, names: Sequence[str], run_name: str, logging_dir: Path, config: dict[str, Any]) -> None:
        check_installed(names)
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        self.names = list(names)
        self.trackers: list[Any] = []
        self.logging_dir = Path(logging_dir)
        for name in self.names:
            cls = LOGGER_TYPE_TO_CLASS[name]
            if cls.requires_logging_directory:
                tracker = cls(run_name, logging_dir=self.logging_dir)
            elif name == "mlflow":
                tracker = cls(experiment_name=run_name, logging_dir=str(self.logging_dir))
            else:
                tracker = cls(run_name)
            tracker.start()
            tracker.store_init_configuration(_plain(config))
            self.trackers.append(tracker)

    def log_round(self, round_index: int, metrics: dict[str, Any], rewards: Any, folder: Path | None) -> None:
        values = np.asarray(rewards, dtype=np.float64).reshape(-1)
        values = values[np.isfinite(values)]
        numbers = {**scalars(metrics), **reward_quantiles(values)}
        images = round_images(folder)
        for name, tracker in zip(self.names, self.trackers, strict=True):
            tracker.log(numbers, step=round_index)
            getattr(self, f"_extras_{name}")(tracker, round_index, values, images)

    # -- what each backend adds beyond scalars ---------------------------------------------------------
    @staticmethod
    def _extras_tensorboard(tracker: Any, step: int, values: np.ndarray, images: dict[str, np.ndarray]) -> None:
        if values.size:
            tracker.writer.add_histogram("rewards", values, global_step=step)
        for key, image in images.items():
            tracker.writer.add_image(key, image, global_step=step, dataformats="HWC")
        tracker.writer.flush()

    @staticmethod
    def _extras_wandb(tracker: Any, step: int, values: np.ndarray, images: dict[str, np.ndarray]) -> None:
        import wandb

        extra: dict[str, Any] = {key: wandb.Image(image) for key, image in images.items()}
        if values.size:
            extra["rewards"] = wandb.Histogram(values)
        tracker.log(extra, step=step)

    @staticmethod
    def _extras_mlflow(tracker: Any, step: int, values: np.ndarray, images: dict[str, np.ndarray]) -> None:
        import mlflow

        for key, image in images.items():
            mlflow.log_image(image, key=key, step=step)

    @staticmethod
    def _extras_trackio(tracker: Any, step: int, values: np.ndarray, images: dict[str, np.ndarray]) -> None:
        import trackio

        if images and hasattr(trackio, "Image"):
            tracker.log({key: trackio.Image(image) for key, image in images.items()}, step=step)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []


def _plain(config: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameters as the backends accept them (numbers, strings, booleans; the rest as text)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_plain({f"{key}.{k}": v for k, v in value.items()}))
        elif value is None or isinstance(value, int | float | str | bool):
            out[key] = "" if value is None else value
        else:
            out[key] = str(value)
    return out
