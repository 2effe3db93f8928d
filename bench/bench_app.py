"""App start-up time and time from clicking Run to the first plotted round, for the default toy and digits settings.

    python bench/bench_app.py [--repeats 3] [--models toy2d digits] [--browser]

Start-up: a fresh `python app.py` process, from its start until the server answers HTTP. Then, through
gradio_client (what the page's Run button calls), the time from submitting a run with the model's default
settings to the update that carries round 0 (figures built and sent) and round 1 (the first fine-tuned
round). `--browser` also times a click in Chromium (Playwright) until round 0's histogram is drawn.

Beside wall seconds the table gives the CPU seconds the app process used for the same span: on a machine
shared with other work, wall time grows with the load while CPU time barely does, and on an idle machine with
2 cores the wall time lies between CPU / 2 and CPU. Goals on 2 CPU cores: start-up < 15 s, first toy round
on screen < 3 s.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_app(port: int, extra: list[str]) -> tuple[subprocess.Popen[bytes], float, float]:
    """Start `python app.py`; return it with the wall and CPU seconds until its page answered."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--port", str(port), *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while time.perf_counter() - t0 < 180:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as response:
                if response.status == 200:
                    return proc, time.perf_counter() - t0, cpu_seconds(proc.pid)
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("app.py did not answer within 180 s")


def wait_until_idle(pid: int, quiet_s: float = 1.0, limit_s: float = 60.0) -> None:
    """Wait until the app's warm-up is over: no CPU used for `quiet_s`."""
    start = time.perf_counter()
    last = cpu_seconds(pid)
    while time.perf_counter() - start < limit_s:
        time.sleep(quiet_s)
        now = cpu_seconds(pid)
        if now - last < 0.05 * quiet_s:
            return
        last = now


def click_to_rounds(url: str, pid: int, model: str) -> dict[str, float]:
    """Wall and app CPU seconds from submitting a run with the model's defaults to rounds 0 and 1 arriving."""
    from gradio_client import Client

    from pgraft.ui.controls import default_reward, domain_defaults

    client = Client(url, verbose=False)
    settings = {**domain_defaults(model), "rounds": 1}
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    job = client.submit(model=model, reward=default_reward(model), reward_args="", **settings, api_name="/run")
    out: dict[str, float] = {}
    for output in job:  # the status line says which round an update carries
        for r in (0, 1):
            if f"Round {r} of" in output[0] and f"round {r}" not in out:
                out[f"round {r}"] = time.perf_counter() - t0
                out[f"round {r} cpu"] = cpu_seconds(pid) - cpu0
    job.result()
    return out


def browser_click_to_plot(url: str, pid: int) -> dict[str, float]:
    """Wall and app CPU seconds from clicking Run in Chromium to round 0's histogram on screen."""
    import shutil

    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=FLAGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(url)
        page.wait_for_selector("#reshaping .js-plotly-plot", timeout=120_000)  # the page has loaded
        wait_until_idle(pid)
        cpu0, t0 = cpu_seconds(pid), time.perf_counter()
        page.evaluate("document.querySelector('#run').click()")  # Playwright's own click waits for stability
        page.wait_for_selector("#histogram .js-plotly-plot .bars", timeout=120_000)
        out = {"round 0": time.perf_counter() - t0, "round 0 cpu": cpu_seconds(pid) - cpu0}
        browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["toy2d", "digits"])
    parser.add_argument("--browser", action="store_true", help="also time a click in Chromium")
    parser.add_argument("--app-args", default="", help="extra app.py arguments, e.g. '--threads 2'")
    args = parser.parse_args()
    rows: dict[str, list[dict[str, float]]] = {}
    for _ in range(args.repeats):
        port = free_port()
        proc, wall, cpu = start_app(port, args.app_args.split())
        rows.setdefault("start-up (process → page served)", []).append({"wall": wall, "cpu": cpu})
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_until_idle(proc.pid)  # the warm-up round runs after start-up, as a person reads the page
            for model in args.models:
                try:
                    measured = click_to_rounds(url, proc.pid, model)
                except Exception as exc:  # e.g. weights not shipped: report and go on
                    print(f"{model}: {exc}")
                    continue
                for r in (0, 1):
                    rows.setdefault(f"{model}: click → round {r} shown", []).append(
                        {"wall": measured[f"round {r}"], "cpu": measured[f"round {r} cpu"]}
                    )
            if args.browser:
                measured = browser_click_to_plot(url, proc.pid)
                rows.setdefault("toy2d in Chromium: click → round 0 drawn", []).append(
                    {"wall": measured["round 0"], "cpu": measured["round 0 cpu"]}
                )
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"pgraft app {args.app_args}, {os.cpu_count()} CPUs visible, load average {load}; median of {args.repeats}")
    print(f"{'what':<44}{'wall s':>9}{'app CPU s':>11}")
    for what, values in rows.items():
        wall = statistics.median(v["wall"] for v in values)
        cpu = statistics.median(v["cpu"] for v in values)
        print(f"{what:<44}{wall:>9.2f}{cpu:>11.2f}")
    start = statistics.median(v["wall"] for v in rows["start-up (process → page served)"])
    verdict = f"goals: start-up < 15 s -> {'meets' if start < 15 else 'misses'}"
    toy = rows.get("toy2d: click → round 0 shown")
    if toy:
        first = statistics.median(v["wall"] for v in toy)
        verdict += f"; first toy round < 3 s -> {'meets' if first < 3 else 'misses'}"
    print(verdict + " (wall time)")


if __name__ == "__main__":
    main()
