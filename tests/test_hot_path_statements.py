"""The claims cost nothing per request: GET /me and POST /refresh run no new query.

``auth_time``, ``acr`` and ``amr`` come from the token (``/me``) or from the row the
refresh already reads; every statement each request runs is counted here.
"""

from __future__ import annotations

import pytest
from helpers import bearer, claims_of
from sqlalchemy import event

from authsvc.db import get_db
from authsvc.driver import DriverStatement


@pytest.fixture
def statements(app, monkeypatch):
    """Every SQL statement run from now on, on the driver or through the ORM."""
    ran: list[str] = []
    arguments = DriverStatement.arguments

    def counted(self, params):
        ran.append(self.sql)
        return arguments(self, params)

    monkeypatch.setattr(DriverStatement, "arguments", counted)
    with app.app_context():
        engine = get_db().engine

    def orm(_conn, _cursor, statement, *_args):
        ran.append(statement)

    event.listen(engine, "before_cursor_execute", orm)
    yield ran
    event.remove(engine, "before_cursor_execute", orm)


def test_me_runs_its_one_query(client, tokens, statements):
    response = client.get("/me", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200
    (query,) = statements
    assert "sessions" in query and "users" in query


def test_a_refresh_reads_the_claims_in_its_one_read(app, client, tokens, statements):
    response = client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert response.status_code == 200
    assert claims_of(response.json["access_token"])["acr"] == "aal1"
    find, *writes = statements
    assert "auth_time" in find and "amr" in find
    # The rotation: one statement on PostgreSQL, spend and insert on SQLite.
    with app.app_context():
        expected = 1 if get_db().postgres else 2
    assert len(writes) == expected
    assert not any("auth_time" in write for write in writes)
