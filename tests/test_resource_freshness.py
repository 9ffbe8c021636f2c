"""The companion's fresh-authentication guard, against a live authsvc.

The companion's clock is injected (authsvc's is the real one): a token is made
stale by moving the companion's now, never by waiting.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pyotp
import pytest
from flask import Flask
from flask_login import current_user
from helpers import PASSWORD, claims_of
from test_api_stepup import auth_params
from test_resource import Authsvc

from authsvc.resource import ResourceServer, fresh_login_required

pytestmark = pytest.mark.live

PROBLEM = "application/problem+json"


class Now:
    """The companion's clock: seconds since the epoch, set by the test."""

    def __init__(self) -> None:
        self.value = 0.0

    def __call__(self) -> float:
        return self.value


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Authsvc]:
    with Authsvc(tmp_path_factory.mktemp("authsvc")) as server:
        yield server
    assert "Traceback" not in server.output()


@pytest.fixture
def now() -> Now:
    return Now()


@pytest.fixture
def client(live: Authsvc, now: Now) -> Any:
    app = Flask(f"companion_{uuid.uuid4().hex}")
    ResourceServer(app, jwks_url=f"{live.url}/.well-known/jwks.json", clock=now)

    @app.post("/payout")
    @fresh_login_required()
    def payout() -> dict[str, object]:
        return {"paid": True, "auth_time": current_user.auth_time}

    @app.post("/close")
    @fresh_login_required(max_age=600, acr="aal2")
    def close() -> dict[str, object]:
        return {"closed": True, "acr": current_user.acr}

    return app.test_client()


def call(client: Any, path: str, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    response = client.post(path, headers=headers)
    assert response.headers.getlist("Set-Cookie") == []
    return response


def assert_step_up(response: Any, max_age: int, acr_values: str | None = None) -> None:
    """The companion's RFC 9470 answer, exactly: authsvc's, in its own words."""
    assert response.status_code == 401, response.data
    assert response.mimetype == PROBLEM
    body = {
        "type": "about:blank",
        "title": "Unauthorized",
        "status": 401,
        "detail": "Insufficient user authentication.",
        "code": "insufficient_user_authentication",
        "max_age": max_age,
    }
    params = {
        "realm": "authsvc",
        "error": "insufficient_user_authentication",
        "max_age": str(max_age),
    }
    if acr_values is not None:
        body["acr_values"] = params["acr_values"] = acr_values
    assert response.json == body
    assert auth_params(response.headers["WWW-Authenticate"]) == ("Bearer", params)


def test_a_fresh_token_passes_and_a_stale_one_is_sent_to_step_up(live, client, now):
    username = live.register()
    token = live.login(username)["access_token"]
    auth_time = claims_of(token)["auth_time"]

    now.value = auth_time + 300
    response = call(client, "/payout", token)
    assert response.status_code == 200, response.data
    assert response.json == {"paid": True, "auth_time": auth_time}

    now.value = auth_time + 301
    assert_step_up(call(client, "/payout", token), 300)

    # Reauthenticated at authsvc, the same session's new token passes.
    reply = live.request(
        "POST", "/reauthenticate", body={"password": PASSWORD}, token=token
    )
    assert reply.status == 200, reply.body
    fresh = reply.body["access_token"]
    assert claims_of(fresh)["sid"] == claims_of(token)["sid"]
    now.value = claims_of(fresh)["auth_time"] + 10
    assert call(client, "/payout", fresh).status_code == 200


def test_without_a_token_the_guard_asks_for_one(client):
    response = call(client, "/payout", None)
    assert response.status_code == 401
    assert response.json["code"] == "authentication_required"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="authsvc"'


def test_a_second_factor_is_asked_for_and_accepted(live, client, now):
    username = live.register()
    token = live.login(username)["access_token"]
    now.value = claims_of(token)["auth_time"]
    assert_step_up(call(client, "/close", token), 600, "aal2")

    enrolment = live.request(
        "POST", "/me/mfa/totp", body={"password": PASSWORD}, token=token
    )
    assert enrolment.status == 200, enrolment.body
    code = pyotp.TOTP(enrolment.body["secret"]).now()
    confirmed = live.request(
        "POST", "/me/mfa/totp/confirm", body={"code": code}, token=token
    )
    assert confirmed.status == 200, confirmed.body
    # A recovery code, so the test never waits for the next 30-second step.
    password = live.request(
        "POST", "/login", body={"username": username, "password": PASSWORD}
    )
    assert (password.status, password.code) == (401, "mfa_required")
    finished = live.request(
        "POST",
        "/login/mfa",
        body={
            "mfa_token": password.body["mfa_token"],
            "code": confirmed.body["recovery_codes"][0],
        },
    )
    assert finished.status == 200, finished.body
    strong = finished.body["access_token"]
    now.value = claims_of(strong)["auth_time"]
    response = call(client, "/close", strong)
    assert response.status_code == 200, response.data
    assert response.json == {"closed": True, "acr": "aal2"}

    now.value += 601
    assert_step_up(call(client, "/close", strong), 600, "aal2")
    # A stale aal2 token's challenge for a plain fresh check asks for aal2 too:
    # its reauthentication needs the code.
    now.value = claims_of(strong)["auth_time"] + 301
    assert_step_up(call(client, "/payout", strong), 300, "aal2")
