"""Launch the pgraft app: `python app.py [--host H] [--port P] [--auth user:password] [--device D]
[--runs-dir DIR] [--rewards MODULE] [--models-dir DIR] [--limit NAME=N]`.

Binding to anything but a loopback address requires a username and password (`--auth`, or the
PGRAFT_AUTH environment variable as `user:password`), so a run is never opened to a network by accident.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Before torch loads OpenMP: idle worker threads sleep instead of spinning. The web server (and a browser on
# the same machine) compete for the cores; with spinning threads a toy round measured 20x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

LOOPBACK_NAMES = ("localhost",)
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_auth(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise SystemExit("--auth: expected user:password (both non-empty)")
    return user, password


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1 to 65535)") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (1 to 65535)")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The pgraft app: GRAFT and P-GRAFT rounds in the browser.")
    parser.add_argument("--host", default=os.environ.get("PGRAFT_HOST", "127.0.0.1"), help="address to bind")
    parser.add_argument("--port", type=port, default=os.environ.get("PGRAFT_PORT", "7860"), help="port (1 to 65535)")
    parser.add_argument(
        "--auth",
        default=os.environ.get("PGRAFT_AUTH"),
        help="user:password (env PGRAFT_AUTH); required when --host is not a loopback address",
    )
    parser.add_argument("--device", default=os.environ.get("PGRAFT_DEVICE", "auto"), help="auto, cpu, cuda, cuda:N")
    parser.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("PGRAFT_THREADS", "0")),
        help="torch CPU threads (default: all cores but one, so the page stays responsive while a round runs)",
    )
    parser.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="NAME=N",
        help="a per-request budget, e.g. --limit samples=20000 (repeatable; see pgraft/ui/limits.py for the names)",
    )
    parser.add_argument(
        "--models-dir",
        default=os.environ.get("PGRAFT_MODELS_DIR", "models"),
        help="folder whose diffusers pipeline folders the model list offers, and whose model folders and "
        "safetensors files rewards may name (default ./models; env PGRAFT_MODELS_DIR)",
    )
    parser.add_argument(
        "--runs-dir",
        default=os.environ.get("PGRAFT_RUNS_DIR"),
        help="keep every run of the app in this folder and offer the runs found there to reopen "
        "(default: a temporary folder per session, removed with it; env PGRAFT_RUNS_DIR)",
    )
    parser.add_argument(
        "--rewards",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this module at launch (trusted code, on the server) and offer the rewards it registers "
        "(REWARDS = {name: RewardSpec} or register_reward calls); repeatable. Nothing typed in the page is imported",
    )
    args = parser.parse_args(argv)
    args.auth = parse_auth(args.auth)
    from pgraft.ui.limits import Limits

    try:
        args.limits = Limits.parse(args.limit)
    except ValueError as exc:
        parser.error(str(exc))
    if not DEVICE.fullmatch(args.device):
        parser.error(f"--device: {args.device!r} is invalid; use auto, cpu, cuda, cuda:N or mps")
    if not is_loopback(args.host) and args.auth is None:
        parser.error(
            f"--host {args.host} exposes the app beyond this machine; "
            "give --auth user:password (or PGRAFT_AUTH) to require a login"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    # A browser on the same machine renders each round while the next one computes: leave it a core.
    torch.set_num_threads(args.threads if args.threads > 0 else max(1, (os.cpu_count() or 2) - 1))
    from pgraft.ui.app import build_demo, launch

    try:
        demo = build_demo(
            device=args.device,
            limits=args.limits,
            models_dir=Path(args.models_dir),
            runs_dir=Path(args.runs_dir) if args.runs_dir else None,
            reward_modules=args.rewards,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"pgraft app on http://{args.host}:{args.port} (Ctrl-C to stop)", flush=True)
    launch(demo, host=args.host, port=args.port, auth=args.auth)
    return 0


if __name__ == "__main__":
    sys.exit(main())
