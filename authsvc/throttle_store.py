"""Where throttling counters live: rows of the service's database, or Redis keys.

Fixed windows shared by every worker and instance, changed by one atomic statement
or script per attempt, so the throttle's limits are exact however many requests
race. If Redis stops answering, a worker counts in its own memory meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Protocol, cast

import redis
from sqlalchemy import Insert, String, Table, bindparam, case, delete, update
from sqlalchemy.dialects import postgresql, sqlite

from . import clock
from .db import Database, UTCDateTime
from .driver import DriverStatement
from .models import ThrottleCounter

#: The counters' table; the ORM types ``__table__`` as any FromClause.
COUNTERS = cast(Table, ThrottleCounter.__table__)

# The throttle's lines keep the logger name operators filter them by.
log = logging.getLogger("authsvc.throttle")

#: The counters' table: a declarative class's is a Table, though typed FromClause.
COUNTERS = cast(Table, ThrottleCounter.__table__)

#: Seconds to wait for Redis before falling back to per-process counting.
REDIS_TIMEOUT = 0.5
#: Prefix of every counter key in Redis: the ``limits`` package's, which kept them
#: before, so counters carry over an upgrade.
REDIS_KEY_PREFIX = "LIMITS"
#: Count one more in each of KEYS, starting its window (ARGV, seconds) if it is new;
#: each new count and the seconds left in its window, in order.
INCR_SCRIPT = """
local counted = {}
for i, key in ipairs(KEYS) do
  local count = redis.call('incrby', key, 1)
  if count == 1 then redis.call('expire', key, ARGV[i]) end
  counted[2 * i - 1] = count
  counted[2 * i] = redis.call('ttl', key)
end
return counted
"""
#: Count one less in each of KEYS, only if its window still exists and is above zero.
RELEASE_SCRIPT = """
for _, key in ipairs(KEYS) do
  local count = tonumber(redis.call('get', key) or '0')
  if count > 0 then redis.call('decr', key) end
end
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
        table = COUNTERS
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
    table = COUNTERS
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


class MemoryCounters:
    """Counters in this process's memory: Redis's stand-in while it does not answer."""

    def __init__(self) -> None:
        #: Each key's count and the end of its window (seconds since the epoch).
        self._windows: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()
        self._swept_at = 0.0

    def incr(self, windows: Sequence[Window]) -> list[tuple[int, float]]:
        now = time.time()
        counted = []
        with self._lock:
            self._sweep(now)
            for key, expiry in windows:
                count, ends = self._windows.get(key, (0, now + expiry))
                if ends <= now:
                    count, ends = 0, now + expiry
                self._windows[key] = (count + 1, ends)
                counted.append((count + 1, ends - now))
        return counted

    def release(self, keys: Sequence[str]) -> None:
        now = time.time()
        with self._lock:
            for key in keys:
                count, ends = self._windows.get(key, (0, now))
                if ends > now and count > 0:
                    self._windows[key] = (count - 1, ends)

    def _sweep(self, now: float) -> None:
        # Windows that ended are dropped now and then, not kept for ever.
        if now - self._swept_at < 1:
            return
        self._swept_at = now
        for key in [key for key, (_, ends) in self._windows.items() if ends <= now]:
            del self._windows[key]


class RedisCounters:
    """Counters in Redis; if Redis fails, count in this process and say so loudly.

    Falling back to per-process memory keeps logins throttled (per worker) rather
    than either refusing every login or letting them through unlimited. Each change
    of an attempt's counters is one script, so one round trip.
    """

    def __init__(self, uri: str) -> None:
        self.redis = redis.Redis.from_url(
            uri, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
        )
        self._incr = self.redis.register_script(INCR_SCRIPT)
        self._release = self.redis.register_script(RELEASE_SCRIPT)
        self.memory = MemoryCounters()

    def incr(self, windows: Sequence[Window]) -> list[tuple[int, float]]:
        keys = [_redis_key(key) for key, _ in windows]
        try:
            counted = self._incr(keys=keys, args=[expiry for _, expiry in windows])
        except Exception as exc:
            self._fell_back(exc)
            return self.memory.incr(windows)
        pairs = zip(counted[::2], counted[1::2], strict=True)
        return [(int(count), float(max(int(ttl), 0))) for count, ttl in pairs]

    def release(self, keys: Sequence[str]) -> None:
        try:
            self._release(keys=[_redis_key(key) for key in keys])
        except Exception as exc:
            self._fell_back(exc)
            self.memory.release(keys)

    @staticmethod
    def _fell_back(exc: Exception) -> None:
        # Any Redis failure (refused, timed out, reset) means counting here instead.
        log.error(
            "throttling storage unreachable (%s): counting in this process",
            type(exc).__name__,
        )


def _redis_key(key: str) -> str:
    return f"{REDIS_KEY_PREFIX}:{key}"


_PRUNE = delete(COUNTERS).where(
    COUNTERS.c.expires_at <= bindparam("now", type_=UTCDateTime)
)


def prune(database: Database, now: datetime) -> int:
    """Delete counter rows whose window ended by ``now``; return how many."""
    return database.statement(_PRUNE).run({"now": now})
