"""The rendered report in a real browser: loads nothing, runs nothing, reads well.

Drives Debian's headless Chromium (``/usr/bin/chromium``; ``make test`` installs it via
scripts/ensure-system.sh) through playwright. Screenshots land in each test's tmp_path.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from reports import render_html
from tests.reports.builders import image_audit, tabular_audit
from tests.reports.test_render import HOSTILE, _hostile_image_result

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing; install Debian's chromium (make test does)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


class _Watched:
    """A page opened on a report file, recording requests, console errors and dialogs."""

    def __init__(self, browser, html: str, folder: Path, width: int = 1280):
        self.path = folder / "report.html"
        self.path.write_text(html, encoding="utf-8")
        self.url = self.path.as_uri()
        self.context = browser.new_context(viewport={"width": width, "height": 900},
                                           java_script_enabled=True)
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", self._dialog)
        self.page.goto(self.url, wait_until="load")

    def _dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def outside_requests(self) -> list[str]:
        return [u for u in self.requests if u != self.url and not u.startswith("data:")]

    def close(self):
        self.context.close()


def test_image_report_loads_nothing_and_shows_findings(browser, tmp_path):
    watched = _Watched(browser, render_html(image_audit()), tmp_path)
    try:
        page = watched.page
        findings = page.locator("#findings")
        findings.scroll_into_view_if_needed()
        assert findings.is_visible()
        assert page.locator("#findings article.finding").count() == 3
        assert page.locator("#summary .verdict").inner_text().startswith("FAIL")
        # Every figure decoded (a broken data URI would have naturalWidth 0).
        widths = page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
        assert widths and min(widths) > 0
        # Nothing wider than the viewport: readable without horizontal scrolling.
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        findings.screenshot(path=str(tmp_path / "findings.png"))
        assert watched.outside_requests() == []
        assert watched.errors == []
    finally:
        watched.close()
    assert (tmp_path / "report.png").stat().st_size > 50_000


def test_tabular_report_on_a_narrow_screen(browser, tmp_path):
    watched = _Watched(browser, render_html(tabular_audit()), tmp_path, width=820)
    try:
        assert watched.page.locator("#local article.example").count() == 8
        assert watched.page.locator("#drift").count() == 0
        watched.page.screenshot(path=str(tmp_path / "tabular.png"), full_page=True)
        assert watched.outside_requests() == []
        assert watched.errors == []
    finally:
        watched.close()


def test_hostile_names_run_no_script_and_fetch_nothing(browser, tmp_path):
    watched = _Watched(browser, render_html(_hostile_image_result()), tmp_path)
    try:
        page = watched.page
        assert page.locator("script").count() == 0
        assert page.locator("img:not([src^='data:image/png;base64,'])").count() == 0
        body = page.inner_text("body")
        for text in HOSTILE:
            assert text in body
        assert watched.dialogs == []
        assert watched.outside_requests() == []
        assert watched.errors == []
    finally:
        watched.close()


def test_print_layout_breaks_pages_per_section(browser, tmp_path):
    watched = _Watched(browser, render_html(tabular_audit()), tmp_path)
    try:
        page = watched.page
        page.emulate_media(media="print")
        style = "(s) => getComputedStyle(document.querySelector(s)).{}"
        assert page.evaluate(f"({style.format('breakBefore')})('#findings')") == "page"
        assert page.evaluate(f"({style.format('breakBefore')})('#summary')") == "auto"
        assert page.evaluate(f"({style.format('display')})('nav.toc')") == "none"
        assert page.evaluate(f"({style.format('breakInside')})('figure')") == "avoid"
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(255, 255, 255)"
        pdf = page.pdf(format="A4")
        pages = len(re.findall(rb"/Type\s*/Page\b(?!s)", pdf))
        # Each of the eight sections starts a page; long ones take more.
        assert pages >= 8
        assert watched.errors == []
    finally:
        watched.close()
