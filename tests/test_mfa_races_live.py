"""Second-factor codes raced across real workers: ``authsvc serve --workers 4``.

Each code is worth one login however many requests present it at once, on SQLite
(writers of several processes) and PostgreSQL (row locks) alike. The server keeps
real time, so the codes are pyotp's of the real clock: the confirmation spends
the current step and the race uses the next one, which the window accepts.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pyotp
import pytest
from conftest import BACKENDS
from helpers import PASSWORD, unique_name
from test_concurrency import Server, assert_no_server_error, in_parallel, start_server

pytestmark = pytest.mark.live

RACERS = 8


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[Server]:
    """Four workers on a fresh database of the backend, for the module."""
    if request.param not in BACKENDS:
        pytest.skip(f"{request.param} is not in AUTHSVC_TEST_BACKENDS")
    yield from start_server(request.param, 10, tmp_path_factory)


def enrolled_user(server: Server) -> tuple[str, str, list[str]]:
    """A new user with the factor on: their name, secret and recovery codes."""
    username = unique_name("mfa")
    body = {"username": username, "password": PASSWORD}
    assert server.call("POST", "/users", body)[0] == 201
    status, tokens = server.call("POST", "/login", body)
    assert status == 200, tokens
    token = tokens["access_token"]
    status, enrolment = server.call(
        "POST", "/me/mfa/totp", {"password": PASSWORD}, token
    )
    assert status == 200, enrolment
    secret = enrolment["secret"]
    status, confirmed = server.call(
        "POST", "/me/mfa/totp/confirm", {"code": pyotp.TOTP(secret).now()}, token
    )
    assert status == 200, confirmed
    return username, secret, confirmed["recovery_codes"]


def mfa_tokens(server: Server, username: str, count: int) -> list[str]:
    body = {"username": username, "password": PASSWORD}
    tokens = []
    for _ in range(count):
        status, answer = server.call("POST", "/login", body)
        assert (status, answer["code"]) == (401, "mfa_required"), answer
        tokens.append(answer["mfa_token"])
    return tokens


def race(server: Server, tokens: list[str], code: str) -> Counter:
    replies = in_parallel(
        server,
        [
            ("POST", "/login/mfa", {"mfa_token": token, "code": code}, None)
            for token in tokens
        ],
    )
    assert_no_server_error(replies)
    return Counter(200 if status == 200 else body["code"] for status, body in replies)


def test_one_totp_code_raced_lets_exactly_one_in(live):
    username, secret, _ = enrolled_user(live)
    tokens = mfa_tokens(live, username, RACERS)
    # The step after the confirmation's: accepted whether or not it has begun.
    code = pyotp.TOTP(secret).at(time.time() + 30)
    assert race(live, tokens, code) == {200: 1, "invalid_mfa_code": RACERS - 1}


def test_one_recovery_code_raced_lets_exactly_one_in(live):
    username, _, codes = enrolled_user(live)
    tokens = mfa_tokens(live, username, RACERS)
    assert race(live, tokens, codes[0]) == {200: 1, "invalid_mfa_code": RACERS - 1}


def test_one_mfa_token_raced_with_different_codes_opens_one_session(live):
    username, _, codes = enrolled_user(live)
    (token,) = mfa_tokens(live, username, 1)
    replies = in_parallel(
        live,
        [
            ("POST", "/login/mfa", {"mfa_token": token, "code": code}, None)
            for code in codes[:RACERS]
        ],
    )
    assert_no_server_error(replies)
    outcomes = Counter(
        200 if status == 200 else body["code"] for status, body in replies
    )
    assert outcomes == {200: 1, "invalid_mfa_token": RACERS - 1}
