"""Database outages against a real PostgreSQL that the tests stop and start.

Each run makes a throwaway cluster of its own (``initdb`` into a temporary
directory, ``pg_ctl`` on a free port, its socket in that directory), so stopping
it disturbs nothing else; the machine's shared server is never touched. Against
it ``authsvc serve --workers 2``:

- starts while the database is down, answers 503 (``/health`` included) with
  ``Retry-After`` and no driver text, and works once the database is up, schema
  and all, without a restart;
- answers 503 while the database is gone and succeeds on the first request after
  it is back (pool pre-ping), stale pooled connections or not;
- answers 503 within the statement timeout when the database is too slow,
  rather than holding a worker.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from conftest import BACKENDS, FAST_ARGON2
from helpers import PASSWORD
from live import (
    FAST_HASHING,
    UNTHROTTLED,
    LiveServer,
    Reply,
    clean_env,
    free_port,
    serve_command,
)
from sqlalchemy import text

from authsvc import create_app, db, migrations
from authsvc.config import UPGRADE_PENDING_ENV
from authsvc.db import make_engine

SECRET = "outage-test-secret-" + "o" * 40
#: Settings of in-process apps.
APP = {"SECRET_KEY": SECRET, "TESTING": True, **FAST_ARGON2}
#: Requests sent at once when the database comes back.
CONCURRENT = 6
#: Words of a driver's connection error that must never reach a client.
DRIVER_WORDS = ("psycopg", "connection", "server", "127.0.0.1", "refused")


def postgres_bin() -> Path:
    """The directory of the newest installed PostgreSQL's server programs."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parent.parent.name),
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        pytest.fail("no PostgreSQL server programs (initdb, pg_ctl) are installed")
    return Path(initdb).parent


