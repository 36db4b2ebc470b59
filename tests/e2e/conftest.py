"""Browser fixtures for the end-to-end tests: headless Debian Chromium driven by
Playwright's sync API against pytest-django's `live_server`.

- `browser` (session): one Chromium; skips the e2e tests with a visible reason where
  there is no Chromium or no Playwright.
- `page`: a fresh browser context (cookies, localStorage) per test, with a normal
  desktop user agent (a "HeadlessChrome" one is stored as a bot and left out of every
  computed attribute and segment).
- `shots`: numbered screenshots in a per-test temporary folder; with
  `CDP_SCREENSHOT_DIR` set, named ones are copied there too (README tour).
- `eventually`: polls a condition while Playwright keeps serving the page's routes
  and events (a `time.sleep` would stall them).
- `cdp_purposes`: the consent purposes of the data migration, which a transactional
  test's flush removes.

Playwright's sync API runs an event loop in the test's thread, so Django's
async-safety check would refuse database access from the test: it is switched off
here, before anything touches the database. Tests need
`@pytest.mark.django_db(transaction=True)` so that the live server sees their rows.
"""

from __future__ import annotations

import importlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

T = TypeVar("T")

CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"]
NO_CHROMIUM = (
    "e2e: no Chromium (apt-get install chromium) or no playwright (pip install playwright)"
)


def chromium_path() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(NO_CHROMIUM + ": playwright is not installed")
    executable = chromium_path()
    if executable is None:
        pytest.skip(NO_CHROMIUM + ": no chromium executable on PATH or at /usr/bin/chromium")
    manager = sync_playwright().start()
    try:
        chromium = manager.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
    except PlaywrightError as exc:
        manager.stop()
        pytest.skip(f"{NO_CHROMIUM}: {executable} did not start: {exc}")
    yield chromium
    chromium.close()
    manager.stop()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    user_agent = (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        f"Chrome/{browser.version} Safari/537.36"
    )
    context = browser.new_context(
        user_agent=user_agent, viewport={"width": 1280, "height": 800}, locale="en-GB"
    )
    context.set_default_timeout(15_000)
    violations = csp_violations_watch(context)
    tab = context.new_page()
    yield tab
    assert violations == [], f"Content-Security-Policy violations: {violations}"
    # Leaving the page sends its last events by beacon; they must reach the live server
    # before the test's database is flushed (SQLite would be locked, PostgreSQL would
    # see rows of a test that is gone).
    for open_tab in context.pages:
        open_tab.goto("about:blank")
    tab.wait_for_timeout(200)
    context.close()
    live_server_idle()


def csp_violations_watch(context: Any) -> list[str]:
    """The Content-Security-Policy violations of the context's pages, as they happen
    (the `page` fixture fails the test on any: the product's pages must run under it)."""
    found: list[str] = []
    context.add_init_script(
        "document.addEventListener('securitypolicyviolation', function (e) {"
        " console.error('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI); });"
    )

    def on_console(message: Any) -> None:
        text = message.text
        if "CSP violation" in text or "Content Security Policy" in text:
            found.append(text)

    context.on("console", on_console)
    return found


def live_server_idle(timeout: float = 10.0) -> None:
    """Wait until the live server has no request in progress (its handler threads end
    when the browser closes their connections)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = [
            t for t in threading.enumerate() if t.is_alive() and "process_request_thread" in t.name
        ]
        if not busy:
            return
        time.sleep(0.02)


class Shots:
    """`shots(page, "cart")` saves `01-cart.png`, `02-…` in the test's folder;
    `shots(page, "cart", name="storefront-cart")` also saves
    `$CDP_SCREENSHOT_DIR/storefront-cart.png` when that variable is set."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0
        self.published = os.environ.get("CDP_SCREENSHOT_DIR")

    def __call__(
        self, page: Any, label: str, *, name: str | None = None, full_page: bool = False
    ) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{label}.png"
        page.screenshot(path=str(path), full_page=full_page)
        if self.published and name:
            target = Path(self.published)
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target / (name if name.endswith(".png") else f"{name}.png"))
        return path


@pytest.fixture
def shots(tmp_path: Path) -> Shots:
    folder = tmp_path / "screenshots"
    folder.mkdir()
    return Shots(folder)


def eventually_(
    page: Any, check: Callable[[], T], *, timeout: float = 10.0, every_ms: int = 100
) -> T:
    """The first truthy value of `check()`, polled while the page runs; fails after
    `timeout` seconds with the last value."""
    waited = 0.0
    value = check()
    while not value:
        if waited >= timeout:
            pytest.fail(f"condition not met within {timeout:g} s (last value: {value!r})")
        page.wait_for_timeout(every_ms)
        waited += every_ms / 1000
        value = check()
    return value


@pytest.fixture
def eventually() -> Callable[..., Any]:
    return eventually_


@pytest.fixture
def cdp_purposes(transactional_db: Any) -> None:
    from consent.models import Purpose

    migration = importlib.import_module("consent.migrations.0002_purposes_and_compliance_group")
    for code, name, description, basis, default, gates in migration.PURPOSES:
        Purpose.objects.update_or_create(
            code=code,
            defaults={
                "name": name,
                "description": description,
                "legal_basis": basis,
                "default": default,
                "gates": gates,
            },
        )
