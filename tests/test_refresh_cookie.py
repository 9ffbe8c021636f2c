"""The refresh token in an HttpOnly cookie for browser apps, its CSRF check, CORS."""

from __future__ import annotations

import re

import pytest
from helpers import PASSWORD, bearer, problem

from authsvc.config import load_config

COOKIE = "__Host-authsvc_refresh"
SELF = "http://localhost"
CSRF = {"X-Authsvc-CSRF": "1", "Origin": SELF}
ATTRIBUTES = "Path=/; Secure; HttpOnly; SameSite=Strict"
CLEARED = f"{COOKIE}=; {ATTRIBUTES}; Max-Age=0"
SET = re.compile(
    rf"^{re.escape(COOKIE)}=(?P<token>[A-Za-z0-9_-]{{43,}}); "
    rf"{re.escape(ATTRIBUTES)}; Max-Age=(?P<age>\d+)$"
)
TOKEN_KEYS = {"access_token", "token_type", "expires_in", "refresh_expires_in"}
ORIGIN = "https://app.example.com"


@pytest.fixture
def browser(app):
    """A client that sends only the cookies a test names."""
    return app.test_client(use_cookies=False)


def cookie_of(response) -> str:
    """The refresh token the response sets; it sets exactly one cookie."""
    [header] = response.headers.getlist("Set-Cookie")
    match = SET.fullmatch(header)
    assert match, header
    return match["token"]


