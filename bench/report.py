"""What the benchmark prints: versions, the results table, derived ratios."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from bench.rounds import Row

#: Distributions whose versions shape the figures.
PACKAGES = {
    "flask": "flask",
    "gunicorn": "gunicorn",
    "sqlalchemy": "sqlalchemy",
    "pyjwt": "pyjwt",
    "argon2-cffi": "argon2-cffi",
    "psycopg": "psycopg",
}
#: Column headings and their formats.
COLUMNS = (
    ("backend", "<10"),
    ("endpoint", "<19"),
    ("conns", ">5"),
    ("req/s", ">8"),
    ("p50 ms", ">8"),
    ("p99 ms", ">8"),
    ("vs bare", ">7"),
    ("failed", ">6"),
    ("client CPU", ">10"),
)


def revision() -> str:
    """The authsvc commit measured, ``-dirty`` when the work tree differs from it."""
    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty"],  # noqa: S607 (git on PATH)
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return metadata.version("authsvc")


def versions(postgresql: str | None) -> dict[str, str]:
    """Versions of everything between the client and the disk."""
    found = {"authsvc": revision(), "python": platform.python_version()}
    found.update({name: metadata.version(dist) for name, dist in PACKAGES.items()})
    found["sqlite"] = sqlite3.sqlite_version
    found["postgresql"] = postgresql or "not reachable"
    return found


def environment(found: dict[str, str], generator: str, algorithm: str) -> str:
    """The lines that say what the figures were measured with."""
    listed = ", ".join(f"{name} {version}" for name, version in found.items())
    return (
        f"versions: {listed}\ncpus: {os.cpu_count()}\n"
        f"load generator: {generator}\naccess tokens: {algorithm}"
    )


def _cells(row: Row) -> tuple[str, ...]:
    return (
        row.backend,
        row.endpoint,
        str(row.connections),
        f"{row.rps:.1f}",
        f"{row.p50_ms:.2f}",
        f"{row.p99_ms:.2f}",
        f"{row.vs_bare:.3f}" if row.vs_bare is not None else "-",
        str(row.failures),
        f"{row.client_cpu * 100:.0f}%",
    )


def table(rows: Sequence[Row]) -> str:
    """The results, one row per backend, endpoint and concurrency."""
    lines = [" ".join(f"{name:{spec}}" for name, spec in COLUMNS)]
    lines += [
        " ".join(
            f"{cell:{spec}}"
            for cell, (_, spec) in zip(_cells(row), COLUMNS, strict=True)
        )
        for row in rows
    ]
    return "\n".join(lines)


def percent(before: float, after: float) -> str:
    """The change from ``before`` to ``after``, signed, in percent."""
    return f"{(after - before) / before * 100:+.1f}%" if before else "n/a"
