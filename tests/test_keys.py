"""Signing keys: which key signs, how keys rotate and are shared, where they come from.

Anything that rotates keys, generates keys of another algorithm or uses another
secret does so on a fresh database of the current backend, since the shared one
keeps its ``signing_keys`` between tests.
"""

from __future__ import annotations

import hashlib
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from helpers import (
    JWKS_PATH,
    PASSWORD,
    PRIVATE_MEMBERS,
    b64url,
    claims_of,
    forge,
    genuine,
    header_of,
    jwks,
    me,
    now_of,
    payload_like,
    private_key_of,
    problem,
    published,
    ring,
    sign_in,
    signup,
)
from sqlalchemy import func, select

import authsvc.keys as keys_module
from authsvc.config import ConfigError
from authsvc.db import get_session
from authsvc.models import SigningKey

OTHER_SECRET = "another-secret-" + "y" * 40

# --- helpers ------------------------------------------------------------------


def key_list(app) -> dict[str, tuple[str, str]]:
    """``authsvc keys list`` as {kid: (algorithm, state)}; every line checked."""
    result = app.test_cli_runner().invoke(args=["keys", "list"])
    assert result.exit_code == 0, result.output
    listed = {}
    for line in result.output.splitlines():
        kid, algorithm, state, signs, verifies = line.split("\t")
        assert signs.startswith("signs from ")
        assert (verifies == "-") == (state in {"published", "active"}), line
        listed[kid] = (algorithm, state)
    return listed


def states(app) -> dict[str, str]:
    return {kid: state for kid, (_, state) in key_list(app).items()}


