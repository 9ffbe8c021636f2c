"""The Flask-Login layer: bearer token in, ``current_user`` out, one door for 401s.

The ``request_loader`` reads ``Authorization: Bearer``, verifies the token and
loads its user and session. It returns the caller, or ``None`` after recording
why a presented token was refused; the ``unauthorized_handler`` turns that
record into the RFC 6750 answer. No Flask session cookie is ever read or written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any, NoReturn, TypeVar

from flask import Flask, Request, Response, g, request
from flask.sessions import SecureCookieSessionInterface, SessionMixin
from flask_login import LoginManager, current_user, login_required
from flask_login.config import EXEMPT_METHODS

from . import clock
from .errors import Problem
from .keys import get_keys
from .principal import Principal, load_principal
from .tokens import TokenError, TokenExpired

REALM = "authsvc"
#: RFC 6750 section 2.1 ``b64token``.
B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


class BearerLoginManager(LoginManager):
    """A ``LoginManager`` that knows only the ``request_loader``.

    Flask-Login would first look for a session user and a remember-me cookie, and
    a stray ``remember_token`` cookie would then hide the bearer token; here
    credentials come from the request's Authorization header alone.
    """

    def _load_user(self) -> None:
        user = self._request_callback(request) if self._request_callback else None
        return self._update_request_context_with_user(user)

    def _update_remember_cookie(self, response: Response) -> Response:
        # There is no remember cookie to set or clear, on any response.
        return response


login_manager = BearerLoginManager()


class NoCookieSessionInterface(SecureCookieSessionInterface):
    """A session that is always empty and never saved, so no response sets a cookie."""

    def open_session(self, app: Flask, request: Request) -> SessionMixin:
        return self.make_null_session(app)

    def save_session(self, app: Flask, session: SessionMixin, response: Any) -> None:
        return None


def init_app(app: Flask) -> None:
    """Install the login manager and the cookie-less session on ``app``."""
    login_manager.init_app(app)
    login_manager.session_protection = None
    app.session_interface = NoCookieSessionInterface()


def bearer_token(request: Request) -> str | None:
    """Return the request's bearer token; raise ``invalid_request`` if malformed."""
    # WSGI servers join repeated headers with commas, and no bearer token has one.
    header = request.headers.get("Authorization")
    if header is None:
        return None
    values = header.split(",")
    if len(values) > 1:
        if any(_is_bearer(value) for value in values):
            raise Problem("invalid_request", "Send one Authorization header.")
        return None
    scheme, _, credentials = values[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = credentials.strip()
    if not token or " " in token:
        raise Problem("invalid_request")
    return token


def _is_bearer(value: str) -> bool:
    return value.strip().partition(" ")[0].lower() == "bearer"


@login_manager.request_loader
def load_user_from_request(request: Request) -> Principal | None:
    """Return the caller the bearer token names, or ``None`` noting the reason."""
    try:
        token = bearer_token(request)
        if token is None:
            return None
        if not B64TOKEN.fullmatch(token):
            raise Problem("invalid_token")
        claims = get_keys().verify(token, now=int(clock.now().timestamp()))
        return load_principal(claims)
    except TokenExpired:
        g.auth_problem = "token_expired"
    except TokenError:
        g.auth_problem = "invalid_token"
    except Problem as problem:
        g.auth_problem = problem.code
    return None


@login_manager.unauthorized_handler
def unauthorized() -> None:
    """Raise the RFC 6750 problem for a request without an accepted token."""
    code = g.get("auth_problem", "authentication_required")
    raise Problem(code, headers={"WWW-Authenticate": www_authenticate(code)})


#: Codes of a presented token that was not accepted (RFC 6750 ``invalid_token``).
TOKEN_REFUSALS = frozenset({"invalid_token", "token_expired", "token_revoked"})


def www_authenticate(code: str) -> str:
    """The ``WWW-Authenticate`` challenge of a protected endpoint's 401 (or 400).

    ``error`` names what was wrong with the token; a 401 whose token was fine
    (no token at all, a wrong current password) carries the bare challenge.
    """
    if code == "invalid_request":
        return f'Bearer realm="{REALM}", error="invalid_request"'
    if code in TOKEN_REFUSALS:
        return f'Bearer realm="{REALM}", error="invalid_token"'
    return f'Bearer realm="{REALM}"'


View = TypeVar("View", bound=Callable[..., Any])


def bearer_required(view: View) -> View:
    """``login_required``, and a challenge on every 401 the view itself answers.

    RFC 6750 makes each 401 of a protected endpoint a Bearer challenge, whatever
    its cause: a refused token, and also a wrong password the view checks.
    """
    protected = login_required(view)

    @wraps(view)
    def challenged(*args: Any, **kwargs: Any) -> Any:
        try:
            return protected(*args, **kwargs)
        except Problem as problem:
            if problem.status == 401:
                problem.headers.setdefault(
                    "WWW-Authenticate", www_authenticate(problem.code)
                )
            raise

    return challenged  # type: ignore[return-value]


#: RFC 6750 section 3.1: the token is fine, its user lacks a role.
INSUFFICIENT_SCOPE_CHALLENGE = f'Bearer realm="{REALM}", error="insufficient_scope"'


def roles_guard(
    roles: Sequence[str], refuse: Callable[[], Any]
) -> Callable[[View], View]:
    """Guard a view behind ``login_required`` and a check of the caller's roles.

    ``refuse`` answers a caller who lacks one of ``roles``.
    """
    needed = frozenset(roles)

    def decorator(view: View) -> View:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if request.method not in EXEMPT_METHODS and not needed <= set(
                current_user.roles
            ):
                return refuse()
            return view(*args, **kwargs)

        return bearer_required(guarded)

    return decorator


def roles_required(*roles: str) -> Callable[[View], View]:
    """Guard a view: an accepted token whose user has every one of ``roles``.

    Without a token the answer is the usual 401; with one whose user lacks a role,
    403 ``insufficient_scope``.
    """
    return roles_guard(roles, _insufficient_scope)


def _insufficient_scope() -> NoReturn:
    raise Problem(
        "insufficient_scope",
        headers={"WWW-Authenticate": INSUFFICIENT_SCOPE_CHALLENGE},
    )
