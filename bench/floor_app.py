"""The floor: the stack authsvc is built on, doing an endpoint's work and no more.

A Flask-RESTX resource, behind Flask-Login's ``request_loader`` where the caller
must be known, does the endpoint's database work through the driver on one
connection per worker, and for refresh signs the same RS256 token with PyJWT.
gunicorn serves it with the bare route's settings, on the same database server,
and it is measured beside the bare route like authsvc.

It leaves out what authsvc adds: the access token's verification, the body's
validation, request ids, security headers, the body limit, metrics, the audit
trail, SQLAlchemy's pool, problem+json errors, and every check that makes a
rotation safe (it is not a service: any bearer token will do). So its
ratio to the bare route is about the most any service of this stack can reach
on the machine: what lies between it and the bare route is the stack's and the
database's, what lies between authsvc and it is authsvc's own.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import time
import uuid
from typing import Any

import jwt
import psycopg
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, request
from flask_login import LoginManager, UserMixin, current_user, login_required
from flask_restx import Api, Resource

from authsvc.db import tune_sqlite
from authsvc.driver import WriterQueue

#: Where the floor's tables are: an SQLite file, or a ``postgresql://`` URL.
DATABASE_ENV = "BENCH_FLOOR_DATABASE"
#: Rows of each table, and the user every ``GET /me`` reads.
ROWS = 1000
USER_ID = ROWS // 2
#: What a refresh token's successor and access token live, in seconds.
LIFETIME = 900


class Floor:
    """The floor's statements on PostgreSQL: one connection, each its own commit."""

    create = (
        "CREATE TABLE floor_users (id INTEGER PRIMARY KEY, username TEXT NOT NULL)",
        "CREATE TABLE floor_tokens (id SERIAL PRIMARY KEY, "
        "token_hash TEXT NOT NULL UNIQUE, session_id INTEGER NOT NULL, "
        "expires_at BIGINT NOT NULL, spent_at BIGINT)",
    )
    add_user = "INSERT INTO floor_users (id, username) VALUES (%s, %s)"
    add_refresh = (
        "INSERT INTO floor_tokens (token_hash, session_id, expires_at) "
        "VALUES (%s, %s, %s)"
    )
    find_user = "SELECT id, username FROM floor_users WHERE id = %s"
    find_refresh = (
        "SELECT id, session_id FROM floor_tokens "
        "WHERE token_hash = %s AND spent_at IS NULL"
    )
    spend = "UPDATE floor_tokens SET spent_at = %s WHERE id = %s"

    def __init__(self, database: str) -> None:
        self.database = database

    def connect(self) -> Any:
        """A connection in autocommit."""
        return psycopg.connect(self.database, autocommit=True)

    def rotate(
        self, connection: Any, token_id: int, session_id: int, successor: str, now: int
    ) -> None:
        """Spend the token and store the hash of its successor, in one statement."""
        connection.execute(
            f"WITH spent AS ({self.spend}) {self.add_refresh}",
            (now, token_id, successor, session_id, now + LIFETIME),
        )


class SqliteFloor(Floor):
    """SQLite with authsvc's settings, its writers queued on a lock file as there."""

    create = (Floor.create[0], Floor.create[1].replace("SERIAL", "INTEGER"))
    add_user = Floor.add_user.replace("%s", "?")
    add_refresh = Floor.add_refresh.replace("%s", "?")
    find_user = Floor.find_user.replace("%s", "?")
    find_refresh = Floor.find_refresh.replace("%s", "?")
    spend = Floor.spend.replace("%s", "?")

    def __init__(self, database: str) -> None:
        super().__init__(database)
        self.writers = WriterQueue(f"{database}-writers")

    def connect(self) -> Any:
        """A connection in autocommit, with authsvc's settings."""
        connection = sqlite3.connect(self.database, isolation_level=None)
        tune_sqlite(connection)
        return connection

    def rotate(
        self, connection: Any, token_id: int, session_id: int, successor: str, now: int
    ) -> None:
        """Spend the token and store its successor in one write transaction."""
        with self.writers:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute(self.spend, (now, token_id))
            connection.execute(
                self.add_refresh, (successor, session_id, now + LIFETIME)
            )
            connection.execute("COMMIT")


def floor_for(database: str) -> Floor:
    """The floor on ``database``: a PostgreSQL URL, else an SQLite file."""
    if database.startswith("postgresql://"):
        return Floor(database)
    return SqliteFloor(database)


def token_hash(token: str) -> str:
    """What the floor stores of a refresh token."""
    return hashlib.sha256(token.encode()).hexdigest()


def prepare(database: str) -> list[str]:
    """Create and fill the floor's tables; the plaintexts of its refresh tokens."""
    floor = floor_for(database)
    tokens = [secrets.token_urlsafe(32) for _ in range(ROWS)]
    expires = int(time.time()) + LIFETIME
    connection = floor.connect()
    try:
        for statement in floor.create:
            connection.execute(statement)
        cursor = connection.cursor()
        users = [(number, f"floor{number}") for number in range(1, ROWS + 1)]
        cursor.executemany(floor.add_user, users)
        rows = [(token_hash(token), n, expires) for n, token in enumerate(tokens, 1)]
        cursor.executemany(floor.add_refresh, rows)
    finally:
        connection.close()
    return tokens


class Caller(UserMixin):
    """A row of ``floor_users``."""

    def __init__(self, user_id: int, username: str) -> None:
        self.id = user_id
        self.username = username


def create_app() -> Flask:
    """The floor's app, on the database ``BENCH_FLOOR_DATABASE`` names."""
    floor = floor_for(os.environ[DATABASE_ENV])
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kept: dict[str, Any] = {}

    def connection() -> Any:
        # Made in the worker, after gunicorn forked it.
        if "connection" not in kept:
            kept["connection"] = floor.connect()
        return kept["connection"]

    app = Flask(__name__)
    api = Api(app, doc=False)
    login_manager = LoginManager(app)

    @login_manager.request_loader
    def load_caller(incoming: Any) -> Caller | None:
        if not incoming.headers.get("Authorization", "").startswith("Bearer "):
            return None
        row = connection().execute(floor.find_user, (USER_ID,)).fetchone()
        return Caller(*row) if row else None

    @api.route("/health")
    class Health(Resource):
        def get(self) -> dict[str, str]:
            return {"status": "ok"}

    @api.route("/me")
    class Me(Resource):
        @login_required
        def get(self) -> dict[str, object]:
            return {"id": current_user.id, "username": current_user.username}

    @api.route("/refresh")
    class Refresh(Resource):
        def post(self) -> tuple[dict[str, object], int]:
            presented = (request.get_json(silent=True) or {}).get("refresh_token", "")
            hashed = token_hash(presented)
            found = connection().execute(floor.find_refresh, (hashed,)).fetchone()
            if found is None:
                return {"error": "invalid_grant"}, 400
            successor = secrets.token_urlsafe(32)
            now = int(time.time())
            floor.rotate(connection(), found[0], found[1], token_hash(successor), now)
            claims = {
                "sub": str(found[1]),
                "jti": uuid.uuid4().hex,
                "iat": now,
                "exp": now + LIFETIME,
            }
            access = jwt.encode(
                claims, key, algorithm="RS256", headers={"kid": "floor"}
            )
            return {"access_token": access, "refresh_token": successor}, 200

    return app
