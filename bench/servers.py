"""The servers under test: gunicorn processes on free loopback ports.

Each server runs in its own process group, so stopping it stops its workers
too, whether the benchmark ends normally, fails, or is interrupted; the process
handling itself is ``bench.process``'s.
"""

from __future__ import annotations

import http.client
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from gunicorn.config import KNOWN_SETTINGS

from authsvc.server import THREADS
from bench.process import ServerProcess, free_port

#: Seconds a server may take to answer its first request.
START_TIMEOUT = 60
#: Seconds a server may take to stop after SIGTERM before it is killed.
STOP_TIMEOUT = 35
#: The repository, from which ``bench.bare`` is imported.
ROOT = Path(__file__).resolve().parent.parent


def get(port: int, path: str, headers: dict[str, str] | None = None) -> int:
    """The status of ``GET path``, or 0 when nothing answers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path, headers=headers or {})
        return connection.getresponse().status
    except OSError:
        return 0
    finally:
        connection.close()


class Server(ServerProcess):
    """``argv`` serving on ``port``; up once ``GET ready`` answers 200."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int,
        env: dict[str, str],
        log: Path,
        ready: str,
    ) -> None:
        super().__init__(
            argv,
            cwd=ROOT,
            env=env,
            log=log,
            group=True,
            start_timeout=START_TIMEOUT,
            stop_timeout=STOP_TIMEOUT,
        )
        self._name = name
        self.port = port
        self.ready = ready

    @property
    def name(self) -> str:
        return self._name

    def __enter__(self) -> Self:
        self.start()
        return self

    def start(self) -> None:
        """Start the command in a new process group and wait until it answers."""
        self.spawn()
        try:
            self.wait_until(lambda: get(self.port, self.ready) == 200)
        except BaseException:
            self.stop()
            raise

    def tail(self, lines: int = 30) -> str:
        """The last lines the server printed."""
        return super().tail(lines)

    def worker_rss_kib(self) -> dict[int, int]:
        """VmRSS of each worker (a child of the gunicorn master), by pid."""
        if self.process is None:
            return {}
        return {pid: _rss_kib(pid) for pid in _children(self.process.pid)}


def _children(parent: int) -> list[int]:
    """Pids whose parent is ``parent``, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces; the parent
        # pid is the second field after it.
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            found.append(int(entry.name))
    return sorted(found)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def flask_server(
    name: str,
    app: str,
    folder: Path,
    workers: int,
    *,
    ready: str,
    env: dict[str, str] | None = None,
) -> Server:
    """A Flask app of ``bench`` under gunicorn, with the options ``authsvc serve`` uses.

    Those are set in ``authsvc.server.run``: the worker count, its worker class
    (threads that get a connection only once its request is read) and thread
    count, no keep-alive, 30 s timeouts, 65 KiB header fields, the error log on
    stderr at info, no access log, no control socket.
    """
    port = free_port()
    control = ["--no-control-socket"] if "control_socket_disable" in _settings() else []
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        f"--bind=127.0.0.1:{port}",
        f"--workers={workers}",
        "--worker-class=authsvc.server.ProblemWorker",
        f"--threads={THREADS}",
        "--timeout=30",
        "--graceful-timeout=30",
        "--keep-alive=0",
        f"--limit-request-field_size={64 * 1024 + 1024}",
        "--error-logfile=-",
        "--log-level=info",
        *control,
        app,
    ]
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)}
    return Server(
        name, argv, port=port, env=env, log=folder / f"{name}.log", ready=ready
    )


def bare_server(folder: Path, workers: int) -> Server:
    """The bare Flask app: the baseline every ratio divides by."""
    return flask_server("bare", "bench.bare:app", folder, workers, ready="/")


def _settings() -> set[str]:
    return {setting.name for setting in KNOWN_SETTINGS}


def authsvc_server(folder: Path, workers: int, settings: dict[str, str]) -> Server:
    """``authsvc serve`` with ``settings`` (names without AUTHSVC_) on a free port."""
    port = free_port()
    beside = Path(sys.executable).parent / "authsvc"
    executable = str(beside) if beside.exists() else shutil.which("authsvc")
    if executable is None:
        raise RuntimeError("authsvc is not installed: pip install -e .[test]")
    argv = [
        executable,
        "serve",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--workers={workers}",
    ]
    env = {
        **os.environ,
        **{f"AUTHSVC_{name}": value for name, value in settings.items()},
    }
    return Server(
        "authsvc serve",
        argv,
        port=port,
        env=env,
        log=folder / "authsvc.log",
        ready="/health",
    )