class Cluster:
    """A PostgreSQL cluster of our own in a temporary directory, on a free port.

    PostgreSQL refuses to run as root, so as root its programs run as the
    ``postgres`` user, who then owns the directory.
    """

    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.root = Path(tempfile.mkdtemp(prefix="authsvc-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.running = False
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run(
            "initdb", "-D", self.data, "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--no-sync",
        )  # fmt: skip

    def _run(self, program: str, *args: str | Path) -> None:
        result = subprocess.run(
            [*self.as_user, str(self.bin / program), *map(str, args)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            log = self.root / "postgres.log"
            extra = log.read_text(errors="replace") if log.exists() else ""
            pytest.fail(f"{program} failed:\n{result.stdout}{result.stderr}{extra}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            "pg_ctl", "start", "-D", self.data, "-l", self.root / "postgres.log",
            "-w", "-t", "30", "-o", options,
        )  # fmt: skip
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``fast`` ends every open connection, as a restart does."""
        if self.running:
            self._run("pg_ctl", "stop", "-D", self.data, "-m", mode, "-w", "-t", "30")
            self.running = False

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres", **kwargs) -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            dbname=database,
            connect_timeout=5,
            **kwargs,
        )

    def create_database(self) -> str:
        name = f"authsvc_{uuid.uuid4().hex[:12]}"
        with self.connect(autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return name

    def remove(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster_once() -> Iterator[Cluster]:
    if "postgresql" not in BACKENDS:
        pytest.skip("AUTHSVC_TEST_BACKENDS leaves out PostgreSQL")
    cluster = Cluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def cluster(cluster_once: Cluster) -> Cluster:
    """The module's cluster, running at the start of each test."""
    if not cluster_once.running:
        cluster_once.start()
    return cluster_once


@pytest.fixture
def database(cluster: Cluster) -> str:
    """A fresh, empty database of the cluster: its URL."""
    return cluster.url(cluster.create_database())


def server_env(database_url: str, **settings: str) -> dict[str, str]:
    return clean_env(
        DATABASE_URL=database_url,
        SECRET_KEY=SECRET,
        **FAST_HASHING,
        **UNTHROTTLED,
        **settings,
    )


def serve(tmp_path: Path, env: dict[str, str], *, ready: int = 200) -> LiveServer:
    return LiveServer(serve_command(2), cwd=tmp_path, env=env, ready=("/health", ready))


def login(server: LiveServer, username: str = "alice") -> Reply:
    return server.request(
        "POST", "/login", {"username": username, "password": PASSWORD}
    )


def refresh(server: LiveServer, refresh_token: str) -> Reply:
    return server.request("POST", "/refresh", {"refresh_token": refresh_token})


def me(server: LiveServer, token: str) -> Reply:
    return server.request("GET", "/me", token=token)


def register(server: LiveServer, username: str = "alice") -> Reply:
    return server.request(
        "POST", "/users", {"username": username, "password": PASSWORD}
    )


def assert_unavailable(reply: Reply) -> None:
    """The contract's 503: problem+json, Retry-After, nothing from the driver."""
    assert reply.status == 503, reply
    assert reply.headers["Content-Type"] == "application/problem+json"
    assert reply.code == "service_unavailable", reply
    assert int(reply.headers["Retry-After"]) > 0
    text = json.dumps(reply.body).lower()
    for word in DRIVER_WORDS:
        assert word not in text, reply


def assert_health(server: LiveServer, status: int) -> None:
    reply = server.request("GET", "/health")
    if status == 200:
        assert (reply.status, reply.body) == (200, {"status": "ok"}), reply
    else:
        assert (reply.status, reply.body) == (503, {"status": "unavailable"}), reply
        assert int(reply.headers["Retry-After"]) > 0


@pytest.mark.live
def test_serve_starts_while_the_database_is_down(cluster, database, tmp_path):
    cluster.stop()
    with serve(tmp_path, server_env(database), ready=503) as server:
        lines = [
            line
            for line in server.output().splitlines()
            if "database unreachable at start:" in line
        ]
        assert len(lines) == 1, server.output()
        assert lines[0].endswith("; serving 503 until it answers")

        for _ in range(3):  # whichever worker answers
            assert_health(server, 503)
            assert_unavailable(login(server))
            assert_unavailable(register(server))

        cluster.start()
        # No restart: the schema is brought up by the first request that finds
        # the database answering, in each worker: here both at once.
        barrier = threading.Barrier(CONCURRENT)
        with ThreadPoolExecutor(CONCURRENT) as pool:
            replies = list(
                pool.map(
                    lambda _: server.request("GET", "/health", barrier=barrier),
                    range(CONCURRENT),
                )
            )
        assert [(r.status, r.body) for r in replies] == [
            (200, {"status": "ok"})
        ] * CONCURRENT, replies
        user = register(server)
        assert user.status == 201, user
        for _ in range(3):
            tokens = login(server)
            assert tokens.status == 200, tokens
            me = server.request("GET", "/me", token=tokens.body["access_token"])
            assert (me.status, me.body) == (200, user.body)
        server.assert_clean_output()


@pytest.mark.live
def test_serve_rides_out_the_database_going_away(cluster, database, tmp_path):
    with serve(tmp_path, server_env(database)) as server:
        assert register(server).status == 201
        refresh_tokens = []
        for _ in range(4):  # every worker holds pooled connections
            tokens = login(server).body
            token = tokens["access_token"]
            refresh_tokens.append(tokens["refresh_token"])
            assert me(server, token).status == 200

        # Restarted while idle: every pooled connection is dead, yet the very
        # first request after it (and every one after) succeeds: pre-ping for
        # the session's pool, one more try on a fresh connection for reads and
        # counters, and writes only after a read has found the pool dead.
        cluster.stop()
        cluster.start()
        for refresh_token in refresh_tokens:
            reply = refresh(server, refresh_token)
            assert reply.status == 200, reply
        for _ in range(4):
            reply = me(server, token)
            assert reply.status == 200, reply
        for _ in range(4):
            reply = login(server)
            assert reply.status == 200, reply

        cluster.stop()
        for _ in range(3):
            assert_health(server, 503)
            assert_unavailable(login(server))
            assert_unavailable(me(server, token))
        cluster.start()
        reply = login(server)
        assert reply.status == 200, reply
        assert me(server, reply.body["access_token"]).status == 200
        assert_health(server, 200)
        server.assert_clean_output()


@pytest.mark.live
def test_slow_database_answers_503_within_the_statement_timeout(
    cluster, database, tmp_path
):
    env = server_env(database, DB_STATEMENT_TIMEOUT="1")
    with serve(tmp_path, env) as server:
        assert register(server).status == 201
        assert login(server).status == 200
        name = database.rsplit("/", 1)[1]
        with cluster.connect(name) as locker:
            # Held in an open transaction: every query on users now waits.
            locker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
            for _ in range(2):  # whichever worker answers
                started = time.monotonic()
                reply = login(server)
                elapsed = time.monotonic() - started
                assert_unavailable(reply)
                assert 0.9 <= elapsed < 10, elapsed
            locker.rollback()
        reply = login(server)
        assert reply.status == 200, reply
        assert "database unavailable: QueryCanceled" in server.output()
        server.assert_clean_output()


@pytest.mark.live
def test_engine_bounds_every_statement(cluster):
    url = cluster.url("postgres") + "?options=-c%20search_path%3Dpg_catalog"
    for timeout, shown in ((2, "2s"), (0, "0")):
        engine = make_engine(url, statement_timeout=timeout)
        try:
            with engine.connect() as connection:
                assert connection.scalar(text("SHOW statement_timeout")) == shown
                # Options given in the URL are kept beside it.
                assert connection.scalar(text("SHOW search_path")) == "pg_catalog"
        finally:
            engine.dispose()
    engine = make_engine(url, statement_timeout=2, durable=False)
    try:
        with engine.connect() as connection:
            assert connection.scalar(text("SHOW synchronous_commit")) == "off"
            assert connection.scalar(text("SHOW statement_timeout")) == "2s"
            assert connection.scalar(text("SHOW search_path")) == "pg_catalog"
    finally:
        engine.dispose()


def test_a_deferred_upgrade_runs_on_the_first_request(monkeypatch, tmp_path):
    """What each worker does when ``serve`` could not migrate at start (SQLite)."""
    monkeypatch.setenv(UPGRADE_PENDING_ENV, "0")
    app = create_app(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}",
            "INSTANCE_PATH": str(tmp_path / "instance"),
            **APP,
        }
    )
    assert not migrations.upgrade_pending(app)

    migrations.defer_upgrade()
    app = create_app(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'b.db'}",
            "INSTANCE_PATH": str(tmp_path / "instance"),
            **APP,
        }
    )
    client = app.test_client()
    assert client.get("/health").json == {"status": "ok"}
    assert not migrations.upgrade_pending(app)
    assert migrations.current_revision(app) is not None
    response = client.post("/users", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 201, response.json
    app.extensions["authsvc.db"].dispose()


# --- a database whose port accepts connections and never answers ------------------


class BlackHole:
    """A loopback port that accepts connections and never answers them.

    Until :meth:`forward` is called: from then on each new connection is piped to
    ``upstream``, as if the database behind the port had come back.
    """

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.forwarding = False
        self.sockets: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def forward(self) -> None:
        self.forwarding = True

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.sockets.append(client)
            if not self.forwarding:
                continue  # held open, never read, never answered
            server = socket.create_connection(("127.0.0.1", self.upstream))
            self.sockets.append(server)
            for source, target in ((client, server), (server, client)):
                threading.Thread(
                    target=self._pipe, args=(source, target), daemon=True
                ).start()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, target):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()
        for one in self.sockets:
            one.close()
        self.thread.join(5)


