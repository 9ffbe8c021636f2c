"""The audit trail: one structured record per security event, never a secret.

Records go to the ``authsvc.audit`` logger with the event, the user, the session
and the client address; the log format (text or JSON) decides how they look.
Events with a metric of their own (logins, refreshes, refresh reuse) are counted
here too, so the metrics and the trail never disagree.
"""

from __future__ import annotations

import logging
import uuid

from flask import has_request_context, request

from . import metrics

log = logging.getLogger("authsvc.audit")


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
    metrics.count_event(event)
