"""Small helpers shared by test modules."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from http import HTTPStatus

import jwt
from sqlalchemy import func, select

from authsvc.db import get_session
from authsvc.errors import CODES
from authsvc.models import User

PASSWORD = "correct horse battery staple"
PROBLEM_MIMETYPE = "application/problem+json"
JWKS_PATH = "/.well-known/jwks.json"
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


class FakeClock:
    """A clock that only moves when a test says so."""

    def __init__(self) -> None:
        self.current = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for an access token."""
    return {"Authorization": f"Bearer {token}"}


def problem_body(
    code: str,
    status: int,
    *,
    detail: str | None = None,
    errors: dict[str, str] | None = None,
) -> dict:
    """The whole problem+json body for ``code``: the code's own detail unless given."""
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": CODES[code][1] if detail is None else detail,
        "code": code,
    }
    if errors is not None:
        body["errors"] = errors
    return body


#: The details of a body that cannot be read as a JSON object, also its errors["body"].
BODY_NOT_JSON = "The request body is not valid JSON."
BODY_NOT_AN_OBJECT = "The request body must be a JSON object."
BODY_BAD_CHARACTERS = "The request body contains NUL or a lone surrogate."


def unreadable(message: str) -> dict:
    """problem()'s keywords for a body that is not a readable JSON object."""
    return {"detail": message, "errors": {"body": message}}


def problem(
    response,
    code: str,
    status: int,
    *,
    detail: str | None = None,
    errors: dict[str, str] | None = None,
) -> dict:
    """Assert ``response`` is exactly the contract's problem+json for ``code``."""
    assert response.status_code == status, response.data
    assert response.mimetype == PROBLEM_MIMETYPE
    body = response.json
    assert body == problem_body(code, status, detail=detail, errors=errors)
    return body


def me(client, tokens: dict | str):
    """``GET /me`` with an access token, or with a session's (its tokens' dict)."""
    token = tokens if isinstance(tokens, str) else tokens["access_token"]
    return client.get("/me", headers=bearer(token))


def refresh(client, tokens: dict):
    """``POST /refresh`` with a session's refresh token."""
    return client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})


def assert_works(client, tokens: dict) -> None:
    """The session's access token is accepted (its refresh token is left unspent)."""
    assert me(client, tokens).status_code == 200


def assert_refused(client, tokens: dict, access_code: str = "token_revoked") -> None:
    """Both of the session's tokens are refused."""
    response = me(client, tokens)
    problem(response, access_code, 401)
    assert (
        response.headers["WWW-Authenticate"]
        == 'Bearer realm="authsvc", error="invalid_token"'
    )
    problem(refresh(client, tokens), "invalid_refresh_token", 401)


def unique_name(prefix: str) -> str:
    """A name no other test of this run uses."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def user_count(app) -> int:
    """How many users the app's database holds."""
    with app.app_context():
        return get_session().scalar(select(func.count()).select_from(User))


# --- keys and tokens ----------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def header_of(token: str) -> dict:
    return jwt.get_unverified_header(token)


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def signup(client, username: str = "alice", *, password: str = PASSWORD) -> dict:
    """Register ``username`` on ``client``'s app and log in; return the tokens."""
    response = client.post("/users", json={"username": username, "password": password})
    assert response.status_code == 201, response.json
    return sign_in(client, username, password=password)


def sign_in(client, username: str = "alice", *, password: str = PASSWORD) -> dict:
    response = client.post("/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.json
    return response.json


def jwks(client) -> list[dict]:
    response = client.get(JWKS_PATH)
    assert response.status_code == 200, response.data
    assert response.mimetype == "application/json"
    assert response.json.keys() == {"keys"}
    return response.json["keys"]


def published(client) -> set[str]:
    return {key["kid"] for key in jwks(client)}


def ring(app):
    return app.extensions["authsvc.keys"]


def private_key_of(app, kid: str):
    """The private key of ``kid`` as the app's key ring holds it."""
    now = app.config["CLOCK"]()
    (key,) = [s.key for s in ring(app).states(now) if s.key.kid == kid]
    return key.signing_key


def now_of(app) -> int:
    return int(app.config["CLOCK"]().timestamp())


def payload_like(token: str, app, **changes) -> dict:
    """The claims of ``token``, re-timed to be alive at the app's now, new ``jti``."""
    now = now_of(app)
    payload = {
        **claims_of(token),
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + 600,
    }
    payload.update(changes)
    return payload


def forge(payload: dict, key, algorithm: str, *, kid: str) -> str:
    """Sign with PyJWT under the header the service uses."""
    headers = {"typ": "at+jwt", "kid": kid}
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


def genuine(app, token: str):
    return private_key_of(app, header_of(token)["kid"])
