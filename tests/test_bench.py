"""The benchmark scripts still run against the library they measure (tiny sizes: the numbers are not checked
here, only that each script gets to its table; the scripts had silently drifted from the API once)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args], capture_output=True, text=True, timeout=300, env=env,
        cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_inversion_solver_bench_prints_every_grid_and_solver() -> None:
    out = _run("bench_inversion_solvers.py", "--model", "toy2d-flow", "--samples", "40", "--steps", "4",
               "--solvers", "fixed-point", "auto", "--threads", "1")  # fmt: skip
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("linear", "karras"))]
    assert sorted((r[0], r[1]) for r in rows) == [
        ("karras", "auto"), ("karras", "fixed-point"), ("linear", "auto"), ("linear", "fixed-point"),
    ]  # fmt: skip


@pytest.mark.slow
def test_the_inc_bench_prints_its_parts_and_table() -> None:
    out = _run("bench_inc.py", "--model", "toy2d-flow", "--steps", "8", "--correction-steps", "1",
               "--samples", "50", "--invert", "50", "--threads", "1")  # fmt: skip
    assert "invert 50 real samples through K=8 Euler steps (linear)" in out and "quality vs FLOPs" in out
