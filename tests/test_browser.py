"""The demo single-page app in a real browser: Debian's Chromium through Playwright.

``authsvc serve`` serves the demo at ``/demo/``, same-origin with the API. Chromium
counts ``http://127.0.0.1`` as a secure context, so it keeps the ``__Host-``,
``Secure`` refresh cookie there as it would on HTTPS. Playwright drives
``/usr/bin/chromium`` (never a browser it downloads); without it the tests skip
locally and fail in CI (``CI=true``), where ``.ci/run`` installs it. Screenshots go
to each test's temporary folder.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import BACKENDS, create_postgres_database, drop_postgres_database
from helpers import PASSWORD, unique_name
from live import FAST_HASHING, UNTHROTTLED, LiveServer, clean_env, serve_command
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    expect,
    sync_playwright,
)

pytestmark = pytest.mark.live

CHROMIUM = Path("/usr/bin/chromium")
#: Chromium as a test browser: no sandbox (containers), and none of its own calls
#: to the network, which is closed here.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
COOKIE = "__Host-authsvc_refresh"
#: Milliseconds the page may take to show what a step leads to.
WAIT = 15_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, for the module."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module", params=BACKENDS)
def server(request, tmp_path_factory) -> Iterator[LiveServer]:
    """``authsvc serve`` with the demo and the refresh cookie on."""
    folder = tmp_path_factory.mktemp("browser")
    name = None
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'authsvc.db'}"
    else:
        name, url = create_postgres_database()
    env = clean_env(
        SECRET_KEY="browser-secret-" + "b" * 40,
        DATABASE_URL=url,
        REFRESH_COOKIE="1",
        DEMO_SPA="1",
        **FAST_HASHING,
        **UNTHROTTLED,
    )
    try:
        with LiveServer(serve_command(2), cwd=folder, env=env) as live:
            yield live
    finally:
        if name is not None:
            drop_postgres_database(name)


class Pages:
    """The pages (tabs) of one browser context, each watched for uncaught errors."""

    def __init__(self, context: BrowserContext, url: str, folder: Path) -> None:
        self.context = context
        self.url = url
        self.folder = folder
        self.errors: list[str] = []
        self.shots = 0

    def open(self, path: str = "/demo/") -> Page:
        """A new tab at ``path`` of the service."""
        page = self.context.new_page()
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.goto(self.url + path)
        return page

    def screenshot(self, page: Page, name: str) -> None:
        """Keep what the page shows, in the test's temporary folder."""
        self.shots += 1
        page.screenshot(path=self.folder / f"{self.shots:02d}-{name}.png")


@pytest.fixture
def pages(browser, server, tmp_path) -> Iterator[Pages]:
    """A fresh browser context (no cookies) on the service; no page may throw."""
    context = browser.new_context()
    context.set_default_timeout(WAIT)
    tabs = Pages(context, server.url, tmp_path)
    try:
        yield tabs
    finally:
        context.close()
    assert tabs.errors == []


@pytest.fixture
def user(server) -> str:
    """A registered username of the test's own."""
    username = unique_name("web")
    reply = server.request(
        "POST", "/users", {"username": username, "password": PASSWORD}
    )
    assert reply.status == 201, reply
    return username


def log_in(page: Page, username: str) -> None:
    """Log in through the demo's form and wait for the account to show."""
    page.locator("#login").wait_for(state="visible")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("#password-form button[type=submit]")
    shows_user(page, username)


def shows_user(page: Page, username: str) -> None:
    """Wait until ``page`` shows ``username`` signed in."""
    page.locator("#account").wait_for(state="visible")
    assert page.text_content("#username") == username
    page.locator("#sessions li").first.wait_for(state="visible")


def shows_login(page: Page) -> None:
    """Wait until ``page`` shows the login form, and not the account."""
    page.locator("#login").wait_for(state="visible")
    assert page.is_hidden("#account")
    assert page.is_visible("#password-form")
    assert page.is_hidden("#mfa-form")


def refresh_cookie(context: BrowserContext) -> dict:
    """The one cookie the service set."""
    cookies = context.cookies()
    assert [cookie["name"] for cookie in cookies] == [COOKIE]
    return cookies[0]


