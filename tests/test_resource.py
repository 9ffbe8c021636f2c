"""The resource-server companion (``authsvc.resource``) against a live authsvc.

A real ``authsvc serve`` issues the tokens, publishes the JWKS and answers
``/introspect``; the example API of ``examples/resource_app.py`` accepts them,
through Flask's test client and once as a real ``flask run`` process. Tokens
that must be refused are made the way an attacker or a misconfigured issuer
would: by hand, or with the live service's own signing key (read from its
database) so that exactly one thing about them is wrong. Counting JWKS fetches
uses a small local server that serves the live authsvc's key set.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from flask import Flask
from flask_login import current_user, login_required
from helpers import PASSWORD, b64url
from live import (
    BIN,
    FAST_HASHING,
    TIMEOUT,
    UNTHROTTLED,
    LiveServer,
    clean_env,
    free_port,
    serve_command,
)
from sqlalchemy import create_engine

from authsvc import create_app, tokens
from authsvc import resource as companion
from authsvc.key_store import DatabaseKeys, Key
from authsvc.resource import KeySet, ResourceServer, roles_required

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "resource_app.py"
SECRET_KEY = "resource-test-secret-" + "r" * 40
INTROSPECTION_SECRET = "resource-introspection-" + "i" * 24
PROBLEM = "application/problem+json"
CHALLENGE = 'Bearer realm="authsvc"'
INVALID_TOKEN = 'Bearer realm="authsvc", error="invalid_token"'
INSUFFICIENT_SCOPE = 'Bearer realm="authsvc", error="insufficient_scope"'


# --- processes ------------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on (bound and released at once)."""
    return free_port()


