"""Every error is problem+json: bad routes, methods and bodies, crashes, outages."""

from __future__ import annotations

import logging

import pytest
from helpers import (
    BODY_BAD_CHARACTERS,
    BODY_NOT_AN_OBJECT,
    BODY_NOT_JSON,
    PASSWORD,
    problem,
    unreadable,
    user_count,
)

UNREACHABLE_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:1/none"


@pytest.mark.parametrize("path", ["/nope", "/users/1/x", "/login/"])
def test_unknown_route(client, path):
    response = client.get(path)
    problem(response, "not_found", 404)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("get", "/login", "OPTIONS, POST"),
        ("delete", "/users", "OPTIONS, POST"),
        ("post", "/me", "DELETE, GET, HEAD, OPTIONS"),
        ("put", "/health", "GET, HEAD, OPTIONS"),
    ],
)
def test_wrong_method(client, method, path, allow):
    response = getattr(client, method)(path)
    problem(response, "method_not_allowed", 405)
    assert response.headers["Allow"] == allow


NOT_JSON = [
    ("text/plain", b'{"username": "a", "password": "b"}'),
    ("application/x-www-form-urlencoded", b"username=a&password=b"),
    ("multipart/form-data; boundary=x", b"--x--"),
    (None, b'{"username": "a", "password": "b"}'),
]


@pytest.mark.parametrize("path", ["/login", "/refresh", "/users"])
@pytest.mark.parametrize(("content_type", "data"), NOT_JSON)
def test_body_that_is_not_json_is_415(app, client, path, content_type, data):
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(path, data=data, headers=headers)
    problem(response, "unsupported_media_type", 415)
    assert user_count(app) == 0


#: Bodies that are not a readable JSON object, and the detail each is answered.
MALFORMED = {
    b"": BODY_NOT_JSON,
    b"{": BODY_NOT_JSON,
    b"not json": BODY_NOT_JSON,
    b"[]": BODY_NOT_AN_OBJECT,
    b'"alice"': BODY_NOT_AN_OBJECT,
    b"42": BODY_NOT_AN_OBJECT,
    b"null": BODY_NOT_AN_OBJECT,
    b"true": BODY_NOT_AN_OBJECT,
    b'{"username": NaN, "password": "x"}': BODY_NOT_JSON,
    b'{"username": "a", "password": Infinity}': BODY_NOT_JSON,
    b'{"username": "a", "username": "b", "password": "x"}': BODY_NOT_JSON,
    b'{"username": "\\ud800", "password": "x"}': BODY_BAD_CHARACTERS,
    b'{"username": "a\\u0000b", "password": "x"}': BODY_BAD_CHARACTERS,
    b'{"username": "\xff\xfe", "password": "x"}': BODY_NOT_JSON,
    b"[" * 30000 + b"]" * 30000: BODY_NOT_JSON,
    b'{"a":' * 10000 + b"1" + b"}" * 10000: BODY_NOT_JSON,
}


@pytest.mark.parametrize("path", ["/login", "/refresh", "/users"])
@pytest.mark.parametrize(
    "data", MALFORMED, ids=lambda data: repr(data[:24]) + f"-{len(data)}"
)
def test_malformed_json_is_400(app, client, path, data):
    response = client.post(path, data=data, content_type="application/json")
    problem(response, "validation_error", 400, **unreadable(MALFORMED[data]))
    assert user_count(app) == 0


def test_json_with_charset_is_json(client, register):
    register()
    response = client.post(
        "/login",
        data=f'{{"username": "alice", "password": "{PASSWORD}"}}',
        content_type="application/json; charset=utf-8",
    )
    assert response.status_code == 200


def test_body_over_64_kib_is_413(app, client):
    body = b'{"username": "alice", "password": "' + b"p" * 65536 + b'"}'
    response = client.post("/users", data=body, content_type="application/json")
    problem(response, "payload_too_large", 413)
    assert user_count(app) == 0


