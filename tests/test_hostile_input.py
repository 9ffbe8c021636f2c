"""Hostile input against the real server: raw HTTP to ``authsvc serve``.

``test_errors.py`` covers malformed bodies through the Flask test client. This
module proves the same rules hold where the test client cannot reach: behind
gunicorn, over a socket, with chunked bodies that carry no Content-Length,
header bytes that are not ASCII, repeated headers and 64 KiB header fields.
Every answer must be the contract's problem+json, never a 500, and no hostile
request may change what the database holds.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest
from helpers import (
    BODY_BAD_CHARACTERS,
    BODY_NOT_AN_OBJECT,
    BODY_NOT_JSON,
    PASSWORD,
    problem_body,
    unreadable,
)
from live import FAST_HASHING, LiveServer, clean_env, serve_command
from sqlalchemy import create_engine, text

pytestmark = pytest.mark.live

LIMIT = 64 * 1024
SECRET = "hostile-input-secret-" + "s" * 40
PATHS = ["/login", "/refresh", "/users"]
#: The tables whose rows are counted against the control user's.
TABLES = ("users", "sessions", "refresh_tokens")
#: The tables no hostile request may change at all: not even a throttle counter,
#: since a body refused as malformed is no login or registration attempt.
GUARDED = (*TABLES, "throttle_counters")


# --- the server -------------------------------------------------------------


class Running(LiveServer):
    """``authsvc serve --workers 2`` on SQLite in ``folder``, a fresh directory."""

    def __init__(self, folder: Path) -> None:
        self.database = folder / "authsvc.db"
        env = clean_env(
            SECRET_KEY=SECRET, DATABASE_URL=f"sqlite:///{self.database}", **FAST_HASHING
        )
        env["PYTHONUNBUFFERED"] = "1"
        super().__init__(serve_command(workers=2), cwd=folder, env=env)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """The module's server; its output can be read while it runs."""
    with Running(tmp_path_factory.mktemp("hostile")) as running:
        yield running


# --- raw HTTP ---------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: Message
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


def _send(sock: socket.socket, parts: Sequence[bytes]) -> None:
    # The server may answer (413) and close before it has read everything; the
    # reply is what matters, so a refused remainder is not an error.
    try:
        for part in parts:
            sock.sendall(part)
    except OSError:
        pass


def exchange(port: int, head: bytes, parts: Sequence[bytes] = ()) -> Reply:
    """Send a request line plus headers ``head`` and body ``parts``; read the reply.

    ``head`` holds the request line and any headers, each ending in CRLF; Host
    and Connection are added here. The body is sent from a thread so that a
    server answering early is read even while the body is still going out.
    """
    method = head.split(b" ", 1)[0].decode()
    request = head + b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sender = threading.Thread(target=_send, args=(sock, [request, *parts]))
        sender.start()
        response = http.client.HTTPResponse(sock, method=method)
        try:
            response.begin()
            body = response.read()
        finally:
            response.close()
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sender.join(30)
    return Reply(response.status, response.headers, body)


def chunks(body: bytes, size: int = 8192) -> list[bytes]:
    """``body`` in chunked transfer coding, ``size`` bytes per chunk."""
    out = [
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
        for i in range(0, len(body), size)
    ]
    return [*out, b"0\r\n\r\n"]


def post(
    port: int, path: str, body: bytes, *, chunked: bool = False, size: int = 8192
) -> Reply:
    """POST ``body`` as JSON, with a Content-Length or chunked with none."""
    head = b"POST %s HTTP/1.1\r\nContent-Type: application/json\r\n" % path.encode()
    if chunked:
        return exchange(
            port, head + b"Transfer-Encoding: chunked\r\n", chunks(body, size)
        )
    return exchange(port, head + b"Content-Length: %d\r\n" % len(body), [body])


def get_me(port: int, *auth: bytes) -> Reply:
    """GET /me with each of ``auth`` as a raw Authorization header value."""
    head = b"GET /me HTTP/1.1\r\n" + b"".join(
        b"Authorization: " + value + b"\r\n" for value in auth
    )
    return exchange(port, head)


def assert_problem(
    reply: Reply,
    status: int,
    code: str,
    *,
    detail: str | None = None,
    errors: dict[str, str] | None = None,
) -> dict:
    """``reply`` is exactly the contract's problem+json for ``code``, never a 500."""
    assert reply.status != 500, reply.body[:500]
    assert reply.headers.get_content_type() == "application/problem+json", (
        reply.status,
        reply.headers.get("Content-Type"),
        reply.body[:500],
    )
    body = reply.json()
    assert reply.status == status, body
    assert body == problem_body(code, status, detail=detail, errors=errors)
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    for leak in ("Traceback", 'File "', "/work", "site-packages", SECRET):
        assert leak not in reply.body.decode("utf-8", "replace")
    return body


