"""The ``authsvc`` command: serve, migrate, administer users and sessions, export."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, with_appcontext
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from . import accounts, clock, migrations, sessions, throttle
from .api.models import iso
from .config import ConfigError
from .db import database_unavailable, defer_upgrade, get_db
from .errors import Problem
from .keys import get_keys
from .models import User

log = logging.getLogger(__name__)

#: Users fetched per query by ``users list``.
LIST_PAGE_SIZE = 100


def _create_app() -> Flask:
    from . import create_app

    return create_app()


class CommandGroup(FlaskGroup):
    """Flask's CLI group, which builds the app only for a command that runs.

    Every command is the group's own, so listing or finding one needs no app;
    building it for ``--help`` would make the instance folder (and its database)
    wherever the question was asked.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return click.Group.list_commands(self, ctx)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return click.Group.get_command(self, ctx, name)


cli = CommandGroup(
    name="authsvc",
    create_app=_create_app,
    add_default_commands=False,
    set_debug_flag=False,
    help="authsvc: token-based JSON REST authentication service.",
)


def main() -> None:
    """Console entry point: configuration errors end in one line, not a traceback."""
    try:
        cli.main(prog_name="authsvc")
    except ConfigError as exc:
        click.echo(f"authsvc: configuration error: {exc}", err=True)
        sys.exit(2)
    except SQLAlchemyError as exc:
        reason = str(exc.orig if isinstance(exc, DBAPIError) else exc).splitlines()[0]
        click.echo(
            f"authsvc: database error: {reason} "
            "(is it reachable, and migrated with `authsvc db upgrade`?)",
            err=True,
        )
        sys.exit(1)


def _reason(exc: SQLAlchemyError) -> str:
    """The first line of the driver's message: no SQL, no parameters."""
    lines = str(exc.orig if isinstance(exc, DBAPIError) else exc).splitlines()
    return lines[0] if lines else type(exc).__name__


def init_app(app: Flask) -> None:
    """Offer the same commands under ``flask --app authsvc``."""
    for command in cli.commands.values():
        app.cli.add_command(command)


#: prometheus_client's variable for its multiprocess folder (metrics.py reads it).
METRICS_FOLDER_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _metrics_folder_first(command: Callable[..., None]) -> Callable[..., None]:
    """Give the workers a fresh metrics folder, named before the app is built.

    prometheus_client picks in-process or file-backed values once, when it is
    first imported, and building the app imports it: so the folder comes first.
    It is fresh for each run, as prometheus_client asks, so counts start at zero,
    and removed at the end.
    """

    @wraps(command)
    def with_folder(*args: object, **kwargs: object) -> None:
        if "prometheus_client" in sys.modules:
            # Under `flask --app authsvc serve` the app is built before this runs.
            log.warning("metrics are counted per worker: start with `authsvc serve`")
        folder = tempfile.mkdtemp(prefix="authsvc-metrics-")
        os.environ[METRICS_FOLDER_ENV] = folder
        master = os.getpid()
        try:
            command(*args, **kwargs)
        finally:
            # Workers leave through here too (gunicorn ends them with SystemExit).
            if os.getpid() == master:
                shutil.rmtree(folder, ignore_errors=True)

    return with_folder


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--workers",
    default=lambda: max(2, os.cpu_count() or 1),
    show_default="number of CPUs, at least 2",
    type=click.IntRange(1, 64),
)
@_metrics_folder_first
@with_appcontext
def serve(host: str, port: int, workers: int) -> None:
    """Serve the API with gunicorn, migrating the schema first."""
    from .server import run

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    migrated = not app.config["AUTO_MIGRATE"]
    try:
        if not migrated:
            migrations.upgrade(app)
            migrated = True
        # Make or read the signing keys once, before the workers start, so a
        # secret that cannot decrypt them stops the server here.
        get_keys().states(clock.now())
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    except SQLAlchemyError as exc:
        if not database_unavailable(exc):
            raise
        # Serve anyway: health checks and clients get 503 until the database
        # answers, and each worker then migrates and loads the keys itself.
        log.error(
            "database unreachable at start: %s; serving 503 until it answers",
            _reason(exc),
        )
        if not migrated:
            defer_upgrade()
    get_db().dispose()  # no connection of this process crosses a fork
    if app.config["ENV"] == "development":
        log.warning(
            "development setup (AUTHSVC_ENV=development): database %s; "
            "set AUTHSVC_ENV=production with a real secret and PostgreSQL to deploy",
            app.config["DATABASE_URL"].split("@")[-1],
        )
    run(host=host, port=port, workers=workers)


