"""How pgraft drives a real browser: Debian's Chromium through Playwright (never `playwright install`, which
downloads a browser). Constants only, shared by the browser tests (`conftest.py`) and `scripts/screenshot.py`."""

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