class Authsvc(LiveServer):
    """``authsvc serve`` on its own SQLite database, and its CLI on the same one."""

    def __init__(self, folder: Path, **settings: str) -> None:
        self.database_url = f"sqlite:///{folder / 'authsvc.db'}"
        env = clean_env(
            **{
                "DATABASE_URL": self.database_url,
                "INSTANCE_PATH": str(folder / "instance"),
                "SECRET_KEY": SECRET_KEY,
                **FAST_HASHING,
                **UNTHROTTLED,
                "INTROSPECTION_SECRET": INTROSPECTION_SECRET,
                **settings,
            }
        )
        super().__init__(serve_command(workers=2), cwd=folder, env=env)

    def cli(self, *args: str) -> str:
        """Run ``authsvc ARGS`` on the same database and secret; return its output."""
        done = subprocess.run(
            [str(BIN / "authsvc"), *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def rotate_keys_ago(self, seconds: int) -> str:
        """``authsvc keys rotate`` as if run ``seconds`` ago; return its output.

        The command runs in this process, on the same database and settings, with
        the app's clock set back: a key rotated with that publish delay signs now,
        and no test waits the delay out.
        """
        settings = {
            name.removeprefix("AUTHSVC_"): value
            for name, value in self.env.items()
            if name.startswith("AUTHSVC_")
        }
        then = datetime.now(UTC) - timedelta(seconds=seconds)
        app = create_app({**settings, "CLOCK": lambda: then})
        try:
            result = app.test_cli_runner().invoke(args=["keys", "rotate"])
        finally:
            app.extensions["authsvc.db"].dispose()
        assert result.exit_code == 0, result.output
        return result.output

    def register(self, prefix: str = "user") -> str:
        username = f"{prefix}{uuid.uuid4().hex[:8]}"
        reply = self.request(
            "POST", "/users", body={"username": username, "password": PASSWORD}
        )
        assert reply.status == 201, reply.body
        return username

    def login(self, username: str) -> dict[str, Any]:
        reply = self.request(
            "POST", "/login", body={"username": username, "password": PASSWORD}
        )
        assert reply.status == 200, reply.body
        return reply.body

    def me(self, access_token: str) -> dict[str, Any]:
        reply = self.request("GET", "/me", token=access_token)
        assert reply.status == 200, reply.body
        return reply.body

    def jwks(self) -> dict[str, Any]:
        reply = self.request("GET", "/.well-known/jwks.json")
        assert reply.status == 200, reply.body
        return reply.body


class JwksServer:
    """A local HTTP server serving a JWKS document; counts fetches, can be slow."""

    def __init__(self, document: dict[str, Any], *, delay: float = 0.0) -> None:
        self.document = document
        self.delay = delay
        self.fetches = 0
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with owner._lock:
                    owner.fetches += 1
                time.sleep(owner.delay)
                data = json.dumps(owner.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


class FakeMonotonic:
    """Stands in for the ``time`` module of ``authsvc.resource``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- the companion apps ---------------------------------------------------------------


def load_example(monkeypatch: pytest.MonkeyPatch, authsvc_url: str) -> ModuleType:
    """Import ``examples/resource_app.py`` afresh, configured for ``authsvc_url``."""
    monkeypatch.setenv("AUTHSVC_URL", authsvc_url)
    monkeypatch.setenv("AUTHSVC_INTROSPECTION_SECRET", INTROSPECTION_SECRET)
    monkeypatch.delenv("AUTHSVC_ISSUER", raising=False)
    monkeypatch.delenv("AUTHSVC_AUDIENCE", raising=False)
    name = f"resource_app_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


def companion_app(jwks_url: str, **options: Any) -> tuple[Flask, ResourceServer]:
    """An app of our own built like the example, with ``ResourceServer`` options."""
    app = Flask(f"companion_{uuid.uuid4().hex}")
    resource = ResourceServer(app, jwks_url=jwks_url, **options)

    @app.get("/hello")
    @login_required
    def hello() -> dict[str, object]:
        return {"hello": current_user.username, "id": current_user.id}

    @app.get("/reports")
    @roles_required("reporter")
    def reports() -> dict[str, object]:
        return {"roles": list(current_user.roles)}

    @app.post("/transfer")
    @resource.introspected
    def transfer() -> dict[str, object]:
        return {"transferred": True, "session": current_user.session_id}

    return app, resource


def get(client: Any, path: str, token: str | None = None, method: str = "GET"):
    """Call the companion; no response of it ever sets a cookie."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    response = client.open(path, method=method, headers=headers)
    assert response.headers.getlist("Set-Cookie") == []
    return response


#: The companion's own detail for each code it answers with.
COMPANION_DETAILS = {
    "invalid_request": "Invalid request.",
    "authentication_required": "Authentication required.",
    "invalid_token": "Invalid token.",
    "token_expired": "Token expired.",
    "token_revoked": "Token revoked.",
    "insufficient_scope": "Insufficient scope.",
}


def assert_problem(
    response: Any, status: int, code: str, *, detail: str | None = None
) -> None:
    """``response`` is exactly the companion's problem+json for ``code``."""
    assert response.status_code == status, response.data
    assert response.mimetype == PROBLEM
    assert response.json == {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": COMPANION_DETAILS[code] if detail is None else detail,
        "code": code,
    }


def assert_refused(response: Any, code: str = "invalid_token") -> None:
    """401 with ``code`` and the RFC 6750 ``error="invalid_token"`` challenge."""
    assert_problem(response, 401, code)
    assert response.headers["WWW-Authenticate"] == INVALID_TOKEN


# --- tokens made by hand --------------------------------------------------------------


def hand_signed_hs256(header: dict, claims: dict, secret: bytes) -> str:
    """An HS256 JWS made with ``hmac``, as PyJWT refuses PEM keys as HMAC secrets."""
    signing_input = ".".join(
        b64url(json.dumps(part, separators=(",", ":")).encode())
        for part in (header, claims)
    )
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def flip_signature(token: str) -> str:
    """The same token with one byte of its signature changed."""
    head, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{head}.{payload}.{b64url(bytes(raw))}"


def replace_payload(token: str, **changes: Any) -> str:
    """The same header and signature over claims changed by an attacker."""
    head, _, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    claims.update(changes)
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
    return f"{head}.{payload}.{signature}"


@dataclass
class Forger:
    """Makes tokens with the live authsvc's own signing key."""

    key: Key

    def claims(self, **changes: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "iss": "authsvc",
            "aud": "authsvc",
            "sub": str(uuid.uuid4()),
            "sid": str(uuid.uuid4()),
            "jti": uuid.uuid4().hex,
            "iat": now,
            "exp": now + 300,
            "roles": [],
            "preferred_username": "mallory",
        }
        claims.update(changes)
        return {name: value for name, value in claims.items() if value is not None}

    def sign(self, header: dict | None = None, **changes: Any) -> str:
        headers = {"typ": "at+jwt", "kid": self.key.kid, **(header or {})}
        return jwt.encode(
            self.claims(**changes),
            self.key.signing_key,
            algorithm=self.key.algorithm,
            headers=headers,
        )

    def public_pem(self) -> bytes:
        return self.key.verifying_key.public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Authsvc]:
    """One real authsvc for the module, with introspection enabled."""
    with Authsvc(tmp_path_factory.mktemp("authsvc")) as server:
        yield server
    assert "Traceback" not in server.output()


@pytest.fixture(scope="module")
def example(live: Authsvc) -> Iterator[ModuleType]:
    """``examples/resource_app.py``, imported with AUTHSVC_URL of the live authsvc."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield load_example(monkeypatch, live.url)


@pytest.fixture
def client(example: ModuleType) -> Any:
    return example.app.test_client()


@pytest.fixture(scope="module")
def forger(live: Authsvc) -> Forger:
    """The live authsvc's active signing key, decrypted from its database."""
    published = {jwk["kid"] for jwk in live.jwks()["keys"]}
    engine = create_engine(live.database_url)
    try:
        keys = DatabaseKeys(engine, SECRET_KEY, "RS256").load(datetime.now(UTC))
    finally:
        engine.dispose()
    assert [key.kid for key in keys] == sorted(published)
    return Forger(keys[0])


@pytest.fixture
def jwks_server(live: Authsvc) -> Iterator[JwksServer]:
    """A local copy of the live authsvc's JWKS that counts its fetches."""
    server = JwksServer(live.jwks())
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> FakeMonotonic:
    """The KeySet's clock, moved by the test (nothing else's)."""
    clock = FakeMonotonic()
    monkeypatch.setattr(companion, "time", clock)
    return clock


@pytest.fixture
def user(live: Authsvc) -> tuple[str, dict[str, Any]]:
    """A fresh user of the live authsvc and the tokens of their login."""
    username = live.register()
    return username, live.login(username)


# --- /hello: local verification -------------------------------------------------------


@pytest.mark.live
def test_hello_accepts_a_live_token(live, client, user):
    username, issued = user
    subject = live.me(issued["access_token"])["id"]

    response = get(client, "/hello", issued["access_token"])

    assert response.status_code == 200, response.data
    assert response.json == {"hello": username, "id": subject}


@pytest.mark.live
def test_hello_without_a_token_asks_for_one(client):
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}):
        response = client.get("/hello", headers=headers)
        assert response.headers.getlist("Set-Cookie") == []
        assert_problem(response, 401, "authentication_required")
        assert response.headers["WWW-Authenticate"] == CHALLENGE


