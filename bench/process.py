"""A command serving HTTP on a loopback port, started, watched and stopped by its PID.

The benchmark's servers and the tests' live servers are both this: one place
knows how to start a command with its output in a log file (a pipe nobody reads
fills up and blocks the server, while a file can be read at any time, even
mid-run), wait until it answers, and stop it, and its workers, for sure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn, Self

#: Seconds a stopped server may take to exit after the last SIGKILL.
KILL_TIMEOUT = 10


def free_port() -> int:
    """A loopback port nothing listened on a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``argv`` run in ``cwd`` with its output appended to ``log``; not started yet.

    With ``group``, the command runs in a process group of its own, and stopping
    it signals the whole group, so that its workers go too even when their master
    died first; without, only the command's own PID is signalled.
    """

    def __init__(
        self,
        argv: Sequence[str | Path],
        *,
        cwd: Path,
        env: dict[str, str],
        log: Path,
        group: bool = False,
        start_timeout: float = 30,
        stop_timeout: float = 30,
    ) -> None:
        self.argv = [str(arg) for arg in argv]
        self.cwd = cwd
        self.env = env
        self.log = log
        self.group = group
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def name(self) -> str:
        """How failures name the server: its command line."""
        return " ".join(self.argv)

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the command, output and errors appended to the log."""
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(  # noqa: S603 (our own argv)
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=self.group,
            )
        return self.process

    def wait_until(self, answers: Callable[[], bool]) -> None:
        """Poll ``answers()`` until true; :meth:`fail` if the server exits or is late.

        ``answers`` may raise OSError while nothing listens yet.
        """
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if not self.alive():
                returncode = self.process.returncode if self.process else None
                self.fail(f"{self.name} exited with {returncode}:\n{self.tail()}")
            try:
                if answers():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.fail(f"{self.name} did not come up:\n{self.tail()}")

    def fail(self, message: str) -> NoReturn:
        """Give up on a server that did not start (tests turn this into a failure)."""
        raise RuntimeError(message)

    def alive(self) -> bool:
        """Is the command still running?"""
        return self.process is not None and self.process.poll() is None

    def terminate(self) -> None:
        """Ask for a graceful shutdown (in-flight requests finish); see :meth:`stop`."""
        if self.process is not None and self.alive():
            self._signal(self.process.pid, signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM and wait; SIGKILL if it has not stopped after ``stop_timeout``."""
        if self.process is None:
            return
        process = self.process
        self.terminate()
        try:
            process.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            self._signal(process.pid, signal.SIGKILL)
            process.wait(timeout=KILL_TIMEOUT)
        if self.group:
            # Workers left behind by a master that died first.
            self._signal(process.pid, signal.SIGKILL)

    def _signal(self, pid: int, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.group:
                os.killpg(pid, signum)
            else:
                os.kill(pid, signum)

    def output(self) -> str:
        """Everything the server has printed so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 50) -> str:
        """The last ``lines`` lines the server printed."""
        return "".join(self.output().splitlines(keepends=True)[-lines:])
