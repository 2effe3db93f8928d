"""The run folder: the resolved config, one folder per completed round, and `metrics.csv`.

Layout::

    OUT/pgraft-run.json             the mark of a run folder: what pgraft wrote here (nothing else is ever deleted)
    OUT/config.yaml                 the resolved RunConfig
    OUT/metrics.csv                 one row per completed round (round 0 is the base model)
    OUT/rounds/round_003/           samples.safetensors (samples, rewards, accepted, seeds, x_cut, preview)
                                    metrics.json, model.safetensors (fine-tuned network, rounds >= 1; for a
                                    pipeline the LoRA, pytorch_lora_weights.safetensors)

A round is written into a hidden temporary folder and renamed into place in one step, so a crash or a
cancellation leaves only complete rounds; `metrics.csv` is rebuilt from the round folders after each
round, also by an atomic rename, and again whenever a run is resumed (a crash between the two renames
loses nothing). `--overwrite` deletes only the entries pgraft owns in a folder marked by `pgraft-run.json`;
an empty path, `.`, a home folder, the root and a file are refused as `--out`. Nothing here loads a pickle.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from pgraft.graft.config import RunConfig

ROUND_PREFIX = "round_"
MANIFEST = "pgraft-run.json"
OWNED = (
    MANIFEST,
    "config.yaml",
    "metrics.csv",
    "rounds",
    ".pgraft-run.json.tmp",
    ".config.yaml.tmp",
    ".metrics.csv.tmp",
)
"""The entries of a run folder that pgraft writes; `--overwrite` deletes these and nothing else."""


class RunFolderError(ValueError):
    pass


class RunStore:
    def __init__(self, out: Path, mode: str = "new") -> None:
        if mode not in ("new", "resume", "overwrite"):
            raise ValueError(f"mode: {mode!r}; choose new, resume or overwrite")
        self.out = Path(out)
        self.mode = mode

    @property
    def rounds_dir(self) -> Path:
        return self.out / "rounds"

    def round_dir(self, r: int) -> Path:
        return self.rounds_dir / f"{ROUND_PREFIX}{r:03d}"

    def completed_rounds(self) -> list[int]:
        if not self.rounds_dir.exists():
            return []
        return sorted(
            int(p.name[len(ROUND_PREFIX) :])
            for p in self.rounds_dir.iterdir()
            if p.is_dir() and p.name.startswith(ROUND_PREFIX) and (p / "metrics.json").exists()
        )

    def prepare(self, config: RunConfig) -> int:
        """Create or reopen the folder; return the number of rounds already complete (0 for a new run)."""
        check_out(self.out)
        exists = self.out.exists() and any(self.out.iterdir())
        if exists and self.mode == "new":
            raise RunFolderError(
                f"--out: {str(self.out)!r} already holds files; "
                "pass --resume to continue a run there or --overwrite to replace it"
            )
        if exists and self.mode == "overwrite":
            self._remove_owned()
        if exists and self.mode == "resume":
            self._check_resume(config)
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self.rounds_dir.mkdir(exist_ok=True)
            _atomic_write_text(self.out / MANIFEST, json.dumps({"pgraft_run": 1, "owned": list(OWNED)}, indent=1))
            _atomic_write_text(self.out / "config.yaml", config.to_yaml())
        except OSError as exc:
            raise RunFolderError(f"--out: cannot write to {str(self.out)!r}: {exc.strerror or exc}") from None
        done = self.completed_rounds()
        if done != list(range(len(done))):
            raise RunFolderError(f"--resume: rounds on disk {done} are not consecutive from 0")
        if done:
            self.write_metrics_csv()  # a crash after a round's rename and before the table's loses no row
        return len(done)

    def _remove_owned(self) -> None:
        """Delete what pgraft wrote in a marked run folder; refuse a folder without the mark."""
        if not (self.out / MANIFEST).is_file():
            raise RunFolderError(
                f"--overwrite: {str(self.out)!r} is not marked as a pgraft run folder (no {MANIFEST}); nothing was "
                "deleted. Choose another --out, or empty the folder yourself"
            )
        for name in OWNED:
            path = self.out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()

    def _check_resume(self, config: RunConfig) -> None:
        if not (self.out / "config.yaml").is_file() or not self.rounds_dir.is_dir():
            raise RunFolderError(
                f"--resume: {str(self.out)!r} holds no pgraft run (no config.yaml and rounds/); give the folder of "
                "the run to continue"
            )
        saved = RunConfig.from_yaml(self.out / "config.yaml")
        diff = {k for k in RunConfig.field_names() if getattr(saved, k) != getattr(config, k) and k != "rounds"}
        if diff:
            raise RunFolderError(
                f"--resume: the run in {str(self.out)!r} was made with other values of {sorted(diff)}; "
                "only --rounds may change when resuming"
            )
        done = self.completed_rounds()
        if done and config.rounds < max(done):
            raise RunFolderError(
                f"--rounds: {config.rounds} is fewer than the {max(done)} rounds already on disk in "
                f"{str(self.out)!r}; a resumed run cannot shrink (give --rounds {max(done)} or more)"
            )
        for stale in self.rounds_dir.glob(".*.tmp"):
            shutil.rmtree(stale)

    def write_round(
        self,
        r: int,
        tensors: dict[str, torch.Tensor],
        metrics: dict[str, Any],
        model: Any | None = None,
        files: dict[str, bytes] | None = None,
    ) -> Path:
        """Write round `r` into a temporary folder and rename it into place; `files` are extra files
        (plain names, e.g. `preview.png`) written into the same folder."""
        from safetensors.torch import save_file

        final = self.round_dir(r)
        tmp = self.rounds_dir / f".{ROUND_PREFIX}{r:03d}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / "samples.safetensors"))
        if model is not None:
            model.save(tmp / weights_name(model), extra={"round": r})
        for name, data in (files or {}).items():
            if Path(name).name != name or name.startswith("."):
                raise ValueError(f"round file: {name!r} must be a plain file name")
            (tmp / name).write_bytes(data)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        self.write_metrics_csv()
        return final

    def load_round(self, r: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        from safetensors.torch import load_file

        d = self.round_dir(r)
        return load_file(str(d / "samples.safetensors")), json.loads((d / "metrics.json").read_text())

    def metrics_table(self) -> pd.DataFrame:
        rows = [json.loads((self.round_dir(r) / "metrics.json").read_text()) for r in self.completed_rounds()]
        return pd.DataFrame(rows)

    def write_metrics_csv(self) -> None:
        table = self.metrics_table()
        tmp = self.out / ".metrics.csv.tmp"
        table.to_csv(tmp, index=False)
        os.replace(tmp, self.out / "metrics.csv")


def _atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a hidden file beside `path`, then rename it into place: a kill leaves the old file or the
    new one, never half of one."""
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def weights_name(model: Any) -> str:
    """The file a round's fine-tuned weights go to: the family's (`weights_name`), else `model.safetensors`."""
    return str(getattr(model, "weights_name", "model.safetensors"))


def check_out(out: Path) -> None:
    """Refuse an `--out` that is surely a mistake: empty, `.`, the root, a home folder, or a file."""
    text = str(out)
    if text.strip() in ("", "."):
        raise RunFolderError(f"--out: {text!r} is not a run folder; give a new folder, e.g. runs/my-run")
    resolved = Path(out).expanduser().resolve()
    if resolved == Path(resolved.anchor) or resolved in (Path.home().resolve(), Path.cwd().resolve()):
        raise RunFolderError(
            f"--out: {text!r} is {'the root' if resolved == Path(resolved.anchor) else 'a home or working folder'}; "
            "give a folder of its own, e.g. runs/my-run"
        )
    if resolved.exists() and not resolved.is_dir():
        raise RunFolderError(f"--out: {text!r} is a file; give a folder")