@pytest.mark.live
def test_a_token_made_with_the_live_key_is_accepted(client, forger):
    """The control for the refusals below: only the one changed thing is wrong."""
    token = forger.sign(roles=["reporter"])

    assert get(client, "/hello", token).json["hello"] == "mallory"
    assert get(client, "/reports", token).status_code == 200


def _hs256_from_an_hs256_authsvc(forger: Forger, live_token: str) -> str:
    # What an authsvc with AUTHSVC_JWT_ALGORITHM=HS256 and the same secret issues.
    key = tokens.derive_key(SECRET_KEY, "access-token")
    return jwt.encode(
        forger.claims(),
        key,
        algorithm="HS256",
        headers={"typ": "at+jwt", "kid": tokens.key_id(key)},
    )


def _hs256_with_the_public_key_as_secret(forger: Forger, live_token: str) -> str:
    # Algorithm confusion: the published RSA key used as an HMAC secret.
    header = {"alg": "HS256", "typ": "at+jwt", "kid": forger.key.kid}
    return hand_signed_hs256(header, forger.claims(), forger.public_pem())


def _alg_none(forger: Forger, live_token: str) -> str:
    header = {"alg": "none", "typ": "at+jwt", "kid": forger.key.kid}
    parts = (json.dumps(p).encode() for p in (header, forger.claims()))
    return ".".join(b64url(part) for part in parts) + "."


