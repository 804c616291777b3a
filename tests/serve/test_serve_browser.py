"""The page at / in a real browser: Playwright drives Debian's chromium (no download)."""

from __future__ import annotations

import shutil

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which("chromium") and not shutil.os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed (make test installs Debian's chromium where it can)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
        yield b
        b.close()


@pytest.mark.slow
def test_page_shows_plain_and_corrected_with_hub_marks(browser, demo_server, tmp_path):
    pytest.importorskip("sentence_transformers")
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(demo_server.url + "/")
    page.wait_for_function(
        "document.getElementById('info').textContent.includes('wordnet-demo')", timeout=30_000
    )
    page.fill("#q", "the act of defending yourself")
    page.press("#q", "Enter")
    # the first text query may wait for the MiniLM encoder to load in the server
    page.wait_for_selector("#corrected li.item", timeout=180_000)
    plain = page.locator("#plain li.item")
    corrected = page.locator("#corrected li.item")
    assert plain.count() == 10 and corrected.count() == 10
    assert "self-defence" in corrected.all_inner_texts()[0] + corrected.all_inner_texts()[1]
    # hubs that the correction pushed out of the top 10 are marked in the plain column
    assert page.locator("#plain li.demoted .tag.hub").count() >= 1
    assert page.locator("#plain li.demoted").count() == page.locator("#corrected li.promoted").count() >= 1
    assert "N" in plain.first.locator(".nk").inner_text()
    assert "demoted by the correction" in page.inner_text("#status")
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert (tmp_path / "page.png").stat().st_size > 10_000
    # a benchmark query picked from the list (no encoder needed) marks its correct answers
    page.select_option("#examples", index=1)
    page.wait_for_function(
        "document.getElementById('query-shown').textContent.includes('correct:')", timeout=30_000
    )
    assert page.locator("#corrected li.item").count() == 10
    assert not errors, errors
    page.close()
