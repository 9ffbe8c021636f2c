"""``python -m bench``: the options, and one benchmark run from start to cleanup."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

from authsvc.config import SETTINGS, SUPPORTED_ALGORITHMS
from bench.databases import (
    DEFAULT_POSTGRES_URL,
    postgres_database,
    postgres_version,
    sqlite_database,
)
from bench.floor import FLOORS, FloorServer
from bench.load import PythonGenerator
from bench.report import environment, table, versions
from bench.rounds import Case, Generator, Plan, Row, Series, interleave, rows_of
from bench.scale import ScaleOutcome, run_scale, scale_report
from bench.servers import bare_server
from bench.service import BASE_ACCOUNTS, FORWARD, LOGIN, ME, REFRESH, Service
from bench.wrk import WrkGenerator

BACKENDS = ("sqlite", "postgresql")
#: What ``--endpoints`` takes, and the endpoint each name measures.
ENDPOINTS = {"me": ME, "forward": FORWARD, "refresh": REFRESH, "login": LOGIN}
#: What a target for login latency is read against: one argon2 verification.
LOGIN_TARGET = 1.15


@dataclass
class Outcome:
    """What one backend gave: rows (or the scale comparison) and any faults."""

    backend: str
    argon2: str
    rows: list[Row] = field(default_factory=list)
    #: One argon2 verification, timed beside the login runs.
    verify_ms: float = 0.0
    scale: ScaleOutcome | None = None
    problems: list[str] = field(default_factory=list)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The options; ``--smoke`` overrides the others with a tiny, fast run."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Throughput and latency of authsvc next to a bare Flask app.",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds per case")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="of each server")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument(
        "--endpoints",
        default=",".join(ENDPOINTS),
        help="some of: me, forward, refresh, login",
    )
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--generator", choices=("auto", "wrk", "python"))
    parser.add_argument(
        "--algorithm",
        choices=SUPPORTED_ALGORITHMS,
        default=SETTINGS["JWT_ALGORITHM"].default,
        help="AUTHSVC_JWT_ALGORITHM of the service (default: its own default)",
    )
    parser.add_argument(
        "--seed-users",
        type=int,
        metavar="N",
        help="scale mode: measure at 1,000 accounts, then at N",
    )
    parser.add_argument(
        "--memory-requests",
        type=int,
        default=100_000,
        help="scale mode: GET /me sent while watching worker memory",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also measure the floor: the stack doing GET /me's and POST /refresh's "
        "work and nothing of authsvc",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write results")
    parser.add_argument(
        "--smoke", action="store_true", help="1 short round on SQLite, in seconds"
    )
    options = parser.parse_args(argv)
    if options.smoke:
        options.rounds, options.duration, options.warmup = 1, 1.0, 0.0
        options.connections, options.backends = 2, "sqlite"
        options.generator = options.generator or "python"
        options.floor = True
    options.generator = options.generator or "auto"
    options.backends = [name.strip() for name in options.backends.split(",")]
    if unknown := set(options.backends) - set(BACKENDS):
        parser.error(f"unknown backends: {', '.join(sorted(unknown))}")
    options.endpoints = [name.strip() for name in options.endpoints.split(",")]
    if unknown := set(options.endpoints) - set(ENDPOINTS):
        parser.error(f"unknown endpoints: {', '.join(sorted(unknown))}")
    if options.seed_users is not None and options.seed_users <= BASE_ACCOUNTS:
        parser.error(f"--seed-users must be above {BASE_ACCOUNTS}")
    if options.seed_users is not None and options.floor:
        parser.error("--floor is measured at the base size only, not with --seed-users")
    if min(options.rounds, options.connections, options.workers) < 1:
        parser.error("--rounds, --connections and --workers must be at least 1")
    return options


def say(message: str) -> None:
    """A progress line, on stderr so stdout holds only the results."""
    print(message, file=sys.stderr, flush=True)


def _stop_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    # Unwind like Ctrl-C does, so every server and database is cleaned up.
    raise SystemExit(128 + signal.SIGTERM)


def make_generator(kind: str, folder: Path) -> AbstractContextManager[Generator]:
    """wrk when asked for or found on PATH (for ``auto``), else the Python one."""
    cores = os.cpu_count() or 1
    executable = shutil.which("wrk") if kind in ("auto", "wrk") else None
    if kind == "wrk" and executable is None:
        raise SystemExit("bench: --generator wrk, but wrk is not on PATH")
    if executable:
        return nullcontext(WrkGenerator(executable, folder, threads=cores))
    return PythonGenerator(processes=max(2, min(4, cores)))


def available_backends(options: argparse.Namespace) -> tuple[list[str], str | None]:
    """The backends to run, PostgreSQL only when it answers; and its version."""
    postgres = None
    if "postgresql" in options.backends:
        postgres = postgres_version(options.postgres_url)
        if postgres is None:
            say(f"postgresql: nothing answers at {options.postgres_url}; skipped")
    backends = [b for b in options.backends if b != "postgresql" or postgres]
    return backends, postgres


@contextmanager
def database(backend: str, folder: Path, options: argparse.Namespace) -> Iterator[str]:
    """A throwaway database of ``backend``; its URL."""
    if backend == "sqlite":
        with sqlite_database(folder) as url:
            yield url
    else:
        with postgres_database(options.postgres_url) as url:
            yield url


def cases(endpoints: Sequence[str], connections: int) -> list[Case]:
    """The cases of ``endpoints``; login also at 1 connection, where it never queues."""
    chosen = [Case(ENDPOINTS[name], connections) for name in endpoints]
    if "login" in endpoints and connections != 1:
        chosen.append(Case(LOGIN, 1))
    return chosen


def measure_floor(
    generator: Generator,
    bare_port: int,
    service: Service,
    chosen: Sequence[Case],
    plan: Plan,
    folder: Path,
    workers: int,
) -> list[Series]:
    """The floor of each chosen endpoint that has one, beside the bare route."""
    floors = [
        Case(FLOORS[case.endpoint], case.connections)
        for case in chosen
        if case.endpoint in FLOORS
    ]
    if not floors:
        return []
    say(f"{service.backend}: starting the floor")
    with FloorServer(service, folder, workers) as floor:
        return interleave(generator, bare_port, floor, floors, plan, say)


def bench_backend(
    backend: str,
    options: argparse.Namespace,
    folder: Path,
    generator: Generator,
    bare_port: int,
) -> Outcome:
    """Every measurement of one backend, its database dropped afterwards."""
    plan = Plan(options.rounds, options.duration, options.warmup)
    with database(backend, folder / backend, options) as url:
        say(f"{backend}: seeding {BASE_ACCOUNTS:,} accounts, starting authsvc serve")
        with Service(
            backend, url, folder / backend, options.workers, options.algorithm
        ) as service:
            outcome = Outcome(backend, service.argon2())
            if options.seed_users is None:
                chosen = cases(options.endpoints, options.connections)
                measured = interleave(generator, bare_port, service, chosen, plan, say)
                if options.floor:
                    measured += measure_floor(
                        generator,
                        bare_port,
                        service,
                        chosen,
                        plan,
                        folder / backend,
                        options.workers,
                    )
                outcome.rows = rows_of(backend, measured)
                if "login" in options.endpoints:
                    outcome.verify_ms = service.verify_ms()
            else:
                outcome.scale = run_scale(
                    generator,
                    bare_port,
                    service,
                    accounts=options.seed_users,
                    connections=options.connections,
                    plan=plan,
                    memory_requests=options.memory_requests,
                    say=say,
                )
        outcome.problems = service.problems()
    return outcome


def login_lines(outcome: Outcome) -> list[str]:
    """Login p50 against one argon2 verification with the service's parameters."""
    lines = []
    for row in outcome.rows:
        if row.endpoint == LOGIN:
            ratio = row.p50_ms / outcome.verify_ms
            target = f" (target: {LOGIN_TARGET})" if row.connections == 1 else ""
            lines.append(
                f"{outcome.backend} {LOGIN} x{row.connections}: p50 {row.p50_ms:.1f} ms"
                f" = {ratio:.2f} x one verify ({outcome.verify_ms:.1f} ms, "
                f"{outcome.argon2}){target}"
            )
    return lines


