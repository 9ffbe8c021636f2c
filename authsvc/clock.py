"""The single clock of the service, so tests can move time instead of sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from flask import current_app

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """Return the current UTC time, timezone-aware."""
    return datetime.now(UTC)


def now() -> datetime:
    """Return the app's notion of now: ``config["CLOCK"]`` when a test set one."""
    clock: Clock = current_app.config.get("CLOCK") or system_clock
    return clock()


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``: how every answer and command writes a time."""
    return moment.isoformat().replace("+00:00", "Z")


def monotonic() -> float:
    """The app's monotonic seconds: ``config["MONOTONIC"]`` when a test set one."""
    tick: Callable[[], float] = current_app.config.get("MONOTONIC") or time.monotonic
    return tick()
