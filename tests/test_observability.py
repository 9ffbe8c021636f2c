"""Observability: request ids in JSON logs, Prometheus metrics, health probes."""

from __future__ import annotations

import glob
import http.client
import io
import json
import logging
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import PASSWORD, bearer, problem
from live import FAST_HASHING, UNTHROTTLED, LiveServer, clean_env, serve_command
from prometheus_client import multiprocess
from prometheus_client.parser import text_string_to_metric_families

from authsvc.logs import JsonFormatter
from authsvc.metrics import CONTENT_TYPE

UNREACHABLE_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:1/none"
GENERATED_ID = re.compile(r"[0-9a-f]{32}")


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of an exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(client, **headers) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.data
    assert response.headers["Content-Type"] == CONTENT_TYPE
    return parse(response.get_data(as_text=True))


def requests_key(route: str, method: str, status: int) -> tuple[str, frozenset]:
    labels = {"route": route, "method": method, "status": str(status)}
    return ("authsvc_http_requests_total", frozenset(labels.items()))


def logins_key(outcome: str) -> tuple[str, frozenset]:
    return ("authsvc_logins_total", frozenset({("outcome", outcome)}))


REFRESHES = ("authsvc_refreshes_total", frozenset())
REUSE = ("authsvc_refresh_reuse_detections_total", frozenset())
ACTIVE_SESSIONS = ("authsvc_active_sessions", frozenset())


@pytest.fixture
def json_log(caplog) -> Iterator[io.StringIO]:
    """What the service's loggers write while a request runs, as JSON lines."""
    caplog.set_level(logging.INFO, logger="authsvc")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("authsvc")
    logger.addHandler(handler)
    yield stream
    logger.removeHandler(handler)


def json_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


# Request ids and JSON logs


def test_json_log_lines_carry_the_request_id(client, register, json_log):
    register()
    json_log.truncate(0)
    json_log.seek(0)
    response = client.post("/login", json={"username": "alice", "password": "nope"})
    assert response.status_code == 401
    request_id = response.headers["X-Request-ID"]
    assert GENERATED_ID.fullmatch(request_id)

    lines = json_lines(json_log)
    assert [line["event"] for line in lines] == ["login_failed"]
    assert all(line["request_id"] == request_id for line in lines)


def test_every_request_gets_its_own_id(client, json_log):
    first = client.post("/login", json={"username": "bob", "password": "x" * 10})
    second = client.post("/login", json={"username": "bob", "password": "x" * 10})
    ids = [first.headers["X-Request-ID"], second.headers["X-Request-ID"]]
    assert ids[0] != ids[1]
    assert [line["request_id"] for line in json_lines(json_log)] == ids


def test_log_lines_outside_a_request_have_no_request_id(app, json_log):
    with app.app_context():
        logging.getLogger("authsvc.test").info("no request here")
    [line] = json_lines(json_log)
    assert line["message"] == "no request here"
    assert "request_id" not in line


@pytest.mark.parametrize(
    "incoming",
    ["abc", "4bf92f3577b34da6a3ce929d0e0e4736", "req.1_2-3", "a" * 128],
)
def test_a_sane_incoming_request_id_is_echoed_and_logged(client, json_log, incoming):
    response = client.post(
        "/login",
        json={"username": "nobody", "password": "x" * 10},
        headers={"X-Request-ID": incoming},
    )
    assert response.headers["X-Request-ID"] == incoming
    assert [line["request_id"] for line in json_lines(json_log)] == [incoming]


@pytest.mark.parametrize(
    "incoming",
    [
        "",
        "a" * 129,
        "abc\ndef",
        "abc\r\nX-Injected: 1",
        '{"level": "error"}',
        "has space",
        "ünïcode",
        "semi;colon",
    ],
)
def test_an_unfit_incoming_request_id_is_replaced(client, json_log, incoming):
    # The raw environ, so the test client's own header checks do not stop it.
    response = client.post(
        "/login",
        json={"username": "nobody", "password": "x" * 10},
        environ_overrides={"HTTP_X_REQUEST_ID": incoming},
    )
    request_id = response.headers["X-Request-ID"]
    assert GENERATED_ID.fullmatch(request_id)
    assert [line["request_id"] for line in json_lines(json_log)] == [request_id]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/no/such/path", 404),
        ("PUT", "/login", 405),
        ("GET", "/me", 401),
        ("POST", "/login", 415),
    ],
)
def test_errors_answer_the_request_id_too(client, method, path, status):
    response = client.open(
        path, method=method, data="x", headers={"X-Request-ID": "err-1"}
    )
    assert response.status_code == status
    assert response.headers["X-Request-ID"] == "err-1"


