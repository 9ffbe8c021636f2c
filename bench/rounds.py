"""Interleaved rounds: the bare route, then an endpoint, then the next pair.

Each endpoint is measured right after the bare route at the same concurrency,
round after round, so whatever else the machine does drifts into both sides of a
ratio alike; medians across rounds then drop a stray slow run.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bench.load import Load, Measurement
from bench.service import BARE, BARE_LOAD

Say = Callable[[str], None]


class Generator(Protocol):
    """A load generator: ``wrk`` or the Python one."""

    name: str

    def describe(self, connections: int) -> str: ...

    def run(
        self, port: int, load: Load, connections: int, duration: float
    ) -> Measurement: ...


class Target(Protocol):
    """What is measured beside the bare route: authsvc, or the floor."""

    backend: str

    @property
    def port(self) -> int: ...

    def load(self, endpoint: str, connections: int) -> Load: ...


@dataclass(frozen=True)
class Case:
    """An endpoint at a number of concurrent connections."""

    endpoint: str
    connections: int


@dataclass
class Series:
    """A case's runs, each with the bare run made just before it."""

    case: Case
    service: list[Measurement] = field(default_factory=list)
    bare: list[Measurement] = field(default_factory=list)


@dataclass(frozen=True)
class Row:
    """Medians over rounds of one backend, endpoint and concurrency."""

    backend: str
    endpoint: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    #: Requests per second as a fraction of the bare route's, same rounds.
    vs_bare: float | None
    #: Failed requests, summed over rounds.
    failures: int
    #: Cores the load generator kept busy.
    client_cpu: float


@dataclass(frozen=True)
class Plan:
    """How long and how often to measure."""

    rounds: int
    duration: float
    warmup: float


def interleave(
    generator: Generator,
    bare_port: int,
    target: Target,
    cases: Sequence[Case],
    plan: Plan,
    say: Say,
) -> list[Series]:
    """Measure every case ``plan.rounds`` times, each beside the bare route."""
    if plan.warmup > 0:
        for case in cases:
            generator.run(bare_port, BARE_LOAD, case.connections, plan.warmup)
            load = target.load(case.endpoint, case.connections)
            generator.run(target.port, load, case.connections, plan.warmup)
    every = [Series(case) for case in cases]
    for number in range(1, plan.rounds + 1):
        for series in every:
            case = series.case
            bare = generator.run(bare_port, BARE_LOAD, case.connections, plan.duration)
            load = target.load(case.endpoint, case.connections)
            measured = generator.run(target.port, load, case.connections, plan.duration)
            series.bare.append(bare)
            series.service.append(measured)
            say(
                f"round {number}/{plan.rounds} {target.backend} {case.endpoint} "
                f"x{case.connections}: {measured.rps:.0f} req/s, "
                f"{measured.failures} failed (bare {bare.rps:.0f} req/s)"
            )
    return every


def summarise(
    backend: str,
    endpoint: str,
    connections: int,
    runs: Sequence[Measurement],
    bare: Sequence[Measurement] = (),
) -> Row:
    """The medians of ``runs``, and their throughput relative to ``bare``'s."""
    rps = statistics.median(run.rps for run in runs)
    bare_rps = statistics.median(run.rps for run in bare) if bare else None
    return Row(
        backend=backend,
        endpoint=endpoint,
        connections=connections,
        rps=rps,
        p50_ms=statistics.median(run.p50_ms for run in runs),
        p99_ms=statistics.median(run.p99_ms for run in runs),
        vs_bare=rps / bare_rps if bare_rps else None,
        failures=sum(run.failures for run in runs),
        client_cpu=statistics.median(run.client_cpu for run in runs),
    )


def rows_of(backend: str, every: Sequence[Series]) -> list[Row]:
    """One row per concurrency for the bare route, then one per case."""
    bare_runs: dict[int, list[Measurement]] = {}
    for series in every:
        bare_runs.setdefault(series.case.connections, []).extend(series.bare)
    rows = [
        summarise(backend, BARE, connections, runs)
        for connections, runs in sorted(bare_runs.items(), reverse=True)
    ]
    rows += [
        summarise(
            backend,
            series.case.endpoint,
            series.case.connections,
            series.service,
            series.bare,
        )
        for series in every
    ]
    return rows
