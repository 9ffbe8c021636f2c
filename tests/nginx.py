"""Debian's nginx for live tests: started from a configuration the test writes.

The test hands over the ``server { ... }`` blocks; this writes the rest of
``nginx.conf`` into the test's folder (pid, logs and temporary files there too),
starts nginx in the foreground, waits until ``ready`` answers, and stops it by its
PID.
"""

from __future__ import annotations

import contextlib
import http.client
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

#: Seconds nginx may take to start or stop.
NGINX_WAIT = 15


def program() -> str:
    """Where Debian installs nginx (``.ci/run`` installs it when missing)."""
    return shutil.which("nginx") or "/usr/sbin/nginx"


def answers(port: int, path: str) -> int | None:
    """The status of ``GET path`` on ``port``, or None when nothing answers yet."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", path, headers={"Connection": "close"})
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


@contextlib.contextmanager
def running_nginx(
    folder: Path, servers: str, *, port: int, ready: tuple[str, int]
) -> Iterator[int]:
    """nginx serving ``servers`` (listening on ``port``) until the block ends."""
    (folder / "servers.conf").write_text(servers)
    (folder / "nginx.conf").write_text(
        f"""daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    include {folder}/servers.conf;
}}
"""
    )
    process = subprocess.Popen(
        [
            program(),
            "-p",
            str(folder),
            "-e",
            str(folder / "error.log"),
            "-c",
            str(folder / "nginx.conf"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + NGINX_WAIT
        path, status = ready
        while answers(port, path) != status:
            assert process.poll() is None, (folder / "error.log").read_text()
            assert time.monotonic() < deadline, "nginx did not come up"
            time.sleep(0.1)
        yield port
    finally:
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(NGINX_WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(NGINX_WAIT)