def test_an_unexpected_error_answers_the_request_id(make_app):
    app = make_app(TESTING=False)

    @app.get("/boom")
    def boom():
        raise RuntimeError("boom")

    response = app.test_client().get("/boom", headers={"X-Request-ID": "crash-1"})
    problem(response, "internal_error", 500)
    assert response.headers["X-Request-ID"] == "crash-1"


# Metrics


def test_metrics_are_prometheus_text_outside_the_api_document(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == (
        "text/plain; version=0.0.4; charset=utf-8"
    )
    types = {
        family.name: family.type
        for family in text_string_to_metric_families(response.get_data(as_text=True))
    }
    # In one process prometheus_client adds *_created gauges too.
    assert (
        types.items()
        >= {
            "authsvc_http_requests": "counter",
            "authsvc_http_request_duration_seconds": "histogram",
            "authsvc_logins": "counter",
            "authsvc_refreshes": "counter",
            "authsvc_refresh_reuse_detections": "counter",
            "authsvc_active_sessions": "gauge",
        }.items()
    )
    assert "/metrics" not in client.get("/swagger.json").json["paths"]


def test_requests_are_counted_by_url_rule_method_and_status(client, tokens):
    session_id = str(uuid.uuid4())
    for _ in range(2):
        client.delete(f"/sessions/{session_id}", headers=bearer(tokens["access_token"]))
    client.get("/me", headers=bearer(tokens["access_token"]))
    client.get(f"/no/such/{session_id}")
    client.open("/login", method="BREW")

    text = client.get("/metrics").get_data(as_text=True)
    samples = parse(text)
    assert samples[requests_key("/sessions/<string:session_id>", "DELETE", 404)] == 2
    assert samples[requests_key("/me", "GET", 200)] == 1
    assert samples[requests_key("/login", "POST", 200)] == 1
    assert samples[requests_key("/users", "POST", 201)] == 1
    # Paths no rule matched share one series; made-up methods another.
    assert samples[requests_key("unmatched", "GET", 404)] == 1
    assert samples[requests_key("unmatched", "other", 405)] == 1
    # The raw path (an id) never becomes a label.
    assert session_id not in text
    duration = (
        "authsvc_http_request_duration_seconds_count",
        requests_key("/me", "GET", 200)[1],
    )
    assert samples[duration] == 1


def test_logins_are_counted_by_outcome(client, register):
    before = scrape(client)
    assert before[logins_key("success")] == 0
    assert before[logins_key("failure")] == 0
    register()
    client.post("/login", json={"username": "alice", "password": PASSWORD})
    client.post("/login", json={"username": "alice", "password": "wrong password"})
    client.post("/login", json={"username": "nobody", "password": "wrong password"})

    after = scrape(client)
    assert after[logins_key("success")] == 1
    assert after[logins_key("failure")] == 2


def test_refreshes_and_reuse_detections_are_counted(client, clock, tokens):
    assert scrape(client)[REFRESHES] == 0
    first = tokens["refresh_token"]
    response = client.post("/refresh", json={"refresh_token": first})
    assert response.status_code == 200
    assert scrape(client)[REFRESHES] == 1
    assert scrape(client)[REUSE] == 0

    clock.advance(60)  # past the reuse grace window
    problem(
        client.post("/refresh", json={"refresh_token": first}),
        "invalid_refresh_token",
        401,
    )
    samples = scrape(client)
    assert samples[REUSE] == 1
    assert samples[REFRESHES] == 1


def test_active_sessions_are_the_live_ones(app, client, clock, register, login):
    register()
    register("bob")
    assert scrape(client)[ACTIVE_SESSIONS] == 0
    login()  # expires first
    clock.advance(3600)
    login()
    logged_out = login("bob")
    login("bob")
    assert scrape(client)[ACTIVE_SESSIONS] == 4

    client.post("/logout", headers=bearer(logged_out["access_token"]))
    assert scrape(client)[ACTIVE_SESSIONS] == 3
    # The first session reaches its absolute end.
    clock.advance(app.config["SESSION_TTL"] - 3600)
    assert scrape(client)[ACTIVE_SESSIONS] == 2


def test_metrics_still_answer_when_the_database_does_not(make_app, caplog):
    client = make_app(DATABASE_URL=UNREACHABLE_DATABASE).test_client()
    client.get("/health/live")
    samples = scrape(client)
    assert samples[requests_key("/health/live", "GET", 200)] == 1
    assert ACTIVE_SESSIONS not in samples
    assert "active sessions not counted" in caplog.text


#: The metrics guard's own detail, where it gives one.
METRICS_DETAILS = {"invalid_token": "The metrics credential is not valid."}


@pytest.mark.parametrize(
    ("headers", "code", "challenge"),
    [
        ({}, "authentication_required", 'Bearer realm="authsvc"'),
        (
            {"Authorization": "Bearer wrong-token"},
            "invalid_token",
            'Bearer realm="authsvc", error="invalid_token"',
        ),
        (
            {"Authorization": "Basic bWV0cmljczptZXRyaWNzLXRva2Vu"},
            "authentication_required",
            'Bearer realm="authsvc"',
        ),
    ],
)
def test_a_metrics_token_guards_the_metrics(make_app, headers, code, challenge):
    client = make_app(METRICS_TOKEN="metrics-token").test_client()
    response = client.get("/metrics", headers=headers)
    problem(response, code, 401, detail=METRICS_DETAILS.get(code))
    assert response.headers["WWW-Authenticate"] == challenge


def test_the_metrics_token_opens_the_metrics(make_app):
    client = make_app(METRICS_TOKEN="metrics-token").test_client()
    samples = scrape(client, Authorization="Bearer metrics-token")
    assert samples[logins_key("success")] == 0


# Liveness and readiness


def test_liveness_and_readiness_with_the_database_up(client):
    live = client.get("/health/live")
    assert (live.status_code, live.json) == (200, {"status": "ok"})
    ready = client.get("/health")
    assert (ready.status_code, ready.json) == (200, {"status": "ok"})


def test_liveness_does_not_need_the_database(make_app):
    client = make_app(DATABASE_URL=UNREACHABLE_DATABASE).test_client()
    live = client.get("/health/live")
    assert (live.status_code, live.json) == (200, {"status": "ok"})
    ready = client.get("/health")
    assert (ready.status_code, ready.json) == (503, {"status": "unavailable"})
    assert ready.headers["Retry-After"] == "5"


# A real multi-process server


def worker_counts(folder: Path, route: str) -> list[float]:
    """Each worker's own count of GET ``route`` answered 200, from its file."""
    counts = []
    for path in sorted(glob.glob(str(folder / "counter_*.db"))):
        total = 0.0
        for family in multiprocess.MultiProcessCollector.merge([path]):
            for sample in family.samples:
                if sample.name == "authsvc_http_requests_total" and (
                    sample.labels == {"route": route, "method": "GET", "status": "200"}
                ):
                    total += sample.value
        counts.append(total)
    return counts


def scrape_live(server: LiveServer) -> dict[tuple[str, frozenset], float]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=15)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type") == CONTENT_TYPE
        return parse(response.read().decode())
    finally:
        connection.close()


