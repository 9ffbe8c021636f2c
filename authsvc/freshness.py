"""The service's guard of endpoints that need a fresh authentication (RFC 9470).

Beside ``login_required``: :func:`fresh_login_required` lets through only a token
whose ``auth_time`` is recent enough (and, if asked, whose ``acr`` is high
enough), read from the caller's token claims, never from another query. The rule
itself is :mod:`authsvc.bearer`'s, shared with the resource-server companion.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

from flask import current_app

from . import clock
from .bearer import View, bearer_required, freshness_guard
from .errors import AuthFailed


def fresh_login_required(
    max_age: int | None = None, acr: str | None = None
) -> Callable[[View], View]:
    """Guard a view: an accepted token authenticated at most ``max_age`` seconds ago.

    ``max_age`` defaults to ``AUTHSVC_FRESH_AUTH_MAX_AGE``; with ``acr``
    (``"aal2"``) the authentication must also have passed a second factor. A stale
    token gets 401 ``insufficient_user_authentication`` with the RFC 9470
    challenge; no token, the usual 401.
    """
    guard = freshness_guard(
        max_age,
        acr,
        now=_now,
        default_max_age=_default_max_age,
        refuse=_refuse,
    )

    def decorator(view: View) -> View:
        return bearer_required(guard(view))

    return decorator


def _now() -> float:
    return clock.now().timestamp()


def _default_max_age() -> int:
    return int(current_app.config["FRESH_AUTH_MAX_AGE"])


def _refuse(problem: AuthFailed) -> NoReturn:
    raise problem
