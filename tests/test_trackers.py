"""`pgraft run --report-to`: names checked before the run, and a real TensorBoard log holding each round's
metrics, the reward histogram and quantiles, and the round's PNGs."""

from __future__ import annotations

import pytest

from pgraft.cli import main
from pgraft.graft.trackers import parse_report_to, reward_quantiles, scalars

pytest.importorskip("tensorboard")


def test_report_to_names_are_checked():
    assert parse_report_to("none") == [] and parse_report_to("tensorboard, wandb") == ["tensorboard", "wandb"]
    with pytest.raises(ValueError, match="--report-to: 'tensorbored' is not a tracker; choose from none"):
        parse_report_to("tensorbored")
    with pytest.raises(ValueError, match="'none' cannot be combined"):
        parse_report_to("none,tensorboard")


def test_a_missing_tracker_package_is_named_before_the_run(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    code = main(["run", "--model", "toy2d", "--reward", "x", "--out", str(tmp_path / "r"), "--report-to", "wandb"])
    assert code == 2
    assert "--report-to wandb: the 'wandb' package is not installed; pip install wandb" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_scalars_leave_out_nan_and_text():
    import numpy as np

    assert scalars({"round": 0, "finetune_loss": float("nan"), "rule": "top-k", "ok": True, "r": 1.5}) == {
        "round": 0.0,
        "r": 1.5,
    }
    q = reward_quantiles(np.arange(101.0))
    assert q == {"reward_q05": 5.0, "reward_q25": 25.0, "reward_q50": 50.0, "reward_q75": 75.0, "reward_q95": 95.0}


def test_tensorboard_gets_every_round(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    args = ["run", "--model", "toy2d", "--reward", "x", "--rounds", "1", "--samples", "256", "--preview", "16"]
    args += ["--num-inference-steps", "10", "--finetune-steps", "5", "--out", str(out), "--quiet"]
    assert main([*args, "--report-to", "tensorboard"]) == 0
    logs = list((out / "trackers").rglob("events.out.tfevents.*"))
    acc = EventAccumulator(str(logs[0].parent), size_guidance={"images": 0, "histograms": 0}).Reload()
    tags = acc.Tags()
    metrics = [line.split(",") for line in (out / "metrics.csv").read_text().splitlines()]
    col = metrics[0].index("reward_mean")
    logged = [(e.step, e.value) for e in acc.Scalars("reward_mean")]
    assert logged == [(r, pytest.approx(float(row[col]), rel=1e-6)) for r, row in enumerate(metrics[1:])]
    assert [e.step for e in acc.Scalars("reward_q50")] == [0, 1]
    assert [e.step for e in acc.Histograms("rewards")] == [0, 1]
    assert acc.Histograms("rewards")[0].histogram_value.num == 256
    assert {"preview", "candidates"} <= set(tags["images"])
    assert "finetune_loss" in tags["scalars"]  # round 1's; round 0's NaN is left out
    assert [e.step for e in acc.Scalars("finetune_loss")] == [1]
