"""The ``authsvc`` commands that run the service: serve, db, keys, mail, OpenAPI."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from . import clock, mail_sender, migrations
from .api import openapi_document
from .db import database_unavailable, get_db
from .keys import get_keys

# The name log lines have always carried, which operators may filter on.
log = logging.getLogger("authsvc.cli")


def _current_app() -> Flask:
    """The app behind ``current_app``, for code that keeps it past the context."""
    # Flask types current_app as the app, not the proxy it is.
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    return app


def _reason(exc: SQLAlchemyError) -> str:
    """The first line of the driver's message: no SQL, no parameters."""
    lines = str(exc.orig if isinstance(exc, DBAPIError) else exc).splitlines()
    return lines[0] if lines else type(exc).__name__


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


@click.command()
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
    # Only this command needs gunicorn; the app, built by every command and under
    # any WSGI server, does without it.
    from .server import run

    app = _current_app()
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
            migrations.defer_upgrade()
    get_db().dispose()  # no connection of this process crosses a fork
    if app.config["ENV"] == "development":
        log.warning(
            "development setup (AUTHSVC_ENV=development): database %s; "
            "set AUTHSVC_ENV=production with a real secret and PostgreSQL to deploy",
            app.config["DATABASE_URL"].split("@")[-1],
        )
    run(host=host, port=port, workers=workers)


@click.group(cls=AppGroup)
def db() -> None:
    """Schema migrations (Alembic)."""


@db.command("upgrade")
@click.argument("revision", default="head")
@with_appcontext
def db_upgrade(revision: str) -> None:
    """Bring the schema to REVISION (default: the newest)."""
    migrations.upgrade(_current_app(), revision)


@db.command("downgrade")
@click.argument("revision")
@with_appcontext
def db_downgrade(revision: str) -> None:
    """Take the schema back to REVISION (``base`` removes it)."""
    migrations.downgrade(_current_app(), revision)


@db.command("current")
@with_appcontext
def db_current() -> None:
    """Print the revision the database is at."""
    revision = migrations.current_revision(_current_app())
    click.echo(revision or "none")


@click.group("keys", cls=AppGroup)
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
                    f"signs from {clock.iso(state.key.activates_at)}",
                    f"verifies until {clock.iso(state.verifies_until)}"
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


@click.group("mail", cls=AppGroup)
def mail_group() -> None:
    """Send queued mail (serving workers also do, in the background)."""


@mail_group.command("send")
@with_appcontext
def mail_send() -> None:
    """Send what is due in the outbox, once, and report how many were sent."""
    sent = mail_sender.send_pending(limit=1000)
    click.echo(f"sent {sent} message{'s' if sent != 1 else ''}")


@mail_group.command("worker")
@click.option(
    "--interval",
    default=mail_sender.POLL_SECONDS,
    show_default=True,
    type=click.FloatRange(0.1, 3600),
    help="Seconds between passes.",
)
@with_appcontext
def mail_worker(interval: float) -> None:
    """Send queued mail until stopped (SIGTERM or Ctrl-C)."""
    sender = mail_sender.SenderThread(_current_app(), interval)
    signal.signal(signal.SIGTERM, lambda *_: sender.stopping.set())
    log.info("mail worker: sending queued mail every %ss", interval)
    sender.start()
    try:
        while sender.is_alive():
            sender.join(0.5)
    except KeyboardInterrupt:
        pass
    sender.stop()
    log.info("mail worker: stopped")


@click.command("export-openapi")
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@with_appcontext
def export_openapi(path: Path | None) -> None:
    """Write the OpenAPI document the app serves to PATH (default: stdout)."""
    text = render_openapi(openapi_document(_current_app()))
    if path is None:
        click.echo(text, nl=False)
    else:
        path.write_text(text)


def render_openapi(document: dict[str, Any]) -> str:
    """The stable text form of the OpenAPI document, as committed under openapi/."""
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


#: What this module adds to the ``authsvc`` group.
COMMANDS: tuple[click.Command, ...] = (
    serve,
    db,
    keys_group,
    mail_group,
    export_openapi,
)
