"""The inverse-noise-correction tab in a real browser (Chromium via Playwright, `pytest -m e2e`): a toy run on
the karras grid with the linear grid beside it fills the table with both base samplers and the corrected one,
and shows no error. A screenshot is left in the test's folder."""

import pytest
from chromium import type_into

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_a_karras_run_scores_the_linear_base_beside_it(app_page, toast_errors, tmp_path):
    page = app_page()
    page.get_by_role("tab", name="Inverse noise correction").click()
    page.wait_for_selector("#inc-run", state="visible", timeout=30_000)
    type_into(page, "inc-steps", "8")
    type_into(page, "inc-correction-steps", "1")
    page.locator("#inc-grid input").click()
    page.get_by_role("option", name="karras").click()
    page.locator("#inc-reference-grids").get_by_label("linear").check()
    page.click("#inc-run")
    page.wait_for_function("() => /Done/.test(document.querySelector('#inc-status').innerText)", timeout=300_000)
    page.wait_for_timeout(800)
    page.screenshot(path=str(tmp_path / "inc.png"), full_page=True)
    assert toast_errors(page) == []
    status = page.locator("#inc-status").inner_text()
    assert "karras grid) against the best base sampler at the same K" in status and "own grid" in status, status
    page.get_by_text("Tables").click()
    table = page.locator("#inc-table").inner_text()
    assert "reference" in table and "linear" in table and "corrected" in table, table
