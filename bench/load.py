"""What a run sends and measures, and the Python load generator.

gunicorn's sync workers close the connection after every answer, so every
request here opens a connection of its own, to the bare route as to the service,
and its latency includes the connect. The generator is a few processes of a few
threads each, so on a small machine the client is not what limits throughput.
"""

from __future__ import annotations

import http.client
import json
import math
import multiprocessing
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Self

#: Seconds one request may take before it counts as failed.
REQUEST_TIMEOUT = 10.0
#: Seconds between handing out a run and starting its clock, so every thread
#: of every process starts at the same moment.
START_DELAY = 0.3
#: Placeholder sent when a connection has no unspent refresh token left.
NO_TOKEN = "spent"  # noqa: S105 (not a secret)


@dataclass(frozen=True)
class Load:
    """The requests of one run, all to 127.0.0.1.

    With ``refresh_tokens`` each request presents one unspent refresh token in a
    JSON body: each connection starts from its share of them and goes on with
    the successor every answer hands back, so no token is presented twice.
    """

    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    body: str | None = None
    refresh_tokens: tuple[str, ...] = ()

    def body_for(self, token: str | None) -> str | None:
        """The body of one request, given the refresh token it presents."""
        if token is None:
            return self.body
        return json.dumps({"refresh_token": token})


@dataclass(frozen=True)
class Measurement:
    """What one run measured: answers of any status, and those that failed."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    #: Answers other than 2xx, plus requests that got no answer.
    failures: int
    #: CPU the generator used, in cores (1.0 is one core busy all along).
    client_cpu: float

    @property
    def rps(self) -> float:
        """Answers per second."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values; 0 for none."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def deal(items: Sequence[str], hands: int) -> list[list[str]]:
    """Deal ``items`` round-robin into ``hands`` lists."""
    return [list(items[hand::hands]) for hand in range(hands)]


@dataclass
class _Part:
    """What one connection loop, or one process of them, measured."""

    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    cpu: float = 0.0
    finished: float = 0.0

    def add(self, other: _Part) -> None:
        self.latencies.extend(other.latencies)
        self.failures += other.failures
        self.cpu += other.cpu
        self.finished = max(self.finished, other.finished)


def _send(port: int, load: Load, token: str | None) -> tuple[int, bytes]:
    """One request on a fresh connection: status and body."""
    body = load.body_for(token)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    try:
        connection.request(
            load.method,
            load.path,
            body=body.encode() if body is not None else None,
            headers={"Connection": "close", **dict(load.headers)},
        )
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _next_token(payload: bytes) -> str | None:
    """The successor refresh token in an answer, if there is one."""
    try:
        token = json.loads(payload).get("refresh_token")
    except (ValueError, AttributeError):
        return None
    return token if isinstance(token, str) else None


def _loop(
    port: int, load: Load, tokens: list[str], deadline: float, out: _Part
) -> None:
    """Send requests one after the other until ``deadline`` (wall clock)."""
    chained = bool(load.refresh_tokens)
    while time.time() < deadline:
        token = (tokens.pop() if tokens else NO_TOKEN) if chained else None
        started = time.perf_counter()
        try:
            status, payload = _send(port, load, token)
        except OSError:
            out.failures += 1
            time.sleep(0.01)  # a refused connection must not spin the loop
            continue
        out.latencies.append(time.perf_counter() - started)
        out.finished = time.time()
        if not 200 <= status < 300:
            out.failures += 1
        elif chained and (successor := _next_token(payload)):
            tokens.append(successor)


def _process(
    port: int, load: Load, hands: list[list[str]], start_at: float, duration: float
) -> _Part:
    """One process of the generator: a thread per connection, started together."""
    cpu = time.process_time()
    time.sleep(max(0.0, start_at - time.time()))
    parts = [_Part() for _ in hands]
    threads = [
        threading.Thread(
            target=_loop, args=(port, load, hand, start_at + duration, part)
        )
        for hand, part in zip(hands, parts, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = _Part()
    for part in parts:
        total.add(part)
    total.cpu = time.process_time() - cpu
    return total


class PythonGenerator:
    """A pool of ``processes`` processes, kept for every run of the benchmark."""

    name = "python"

    def __init__(self, processes: int) -> None:
        self.processes = max(1, processes)
        self._pool = multiprocessing.get_context("spawn").Pool(self.processes)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._pool.terminate()
        self._pool.join()

    def describe(self, connections: int) -> str:
        """How ``connections`` connections are spread, for the report."""
        processes = min(self.processes, connections)
        threads = math.ceil(connections / processes)
        return f"python http.client, {processes} processes x up to {threads} threads"

    def run(
        self, port: int, load: Load, connections: int, duration: float
    ) -> Measurement:
        """Run ``load`` over ``connections`` connections for ``duration`` seconds."""
        hands = deal(load.refresh_tokens, connections)
        processes = min(self.processes, connections)
        start_at = time.time() + START_DELAY
        tasks = [
            (port, load, hands[index::processes], start_at, duration)
            for index in range(processes)
        ]
        total = _Part()
        for part in self._pool.starmap(_process, tasks, chunksize=1):
            total.add(part)
        seconds = max(duration, total.finished - start_at)
        latencies = sorted(total.latencies)
        return Measurement(
            requests=len(latencies),
            seconds=seconds,
            p50_ms=percentile(latencies, 0.50) * 1000,
            p99_ms=percentile(latencies, 0.99) * 1000,
            failures=total.failures,
            client_cpu=total.cpu / seconds,
        )