def test_logging_in_through_the_form_shows_the_user(pages, user):
    page = pages.open()
    shows_login(page)
    pages.screenshot(page, "login")
    log_in(page, user)
    assert page.text_content("#status") == f"Signed in as {user}."
    sessions = page.locator("#sessions li")
    assert sessions.count() == 1
    assert "(this device)" in sessions.first.text_content()
    pages.screenshot(page, "signed-in")


def test_the_refresh_token_is_out_of_reach_of_javascript(pages, user):
    page = pages.open()
    log_in(page, user)
    assert page.evaluate("document.cookie") == ""
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0
    cookie = refresh_cookie(pages.context)
    assert cookie["httpOnly"] is True
    assert cookie["secure"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/"
    assert cookie["domain"] == "127.0.0.1"
    assert len(cookie["value"]) >= 43


def test_a_reload_restores_the_session_through_the_cookie_alone(pages, user):
    page = pages.open()
    log_in(page, user)
    before = refresh_cookie(pages.context)["value"]
    page.reload()
    shows_user(page, user)
    # The reload refreshed through the cookie: it holds the successor now.
    assert refresh_cookie(pages.context)["value"] != before
    pages.screenshot(page, "after-reload")
    # A new tab has no access token either: the cookie brings the session back.
    shows_user(pages.open(), user)


def test_two_tabs_refreshing_at_once_both_stay_logged_in(pages, user):
    first = pages.open()
    log_in(first, user)
    second, third = pages.open(), pages.open()
    shows_user(second, user)
    shows_user(third, user)
    cookie = refresh_cookie(pages.context)["value"]
    answers: list[int] = []
    for page in (second, third):
        page.on(
            "response",
            lambda response: (
                response.url.endswith("/refresh") and answers.append(response.status)
            ),
        )
    # Both reload at the same moment: two refreshes with the same cookie.
    with second.expect_navigation(), third.expect_navigation():
        second.evaluate("setTimeout(() => location.reload(), 0)")
        third.evaluate("setTimeout(() => location.reload(), 0)")
    for page in (second, third):
        shows_user(page, user)
        assert page.locator("#sessions li").count() == 1
    assert answers == [200, 200]
    # Both were handed the same successor, and it was not taken for reuse: the
    # session refreshes on.
    successor = refresh_cookie(pages.context)["value"]
    assert successor != cookie
    second.reload()
    shows_user(second, user)
    third.reload()
    shows_user(third, user)
    assert answers == [200, 200, 200, 200]
    pages.screenshot(third, "two-tabs")


def test_logout_in_one_tab_reaches_the_other(pages, user):
    first = pages.open()
    log_in(first, user)
    second = pages.open()
    shows_user(second, user)
    first.click("#logout")
    shows_login(first)
    shows_login(second)
    assert second.text_content("#status") == "Logged out in another tab."
    pages.screenshot(second, "other-tab-logged-out")
    assert pages.context.cookies() == []
    second.reload()
    shows_login(second)


def test_logging_out_another_device(pages, user, server):
    elsewhere = server.request(
        "POST", "/login", {"username": user, "password": PASSWORD}
    ).body
    page = pages.open()
    log_in(page, user)
    sessions = page.locator("#sessions li")
    sessions.nth(1).wait_for(state="visible")
    assert sessions.count() == 2
    other = sessions.filter(has_not_text="(this device)")
    other.locator("button").click()
    # A locator's wait, not a script's: the page's policy forbids eval.
    expect(sessions).to_have_count(1)
    assert "(this device)" in sessions.first.text_content()
    refused = server.request("GET", "/me", token=elsewhere["access_token"])
    assert (refused.status, refused.code) == (401, "token_revoked")


class Foreign(BaseHTTPRequestHandler):
    """A page of another origin, which tries to use the service's cookie."""

    def do_GET(self) -> None:
        body = b"<!doctype html><title>elsewhere</title><p>elsewhere</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def foreign() -> Iterator[int]:
    """The other origin's server, in a thread, on a free loopback port."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Foreign)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


#: What the foreign page tries: with the CSRF header (a preflight the service
#: refuses), and as a simple request without it (415, not JSON).
ATTACKS = """async (url) => {
  const tried = [];
  try {
    const response = await fetch(url, {
      method: "POST",
      credentials: "include",
      headers: {"Content-Type": "application/json", "X-Authsvc-CSRF": "1"},
      body: "{}",
    });
    tried.push(`read ${response.status}`);
  } catch (error) {
    tried.push(`refused ${error.name}`);
  }
  const blind = await fetch(url, {
    method: "POST", mode: "no-cors", credentials: "include", body: "{}",
  });
  tried.push(blind.type);
  return tried;
}"""


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost"], ids=["same-site", "cross-site"]
)
def test_a_page_of_another_origin_cannot_refresh_with_the_cookie(
    pages, user, server, foreign, host
):
    page = pages.open()
    log_in(page, user)
    before = refresh_cookie(pages.context)["value"]
    attacker = pages.context.new_page()
    attacker.on("pageerror", lambda error: pages.errors.append(str(error)))
    attacker.goto(f"http://{host}:{foreign}/")
    tried = attacker.evaluate(ATTACKS, server.url + "/refresh")
    assert tried == ["refused TypeError", "opaque"]
    pages.screenshot(attacker, "foreign-page")
    # Nothing rotated: the cookie is the one the login set, and it still works.
    assert refresh_cookie(pages.context)["value"] == before
    page.reload()
    shows_user(page, user)
    assert refresh_cookie(pages.context)["value"] != before


def test_an_expired_access_token_is_refreshed_through_the_cookie(pages, user):
    page = pages.open()
    log_in(page, user)
    expired = {
        "type": "about:blank",
        "title": "Unauthorized",
        "status": 401,
        "detail": "The access token has expired.",
        "code": "token_expired",
    }
    challenge = 'Bearer realm="authsvc", error="invalid_token"'
    expiries: list[str] = []
    refreshes: list[str] = []

    def expire_once(route) -> None:
        # The service's answer to an access token past its exp, once: the
        # browser's clock cannot move the live server's.
        if expiries:
            route.continue_()
            return
        expiries.append(route.request.url)
        route.fulfill(status=401, json=expired, headers={"WWW-Authenticate": challenge})

    page.route("**/sessions", expire_once)
    page.on(
        "request",
        lambda request: request.url.endswith("/refresh") and refreshes.append("x"),
    )
    page.reload()
    shows_user(page, user)
    # One refresh on load, one for the expired token; the list was read again.
    assert len(expiries) == 1
    assert len(refreshes) == 2
    assert page.locator("#sessions li").count() == 1


def test_the_second_factor_is_asked_for_when_the_service_wants_it(pages, user):
    # The contract's answer for an account with a second factor, in front of the
    # password login; the code's request then goes on as that login, so the
    # session (and its cookie) is real.
    challenge = {
        "type": "about:blank",
        "title": "Unauthorized",
        "status": 401,
        "detail": "A second factor is required.",
        "code": "mfa_required",
        "mfa_token": "mfa-token-of-the-test",
        "mfa_expires_in": 300,
    }
    sent: list[dict] = []

    def password(route) -> None:
        route.fulfill(status=401, json=challenge)

    def code(route) -> None:
        sent.append(json.loads(route.request.post_data))
        body = {"username": user, "password": PASSWORD}
        body["refresh_token_transport"] = "cookie"
        route.continue_(url=pages.url + "/login", post_data=json.dumps(body))

    page = pages.open()
    page.route("**/login", password)
    page.route("**/login/mfa", code)
    page.locator("#login").wait_for(state="visible")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("#password-form button[type=submit]")
    page.locator("#mfa-form").wait_for(state="visible")
    assert page.is_hidden("#password-form")
    pages.screenshot(page, "second-factor")
    page.fill("input[name=code]", "123456")
    page.click("#mfa-form button[type=submit]")
    shows_user(page, user)
    assert sent == [
        {
            "mfa_token": "mfa-token-of-the-test",
            "code": "123456",
            "refresh_token_transport": "cookie",
        }
    ]
    assert refresh_cookie(pages.context)["httpOnly"] is True
