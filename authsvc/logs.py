"""Logging: plain text for people, or one JSON object per line for collectors.

Every request gets an id: the caller's ``X-Request-ID`` when it is a sane token,
a fresh one otherwise. It is answered in ``X-Request-ID`` and written into each
JSON log line of the request, so one request can be followed through the logs.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from flask import Flask, has_request_context, request

REQUEST_ID_HEADER = "X-Request-ID"
#: Where the request's id waits in the WSGI environ.
ENVIRON_KEY = "authsvc.request_id"
#: An incoming id is kept only if it is this short and this plain: anything else
#: (a newline, a quote, a megabyte) could forge or break log lines downstream.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def current_request_id() -> str | None:
    """The id of the request being handled, or ``None`` outside a request."""
    if not has_request_context():
        return None
    return request.environ.get(ENVIRON_KEY)


class RequestIds:
    """WSGI middleware: the caller's ``X-Request-ID`` if it is sane, else a new one.

    Outside Flask, so the id exists before anything of the app runs and every
    answer carries it, errors included.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        incoming = environ.get("HTTP_X_REQUEST_ID", "")
        request_id = (
            incoming if SANE_REQUEST_ID.fullmatch(incoming) else os.urandom(16).hex()
        )
        environ[ENVIRON_KEY] = request_id

        def start(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            headers.append((REQUEST_ID_HEADER, request_id))
            return start_response(status, headers, *exc_info)

        return self.app(environ, start)


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
    # Flask declares wsgi_app a method; replacing it is its documented way to wrap.
    app.wsgi_app = RequestIds(app.wsgi_app)  # type: ignore[method-assign]
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