@cli.group()
def db() -> None:
    """Schema migrations (Alembic)."""


@db.command("upgrade")
@click.argument("revision", default="head")
@with_appcontext
def db_upgrade(revision: str) -> None:
    """Bring the schema to REVISION (default: the newest)."""
    migrations.upgrade(current_app._get_current_object(), revision)  # type: ignore[attr-defined]


@db.command("downgrade")
@click.argument("revision")
@with_appcontext
def db_downgrade(revision: str) -> None:
    """Take the schema back to REVISION (``base`` removes it)."""
    migrations.downgrade(current_app._get_current_object(), revision)  # type: ignore[attr-defined]


@db.command("current")
@with_appcontext
def db_current() -> None:
    """Print the revision the database is at."""
    revision = migrations.current_revision(current_app._get_current_object())  # type: ignore[attr-defined]
    click.echo(revision or "none")


@cli.group()
def users() -> None:
    """Manage accounts."""


@users.command("create")
@click.argument("username")
@click.option("--email", default=None, help="E-mail address of the user.")
@click.option("--role", "roles", multiple=True, help="A role to grant; repeatable.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@with_appcontext
def users_create(
    username: str, email: str | None, roles: tuple[str, ...], password_stdin: bool
) -> None:
    """Create a user, with the same password policy as the API."""
    password = _read_password("Password", from_stdin=password_stdin)
    with _problems_exit():
        user = accounts.create_user(username, password, email=email, roles=list(roles))
    click.echo(f"created user {user.username} ({user.id})")


@users.command("list")
@click.option("--query", default="", help="Part of a username or e-mail to match.")
@with_appcontext
def users_list(query: str) -> None:
    """List users by username: name, e-mail, roles, state and id."""
    shown = 0
    page = 1
    while True:
        found, _total = accounts.list_users(query, page=page, per_page=LIST_PAGE_SIZE)
        for user in found:
            click.echo(
                "\t".join(
                    [
                        user.username,
                        user.email or "-",
                        ",".join(user.roles) or "-",
                        "active" if user.is_active else "disabled",
                        str(user.id),
                    ]
                )
            )
        shown += len(found)
        if len(found) < LIST_PAGE_SIZE:
            break
        page += 1
    click.echo(_count(shown, "user"))


@users.command("disable")
@click.argument("username")
@with_appcontext
def users_disable(username: str) -> None:
    """Disable a user and revoke all their sessions."""
    user = _find_user(username)
    with _problems_exit():
        accounts.set_active(user, False)
    click.echo(f"disabled {user.username}")


@users.command("enable")
@click.argument("username")
@with_appcontext
def users_enable(username: str) -> None:
    """Let a disabled user log in again."""
    user = _find_user(username)
    accounts.set_active(user, True)
    click.echo(f"enabled {user.username}")


@users.command("set-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@with_appcontext
def users_set_password(username: str, password_stdin: bool) -> None:
    """Set a user's password and revoke all their sessions."""
    user = _find_user(username)
    password = _read_password("New password", from_stdin=password_stdin)
    with _problems_exit():
        accounts.set_password(user, password)
    click.echo(f"changed the password of {user.username}; their sessions are revoked")


@users.command("grant")
@click.argument("username")
@click.argument("role")
@with_appcontext
def users_grant(username: str, role: str) -> None:
    """Give a user a role; their sessions are revoked."""
    _check_role(role)
    user = _find_user(username)
    if role in user.roles:
        click.echo(f"{user.username} already has the role {role}")
        return
    accounts.set_roles(user, [*user.roles, role])
    click.echo(f"granted {role} to {user.username}; their sessions are revoked")


@users.command("revoke")
@click.argument("username")
@click.argument("role")
@with_appcontext
def users_revoke(username: str, role: str) -> None:
    """Take a role from a user; their sessions are revoked."""
    _check_role(role)
    user = _find_user(username)
    if role not in user.roles:
        click.echo(f"{user.username} does not have the role {role}")
        return
    with _problems_exit():
        accounts.set_roles(user, [held for held in user.roles if held != role])
    click.echo(f"revoked {role} from {user.username}; their sessions are revoked")


@cli.group("sessions")
def sessions_group() -> None:
    """Manage login sessions."""


@sessions_group.command("revoke")
@click.argument("username")
@with_appcontext
def sessions_revoke(username: str) -> None:
    """Revoke every live session of a user."""
    user = _find_user(username)
    revoked = sessions.revoke_user_sessions(user.id, reason="admin")
    click.echo(f"revoked {_count(revoked, 'session')} of {user.username}")


@sessions_group.command("prune")
@click.option(
    "--batch-size",
    default=5000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Sessions deleted per transaction.",
)
@with_appcontext
def sessions_prune(batch_size: int) -> None:
    """Delete sessions ended or revoked over a day ago, and spent throttle counters."""
    pruned = sessions.prune_sessions(batch_size=batch_size)
    click.echo(f"pruned {_count(pruned, 'session')}")
    counters = throttle.prune_counters()
    click.echo(f"pruned {_count(counters, 'expired throttle counter')}")


@cli.group("keys")
def keys_group() -> None:
    """The signing keys of access tokens."""


@keys_group.command("list")
@with_appcontext
def keys_list() -> None:
    """List keys: kid, algorithm, state, when it signs, until when it verifies."""
    for state in get_keys().states(clock.now()):
        click.echo(
            "\t".join(
                [
                    state.key.kid,
                    state.key.algorithm,
                    state.state,
                    f"signs from {iso(state.key.activates_at)}",
                    f"verifies until {iso(state.verifies_until)}"
                    if state.verifies_until
                    else "-",
                ]
            )
        )


@keys_group.command("rotate")
@with_appcontext
def keys_rotate() -> None:
    """Publish a new key now; it signs after AUTHSVC_KEY_PUBLISH_DELAY seconds."""
    delay = current_app.config["KEY_PUBLISH_DELAY"]
    try:
        kid = get_keys().rotate(clock.now(), delay)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"published key {kid}; it signs new tokens in {delay} seconds")


def _find_user(username: str) -> User:
    """The user with this username or e-mail (any case), or exit 1."""
    try:
        return accounts.find_user_by_name(username)
    except Problem:
        raise click.ClickException(f"no such user: {username}") from None


def _check_role(role: str) -> None:
    if not accounts.ROLE_PATTERN.fullmatch(role):
        raise click.ClickException(
            f"invalid role {role!r}: must be {accounts.ROLE_RULE}"
        )


def _read_password(prompt: str, *, from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password: str = click.prompt(prompt, hide_input=True, confirmation_prompt=True)
    return password


@contextmanager
def _problems_exit() -> Iterator[None]:
    """Turn a use case's :class:`Problem` into a one-line error and exit status 1."""
    try:
        yield
    except Problem as problem:
        raise click.ClickException(_describe(problem)) from None


def _describe(problem: Problem) -> str:
    if problem.errors:
        return "; ".join(f"{name} {text}" for name, text in problem.errors.items())
    return problem.detail


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


@cli.command("export-openapi")
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@with_appcontext
def export_openapi(path: Path | None) -> None:
    """Write the OpenAPI document the app serves to PATH (default: stdout)."""
    from .api import openapi_document

    text = render_openapi(openapi_document(current_app._get_current_object()))  # type: ignore[attr-defined]
    if path is None:
        click.echo(text, nl=False)
    else:
        path.write_text(text)


def render_openapi(document: dict[str, Any]) -> str:
    """The stable text form of the OpenAPI document, as committed under openapi/."""
    return json.dumps(document, indent=2, sort_keys=True) + "\n"
