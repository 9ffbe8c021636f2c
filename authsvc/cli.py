"""The ``authsvc`` command, and its commands that administer users and sessions.

Those that run the service (serve, db, keys, export-openapi) are in ``cli_service``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click
from flask import Flask
from flask.cli import FlaskGroup, with_appcontext
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from . import (
    admin,
    cli_service,
    create_app,
    mfa,
    registration,
    revocation,
    throttle,
)
from .config import ConfigError
from .errors import Problem
from .models import User
from .users import find_user_by_name

#: Users fetched per query by ``users list``.
LIST_PAGE_SIZE = 100


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
    create_app=create_app,
    add_default_commands=False,
    set_debug_flag=False,
    help="authsvc: token-based JSON REST authentication service.",
)
for command in cli_service.COMMANDS:
    cli.add_command(command)


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


def init_app(app: Flask) -> None:
    """Offer the same commands under ``flask --app authsvc``."""
    for command in cli.commands.values():
        app.cli.add_command(command)


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
        user = registration.create_user(
            username, password, email=email, roles=list(roles)
        )
    click.echo(f"created user {user.username} ({user.id})")


@users.command("list")
@click.option("--query", default="", help="Part of a username or e-mail to match.")
@with_appcontext
def users_list(query: str) -> None:
    """List users by username: name, e-mail, roles, state and id."""
    shown = 0
    page = 1
    while True:
        found, _total = admin.list_users(query, page=page, per_page=LIST_PAGE_SIZE)
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
        admin.set_active(user, False)
    click.echo(f"disabled {user.username}")


@users.command("enable")
@click.argument("username")
@with_appcontext
def users_enable(username: str) -> None:
    """Let a disabled user log in again."""
    user = _find_user(username)
    admin.set_active(user, True)
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
        admin.set_password(user, password)
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
    admin.set_roles(user, [*user.roles, role])
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
        admin.set_roles(user, [held for held in user.roles if held != role])
    click.echo(f"revoked {role} from {user.username}; their sessions are revoked")


@users.command("reset-mfa")
@click.argument("username")
@with_appcontext
def users_reset_mfa(username: str) -> None:
    """Turn a user's second factor off (a lost phone); their sessions are revoked."""
    user = _find_user(username)
    with _problems_exit():
        mfa.reset(user)
    click.echo(
        f"turned off the second factor of {user.username}; their sessions are revoked"
    )


@cli.group("sessions")
def sessions_group() -> None:
    """Manage login sessions."""


@sessions_group.command("revoke")
@click.argument("username")
@with_appcontext
def sessions_revoke(username: str) -> None:
    """Revoke every live session of a user."""
    user = _find_user(username)
    revoked = revocation.revoke_user_sessions(user.id, reason="admin")
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
    """Delete sessions ended or revoked over a day ago, and spent throttle counters.

    And mfa_tokens that expired over a day ago.
    """
    pruned = revocation.prune_sessions(batch_size=batch_size)
    click.echo(f"pruned {_count(pruned, 'session')}")
    counters = throttle.prune_counters()
    click.echo(f"pruned {_count(counters, 'expired throttle counter')}")
    challenges = mfa.prune_challenges()
    click.echo(f"pruned {_count(challenges, 'expired mfa token')}")


def _find_user(username: str) -> User:
    """The user with this username or e-mail (any case), or exit 1."""
    try:
        return find_user_by_name(username)
    except Problem:
        raise click.ClickException(f"no such user: {username}") from None


def _check_role(role: str) -> None:
    if not registration.ROLE_PATTERN.fullmatch(role):
        raise click.ClickException(
            f"invalid role {role!r}: must be {registration.ROLE_RULE}"
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