UNAVAILABLE = {
    "type": "about:blank",
    "title": "Service Unavailable",
    "status": 503,
    "detail": "The service is temporarily unavailable.",
    "code": "service_unavailable",
}


def timed(send):
    started = time.monotonic()
    response = send()
    return response, time.monotonic() - started


def assert_unavailable_at_once(response, elapsed: float) -> None:
    assert elapsed < 0.5, elapsed
    assert_503(response)


def assert_503(response) -> None:
    assert response.status_code == 503, response.data
    assert response.mimetype == "application/problem+json"
    assert response.json == UNAVAILABLE
    assert response.headers["Retry-After"] == "5"


@pytest.mark.live
def test_a_black_holed_database_holds_requests_at_most_once_per_interval(
    database, monkeypatch, tmp_path
):
    """Unreachable at start, its port accepting and never answering, then back."""
    timeout = 1
    monkeypatch.setattr(db, "CONNECT_TIMEOUT", timeout)
    monkeypatch.setenv(UPGRADE_PENDING_ENV, "0")
    upstream = int(database.rsplit(":", 1)[1].split("/", 1)[0])
    hole = BlackHole(upstream)
    try:
        migrations.defer_upgrade()
        # Real seconds, so a try's length is measured, plus what the test skips.
        skipped = [0.0]
        app = create_app(
            {
                "DATABASE_URL": database.replace(f":{upstream}/", f":{hole.port}/"),
                "INSTANCE_PATH": str(tmp_path / "instance"),
                "MONOTONIC": lambda: skipped[0] + time.monotonic(),
                **APP,
            }
        )
        client = app.test_client()
        body = {"username": "alice", "password": PASSWORD}

        def live():
            response, elapsed = timed(lambda: client.get("/health/live"))
            assert elapsed < 0.5, elapsed
            assert (response.status_code, response.json) == (200, {"status": "ok"})

        def others():
            # Every route but liveness, each answering 503 at once.
            for send in (
                lambda: client.post("/login", json=body),
                lambda: client.post("/users", json=body),
                lambda: client.get("/me", headers={"Authorization": "Bearer x.y.z"}),
                lambda: client.get("/.well-known/jwks.json"),
            ):
                assert_unavailable_at_once(*timed(send))
            response, elapsed = timed(lambda: client.get("/health"))
            assert elapsed < 0.5, elapsed
            assert (response.status_code, response.json) == (
                503,
                {"status": "unavailable"},
            )
            assert response.headers["Retry-After"] == "5"

        for _ in range(3):
            live()
        # The first request that needs the database waits for it, once.
        response, elapsed = timed(lambda: client.post("/login", json=body))
        assert_503(response)
        assert timeout * 0.9 <= elapsed < timeout + 1.5, elapsed
        others()
        live()
        skipped[0] += migrations.UPGRADE_RETRY_INTERVAL - 2
        others()
        # The interval has passed: one request waits again, the others do not.
        skipped[0] += 2
        response, elapsed = timed(lambda: client.get("/me", headers={}))
        assert_503(response)
        assert timeout * 0.9 <= elapsed < timeout + 1.5, elapsed
        others()
        live()

        # The database answers again: the next try brings the schema up.
        hole.forward()
        assert client.post("/login", json=body).status_code == 503
        skipped[0] += migrations.UPGRADE_RETRY_INTERVAL
        response = client.get("/health")
        assert (response.status_code, response.json) == (200, {"status": "ok"})
        assert not migrations.upgrade_pending(app)
        response = client.post("/users", json=body)
        assert response.status_code == 201, response.json
        response = client.post("/login", json=body)
        assert response.status_code == 200, response.json
        live()
        app.extensions["authsvc.db"].dispose()
    finally:
        hole.close()
