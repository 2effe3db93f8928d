"""Per-request budgets of the app: no request may hold the one heavy queue for minutes to an hour.

Each limit caps one value a browser (or an API client) sends; a request above one is refused before any
work, with a message naming the setting, the value, the limit and how to change it
(`python app.py --limit samples=20000`). The defaults let every preset and the app's own controls run,
and keep a request on a 2-core CPU within a few minutes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Limits:
    samples: int = 16384
    """Candidates per prompt per round (Rounds tab; per round of a sweep)."""
    prompts: int = 10
    rounds: int = 20
    num_inference_steps: int = 1000
    finetune_steps: int = 5000
    batch_size: int = 4096
    preview: int = 1024
    cutoffs: int = 20
    """Cutoffs of a bias–variance study."""
    states: int = 2048
    continuations: int = 64
    train_steps: int = 20000
    """Training steps of a toy flow trained on first use (inverse noise correction)."""
    invert: int = 20000
    correction_samples: int = 20000
    """Samples scored per sampler (inverse noise correction)."""
    correction_train_steps: int = 10000
    correction_width: int = 256
    """Width of a correction MLP (a training step costs about its square)."""
    correction_runs: int = 12
    """Samplers scored by one inverse-noise-correction request beyond the base line: base step counts ×
    (correction step counts + reference grids)."""
    trials: int = 32
    """Trials of one scout (each also within the budgets above: the top of every searched range)."""

    def check(self, name: str, value: Any, flag: str | None = None) -> None:
        """Refuse `value` above the limit `name`, naming the setting (`flag`, default the limit's name)."""
        limit = getattr(self, name)
        if value is not None and value > limit:
            shown = flag or "--" + name.replace("_", "-")
            raise ValueError(
                f"{shown}: {value:g} is above this server's limit of {limit:g} per request; use a smaller value "
                f"(or launch the app with --limit {name}=N)"
            )

    def check_run(self, config: Any) -> None:
        """Every budget of a Rounds-tab run."""
        for name in ("samples", "rounds", "num_inference_steps", "finetune_steps", "batch_size", "preview"):
            self.check(name, getattr(config, name))
        self.check("prompts", len(config.prompts), "--prompts (count)")

    @classmethod
    def parse(cls, items: list[str] | None) -> Limits:
        """`["samples=20000", "rounds=5"]` into limits (`ValueError` naming `--limit` otherwise)."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, int] = {}
        for item in items or []:
            key, sep, raw = (s.strip() for s in item.partition("="))
            if not sep or key not in names:
                raise ValueError(f"--limit: {item!r} is invalid; write NAME=N with NAME one of {sorted(names)}")
            try:
                number = int(raw)
            except ValueError:
                raise ValueError(f"--limit {key}: {raw!r} is invalid; give a whole number >= 1") from None
            if number < 1:
                raise ValueError(f"--limit {key}: {number} is invalid; give a whole number >= 1")
            values[key] = number
        return cls(**values)
