"""Throttling: failed logins and introspection credentials, and registrations.

Counters are fixed windows shared by every worker and instance: rows in the
service's own database by default, or Redis keys when
``AUTHSVC_RATELIMIT_STORAGE_URI`` names one. An attempt reserves its place first
(one atomic increment) and gives it back if it succeeds, so the limit is exact
however many requests race: the N+1th failure is refused, never the 2N+1th.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Protocol

from flask import Flask, current_app
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, storage_from_string
from sqlalchemy import Insert, String, bindparam, case, delete, update
from sqlalchemy.dialects import postgresql, sqlite

from . import clock
from .db import Database, DriverStatement, UTCDateTime, get_db
from .errors import Problem, RateLimited
from .models import ThrottleCounter

log = logging.getLogger(__name__)

#: Seconds to wait for Redis before falling back to per-process counting.
REDIS_TIMEOUT = 0.5
#: Count one less only if the window still exists and is above zero.
RELEASE_SCRIPT = """
local count = tonumber(redis.call('get', KEYS[1]) or '0')
if count > 0 then return redis.call('decr', KEYS[1]) end
return 0
"""


#: A counter's key and the length of its window, in seconds.
Window = tuple[str, int]


class Counters(Protocol):
    """Where fixed-window counters live."""

    def incr(self, windows: Sequence[Window]) -> list[tuple[int, float]]:
        """Count one more in each window.

        Returns each new count with the seconds left in its window, in order.
        """
        ...

    def release(self, keys: Sequence[str]) -> None:
        """Count each one less, but only within the window the count was made in."""
        ...


class DatabaseCounters:
    """Counters as rows of the service's database, one statement per change.

    Every counter of an attempt goes up in one upsert, which locks them in the
    order of their keys, so attempts racing on shared counters never deadlock.
    The statements are built once: on the login path their construction would
    otherwise cost more than running them.
    """

    def __init__(self, database: Database) -> None:
        self.database = database
        self.engine = database.counters
        table = ThrottleCounter.__table__
        self._release = database.statement(
            update(table)
            .where(
                table.c.key == bindparam("key", type_=String),
                table.c.expires_at > bindparam("now", type_=UTCDateTime),
                table.c.count > 0,
            )
            .values(count=table.c.count - 1),
            engine=self.engine,
        )

    def incr(self, windows: Sequence[Window]) -> list[tuple[int, float]]:
        now = clock.now()
        ordered = sorted(windows)
        params: dict[str, Any] = {"now": now}
        for index, (key, expiry) in enumerate(ordered):
            params[f"key{index}"] = key
            params[f"expires_at{index}"] = now + timedelta(seconds=expiry)
        # Counting twice, if a connection is lost just as the upsert was made,
        # errs on the safe side; failing logins after a restart would not.
        rows = self._upsert(len(ordered)).all(params, retry=True)
        counted = {row.key: row for row in rows}
        return [
            (counted[key].count, _seconds_until(counted[key].expires_at, now))
            for key, _ in windows
        ]

    def release(self, keys: Sequence[str]) -> None:
        now = clock.now()
        self._release.run_many([{"key": key, "now": now} for key in keys])

    def _upsert(self, rows: int) -> DriverStatement:
        """The upsert of ``rows`` counters, compiled once for each number of them."""
        statement = _upsert_statement(self.engine.dialect.name, rows)
        return self.database.statement(statement, engine=self.engine)


@cache
def _upsert_statement(dialect: str, rows: int) -> Insert:
    # Built once per dialect and number of rows, so the database's compiled
    # statements find it again.
    table = ThrottleCounter.__table__
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    fresh = insert(table).values(
        [
            {
                "key": bindparam(f"key{index}", type_=String),
                "count": 1,
                "expires_at": bindparam(f"expires_at{index}", type_=UTCDateTime),
            }
            for index in range(rows)
        ]
    )
    expired = table.c.expires_at <= bindparam("now", type_=UTCDateTime)
    return fresh.on_conflict_do_update(
        index_elements=[table.c.key],
        set_={
            "count": case((expired, fresh.excluded.count), else_=table.c.count + 1),
            "expires_at": case(
                (expired, fresh.excluded.expires_at), else_=table.c.expires_at
            ),
        },
    ).returning(table.c.key, table.c.count, table.c.expires_at)


def _seconds_until(moment: datetime, now: datetime) -> float:
    return max(0.0, (moment - now).total_seconds())


class RedisCounters:
    """Counters in Redis; if Redis fails, count in this process and say so loudly.

    Falling back to per-process memory keeps logins throttled (per worker) rather
    than either refusing every login or letting them through unlimited.
    """

    def __init__(self, uri: str) -> None:
        self.redis = storage_from_string(
            uri, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
        )
        self.memory = MemoryStorage()

    def incr(self, windows: Sequence[Window]) -> list[tuple[int, float]]:
        return [self._incr(key, expiry) for key, expiry in windows]

    def _incr(self, key: str, expiry: int) -> tuple[int, float]:
        try:
            count = self.redis.incr(key, expiry)
            return count, self.redis.get_expiry(key) - clock.system_clock().timestamp()
        except Exception as exc:
            self._fell_back(exc)
        count = self.memory.incr(key, expiry)
        return count, self.memory.get_expiry(key) - clock.system_clock().timestamp()

    def release(self, keys: Sequence[str]) -> None:
        for key in keys:
            try:
                self.redis.storage.eval(RELEASE_SCRIPT, 1, self.redis.prefixed_key(key))
                continue
            except Exception as exc:
                self._fell_back(exc)
            self.memory.decr(key)

    @staticmethod
    def _fell_back(exc: Exception) -> None:
        # Any Redis failure (refused, timed out, reset) means counting here instead.
        log.error(
            "throttling storage unreachable (%s): counting in this process",
            type(exc).__name__,
        )


class Throttle:
    """The service's limits, applied to named keys in shared counters."""

    def __init__(self, counters: Counters, *, login: str, registration: str) -> None:
        self.counters = counters
        self.login_limits = parse_many(login)
        self.registration_limits = parse_many(registration)

    @contextmanager
    def login_attempt(self, account: str, address: str | None) -> Iterator[None]:
        """Reserve one failed-login slot for the account and the address.

        Raises ``rate_limited`` when either is used up, even if the password would
        be right; a refused attempt keeps no slot. A success gives the slots back;
        only ``invalid_credentials`` keeps them.
        """
        keys = [f"login:account:{_digest(account)}", f"login:address:{address}"]
        reserved = self._reserve(keys, self.login_limits)
        try:
            yield
        except Problem as problem:
            if problem.code != "invalid_credentials":
                self._release(reserved)
            raise
        except BaseException:
            self._release(reserved)
            raise
        self._release(reserved)

    @contextmanager
    def introspection_attempt(self, address: str | None) -> Iterator[None]:
        """Reserve one failed-introspection slot for the address, under the login limit.

        Guessing the introspection credential is held back like guessing a
        password: only a wrong credential (``invalid_token``) keeps its slot, and
        past the limit even the right one is refused, so a guess cannot tell.
        """
        reserved = self._reserve([f"introspect:address:{address}"], self.login_limits)
        try:
            yield
        except Problem as problem:
            if problem.code != "invalid_token":
                self._release(reserved)
            raise
        except BaseException:
            self._release(reserved)
            raise
        self._release(reserved)

    def registration_attempt(self, address: str | None) -> None:
        """Count a registration from ``address``; past the limit, ``rate_limited``."""
        self._reserve([f"register:address:{address}"], self.registration_limits)

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
                self._release(reserved)
                window = limit.get_expiry()
                retry_after = min(window, max(1, math.ceil(remaining)))
                raise RateLimited(retry_after, "Too many attempts; try again later.")
        return reserved

    def _release(self, reserved: Sequence[str]) -> None:
        if reserved:
            self.counters.release(reserved)


def _digest(account: str) -> str:
    # Counter keys name no username: a hash keeps logs and Redis free of them.
    return hashlib.sha256(account.encode()).hexdigest()[:32]


def prune_counters() -> int:
    """Delete counter rows whose window has ended; return how many."""
    with get_db().engine.begin() as connection:
        result = connection.execute(
            delete(ThrottleCounter).where(ThrottleCounter.expires_at <= clock.now())
        )
    return result.rowcount


def init_app(app: Flask) -> None:
    """Build the app's throttle on the configured counter storage."""
    uri = app.config["RATELIMIT_STORAGE_URI"]
    counters: Counters = (
        RedisCounters(uri) if uri else DatabaseCounters(app.extensions["authsvc.db"])
    )
    app.extensions["authsvc.throttle"] = Throttle(
        counters,
        login=app.config["LOGIN_RATE_LIMIT"],
        registration=app.config["REGISTRATION_RATE_LIMIT"],
    )


def get_throttle() -> Throttle:
    """Return the current app's throttle."""
    return current_app.extensions["authsvc.throttle"]
