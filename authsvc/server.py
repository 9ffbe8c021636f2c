"""The production server: gunicorn with the app factory loaded in each worker."""

from __future__ import annotations

import errno
import json
import re
import selectors
import socket
import time
from functools import partial
from http import HTTPStatus
from typing import Any

from flask import Flask, current_app, has_app_context
from gunicorn import glogging, util
from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import TConn, ThreadWorker
from prometheus_client import multiprocess

from . import create_app, mail_sender
from .edge import SECURITY_HEADERS
from .errors import HTTP_CODES, PROBLEM_MIMETYPE, Code, HTTPError, problem_body
from .logs import JsonFormatter

#: Seconds a connection has to send its request line, headers and a body of
#: declared length, before it is closed unanswered.
REQUEST_READ_TIMEOUT = 10
#: Threads of each worker. One, as with sync workers: more gave authsvc's hot path
#: nothing on two cores while speeding up the bare route the benchmark divides by.
THREADS = 1
#: A request head this long with no end is handed to the parser, which refuses it.
HEAD_LIMIT = 128 * 1024
#: Bodies up to the app's own limit (MAX_CONTENT_LENGTH) are read ahead whole.
BODY_LIMIT = 64 * 1024

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_CONTENT_LENGTH = re.compile(rb"\ncontent-length[ \t]*:[ \t]*(\d+)[ \t]*\r?\n", re.I)
# A body whose end the head does not give, or that the client sends only on a
# 100 Continue, is left for the parser to read.
_READ_BY_PARSER = re.compile(rb"\n(?:transfer-encoding|expect)[ \t]*:", re.I)


def write_problem(client: socket.socket, status: int, reason: str, _mesg: str) -> None:
    """Answer an unreadable request as problem+json, not gunicorn's HTML page."""
    if status == 400:
        code = Code.INVALID_REQUEST
    else:
        code = HTTP_CODES.get(
            status, Code.INTERNAL_ERROR if status >= 500 else Code.INVALID_REQUEST
        )
    problem = HTTPError(status, "The request is not valid HTTP.", code=code)
    body = json.dumps(problem_body(problem)).encode()
    head = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "Connection: close",
        f"Content-Type: {PROBLEM_MIMETYPE}",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in SECURITY_HEADERS.items()),
    ]
    util.write_nonblock(client, ("\r\n".join(head) + "\r\n\r\n").encode() + body)


def request_read(data: bytes | bytearray) -> bool:
    """Whether ``data`` holds enough of a request for a thread to serve it unblocked."""
    found = _HEAD_END.search(data)
    if found is None:
        return len(data) > HEAD_LIMIT
    head = bytes(data[: found.end()])
    lengths = _CONTENT_LENGTH.findall(head)
    if len(lengths) != 1 or _READ_BY_PARSER.search(head):
        return True
    length = int(lengths[0])
    return length > BODY_LIMIT or len(data) >= found.end() + length


class ProblemWorker(ThreadWorker):
    """gunicorn's threaded worker, reading each request before it takes a thread.

    gunicorn hands a new connection to a thread that then waits for the request:
    a few sockets that send nothing, or a byte a second, hold every thread. Here
    the worker's event loop reads the head (and a body of declared length) into a
    buffer, closes what is not complete after ``REQUEST_READ_TIMEOUT`` seconds,
    and only then gives the connection to a thread, whose parser starts from the
    buffer. Malformed HTTP is answered in the service's error shape.
    """

    def init_process(self) -> None:
        # This process serves only this worker's requests, and every thread of it
        # should answer in the service's shape: no per-call swap, which threads
        # would race.
        util.write_error = write_problem
        self.reading: dict[TConn, float] = {}
        super().init_process()

    def accept(self, *args: Any) -> None:
        """Take a new connection into the event loop, to read its request there."""
        # The listener comes last: older gunicorns pass its address before it.
        listener: socket.socket = args[-1]
        try:
            sock, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, sock, address, listener.getsockname())
        conn.read_ahead = bytearray()
        self.reading[conn] = time.monotonic() + REQUEST_READ_TIMEOUT
        self.poller.register(
            sock, selectors.EVENT_READ, partial(self.on_request_bytes, conn)
        )

    def on_request_bytes(self, conn: TConn, sock: socket.socket) -> None:
        """Buffer what the client sent; a complete request goes to a thread."""
        try:
            data = sock.recv(64 * 1024)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.drop(conn)
            return
        if not data:
            # What came before the end goes to the parser, which answers or logs it.
            if conn.read_ahead:
                self.hand_over(conn)
            else:
                self.drop(conn)
            return
        conn.read_ahead += data
        if request_read(conn.read_ahead):
            self.hand_over(conn)

    def hand_over(self, conn: TConn) -> None:
        """Give a connection whose request is read to a thread."""
        self.poller.unregister(conn.sock)
        del self.reading[conn]
        conn.init()
        conn.parser.unreader.unread(bytes(conn.read_ahead))
        conn.read_ahead = None
        self.enqueue_req(conn)

    def drop(self, conn: TConn) -> None:
        """Close a connection that never sent a whole request."""
        self.poller.unregister(conn.sock)
        del self.reading[conn]
        self.nr_conns -= 1
        conn.close()

    def murder_keepalived(self, *args: Any, **kwargs: Any) -> None:
        """gunicorn's periodic sweep; also closes requests not read in time."""
        super().murder_keepalived(*args, **kwargs)
        now = time.monotonic()
        # Deadlines are in the order connections came: the first not due ends it.
        for conn, deadline in list(self.reading.items()):
            if deadline > now and self.alive:
                break
            self.drop(conn)


class JsonLogger(glogging.Logger):
    """gunicorn's own log lines as JSON objects, like the service's."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            for handler in logger.handlers:
                handler.setFormatter(JsonFormatter())


class Server(BaseApplication):
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
        # Each worker builds its own app, so no database connection crosses a fork;
        # and sends queued mail from a thread of its own.
        app = create_app()
        mail_sender.start_in_process(app)
        return app


def worker_exit(_arbiter: Any, _worker: Any) -> None:
    """gunicorn hook, in a worker that is ending: let its mail sender finish."""
    mail_sender.stop_in_process()


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
        "threads": THREADS,
        "timeout": 30,
        "graceful_timeout": 30,
        # One request per connection, as before: a kept-alive connection would go
        # back to a thread that waits for its next request.
        "keepalive": 0,
        # Let header fields up to 64 KiB (an oversized bearer token) reach the app,
        # which refuses them as JSON, instead of gunicorn's own plain-text 400.
        "limit_request_field_size": 64 * 1024 + 1024,
        "errorlog": "-",
        "loglevel": "info",
        # Several instances on one host must not fight over one control socket.
        "control_socket_disable": True,
        "child_exit": child_exit,
        "worker_exit": worker_exit,
    }
    if has_app_context() and current_app.config["LOG_FORMAT"] == "json":
        options["logger_class"] = JsonLogger
    # The workers' metrics folder was named by `authsvc serve` before it built its
    # app (and so before prometheus_client chose how to keep values).
    Server(options).run()
