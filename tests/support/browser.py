"""A real headless Chromium (Debian's chromium) driven by Playwright, for the status pages.

Playwright's own browser download is never used: the launch names /usr/bin/chromium (installed by
`make test` from Debian's package). Every page a test opens records its console errors and uncaught
exceptions; ``Browser.page(url)`` fails the test on any of them when it is closed.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# as root (CI) Chromium needs --no-sandbox; the rest keeps it from reaching for the network it does not have
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]

PHONE = {"width": 360, "height": 740}  # a small phone, portrait
LAPTOP = {"width": 1280, "height": 800}


class Page:
    """A page and what went wrong in it: console errors and uncaught exceptions."""

    def __init__(self, page):
        self.page = page
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def __getattr__(self, name):
        return getattr(self.page, name)

    def cells(self, table_id: str) -> list[dict[str, str]]:
        """The rows of a table as {heading: text}, as a person reads them."""
        return self.page.evaluate("""(id) => {
            const t = document.getElementById(id);
            if (!t) return null;
            const heads = [...t.querySelectorAll("thead th")].map((th) => th.textContent.trim());
            return [...t.querySelectorAll("tbody tr")].map((tr) => Object.fromEntries(
                [...tr.querySelectorAll("td")].map((td, i) => [heads[i], td.textContent.trim()])));
        }""", table_id)

    def overflows(self) -> int:
        """How many CSS pixels the page is wider than its window (0: nothing to scroll sideways)."""
        return self.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")


class Browser:
    def __init__(self, browser):
        self.browser = browser

    @contextlib.contextmanager
    def page(self, url: str, viewport: dict = LAPTOP, wait_for: str = "#content > *"):
        context = self.browser.new_context(viewport=viewport)
        page = Page(context.new_page())
        try:
            page.goto(url)
            page.wait_for_selector(wait_for, timeout=15_000)
            yield page
            assert not page.errors, page.errors
        finally:
            context.close()


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: make test installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield Browser(b)
        finally:
            b.close()
