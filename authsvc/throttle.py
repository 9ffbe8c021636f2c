"""Throttling: failed logins and introspection credentials, registrations, mail.

Each kind of attempt has its limit, from configuration, and its counters (see
:data:`RULES`); ``attempt(kind, *keys)`` applies them. Counters are fixed windows
shared by every worker and instance (:mod:`authsvc.throttle_store`): rows in the
service's own database by default, or Redis keys when
``AUTHSVC_RATELIMIT_STORAGE_URI`` names one. An attempt reserves its place first
(one atomic increment) and gives it back if it succeeds, so the limit is exact
however many requests race: the N+1th failure is refused, never the 2N+1th.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from types import TracebackType
from typing import Any

from flask import Flask, current_app
from limits import RateLimitItem, parse_many

from . import clock, throttle_store
from .db import get_db
from .errors import Code, Problem, RateLimited
from .throttle_store import Counters, DatabaseCounters, RedisCounters


class Kind(Enum):
    """What an attempt is: each kind has its limit and its counters (:data:`RULES`)."""

    LOGIN = "login"
    INTROSPECTION = "introspect"
    REGISTRATION = "register"
    # --- e-mail and account recovery ---
    #: Messages to one e-mail address, named by an HMAC of it.
    MAIL = "mail"
    #: Mail-sending requests from one client address.
    MAIL_CLIENT = "mail-client"


def _account(value: str | None) -> str:
    # Counter keys name no username: a hash keeps logs and Redis free of them.
    if value is None:
        raise TypeError("an account is always named")
    return f"account:{hashlib.sha256(value.encode()).hexdigest()[:32]}"


def _address(value: str | None) -> str:
    return f"address:{value}"


def _recipient(value: str | None) -> str:
    # Already an HMAC of the e-mail address: it names no one.
    return f"recipient:{value}"


@dataclass(frozen=True)
class Rule:
    """How a kind of attempt is counted."""

    #: The setting that holds its limit, like ``"10 per minute"``.
    setting: str
    #: What each key given to :meth:`Throttle.attempt` names, in order.
    counters: tuple[Callable[[str | None], str], ...]
    #: The error code of the failure that keeps its slots (any other outcome gives
    #: them back), or ``None`` when every attempt counts, whatever its outcome.
    kept_on: Code | None
    #: Further failures that keep their slots too.
    also_kept_on: frozenset[Code] = frozenset()


RULES: dict[Kind, Rule] = {
    # Failed logins per account and per address; past the limit even the right
    # password is refused, so a guess cannot tell.
    Kind.LOGIN: Rule(
        "LOGIN_RATE_LIMIT",
        (_account, _address),
        Code.INVALID_CREDENTIALS,
        # A wrong code of the second factor is a failed login of its account.
        also_kept_on=frozenset({Code.INVALID_MFA_CODE}),
    ),
    # Guessing the introspection credential is held back like guessing a password.
    Kind.INTROSPECTION: Rule("LOGIN_RATE_LIMIT", (_address,), Code.INVALID_TOKEN),
    Kind.REGISTRATION: Rule("REGISTRATION_RATE_LIMIT", (_address,), None),
    # --- e-mail and account recovery: every request counts, whatever its outcome.
    Kind.MAIL: Rule("MAIL_RATE_LIMIT", (_recipient,), None),
    Kind.MAIL_CLIENT: Rule("MAIL_CLIENT_RATE_LIMIT", (_address,), None),
}


class Attempt:
    """The slots one attempt holds, given back as its kind's rule says when it ends.

    Used as a context manager: a success gives the slots back, and so does any
    failure but the one its kind counts. Without a block the slots stay taken.
    """

    def __init__(
        self,
        counters: Counters,
        reserved: list[str],
        kept_on: Code | None,
        also_kept_on: frozenset[Code] = frozenset(),
    ) -> None:
        self._counters = counters
        self._reserved = reserved
        self._kept_on = kept_on
        self._also_kept_on = also_kept_on

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        exc: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        if self._kept_on is None:
            return
        if isinstance(exc, Problem) and (
            exc.code == self._kept_on or exc.code in self._also_kept_on
        ):
            return
        _release(self._counters, self._reserved)


class Throttle:
    """The service's limits, applied to named keys in shared counters."""

    def __init__(self, counters: Counters, config: Mapping[str, Any]) -> None:
        self.counters = counters
        self.limits = {
            kind: parse_many(config[rule.setting]) for kind, rule in RULES.items()
        }

    def attempt(self, kind: Kind, *keys: str | None) -> Attempt:
        """Reserve one slot of ``kind`` for each key (an account, an address...).

        Raises ``rate_limited`` when any is used up, even if the attempt would
        succeed; a refused attempt keeps no slot.
        """
        rule = RULES[kind]
        if len(keys) != len(rule.counters):
            raise TypeError(f"{kind} counts {len(rule.counters)} keys, not {len(keys)}")
        names = [
            f"{kind.value}:{counter(key)}"
            for counter, key in zip(rule.counters, keys, strict=True)
        ]
        reserved = self._reserve(names, self.limits[kind])
        return Attempt(self.counters, reserved, rule.kept_on, rule.also_kept_on)

    def _reserve(
        self, keys: Sequence[str], limits: Sequence[RateLimitItem]
    ) -> list[str]:
        # Every counter at once, giving everything back if one is used up: a
        # refused attempt then costs no counter anything, and attempts racing on
        # two counters cannot refuse each other for good.
        limited = [
            (f"{key}:{limit.amount}/{limit.get_expiry()}", limit)
            for key in keys
            for limit in limits
        ]
        counts = self.counters.incr([(name, lim.get_expiry()) for name, lim in limited])
        reserved = [name for name, _ in limited]
        for (_, limit), (count, remaining) in zip(limited, counts, strict=True):
            if count > limit.amount:
                _release(self.counters, reserved)
                window = limit.get_expiry()
                retry_after = min(window, max(1, math.ceil(remaining)))
                raise RateLimited(retry_after, "Too many attempts; try again later.")
        return reserved


def _release(counters: Counters, reserved: Sequence[str]) -> None:
    if reserved:
        counters.release(reserved)


def prune_counters() -> int:
    """Delete counter rows whose window has ended; return how many."""
    return throttle_store.prune(get_db(), clock.now())


def init_app(app: Flask) -> None:
    """Build the app's throttle on the configured counter storage."""
    uri = app.config["RATELIMIT_STORAGE_URI"]
    counters: Counters = (
        RedisCounters(uri) if uri else DatabaseCounters(app.extensions["authsvc.db"])
    )
    app.extensions["authsvc.throttle"] = Throttle(counters, app.config)


def get_throttle() -> Throttle:
    """Return the current app's throttle."""
    throttle: Throttle = current_app.extensions["authsvc.throttle"]
    return throttle
