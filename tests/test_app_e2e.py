"""The app in a real browser: Debian's Chromium driven by Playwright (`pytest -m e2e`).

Never `playwright install` (it downloads a browser): the test uses the system's `chromium`, which
`.ci/run` installs when it is missing.
"""

import shutil

import pytest

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    from pgraft.ui.app import build_demo

    demo = build_demo(device="cpu", sessions_root=tmp_path_factory.mktemp("sessions"))
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(demo.local_url)
        page.wait_for_selector("#run", timeout=60_000)
        # The page has settled when the load events have drawn the rule's plot: before that the layout still
        # moves, and an element screenshot waits for it to stand still (once timed out after 30 s in CI).
        page.wait_for_selector("#reshaping .js-plotly-plot", timeout=120_000)
        yield page
        browser.close()
    demo.close()


def test_a_toy_round_draws_the_histogram_and_the_samples(page, tmp_path):
    histogram, samples = page.locator("#histogram"), page.locator("#samples")
    assert histogram.locator(".bars").count() == 0  # before the first run: an empty state with a hint
    before = {"histogram": histogram.screenshot(), "samples": samples.screenshot()}
    page.locator("#rounds input[type=number]").fill("1")
    page.locator("#rounds input[type=number]").press("Enter")
    page.click("#run")
    page.wait_for_function("() => /Finished/.test(document.querySelector('#status').innerText)", timeout=300_000)
    page.wait_for_timeout(500)
    page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
    assert histogram.locator(".bars").count() >= 1
    assert "round 1" in histogram.inner_text()
    assert samples.locator(".scatterlayer .point").count() > 100  # before and after, same seeds
    assert "after: round 1" in samples.inner_text()
    assert histogram.screenshot() != before["histogram"] and samples.screenshot() != before["samples"]
    assert "Finished: 1 round after the base" in page.locator("#status").inner_text()
    assert page.locator("#run").is_enabled() and page.locator("#stop").is_disabled()  # ready for the next run
    assert (tmp_path / "app.png").stat().st_size > 50_000
