"""What a run will need, estimated before it starts: memory for a round and disk for the run folder.

A run whose estimate exceeds what this machine has is refused before any work, naming the flag that drives
the estimate (`--samples 1e9` would otherwise start and grow until the machine swaps). The estimates are
deliberately rough upper bounds of the dominant terms:

- memory: the candidates of two rounds held at once (the previous round trains the next), each with its
  handoff state and what the reward sees; one sampling chunk's noise (every step's noise is drawn up front);
  one fine-tuning batch with its activations (about 256 values per sample value, measured to bound the
  small networks' backward pass);
- disk: every round folder (candidates, handoff states, preview, the fine-tuned weights).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

BYTES = 4  # float32
ACTIVATIONS_PER_VALUE = 256
HEADROOM = 0.9


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} PB"


def available_memory(device: str) -> float:
    """Bytes this process can still use on `device` (inf when unknown)."""
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            free, _total = torch.cuda.mem_get_info(torch.device(device))
            return float(free)
        return math.inf
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return math.inf


def _numel(base: Any) -> int:
    return math.prod(base.sample_shape)


def model_bytes(base: Any) -> int:
    state = getattr(base, "state_dict", None)
    if not callable(state):
        return 0
    return sum(v.numel() * v.element_size() for v in state().values())


def memory_terms(config: Any, base: Any) -> dict[str, float]:
    """Bytes of the dominant memory terms of one round, by the flag that drives each."""
    groups = max(1, len(config.prompts))
    values = _numel(base)
    candidates = (config.samples + config.preview) * groups
    chunk = min(candidates, base.sampling_batch_size)
    return {
        "samples": 2 * 3 * candidates * values * BYTES,
        "num_inference_steps": chunk * (config.num_inference_steps + 1) * values * BYTES,
        "batch_size": config.batch_size * values * BYTES * ACTIVATIONS_PER_VALUE,
    }


def check_memory(config: Any, base: Any, device: str) -> None:
    """Refuse a run whose round needs more memory than `device` has, naming the flag that drives it."""
    terms = memory_terms(config, base)
    need = sum(terms.values())
    have = available_memory(device)
    if need > HEADROOM * have:
        flag = max(terms, key=lambda k: terms[k])
        value = getattr(config, flag)
        raise ValueError(
            f"--{flag.replace('_', '-')}: {value:,} needs about {human(need)} of memory per round on {device}, "
            f"more than the {human(have)} available; use a smaller value"
        )


def disk_bytes(config: Any, base: Any) -> float:
    """Bytes of a whole run folder (every round), estimated."""
    groups = max(1, len(config.prompts))
    per_round = (2 * config.samples + config.preview) * groups * _numel(base) * BYTES + model_bytes(base)
    return float(per_round * (config.rounds + 1))


def check_disk(config: Any, base: Any, out: Path) -> None:
    """Refuse a run whose folder would not fit on the disk of `out`, naming `--rounds` or `--samples`."""
    need = disk_bytes(config, base)
    where = Path(out).expanduser().absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        free = float(shutil.disk_usage(where).free)
    except OSError:
        return
    if need > HEADROOM * free:
        flag = "rounds" if config.rounds > 100 else "samples"
        raise ValueError(
            f"--{flag}: {getattr(config, flag):,} needs about {human(need)} of disk for the run folder in "
            f"{str(out)!r}, more than the {human(free)} free there; use a smaller value"
        )
