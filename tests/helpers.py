"""Small helpers shared by test modules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

PASSWORD = "correct horse battery staple"


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


def problem(response, code: str, status: int) -> dict:
    """Assert ``response`` is the contract's problem+json for ``code``; return it."""
    assert response.status_code == status, response.data
    assert response.mimetype == "application/problem+json"
    body = response.json
    assert body["code"] == code, body
    assert body["status"] == status
    assert {"type", "title", "status", "detail", "code"} <= body.keys()
    return body


def me(client, tokens: dict):
    """``GET /me`` with a session's access token."""
    return client.get("/me", headers=bearer(tokens["access_token"]))


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