# --- the database -----------------------------------------------------------


def snapshot(database: Path, tables: Sequence[str] = GUARDED) -> dict[str, list]:
    """Every row of ``tables``, as text, in a stable order."""
    engine = create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as connection:
            return {
                table: sorted(
                    tuple(map(str, row))
                    for row in connection.execute(text(f"SELECT * FROM {table}"))  # noqa: S608
                )
                for table in tables
            }
    finally:
        engine.dispose()


def counts(database: Path) -> dict[str, int]:
    return {table: len(rows) for table, rows in snapshot(database, TABLES).items()}


@dataclass
class Ledger:
    """The control user's tokens and the row counts the database should show."""

    access_token: str
    expected: dict[str, int]


@pytest.fixture(scope="module")
def ledger(server: Running) -> Ledger:
    """Register and log in a control user; count rows relative to that."""
    user = {"username": "control", "password": PASSWORD}
    reply = post(server.port, "/users", json.dumps(user).encode())
    assert reply.status == 201, reply.body
    reply = post(server.port, "/login", json.dumps(user).encode())
    assert reply.status == 200, reply.body
    tokens = reply.json()
    expected = counts(server.database)
    assert expected["users"] == 1
    assert expected["sessions"] == 1
    return Ledger(tokens["access_token"], expected)


@contextlib.contextmanager
def no_writes(server: Running) -> Iterator[None]:
    """Fail unless the block leaves every row of the guarded tables as it was."""
    before = snapshot(server.database)
    yield
    assert snapshot(server.database) == before, "a hostile request changed rows"


# --- hostile bodies ---------------------------------------------------------

#: Per path, a body that is valid but for its last field, whose raw JSON value
#: replaces ``@``. Were the hostile value let through, /users would answer 201,
#: /login 401 and /refresh 401, so a 400 proves the parser refused it.
CARRIERS = {
    "/login": b'{"username": "nobody", "password": @}',
    "/refresh": b'{"refresh_token": @}',
    "/users": b'{"username": "mallory", "password": @}',
}
#: The same bodies with every field valid, for unknown and duplicate fields.
VALID = {
    "/login": {"username": "nobody", "password": PASSWORD},
    "/refresh": {"refresh_token": "r" * 43},
    "/users": {"username": "mallory", "password": PASSWORD},
}
LAST_FIELD = {"/login": "password", "/refresh": "refresh_token", "/users": "password"}


def carried(value: bytes):
    return lambda path: CARRIERS[path].replace(b"@", value)


def whole(body: bytes):
    return lambda path: body


def with_field(name: str, value: object):
    return lambda path: json.dumps({**VALID[path], name: value}).encode()


def duplicated(path: str) -> bytes:
    field = LAST_FIELD[path]
    first = json.dumps({**VALID[path], field: "x" * 3}).encode()
    return first[:-1] + b", %s: %s}" % (
        json.dumps(field).encode(),
        json.dumps(VALID[path][field]).encode(),
    )


def duplicated_by_escape(path: str) -> bytes:
    # "\u0070assword" is "password": the same key spelt twice, the valid value last.
    field = LAST_FIELD[path]
    escaped = f"\\u{ord(field[0]):04x}{field[1:]}"
    first = json.dumps({**VALID[path], field: "x" * 3}).encode()
    value = json.dumps(VALID[path][field])
    return first[:-1] + f', "{escaped}": {value}}}'.encode()


def nul_in_key(path: str) -> bytes:
    body = json.dumps(VALID[path]).encode()
    return body[:-1] + b', "pass\\u0000word": "x"}'


def padded_to(size: int):
    """A body of exactly ``size`` bytes: valid fields plus an unknown ``pad``."""

    def make(path: str) -> bytes:
        empty = json.dumps({**VALID[path], "pad": ""}).encode()
        body = json.dumps({**VALID[path], "pad": "p" * (size - len(empty))}).encode()
        assert len(body) == size
        return body

    return make


def nested_in_field(depth: int):
    return carried(b"[" * depth + b"]" * depth)


def nested_objects(depth: int):
    return whole(b'{"a":' * depth + b"1" + b"}" * depth)


MILLION = 1_000_000
STRING = "correct horse battery staple "

