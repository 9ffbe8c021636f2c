"""A ``Host`` header no URL can be built from is the client's error, never a 500.

Werkzeug refuses a host with an empty DNS label or one over 63 characters
(``BadHost``) when it binds the URL map; Flask-RESTX used to raise that again
from inside its error router, so every route answered 500 with a traceback.
"""

from __future__ import annotations

import http.client
import json
import logging

import pytest
from helpers import PASSWORD
from live import FAST_HASHING, LiveServer, clean_env, serve_command

BAD_HOSTS = [
    pytest.param("a" * 64 + ".example.com", id="label-over-63"),
    pytest.param("a..b", id="empty-label"),
    pytest.param(".example.com", id="leading-dot"),
    pytest.param("a" * 64, id="single-long-label"),
    pytest.param("a..b:8000", id="empty-label-with-port"),
]
#: Routes of every kind: open, protected, admin, body-reading, unknown, docs.
ROUTES = [
    ("GET", "/health/live"),
    ("GET", "/health"),
    ("GET", "/me"),
    ("GET", "/admin/users"),
    ("POST", "/login"),
    ("POST", "/users"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/no/such/route"),
    ("PUT", "/login"),
    ("GET", "/docs"),
    ("GET", "/swagger.json"),
    ("OPTIONS", "/login"),
]
INVALID_HOST = {
    "type": "about:blank",
    "title": "Bad Request",
    "status": 400,
    "detail": "The Host header is not valid.",
    "code": "invalid_request",
}


@pytest.mark.parametrize("testing", [True, False], ids=["testing", "production"])
@pytest.mark.parametrize("host", BAD_HOSTS)
def test_a_malformed_host_is_400_on_every_route(make_app, caplog, testing, host):
    client = make_app(TESTING=testing).test_client()
    for method, path in ROUTES:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="authsvc"):
            response = client.open(
                path,
                method=method,
                headers={"Host": host},
                json={"username": "a", "password": PASSWORD},
            )
        assert response.status_code == 400, (method, path)
        assert response.mimetype == "application/problem+json"
        assert response.json == INVALID_HOST, (method, path)
        assert [
            r.getMessage() for r in caplog.records if r.name != "authsvc.audit"
        ] == ["refused a request with a malformed Host header"], (method, path)
        assert not any(record.exc_info for record in caplog.records)


def test_good_hosts_still_work(client):
    for host in ["localhost", "a" * 63 + ".example.com", "127.0.0.1:8000", "[::1]"]:
        response = client.get("/health/live", headers={"Host": host})
        assert response.status_code == 200, host


@pytest.mark.live
def test_a_malformed_host_through_a_live_server(tmp_path):
    env = clean_env(SECRET_KEY="h" * 40, **FAST_HASHING)
    with LiveServer(serve_command(2), cwd=tmp_path, env=env) as server:
        for host in ["a" * 64 + ".example.com", "a..b"]:
            for method, path in ROUTES:
                connection = http.client.HTTPConnection(
                    "127.0.0.1", server.port, timeout=15
                )
                try:
                    connection.putrequest(method, path, skip_host=True)
                    connection.putheader("Host", host)
                    connection.putheader("Connection", "close")
                    connection.putheader("Content-Length", "0")
                    connection.endheaders()
                    response = connection.getresponse()
                    status, raw = response.status, response.read()
                    content_type = response.getheader("Content-Type")
                finally:
                    connection.close()
                assert status == 400, (host, method, path, raw)
                assert content_type == "application/problem+json"
                assert json.loads(raw) == INVALID_HOST
        assert server.request("GET", "/health/live").status == 200
        server.stop()
        server.assert_clean_output()
        output = server.output()
        assert output.count("refused a request with a malformed Host header") == (
            2 * len(ROUTES)
        )
        assert "Error handling request" not in output