def test_unexpected_exception_is_a_bare_500(make_app, caplog):
    app = make_app(TESTING=False)

    @app.get("/explode")
    def explode():
        raise RuntimeError("secret detail /etc/passwd SELECT 1")

    with caplog.at_level(logging.ERROR, logger="authsvc"):
        response = app.test_client().get("/explode")
    body = problem(response, "internal_error", 500)
    assert "secret" not in response.get_data(as_text=True)
    assert body["detail"] == "The server failed to handle the request."
    assert "RuntimeError: secret detail" in caplog.text


def test_unexpected_exception_inside_the_api_is_a_bare_500(
    make_app, monkeypatch, caplog
):
    from authsvc import accounts

    def fail(*args, **kwargs):
        raise KeyError("boom")

    monkeypatch.setattr(accounts, "login", fail)
    client = make_app(TESTING=False).test_client()
    with caplog.at_level(logging.ERROR, logger="authsvc"):
        response = client.post("/login", json={"username": "a", "password": "b"})
    problem(response, "internal_error", 500)
    assert "KeyError: 'boom'" in caplog.text


@pytest.fixture
def offline_client(make_app):
    return make_app(DATABASE_URL=UNREACHABLE_POSTGRES, TESTING=False).test_client()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/login", {"username": "alice", "password": PASSWORD}),
        ("post", "/users", {"username": "alice", "password": PASSWORD}),
        ("post", "/refresh", {"refresh_token": "abc"}),
    ],
)
def test_database_down_is_503(offline_client, method, path, body):
    response = getattr(offline_client, method)(path, json=body)
    body = problem(response, "service_unavailable", 503)
    assert response.headers["Retry-After"] == "5"
    assert "psycopg" not in response.get_data(as_text=True)
    assert "127.0.0.1" not in response.get_data(as_text=True)


def test_health_reports_the_database(client, offline_client):
    assert client.get("/health").json == {"status": "ok"}
    response = offline_client.get("/health")
    assert response.status_code == 503
    assert response.json == {"status": "unavailable"}
    assert response.headers["Retry-After"] == "5"


def test_every_error_code_is_in_the_readme_table():
    from pathlib import Path

    from authsvc.errors import CODES

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for code, (status, _detail) in CODES.items():
        assert f"| `{code}` | {status} |" in readme, code


def test_an_unknown_code_cannot_be_raised():
    from authsvc.errors import Problem

    with pytest.raises(ValueError, match="no_such_code"):
        Problem("no_such_code")


def test_codes_are_their_strings_and_the_table_takes_either():
    from authsvc.errors import CODES, Code, Problem

    assert set(CODES) == set(Code)
    assert Code.INVALID_TOKEN == "invalid_token"
    expected = (401, "The access token is not valid.")
    assert CODES["invalid_token"] == CODES[Code.INVALID_TOKEN] == expected
    problem = Problem("invalid_token")
    assert (problem.code, problem.status) == (Code.INVALID_TOKEN, 401)


@pytest.mark.parametrize(
    ("raise_it", "status", "code", "headers"),
    [
        (lambda e: e.RateLimited(7), 429, "rate_limited", {"Retry-After": "7"}),
        (lambda e: e.Busy(1), 503, "service_unavailable", {"Retry-After": "1"}),
        (lambda e: e.Unavailable(), 503, "service_unavailable", {"Retry-After": "5"}),
        (
            lambda e: e.AuthFailed("invalid_token", 'Bearer realm="x"'),
            401,
            "invalid_token",
            {"WWW-Authenticate": 'Bearer realm="x"'},
        ),
        (lambda e: e.Problem("not_found"), 404, "not_found", {}),
    ],
)
def test_typed_errors_carry_data_the_renderer_makes_headers_of(
    app, raise_it, status, code, headers
):
    from authsvc import errors

    with app.test_request_context():
        response = errors.handle_error(raise_it(errors))
    assert (response.status_code, response.json["code"]) == (status, code)
    assert response.mimetype == errors.PROBLEM_MIMETYPE
    for name in ("Retry-After", "WWW-Authenticate", "Allow"):
        assert response.headers.get(name) == headers.get(name), name
