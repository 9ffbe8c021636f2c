"""Bearer tokens over HTTP (RFC 6750): the header, the challenges, the guards.

Shared by the service and by the companion other services install
(:mod:`authsvc.resource`), so it knows nothing of how a token is verified: it
reads ``Authorization: Bearer``, installs a Flask-Login manager that looks only
there (never at a cookie), and answers refusals with the RFC 6750 challenges.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any, NoReturn, TypeVar, cast

from flask import Flask, Request, Response, request
from flask.sessions import (
    SecureCookieSession,
    SecureCookieSessionInterface,
    SessionMixin,
)
from flask_login import LoginManager, current_user, login_required
from flask_login.config import EXEMPT_METHODS

from .errors import AuthFailed, Code, Problem

REALM = "authsvc"
#: RFC 6750 section 2.1 ``b64token``.
B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
#: RFC 9068 section 2.1: an access token's ``typ``, in either spelling.
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})


class BearerLoginManager(LoginManager):
    """A ``LoginManager`` that knows only the ``request_loader``.

    Flask-Login would first look for a session user and a remember-me cookie, and
    a stray ``remember_token`` cookie would then hide the bearer token; here
    credentials come from the request's Authorization header alone. It overrides
    two private methods, so ``flask-login`` is pinned below its next version and
    ``tests/test_library_internals.py`` checks they are still there.
    """

    def _load_user(self) -> None:
        user = self._request_callback(request) if self._request_callback else None
        self._update_request_context_with_user(user)

    def _update_remember_cookie(self, response: Response) -> Response:
        # There is no remember cookie to set or clear, on any response.
        return response


class NoCookieSessionInterface(SecureCookieSessionInterface):
    """A session that is always empty and never saved, so no response sets a cookie."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        return self.make_null_session(app)

    def save_session(self, app: Flask, session: SessionMixin, response: Any) -> None:
        return None


