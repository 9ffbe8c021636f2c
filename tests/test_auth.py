"""The bearer layer: which tokens GET /me accepts, and how it refuses the rest."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from helpers import PASSWORD, bearer, problem
from sqlalchemy import delete, select, update

from authsvc.db import get_session
from authsvc.models import User

INVALID_TOKEN = 'Bearer realm="authsvc", error="invalid_token"'
INVALID_REQUEST = 'Bearer realm="authsvc", error="invalid_request"'


def claims_of(token: str) -> tuple[dict, dict]:
    return (
        jwt.get_unverified_header(token),
        jwt.decode(token, options={"verify_signature": False}),
    )


def segment(value: dict) -> str:
    raw = json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def service_key(app):
    """The private key the service signs with now."""
    ring = app.extensions["authsvc.keys"]
    with app.app_context():
        states = ring.states(datetime.now(UTC))
    return next(state.key for state in states if state.state == "active").signing_key


def resign(app, token: str, *, headers=None, key=None, algorithm="RS256", **changes):
    """Re-sign ``token`` with the service key after changing claims or header."""
    header, claims = claims_of(token)
    header.update(headers or {})
    claims.update(changes)
    claims = {name: value for name, value in claims.items() if value is not None}
    header = {name: value for name, value in header.items() if value is not None}
    key = key or service_key(app)
    return jwt.encode(claims, key, algorithm=algorithm, headers=header)


def test_access_token_header_and_claims(app, tokens):
    header, claims = claims_of(tokens["access_token"])
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "RS256"
    assert header["kid"]
    assert claims.keys() == {
        "iss",
        "aud",
        "sub",
        "sid",
        "jti",
        "iat",
        "exp",
        "roles",
        "preferred_username",
        "auth_time",
        "acr",
        "amr",
    }
    assert claims["preferred_username"] == "alice"
    assert claims["auth_time"] == claims["iat"]
    assert (claims["acr"], claims["amr"]) == ("aal1", ["pwd"])
    assert (claims["iss"], claims["aud"]) == ("authsvc", "authsvc")
    assert claims["sid"] == tokens["session_id"]
    assert claims["exp"] - claims["iat"] == 900
    assert claims["roles"] == []


def test_a_resigned_unchanged_token_is_accepted(app, client, tokens):
    token = resign(app, tokens["access_token"])
    assert client.get("/me", headers=bearer(token)).status_code == 200


@pytest.mark.parametrize(
    "change",
    [
        {"iss": "someone-else"},
        {"aud": "another-api"},
        {"sub": str(uuid.uuid4())},
        {"sub": "not-a-uuid"},
        {"sid": str(uuid.uuid4())},
        {"roles": "admin"},
        {"iat": "yesterday"},
        {"sub": None},
        {"sid": None},
        {"jti": None},
        {"exp": None},
        {"iat": None},
        {"roles": None},
        {"iss": None},
        {"aud": None},
    ],
    ids=lambda change: "-".join(f"{k}={v}" for k, v in change.items()),
)
def test_tampered_claims_are_invalid(app, client, tokens, change):
    token = resign(app, tokens["access_token"], **change)
    response = client.get("/me", headers=bearer(token))
    problem(response, "invalid_token", 401)
    assert response.headers["WWW-Authenticate"] == INVALID_TOKEN


@pytest.mark.parametrize(
    "headers",
    [{"typ": "JWT"}, {"typ": None}, {"kid": "another-key"}],
    ids=["typ-jwt", "no-typ", "unknown-kid"],
)
def test_wrong_header_is_invalid(app, client, tokens, headers):
    token = resign(app, tokens["access_token"], headers=headers)
    problem(client.get("/me", headers=bearer(token)), "invalid_token", 401)


def test_forged_signature_is_invalid(app, client, tokens):
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = resign(app, tokens["access_token"], key=forger)
    problem(client.get("/me", headers=bearer(token)), "invalid_token", 401)


def test_other_algorithm_is_invalid(app, client, tokens):
    token = resign(
        app, tokens["access_token"], headers={"alg": None}, algorithm="RS512"
    )
    assert jwt.get_unverified_header(token)["alg"] == "RS512"
    problem(client.get("/me", headers=bearer(token)), "invalid_token", 401)


def test_hs256_signed_with_the_public_key_is_invalid(app, client, tokens):
    """Algorithm confusion: the public key's bytes used as an HMAC secret."""
    header, claims = claims_of(tokens["access_token"])
    header["alg"] = "HS256"
    public_pem = (
        service_key(app)
        .public_key()
        .public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    signing_input = f"{segment(header)}.{segment(claims)}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    token = signing_input + "." + base64.urlsafe_b64encode(mac).decode().rstrip("=")
    problem(client.get("/me", headers=bearer(token)), "invalid_token", 401)


def test_alg_none_is_invalid(client, tokens):
    header, claims = claims_of(tokens["access_token"])
    header["alg"] = "none"
    token = ".".join([segment(header), segment(claims), ""])
    problem(client.get("/me", headers=bearer(token)), "invalid_token", 401)


def test_truncated_signature_is_invalid(client, tokens):
    token = tokens["access_token"][:-4]
    problem(client.get("/me", headers=bearer(token)), "invalid_token", 401)


def test_expired_token(client, tokens, clock):
    clock.advance(900)
    response = client.get("/me", headers=bearer(tokens["access_token"]))
    problem(response, "token_expired", 401)
    assert response.headers["WWW-Authenticate"] == INVALID_TOKEN


def test_leeway_accepts_a_slightly_expired_token(make_app, tokens, clock):
    client = make_app(JWT_LEEWAY=30).test_client()
    clock.advance(920)
    assert client.get("/me", headers=bearer(tokens["access_token"])).status_code == 200


@pytest.mark.parametrize(
    ("leeway", "ahead", "accepted"),
    [
        (0, 0, True),
        (0, 1, False),
        (30, 1, True),
        (30, 30, True),
        (30, 31, False),
        (30, 600, False),
    ],
)
def test_nbf_is_checked_with_the_leeway(
    make_app, tokens, clock, leeway, ahead, accepted
):
    app = make_app(JWT_LEEWAY=leeway)
    client = app.test_client()
    now = int(clock().timestamp())
    token = resign(app, tokens["access_token"], nbf=now + ahead)
    response = client.get("/me", headers=bearer(token))
    if accepted:
        assert response.status_code == 200, response.json
        return
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert response.json == {
        "type": "about:blank",
        "title": "Unauthorized",
        "status": 401,
        "detail": "The access token is not valid.",
        "code": "invalid_token",
    }
    assert response.headers["WWW-Authenticate"] == INVALID_TOKEN
    # Once the clock reaches it, less the leeway, the same token is fine.
    clock.advance(ahead - leeway)
    assert client.get("/me", headers=bearer(token)).status_code == 200


def test_token_from_the_future_is_invalid(app, client, tokens):
    token = resign(app, tokens["access_token"], iat=int(time.time()) + 3600)
    problem(client.get("/me", headers=bearer(token)), "invalid_token", 401)


def test_refresh_token_is_not_an_access_token(client, tokens):
    response = client.get("/me", headers=bearer(tokens["refresh_token"]))
    problem(response, "invalid_token", 401)


def test_disabled_user(app, client, tokens):
    with app.app_context():
        db = get_session()
        db.execute(update(User).values(is_active=False))
        db.commit()
    problem(
        client.get("/me", headers=bearer(tokens["access_token"])), "invalid_token", 401
    )


def test_deleted_user(app, client, tokens):
    with app.app_context():
        db = get_session()
        db.execute(delete(User))
        db.commit()
        assert db.scalar(select(User)) is None
    problem(
        client.get("/me", headers=bearer(tokens["access_token"])), "invalid_token", 401
    )


def test_hs256_token_of_another_secret_is_invalid(make_app, register):
    client = make_app(JWT_ALGORITHM="HS256").test_client()
    register()
    body = {"username": "alice", "password": PASSWORD}
    tokens = client.post("/login", json=body).json
    assert client.get("/me", headers=bearer(tokens["access_token"])).status_code == 200
    other = make_app(JWT_ALGORITHM="HS256", SECRET_KEY="another-secret-" + "y" * 40)
    client = other.test_client()
    problem(
        client.get("/me", headers=bearer(tokens["access_token"])), "invalid_token", 401
    )


@pytest.mark.parametrize(
    "value",
    ["Bearer", "Bearer ", "Bearer a b", "Bearer a,b", "bearer  "],
    ids=["no-token", "empty-token", "two-tokens", "comma", "lowercase-empty"],
)
def test_malformed_bearer_header_is_invalid_request(client, value):
    response = client.get("/me", headers={"Authorization": value})
    problem(response, "invalid_request", 400)
    assert response.headers["WWW-Authenticate"] == INVALID_REQUEST


def test_repeated_authorization_header_is_invalid_request(client, tokens):
    headers = [("Authorization", f"Bearer {tokens['access_token']}")] * 2
    problem(client.get("/me", headers=headers), "invalid_request", 400)


@pytest.mark.parametrize(
    "value",
    ["Basic YWxpY2U6c2VjcmV0", "Token abc", "abc"],
    ids=["basic", "token", "bare"],
)
def test_other_schemes_are_no_token(client, value):
    response = client.get("/me", headers={"Authorization": value})
    problem(response, "authentication_required", 401)
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="authsvc"'


@pytest.mark.parametrize(
    "token",
    ["not.a.jwt", "abc", "a" * 5000, "é"],
    ids=["dots", "short", "long", "latin"],
)
def test_garbage_tokens_are_invalid(client, token):
    response = client.get("/me", headers={"Authorization": f"Bearer {token}"})
    problem(response, "invalid_token", 401)


def test_bearer_scheme_is_case_insensitive(client, tokens):
    headers = {"Authorization": f"bearer {tokens['access_token']}"}
    assert client.get("/me", headers=headers).status_code == 200


def test_no_response_sets_a_cookie(client, tokens):
    responses = [
        client.get("/me", headers=bearer(tokens["access_token"])),
        client.get("/me"),
        client.post("/refresh", json={"refresh_token": tokens["refresh_token"]}),
        client.post("/logout", headers=bearer(tokens["access_token"])),
    ]
    for response in responses:
        assert "Set-Cookie" not in response.headers
        assert "Cookie" not in response.headers.get("Vary", "")


@pytest.mark.parametrize("cookie", ["stale", "payload|digest"])
def test_a_remember_cookie_does_not_hide_the_bearer_token(client, tokens, cookie):
    client.set_cookie("remember_token", cookie)
    assert client.get("/me", headers=bearer(tokens["access_token"])).status_code == 200
    problem(client.get("/me"), "authentication_required", 401)
