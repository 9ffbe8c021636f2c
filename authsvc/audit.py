"""The audit trail: one structured record per security event, never a secret.

Records go to the ``authsvc.audit`` logger with the event, the user, the session
and the client address; the log format (text or JSON) decides how they look.
Other parts (the metrics) :func:`subscribe` to the events, so the trail and what
they count never disagree, and this module needs none of them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping

from flask import has_request_context, request

log = logging.getLogger("authsvc.audit")

#: Called with each event's name and fields, after its record is written.
Subscriber = Callable[[str, Mapping[str, object]], None]
_subscribers: list[Subscriber] = []


def subscribe(subscriber: Subscriber) -> None:
    """Have ``subscriber`` called with every event recorded from now on, once."""
    # Each app built subscribes again: one call per event all the same.
    if subscriber not in _subscribers:
        _subscribers.append(subscriber)


def record(
    event: str,
    *,
    user_id: uuid.UUID | str | None = None,
    session_id: uuid.UUID | str | None = None,
    **details: object,
) -> None:
    """Write one audit record for ``event``."""
    fields: dict[str, object] = {
        "event": event,
        "user_id": str(user_id) if user_id is not None else None,
        "session_id": str(session_id) if session_id is not None else None,
        "ip_address": request.remote_addr if has_request_context() else None,
        **details,
    }
    text = " ".join(f"{name}={value}" for name, value in fields.items() if value)
    log.info("audit %s", text, extra={"audit": fields})
    for subscriber in _subscribers:
        subscriber(event, fields)
