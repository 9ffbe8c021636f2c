"""Introspection (RFC 7662) and revocation (RFC 7009)."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from helpers import (
    PASSWORD,
    b64url,
    bearer,
    claims_of,
    forge,
    header_of,
    me,
    payload_like,
    problem,
    sign_in,
    signup,
)

FORM = "application/x-www-form-urlencoded"
INTROSPECTION_SECRET = "introspection-credential-" + "z" * 24
TOKEN_KEYS = {
    "auth_time",
    "acr",
    "amr",
    "active",
    "sub",
    "sid",
    "username",
    "roles",
    "exp",
    "iat",
    "iss",
    "aud",
    "jti",
    "token_type",
}


# --- POST /introspect (RFC 7662) ------------------------------------------------


@pytest.fixture
def inspector(make_app):
    """A client of an app on the same database with introspection enabled."""
    return make_app(INTROSPECTION_SECRET=INTROSPECTION_SECRET).test_client()


def introspect(
    client, token, *, form: bool = False, credential: str | None = INTROSPECTION_SECRET
):
    headers = bearer(credential) if credential is not None else {}
    body = {"token": token} if token is not None else {}
    if form:
        return client.post("/introspect", data=body, content_type=FORM, headers=headers)
    return client.post("/introspect", json=body, headers=headers)


def test_introspection_is_off_without_a_secret(client, tokens):
    problem(
        introspect(client, tokens["access_token"]),
        "not_found",
        404,
        detail="Introspection is not enabled.",
    )
    problem(
        introspect(client, tokens["access_token"], form=True),
        "not_found",
        404,
        detail="Introspection is not enabled.",
    )


def test_introspection_needs_the_credential(inspector, tokens):
    response = introspect(inspector, tokens["access_token"], credential=None)
    problem(response, "authentication_required", 401)
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="authsvc"')


@pytest.mark.parametrize("form", [False, True])
@pytest.mark.parametrize(
    "credential", ["wrong", INTROSPECTION_SECRET + "x", INTROSPECTION_SECRET[:-1]]
)
def test_introspection_refuses_a_wrong_credential(inspector, tokens, credential, form):
    response = introspect(
        inspector, tokens["access_token"], credential=credential, form=form
    )
    problem(
        response,
        "invalid_token",
        401,
        detail="The introspection credential is not valid.",
    )
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_a_user_access_token_is_not_the_introspection_credential(inspector, tokens):
    response = introspect(
        inspector, tokens["access_token"], credential=tokens["access_token"]
    )
    problem(
        response,
        "invalid_token",
        401,
        detail="The introspection credential is not valid.",
    )


ROLES = ("--role", "admin", "--role", "ops")


@pytest.mark.parametrize("form", [False, True])
def test_introspection_of_a_live_access_token(inspector, client, runner, clock, form):
    result = runner.invoke(
        args=[*("users", "create", "bob", "--password-stdin"), *ROLES],
        input=PASSWORD + "\n",
    )
    assert result.exit_code == 0, result.output
    tokens = sign_in(client, "bob")
    token = tokens["access_token"]
    user = me(client, token).json
    now = int(clock().timestamp())
    response = introspect(inspector, token, form=form)
    assert response.status_code == 200, response.json
    assert response.mimetype == "application/json"
    body = response.json
    assert body.keys() == TOKEN_KEYS
    assert body == {
        "active": True,
        "sub": user["id"],
        "sid": tokens["session_id"],
        "username": "bob",
        "roles": ["admin", "ops"],
        "exp": now + 900,
        "iat": now,
        "iss": "authsvc",
        "aud": "authsvc",
        "jti": claims_of(token)["jti"],
        "token_type": "access_token",
        "auth_time": now,
        "acr": "aal1",
        "amr": ["pwd"],
    }


def test_introspection_reports_the_configured_issuer_and_audience(make_app):
    app = make_app(
        INTROSPECTION_SECRET=INTROSPECTION_SECRET,
        ISSUER="https://auth.example",
        AUDIENCE="https://api.example",
    )
    client = app.test_client()
    token = signup(client)["access_token"]
    body = introspect(client, token).json
    assert (body["iss"], body["aud"]) == ("https://auth.example", "https://api.example")
    assert (body["iss"], body["aud"]) == (
        claims_of(token)["iss"],
        claims_of(token)["aud"],
    )


@pytest.mark.parametrize("form", [False, True])
@pytest.mark.parametrize("hint", ["access_token", "refresh_token"])
def test_introspection_takes_either_hint(inspector, tokens, hint, form):
    body = {"token": tokens["access_token"], "token_type_hint": hint}
    headers = bearer(INTROSPECTION_SECRET)
    if form:
        response = inspector.post(
            "/introspect", data=body, content_type=FORM, headers=headers
        )
    else:
        response = inspector.post("/introspect", json=body, headers=headers)
    assert response.status_code == 200
    assert response.json["active"] is True


INACTIVE = {"active": False}


@pytest.mark.parametrize("form", [False, True])
def test_introspection_of_an_expired_token(inspector, tokens, clock, form):
    clock.advance(899)
    assert introspect(inspector, tokens["access_token"], form=form).json["active"]
    clock.advance(1)
    response = introspect(inspector, tokens["access_token"], form=form)
    assert response.status_code == 200
    assert response.json == INACTIVE


def test_introspection_after_logout_is_inactive_at_once(inspector, client, tokens):
    token = tokens["access_token"]
    assert introspect(inspector, token).json["active"] is True
    assert client.post("/logout", headers=bearer(token)).status_code == 204
    assert introspect(inspector, token).json == INACTIVE


def test_introspection_after_deleting_the_session(inspector, client, tokens, login):
    other = login()
    response = client.delete(
        f"/sessions/{tokens['session_id']}", headers=bearer(other["access_token"])
    )
    assert response.status_code == 204
    assert introspect(inspector, tokens["access_token"]).json == INACTIVE
    assert introspect(inspector, other["access_token"]).json["active"] is True


def test_introspection_of_a_disabled_users_token(inspector, runner, tokens):
    assert introspect(inspector, tokens["access_token"]).json["active"] is True
    assert runner.invoke(args=["users", "disable", "alice"]).exit_code == 0
    assert introspect(inspector, tokens["access_token"], form=True).json == INACTIVE


def test_introspection_of_a_forged_token(app, inspector, tokens):
    token = tokens["access_token"]
    kid = header_of(token)["kid"]
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = forge(payload_like(token, app), attacker, "RS256", kid=kid)
    assert introspect(inspector, forged).json == INACTIVE
    head, _, signature = token.split(".")
    claims = {**claims_of(token), "roles": ["admin"]}
    tampered = f"{head}.{b64url(json.dumps(claims).encode())}.{signature}"
    assert introspect(inspector, tampered, form=True).json == INACTIVE


@pytest.mark.parametrize("form", [False, True])
@pytest.mark.parametrize(
    "token", ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "x" * 4000]
)
def test_introspection_of_garbage(inspector, token, form):
    response = introspect(inspector, token, form=form)
    assert response.status_code == 200
    assert response.json == INACTIVE


def test_introspection_of_a_refresh_token(inspector, tokens):
    response = introspect(inspector, tokens["refresh_token"])
    assert response.status_code == 200
    assert response.json == INACTIVE
    assert introspect(inspector, tokens["refresh_token"], form=True).json == INACTIVE


#: What a request without a token is told, by the token it sent.
NO_TOKEN = {
    None: {"token": "is required"},
    "": {"token": "must be at least 1 characters"},
}


@pytest.mark.parametrize("form", [False, True])
@pytest.mark.parametrize("token", [None, ""])
def test_introspection_without_a_token(inspector, form, token):
    problem(
        introspect(inspector, token, form=form),
        "validation_error",
        400,
        errors=NO_TOKEN[token],
    )


def test_introspection_answers_only_json_or_form(inspector, tokens):
    response = inspector.post(
        "/introspect",
        data=tokens["access_token"],
        content_type="text/plain",
        headers=bearer(INTROSPECTION_SECRET),
    )
    problem(response, "unsupported_media_type", 415)


# --- POST /revoke (RFC 7009) ----------------------------------------------------


def revoke(client, token, *, form: bool = False, **extra):
    body = {"token": token, **extra} if token is not None else dict(extra)
    if form:
        return client.post("/revoke", data=body, content_type=FORM)
    return client.post("/revoke", json=body)


def assert_session_revoked(client, tokens) -> None:
    problem(me(client, tokens["access_token"]), "token_revoked", 401)
    response = client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    problem(response, "invalid_refresh_token", 401)


def assert_session_alive(client, tokens) -> None:
    assert me(client, tokens["access_token"]).status_code == 200


@pytest.mark.parametrize("form", [False, True])
@pytest.mark.parametrize("hint", [None, "refresh_token", "access_token"])
def test_revoking_a_refresh_token_ends_its_session(client, tokens, login, form, hint):
    other = login()
    extra = {"token_type_hint": hint} if hint else {}
    response = revoke(client, tokens["refresh_token"], form=form, **extra)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.json == {}
    assert_session_revoked(client, tokens)
    assert_session_alive(client, other)


@pytest.mark.parametrize("form", [False, True])
@pytest.mark.parametrize("hint", [None, "access_token", "refresh_token"])
def test_revoking_an_access_token_ends_its_session(client, tokens, login, form, hint):
    other = login()
    extra = {"token_type_hint": hint} if hint else {}
    response = revoke(client, tokens["access_token"], form=form, **extra)
    assert response.status_code == 200
    assert response.json == {}
    assert_session_revoked(client, tokens)
    assert_session_alive(client, other)


def test_revoking_twice_is_fine(client, tokens):
    assert revoke(client, tokens["refresh_token"]).json == {}
    assert revoke(client, tokens["refresh_token"]).json == {}
    assert revoke(client, tokens["access_token"], form=True).json == {}
    assert_session_revoked(client, tokens)


@pytest.mark.parametrize("form", [False, True])
@pytest.mark.parametrize(
    "token", ["garbage", "a.b.c", "x" * 43, "eyJhbGciOiJub25lIn0.e30."]
)
def test_revoking_an_unknown_token_is_200(client, tokens, form, token):
    response = revoke(client, token, form=form, token_type_hint="refresh_token")
    assert response.status_code == 200
    assert response.json == {}
    assert_session_alive(client, tokens)


def test_revoking_a_forged_access_token_revokes_nothing(app, client, tokens):
    token = tokens["access_token"]
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = forge(
        payload_like(token, app), attacker, "RS256", kid=header_of(token)["kid"]
    )
    assert revoke(client, forged, token_type_hint="access_token").json == {}
    assert_session_alive(client, tokens)


@pytest.mark.parametrize("form", [False, True])
@pytest.mark.parametrize("token", [None, ""])
def test_revoking_without_a_token(client, form, token):
    problem(
        revoke(client, token, form=form),
        "validation_error",
        400,
        errors=NO_TOKEN[token],
    )


def test_revoking_needs_no_credential(client, tokens):
    response = client.post(
        "/revoke",
        data={"token": tokens["refresh_token"]},
        headers={"Authorization": "Basic " + base64.b64encode(b"spa:").decode()},
    )
    assert response.status_code == 200
    assert_session_revoked(client, tokens)


@pytest.mark.parametrize("form", [True, False])
def test_revoking_ignores_client_id(client, tokens, form):
    response = revoke(client, tokens["refresh_token"], form=form, client_id="spa")
    assert response.status_code == 200, response.json
    assert_session_revoked(client, tokens)


def test_revoked_session_is_inactive_for_introspection(inspector, client, tokens):
    assert revoke(client, tokens["refresh_token"], form=True).status_code == 200
    assert introspect(inspector, tokens["access_token"]).json == INACTIVE