def thumbprint(private_key) -> str:
    """RFC 7638 JWK thumbprint, computed from the key's numbers, not by the service."""
    public = private_key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        numbers = public.public_numbers()
        members = {
            "e": b64url(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
            "kty": "RSA",
            "n": b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
        }
    elif isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        members = {"crv": "Ed25519", "kty": "OKP", "x": b64url(raw)}
    else:
        numbers = public.public_numbers()
        members = {
            "crv": "P-256",
            "kty": "EC",
            "x": b64url(numbers.x.to_bytes(32, "big")),
            "y": b64url(numbers.y.to_bytes(32, "big")),
        }
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


def pem(private_key, *, password: bytes | None = None) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def _ec_key():
    return ec.generate_private_key(ec.SECP256R1())


def _rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def count_keys(app) -> int:
    with app.app_context():
        return get_session().scalar(select(func.count()).select_from(SigningKey))


# --- tokens name their key ----------------------------------------------------


def test_token_header_carries_kid_and_rs256_by_default(app, client, tokens):
    header = header_of(tokens["access_token"])
    assert header["alg"] == "RS256"
    assert header["typ"] == "at+jwt"
    assert isinstance(header["kid"], str) and header["kid"]
    assert app.config["JWT_ALGORITHM"] == "RS256"
    assert header["kid"] in published(client)
    assert me(client, tokens["access_token"]).status_code == 200


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA"])
def test_other_asymmetric_algorithms_sign_and_verify(fresh_app, algorithm):
    app = fresh_app(JWT_ALGORITHM=algorithm)
    client = app.test_client()
    tokens = signup(client)
    header = header_of(tokens["access_token"])
    assert header["alg"] == algorithm
    assert header["typ"] == "at+jwt"
    assert header["kid"] in published(client)
    response = me(client, tokens["access_token"])
    assert response.status_code == 200, response.json
    assert response.json["username"] == "alice"
    (jwk,) = jwks(client)
    assert jwk["alg"] == algorithm
    assert jwk["kty"] == {"ES256": "EC", "EdDSA": "OKP"}[algorithm]


def test_hs256_when_chosen_works_and_publishes_nothing(make_app):
    app = make_app(JWT_ALGORITHM="HS256")
    client = app.test_client()
    tokens = signup(client)
    header = header_of(tokens["access_token"])
    assert header["alg"] == "HS256"
    assert header["kid"]
    assert me(client, tokens["access_token"]).status_code == 200
    response = client.get(JWKS_PATH)
    assert response.status_code == 200
    assert response.json == {"keys": []}


def test_hs256_token_is_not_accepted_by_the_rs256_app(client, make_app):
    other = make_app(JWT_ALGORITHM="HS256").test_client()
    tokens = signup(other)
    problem(me(client, tokens["access_token"]), "invalid_token", 401)


# --- keys are shared through the database ------------------------------------


def test_apps_sharing_database_and_secret_share_keys(fresh_app):
    first = fresh_app()
    second = fresh_app(first.config["DATABASE_URL"])
    one, two = first.test_client(), second.test_client()
    from_first = signup(one, "alice")["access_token"]
    from_second = signup(two, "bob")["access_token"]
    assert header_of(from_first)["kid"] == header_of(from_second)["kid"]
    assert me(two, from_first).json["username"] == "alice"
    assert me(one, from_second).json["username"] == "bob"
    assert published(one) == published(two) == {header_of(from_first)["kid"]}
    assert count_keys(first) == 1


def test_another_secret_never_signs_with_another_key(fresh_app):
    first = fresh_app()
    client = first.test_client()
    token = signup(client)["access_token"]
    kid = header_of(token)["kid"]
    other = fresh_app(first.config["DATABASE_URL"], SECRET_KEY=OTHER_SECRET)
    stranger = other.test_client()
    # The stored key cannot be decrypted: the ring refuses to load at all...
    with pytest.raises(RuntimeError, match="AUTHSVC_SECRET_KEY"):
        ring(other).states(other.config["CLOCK"]())
    # ...so through the API nothing is signed, verified or published: a 500.
    response = stranger.post("/login", json={"username": "alice", "password": PASSWORD})
    body = problem(response, "internal_error", 500)
    assert "access_token" not in body
    assert "BEGIN" not in response.get_data(as_text=True)
    problem(stranger.get(JWKS_PATH), "internal_error", 500)
    assert me(stranger, token).status_code == 500
    # No key of its own was made, and the first app still works with the one key.
    assert count_keys(first) == 1
    assert published(client) == {kid}
    assert me(client, sign_in(client)["access_token"]).status_code == 200


# --- rotation -------------------------------------------------------------------


def test_rotation_walk(fresh_app, clock):
    delay, ttl = 3600, 900
    app = fresh_app(KEY_PUBLISH_DELAY=delay, ACCESS_TOKEN_TTL=ttl)
    client = app.test_client()
    runner = app.test_cli_runner()

    # Key A signs from the first start.
    first = signup(client)["access_token"]
    a = header_of(first)["kid"]
    assert states(app) == {a: "active"}
    assert key_list(app)[a][0] == "RS256"
    assert published(client) == {a}

    # Rotate: B is published at once but does not sign yet.
    result = runner.invoke(args=["keys", "rotate"])
    assert result.exit_code == 0, result.output
    b = next(kid for kid in states(app) if kid != a)
    assert b in result.output
    assert states(app) == {a: "active", b: "published"}
    assert published(client) == {a, b}
    assert header_of(sign_in(client)["access_token"])["kid"] == a
    clock.advance(delay - 1)
    last_of_a = sign_in(client)["access_token"]
    assert header_of(last_of_a)["kid"] == a
    assert states(app) == {a: "active", b: "published"}

    # The delay has passed: B signs, A only verifies.
    clock.advance(1)
    switched_at = now_of(app)
    first_of_b = sign_in(client)["access_token"]
    assert header_of(first_of_b)["kid"] == b
    assert states(app) == {a: "retiring", b: "active"}
    assert published(client) == {a, b}
    assert me(client, last_of_a).status_code == 200
    assert me(client, first_of_b).status_code == 200
    problem(me(client, first), "token_expired", 401)
    key_a = private_key_of(app, a)

    # No token of A is refused early: the last one lives until its exp.
    clock.advance(ttl - 2)
    assert claims_of(last_of_a)["exp"] == switched_at - 1 + ttl
    assert me(client, last_of_a).status_code == 200
    assert states(app) == {a: "retiring", b: "active"}
    assert a in published(client)
    clock.advance(1)
    problem(me(client, last_of_a), "token_expired", 401)

    # Every token A signed has expired; A stays retiring a little longer, for
    # an instance that signed with it until it re-read the ring, then is gone.
    clock.advance(1)
    assert now_of(app) == switched_at + ttl
    assert states(app) == {a: "retiring", b: "active"}
    clock.advance(keys_module.RELOAD_INTERVAL)
    assert states(app) == {a: "gone", b: "active"}
    assert published(client) == {b}
    # A token made with A's key now, alive by its own claims, is refused...
    late = forge(payload_like(first_of_b, app), key_a, "RS256", kid=a)
    problem(me(client, late), "invalid_token", 401)
    # ...while the same claims signed with B are fine, so only the key is wrong.
    same = forge(payload_like(first_of_b, app), private_key_of(app, b), "RS256", kid=b)
    assert me(client, same).status_code == 200
    assert header_of(sign_in(client)["access_token"])["kid"] == b


def test_a_token_once_accepted_is_refused_when_its_key_is_gone(fresh_app, clock):
    delay, ttl = 60, 900
    app = fresh_app(KEY_PUBLISH_DELAY=delay, ACCESS_TOKEN_TTL=ttl)
    client = app.test_client()
    token = signup(client)["access_token"]
    a = header_of(token)["kid"]
    # Alive by its own claims long after A is gone, as only a thief's copy of A
    # would make it; accepted now, so the service has verified it once.
    lasting = forge(
        payload_like(token, app, exp=now_of(app) + 100 * ttl),
        private_key_of(app, a),
        "RS256",
        kid=a,
    )
    assert me(client, lasting).status_code == 200

    assert app.test_cli_runner().invoke(args=["keys", "rotate"]).exit_code == 0
    clock.advance(delay + ttl + app.config["JWT_LEEWAY"] + keys_module.RELOAD_INTERVAL)
    assert states(app)[a] == "gone"
    problem(me(client, lasting), "invalid_token", 401)


def test_rotation_is_seen_by_another_instance(fresh_app, clock):
    first = fresh_app()
    second = fresh_app(first.config["DATABASE_URL"])
    one, two = first.test_client(), second.test_client()
    a = header_of(signup(one)["access_token"])["kid"]
    assert published(two) == {a}
    assert first.test_cli_runner().invoke(args=["keys", "rotate"]).exit_code == 0
    clock.advance(first.config["KEY_PUBLISH_DELAY"])
    token = sign_in(one)["access_token"]
    b = header_of(token)["kid"]
    assert b != a
    # The second instance has not re-read its ring yet, but a token naming a kid
    # it does not know makes it look again.
    assert me(two, token).status_code == 200
    assert published(two) == {a, b}


def test_first_key_signs_at_once_whoever_creates_it(fresh_app, clock):
    """The first key must sign tokens issued in the very second it was created."""
    clock.current = clock.current.replace(microsecond=500_000)
    app = fresh_app()
    client = app.test_client()
    assert len(jwks(client)) == 1  # the JWKS is the first to load the ring
    clock.current = clock.current.replace(microsecond=700_000)
    response = client.post("/users", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 201
    response = client.post("/login", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200, response.json


def test_switching_algorithm_on_an_existing_database(fresh_app):
    first = fresh_app()
    signup(first.test_client())
    switched = fresh_app(first.config["DATABASE_URL"], JWT_ALGORITHM="ES256")
    client = switched.test_client()
    response = client.post("/login", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200, response.json
    assert header_of(response.json["access_token"])["alg"] == "ES256"
    assert me(client, response.json["access_token"]).status_code == 200


def refreshed(client, tokens: dict) -> dict:
    response = client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert response.status_code == 200, response.json
    return response.json


def stand_still() -> float:
    """A monotonic clock that never moves: no ring is re-read for its age."""
    return 1000.0


def instances(fresh_app, count: int, **changes) -> list:
    """``count`` apps on one new database, their rings never re-read for their age."""
    first = fresh_app(MONOTONIC=stand_still, **changes)
    url = first.config["DATABASE_URL"]
    return [first] + [
        fresh_app(url, MONOTONIC=stand_still, **changes) for _ in range(count - 1)
    ]


def test_a_key_rotated_in_with_no_delay_is_published_and_signs_everywhere_at_once(
    fresh_app, clock
):
    one, two, operator = instances(fresh_app, 3, KEY_PUBLISH_DELAY=0)
    clients = [one.test_client(), two.test_client()]
    tokens = [signup(clients[0]), sign_in(clients[1])]
    a = header_of(tokens[0]["access_token"])["kid"]
    # Each has read its ring: the JWKS, a login and a refresh of each used it.
    for client, issued in zip(clients, list(tokens), strict=True):
        assert published(client) == {a}
        assert header_of(issued["access_token"])["kid"] == a
        tokens.append(refreshed(client, issued))
        assert header_of(tokens[-1]["access_token"])["kid"] == a

    # `authsvc keys rotate`, as from another process: no serving ring is told.
    result = operator.test_cli_runner().invoke(args=["keys", "rotate"])
    assert result.exit_code == 0, result.output
    b = next(kid for kid in states(operator) if kid != a)

    # Neither the clock nor the monotonic clock moved, yet every JWKS lists B
    # and every login and refresh of either signs with it.
    signed = []
    for client, issued in zip(clients, tokens[2:], strict=True):
        assert published(client) == {a, b}
        signed.append(sign_in(client)["access_token"])
        signed.append(refreshed(client, issued)["access_token"])
    assert [header_of(token)["kid"] for token in signed] == [b] * 4
    for client in clients:
        for token in signed:
            assert me(client, token).status_code == 200


def test_a_key_rotated_in_with_a_delay_is_published_at_once_and_signs_when_due(
    fresh_app, clock
):
    delay = 3600
    one, two, operator = instances(fresh_app, 3, KEY_PUBLISH_DELAY=delay)
    clients = [one.test_client(), two.test_client()]
    a = header_of(signup(clients[0])["access_token"])["kid"]
    for client in clients:
        assert published(client) == {a}
        assert header_of(sign_in(client)["access_token"])["kid"] == a
    assert operator.test_cli_runner().invoke(args=["keys", "rotate"]).exit_code == 0
    b = next(kid for kid in states(operator) if kid != a)
    for client in clients:
        assert published(client) == {a, b}
        assert header_of(sign_in(client)["access_token"])["kid"] == a
    clock.advance(delay - 1)
    for client in clients:
        assert header_of(sign_in(client)["access_token"])["kid"] == a
    clock.advance(1)
    for client in clients:
        token = sign_in(client)["access_token"]
        assert header_of(token)["kid"] == b
        for other in clients:
            assert header_of(token)["kid"] in published(other)
            assert me(other, token).status_code == 200


def test_no_worker_signs_with_a_key_another_worker_does_not_publish(fresh_app, clock):
    """Whichever order rotations, logins, refreshes and JWKS requests come in."""
    apps = instances(fresh_app, 3, KEY_PUBLISH_DELAY=0)
    clients = [app.test_client() for app in apps]
    tokens = [signup(clients[0])]
    for round_ in range(3):
        for n, client in enumerate(clients):
            if (n + round_) % 3 == 0:
                result = apps[n].test_cli_runner().invoke(args=["keys", "rotate"])
                assert result.exit_code == 0, result.output
            tokens.append(refreshed(client, tokens[-1]))
            tokens.append(sign_in(client))
            kids = {header_of(t["access_token"])["kid"] for t in tokens[-2:]}
            for other in clients:
                assert kids <= published(other)


def test_an_unknown_kid_costs_a_look_at_the_version_not_a_reload(
    fresh_app, monkeypatch
):
    app = fresh_app(MONOTONIC=stand_still)
    client = app.test_client()
    token = signup(client)["access_token"]
    source = ring(app).source
    loads = []
    original = source.load
    monkeypatch.setattr(source, "load", lambda now: loads.append(now) or original(now))
    for kid in ("no-such-key", "x"):
        forged = forge(payload_like(token, app), genuine(app, token), "RS256", kid=kid)
        problem(me(client, forged), "invalid_token", 401)
    assert loads == []
    assert me(client, token).status_code == 200


# --- operator-supplied keys (AUTHSVC_SIGNING_KEY_FILE) ------------------------


@pytest.mark.parametrize(
    ("algorithm", "make_key"),
    [
        ("RS256", lambda: _rsa_key()),
        ("EdDSA", ed25519.Ed25519PrivateKey.generate),
        ("ES256", lambda: _ec_key()),
    ],
)
def test_signing_key_file_signs_with_its_key(make_app, tmp_path, algorithm, make_key):
    private_key = make_key()
    path = tmp_path / "signing.pem"
    path.write_bytes(pem(private_key))
    app = make_app(JWT_ALGORITHM=algorithm, SIGNING_KEY_FILE=str(path))
    client = app.test_client()
    token = signup(client)["access_token"]
    header = header_of(token)
    assert header["alg"] == algorithm
    assert header["kid"] == thumbprint(private_key)
    (jwk,) = jwks(client)
    assert jwk["kid"] == header["kid"]
    assert not PRIVATE_MEMBERS & jwk.keys()
    jwt.decode(
        token, private_key.public_key(), algorithms=[algorithm], audience="authsvc"
    )
    assert me(client, token).status_code == 200
    assert key_list(app) == {header["kid"]: (algorithm, "active")}


def test_signing_key_file_is_not_rotated(make_app, tmp_path):
    path = tmp_path / "signing.pem"
    path.write_bytes(pem(ed25519.Ed25519PrivateKey.generate()))
    app = make_app(JWT_ALGORITHM="EdDSA", SIGNING_KEY_FILE=str(path))
    before = key_list(app)
    result = app.test_cli_runner().invoke(args=["keys", "rotate"])
    assert result.exit_code == 1
    assert "AUTHSVC_SIGNING_KEY_FILE" in result.output
    assert "Traceback" not in result.output
    assert key_list(app) == before


def test_hs256_is_not_rotated(make_app):
    app = make_app(JWT_ALGORITHM="HS256")
    result = app.test_cli_runner().invoke(args=["keys", "rotate"])
    assert result.exit_code == 1
    assert "HS256" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("algorithm", "content"),
    [
        ("RS256", lambda: b"this is not a key\n"),
        ("RS256", lambda: b""),
        ("RS256", lambda: pem(_ec_key())),
        ("EdDSA", lambda: pem(_rsa_key())),
        ("ES256", lambda: pem(ec.generate_private_key(ec.SECP384R1()))),
        ("RS256", lambda: pem(_rsa_key(), password=b"hunter2hunter2")),
        (
            "RS256",
            lambda: (
                _rsa_key()
                .public_key()
                .public_bytes(
                    serialization.Encoding.PEM,
                    serialization.PublicFormat.SubjectPublicKeyInfo,
                )
            ),
        ),
        ("RS256", None),
    ],
    ids=[
        "not-pem",
        "empty",
        "ec-for-rs256",
        "rsa-for-eddsa",
        "p384-for-es256",
        "encrypted",
        "public-key",
        "missing",
    ],
)
def test_bad_signing_key_file_stops_start_up(make_app, tmp_path, algorithm, content):
    path = tmp_path / "signing.pem"
    if content is not None:
        path.write_bytes(content())
    with pytest.raises(ConfigError, match="AUTHSVC_SIGNING_KEY_FILE") as raised:
        make_app(JWT_ALGORITHM=algorithm, SIGNING_KEY_FILE=str(path))
    assert "PRIVATE KEY" not in str(raised.value)


# --- what is stored -------------------------------------------------------------


def test_private_key_is_stored_encrypted(fresh_app):
    app = fresh_app()
    signup(app.test_client())
    with app.app_context():
        rows = get_session().scalars(select(SigningKey)).all()
    assert len(rows) == 1
    assert rows[0].private_key.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert not PRIVATE_MEMBERS & rows[0].public_jwk.keys()
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(rows[0].private_key, password=None)
