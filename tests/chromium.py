"""How pgraft drives a real browser: Debian's Chromium through Playwright (never `playwright install`, which
downloads a browser). Shared by the browser tests (`conftest.py`, the test modules) and `scripts/screenshot.py`;
nothing here imports Playwright."""

from typing import Any

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def type_into(page: Any, elem_id: str, text: str) -> None:
    """Type `text` into the Gradio text box or number box with this `elem_id`, then leave it (Tab), so that its
    change event fires."""
    box = page.locator(f"#{elem_id} input, #{elem_id} textarea").first
    box.fill(text)
    box.press("Tab")
