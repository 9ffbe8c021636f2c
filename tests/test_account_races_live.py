"""Logins racing account changes on a real server: ``authsvc serve --workers 2``.

Threads log in with the same password as fast as the two workers answer while
another request changes the account: its password, its enabled state, its
existence, or the last administrator's role. No session opened with the old
state may survive the change, and nothing may answer 500. Each test repeats its
race for a few rounds, each well under a second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import BACKENDS, create_postgres_database, drop_postgres_database
from helpers import PASSWORD
from live import TIMEOUT, UNTHROTTLED, LiveServer, Reply, clean_env, serve_command
from sqlalchemy import select, update

from authsvc import create_app, registration
from authsvc.db import get_session
from authsvc.models import User
from authsvc.passwords import Passwords

pytestmark = pytest.mark.live

SECRET = "account-races-secret-" + "r" * 40
NEW_PASSWORD = "purple monkey dishwasher 42"
#: Argon2 a little slower than the suite's, so a login's check takes a few ms.
ARGON2 = {"ARGON2_TIME_COST": "1", "ARGON2_MEMORY_COST": "8192"}
ROUNDS = 8
LOGIN_THREADS = 4
#: Seconds of logins before the change is sent, and the most a round may take.
HEAD_START = 0.05
ROUND_TIMEOUT = 10


class Site:
    """A live server and an app of the same database, for what the API cannot do."""

    def __init__(self, server: LiveServer, url: str, instance: str) -> None:
        self.server = server
        self.app = create_app(
            {"DATABASE_URL": url, "SECRET_KEY": SECRET, "INSTANCE_PATH": instance}
        )
        self.counter = 0

    def call(self, method: str, path: str, body=None, token=None) -> Reply:
        return self.server.request(method, path, body, token=token)

    def new_user(self, prefix: str = "racer") -> tuple[str, dict]:
        """Register a fresh user and log in once; return the name and tokens."""
        self.counter += 1
        username = f"{prefix}{self.counter}"
        body = {"username": username, "password": PASSWORD}
        reply = self.call("POST", "/users", body)
        assert reply.status == 201, reply
        reply = self.call("POST", "/login", body)
        assert reply.status == 200, reply
        return username, reply.body

    def user(self, username: str) -> User:
        with self.app.app_context():
            db = get_session()
            user = db.scalar(select(User).where(User.username == username))
            db.expunge_all()
            return user

    def active_admins(self) -> int:
        with self.app.app_context():
            users = get_session().scalars(select(User).where(User.is_active)).all()
            return sum("admin" in user.roles for user in users)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(request, tmp_path_factory) -> Iterator[Site]:
    if request.param not in BACKENDS:
        pytest.skip(f"{request.param} is not in AUTHSVC_TEST_BACKENDS")
    folder = tmp_path_factory.mktemp(f"account-races-{request.param}")
    database = None
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'authsvc.db'}"
    else:
        database, url = create_postgres_database()
    env = clean_env(SECRET_KEY=SECRET, DATABASE_URL=url, **ARGON2, **UNTHROTTLED)
    try:
        with LiveServer(serve_command(workers=2), cwd=folder, env=env) as server:
            site = Site(server, url, str(folder / "instance"))
            yield site
            site.app.extensions["authsvc.db"].dispose()
        server.assert_clean_output()
    finally:
        if database is not None:
            drop_postgres_database(database)


def race(
    site: Site,
    username: str,
    change: Callable[[], Reply],
    head_start: float = HEAD_START,
) -> tuple[Reply, list[Reply]]:
    """Log in as ``username`` from several threads while ``change`` runs.

    Returns the change's reply and every login's. Logins start before the change
    and stop once it has answered, so some check the password just before the
    change commits and open their session just after.
    """
    stop = threading.Event()
    logins: list[Reply] = []
    body = {"username": username, "password": PASSWORD}

    def log_in() -> None:
        while not stop.is_set():
            logins.append(site.call("POST", "/login", body))

    with ThreadPoolExecutor(max_workers=LOGIN_THREADS) as pool:
        futures = [pool.submit(log_in) for _ in range(LOGIN_THREADS)]
        try:
            time.sleep(head_start)  # real time: the server's, not a test clock
            changed = change()
        finally:
            stop.set()
        for future in futures:
            future.result(timeout=ROUND_TIMEOUT + TIMEOUT)
    return changed, logins


def assert_no_server_error(site: Site, replies: list[Reply]) -> None:
    errors = [reply for reply in replies if reply.status >= 500]
    assert not errors, errors
    site.server.assert_clean_output()


def assert_dead(site: Site, logins: list[Reply]) -> None:
    """No session any of these logins opened works: neither token is accepted."""
    opened = [reply.body for reply in logins if reply.status == 200]
    for tokens in opened:
        reply = site.call("GET", "/me", token=tokens["access_token"])
        assert reply.status == 401, reply
        reply = site.call(
            "POST", "/refresh", {"refresh_token": tokens["refresh_token"]}
        )
        assert (reply.status, reply.code) == (401, "invalid_refresh_token"), reply
    refused = [reply for reply in logins if reply.status != 200]
    assert all(reply.code == "invalid_credentials" for reply in refused), refused


def can_log_in(site: Site, username: str, password: str) -> bool:
    reply = site.call("POST", "/login", {"username": username, "password": password})
    assert reply.status == 200 or reply.code == "invalid_credentials", reply
    return reply.status == 200


def test_logins_racing_a_password_change_keep_no_session(site):
    # A hash of older parameters than the server's: every login rehashes it.
    outdated = Passwords(time_cost=2, memory_cost=8192, parallelism=1).hash(PASSWORD)
    for round_ in range(ROUNDS):
        username, tokens = site.new_user()
        with site.app.app_context():
            db = get_session()
            db.execute(
                update(User)
                .where(User.username == username)
                .values(password_hash=outdated)
            )
            db.commit()

        def change(tokens: dict = tokens) -> Reply:
            return site.call(
                "POST",
                "/me/password",
                {"current_password": PASSWORD, "new_password": NEW_PASSWORD},
                token=tokens["access_token"],
            )

        # Only the first logins find the old hash to redo: the change must come
        # among them, so it leaves after a head start of 0 to 15 ms.
        changed, logins = race(site, username, change, (round_ % 4) * 0.005)

        assert changed.status == 204, changed
        assert_no_server_error(site, logins)
        # The rehash of a racing login never undid the change.
        assert can_log_in(site, username, NEW_PASSWORD)
        assert not can_log_in(site, username, PASSWORD)
        assert_dead(site, logins)


@pytest.fixture(scope="module")
def admin_token(site) -> str:
    with site.app.app_context():
        registration.create_user("root", PASSWORD, roles=["admin"])
    reply = site.call("POST", "/login", {"username": "root", "password": PASSWORD})
    assert reply.status == 200, reply
    return reply.body["access_token"]


def test_logins_racing_a_disabling_stay_dead_after_re_enabling(site, admin_token):
    for _ in range(ROUNDS):
        username, _tokens = site.new_user()
        path = f"/admin/users/{site.user(username).id}"

        def disable(path: str = path) -> Reply:
            return site.call("PATCH", path, {"is_active": False}, token=admin_token)

        changed, logins = race(site, username, disable)

        assert changed.status == 200, changed
        reply = site.call("PATCH", path, {"is_active": True}, token=admin_token)
        assert reply.status == 200, reply
        assert_no_server_error(site, logins)
        assert_dead(site, [*logins])
        assert can_log_in(site, username, PASSWORD)


def test_logins_racing_the_deletion_of_their_account_fail_as_unknown(site):
    for _ in range(ROUNDS):
        username, tokens = site.new_user()

        def delete(tokens: dict = tokens) -> Reply:
            return site.call(
                "DELETE", "/me", {"password": PASSWORD}, token=tokens["access_token"]
            )

        changed, logins = race(site, username, delete)

        assert changed.status == 204, changed
        assert_no_server_error(site, logins)
        assert_dead(site, logins)
        assert not can_log_in(site, username, PASSWORD)


def set_roles(site: Site, roles: list[str], *user_ids) -> None:
    """Set roles straight in the database, past the last-administrator rule."""
    with site.app.app_context():
        session = get_session()
        session.execute(update(User).where(User.id.in_(user_ids)).values(roles=roles))
        session.commit()


def test_two_admins_removing_each_other_leave_one(site, admin_token):
    root = site.user("root").id
    set_roles(site, [], root)  # root would otherwise remain whatever happens
    try:
        for _ in range(ROUNDS):
            race_admins(site)
    finally:
        set_roles(site, ["admin"], root)


def race_admins(site: Site) -> None:
    """Two administrators, the only ones, each take the other's role at once."""
    pair = []
    for _ in range(2):
        username, _tokens = site.new_user("admin")
        user_id = site.user(username).id
        set_roles(site, ["admin"], user_id)
        reply = site.call(
            "POST", "/login", {"username": username, "password": PASSWORD}
        )
        pair.append((user_id, reply.body["access_token"]))
    assert site.active_admins() == 2
    (first, first_token), (second, second_token) = pair
    barrier = threading.Barrier(2, timeout=TIMEOUT)

    def remove(user_id, token: str) -> Reply:
        return site.server.request(
            "PATCH",
            f"/admin/users/{user_id}",
            {"roles": []},
            token=token,
            barrier=barrier,
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [
            pool.submit(remove, second, first_token),
            pool.submit(remove, first, second_token),
        ]
        replies = [future.result(timeout=2 * TIMEOUT) for future in futures]

    assert_no_server_error(site, replies)
    assert site.active_admins() == 1, replies
    assert [reply.status for reply in replies].count(200) == 1, replies
    for reply in replies:
        # The loser either finds the other already gone, or finds its own token
        # revoked or its role taken by the winner first.
        assert reply.status == 200 or reply.code in {
            "last_admin",
            "token_revoked",
            "insufficient_scope",
        }, reply
    set_roles(site, [], first, second)
