"""The benchmark harness keeps working: its smoke mode, run end to end on SQLite."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from live import clean_env

from bench.cli import cases, parse_args

ROOT = Path(__file__).resolve().parent.parent
ENDPOINTS = {
    "bare GET /",
    "GET /me",
    "GET /auth/forward",
    "POST /refresh",
    "POST /login",
    "floor GET /me",
    "floor POST /refresh",
}
#: A row of the results table: backend, endpoint, connections, requests/s, p50,
#: p99, share of the bare route's throughput, failed requests, client CPU.
ROW = re.compile(
    r"^sqlite +(?P<endpoint>"
    + "|".join(map(re.escape, sorted(ENDPOINTS, key=len, reverse=True)))
    + r") +(?P<connections>\d+) +(?P<rps>[\d.]+) +[\d.]+ +[\d.]+ +[-\d.]+ +"
    r"(?P<failed>\d+) +\d+%$",
    re.MULTILINE,
)


@pytest.mark.live
def test_smoke_run_prints_the_bare_route_every_endpoint_and_their_floors():
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke"],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = list(ROW.finditer(result.stdout))
    assert {row["endpoint"] for row in rows} == ENDPOINTS, result.stdout
    for row in rows:
        assert float(row["rps"]) > 0, row[0]
        assert int(row["failed"]) == 0, row[0]
    assert "load generator: python" in result.stdout


def test_endpoints_choose_the_cases_and_login_adds_one_connection():
    options = parse_args(["--endpoints", "me,login"])
    chosen = [(case.endpoint, case.connections) for case in cases(options.endpoints, 8)]
    assert chosen == [("GET /me", 8), ("POST /login", 8), ("POST /login", 1)]


def test_an_unknown_endpoint_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--endpoints", "me,logout"])
    assert "unknown endpoints: logout" in capsys.readouterr().err


def test_the_floor_is_not_measured_in_the_scale_mode(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--floor", "--seed-users", "1000000"])
    assert "--floor is measured at the base size only" in capsys.readouterr().err
