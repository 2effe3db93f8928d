"""Rounds on two processes (gloo, CPU) equal the single-process rounds: the same candidates, rewards and
accepted set, and fine-tuning that takes the same steps up to the order of float sums; a reward that fails on
one rank stops both with its name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pgraft.core.distributed import LONE, Processes
from pgraft.graft.config import RunConfig
from pgraft.graft.runner import RoundRunner, run_to_end
from pgraft.graft.storage import RunStore

accelerate = pytest.importorskip("accelerate")

TOY = dict(
    model="toy2d",
    dataset="ring8",
    reward="x",
    method="pgraft",
    cutoff=0.3,
    rounds=1,
    samples=300,
    preview=17,  # 317 rows in all: the ranks hold different numbers of rows
    num_inference_steps=20,
    finetune_steps=30,
    batch_size=65,
    lr=2e-3,
    device="cpu",
)


def _run_in_ranks(config: dict, out: str, mode: str = "new") -> None:
    torch.set_num_threads(1)
    processes = Processes.detect("cpu")
    assert processes.world == 2
    run_to_end(RoundRunner(RunConfig.from_dict(config), out=Path(out), mode=mode, processes=processes))


def debug_launcher(function, args=(), num_processes: int = 2) -> None:
    """`accelerate.debug_launcher`, with the ranks spawned rather than forked: a fork of a process whose
    OpenMP pool has run (any earlier test in the session) hangs in the child's first parallel op (seen here).
    Spawned ranks import this module by name, so `function` and the rewards it names live at its top level;
    a free port each time, as back-to-back launches may still hold the last one's."""
    import socket
    import tempfile

    from accelerate.utils import PrepareForLaunch, patch_environment
    from torch.multiprocessing import start_processes

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with (
        tempfile.TemporaryDirectory() as rdv,
        patch_environment(
            world_size=num_processes,
            master_addr="127.0.0.1",
            master_port=str(port),
            accelerate_mixed_precision="no",
            accelerate_debug_rdv_file=str(Path(rdv) / "rendezvous"),
            accelerate_use_cpu="yes",
            gloo_socket_ifname="lo",
        ),
    ):
        start_processes(PrepareForLaunch(function, debug=True), args=args, nprocs=num_processes, start_method="spawn")


def _launch(config: dict, out: Path, mode: str = "new") -> None:
    debug_launcher(_run_in_ranks, args=(config, str(out), mode), num_processes=2)


def _rounds(out: Path) -> list[tuple[dict, dict]]:
    store = RunStore(out, "resume")
    return [store.load_round(r)[::-1] for r in store.completed_rounds()]


def _measured(metrics: dict) -> dict:
    """The metrics without wall times and peak memory; NaN (round 0's loss) made comparable."""
    return {
        k: "nan" if isinstance(v, float) and v != v else v
        for k, v in metrics.items()
        if not k.startswith("time_") and k != "peak_gpu_memory_gb"
    }


def test_shards_cover_every_row_once_in_order():
    for world in (1, 2, 3, 8):
        for n in (0, 1, 7, 301):
            parts = [Processes(world=world, rank=r).shard(n) for r in range(world)]
            assert [i for s in parts for i in range(n)[s]] == list(range(n))
            assert max(len(range(n)[s]) for s in parts) - min(len(range(n)[s]) for s in parts) <= 1


def test_lone_process_collectives_are_identities():
    t = torch.arange(6.0).view(3, 2)
    assert LONE.gather(t) is t and LONE.broadcast(3) == 3 and LONE.mean_grads([], 1.5) == 1.5
    LONE.agree(None)
    with pytest.raises(RuntimeError, match="boom"):
        LONE.agree("boom")


def test_a_cpu_launch_that_started_one_process_is_named(monkeypatch):
    """`accelerate launch --cpu --num_processes 2` runs its simple launcher: one Python, with the rendezvous
    address set but no WORLD_SIZE (accelerate 1.15, docs: scaleout §4.4)."""
    for name in ("WORLD_SIZE", "MASTER_ADDR", "ACCELERATE_USE_CPU", "ACCELERATE_MIXED_PRECISION"):
        monkeypatch.delenv(name, raising=False)
    assert Processes.launch_hint() is None
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    hint = Processes.launch_hint()
    assert hint is not None and "--multi_gpu" in hint and "ACCELERATE_USE_CPU=true" in hint
    assert Processes.detect("cpu").world == 1
    monkeypatch.setenv("WORLD_SIZE", "2")  # a real multi-process launch
    assert Processes.launch_hint() is None


