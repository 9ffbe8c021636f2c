"""Scale mode: the same endpoints at 1,000 accounts and at a million, and whether
a worker's memory grows while it serves many requests.

Both sizes are measured in one run, on one server and one database, so the
only thing that changes between them is the size of the tables.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bench.report import percent
from bench.rounds import Case, Generator, Plan, Row, Say, interleave, rows_of
from bench.service import ME, REFRESH, Service

#: Seconds of each run while driving requests to watch memory.
DRIVE_CHUNK = 10.0
#: Seconds the memory drive may last, whatever the request count.
DRIVE_LIMIT = 1200.0


@dataclass(frozen=True)
class Memory:
    """Workers' VmRSS (KiB, by pid) around a stretch of GET /me."""

    requests: int
    seconds: float
    failures: int
    before_kib: dict[int, int]
    after_kib: dict[int, int]


@dataclass(frozen=True)
class ScaleOutcome:
    """Both sizes' rows, the seeding time, and the memory drive."""

    accounts_before: int
    accounts_after: int
    seed_seconds: float
    before: list[Row]
    after: list[Row]
    memory: Memory


def run_scale(
    generator: Generator,
    bare_port: int,
    service: Service,
    *,
    accounts: int,
    connections: int,
    plan: Plan,
    memory_requests: int,
    say: Say,
) -> ScaleOutcome:
    """Measure, grow the tables to ``accounts``, measure again, then watch memory."""
    cases = [Case(ME, connections), Case(REFRESH, connections)]
    before_accounts = service.accounts()
    say(f"{service.backend}: measuring at {before_accounts:,} accounts")
    before = interleave(generator, bare_port, service, cases, plan, say)
    say(f"{service.backend}: seeding up to {accounts:,} accounts and sessions")
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if done % 100_000 == 0 or done == total:
            elapsed = time.perf_counter() - started
            say(f"  seeded {done:,} of {total:,} in {elapsed:.0f} s")

    service.grow(accounts, progress)
    seed_seconds = time.perf_counter() - started
    say(f"{service.backend}: measuring at {service.accounts():,} accounts")
    after = interleave(generator, bare_port, service, cases, plan, say)
    memory = drive(generator, service, connections, memory_requests, say)
    return ScaleOutcome(
        accounts_before=before_accounts,
        accounts_after=service.accounts(),
        seed_seconds=seed_seconds,
        before=rows_of(service.backend, before),
        after=rows_of(service.backend, after),
        memory=memory,
    )


def drive(
    generator: Generator, service: Service, connections: int, requests: int, say: Say
) -> Memory:
    """Send at least ``requests`` GET /me (time allowing), reading RSS around them."""
    before = service.server.worker_rss_kib()
    answered = failures = 0
    seconds = 0.0
    deadline = time.monotonic() + DRIVE_LIMIT
    while answered < requests and time.monotonic() < deadline:
        load = service.load(ME, connections)
        run = generator.run(service.port, load, connections, DRIVE_CHUNK)
        answered += run.requests
        failures += run.failures
        seconds += run.seconds
        say(f"  {answered:,} of {requests:,} GET /me answered")
    return Memory(answered, seconds, failures, before, service.server.worker_rss_kib())


def scale_report(outcome: ScaleOutcome) -> str:
    """Each endpoint at both sizes, with the change, then memory per worker."""
    lines = [
        f"scale, {outcome.before[0].backend}: seeded up to "
        f"{outcome.accounts_after:,} accounts, each with a session, "
        f"in {outcome.seed_seconds:.0f} s",
        f"{'endpoint':<13} {'conns':>5} {'accounts':>10} {'req/s':>8} "
        f"{'p50 ms':>8} {'p99 ms':>8}  change",
    ]
    for small, large in zip(outcome.before, outcome.after, strict=True):
        change = (
            f"req/s {percent(small.rps, large.rps)}, "
            f"p50 {percent(small.p50_ms, large.p50_ms)}"
        )
        for row, accounts, note in (
            (small, outcome.accounts_before, ""),
            (large, outcome.accounts_after, change),
        ):
            lines.append(
                f"{row.endpoint:<13} {row.connections:>5} {accounts:>10,} "
                f"{row.rps:>8.1f} {row.p50_ms:>8.2f} {row.p99_ms:>8.2f}  {note}"
            )
    lines.append(_memory_line(outcome.memory))
    return "\n".join(lines)


def _memory_line(memory: Memory) -> str:
    workers = []
    for pid, before in sorted(memory.before_kib.items()):
        after = memory.after_kib.get(pid)
        if after is None:
            workers.append(f"pid {pid}: {before / 1024:.1f} MiB -> gone (restarted)")
        else:
            workers.append(
                f"pid {pid}: {before / 1024:.1f} -> {after / 1024:.1f} MiB "
                f"({percent(before, after)})"
            )
    return (
        f"worker RSS around {memory.requests:,} GET /me "
        f"({memory.seconds:.0f} s, {memory.failures} failed): " + "; ".join(workers)
    )
