"""Packaging: a built wheel carries the shipped weights and runs a digits round from a folder outside the
checkout, with nothing of the checkout on the path."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_built_wheel_runs_a_digits_round_outside_the_checkout(tmp_path):
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(ROOT)], check=True)
    wheel = next(dist.glob("pgraft-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "pgraft/domains/digits/assets/digits.safetensors",
        "pgraft/domains/toy2d/assets/toy2d-ring8.safetensors",
    } <= names
    assert "pgraft/domains/digits/assets/size-study.md" in names and "pgraft/py.typed" in names
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}
    where = subprocess.run(
        [sys.executable, "-c", "import pgraft; print(pgraft.__file__)"], cwd=elsewhere, env=env, capture_output=True,
        text=True, check=True,
    )  # fmt: skip
    assert where.stdout.strip().startswith(str(site)), where.stdout
    command = ["-m", "pgraft", "run", "--model", "digits", "--samples", "64", "--preview", "8"]
    command += ["--num-inference-steps", "10", "--finetune-steps", "4", "--rounds", "1", "--out", "run", "--quiet"]
    run = subprocess.run(
        [sys.executable, *command], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr
    table = pd.read_csv(elsewhere / "run" / "metrics.csv")
    assert list(table["round"]) == [0, 1] and table["fid_real"].notna().all()
