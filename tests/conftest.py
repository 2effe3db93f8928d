import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Before torch loads OpenMP: idle threads sleep instead of spinning, so tests stay fast on a busy machine
# (a toy round measured 20x slower with spinning threads while other processes used the cores).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch


@pytest.fixture(scope="session")
def exact_ring():
    from pgraft.registry import load_model

    return load_model("toy2d-exact", dataset="ring8")


@pytest.fixture(scope="session")
def learned_ring():
    from pgraft.registry import load_model

    return load_model("toy2d", dataset="ring8")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