REFUSED: dict[str, Callable[[Forger, str], str]] = {
    "garbage": lambda f, t: "garbage",
    "three garbage parts": lambda f, t: "abc.def.ghi",
    "signature changed": lambda f, t: flip_signature(t),
    "claims changed": lambda f, t: replace_payload(t, roles=["reporter", "admin"]),
    "signature stripped": lambda f, t: t.rsplit(".", 1)[0] + ".",
    "wrong audience": lambda f, t: f.sign(aud="other"),
    "wrong issuer": lambda f, t: f.sign(iss="https://evil.example"),
    "not an access token (typ JWT)": lambda f, t: f.sign(header={"typ": "JWT"}),
    "no sid": lambda f, t: f.sign(sid=None),
    "no exp": lambda f, t: f.sign(exp=None),
    "roles not a list": lambda f, t: f.sign(roles="admin"),
    "unknown kid": lambda f, t: f.sign(header={"kid": "no-such-key"}),
    "alg none": _alg_none,
    "HS256 from an HS256 authsvc": _hs256_from_an_hs256_authsvc,
    "HS256 with the public key as secret": _hs256_with_the_public_key_as_secret,
    "expired and forged": lambda f, t: flip_signature(
        f.sign(iat=int(time.time()) - 600, exp=int(time.time()) - 60)
    ),
}


@pytest.mark.live
@pytest.mark.parametrize("case", REFUSED)
def test_hello_refuses_a_bad_token(client, forger, user, case):
    token = REFUSED[case](forger, user[1]["access_token"])

    assert_refused(get(client, "/hello", token), "invalid_token")


@pytest.mark.live
def test_hello_refuses_the_refresh_token(client, user):
    assert_refused(get(client, "/hello", user[1]["refresh_token"]), "invalid_token")


@pytest.mark.live
def test_hello_refuses_an_expired_token_as_expired(client, forger):
    now = int(time.time())
    token = forger.sign(iat=now - 600, exp=now - 60)

    assert_refused(get(client, "/hello", token), "token_expired")


@pytest.mark.live
def test_a_token_for_another_audience_from_its_authsvc_is_refused(client, forger):
    """The live key signing for ``aud: other``: what AUTHSVC_AUDIENCE=other issues."""
    token = forger.sign(aud="other", iss="authsvc")
    claims = jwt.decode(
        token, forger.key.verifying_key, algorithms=["RS256"], audience="other"
    )
    assert claims["aud"] == "other"

    assert_refused(get(client, "/hello", token))


# --- /reports: roles ------------------------------------------------------------------


@pytest.mark.live
def test_reports_needs_the_role_granted_by_the_cli(live, client, user):
    username, issued = user

    response = get(client, "/reports", issued["access_token"])
    assert_problem(response, 403, "insufficient_scope")
    assert response.headers["WWW-Authenticate"] == INSUFFICIENT_SCOPE
    assert_problem(get(client, "/reports"), 401, "authentication_required")

    assert "granted reporter" in live.cli("users", "grant", username, "reporter")
    again = live.login(username)

    response = get(client, "/reports", again["access_token"])
    assert response.status_code == 200, response.data
    assert response.json == {"reports": [], "roles": ["reporter"]}
    # Granting revoked the old session: introspection sees it, local checks cannot.
    assert get(client, "/hello", issued["access_token"]).status_code == 200
    assert_refused(
        get(client, "/transfer", issued["access_token"], "POST"), "token_revoked"
    )


# --- /transfer: introspection ---------------------------------------------------------


@pytest.mark.live
def test_transfer_sees_a_logout_at_once(live, client, user):
    token = user[1]["access_token"]

    response = get(client, "/transfer", token, "POST")
    assert response.status_code == 200, response.data
    assert response.json == {"transferred": True, "session": user[1]["session_id"]}

    assert live.request("POST", "/logout", token=token).status == 204

    # Until it expires the token still verifies locally ...
    assert get(client, "/hello", token).status_code == 200
    # ... but a view that asks authsvc refuses it at once.
    assert_refused(get(client, "/transfer", token, "POST"), "token_revoked")
    assert_problem(
        get(client, "/transfer", method="POST"), 401, "authentication_required"
    )


