"""The service's Flask-Login door: bearer token in, ``current_user`` out.

The ``request_loader`` reads ``Authorization: Bearer``, verifies the token and
loads its user and session. It returns the caller, or ``None`` after recording
why a presented token was refused; the ``unauthorized_handler`` turns that
record into the RFC 6750 answer. No Flask session cookie is ever read or written.
"""

from __future__ import annotations

from flask import Flask, Request, g

from . import bearer, clock
from .bearer import B64TOKEN, BearerLoginManager, bearer_token, refused
from .errors import Code, Problem
from .keys import get_keys
from .principal import Principal, load_principal
from .tokens import TokenError, TokenExpired

login_manager = BearerLoginManager()


def init_app(app: Flask) -> None:
    """Install the login manager and the cookie-less session on ``app``."""
    bearer.install(app, login_manager)


@login_manager.request_loader
def load_user_from_request(request: Request) -> Principal | None:
    """Return the caller the bearer token names, or ``None`` noting the reason."""
    try:
        token = bearer_token(request)
        if token is None:
            return None
        if not B64TOKEN.fullmatch(token):
            raise Problem(Code.INVALID_TOKEN)
        claims = get_keys().verify(token, now=int(clock.now().timestamp()))
        return load_principal(claims)
    except TokenExpired:
        g.auth_problem = Code.TOKEN_EXPIRED
    except TokenError:
        g.auth_problem = Code.INVALID_TOKEN
    except Problem as problem:
        g.auth_problem = problem.code
    return None


@login_manager.unauthorized_handler
def unauthorized() -> None:
    """Raise the RFC 6750 problem for a request without an accepted token."""
    raise refused(g.get("auth_problem", Code.AUTHENTICATION_REQUIRED))
