"""Screenshot of the app after a toy run, for the README: `python scripts/screenshot.py [--out docs/app.png]`.

Starts the app in this process, drives Debian's Chromium through Playwright (never `playwright install`),
picks a preset, runs it to the end and saves the page. `--moments DIR` also saves the empty page, the
page during the run and the finished page, to look at the app as a newcomer would.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Page

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def choose(page: Page, elem_id: str, option: str) -> None:
    """Pick `option` in the Gradio dropdown with this `elem_id`."""
    page.locator(f"#{elem_id} input").first.click()
    page.get_by_role("option", name=option).first.click()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "app.png")
    parser.add_argument("--preset", default="Why P-GRAFT helps: a rare mode")
    parser.add_argument("--moments", type=Path, help="also save screenshots at several moments into this folder")
    parser.add_argument("--width", type=int, default=1440)
    args = parser.parse_args()
    if not shutil.which("chromium"):
        sys.exit("chromium is not installed: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    from pgraft.ui.app import build_demo, launch
    from tests.chromium import CHROMIUM_FLAGS  # the browser tests' flags

    demo = build_demo(device="cpu", sessions_root=Path(tempfile.mkdtemp(prefix="pgraft-shot-")))
    _, url, _ = launch(demo, prevent_thread_lock=True, quiet=True)
    moments = args.moments
    if moments:
        moments.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": args.width, "height": 1000}, device_scale_factor=1)
            page.goto(url)
            page.wait_for_selector("#run", timeout=60_000)
            page.wait_for_selector("#reshaping .js-plotly-plot", timeout=120_000)
            if moments:
                page.screenshot(path=str(moments / "1-empty.png"), full_page=True)
            if args.preset:
                choose(page, "preset", args.preset)
                page.wait_for_timeout(1500)
            page.click("#run")
            page.wait_for_selector("#histogram .js-plotly-plot .bars", timeout=120_000)
            if moments:
                page.screenshot(path=str(moments / "2-round0.png"), full_page=True)
            page.wait_for_function(
                "() => /Finished|Stopped|failed/.test(document.querySelector('#status').innerText)", timeout=600_000
            )
            time.sleep(1.0)  # let plotly finish drawing
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
            if moments:
                page.screenshot(path=str(moments / "3-finished.png"), full_page=True)
            browser.close()
    finally:
        demo.close()
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
