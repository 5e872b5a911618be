"""Headless Chromium (Debian's package) driven by Playwright against pytest-django's live server.

The folder is skipped when /usr/bin/chromium or the playwright package is missing. Playwright's sync API
keeps an asyncio loop running in the test thread while it is started, which Django's async-safety check
would take for an async context: the check is lifted only while a browser module runs, and the browser is
stopped at the end of each module so no other test shares the thread with that loop.
"""

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PASSWORD = "pw-123456789"

try:
    import playwright.sync_api as playwright_api
except ImportError:  # pragma: no cover
    playwright_api = None


def pytest_collection_modifyitems(config, items):
    reason = None
    if not CHROMIUM.exists():
        reason = "browser tests need Debian's chromium at /usr/bin/chromium (apt-get install chromium)"
    elif playwright_api is None:
        reason = "browser tests need the playwright Python package (pip install playwright)"
    if reason is None:
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def browser():
    before = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    driver = playwright_api.sync_playwright().start()
    try:
        chromium = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        driver.stop()
        if before is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = before


class Page:
    """One browser tab on the live server that remembers what went wrong in it."""

    def __init__(self, tab, base_url):
        self.tab, self.base_url = tab, base_url
        self.console_errors, self.page_errors, self.failed_responses = [], [], []
        tab.on("console", lambda msg: msg.type == "error" and self.console_errors.append(
            f"{msg.text} ({msg.location.get('url', '')})"))
        # Content-Security-Policy violations, as the page itself reports them.
        tab.add_init_script("document.addEventListener('securitypolicyviolation', e => (window.__cspViolations ="
                            " window.__cspViolations || []).push(e.violatedDirective + ' ' + e.blockedURI))")
        tab.on("pageerror", lambda error: self.page_errors.append(str(error)))
        tab.on("response", lambda r: r.status >= 400 and self.failed_responses.append(f"{r.status} {r.url}"))

    def open(self, path):
        response = self.tab.goto(self.base_url + path)
        assert response is not None and response.ok, f"{path}: {response and response.status}"
        return response

    def log_in(self, username, password=PASSWORD):
        """Through the admin's login form, as a person would."""
        self.open("/login/")
        self.tab.fill("#id_username", username)
        self.tab.fill("#id_password", password)
        with self.tab.expect_navigation():
            self.tab.click("#login-form [type=submit], form [type=submit]")
        assert "/login/" not in self.tab.url, self.tab.inner_text("#content")

    @property
    def path(self):
        return self.tab.url.removeprefix(self.base_url)

    def csp_violations(self):
        """The policy violations the open page has reported so far."""
        return self.tab.evaluate("window.__cspViolations || []")

    def problems(self):
        return self.console_errors + self.page_errors + self.failed_responses


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    context.set_default_timeout(10_000)
    try:
        yield Page(context.new_page(), live_server.url)
    finally:
        context.close()


@pytest.fixture
def acme(workspace):
    from tests.admin.conftest import make_identities

    return make_identities(workspace, "mail.acme.com")


@pytest.fixture
def globex(other_workspace):
    from tests.admin.conftest import make_identities

    return make_identities(other_workspace, "mail.globex.com")
