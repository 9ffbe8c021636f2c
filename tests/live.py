"""Real servers for the tests that need one: a command on a free loopback port.

:class:`LiveServer` starts a command (``authsvc serve``, gunicorn, ``flask run``)
with a clean environment, waits until it answers, talks HTTP to it and stops it.
Its output goes to a log file rather than a pipe: a pipe nobody reads fills up
and blocks the server, while a file can be read at any time, even mid-run.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pytest

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


def free_port() -> int:
    """A loopback port nothing listened on a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


class LiveServer:
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
        self.argv = [str(arg).replace("{port}", str(self.port)) for arg in argv]
        self.cwd = cwd
        self.env = env
        self.log = log or cwd / "server.log"
        self.ready = ready
        self.forbidden = tuple(forbidden)
        self.incremental = incremental
        self.checked = 0
        self.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the command and wait until it is up; again after :meth:`stop`.

        A restarted server keeps its port, so its URL stays the same, and its log.
        """
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_until_up()
        except BaseException:
            self.stop()
            raise

    def _wait_until_up(self) -> None:
        path, status = self.ready
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if not self.alive():
                pytest.fail(
                    f"{' '.join(self.argv)} exited with {self.process.returncode}:\n"
                    f"{self.tail()}"
                )
            try:
                if self.request("GET", path).status == status:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        pytest.fail(f"{' '.join(self.argv)} did not come up:\n{self.tail()}")

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

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        """Everything the server has printed so far."""
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 50) -> str:
        return "".join(self.output().splitlines(keepends=True)[-lines:])

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

    def terminate(self) -> None:
        """Ask for a graceful shutdown (in-flight requests finish); see :meth:`stop`."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM and wait; killed if it has not stopped after 30 seconds."""
        self.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
