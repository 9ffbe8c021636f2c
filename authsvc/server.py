"""The production server: gunicorn with the app factory loaded in each worker."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from http import HTTPStatus
from typing import Any

from flask import Flask, current_app, has_app_context
from gunicorn import glogging, util
from gunicorn.app.base import BaseApplication
from gunicorn.workers.sync import SyncWorker
from prometheus_client import multiprocess

from .edge import SECURITY_HEADERS
from .errors import HTTP_CODES, PROBLEM_MIMETYPE, Problem, problem_body
from .logs import JsonFormatter
from .metrics import MULTIPROCESS_ENV


def write_problem(client: socket.socket, status: int, reason: str, _mesg: str) -> None:
    """Answer an unreadable request as problem+json, not gunicorn's HTML page."""
    if status == 400:
        code = "invalid_request"
    else:
        code = HTTP_CODES.get(status, "internal_error" if status >= 500 else "")
    problem = Problem(
        code or "invalid_request", "The request is not valid HTTP.", status=status
    )
    body = json.dumps(problem_body(problem)).encode()
    head = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "Connection: close",
        f"Content-Type: {PROBLEM_MIMETYPE}",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in SECURITY_HEADERS.items()),
    ]
    util.write_nonblock(client, ("\r\n".join(head) + "\r\n\r\n").encode() + body)


class ProblemWorker(SyncWorker):  # type: ignore[misc]
    """gunicorn's sync worker, answering malformed HTTP in the service's error shape."""

    def handle_error(self, req, client, addr, exc):  # type: ignore[no-untyped-def]
        # A sync worker handles one request at a time, so swapping gunicorn's error
        # writer for the length of this call affects no other request.
        original, util.write_error = util.write_error, write_problem
        try:
            super().handle_error(req, client, addr, exc)
        finally:
            util.write_error = original


class JsonLogger(glogging.Logger):  # type: ignore[misc]
    """gunicorn's own log lines as JSON objects, like the service's."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            for handler in logger.handlers:
                handler.setFormatter(JsonFormatter())


class Server(BaseApplication):  # type: ignore[misc]
    """gunicorn, configured in code rather than from the command line."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            # Settings newer than the oldest supported gunicorn are skipped there.
            if key in self.cfg.settings:
                self.cfg.set(key, value)

    def load(self) -> Flask:
        # Each worker builds its own app, so no database connection crosses a fork.
        from . import create_app

        return create_app()


def child_exit(_arbiter: Any, worker: Any) -> None:
    """gunicorn hook: a worker is gone; its counts stay, its live gauges go."""
    multiprocess.mark_process_dead(worker.pid)


def run(*, host: str, port: int, workers: int) -> None:
    """Serve until stopped; SIGTERM lets in-flight requests finish.

    Called by ``authsvc serve`` inside its app context, whose log format gunicorn's
    own lines follow.
    """
    options: dict[str, Any] = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "authsvc.server.ProblemWorker",
        "timeout": 30,
        "graceful_timeout": 30,
        "keepalive": 5,
        # Let header fields up to 64 KiB (an oversized bearer token) reach the app,
        # which refuses them as JSON, instead of gunicorn's own plain-text 400.
        "limit_request_field_size": 64 * 1024 + 1024,
        "errorlog": "-",
        "loglevel": "info",
        # Several instances on one host must not fight over one control socket.
        "control_socket_disable": True,
        "child_exit": child_exit,
    }
    if has_app_context() and current_app.config["LOG_FORMAT"] == "json":
        options["logger_class"] = JsonLogger
    # The workers' metric files: fresh for each run, as prometheus_client asks, so
    # counts start at zero; set before any worker starts, removed at the end.
    folder = tempfile.mkdtemp(prefix="authsvc-metrics-")
    os.environ[MULTIPROCESS_ENV] = folder
    master = os.getpid()
    try:
        Server(options).run()
    finally:
        # Workers leave through here too (gunicorn ends them with SystemExit).
        if os.getpid() == master:
            shutil.rmtree(folder, ignore_errors=True)
