"""Issue 15 in a real browser (Chromium via Playwright, `pytest -m e2e`): a 2-trial scout on the toy streams its
trials into the table and the Pareto plot, "Use this trial" switches to the Rounds tab with the trial's
settings, and "Export full run" shows the accelerate command. A screenshot is left in the test's folder."""

import pytest
from chromium import type_into

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def page(app_page):
    pytest.importorskip("optuna")
    page = app_page()
    yield page
    page.close()


def test_a_two_trial_scout_fills_the_table_and_the_plot(page, tmp_path, toast_errors):
    page.locator("#rounds input[type=number]").fill("1")  # the trials' base is the Rounds tab: one round each
    page.locator("#rounds input[type=number]").press("Enter")
    page.get_by_role("tab", name="Scout").click()
    assert "model toy2d" in page.locator("#scout-studies").inner_text()
    type_into(page, "scout-trials", "2")
    type_into(page, "scout-range-samples", "256:512:256")  # the preview is 256
    type_into(page, "scout-range-finetune-steps", "10:20")
    page.click("#scout-run")
    page.wait_for_function("() => /Done/.test(document.querySelector('#scout-status').innerText)", timeout=300_000)
    page.wait_for_timeout(800)
    page.screenshot(path=str(tmp_path / "scout.png"), full_page=True)
    assert toast_errors(page) == []
    assert "Recommended: trial" in page.locator("#scout-status").inner_text()
    table = page.locator("#scout-table").inner_text()
    assert "final_reward" in table and table.count("graft") == 2, table  # one row per trial (method graft or pgraft)
    assert page.locator("#scout-plot .scatterlayer .point").count() >= 2  # one point per trial, and the ring
    assert "realism loss" in page.locator("#scout-plot").inner_text()

    page.click("#scout-export")
    page.wait_for_function(
        "() => /accelerate launch --multi_gpu/.test(document.querySelector('#scout-commands').innerText)",
        timeout=30_000,
    )
    assert "predicted_s" in page.locator("#scout-cost").inner_text()  # on 1 and 8 devices
    page.screenshot(path=str(tmp_path / "scout_export.png"), full_page=True)

    page.click("#scout-use")
    page.wait_for_selector("#run", state="visible", timeout=30_000)  # switched to the Rounds tab
    page.wait_for_timeout(500)
    assert toast_errors(page) == []
    assert (tmp_path / "scout.png").stat().st_size > 50_000
