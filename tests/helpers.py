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