def test_two_ranks_reproduce_the_single_process_rounds(tmp_path):
    config = {**TOY, "rounds": 1}  # the base round and one after it
    _launch(config, tmp_path / "two")
    single = run_to_end(RoundRunner(RunConfig.from_dict(config), out=tmp_path / "one"))
    two = _rounds(tmp_path / "two")
    assert len(two) == len(single) == 2
    (m0, t0), (m1, t1) = two
    # round 0 (the base model): candidates, rewards, accepted set and preview exactly equal
    for key in ("samples", "rewards", "accepted", "x_cut", "preview_samples", "preview_rewards"):
        assert torch.equal(t0[key], _rounds(tmp_path / "one")[0][1][key]), key
    assert m0["n_accepted"] == single[0].metrics["n_accepted"]
    # evaluator metrics are computed by the main process and stored
    assert ("loglik" in m0 and "ks_to_target" in m0) or "modes_covered" in m0
    # round 1 follows a model fine-tuned on two ranks: the same steps up to float summation order
    assert m1["finetune_loss"] == pytest.approx(single[1].metrics["finetune_loss"], rel=1e-3)
    assert torch.allclose(t1["samples"], single[1].samples, atol=1e-3)
    assert m1["reward_mean"] == pytest.approx(single[1].metrics["reward_mean"], abs=1e-3)
    assert json.loads((tmp_path / "two" / "rounds" / "round_001" / "metrics.json").read_text())["round"] == 1


@pytest.mark.slow
def test_resume_on_two_ranks_continues_after_the_last_complete_round(tmp_path):
    _launch({**TOY, "rounds": 1}, tmp_path / "run")
    _launch({**TOY, "rounds": 2}, tmp_path / "run", mode="resume")
    _launch({**TOY, "rounds": 2}, tmp_path / "ref")
    for (ma, ta), (mb, tb) in zip(_rounds(tmp_path / "run"), _rounds(tmp_path / "ref"), strict=True):
        assert torch.equal(ta["samples"], tb["samples"]) and torch.equal(ta["accepted"], tb["accepted"])
        assert _measured(ma) == _measured(mb)


def fails_on_rank_one(x: torch.Tensor) -> torch.Tensor:
    """`x`, except on rank 1 once round 0 is on disk (so in round 1)."""
    import os

    done = Path(os.environ["FLAKY_RUN"], "rounds", "round_000", "metrics.json").exists()
    if torch.distributed.get_rank() == 1 and done:
        raise RuntimeError("the scorer lost its GPU")
    return x[:, 0]


def _run_and_report(config: dict, out: str) -> None:
    import os

    from pgraft.rewards import RewardError

    os.environ["FLAKY_RUN"] = out
    torch.set_num_threads(1)
    processes = Processes.detect("cpu")
    try:
        run_to_end(RoundRunner(RunConfig.from_dict(config), out=Path(out), allow_import=True, processes=processes))
    except RewardError as exc:
        Path(out, f"error-{processes.rank}.txt").write_text(str(exc))


@pytest.mark.slow
def test_a_reward_failing_on_one_rank_stops_every_rank_with_its_name(tmp_path):
    out = tmp_path / "run"
    reward = f"{__name__}:fails_on_rank_one"
    debug_launcher(_run_and_report, args=({**TOY, "rounds": 2, "reward": reward}, str(out)))
    for rank in (0, 1):
        message = (out / f"error-{rank}.txt").read_text()
        assert reward in message and "rank 1" in message and "lost its GPU" in message
    assert sorted(p.name for p in (out / "rounds").iterdir()) == ["round_000"]


# -- a tiny pipeline (LoRA averaged across ranks) ------------------------------------------------------------
def brightness(images: torch.Tensor) -> torch.Tensor:
    return images.double().mean(dim=(1, 2, 3))


def _run_pipeline_in_ranks(config: dict, out: str) -> None:
    torch.set_num_threads(1)
    processes = Processes.detect("cpu")
    run_to_end(RoundRunner(RunConfig.from_dict(config), out=Path(out), allow_import=True, processes=processes))


