"""Rounds on 1 and N processes: time by part, the overhead of gathering and of the main process's writes.

    python bench/bench_distributed.py                         # toy + tiny SD pipeline, 1 and 2 CPU processes
    python bench/bench_distributed.py --processes 1 2 4 8 --device cuda --kind toy sd   # GPUs: the scaling

Each cell is one `pgraft` round after fine-tuning (round 1), run by the same `RoundRunner` that `pgraft run`
uses: alone for 1 process, and under `accelerate launch --multi_gpu --num_processes N` otherwise (with
`ACCELERATE_USE_CPU=true` on CPUs), so the processes, gather and barrier are the real ones. Columns:

- sampling / scoring / gather / fine-tune / write: seconds of the round's parts, as the run records them
  (`time_*` in metrics.csv; `write` is the main process writing the round folder while the others wait);
- samples/s: the round's candidates and preview over sampling + scoring + gather;
- speed-up: samples/s over the 1-process row of the same kind, and its efficiency (speed-up / N; the goal on
  N GPUs is >= 0.85). On one 2-core CPU, 2 processes share the cores a single process already uses, so the
  CPU rows measure the overhead, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CONFIGS: dict[str, dict[str, Any]] = {
    "toy": dict(
        model="toy2d", reward="x", method="pgraft", cutoff=0.3, rounds=1, samples=4096, preview=64,
        num_inference_steps=100, finetune_steps=300, batch_size=512,
    ),
    "sd": dict(
        reward="jpeg-compressibility", prompts=["a red square", "a blue circle"], rounds=1, samples=16, preview=2,
        num_inference_steps=10, finetune_steps=20, batch_size=8, guidance_scale=3.0,
    ),
}  # fmt: skip
PARTS = ("sampling", "scoring", "gather", "finetune", "write")


def worker(kind: str, folder: str | None, device: str, out_json: str) -> None:
    """One run inside the launch; the main process writes what it measured to `out_json`."""
    from pgraft.core.distributed import Processes
    from pgraft.graft.config import RunConfig
    from pgraft.graft.runner import RoundRunner, run_to_end

    config = RunConfig.from_dict({**CONFIGS[kind], "device": device, **({"model": folder} if folder else {})})
    processes = Processes.detect(device)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(processes.broadcast(tmp))  # the main process's folder for every rank
        runner = RoundRunner(config, out=out / "run", processes=processes)
        writes: list[float] = []
        if runner.store is not None:
            write = runner.store.write_round

            def timed(*args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                path = write(*args, **kwargs)
                writes.append(time.perf_counter() - t0)
                return path

            runner.store.write_round = timed  # type: ignore[method-assign]
        t0 = time.perf_counter()
        results = run_to_end(runner)
        wall = time.perf_counter() - t0
        processes.barrier()
    if processes.is_main:
        m = results[-1].metrics
        rows = len(results[-1].samples) + len(results[-1].preview_samples)
        parts = {p: float(m.get(f"time_{p}", 0.0)) for p in PARTS if p != "write"}
        parts["write"] = writes[-1] if writes else 0.0
        Path(out_json).write_text(json.dumps({"parts": parts, "rows": rows, "wall": wall, "world": processes.world}))


def launch(kind: str, n: int, folder: str | None, device: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        args = [__file__, "--worker", kind, "--device", device, "--json", str(result)]
        args += ["--folder", folder] if folder else []
        env = dict(os.environ)
        if n == 1:
            cmd = [sys.executable, *args]
        else:
            launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
            cmd = [launcher, "launch", "--multi_gpu", "--num_processes", str(n), "--num_machines", "1"]
            cmd += ["--mixed_precision", "no", "--dynamo_backend", "no", *args]
            if device == "cpu":
                env["ACCELERATE_USE_CPU"] = "true"
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        return dict(json.loads(result.read_text()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", nargs="+", default=["toy", "sd"], choices=sorted(CONFIGS))
    p.add_argument("--processes", nargs="+", type=int, default=[1, 2])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    p.add_argument("--json", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.folder, args.device, args.json)
        return
    import torch

    where = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(f"# one round after fine-tuning, {where}, torch {torch.__version__}")
    header = ["kind", "procs", *PARTS, "samples/s", "speed-up", "efficiency"]
    print("  ".join(f"{h:>10}" for h in header))
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kind:
            folder = None
            if kind == "sd":
                from pgraft.families.random_pipelines import build_pipeline

                folder = str(build_pipeline("sd", Path(tmp) / "sd"))
            first = None
            for n in args.processes:
                r = launch(kind, n, folder, args.device)
                parts = r["parts"]
                rate = r["rows"] / max(1e-9, parts["sampling"] + parts["scoring"] + parts["gather"])
                first = first or rate
                cells = [f"{parts[q]:10.3f}" for q in PARTS]
                speed = rate / first
                print(f"{kind:>10}  {n:>10}  " + "  ".join(cells) + f"  {rate:10.1f}  {speed:10.2f}  {speed / n:10.2f}")


if __name__ == "__main__":
    main()
