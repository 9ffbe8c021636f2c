"""Throttling of logins, password changes and registrations (in-process).

Counters in the database follow the app's clock (the ``clock`` fixture), so the
window is moved by advancing it. Where a test must tell the per-account limit
from the per-address one, every attempt comes from an address of its own
(``environ_base={"REMOTE_ADDR": ...}``); the Flask test client otherwise sends
everything from 127.0.0.1.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import redis
from helpers import PASSWORD, bearer, problem
from sqlalchemy import func, select, text

from authsvc import throttle, users
from authsvc.config import ConfigError, load_config
from authsvc.db import get_session
from authsvc.models import AuthSession, ThrottleCounter

WRONG = "not the password at all"
NEW_PASSWORD = "a brand new passphrase 42"
LIMIT = 10
WINDOW = 60
REDIS_URL = "redis://127.0.0.1:6379/13"
UNREACHABLE_REDIS_URL = "redis://127.0.0.1:1/0"


def attempt(client, username: str = "alice", password: str = WRONG, **kwargs):
    return client.post(
        "/login", json={"username": username, "password": password}, **kwargs
    )


def from_address(address: str) -> dict:
    return {"environ_base": {"REMOTE_ADDR": address}}


def address(n: int, net: int = 0) -> str:
    """A distinct client address per ``n`` (and per ``net``)."""
    return f"10.{net}.{n // 256}.{n % 256}"


#: What a wrong current password on a password change is told.
WRONG_CURRENT = "The current password is incorrect."


def assert_rate_limited(response, window: int = WINDOW) -> int:
    """Assert a contract 429; return its Retry-After in seconds."""
    problem(response, "rate_limited", 429, detail="Too many attempts; try again later.")
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit(), retry_after
    assert 1 <= int(retry_after) <= window
    return int(retry_after)


def assert_refused_credentials(response, detail: str | None = None) -> None:
    problem(response, "invalid_credentials", 401, detail=detail)
    assert "Retry-After" not in response.headers


def session_count(app) -> int:
    with app.app_context():
        return get_session().scalar(select(func.count()).select_from(AuthSession))


def counter_rows(app) -> list[ThrottleCounter]:
    with app.app_context():
        db = get_session()
        rows = db.scalars(select(ThrottleCounter)).all()
        db.expunge_all()
        return list(rows)


# --- per account -------------------------------------------------------------------


def test_eleventh_attempt_is_refused_even_with_the_right_password(
    app, client, register
):
    register()
    for _ in range(LIMIT):
        assert_refused_credentials(attempt(client))
    response = attempt(client, password=PASSWORD)
    assert_rate_limited(response)
    assert "Set-Cookie" not in response.headers
    assert attempt(client, password=PASSWORD).status_code == 429
    assert session_count(app) == 0


def test_per_account_limit_holds_across_client_addresses(app, client, register):
    register()
    for n in range(LIMIT):
        assert_refused_credentials(attempt(client, **from_address(address(n))))
    fresh = from_address("192.0.2.200")
    assert_rate_limited(attempt(client, password=PASSWORD, **fresh))
    assert session_count(app) == 0
    # Another account from that fresh address is not affected.
    assert_refused_credentials(attempt(client, "bob", **fresh))


def test_a_success_does_not_count(client, register):
    register()
    for _ in range(LIMIT - 1):
        assert_refused_credentials(attempt(client))
    assert attempt(client, password=PASSWORD).status_code == 200
    assert_refused_credentials(attempt(client))
    assert_rate_limited(attempt(client))


@pytest.mark.parametrize(
    "variants",
    [
        ["alice", "Alice", "ALICE", "ＡＬＩＣＥ", "ａｌｉｃｅ"],
        ["unknown", "UNKNOWN", "Ｕｎｋｎｏｗｎ", "ｕｎｋｎｏｗｎ"],
    ],
    ids=["registered", "unknown"],
)
def test_case_and_nfkc_variants_of_a_username_share_one_counter(
    client, register, variants
):
    register("alice", email="alice@example.com")
    for n in range(LIMIT):
        username = variants[n % len(variants)]
        assert_refused_credentials(
            attempt(client, username, **from_address(address(n)))
        )
    for n, username in enumerate(variants):
        response = attempt(client, username, **from_address(address(n, net=1)))
        assert_rate_limited(response)


def test_a_username_and_its_email_share_one_counter(client, register):
    register("alice", email="alice@example.com")
    names = ["alice", "Alice@Example.com"]
    for n in range(LIMIT):
        response = attempt(client, names[n % 2], **from_address(address(n)))
        assert_refused_credentials(response)
    for n, username in enumerate([*names, "ALICE", "alice@example.com"]):
        response = attempt(client, username, PASSWORD, **from_address(address(n, 1)))
        assert_rate_limited(response)


def test_an_unknown_name_and_an_unknown_email_count_apart(client, register):
    # Neither names an account, so neither is counted with the other.
    register("alice", email="alice@example.com")
    for n in range(LIMIT):
        assert_refused_credentials(attempt(client, "bob", **from_address(address(n))))
    assert_rate_limited(attempt(client, "bob", **from_address(address(0, 1))))
    response = attempt(client, "bob@example.com", **from_address(address(1, 1)))
    assert_refused_credentials(response)


def test_wrong_passwords_on_a_password_change_share_the_login_counter(
    client, register, login
):
    register("alice", email="alice@example.com")
    tokens = login("alice")
    for n in range(LIMIT - 1):
        response = attempt(client, "alice@example.com", **from_address(address(n)))
        assert_refused_credentials(response)
    response = client.post(
        "/me/password",
        json={"current_password": WRONG, "new_password": NEW_PASSWORD},
        headers=bearer(tokens["access_token"]),
        **from_address(address(0, 1)),
    )
    problem(
        response,
        "invalid_credentials",
        401,
        detail="The current password is incorrect.",
    )
    assert_rate_limited(
        attempt(client, "alice", PASSWORD, **from_address(address(1, 1)))
    )


def test_unknown_usernames_are_throttled_exactly_like_real_ones(client, register):
    register("alice")

    def run(username: str, net: int) -> list:
        answers = []
        for n in range(LIMIT + 2):
            response = attempt(client, username, **from_address(address(n, net)))
            answers.append(
                (
                    response.status_code,
                    response.data,
                    response.headers.get("Retry-After"),
                    response.headers.get("Content-Type"),
                )
            )
        return answers

    real = run("alice", net=1)
    unknown = run("nobody-here", net=2)
    assert [status for status, *_ in real] == [401] * LIMIT + [429, 429]
    assert real == unknown


# --- per address -------------------------------------------------------------------


def test_spraying_one_password_over_many_accounts_is_throttled_per_address(client):
    sprayer = from_address("203.0.113.9")
    for n in range(LIMIT):
        assert_refused_credentials(attempt(client, f"user{n}", **sprayer))
    assert_rate_limited(attempt(client, f"user{LIMIT}", **sprayer))
    assert_rate_limited(attempt(client, "someone-else", **sprayer))
    other = from_address("203.0.113.10")
    assert_refused_credentials(attempt(client, f"user{LIMIT}", **other))
    assert_refused_credentials(attempt(client, "someone-else", **other))


def test_without_trusted_proxies_x_forwarded_for_does_not_escape_the_limits(
    client, register
):
    register()
    # Per address: new usernames and a new X-Forwarded-For on every request.
    for n in range(LIMIT):
        spoofed = {"X-Forwarded-For": address(n, net=5)}
        assert_refused_credentials(attempt(client, f"user{n}", headers=spoofed))
    spoofed = {"X-Forwarded-For": "198.51.100.77"}
    assert_rate_limited(attempt(client, "user-x", headers=spoofed))


def test_without_trusted_proxies_x_forwarded_for_does_not_escape_account_limit(
    client, register
):
    register()
    # Per account: a different real address every time, and a forged header too.
    for n in range(LIMIT):
        response = attempt(
            client,
            headers={"X-Forwarded-For": address(n, net=5)},
            **from_address(address(n)),
        )
        assert_refused_credentials(response)
    response = attempt(
        client,
        password=PASSWORD,
        headers={"X-Forwarded-For": "198.51.100.77"},
        **from_address("192.0.2.1"),
    )
    assert_rate_limited(response)


def test_without_trusted_proxies_sessions_record_the_peer_address(client, register):
    register()
    response = attempt(
        client, password=PASSWORD, headers={"X-Forwarded-For": "198.51.100.77"}
    )
    assert response.status_code == 200
    sessions = client.get("/sessions", headers=bearer(response.json["access_token"]))
    assert [s["ip_address"] for s in sessions.json["sessions"]] == ["127.0.0.1"]


def test_behind_one_proxy_x_forwarded_for_is_the_client_address(make_app):
    behind_proxy = make_app(PROXY_COUNT=1)
    client = behind_proxy.test_client()
    response = client.post("/users", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 201
    # The proxy appends the address it saw; whatever the client put before it is
    # not to be believed.
    forwarded = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}
    response = attempt(client, password=PASSWORD, headers=forwarded)
    assert response.status_code == 200
    sessions = client.get("/sessions", headers=bearer(response.json["access_token"]))
    assert [s["ip_address"] for s in sessions.json["sessions"]] == ["203.0.113.7"]


def test_behind_one_proxy_rotating_x_forwarded_for_does_not_escape_account_limit(
    make_app,
):
    behind_proxy = make_app(PROXY_COUNT=1)
    client = behind_proxy.test_client()
    response = client.post("/users", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 201
    for n in range(LIMIT):
        forwarded = {"X-Forwarded-For": address(n, net=7)}
        assert_refused_credentials(attempt(client, headers=forwarded))
    forwarded = {"X-Forwarded-For": "198.51.100.99"}
    assert_rate_limited(attempt(client, password=PASSWORD, headers=forwarded))
    assert session_count(behind_proxy) == 0
    # The address limit follows the forwarded address: a new client behind the
    # same proxy can still try another account.
    assert_refused_credentials(attempt(client, "bob", headers=forwarded))


def test_behind_one_proxy_the_address_limit_is_per_forwarded_client(make_app):
    client = make_app(PROXY_COUNT=1).test_client()
    sprayer = {"X-Forwarded-For": "203.0.113.50"}
    for n in range(LIMIT):
        assert_refused_credentials(attempt(client, f"user{n}", headers=sprayer))
    assert_rate_limited(attempt(client, "user-x", headers=sprayer))
    other = {"X-Forwarded-For": "203.0.113.51"}
    assert_refused_credentials(attempt(client, "user-x", headers=other))


# --- the window --------------------------------------------------------------------


def test_retry_after_counts_down_and_the_window_ends(client, register, clock):
    register()
    for _ in range(LIMIT):
        assert_refused_credentials(attempt(client))
    assert assert_rate_limited(attempt(client)) == WINDOW
    clock.advance(45)
    assert assert_rate_limited(attempt(client, password=PASSWORD)) == 15
    clock.advance(14)
    assert assert_rate_limited(attempt(client, password=PASSWORD)) == 1
    clock.advance(1)
    assert attempt(client, password=PASSWORD).status_code == 200
    # A fresh window: ten more failures are allowed, then refused again.
    for _ in range(LIMIT):
        assert_refused_credentials(attempt(client))
    assert_rate_limited(attempt(client))


def test_a_configured_limit_applies(make_app):
    client = make_app(LOGIN_RATE_LIMIT="3 per minute").test_client()
    response = client.post("/users", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 201
    for _ in range(3):
        assert_refused_credentials(attempt(client))
    assert_rate_limited(attempt(client, password=PASSWORD))


def test_a_slot_given_back_after_its_window_ended_does_not_add_an_attempt(
    app, client, clock
):
    with (
        app.app_context(),
        throttle.get_throttle().attempt(throttle.Kind.LOGIN, "carol", "192.0.2.99"),
    ):
        clock.advance(WINDOW)  # the window ends while the password is checked
    for n in range(LIMIT):
        assert_refused_credentials(attempt(client, "carol", **from_address(address(n))))
    assert_rate_limited(attempt(client, "carol", **from_address("192.0.2.98")))


# --- POST /me/password ---------------------------------------------------------------


def change_password(client, tokens, current: str, **kwargs):
    return client.post(
        "/me/password",
        json={"current_password": current, "new_password": NEW_PASSWORD},
        headers=bearer(tokens["access_token"]),
        **kwargs,
    )


def test_wrong_current_passwords_count_towards_the_account_limit(client, tokens, clock):
    for n in range(LIMIT):
        response = change_password(client, tokens, WRONG, **from_address(address(n)))
        assert_refused_credentials(response, WRONG_CURRENT)
    elsewhere = from_address("192.0.2.77")
    assert_rate_limited(attempt(client, password=PASSWORD, **elsewhere))
    assert_rate_limited(attempt(client, "ALICE", password=PASSWORD, **elsewhere))
    assert_rate_limited(change_password(client, tokens, PASSWORD, **elsewhere))
    # The refused change changed nothing: the old password works after the window.
    clock.advance(WINDOW)
    assert attempt(client, password=PASSWORD, **elsewhere).status_code == 200


def test_a_successful_password_change_does_not_count(client, tokens):
    for _ in range(LIMIT - 1):
        assert_refused_credentials(
            change_password(client, tokens, WRONG), WRONG_CURRENT
        )
    assert change_password(client, tokens, PASSWORD).status_code == 204
    assert_refused_credentials(attempt(client))
    assert_rate_limited(attempt(client, password=NEW_PASSWORD))


def test_wrong_passwords_on_account_deletion_count_too(client, tokens):
    for n in range(LIMIT):
        response = client.delete(
            "/me",
            json={"password": WRONG},
            headers=bearer(tokens["access_token"]),
            **from_address(address(n)),
        )
        problem(
            response, "invalid_credentials", 401, detail="The password is incorrect."
        )
    assert_rate_limited(
        attempt(client, password=PASSWORD, **from_address("192.0.2.77"))
    )


# --- registration --------------------------------------------------------------------


def register_user(client, username: str, **kwargs):
    return client.post(
        "/users", json={"username": username, "password": PASSWORD}, **kwargs
    )


def test_registrations_are_limited_per_address(make_app):
    client = make_app(REGISTRATION_RATE_LIMIT="3 per hour").test_client()
    assert register_user(client, "user1").status_code == 201
    assert register_user(client, "user2").status_code == 201
    assert register_user(client, "user3").status_code == 201
    response = register_user(client, "user4")
    assert_rate_limited(response, window=3600)
    # The refused registration created nothing: another address may take the name.
    other = from_address("192.0.2.33")
    assert register_user(client, "user4", **other).status_code == 201


def test_taken_names_and_policy_failures_count_too(make_app):
    client = make_app(REGISTRATION_RATE_LIMIT="3 per hour").test_client()
    other = from_address("192.0.2.33")
    assert register_user(client, "taken", **other).status_code == 201
    problem(
        register_user(client, "taken"),
        "already_exists",
        409,
        detail="The username or e-mail is already taken.",
    )
    problem(
        register_user(client, "TAKEN"),
        "already_exists",
        409,
        detail="The username or e-mail is already taken.",
    )
    weak = client.post("/users", json={"username": "weakling", "password": "short"})
    problem(
        weak,
        "validation_error",
        400,
        errors={"password": "must be at least 8 characters"},
    )
    assert_rate_limited(register_user(client, "valid-name"), window=3600)
    assert register_user(client, "valid-name", **other).status_code == 201


def test_the_registration_window_ends(make_app, clock):
    client = make_app(REGISTRATION_RATE_LIMIT="1 per hour").test_client()
    assert register_user(client, "user1").status_code == 201
    assert assert_rate_limited(register_user(client, "user2"), window=3600) == 3600
    clock.advance(3600)
    assert register_user(client, "user2").status_code == 201


# --- introspection credentials -------------------------------------------------------

INTROSPECTION_SECRET = "introspection-credential-" + "q" * 24
RATE_LIMITED = {
    "type": "about:blank",
    "title": "Too Many Requests",
    "status": 429,
    "detail": "Too many attempts; try again later.",
    "code": "rate_limited",
}
WRONG_CREDENTIAL = {
    "type": "about:blank",
    "title": "Unauthorized",
    "status": 401,
    "detail": "The introspection credential is not valid.",
    "code": "invalid_token",
}


def introspect(client, credential: str | None, **kwargs):
    headers = bearer(credential) if credential is not None else {}
    return client.post("/introspect", json={"token": "x"}, headers=headers, **kwargs)


def assert_wrong_credential(response) -> None:
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert response.json == WRONG_CREDENTIAL
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="authsvc", error="invalid_token"'
    )
    assert "Retry-After" not in response.headers


def assert_introspection_limited(response) -> None:
    assert response.status_code == 429
    assert response.mimetype == "application/problem+json"
    assert response.json == RATE_LIMITED
    assert 1 <= int(response.headers["Retry-After"]) <= WINDOW


@pytest.fixture(params=["database", "redis"])
def inspector(request, make_app):
    """A client of an app with introspection on, counting in the database or Redis."""
    settings = {"INTROSPECTION_SECRET": INTROSPECTION_SECRET}
    if request.param == "redis":
        request.getfixturevalue("redis_db")
        settings["RATELIMIT_STORAGE_URI"] = REDIS_URL
    return make_app(**settings).test_client()


@pytest.mark.parametrize(
    "wrong",
    ["wrong", INTROSPECTION_SECRET + "x", INTROSPECTION_SECRET[:-1], "Z" * 49],
)
def test_wrong_introspection_credentials_are_limited_per_address(inspector, wrong):
    here, elsewhere = from_address("192.0.2.10"), from_address("192.0.2.11")
    for _ in range(LIMIT):
        assert_wrong_credential(introspect(inspector, wrong, **here))
    assert_introspection_limited(introspect(inspector, wrong, **here))
    # Past the limit even the right credential is refused, so a guess tells nothing.
    assert_introspection_limited(introspect(inspector, INTROSPECTION_SECRET, **here))
    # Another address has its own count.
    response = introspect(inspector, INTROSPECTION_SECRET, **elsewhere)
    assert (response.status_code, response.json) == (200, {"active": False})
    assert_wrong_credential(introspect(inspector, wrong, **elsewhere))


def test_the_right_introspection_credential_keeps_working_under_the_limit(inspector):
    for _ in range(LIMIT - 1):
        assert_wrong_credential(introspect(inspector, "wrong"))
    for _ in range(3 * LIMIT):
        response = introspect(inspector, INTROSPECTION_SECRET)
        assert (response.status_code, response.json) == (200, {"active": False})
    # A missing credential is not a guess.
    for _ in range(LIMIT):
        problem(introspect(inspector, None), "authentication_required", 401)
    assert_wrong_credential(introspect(inspector, "wrong"))
    assert_introspection_limited(introspect(inspector, "wrong"))


def test_introspection_and_login_failures_are_counted_apart(make_app, clock):
    client = make_app(INTROSPECTION_SECRET=INTROSPECTION_SECRET).test_client()
    for _ in range(LIMIT):
        assert_wrong_credential(introspect(client, "wrong"))
    assert_introspection_limited(introspect(client, "wrong"))
    assert_refused_credentials(attempt(client))
    clock.advance(WINDOW)
    response = introspect(client, INTROSPECTION_SECRET)
    assert (response.status_code, response.json) == (200, {"active": False})


# --- Redis -------------------------------------------------------------------------


@pytest.fixture
def redis_db() -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(REDIS_URL)
    connection.flushdb()
    yield connection
    connection.flushdb()
    connection.close()


def test_apps_on_one_redis_share_their_counters(make_app, redis_db):
    first = make_app(RATELIMIT_STORAGE_URI=REDIS_URL).test_client()
    second = make_app(RATELIMIT_STORAGE_URI=REDIS_URL).test_client()
    response = register_user(first, "alice")
    assert response.status_code == 201
    for n in range(LIMIT // 2):
        assert_refused_credentials(attempt(first, **from_address(address(n))))
    for n in range(LIMIT // 2, LIMIT):
        assert_refused_credentials(attempt(second, **from_address(address(n))))
    assert_rate_limited(attempt(first, password=PASSWORD, **from_address("192.0.2.5")))
    assert_rate_limited(attempt(second, password=PASSWORD, **from_address("192.0.2.6")))
    assert redis_db.dbsize() > 0
    # Counter keys name no username.
    assert not any(b"alice" in key.lower() for key in redis_db.scan_iter())


def test_redis_counters_do_not_touch_the_database(app, make_app, redis_db):
    client = make_app(RATELIMIT_STORAGE_URI=REDIS_URL).test_client()
    for _ in range(LIMIT + 1):
        attempt(client)
    assert counter_rows(app) == []


def test_unreachable_redis_falls_back_to_counting_in_the_process(make_app, caplog):
    client = make_app(RATELIMIT_STORAGE_URI=UNREACHABLE_REDIS_URL).test_client()
    assert register_user(client, "alice").status_code == 201
    with caplog.at_level(logging.ERROR, logger="authsvc.throttle"):
        assert attempt(client, password=PASSWORD).status_code == 200
        for _ in range(LIMIT):
            assert_refused_credentials(attempt(client))
        assert_rate_limited(attempt(client, password=PASSWORD))
    errors = [
        record
        for record in caplog.records
        if record.name == "authsvc.throttle" and record.levelno >= logging.ERROR
    ]
    assert errors
    assert "unreachable" in errors[0].getMessage()


# --- configuration -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AUTHSVC_LOGIN_RATE_LIMIT", "lots"),
        ("AUTHSVC_LOGIN_RATE_LIMIT", "10 per fortnight"),
        ("AUTHSVC_REGISTRATION_RATE_LIMIT", "lots"),
        ("AUTHSVC_RATELIMIT_STORAGE_URI", "memcached://x"),
        ("AUTHSVC_RATELIMIT_STORAGE_URI", "memory://"),
    ],
)
def test_invalid_throttling_settings_are_refused(variable, value):
    with pytest.raises(ConfigError, match=variable):
        load_config(environ={variable: value})


def test_a_login_limit_of_zero_is_refused():
    with pytest.raises(ConfigError, match="AUTHSVC_LOGIN_RATE_LIMIT"):
        load_config(environ={"AUTHSVC_LOGIN_RATE_LIMIT": "0 per minute"})


def test_throttling_settings_are_read_from_the_environment():
    config = load_config(
        environ={
            "AUTHSVC_LOGIN_RATE_LIMIT": "5 per minute",
            "AUTHSVC_RATELIMIT_STORAGE_URI": "rediss://cache.internal:6380/2",
            "AUTHSVC_PROXY_COUNT": "2",
        }
    )
    assert config["LOGIN_RATE_LIMIT"] == "5 per minute"
    assert config["RATELIMIT_STORAGE_URI"] == "rediss://cache.internal:6380/2"
    assert config["PROXY_COUNT"] == 2


def test_throttling_defaults():
    config = load_config(environ={})
    assert config["LOGIN_RATE_LIMIT"] == "10 per minute"
    assert config["RATELIMIT_STORAGE_URI"] is None
    assert config["PROXY_COUNT"] == 0


# --- pruning -----------------------------------------------------------------------


def test_prune_counters_deletes_only_counters_whose_window_ended(app, client, clock):
    assert_refused_credentials(attempt(client, "alice", **from_address("192.0.2.1")))
    clock.advance(30)
    assert_refused_credentials(attempt(client, "bob", **from_address("192.0.2.2")))
    assert len(counter_rows(app)) == 4
    clock.advance(29)
    with app.app_context():
        assert throttle.prune_counters() == 0
    assert len(counter_rows(app)) == 4
    clock.advance(1)  # alice's window (and 192.0.2.1's) ends now
    with app.app_context():
        assert throttle.prune_counters() == 2
    rows = counter_rows(app)
    assert len(rows) == 2
    assert {row.key for row in rows if row.key.startswith("login:address:")} == {
        "login:address:192.0.2.2:10/60"
    }
    # bob's live counter kept its count: nine more failures reach the limit.
    for n in range(LIMIT - 1):
        assert_refused_credentials(attempt(client, "bob", **from_address(address(n))))
    assert_rate_limited(attempt(client, "bob", **from_address("192.0.2.3")))


def test_counters_name_no_username(app, client):
    attempt(client, "alice-secret-name", **from_address("192.0.2.1"))
    keys = [row.key for row in counter_rows(app)]
    assert keys
    assert not any("alice" in key for key in keys)


def test_canonical_is_the_account_key():
    assert (
        users.canonical("ＡＬＩＣＥ")
        == users.canonical("Alice")
        == users.canonical(" alice ")
    )


def test_only_counters_skip_waiting_for_the_disk(app):
    database = app.extensions["authsvc.db"]
    if database.engine.dialect.name == "sqlite":
        assert database.counters is database.engine  # WAL, synchronous=NORMAL
        return
    with database.counters.connect() as connection:
        assert connection.scalar(text("SHOW synchronous_commit")) == "off"
    with database.engine.connect() as connection:
        assert connection.scalar(text("SHOW synchronous_commit")) == "on"
