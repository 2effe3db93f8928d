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


# --- the browser tests (`-m e2e`): one Chromium for the session, one app per module ---------------------------

TOAST_ERRORS = "() => [...document.querySelectorAll('.toast-body')].map(t => t.innerText).filter(t => /Error/.test(t))"
"""The texts of the error toasts on a page (Gradio's `gr.Error` and failed events)."""


@pytest.fixture(scope="session")
def chromium():
    """Debian's Chromium driven by Playwright; never `playwright install`, which downloads a browser
    (`.ci/run` installs `chromium` when it is missing)."""
    import shutil

    path = shutil.which("chromium")
    if path is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    from chromium import CHROMIUM_FLAGS  # tests/chromium.py, shared with scripts/screenshot.py

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def served_app(request, tmp_path_factory, chromium):
    """The app served from this process for one test module, with its own sessions folder; a module that sets
    `WARM_APP = True` gets the models loaded before the first page (as `python app.py` does)."""
    from pgraft.ui.app import build_demo, launch

    warm = bool(getattr(request.module, "WARM_APP", False))
    demo = build_demo(device="cpu", sessions_root=tmp_path_factory.mktemp("sessions"), warm=warm)
    launch(demo, prevent_thread_lock=True, quiet=True)
    yield demo
    demo.close()


def settled_page(browser, url: str, width: int = 1440, height: int = 1000, **options):
    """A new page on `url`, returned once the load events have drawn the rule's plot: before that the layout
    still moves, and an element screenshot waits for it to stand still (once timed out after 30 s in CI)."""
    page = browser.new_page(viewport={"width": width, "height": height}, **options)
    page.goto(url)
    page.wait_for_selector("#reshaping .js-plotly-plot", timeout=120_000)
    return page


@pytest.fixture(scope="module")
def app_page(served_app, chromium):
    """`app_page(width=…, height=…, query="", **options)`: a settled page of the module's app."""

    def open_page(width: int = 1440, height: int = 1000, query: str = "", **options):
        return settled_page(chromium, served_app.local_url + query, width, height, **options)

    return open_page


@pytest.fixture(scope="session")
def toast_errors():
    """`toast_errors(page)`: the error toasts the page shows (expected: none)."""
    return lambda page: page.evaluate(TOAST_ERRORS)