@pytest.mark.live
def test_serve_sums_the_metrics_of_every_worker(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = clean_env(LOG_FORMAT="json", **FAST_HASHING, **UNTHROTTLED)
    env["TMPDIR"] = str(temp)  # where serve makes its metrics folder
    with LiveServer(serve_command(2), cwd=tmp_path, env=env) as server:
        [folder] = temp.glob("authsvc-metrics-*")

        # Which worker accepts a connection is up to the kernel: ask until both
        # have answered some, then the scrape must give the sum of both.
        sent = 0
        counts: list[int] = []
        while sent < 200 and len([count for count in counts if count]) < 2:
            assert server.request("GET", "/health/live").status == 200
            sent += 1
            counts = worker_counts(folder, "/health/live")
        assert len([count for count in counts if count]) == 2
        assert sum(counts) == sent
        assert scrape_live(server)[requests_key("/health/live", "GET", 200)] == sent

        # Counted at each scrape, so never once per worker.
        reply = server.request(
            "POST", "/users", {"username": "alice", "password": PASSWORD}
        )
        assert reply.status == 201, reply
        for number in range(3):
            reply = server.request(
                "POST",
                "/login",
                {"username": "alice", "password": PASSWORD},
                headers={"X-Request-ID": f"live-login-{number}"},
            )
            assert reply.status == 200, reply
            assert reply.headers["X-Request-ID"] == f"live-login-{number}"
        samples = scrape_live(server)
        assert samples[ACTIVE_SESSIONS] == 3
        assert samples[logins_key("success")] == 3

        server.assert_clean_output()
    # Every line, gunicorn's own included, is one JSON object.
    lines = [json.loads(line) for line in server.output().splitlines() if line]
    logins = [line for line in lines if line.get("event") == "login_succeeded"]
    assert [line["request_id"] for line in logins] == [
        f"live-login-{number}" for number in range(3)
    ]
    assert not folder.exists()  # removed when the server stopped
