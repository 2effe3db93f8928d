"""The app in a real browser: Debian's Chromium driven by Playwright (`pytest -m e2e`).

Never `playwright install` (it downloads a browser): the test uses the system's `chromium`, which
`.ci/run` installs when it is missing.
"""

import pytest

pytestmark = pytest.mark.e2e

WARM_APP = True  # as `python app.py`: the models are loaded before the first page


@pytest.fixture(scope="module")
def page(app_page):
    page = app_page()
    yield page
    page.close()


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
