"""The audit trail: one record per security event, and never a password or token."""

from __future__ import annotations

import json
import logging

import pytest
from helpers import PASSWORD, bearer

from authsvc.logs import JsonFormatter

NEW_PASSWORD = "another long passphrase 42"


@pytest.fixture
def audit_log(caplog):
    caplog.set_level(logging.INFO, logger="authsvc")
    return caplog


def walk_every_endpoint(client, clock) -> list[str]:
    """Exercise the API end to end; return every secret it saw or issued."""
    secrets = [PASSWORD, NEW_PASSWORD, "wrong password!"]
    client.post("/users", json={"username": "alice", "password": PASSWORD})
    client.post("/login", json={"username": "alice", "password": "wrong password!"})
    client.post("/login", json={"username": "nobody", "password": "wrong password!"})
    first = client.post("/login", json={"username": "alice", "password": PASSWORD}).json
    second = client.post(
        "/login", json={"username": "alice", "password": PASSWORD}
    ).json
    rotated = client.post(
        "/refresh", json={"refresh_token": first["refresh_token"]}
    ).json
    clock.advance(60)
    client.post("/refresh", json={"refresh_token": first["refresh_token"]})
    client.get("/me", headers=bearer(second["access_token"]))
    client.post(
        "/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(second["access_token"]),
    )
    third = client.post(
        "/login", json={"username": "alice", "password": NEW_PASSWORD}
    ).json
    client.get("/sessions", headers=bearer(third["access_token"]))
    client.post("/logout", json={"all": True}, headers=bearer(third["access_token"]))
    for tokens in (first, second, rotated, third):
        secrets += [tokens["access_token"], tokens["refresh_token"]]
    return secrets


def test_logs_never_contain_a_password_or_token(client, clock, audit_log):
    secrets = walk_every_endpoint(client, clock)
    formatter = JsonFormatter()
    text = audit_log.text + "\n".join(
        formatter.format(record) for record in audit_log.records
    )
    for secret in secrets:
        assert secret not in text
    # Nor a recognisable piece of one.
    for secret in secrets:
        assert secret[-16:] not in text


def test_security_events_are_recorded(client, clock, audit_log):
    walk_every_endpoint(client, clock)
    records = [r.audit for r in audit_log.records if hasattr(r, "audit")]
    events = [r["event"] for r in records]
    for event in [
        "user_created",
        "login_failed",
        "login_succeeded",
        "refreshed",
        "refresh_reuse_detected",
        "session_revoked",
        "password_changed",
        "logout",
    ]:
        assert event in events, event
    for record in records:
        assert record.keys() >= {"event", "user_id", "session_id", "ip_address"}
    login = next(r for r in records if r["event"] == "login_succeeded")
    assert login["user_id"] and login["session_id"]
    assert login["ip_address"] == "127.0.0.1"


def test_disabling_an_account_is_recorded(app, client, audit_log):
    from authsvc import admin, users

    client.post("/users", json={"username": "bob", "password": PASSWORD})
    with app.test_request_context():
        user = users.find_user_by_name("bob")
        admin.set_active(user, False)
    events = [r.audit["event"] for r in audit_log.records if hasattr(r, "audit")]
    assert "account_disabled" in events


def test_json_lines_carry_time_event_and_ids(client, clock, audit_log):
    walk_every_endpoint(client, clock)
    formatter = JsonFormatter()
    record = next(r for r in audit_log.records if hasattr(r, "audit"))
    entry = json.loads(formatter.format(record))
    assert entry["time"].endswith("+00:00")
    assert entry.keys() >= {"time", "level", "event", "user_id", "session_id"}
