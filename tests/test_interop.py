"""Tokens of a live server, verified by JOSE libraries that are not PyJWT.

Other services check authsvc's access tokens on their own, with whatever JOSE
library their stack has, from the live ``/.well-known/jwks.json``. Here two do:
Node's ``jose`` (installed with npm into a folder of this run; skipped, loudly,
only when there is no Node at all) and Python's ``joserfc``. Both must accept a
real token, refuse a forged one, and keep accepting tokens after a key rotation,
once the new key signs, by fetching the JWKS again when they meet its ``kid``.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import PASSWORD
from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import KeySet
from live import (
    BIN,
    FAST_HASHING,
    TIMEOUT,
    UNTHROTTLED,
    LiveServer,
    clean_env,
    serve_command,
)

pytestmark = pytest.mark.live

ISSUER = AUDIENCE = "authsvc"
ACCESS_TOKEN_TYPE = "at+jwt"
#: The publish delay of the rotation test: short, but long enough to observe.
PUBLISH_DELAY = 2
#: Members of a JWK that only a private key has (RFC 7518, section 6).
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

#: The Node verifier: ``node verify.mjs JWKS_URL [TOKEN...]`` prints one JSON
#: line per token and exits 1 if any was refused; without tokens it reads them
#: from stdin, one per line, and answers each at once: a long-lived verifier
#: whose cached key set outlives a key rotation.
VERIFY_MJS = """\
import { createInterface } from "node:readline";
import { createRemoteJWKSet, jwtVerify } from "jose";

const [jwksUrl, ...tokens] = process.argv.slice(2);
const jwks = createRemoteJWKSet(new URL(jwksUrl), {
  // How soon after a fetch a token with an unknown kid may cause another one.
  cooldownDuration: Number(process.env.JWKS_COOLDOWN_MS ?? 30000),
});
const options = {
  issuer: "authsvc",
  audience: "authsvc",
  typ: "at+jwt",
  algorithms: ["RS256"],
};

async function verify(token) {
  try {
    const { payload, protectedHeader } = await jwtVerify(token, jwks, options);
    return { ok: true, payload, header: protectedHeader };
  } catch (error) {
    process.exitCode = 1;
    return { ok: false, code: error.code ?? null, error: String(error) };
  }
}

if (tokens.length > 0) {
  for (const token of tokens) console.log(JSON.stringify(await verify(token)));
} else {
  for await (const line of createInterface({ input: process.stdin })) {
    if (line.trim()) console.log(JSON.stringify(await verify(line.trim())));
  }
}
"""


# --- a live server ------------------------------------------------------------


def server_env(folder: Path, **settings: str) -> dict[str, str]:
    """The environment of a server, and of CLI commands on the same database."""
    return clean_env(
        **{
            "SECRET_KEY": "interop-test-secret-" + "i" * 40,
            "DATABASE_URL": f"sqlite:///{folder / 'authsvc.db'}",
            **FAST_HASHING,
            **UNTHROTTLED,
            **settings,
        }
    )


class Server(LiveServer):
    """``authsvc serve --workers 1`` in ``folder``; its output goes to a file."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        super().__init__(serve_command(workers=1), cwd=folder, env=env)

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/.well-known/jwks.json"

    def call(
        self, method: str, path: str, body: dict | None = None, token: str | None = None
    ) -> tuple[int, Any, http.client.HTTPMessage]:
        reply = self.request(method, path, body, token=token)
        return reply.status, reply.body, reply.headers

    def new_user(self) -> dict[str, Any]:
        """Register a user over HTTP; return it with ``password``."""
        username = f"interop{uuid.uuid4().hex[:10]}"
        status, user, _ = self.call(
            "POST", "/users", {"username": username, "password": PASSWORD}
        )
        assert status == 201, user
        return {**user, "password": PASSWORD}

    def login(self, user: dict[str, Any]) -> dict[str, Any]:
        body = {"username": user["username"], "password": user["password"]}
        status, tokens, _ = self.call("POST", "/login", body)
        assert status == 200, tokens
        return tokens


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("interop-serve")
    with Server(folder, server_env(folder)) as live:
        yield live
    live.assert_clean_output()