@pytest.mark.slow
def test_a_tiny_pipeline_on_two_ranks_equals_one(tmp_path):
    from pgraft.families.random_pipelines import build_pipeline

    folder = build_pipeline("sd", tmp_path / "sd")
    config = dict(
        model=str(folder), prompts=["a red square", "a blue circle"], reward=f"{__name__}:brightness", samples=4,
        preview=1, num_inference_steps=6, finetune_steps=8, batch_size=5, lr=1e-2, rounds=1, guidance_scale=2.0,
        device="cpu",
    )  # fmt: skip
    debug_launcher(_run_pipeline_in_ranks, args=(config, str(tmp_path / "two")))
    single = run_to_end(RoundRunner(RunConfig.from_dict(config), out=tmp_path / "one", allow_import=True))
    (m0, t0), (m1, t1) = _rounds(tmp_path / "two")
    # the same candidates up to the CPU kernels' batch-size-dependent rounding (a UNet on 5 rows vs 10 differs
    # in the 6th digit; the toy's MLP is bit-exact), and so the same accepted set
    torch.testing.assert_close(t0["samples"], single[0].samples, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(t0["rewards"], single[0].rewards, rtol=1e-5, atol=1e-6)
    assert torch.equal(t0["accepted"], single[0].accepted)
    # the LoRA after two-rank fine-tuning: the same steps up to float summation order (Adam at lr 1e-2 moved the
    # weights by up to ~8e-2 in 8 steps; the two runs differ by ~2e-5 at most)
    from safetensors.torch import load_file

    name = "pytorch_lora_weights.safetensors"
    lora = [load_file(str(tmp_path / d / "rounds" / "round_001" / name)) for d in ("two", "one")]
    assert lora[0].keys() == lora[1].keys()
    for key in lora[0]:
        torch.testing.assert_close(lora[0][key], lora[1][key], rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(t1["samples"], single[1].samples, rtol=1e-3, atol=1e-3)
    assert m0["processes"] == m1["processes"] == 2 and single[1].metrics["processes"] == 1
    assert m1["reward_mean"] == pytest.approx(single[1].metrics["reward_mean"], abs=1e-5)


# -- the real launcher, kill -9 and --resume -----------------------------------------------------------------
CLI_RUN = ["--model", "toy2d", "--reward", "x", "--method", "pgraft", "--cutoff", "0.3", "--samples", "400"]
CLI_RUN += ["--preview", "16", "--num-inference-steps", "20", "--batch-size", "256", "--lr", "2e-3", "--quiet"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accelerate(args: list[str], **popen):
    import os
    import shutil
    import subprocess
    import sys

    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    cmd = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    cmd += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([*cmd, "-m", "pgraft", "run", *args], env=env, text=True, **popen)


@pytest.mark.slow
def test_accelerate_launch_matches_one_process_and_resumes_after_kill_9(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    rounds = ["--rounds", "2", "--finetune-steps", "400"]
    ref = _accelerate([*CLI_RUN, *rounds, "--out", str(tmp_path / "ref")], stdout=subprocess.PIPE)
    printed, _ = ref.communicate(timeout=300)
    assert ref.returncode == 0
    assert "pgraft: 2 processes (gloo), rank 0 on cpu" in printed
    assert printed.count("done: metrics in") == 1  # only the main process prints
    one = [sys.executable, "-m", "pgraft", "run", *CLI_RUN, "--rounds", "1", "--finetune-steps", "400"]
    subprocess.run([*one, "--out", str(tmp_path / "one")], check=True, capture_output=True, timeout=300)
    (m0, t0), *_ = _rounds(tmp_path / "ref")
    (n0, u0), *_ = _rounds(tmp_path / "one")
    for key in ("samples", "rewards", "accepted", "x_cut", "preview_samples"):
        assert torch.equal(t0[key], u0[key]), key
    assert m0["processes"] == 2 and n0["processes"] == 1

    # kill -9 the whole launch while round 2 is being made, then resume
    run = tmp_path / "run"
    victim = _accelerate([*CLI_RUN, *rounds, "--out", str(run)], start_new_session=True, stdout=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run / "rounds" / "round_001" / "metrics.json").exists():
        assert victim.poll() is None and time.time() < deadline
        time.sleep(0.05)
    time.sleep(0.5)  # into round 2's sampling and fine-tuning
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    assert not (run / "rounds" / "round_002" / "metrics.json").exists(), "the kill came too late to test anything"
    resumed = _accelerate([*CLI_RUN, *rounds, "--out", str(run), "--resume"], stdout=subprocess.PIPE)
    printed, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, printed
    got, want = _rounds(run), _rounds(tmp_path / "ref")
    assert len(got) == len(want) == 3
    for (ma, ta), (mb, tb) in zip(got, want, strict=True):
        assert _measured(ma) == _measured(mb)
        for key in tb:
            assert torch.equal(ta[key], tb[key]), key
    assert sorted(p.name for p in (run / "rounds").iterdir()) == ["round_000", "round_001", "round_002"]
