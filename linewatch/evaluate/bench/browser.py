"""Open the HTML report in headless Chromium (Debian's `chromium`, driven by Playwright) as a person would:
what it shows, whether it asked for anything outside the file, and optionally a screenshot.

Playwright is a test / tooling dependency and its own browser download is not used, so the browser is
the system one; both are looked up lazily with errors that say how to install them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from linewatch.errors import LinewatchError

INSTALL = "apt-get install -y chromium"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


class BrowserUnavailable(LinewatchError, RuntimeError):
    """No Chromium binary or no Playwright package."""


def find_chromium() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise BrowserUnavailable(f"no Chromium found ({', '.join(BROWSERS)}); install it with: {INSTALL}")


def render(html_file: Path, screenshot: Path | None = None, width: int = 1400, height: int = 900,
           timeout_ms: int = 30_000) -> dict[str, Any]:
    """Load the page offline; return its table and image counts, broken images and outside requests."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise BrowserUnavailable("Playwright is missing: pip install playwright (the test extra has it)") from None
    executable = find_chromium()
    outside: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"], timeout=timeout_ms)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(timeout_ms)

            def guard(route: Any) -> None:
                url = route.request.url
                if url.startswith(("file:", "data:")):
                    route.continue_()
                else:
                    outside.append(url)
                    route.abort()

            page.route("**/*", guard)
            page.goto(Path(html_file).resolve().as_uri(), wait_until="load")
            facts = page.evaluate("""() => ({
                title: document.title,
                tables: document.querySelectorAll('table').length,
                rows: document.querySelectorAll('tbody tr').length,
                headings: Array.from(document.querySelectorAll('h2, h3')).map(h => h.textContent),
                images: document.images.length,
                broken: Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length,
                smallest: Math.min(...Array.from(document.images).map(i => i.naturalWidth)),
            })""")
            if screenshot is not None:
                Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=False)
        finally:
            browser.close()
    return {**facts, "outside_requests": outside}