@pytest.fixture(scope="module")
def login(server: Server) -> dict[str, Any]:
    """A user of the module's server and the reply to its login."""
    user = server.new_user()
    return {"user": user, "tokens": server.login(user)}


# --- tokens -------------------------------------------------------------------


def header_of(token: str) -> dict[str, Any]:
    """The JOSE header of a token, unverified."""
    segment = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def tamper_signature(token: str) -> str:
    """The token with one character in the middle of its signature changed."""
    head, payload, signature = token.split(".")
    i = len(signature) // 2
    other = "B" if signature[i] == "A" else "A"
    return ".".join([head, payload, signature[:i] + other + signature[i + 1 :]])


def assert_claims_of(claims: dict[str, Any], user: dict, tokens: dict) -> None:
    assert claims["iss"] == ISSUER
    assert claims["aud"] == AUDIENCE
    assert claims["sub"] == user["id"]
    assert claims["sid"] == tokens["session_id"]
    assert claims["roles"] == user["roles"]
    assert claims["iat"] <= time.time() + 5 < claims["exp"]


def fetch_jwks(url: str) -> tuple[dict[str, Any], str]:
    """The JWKS at ``url`` and its ``Cache-Control``, fetched with urllib."""
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        assert response.status == 200
        assert response.headers.get_content_type() == "application/json"
        return json.load(response), response.headers["Cache-Control"]


# --- the Python verifier: joserfc ---------------------------------------------