def problem_lines(outcome: Outcome) -> list[str]:
    """The service's output lines that point at a fault, a few of them."""
    if not outcome.problems:
        return []
    shown = outcome.problems[:10]
    return [
        f"{outcome.backend}: authsvc printed {len(outcome.problems)} error lines:",
        *(f"  {line}" for line in shown),
    ]


def report(outcomes: Sequence[Outcome], context: str) -> str:
    """Everything printed at the end."""
    parts = [context]
    rows = [row for outcome in outcomes for row in outcome.rows]
    if rows:
        parts.append(table(rows))
    for outcome in outcomes:
        lines = login_lines(outcome) + problem_lines(outcome)
        if outcome.scale is not None:
            lines.insert(0, scale_report(outcome.scale))
        if lines:
            parts.append("\n".join(lines))
    return "\n\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the results; clean up whatever happens."""
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    started = time.monotonic()
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        generator = stack.enter_context(make_generator(options.generator, folder))
        backends, postgres = available_backends(options)
        bare = stack.enter_context(bare_server(folder, options.workers))
        outcomes = [
            bench_backend(backend, options, folder, generator, bare.port)
            for backend in backends
        ]
    seconds = time.monotonic() - started
    found = versions(postgres if "postgresql" in options.backends else "not used")
    used = generator.describe(options.connections)
    print(report(outcomes, environment(found, used, options.algorithm)))
    print(f"\ntook {seconds:.0f} s")
    if options.json:
        document = {
            "versions": found,
            "cpus": os.cpu_count(),
            "generator": used,
            "options": {name: str(value) for name, value in vars(options).items()},
            "seconds": seconds,
            "outcomes": [asdict(outcome) for outcome in outcomes],
        }
        options.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0