def with_cookie(token: str, **headers: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={token}", **headers}


def cookie_login(browser, register, username: str = "alice"):
    register(username)
    return browser.post(
        "/login",
        json={
            "username": username,
            "password": PASSWORD,
            "refresh_token_transport": "cookie",
        },
    )


def cookie_refresh(browser, token: str, **headers: str):
    return browser.post(
        "/refresh", json={}, headers=with_cookie(token, **CSRF, **headers)
    )


# --- POST /login ---------------------------------------------------------------


def test_login_sets_the_refresh_token_in_the_cookie_only(browser, register):
    response = cookie_login(browser, register)
    assert response.status_code == 200
    assert response.json.keys() == TOKEN_KEYS | {"session_id"}
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    [header] = response.headers.getlist("Set-Cookie")
    assert SET.fullmatch(header)["age"] == str(response.json["refresh_expires_in"])
    assert "Domain" not in header


def test_the_body_transport_is_the_default_one(browser, register):
    register()
    response = browser.post(
        "/login",
        json={
            "username": "alice",
            "password": PASSWORD,
            "refresh_token_transport": "body",
        },
    )
    assert response.status_code == 200
    assert "refresh_token" in response.json
    assert "Set-Cookie" not in response.headers


@pytest.mark.parametrize(
    ("cookie_on", "transport", "message"),
    [
        (False, "cookie", "is not offered by this service"),
        (False, "body", "is not offered by this service"),
        (True, "header", "is not valid"),
        (True, 1, "must be a string"),
    ],
)
def test_a_transport_that_is_not_offered_is_a_validation_error(
    make_app, register, cookie_on, transport, message
):
    register()
    client = make_app(REFRESH_COOKIE=cookie_on).test_client(use_cookies=False)
    response = client.post(
        "/login",
        json={
            "username": "alice",
            "password": PASSWORD,
            "refresh_token_transport": transport,
        },
    )
    problem(
        response,
        "validation_error",
        400,
        errors={"refresh_token_transport": message},
    )
    assert "Set-Cookie" not in response.headers


def test_the_cookie_is_off_in_production_unless_asked_for():
    production = {
        "AUTHSVC_ENV": "production",
        "AUTHSVC_SECRET_KEY": "s" * 40,
        "AUTHSVC_DATABASE_URL": "postgresql+psycopg://db/authsvc",
        "AUTHSVC_SMTP_URL": "smtp://mail.example.com:587?starttls=1",
    }
    assert load_config(environ={})["REFRESH_COOKIE"] is True
    assert load_config(environ=production)["REFRESH_COOKIE"] is False
    switched = {**production, "AUTHSVC_REFRESH_COOKIE": "1"}
    assert load_config(environ=switched)["REFRESH_COOKIE"] is True


# --- POST /refresh from the cookie ----------------------------------------------


def test_refresh_from_the_cookie_rotates_it(browser, register):
    first = cookie_of(cookie_login(browser, register))
    response = cookie_refresh(browser, first)
    assert response.status_code == 200, response.json
    assert response.json.keys() == TOKEN_KEYS | {"session_id"}
    assert response.headers["Cache-Control"] == "no-store"
    second = cookie_of(response)
    assert second != first
    me = browser.get("/me", headers=bearer(response.json["access_token"]))
    assert me.status_code == 200
    assert me.json["username"] == "alice"
    assert cookie_of(cookie_refresh(browser, second)) not in (first, second)


def test_two_tabs_refreshing_at_once_get_the_same_successor(browser, register):
    first = cookie_of(cookie_login(browser, register))
    one, other = cookie_refresh(browser, first), cookie_refresh(browser, first)
    assert one.status_code == other.status_code == 200
    assert cookie_of(one) == cookie_of(other)
    assert one.json["session_id"] == other.json["session_id"]


def test_a_spent_cookie_after_the_grace_window_ends_the_session(
    browser, register, clock
):
    first = cookie_of(cookie_login(browser, register))
    rotated = cookie_refresh(browser, first)
    successor = cookie_of(rotated)
    clock.advance(11)
    replayed = cookie_refresh(browser, first)
    problem(replayed, "invalid_refresh_token", 401)
    assert replayed.headers.getlist("Set-Cookie") == [CLEARED]
    # The reuse revoked the session: the successor and the access token die too.
    problem(cookie_refresh(browser, successor), "invalid_refresh_token", 401)
    me = browser.get("/me", headers=bearer(rotated.json["access_token"]))
    problem(me, "token_revoked", 401)


def test_a_refused_cookie_is_cleared(browser):
    response = cookie_refresh(browser, "x" * 43)
    problem(response, "invalid_refresh_token", 401)
    assert response.headers.getlist("Set-Cookie") == [CLEARED]


def test_without_a_cookie_an_empty_body_is_a_validation_error_as_before(browser):
    response = browser.post("/refresh", json={}, headers=CSRF)
    problem(response, "validation_error", 400, errors={"refresh_token": "is required"})
    assert "Set-Cookie" not in response.headers


def test_the_cookie_is_not_read_when_the_transport_is_off(make_app, browser, register):
    token = cookie_of(cookie_login(browser, register))
    off = make_app(REFRESH_COOKIE=False).test_client(use_cookies=False)
    response = cookie_refresh(off, token)
    problem(response, "validation_error", 400, errors={"refresh_token": "is required"})
    assert "Set-Cookie" not in response.headers


def test_a_token_in_the_body_wins_over_the_cookie(browser, register, login):
    cookie = cookie_of(cookie_login(browser, register))
    tokens = login()
    response = browser.post(
        "/refresh",
        json={"refresh_token": tokens["refresh_token"]},
        headers=with_cookie(cookie),
    )
    assert response.status_code == 200
    assert response.json["session_id"] == tokens["session_id"]
    assert "refresh_token" in response.json
    assert "Set-Cookie" not in response.headers
    # The cookie's own token was not spent.
    assert cookie_refresh(browser, cookie).status_code == 200


# --- CSRF ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": SELF},
        {"X-Authsvc-CSRF": "0", "Origin": SELF},
        {"X-Authsvc-CSRF": "true", "Origin": SELF},
        {"X-Authsvc-CSRF": ""},
        {"X-Authsvc-CSRF": "1"},
        {"X-Authsvc-CSRF": "1", "Origin": "null"},
        {"X-Authsvc-CSRF": "1", "Origin": "https://localhost"},
        {"X-Authsvc-CSRF": "1", "Origin": "http://localhost:8080"},
        {"X-Authsvc-CSRF": "1", "Origin": "http://localhost.evil.net"},
        {"X-Authsvc-CSRF": "1", "Origin": "https://evil.example"},
        {"X-Authsvc-CSRF": "1", "Origin": ORIGIN},
    ],
)
def test_a_cookie_refresh_without_the_header_or_from_elsewhere_does_nothing(
    browser, register, headers
):
    token = cookie_of(cookie_login(browser, register))
    response = browser.post("/refresh", json={}, headers=with_cookie(token, **headers))
    problem(response, "csrf_failed", 403)
    assert "Set-Cookie" not in response.headers
    # Nothing happened: the token is unspent, so it rotates now.
    rotated = cookie_refresh(browser, token)
    assert rotated.status_code == 200
    assert cookie_of(rotated) != token