class PythonVerifier:
    """joserfc with the key set of a JWKS URL, fetched again for an unknown kid."""

    def __init__(self, jwks_url: str) -> None:
        self.jwks_url = jwks_url
        self.fetches = 0
        self.key_set = self._fetch()

    def _fetch(self) -> KeySet:
        jwks, _ = fetch_jwks(self.jwks_url)
        self.fetches += 1
        return KeySet.import_key_set(jwks)

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid access token; raise :class:`JoseError` if not."""
        kid = header_of(token).get("kid")
        if kid not in {key.kid for key in self.key_set}:
            self.key_set = self._fetch()
        decoded = jwt.decode(token, self.key_set, algorithms=["RS256"])
        if decoded.header.get("typ") != ACCESS_TOKEN_TYPE:
            raise JoseError(f"typ is {decoded.header.get('typ')!r}, not at+jwt")
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": ISSUER},
            aud={"essential": True, "value": AUDIENCE},
            exp={"essential": True},
            iat={"essential": True},
            sub={"essential": True},
            jti={"essential": True},
        ).validate(decoded.claims)
        return decoded.claims


# --- the Node verifier: jose --------------------------------------------------


class LiveNodeVerifier:
    """One ``node verify.mjs JWKS_URL`` process, fed tokens on stdin."""

    def __init__(self, node: str, script: Path, jwks_url: str, cooldown_ms: int):
        env = {**os.environ, "JWKS_COOLDOWN_MS": str(cooldown_ms)}
        self.process = subprocess.Popen(
            [node, script, jwks_url],
            cwd=script.parent,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def verify(self, token: str) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(token + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], TIMEOUT)
        assert ready, "the Node verifier did not answer"
        line = self.process.stdout.readline()
        assert line, f"the Node verifier exited with {self.process.wait(TIMEOUT)}"
        return json.loads(line)

    def close(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=TIMEOUT)
        self.process.stdout.close()


class NodeJose:
    """Node and a folder holding ``jose`` and ``verify.mjs``."""

    def __init__(self, node: str, script: Path, version: str) -> None:
        self.node = node
        self.script = script
        self.version = version

    def verify(self, jwks_url: str, *tokens: str) -> list[dict[str, Any]]:
        """Verify tokens in one ``node verify.mjs`` run; its answer for each."""
        result = subprocess.run(
            [self.node, self.script, jwks_url, *tokens],
            cwd=self.script.parent,
            capture_output=True,
            text=True,
            timeout=TIMEOUT * 2,
            check=False,
        )
        answers = [json.loads(line) for line in result.stdout.splitlines()]
        assert len(answers) == len(tokens), result
        assert result.returncode == (0 if all(a["ok"] for a in answers) else 1), result
        return answers

    def start(self, jwks_url: str, *, cooldown_ms: int) -> LiveNodeVerifier:
        return LiveNodeVerifier(self.node, self.script, jwks_url, cooldown_ms)


@pytest.fixture(scope="session")
def node_jose(tmp_path_factory: pytest.TempPathFactory) -> NodeJose:
    """``jose`` installed with npm into a folder of this run, once per run.

    Without Node the Node checks are skipped, loudly; anything else that goes
    wrong, an unreachable registry included, is a failure: CI must run them.
    """
    node = shutil.which("node")
    if node is None:
        reason = (
            "NODE IS NOT INSTALLED: tokens were NOT checked with Node's jose; "
            "install Node.js (with npm) to run these interoperability tests"
        )
        sys.__stderr__.write(f"\n\n*** WARNING: {reason} ***\n\n")
        pytest.skip(reason)
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(f"node is at {node} but npm is not on PATH: cannot install jose")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, check=True
    ).stdout
    # jose 6 needs the WebCrypto global of Node 20; jose 5 has the same API.
    spec = "jose@6" if int(version.lstrip("v").split(".")[0]) >= 20 else "jose@5"
    folder = tmp_path_factory.mktemp("node-jose")
    (folder / "package.json").write_text(json.dumps({"private": True}))
    env = {
        **os.environ,
        # Keep npm's cache and logs in this folder: nothing is left in ~/.npm.
        "npm_config_cache": str(folder / ".npm-cache"),
        "npm_config_update_notifier": "false",
    }
    result = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--silent", spec],
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        # --silent keeps npm quiet even when it fails: its log says why.
        logs = sorted((folder / ".npm-cache" / "_logs").glob("*.log"))
        lines = logs[-1].read_text().splitlines(True) if logs else []
        why = "".join(line for line in lines if re.search(r" error (?!\s+at )", line))
        pytest.fail(
            f"`npm install {spec}` failed with exit status {result.returncode} "
            f"(is the npm registry reachable?):\n{result.stdout}{result.stderr}{why}"
        )
    package = json.loads((folder / "node_modules/jose/package.json").read_text())
    script = folder / "verify.mjs"
    script.write_text(VERIFY_MJS)
    return NodeJose(node, script, package["version"])


# --- the key set ----------------------------------------------------------------


def test_jwks_is_a_public_key_set_other_libraries_read(server, login):
    jwks, cache_control = fetch_jwks(server.jwks_url)

    assert re.fullmatch(r"public, max-age=\d+", cache_control), cache_control
    assert len(jwks["keys"]) == 1
    for jwk in jwks["keys"]:
        assert jwk["kty"] == "RSA"
        assert jwk["alg"] == "RS256"
        assert jwk["use"] == "sig"
        assert not PRIVATE_MEMBERS & jwk.keys(), jwk
    key_set = KeySet.import_key_set(jwks)
    for key in key_set:
        assert not key.is_private
        # The kid is the RFC 7638 thumbprint, as joserfc computes it too.
        assert key.kid == key.thumbprint()
    assert header_of(login["tokens"]["access_token"])["kid"] == jwks["keys"][0]["kid"]


# --- Python: joserfc ------------------------------------------------------------


def test_joserfc_verifies_a_live_token(server, login):
    token = login["tokens"]["access_token"]

    claims = PythonVerifier(server.jwks_url).verify(token)

    assert_claims_of(claims, login["user"], login["tokens"])
    header = header_of(token)
    assert header["typ"] == ACCESS_TOKEN_TYPE
    assert header["alg"] == "RS256"


def test_joserfc_refuses_a_token_with_a_changed_signature(server, login):
    verifier = PythonVerifier(server.jwks_url)
    token = login["tokens"]["access_token"]
    verifier.verify(token)

    with pytest.raises(BadSignatureError):
        verifier.verify(tamper_signature(token))


# --- Node: jose -----------------------------------------------------------------


def test_node_jose_verifies_a_live_token(server, login, node_jose):
    token = login["tokens"]["access_token"]

    (answer,) = node_jose.verify(server.jwks_url, token)

    assert answer["ok"], answer
    assert_claims_of(answer["payload"], login["user"], login["tokens"])
    assert answer["header"]["typ"] == ACCESS_TOKEN_TYPE
    assert answer["header"]["kid"] == header_of(token)["kid"]


def test_node_jose_refuses_a_token_with_a_changed_signature(server, login, node_jose):
    token = login["tokens"]["access_token"]

    good, forged = node_jose.verify(server.jwks_url, token, tamper_signature(token))

    assert good["ok"], good
    assert not forged["ok"]
    assert forged["code"] == "ERR_JWS_SIGNATURE_VERIFICATION_FAILED", forged


# --- key rotation ---------------------------------------------------------------


@pytest.mark.parametrize("library", ["joserfc", "jose"])
def test_verifiers_accept_the_new_key_once_it_signs(library, tmp_path, request):
    """Rotate on a live deployment; a verifier that cached the old key set copes.

    The server rereads its key ring only every ``keys.RELOAD_INTERVAL`` seconds,
    so it is restarted on the same port after ``authsvc keys rotate``, as a
    deployment would be: the verifier's JWKS URL stays the same.
    """
    env = server_env(tmp_path, KEY_PUBLISH_DELAY=str(PUBLISH_DELAY))
    live = Server(tmp_path, env)
    verifier: PythonVerifier | LiveNodeVerifier | None = None
    try:
        user = live.new_user()
        before = live.login(user)
        old_kid = header_of(before["access_token"])["kid"]
        if library == "jose":
            node_jose: NodeJose = request.getfixturevalue("node_jose")
            # jose fetches again for an unknown kid only 30 s after its last
            # fetch by default; a verifier that wants new keys sooner says so.
            verifier = node_jose.start(live.jwks_url, cooldown_ms=0)
            answer = verifier.verify(before["access_token"])
            assert answer["ok"], answer
        else:
            verifier = PythonVerifier(live.jwks_url)
            verifier.verify(before["access_token"])

        rotated_at = time.time()
        result = subprocess.run(
            [BIN / "authsvc", "keys", "rotate"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result
        match = re.search(r"published key (\S+);", result.stdout)
        assert match, result.stdout
        new_kid = match[1]
        assert new_kid != old_kid

        live.stop()
        live.assert_clean_output()
        live.start()  # on the same port
        jwks, cache_control = fetch_jwks(live.jwks_url)
        assert {key["kid"] for key in jwks["keys"]} == {old_kid, new_kid}
        assert cache_control == f"public, max-age={PUBLISH_DELAY}"

        # Poll until the new key signs: never before the delay, soon after it.
        deadline = rotated_at + PUBLISH_DELAY + 10
        while True:
            after = live.login(user)
            kid = header_of(after["access_token"])["kid"]
            if kid == new_kid:
                break
            assert kid == old_kid
            assert time.time() < deadline, "the new key never started signing"
            time.sleep(0.2)
        assert time.time() >= rotated_at + PUBLISH_DELAY

        # The verifier meets an unknown kid, fetches the key set again, and
        # accepts new and old tokens alike; a forged new one it refuses.
        if isinstance(verifier, PythonVerifier):
            assert_claims_of(verifier.verify(after["access_token"]), user, after)
            assert verifier.fetches == 2
            assert_claims_of(verifier.verify(before["access_token"]), user, before)
            with pytest.raises(BadSignatureError):
                verifier.verify(tamper_signature(after["access_token"]))
        else:
            answer = verifier.verify(after["access_token"])
            assert answer["ok"], answer
            assert answer["header"]["kid"] == new_kid
            assert_claims_of(answer["payload"], user, after)
            answer = verifier.verify(before["access_token"])
            assert answer["ok"], answer
            assert answer["header"]["kid"] == old_kid
            answer = verifier.verify(tamper_signature(after["access_token"]))
            assert answer["code"] == "ERR_JWS_SIGNATURE_VERIFICATION_FAILED", answer
        # The server itself takes both, of course.
        for tokens in (before, after):
            status, me, _ = live.call("GET", "/me", token=tokens["access_token"])
            assert status == 200, me
    finally:
        if isinstance(verifier, LiveNodeVerifier):
            verifier.close()
        live.stop()
    live.assert_clean_output()
