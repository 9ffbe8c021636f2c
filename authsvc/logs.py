"""Logging: plain text for people, or one JSON object per line for collectors.

Every request gets an id: the caller's ``X-Request-ID`` when it is a sane token,
a fresh one otherwise. It is answered in ``X-Request-ID`` and written into each
JSON log line of the request, so one request can be followed through the logs.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from datetime import UTC, datetime

from flask import Flask, Response, g, has_request_context, request

REQUEST_ID_HEADER = "X-Request-ID"
#: An incoming id is kept only if it is this short and this plain: anything else
#: (a newline, a quote, a megabyte) could forge or break log lines downstream.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def current_request_id() -> str | None:
    """The id of the request being handled, or ``None`` outside a request."""
    if not has_request_context():
        return None
    return g.get("request_id")


def assign_request_id() -> None:
    """Take the caller's ``X-Request-ID`` if it is sane, else make one up."""
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = incoming if SANE_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex


def add_request_id_header(response: Response) -> Response:
    """Answer the request's id, errors included."""
    if "request_id" not in g:  # the request failed before its first hook ran
        assign_request_id()
    response.headers[REQUEST_ID_HEADER] = g.request_id
    return response


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with UTC time, the request id and any trace."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        # Records are formatted as they are emitted, so still inside the request.
        request_id = getattr(record, "request_id", None) or current_request_id()
        if request_id is not None:
            entry["request_id"] = request_id
        entry.update(getattr(record, "audit", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def init_app(app: Flask) -> None:
    """Give each request an id, and log to stderr in the configured format."""
    # First of the hooks, so every later hook and every error already has the id.
    app.before_request(assign_request_id)
    app.after_request(add_request_id_header)
    logger = logging.getLogger("authsvc")
    if logger.handlers:
        return
    handler = logging.StreamHandler()
    if app.config["LOG_FORMAT"] == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