BAD_400 = [
    ("top-level-array", whole(b"[]")),
    ("top-level-array-of-object", lambda path: json.dumps([VALID[path]]).encode()),
    ("top-level-string", whole(b'"alice"')),
    ("top-level-number", whole(b"42")),
    ("top-level-null", whole(b"null")),
    ("top-level-true", whole(b"true")),
    ("empty", whole(b"")),
    ("truncated", lambda path: json.dumps(VALID[path]).encode()[:-1]),
    ("NaN", carried(b"NaN")),
    ("Infinity", carried(b"Infinity")),
    ("-Infinity", carried(b"-Infinity")),
    ("nan-in-nested-array", carried(b"[1, [NaN]]")),
    ("invalid-utf8-fffe", carried(b'"' + STRING.encode() + b'\xff\xfe"')),
    ("invalid-utf8-latin1-e9", carried(b'"caf\xe9 ' + STRING.encode() + b'"')),
    ("invalid-utf8-overlong", carried(b'"' + STRING.encode() + b'\xc0\xaf"')),
    ("invalid-utf8-truncated", carried(b'"' + STRING.encode() + b'\xe2\x82"')),
    ("utf8-encoded-surrogate", carried(b'"' + STRING.encode() + b'\xed\xa0\x80"')),
    ("lone-high-surrogate", carried(b'"' + STRING.encode() + b'\\ud800"')),
    ("lone-low-surrogate", carried(b'"\\udfff' + STRING.encode() + b'"')),
    ("reversed-surrogates", carried(b'"' + STRING.encode() + b'\\udc00\\ud800"')),
    ("lone-surrogate-in-key", whole(b'{"\\ud800": "x"}')),
    ("nul-escape", carried(b'"' + STRING.encode() + b'\\u0000"')),
    ("nul-escape-in-key", nul_in_key),
    ("raw-nul-byte", carried(b'"' + STRING.encode() + b'\x00"')),
    ("raw-control-byte", carried(b'"' + STRING.encode() + b'\x1b"')),
    ("duplicate-key", duplicated),
    ("duplicate-key-by-escape", duplicated_by_escape),
    ("unknown-field-roles", with_field("roles", ["admin"])),
    ("unknown-field-id", with_field("id", "00000000-0000-0000-0000-000000000000")),
    ("unknown-field-__proto__", with_field("__proto__", {"admin": True})),
    ("nested-20000-in-field", nested_in_field(20_000)),
    ("nested-20000-top-level", whole(b"[" * 20_000 + b"]" * 20_000)),
    ("nested-10000-objects", nested_objects(10_000)),
    ("exactly-64-KiB", padded_to(LIMIT)),
]


#: What the service answers to each of BAD_400: problem()'s keywords.
ANSWERS_400 = {
    "top-level-array": unreadable(BODY_NOT_AN_OBJECT),
    "top-level-array-of-object": unreadable(BODY_NOT_AN_OBJECT),
    "top-level-string": unreadable(BODY_NOT_AN_OBJECT),
    "top-level-number": unreadable(BODY_NOT_AN_OBJECT),
    "top-level-null": unreadable(BODY_NOT_AN_OBJECT),
    "top-level-true": unreadable(BODY_NOT_AN_OBJECT),
    "empty": unreadable(BODY_NOT_JSON),
    "truncated": unreadable(BODY_NOT_JSON),
    "NaN": unreadable(BODY_NOT_JSON),
    "Infinity": unreadable(BODY_NOT_JSON),
    "-Infinity": unreadable(BODY_NOT_JSON),
    "nan-in-nested-array": unreadable(BODY_NOT_JSON),
    "invalid-utf8-fffe": unreadable(BODY_NOT_JSON),
    "invalid-utf8-latin1-e9": unreadable(BODY_NOT_JSON),
    "invalid-utf8-overlong": unreadable(BODY_NOT_JSON),
    "invalid-utf8-truncated": unreadable(BODY_NOT_JSON),
    "raw-nul-byte": unreadable(BODY_NOT_JSON),
    "raw-control-byte": unreadable(BODY_NOT_JSON),
    "duplicate-key": unreadable(BODY_NOT_JSON),
    "duplicate-key-by-escape": unreadable(BODY_NOT_JSON),
    "nested-20000-in-field": unreadable(BODY_NOT_JSON),
    "nested-20000-top-level": unreadable(BODY_NOT_JSON),
    "nested-10000-objects": unreadable(BODY_NOT_JSON),
    "utf8-encoded-surrogate": unreadable(BODY_BAD_CHARACTERS),
    "lone-high-surrogate": unreadable(BODY_BAD_CHARACTERS),
    "lone-low-surrogate": unreadable(BODY_BAD_CHARACTERS),
    "reversed-surrogates": unreadable(BODY_BAD_CHARACTERS),
    "lone-surrogate-in-key": unreadable(BODY_BAD_CHARACTERS),
    "nul-escape": unreadable(BODY_BAD_CHARACTERS),
    "nul-escape-in-key": unreadable(BODY_BAD_CHARACTERS),
    "unknown-field-roles": {"errors": {"roles": "is not a known field"}},
    "unknown-field-id": {"errors": {"id": "is not a known field"}},
    "unknown-field-__proto__": {"errors": {"__proto__": "is not a known field"}},
    "exactly-64-KiB": {"errors": {"pad": "is not a known field"}},
}