@pytest.mark.live
@pytest.mark.parametrize(
    "where",
    ["authsvc unreachable", "wrong introspection secret"],
)
def test_transfer_fails_closed(live, user, where):
    introspection_url = f"{live.url}/introspect"
    secret: str | None = INTROSPECTION_SECRET
    if where == "authsvc unreachable":
        introspection_url = f"http://127.0.0.1:{closed_port()}/introspect"
    else:
        secret = "not-the-introspection-secret"
    app, _ = companion_app(
        f"{live.url}/.well-known/jwks.json",
        introspection_url=introspection_url,
        introspection_secret=secret,
    )
    client = app.test_client()
    token = user[1]["access_token"]

    assert get(client, "/hello", token).status_code == 200
    response = get(client, "/transfer", token, "POST")
    assert response.status_code == 401, response.data
    assert response.mimetype == PROBLEM
    assert response.headers["WWW-Authenticate"] == INVALID_TOKEN


# --- the JWKS cache -------------------------------------------------------------------


@pytest.mark.live
def test_jwks_is_fetched_once_for_a_known_kid(jwks_server, forger, user):
    app, _ = companion_app(jwks_server.url)
    client = app.test_client()
    assert jwks_server.fetches == 0  # nothing is fetched before a token comes

    for _ in range(15):
        assert get(client, "/hello", user[1]["access_token"]).status_code == 200
        assert get(client, "/hello", forger.sign()).status_code == 200

    assert jwks_server.fetches == 1


@pytest.mark.live
def test_an_unknown_kid_refetches_at_most_once_per_interval(
    jwks_server, forger, fake_clock
):
    app, _ = companion_app(jwks_server.url, refetch_interval=30)
    client = app.test_client()
    known, unknown = forger.sign(), forger.sign(header={"kid": "rotated-later"})

    assert get(client, "/hello", known).status_code == 200
    assert jwks_server.fetches == 1
    for _ in range(10):
        assert_refused(get(client, "/hello", unknown))
    assert jwks_server.fetches == 1  # fetched just now: no refetch yet

    fake_clock.advance(29.9)
    assert_refused(get(client, "/hello", unknown))
    assert jwks_server.fetches == 1

    fake_clock.advance(0.1)
    for _ in range(10):
        assert_refused(get(client, "/hello", unknown))
    assert jwks_server.fetches == 2

    fake_clock.advance(300)
    assert get(client, "/hello", known).status_code == 200
    assert jwks_server.fetches == 2  # a known kid never refetches

    assert_refused(get(client, "/hello", unknown))
    assert jwks_server.fetches == 3


