import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest
import torch


@pytest.fixture(scope="session")
def exact_ring():
    from pgraft.models import load_model

    return load_model("toy2d-exact", dataset="ring8")


@pytest.fixture(scope="session")
def learned_ring():
    from pgraft.models import load_model

    return load_model("toy2d", dataset="ring8")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