def valid_then_spaces(path: str) -> bytes:
    """A complete, acceptable object followed by 128 KiB of JSON whitespace.

    Over the limit, so 413 whatever it holds. Were it read at all, /login and
    /refresh would answer 401 and /users 409 (``control`` exists), so a body
    that slipped past the limit shows without adding a row.
    """
    fields = {**VALID[path], "username": "control"} if path == "/users" else VALID[path]
    return json.dumps(fields).encode() + b" " * (2 * LIMIT)


BAD_413 = [
    ("64-KiB-plus-one", padded_to(LIMIT + 1)),
    ("valid-object-then-128-KiB-of-spaces", valid_then_spaces),
    ("million-char-string", carried(b'"' + b"p" * MILLION + b'"')),
    ("million-escaped-chars", carried(b'"' + b"\\u0041" * (MILLION // 6) + b'"')),
    ("nested-100000-top-level", whole(b"[" * 100_000 + b"]" * 100_000)),
    ("nested-100000-in-field", nested_in_field(100_000)),
    ("nested-100000-objects", nested_objects(100_000)),
]


def body_rows() -> list:
    rows = []
    for framing in ("content-length", "chunked"):
        for name, make in BAD_400:
            rows.append(
                pytest.param(
                    make,
                    framing,
                    400,
                    "validation_error",
                    ANSWERS_400[name],
                    id=f"{name}-{framing}",
                )
            )
        for name, make in BAD_413:
            marks = []
            rows.append(
                pytest.param(
                    make,
                    framing,
                    413,
                    "payload_too_large",
                    {},
                    id=f"{name}-{framing}",
                    marks=marks,
                )
            )
    return rows


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("make", "framing", "status", "code", "answer"), body_rows())
def test_hostile_body(server, ledger, make, framing, status, code, answer, path):
    with no_writes(server):
        reply = post(server.port, path, make(path), chunked=framing == "chunked")
        body = assert_problem(reply, status, code, **answer)
    assert "correct horse" not in json.dumps(body)


@pytest.mark.parametrize("path", PATHS)
def test_chunked_one_byte_chunks_over_64_kib(server, ledger, path):
    with no_writes(server):
        reply = post(
            server.port, path, padded_to(LIMIT + 1024)(path), chunked=True, size=1
        )
        assert_problem(reply, 413, "payload_too_large")


@pytest.mark.parametrize("path", PATHS)
def test_chunk_declared_huge_is_413_without_waiting_for_it(server, ledger, path):
    # One chunk announced as 4 GiB, of which 80 KiB arrive; the rest never does.
    head = (
        b"POST %s HTTP/1.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n" % path.encode()
    )
    with no_writes(server):
        reply = exchange(
            server.port, head, [b"ffffffff\r\n" + padded_to(80 * 1024)(path)]
        )
        assert_problem(reply, 413, "payload_too_large")


@pytest.mark.parametrize("path", PATHS)
def test_content_length_over_64_kib_is_413_before_the_body(server, ledger, path):
    # The declared length alone decides: the server must not wait for the body.
    head = b"POST %s HTTP/1.1\r\nContent-Type: application/json\r\n" % path.encode()
    head += b"Content-Length: %d\r\n" % (LIMIT + 1)
    with no_writes(server):
        reply = exchange(server.port, head, [b'{"username": '])
        assert_problem(reply, 413, "payload_too_large")


# --- chunked bodies that are fine -------------------------------------------


def test_chunked_small_valid_bodies_work(server: Running, ledger: Ledger):
    before = counts(server.database)
    user = {"username": "chunky", "password": PASSWORD}
    reply = post(server.port, "/users", json.dumps(user).encode(), chunked=True, size=7)
    assert reply.status == 201, reply.body
    assert reply.json()["username"] == "chunky"
    reply = post(server.port, "/login", json.dumps(user).encode(), chunked=True)
    assert reply.status == 200, reply.body
    refresh = {"refresh_token": reply.json()["refresh_token"]}
    reply = post(server.port, "/refresh", json.dumps(refresh).encode(), chunked=True)
    assert reply.status == 200, reply.body
    after = counts(server.database)
    assert after["users"] == before["users"] + 1
    assert after["sessions"] == before["sessions"] + 1
    for table in TABLES:
        ledger.expected[table] += after[table] - before[table]


# --- hostile Authorization headers --------------------------------------------

TOKEN = object()  # stands for the control user's valid access token


def _header(value: bytes | object, ledger: Ledger) -> bytes:
    if value is TOKEN:
        return b"Bearer " + ledger.access_token.encode()
    assert isinstance(value, bytes)
    return value


#: A 64 KiB JWT whose header segment decodes to JSON nested 24,000 deep.
NESTED_JWT = (
    base64.urlsafe_b64encode(b"[" * 24_000 + b"]" * 24_000).rstrip(b"=") + b".e30.c2ln"
)


def auth_row(name: str, values: list, status: int, code: str, *marks):
    return pytest.param(values, status, code, id=name, marks=marks)


AUTH_ROWS = [
    auth_row("64-KiB-token", [b"Bearer " + b"A" * LIMIT], 401, "invalid_token"),
    auth_row(
        "64-KiB-jwt-nested-header", [b"Bearer " + NESTED_JWT], 401, "invalid_token"
    ),
    auth_row("latin-1-bytes", [b"Bearer \xe9\xe8"], 401, "invalid_token"),
    auth_row("latin-1-in-jwt", [b"Bearer eyJh.\xff\xfe.sig"], 401, "invalid_token"),
    auth_row("utf-8-bytes", [b"Bearer caf\xc3\xa9"], 401, "invalid_token"),
    auth_row("latin-1-scheme", [b"B\xe9arer abc"], 401, "authentication_required"),
    auth_row("repeated-valid", [TOKEN, TOKEN], 400, "invalid_request"),
    auth_row(
        "repeated-bearer-then-basic", [TOKEN, b"Basic YTpi"], 400, "invalid_request"
    ),
    auth_row(
        "repeated-basic-then-bearer",
        [b"Basic YTpi", TOKEN],
        400,
        "invalid_request",
    ),
    auth_row("repeated-bearer-then-empty", [TOKEN, b""], 400, "invalid_request"),
    auth_row("bearer-no-token", [b"Bearer"], 400, "invalid_request"),
    auth_row("bearer-blank-token", [b"Bearer    "], 400, "invalid_request"),
    auth_row("bearer-two-tokens", [b"Bearer abc def"], 400, "invalid_request"),
    auth_row("bearer-comma-tokens", [b"Bearer abc,def"], 400, "invalid_request"),
    auth_row("nul-byte", [b"Bearer abc\x00def"], 400, "invalid_request"),
    auth_row("control-byte", [b"Bearer abc\x01def"], 400, "invalid_request"),
    auth_row(
        "128-KiB-token", [b"Bearer " + b"A" * (2 * LIMIT)], 431, "headers_too_large"
    ),
]
#: Rows the HTTP server itself refuses before the app sees them: no challenge.
SERVER_LEVEL = {"nul-byte", "control-byte", "128-KiB-token"}


@pytest.mark.parametrize(("values", "status", "code"), AUTH_ROWS)
def test_hostile_authorization(request, server, ledger, values, status, code):
    with no_writes(server):
        reply = get_me(server.port, *(_header(value, ledger) for value in values))
        server_level = request.node.callspec.id in SERVER_LEVEL
        detail = "The request is not valid HTTP." if server_level else None
        assert_problem(reply, status, code, detail=detail)
    if request.node.callspec.id in SERVER_LEVEL:
        assert "WWW-Authenticate" not in reply.headers
        return
    challenge = reply.headers["WWW-Authenticate"]
    if code == "authentication_required":
        assert challenge == 'Bearer realm="authsvc"'
    elif status in (400, 401):
        error = "invalid_request" if status == 400 else "invalid_token"
        assert challenge == f'Bearer realm="authsvc", error="{error}"'


def test_control_token_still_works(server, ledger):
    reply = get_me(server.port, _header(TOKEN, ledger))
    assert reply.status == 200, reply.body
    assert reply.json()["username"] == "control"


# --- afterwards ---------------------------------------------------------------


def test_no_hostile_request_wrote_a_row(server: Running, ledger: Ledger):
    assert counts(server.database) == ledger.expected


def test_server_output_has_no_traceback(server: Running):
    output = server.output()
    assert "Traceback" not in output, output[-4000:]
    assert "Error handling request" not in output
    assert "unhandled exception" not in output
    assert "Listening at: http://127.0.0.1" in output  # the capture works