def install(app: Flask, manager: BearerLoginManager) -> None:
    """Install ``manager`` and the cookie-less session on ``app``."""
    manager.init_app(app)
    manager.session_protection = None
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
            raise Problem(Code.INVALID_REQUEST, "Send one Authorization header.")
        return None
    scheme, _, credentials = values[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = credentials.strip()
    if not token or " " in token:
        raise Problem(Code.INVALID_REQUEST)
    return token


def _is_bearer(value: str) -> bool:
    return value.strip().partition(" ")[0].lower() == "bearer"


#: Codes of a presented token that was not accepted (RFC 6750 ``invalid_token``).
TOKEN_REFUSALS = frozenset({Code.INVALID_TOKEN, Code.TOKEN_EXPIRED, Code.TOKEN_REVOKED})
#: RFC 6750 section 3.1: the token is fine, its user lacks a role.
INSUFFICIENT_SCOPE_CHALLENGE = f'Bearer realm="{REALM}", error="insufficient_scope"'


def www_authenticate(code: str) -> str:
    """The ``WWW-Authenticate`` challenge of a protected endpoint's 401 (or 400).

    ``error`` names what was wrong with the token; a 401 whose token was fine
    (no token at all, a wrong current password) carries the bare challenge.
    """
    if code == Code.INVALID_REQUEST:
        return f'Bearer realm="{REALM}", error="invalid_request"'
    if code in TOKEN_REFUSALS:
        return f'Bearer realm="{REALM}", error="invalid_token"'
    return f'Bearer realm="{REALM}"'


def refused(code: Code, detail: str | None = None) -> AuthFailed:
    """The problem, with its challenge, of a request whose credential was refused."""
    return AuthFailed(code, www_authenticate(code), detail)


def check_static_bearer(secret: str, name: str) -> None:
    """Let the request through only with ``Authorization: Bearer <secret>``.

    For the endpoints guarded by one configured credential rather than an access
    token (``/metrics``, ``/introspect``); ``name`` says which in the refusal.
    """
    presented = bearer_token(request)
    if presented is None:
        raise refused(Code.AUTHENTICATION_REQUIRED)
    if not hmac.compare_digest(presented.encode(), secret.encode()):
        raise refused(Code.INVALID_TOKEN, f"The {name} credential is not valid.")


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
        except AuthFailed:
            raise  # it has its challenge already
        except Problem as problem:
            if problem.status != 401:
                raise
            raise AuthFailed(
                Code(problem.code),
                www_authenticate(problem.code),
                problem.detail,
                errors=problem.errors,
                members=problem.members,
            ) from problem

    return cast(View, challenged)


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

        return bearer_required(cast(View, guarded))

    return decorator


def roles_required(*roles: str) -> Callable[[View], View]:
    """Guard a view: an accepted token whose user has every one of ``roles``.

    Without a token the answer is the usual 401; with one whose user lacks a role,
    403 ``insufficient_scope``.
    """
    return roles_guard(roles, insufficient_scope)


def insufficient_scope() -> NoReturn:
    """Refuse a caller whose token is fine but whose user lacks a role (403)."""
    raise AuthFailed(Code.INSUFFICIENT_SCOPE, INSUFFICIENT_SCOPE_CHALLENGE)


# --- fresh authentication (RFC 9470) ----------------------------------------

#: Authentication levels (``acr``) from weakest to strongest.
ACR_LEVELS = ("aal1", "aal2")
#: Seconds a token's authentication stays fresh when nothing else is said.
DEFAULT_FRESH_AUTH_MAX_AGE = 300


def step_up_challenge(max_age: int, acr_values: str | None = None) -> str:
    """RFC 9470's ``WWW-Authenticate``: authenticate within ``max_age``, at a level."""
    challenge = (
        f'Bearer realm="{REALM}", error="insufficient_user_authentication", '
        f'max_age="{max_age}"'
    )
    if acr_values is not None:
        challenge += f', acr_values="{acr_values}"'
    return challenge


def insufficient_user_authentication(
    max_age: int, acr_values: str | None = None, detail: str | None = None
) -> AuthFailed:
    """The RFC 9470 problem, with its challenge and the members ``max_age`` (and
    ``acr_values`` when a second factor is needed)."""
    members: dict[str, object] = {"max_age": max_age}
    if acr_values is not None:
        members["acr_values"] = acr_values
    return AuthFailed(
        Code.INSUFFICIENT_USER_AUTHENTICATION,
        step_up_challenge(max_age, acr_values),
        detail,
        members=members,
    )


def acr_satisfies(acr: str | None, needed: str) -> bool:
    """Whether an authentication at ``acr`` is at least at the level ``needed``."""
    if acr not in ACR_LEVELS or needed not in ACR_LEVELS:
        return acr == needed
    return ACR_LEVELS.index(acr) >= ACR_LEVELS.index(needed)


def step_up_needed(
    auth_time: int | None,
    acr: str | None,
    *,
    now: float,
    max_age: int,
    needed_acr: str | None,
) -> AuthFailed | None:
    """Why a caller authenticated at ``auth_time`` and ``acr`` must step up, or None.

    A token without ``auth_time`` is never fresh. The challenge asks for a second
    factor when the endpoint needs one, or when the caller already had one (their
    reauthentication will need a code).
    """
    fresh = auth_time is not None and now - auth_time <= max_age
    strong = needed_acr is None or acr_satisfies(acr, needed_acr)
    if fresh and strong:
        return None
    wanted = needed_acr
    if acr_satisfies(acr, "aal2") and (wanted is None or acr_satisfies(acr, wanted)):
        wanted = "aal2"
    return insufficient_user_authentication(max_age, wanted)


def freshness_guard(
    max_age: int | None,
    acr: str | None,
    *,
    now: Callable[[], float],
    default_max_age: Callable[[], int],
    refuse: Callable[[AuthFailed], Any],
) -> Callable[[View], View]:
    """Let a view run only for a token whose authentication is fresh enough.

    ``now`` and ``default_max_age`` come from whoever installs the guard (the
    service's clock and settings, or the companion's); ``refuse`` answers with the
    challenge. The view must already be behind ``login_required``.
    """

    def decorator(view: View) -> View:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if request.method not in EXEMPT_METHODS:
                limit = default_max_age() if max_age is None else max_age
                refusal = step_up_needed(
                    getattr(current_user, "auth_time", None),
                    getattr(current_user, "acr", None),
                    now=now(),
                    max_age=limit,
                    needed_acr=acr,
                )
                if refusal is not None:
                    return refuse(refusal)
            return view(*args, **kwargs)

        return cast(View, guarded)

    return decorator
