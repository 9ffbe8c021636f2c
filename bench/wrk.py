"""The wrk load generator, driven through Lua scripts written for each run.

wrk is C and uses an event loop, so on a small machine it leaves more of the CPU
to the servers than the Python generator. It reconnects after each answer the
sync workers close, and times a request from its first byte written, so its
latencies leave out the connect the Python generator's include. Every script
ends with a ``done`` hook that prints the run's figures as one JSON line.
"""

from __future__ import annotations

import json
import resource
import subprocess
from pathlib import Path

from bench.load import NO_TOKEN, Load, Measurement

#: The line ``done`` prints, before its JSON.
MARKER = "BENCH "

DONE = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
    .. '"failures": %d}\\n',
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""

# Each thread takes its share of the tokens file, presents each token once and
# queues the successor every answer carries for a later request.
CHAIN = """
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

local queue, head, tail = {}, 1, 0

function init(args)
  local index = 0
  for line in io.lines(TOKENS) do
    if index % THREADS == id then
      tail = tail + 1
      queue[tail] = line
    end
    index = index + 1
  end
end

function request()
  local token = queue[head] or NO_TOKEN
  queue[head] = nil
  head = head + 1
  return wrk.format(nil, nil, nil, '{"refresh_token": "' .. token .. '"}')
end

function response(status, headers, body)
  local token = body:match('"refresh_token"%s*:%s*"([^"]+)"')
  if token then
    tail = tail + 1
    queue[tail] = token
  end
end
"""


def lua_string(value: str) -> str:
    """A Lua long-bracket literal: no escaping needed for tokens and passwords."""
    if "]==]" in value:
        raise ValueError("value cannot be quoted for Lua")
    return f"[==[{value}]==]"


def cpu_of_children() -> float:
    """CPU seconds used so far by this process's waited-for children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class WrkGenerator:
    """wrk with ``threads`` threads at most, scripts and token files in ``folder``."""

    name = "wrk"

    def __init__(self, executable: str, folder: Path, threads: int) -> None:
        self.executable = executable
        self.folder = folder
        self.threads = max(1, threads)
        self.runs = 0

    def version(self) -> str:
        """wrk's own version line."""
        result = subprocess.run(  # noqa: S603 (our own argv)
            [self.executable, "--version"], capture_output=True, text=True, check=False
        )
        first = (result.stdout or result.stderr).splitlines()[0]
        return first.split(" Copyright")[0].strip()

    def describe(self, connections: int) -> str:
        """How ``connections`` connections are spread, for the report."""
        return f"{self.version()}, {min(self.threads, connections)} threads"

    def run(
        self, port: int, load: Load, connections: int, duration: float
    ) -> Measurement:
        """Run ``load`` over ``connections`` connections for ``duration`` seconds."""
        threads = min(self.threads, connections)
        script = self._script(load, threads)
        seconds = max(1, round(duration))
        argv = [
            self.executable,
            f"--threads={threads}",
            f"--connections={connections}",
            f"--duration={seconds}s",
            "--timeout=10s",
            f"--script={script}",
            f"http://127.0.0.1:{port}",
        ]
        cpu = cpu_of_children()
        result = subprocess.run(  # noqa: S603 (our own argv)
            argv, capture_output=True, text=True, check=True, timeout=seconds + 60
        )
        if MARKER not in result.stdout:
            # wrk exits 0 even when the script fails; its reason is on stderr.
            raise RuntimeError(f"wrk gave no figures: {result.stderr.strip()}")
        return self._parse(result.stdout, cpu_of_children() - cpu)

    def _script(self, load: Load, threads: int) -> Path:
        """Write the Lua script (and tokens file) of one run; return its path."""
        self.runs += 1
        lines = [
            f"wrk.method = {lua_string(load.method)}",
            f"wrk.path = {lua_string(load.path)}",
        ]
        # Spaces inside the index brackets: "[[" would open a long string.
        lines += [
            f"wrk.headers[ {lua_string(name)} ] = {lua_string(value)}"
            for name, value in load.headers
        ]
        if load.body is not None:
            lines.append(f"wrk.body = {lua_string(load.body)}")
        if load.refresh_tokens:
            tokens = self.folder / f"tokens-{self.runs}.txt"
            tokens.write_text("\n".join(load.refresh_tokens) + "\n")
            lines += [
                f"TOKENS = {lua_string(str(tokens))}",
                f"THREADS = {threads}",
                f"NO_TOKEN = {lua_string(NO_TOKEN)}",
                CHAIN,
            ]
        script = self.folder / f"run-{self.runs}.lua"
        script.write_text("\n".join([*lines, DONE]))
        return script

    @staticmethod
    def _parse(output: str, cpu: float) -> Measurement:
        line = next(line for line in output.splitlines() if line.startswith(MARKER))
        figures = json.loads(line.removeprefix(MARKER))
        seconds = figures["duration_us"] / 1e6
        return Measurement(
            requests=figures["requests"],
            seconds=seconds,
            p50_ms=figures["p50_us"] / 1000,
            p99_ms=figures["p99_us"] / 1000,
            failures=figures["failures"],
            client_cpu=cpu / seconds if seconds > 0 else 0.0,
        )