def test_a_configured_origin_may_refresh_with_the_cookie(make_app, register):
    browser = make_app(CORS_ORIGINS=ORIGIN).test_client(use_cookies=False)
    token = cookie_of(cookie_login(browser, register))
    response = browser.post(
        "/refresh",
        json={},
        headers=with_cookie(token, **{"X-Authsvc-CSRF": "1", "Origin": ORIGIN}),
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    cookie_of(response)


@pytest.mark.parametrize(
    ("proxies", "allowed"), [(1, True), (0, False)], ids=["trusted", "untrusted"]
)
def test_the_own_origin_is_seen_through_trusted_proxies_only(
    make_app, register, proxies, allowed
):
    browser = make_app(PROXY_COUNT=proxies).test_client(use_cookies=False)
    token = cookie_of(cookie_login(browser, register))
    headers = {
        "X-Authsvc-CSRF": "1",
        "Origin": "https://auth.example.com",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "auth.example.com",
        "X-Forwarded-For": "203.0.113.7",
    }
    response = browser.post("/refresh", json={}, headers=with_cookie(token, **headers))
    if allowed:
        assert response.status_code == 200
        cookie_of(response)
    else:
        problem(response, "csrf_failed", 403)


# --- POST /logout and POST /revoke -----------------------------------------------


def test_logout_clears_the_cookie(browser, register):
    login = cookie_login(browser, register)
    token = cookie_of(login)
    response = browser.post(
        "/logout", headers=with_cookie(token, **bearer(login.json["access_token"]))
    )
    assert response.status_code == 204
    assert response.headers.getlist("Set-Cookie") == [CLEARED]
    problem(cookie_refresh(browser, token), "invalid_refresh_token", 401)


def test_logout_without_the_cookie_sets_none(client, tokens):
    response = client.post("/logout", headers=bearer(tokens["access_token"]))
    assert response.status_code == 204
    assert "Set-Cookie" not in response.headers


@pytest.mark.parametrize("form", [False, True], ids=["json", "form"])
def test_revoke_clears_the_cookie(browser, register, form):
    login = cookie_login(browser, register)
    token = cookie_of(login)
    body = {"token": login.json["access_token"]}
    sent = {"data": body} if form else {"json": body}
    response = browser.post("/revoke", headers=with_cookie(token), **sent)
    assert response.status_code == 200
    assert response.json == {}
    assert response.headers.getlist("Set-Cookie") == [CLEARED]
    problem(cookie_refresh(browser, token), "invalid_refresh_token", 401)


def test_revoke_without_the_cookie_sets_none(client, tokens):
    response = client.post("/revoke", json={"token": tokens["refresh_token"]})
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers


# --- CORS with credentials ---------------------------------------------------------


def preflight(client, origin: str):
    return client.options(
        "/refresh",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, "
            "x-authsvc-csrf",
        },
    )


def allowed_headers(response) -> set[str]:
    values = ",".join(response.headers.getlist("Access-Control-Allow-Headers"))
    return {value.strip().lower() for value in values.split(",") if value.strip()}


def test_a_configured_origin_may_send_credentials_and_the_csrf_header(make_app):
    client = make_app(CORS_ORIGINS=ORIGIN).test_client()
    response = preflight(client, ORIGIN)
    assert response.status_code == 200
    assert response.headers.getlist("Access-Control-Allow-Origin") == [ORIGIN]
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert {"authorization", "content-type", "x-authsvc-csrf"} == allowed_headers(
        response
    )


@pytest.mark.parametrize(
    "origin", ["https://app.example.com.evil.net", "http://app.example.com", "null"]
)
def test_other_origins_get_no_cors_answer_with_credentials(make_app, origin):
    client = make_app(CORS_ORIGINS=ORIGIN).test_client()
    response = preflight(client, origin)
    assert not [name for name, _ in response.headers if name.startswith("Access-")]


def test_without_configured_origins_nothing_is_allowed_cross_origin(client):
    response = preflight(client, ORIGIN)
    assert not [name for name, _ in response.headers if name.startswith("Access-")]


@pytest.mark.parametrize(
    "value",
    [
        "x" * 60_000,
        '"quoted"',
        "%00%00",
        "Zm9v\\u0000",
        "ünïcode",
    ],
    ids=["huge", "quoted", "nul-escaped", "backslash", "non-ascii"],
)
def test_a_hostile_cookie_is_refused_and_cleared(browser, value):
    headers = {"Cookie": f"{COOKIE}={value}", **CSRF}
    response = browser.post("/refresh", json={}, headers=headers)
    problem(response, "invalid_refresh_token", 401)
    assert response.headers.getlist("Set-Cookie") == [CLEARED]
