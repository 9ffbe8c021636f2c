"""Real servers for the tests that need one: a command on a free loopback port.

:class:`LiveServer` starts a command (``authsvc serve``, gunicorn, ``flask run``)
with a clean environment, waits until it answers, talks HTTP to it and stops it;
starting, watching and stopping the process is ``bench.process``'s, shared with
the benchmark.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from bench.process import ServerProcess, free_port

#: Where the virtualenv's scripts are: ``authsvc``, ``gunicorn``, ``flask``.
BIN = Path(sys.executable).parent
#: Seconds an HTTP request may take.
TIMEOUT = 15
#: Seconds a server may take to come up.
START_TIMEOUT = 30
#: Lines that must never show up in a server's output.
FORBIDDEN_OUTPUT = ("Traceback", "database is locked")
#: Cheap hashing where argon2 is not what is under test.
FAST_HASHING = {"ARGON2_TIME_COST": "1", "ARGON2_MEMORY_COST": "1024"}
#: Every request comes from 127.0.0.1: throttling is tested on its own.
UNTHROTTLED = {
    "LOGIN_RATE_LIMIT": "10000 per minute",
    "REGISTRATION_RATE_LIMIT": "10000 per minute",
}


def clean_env(**settings: str) -> dict[str, str]:
    """The run's environment without AUTHSVC_ or FLASK_ variables, plus ``settings``.

    Each setting is named without its prefix: ``clean_env(SECRET_KEY="...")``
    sets ``AUTHSVC_SECRET_KEY``.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AUTHSVC_", "FLASK_"))
    }
    env.update({f"AUTHSVC_{name}": value for name, value in settings.items()})
    return env


def serve_command(workers: int) -> list[str]:
    """``authsvc serve`` with ``workers`` workers, for :class:`LiveServer`."""
    return [
        str(BIN / "authsvc"),
        "serve",
        "--port",
        "{port}",
        "--workers",
        str(workers),
    ]


@dataclass
class Reply:
    """A server's answer; ``body`` is the parsed JSON, None if it sent nothing."""

    status: int
    headers: http.client.HTTPMessage
    body: Any

    @property
    def code(self) -> str | None:
        """The problem+json ``code``, if the body has one."""
        return self.body.get("code") if isinstance(self.body, dict) else None

    def __repr__(self) -> str:
        headers = dict(self.headers.items())
        return f"Reply(status={self.status}, headers={headers}, body={self.body!r})"


class LiveServer(ServerProcess):
    """``argv`` serving HTTP on a free loopback port, started at once, in ``cwd``.

    ``{port}`` in ``argv`` stands for the port. The output, stderr included, is
    appended to ``log`` (``cwd/server.log`` unless given). The server counts as
    up once ``GET ready[0]`` answers with status ``ready[1]``. As a context
    manager, it is stopped on leaving.
    """

    def __init__(
        self,
        argv: Sequence[str | Path],
        *,
        cwd: Path,
        env: dict[str, str],
        log: Path | None = None,
        ready: tuple[str, int] = ("/health", 200),
        forbidden: Sequence[str] = FORBIDDEN_OUTPUT,
        incremental: bool = True,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            [str(arg).replace("{port}", str(self.port)) for arg in argv],
            cwd=cwd,
            env=env,
            log=log or cwd / "server.log",
            start_timeout=START_TIMEOUT,
        )
        self.ready = ready
        self.forbidden = tuple(forbidden)
        self.incremental = incremental
        self.checked = 0
        self.start()

    def start(self) -> None:
        """Start the command and wait until it is up; again after :meth:`stop`.

        A restarted server keeps its port, so its URL stays the same, and its log.
        """
        self.spawn()
        path, status = self.ready
        try:
            self.wait_until(lambda: self.request("GET", path).status == status)
        except BaseException:
            self.stop()
            raise

    def fail(self, message: str) -> NoReturn:
        pytest.fail(message)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        barrier: threading.Barrier | None = None,
    ) -> Reply:
        """One request on its own connection; with ``barrier``, sent in step.

        ``body`` goes as JSON, ``token`` as a Bearer ``Authorization`` header.
        """
        sent = {"Connection": "close", **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        try:
            connection.connect()
            if barrier is not None:
                barrier.wait()
            connection.request(method, path, body=data, headers=sent)
            response = connection.getresponse()
            raw = response.read()
            return Reply(
                response.status, response.headers, json.loads(raw) if raw else None
            )
        finally:
            connection.close()

    def assert_clean_output(self) -> None:
        """No ``forbidden`` line among what was printed since the last check.

        Not ``incremental``: among everything ever printed. A line still being
        written is read again by the next check.
        """
        new = self.output()[self.checked :]
        for needle in self.forbidden:
            assert needle not in new, f"server printed {needle!r}:\n{new}"
        if self.incremental:
            self.checked += new.rfind("\n") + 1