@pytest.mark.live
def test_unknown_kids_in_parallel_refetch_once(jwks_server, forger, fake_clock):
    keys = KeySet(jwks_server.url, refetch_interval=30)
    assert keys.get(forger.key.kid) is not None
    fake_clock.advance(30)
    jwks_server.delay = 0.3
    barrier = threading.Barrier(8, timeout=TIMEOUT)

    found: list[object] = []

    def look_up(index: int) -> None:
        barrier.wait()
        found.append(keys.get(f"unknown-{index}"))

    threads = [threading.Thread(target=look_up, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=TIMEOUT)

    assert found == [None] * 8
    assert jwks_server.fetches == 2


@pytest.mark.live
def test_parallel_first_requests_all_wait_for_the_one_fetch(jwks_server, user):
    app, _ = companion_app(jwks_server.url)
    jwks_server.delay = 0.5
    token = user[1]["access_token"]
    barrier = threading.Barrier(8, timeout=TIMEOUT)
    statuses: list[int] = []

    def hello() -> None:
        client = app.test_client()
        barrier.wait()
        statuses.append(get(client, "/hello", token).status_code)

    threads = [threading.Thread(target=hello) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=TIMEOUT)

    assert jwks_server.fetches == 1
    assert statuses == [200] * 8


@pytest.mark.live
def test_a_rotated_key_is_accepted_after_the_refetch(tmp_path):
    """``authsvc keys rotate``; once the new key signs, the companion refetches."""
    delay = 2
    authsvc = Authsvc(tmp_path, KEY_PUBLISH_DELAY=str(delay))
    try:
        username = authsvc.register()
        old = authsvc.login(username)["access_token"]
        old_kid = jwt.get_unverified_header(old)["kid"]
        app, resource = companion_app(
            f"{authsvc.url}/.well-known/jwks.json", refetch_interval=1
        )
        fetch = resource.keys._fetch
        fetches: list[float] = []

        def counted() -> None:
            fetches.append(time.monotonic())
            fetch()

        resource.keys._fetch = counted  # type: ignore[method-assign]
        client = app.test_client()
        assert get(client, "/hello", old).status_code == 200
        assert len(fetches) == 1

        rotated = authsvc.rotate_keys_ago(delay)
        # A running authsvc re-reads its keys once a minute: start a fresh one
        # on the same port, now that the new key signs.
        authsvc.stop()
        authsvc.start()
        published = {jwk["kid"] for jwk in authsvc.jwks()["keys"]}
        assert old_kid in published and len(published) == 2
        (new_kid,) = published - {old_kid}
        assert new_kid in rotated, rotated

        new = authsvc.login(username)["access_token"]
        assert jwt.get_unverified_header(new)["kid"] == new_kid

        response = get(client, "/hello", new)
        assert response.status_code == 200, response.data
        assert response.json["hello"] == username
        assert len(fetches) == 2
        # The old key is still published while its tokens may be alive.
        assert get(client, "/hello", old).status_code == 200
        assert len(fetches) == 2
    finally:
        authsvc.stop()


# --- the example as a real server -----------------------------------------------------


@pytest.mark.live
def test_example_app_under_flask_run(live, user, tmp_path):
    env = clean_env(URL=live.url, INTROSPECTION_SECRET=INTROSPECTION_SECRET)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    argv = [str(BIN / "flask"), "--app", str(EXAMPLE), "run", "--port", "{port}"]
    server = LiveServer(
        argv, cwd=ROOT, env=env, log=tmp_path / "flask.log", ready=("/hello", 401)
    )
    try:
        username, issued = user
        token = issued["access_token"]

        reply = server.request("GET", "/hello", token=token)
        assert reply.status == 200, reply.body
        assert reply.body == {"hello": username, "id": live.me(token)["id"]}
        assert reply.headers.get_all("Set-Cookie") is None

        reply = server.request("GET", "/hello")
        assert reply.status == 401
        assert reply.headers["Content-Type"] == PROBLEM
        assert reply.headers["WWW-Authenticate"] == CHALLENGE
        assert reply.body["code"] == "authentication_required"

        reply = server.request("POST", "/transfer", token=token)
        assert reply.status == 200, reply.body
    finally:
        server.stop()
    assert "Traceback" not in server.output()


# --- configuration and request edge cases ---------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1/jwks.json",
        "/.well-known/jwks.json",
        "127.0.0.1:8000/.well-known/jwks.json",
        "javascript:alert(1)",
    ],
)
def test_resource_server_refuses_non_http_urls(url):
    with pytest.raises(ValueError, match="http"):
        ResourceServer(jwks_url=url)
    with pytest.raises(ValueError, match="http"):
        ResourceServer(
            jwks_url="https://auth.example.com/.well-known/jwks.json",
            introspection_url=url,
            introspection_secret="s",
        )
    with pytest.raises(ValueError, match="http"):
        KeySet(url)


@pytest.mark.live
@pytest.mark.parametrize(
    "cookie",
    [
        pytest.param(
            "stale",
        ),
        pytest.param(
            "payload|digest",
        ),
    ],
)
def test_a_remember_cookie_does_not_hide_the_bearer_token(example, user, cookie):
    client = example.app.test_client()
    client.set_cookie("remember_token", cookie)

    response = get(client, "/hello", user[1]["access_token"])

    assert response.status_code == 200, response.data


@pytest.mark.live
@pytest.mark.parametrize("value", ["Bearer", "Bearer ", "Bearer one two"])
def test_a_malformed_bearer_header_is_invalid_request(client, value):
    response = client.get("/hello", headers={"Authorization": value})

    assert_problem(response, 400, "invalid_request")
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="authsvc", error="invalid_request"'
    )


def test_introspection_needs_its_secret():
    with pytest.raises(ValueError, match="introspection_secret"):
        ResourceServer(
            jwks_url="https://auth.example.com/.well-known/jwks.json",
            introspection_url="https://auth.example.com/introspect",
        )


def test_importing_the_companion_loads_nothing_of_the_service(tmp_path):
    script = "import json, sys, authsvc.resource; print(json.dumps(list(sys.modules)))"
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", script],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    ours = {name for name in loaded if name.split(".")[0] == "authsvc"}
    assert ours == {"authsvc", "authsvc.bearer", "authsvc.errors", "authsvc.resource"}
    roots = {name.split(".")[0] for name in loaded}
    assert not roots & {"sqlalchemy", "prometheus_client"}
