"""Issue 16 in a real browser (Chromium via Playwright, `pytest -m e2e`): presets set a consistent state with
no error, a typed threshold out of range is brought back and said, Run and the first results fit a 1440×1000
screen, the sweep's tolerance box starts blank, and two runs are ticked and overlaid in the comparison."""

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _pick(page, elem_id: str, text: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option").filter(has_text=text).first.click()


def _settle(page, ms: int = 4000) -> None:
    page.wait_for_timeout(ms)
    page.wait_for_function("() => !document.querySelector('#reshaping .pending, #reshaping .eta-bar')", timeout=60_000)


def test_presets_on_a_fresh_page_set_a_consistent_state_with_no_error(app_page, toast_errors):
    page = app_page()
    _pick(page, "preset", "rare mode")
    _settle(page)
    assert toast_errors(page) == []  # was: "Value 0 is greater than maximum value -0.1"
    assert page.locator("#reward input").input_value().startswith("mode")
    for preset in ("one digit wins", "Push right", "rare mode"):
        _pick(page, "preset", preset)
        _settle(page)
        text = page.locator("#reshaping").inner_text()
        assert "Cannot" not in text and "not an argument" not in text, (preset, text)
    assert toast_errors(page) == []
    page.screenshot(path="/tmp/shots/e2e_presets.png")
    page.close()


def test_a_threshold_typed_out_of_range_is_brought_back_and_said(app_page, toast_errors):
    page = app_page()
    _pick(page, "rule", "threshold")
    _settle(page, 2000)
    box = page.get_by_label("number input for Threshold", exact=False)
    box.fill("100")
    box.press("Enter")
    box.blur()
    page.wait_for_function("() => /100 is above every base reward/.test(document.body.innerText)", timeout=30_000)
    assert float(box.input_value()) < 100
    assert toast_errors(page) == []  # was: a red Error badge on the rule panel
    page.close()


def test_run_and_the_first_results_fit_a_1440_by_1000_screen_and_the_tolerance_box_is_blank(app_page, toast_errors):
    page = app_page()
    run, histogram = (page.locator(f"#{e}").bounding_box() for e in ("run", "histogram"))
    assert run["y"] + run["height"] <= 1000 and histogram["y"] + 0.5 * histogram["height"] <= 1000
    assert run["y"] < 300  # was about 1410 px, below every control
    page.get_by_role("tab", name="Bias–variance").click()
    page.get_by_text("End-to-end sweep").click()
    assert page.locator("#bv-max-loss textarea, #bv-max-loss input").first.input_value() == ""  # was "0"
    assert "index" not in page.locator("#bv-studies").inner_text()
    page.close()


def test_two_runs_are_ticked_and_overlaid(app_page, toast_errors):
    page = app_page()
    page.locator("#rounds input[type=number]").fill("1")
    page.locator("#rounds input[type=number]").press("Enter")
    names = []
    for method in ("GRAFT", "P-GRAFT"):
        page.get_by_label(method, exact=True).check()
        page.click("#run")
        page.wait_for_function("() => /Finished/.test(document.querySelector('#status').innerText)", timeout=300_000)
        page.wait_for_function(
            f"() => document.querySelectorAll('#compare-pick input[type=checkbox]').length >= {len(names) + 1}",
            timeout=60_000,
        )
        names = page.locator("#compare-pick label").all_inner_texts()
        page.wait_for_timeout(1500)
        status = page.locator("#status").bounding_box()
        progress = page.locator("#progress").bounding_box()
        assert progress["y"] >= status["y"] + status["height"] - 1  # the progress bar's place is below the status
    assert len(names) == 2 and page.locator("#compare-pick input:checked").count() == 2  # new runs are ticked
    page.wait_for_selector("#compare-curves .js-plotly-plot", timeout=60_000)
    legend = page.locator("#compare-curves .legendtext").all_text_contents()
    assert {n.strip() for n in names} <= set(legend)  # both runs overlaid
    assert page.locator("#compare-histograms .scatterlayer .trace").count() == 2
    assert page.locator("#compare-samples .scatterlayer .trace, #compare-samples .gl-container").count() >= 1
    assert "final reward" in page.locator("#run-list").inner_text()
    page.locator("#compare").screenshot(path="/tmp/shots/e2e_compare.png")
    page.locator("#compare-pick label").first.click()  # untick one: the overlay follows
    page.wait_for_function(
        "() => document.querySelectorAll('#compare-histograms .scatterlayer .trace').length === 1", timeout=30_000
    )
    page.close()


OVERLAPS = """(sel) => {
  const t = [...document.querySelectorAll(sel + ' .annotation-text, ' + sel + ' .xtitle, ' + sel + ' .gtitle')]
    .map(e => [e.textContent, e.getBoundingClientRect()]).filter(([, r]) => r.width > 0);
  const out = [];
  for (let i = 0; i < t.length; i++) for (let j = i + 1; j < t.length; j++) {
    const [a, b] = [t[i][1], t[j][1]];
    if (a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom) out.push([t[i][0], t[j][0]]);
  }
  return out;
}"""


def test_at_820_px_no_titles_overlap_and_dark_plots_follow_the_page(app_page, tmp_path):
    page = app_page(820, 1000, "?__theme=dark", color_scheme="dark")
    page.locator("#rounds input[type=number]").fill("1")
    page.locator("#rounds input[type=number]").press("Enter")
    page.click("#run")
    page.wait_for_function("() => /Finished/.test(document.querySelector('#status').innerText)", timeout=300_000)
    page.wait_for_selector("#compare-curves .js-plotly-plot", timeout=60_000)
    page.wait_for_timeout(1000)
    for figure in ("#histogram", "#reshaping", "#samples", "#curves", "#compare-curves", "#compare-samples"):
        assert page.evaluate(OVERLAPS, figure) == [], figure  # was: the curves' and samples' titles at 820 px
    background = page.evaluate("() => getComputedStyle(document.querySelector('#curves .main-svg')).backgroundColor")
    assert background in ("rgba(0, 0, 0, 0)", "transparent")  # the dark page shows through, not a white card
    page.screenshot(path=str(tmp_path / "e2e_820_dark.png"), full_page=True)
    page.close()


REWARD_MODULE = """
from pgraft.rewards import RewardSpec

def _diagonal(context, weight: float = 1.0):
    return lambda x: weight * (x[:, 0] + x[:, 1]).double()

REWARDS = {"e2e-diagonal": RewardSpec(_diagonal, "toy2d", "x + y: push mass to the upper right", {"weight": 1.0})}
"""


def test_the_launcher_offers_a_reward_module_and_reopens_a_kept_run_after_a_restart(chromium, tmp_path):
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "e2e_rewards.py").write_text(REWARD_MODULE)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "app.py", "--port", str(port), "--threads", "1"]
    argv += ["--rewards", "e2e_rewards", "--runs-dir", str(tmp_path / "kept")]

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(argv, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            if "pgraft app on" in line:
                return proc
        raise AssertionError(f"the app did not start (exit {proc.wait()})")

    def open_page():
        page = chromium.new_page(viewport={"width": 1440, "height": 1000})
        for _ in range(60):  # the server binds its port a moment after the line is printed
            try:
                page.goto(f"http://127.0.0.1:{port}")
                break
            except Exception:
                page.wait_for_timeout(500)
        page.wait_for_selector("#reshaping .js-plotly-plot", timeout=120_000)
        return page

    proc = start()
    try:
        page = open_page()
        _pick(page, "reward", "e2e-diagonal")  # the module's reward is in the list
        page.wait_for_timeout(1500)
        page.locator("#rounds input[type=number]").fill("1")
        page.locator("#rounds input[type=number]").press("Enter")
        page.click("#run")
        page.wait_for_function("() => /Finished/.test(document.querySelector('#status').innerText)", timeout=300_000)
        page.close()
    finally:
        proc.terminate()
        proc.wait(30)
    kept = [p.name for p in (tmp_path / "kept").iterdir()]
    assert len(kept) == 1 and (tmp_path / "kept" / kept[0] / "metrics.csv").exists()
    proc = start()  # a restart
    try:
        page = open_page()
        page.locator("#earlier input").click()
        assert page.get_by_role("option").all_inner_texts() == kept
        page.get_by_role("option").first.click()
        page.click("#reopen")
        page.wait_for_function("() => /Reopened/.test(document.querySelector('#status').innerText)", timeout=60_000)
        page.wait_for_selector("#histogram .bars", timeout=60_000)  # drawn from the files, not recomputed
        # the run list is refreshed by the event chained after the reopen, so wait for it rather than read it once
        page.wait_for_function(
            "() => /e2e-diagonal/.test(document.querySelector('#run-list').innerText)", timeout=60_000
        )
        page.close()
    finally:
        proc.terminate()
        proc.wait(30)
