"""Signing keys, the JWKS, introspection (RFC 7662) and revocation (RFC 7009).

Tokens are forged the way an attacker or a careless verifier would make them:
with PyJWT, or by hand with ``hmac`` where PyJWT refuses. Anything that rotates
keys, generates keys of another algorithm or uses another secret does so on a
fresh database of the current backend, since the shared one keeps its
``signing_keys`` between tests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from helpers import PASSWORD, bearer, problem
from sqlalchemy import func, select

import authsvc.keys as keys_module
from authsvc.config import ConfigError
from authsvc.db import get_session
from authsvc.migrations import upgrade
from authsvc.models import SigningKey

JWKS_PATH = "/.well-known/jwks.json"
FORM = "application/x-www-form-urlencoded"
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
ASYMMETRIC = ("RS256", "ES256", "EdDSA")
INTROSPECTION_SECRET = "introspection-credential-" + "z" * 24
OTHER_SECRET = "another-secret-" + "y" * 40
TOKEN_KEYS = {
    "active",
    "sub",
    "sid",
    "username",
    "roles",
    "exp",
    "iat",
    "iss",
    "aud",
    "jti",
    "token_type",
}


# --- helpers ------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def header_of(token: str) -> dict:
    return jwt.get_unverified_header(token)


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def signup(client, username: str = "alice", *, password: str = PASSWORD) -> dict:
    """Register ``username`` on ``client``'s app and log in; return the tokens."""
    response = client.post("/users", json={"username": username, "password": password})
    assert response.status_code == 201, response.json
    return sign_in(client, username, password=password)


def sign_in(client, username: str = "alice", *, password: str = PASSWORD) -> dict:
    response = client.post("/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.json
    return response.json


def me(client, token: str):
    return client.get("/me", headers=bearer(token))


def jwks(client) -> list[dict]:
    response = client.get(JWKS_PATH)
    assert response.status_code == 200, response.data
    assert response.mimetype == "application/json"
    assert response.json.keys() == {"keys"}
    return response.json["keys"]


def published(client) -> set[str]:
    return {key["kid"] for key in jwks(client)}


def max_age(response) -> int:
    match = re.search(r"(?:^|[,\s])max-age=(\d+)", response.headers["Cache-Control"])
    assert match, response.headers["Cache-Control"]
    return int(match.group(1))


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


def ring(app):
    return app.extensions["authsvc.keys"]


def private_key_of(app, kid: str):
    """The private key of ``kid`` as the app's key ring holds it."""
    now = app.config["CLOCK"]()
    (key,) = [s.key for s in ring(app).states(now) if s.key.kid == kid]
    return key.signing_key


def now_of(app) -> int:
    return int(app.config["CLOCK"]().timestamp())


def payload_like(token: str, app, **changes) -> dict:
    """The claims of ``token``, re-timed to be alive at the app's now, new ``jti``."""
    now = now_of(app)
    payload = {
        **claims_of(token),
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + 600,
    }
    payload.update(changes)
    return payload


def forge(payload: dict, key, algorithm: str, *, kid: str) -> str:
    """Sign with PyJWT under the header the service uses."""
    headers = {"typ": "at+jwt", "kid": kid}
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


def forge_by_hand(header: dict, payload: dict, sign) -> str:
    """A compact JWS built without PyJWT, signed by ``sign(signing_input)``."""
    signing_input = (
        b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode())
    )
    return signing_input + "." + b64url(sign(signing_input.encode()))


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


def backend_of(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


@pytest.fixture
def fresh_app(make_app, settings, empty_database):
    """An app on a new, migrated database of the current backend.

    ``fresh_app(url)`` builds another app on a database made earlier.
    """

    def make(url: str | None = None, **changes):
        url = url or empty_database(backend_of(settings["DATABASE_URL"]))
        made = make_app(DATABASE_URL=url, **changes)
        upgrade(made)
        return made

    return make


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


# --- the JWKS -----------------------------------------------------------------


def test_jwks_is_cacheable_no_longer_than_the_publish_delay(app, client, tokens):
    response = client.get(JWKS_PATH)
    assert response.status_code == 200
    assert 0 < max_age(response) <= app.config["KEY_PUBLISH_DELAY"]
    assert "no-store" not in response.headers["Cache-Control"]
    assert "private" not in response.headers["Cache-Control"]


@pytest.mark.parametrize("delay", [60, 1])
def test_jwks_max_age_follows_a_short_publish_delay(make_app, delay):
    client = make_app(KEY_PUBLISH_DELAY=delay).test_client()
    response = client.get(JWKS_PATH)
    assert response.status_code == 200
    assert max_age(response) <= delay


@pytest.mark.parametrize("algorithm", ASYMMETRIC)
def test_jwks_keys_are_public_and_verify_tokens(fresh_app, algorithm):
    app = fresh_app(JWT_ALGORITHM=algorithm)
    client = app.test_client()
    token = signup(client)["access_token"]
    keys = jwks(client)
    assert keys
    for jwk in keys:
        assert {"kid", "kty", "alg", "use"} <= jwk.keys()
        assert jwk["use"] == "sig"
        assert jwk["alg"] == algorithm
        assert not PRIVATE_MEMBERS & jwk.keys(), jwk
        assert all(isinstance(value, str) for value in jwk.values())
    kids = [jwk["kid"] for jwk in keys]
    assert len(kids) == len(set(kids))
    kid = header_of(token)["kid"]
    (jwk,) = [jwk for jwk in keys if jwk["kid"] == kid]
    # What a resource server does: pick the JWK by kid and verify with PyJWT.
    key = jwt.PyJWK(jwk)
    claims = jwt.decode(
        token,
        key,
        algorithms=[jwk["alg"]],
        audience=app.config["AUDIENCE"],
        issuer=app.config["ISSUER"],
    )
    assert claims["sub"] == me(client, token).json["id"]
    # ...and the key really is public: it cannot sign.
    assert not hasattr(key.key, "sign")


def test_jwks_never_carries_a_private_part_in_any_state(fresh_app, clock):
    app = fresh_app()
    client = app.test_client()
    signup(client)
    assert app.test_cli_runner().invoke(args=["keys", "rotate"]).exit_code == 0
    clock.advance(app.config["KEY_PUBLISH_DELAY"])
    keys = jwks(client)
    assert len(keys) == 2
    for jwk in keys:
        assert not PRIVATE_MEMBERS & jwk.keys(), jwk
        assert set(jwk) == {"kid", "kty", "alg", "use", "n", "e"}


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


# --- verification picks the key by kid ----------------------------------------


def genuine(app, token: str):
    return private_key_of(app, header_of(token)["kid"])


def test_a_token_made_with_the_genuine_key_is_accepted(app, client, tokens):
    """The control for the forgeries below: only what they change is wrong."""
    token = tokens["access_token"]
    kid = header_of(token)["kid"]
    forged = forge(payload_like(token, app), genuine(app, token), "RS256", kid=kid)
    assert me(client, forged).status_code == 200


def forge_rs256_by_hand(app, token: str, header: dict) -> str:
    """Claims like ``token``'s under ``header``, signed with its genuine key."""
    key = genuine(app, token)
    return forge_by_hand(
        header,
        payload_like(token, app),
        lambda data: key.sign(data, padding.PKCS1v15(), hashes.SHA256()),
    )


def test_a_token_made_by_hand_with_the_genuine_key_is_accepted(app, client, tokens):
    token = tokens["access_token"]
    header = {"alg": "RS256", "typ": "at+jwt", "kid": header_of(token)["kid"]}
    assert me(client, forge_rs256_by_hand(app, token, header)).status_code == 200


@pytest.mark.parametrize("kid", [None, "", "no-such-key", 123, ["x"], {"k": 1}])
def test_unknown_or_missing_kid_is_refused(app, client, tokens, kid):
    token = tokens["access_token"]
    header = {"alg": "RS256", "typ": "at+jwt"}
    if kid is not None:
        header["kid"] = kid
    forged = forge_rs256_by_hand(app, token, header)
    problem(me(client, forged), "invalid_token", 401)


def test_kid_of_another_key_than_the_signer_is_refused(fresh_app, clock):
    app = fresh_app()
    client = app.test_client()
    token = signup(client)["access_token"]
    assert app.test_cli_runner().invoke(args=["keys", "rotate"]).exit_code == 0
    (b,) = published(client) - {header_of(token)["kid"]}
    # Signed by the active key A but naming the published key B.
    header = {"alg": "RS256", "typ": "at+jwt", "kid": b}
    problem(me(client, forge_rs256_by_hand(app, token, header)), "invalid_token", 401)


def test_a_kid_of_another_algorithm_is_refused(app, client, tokens, fresh_app):
    other = fresh_app(JWT_ALGORITHM="ES256")
    es_token = signup(other.test_client())["access_token"]
    # Sign with that ES256 key and its kid, for a session of this app.
    forged = forge(
        payload_like(tokens["access_token"], app),
        genuine(other, es_token),
        "ES256",
        kid=header_of(es_token)["kid"],
    )
    problem(me(client, forged), "invalid_token", 401)


@pytest.mark.parametrize("algorithm", ["PS256", "RS384", "RS512"])
def test_rs256_key_used_with_another_rsa_algorithm_is_refused(
    app, client, tokens, algorithm
):
    token = tokens["access_token"]
    forged = forge(
        payload_like(token, app),
        genuine(app, token),
        algorithm,
        kid=header_of(token)["kid"],
    )
    problem(me(client, forged), "invalid_token", 401)


def test_rs256_header_on_an_es256_key_is_refused(fresh_app):
    app = fresh_app(JWT_ALGORITHM="ES256")
    client = app.test_client()
    token = signup(client)["access_token"]
    kid = header_of(token)["kid"]
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = forge(payload_like(token, app), attacker, "RS256", kid=kid)
    problem(me(client, forged), "invalid_token", 401)
    control = forge(payload_like(token, app), genuine(app, token), "ES256", kid=kid)
    assert me(client, control).status_code == 200


@pytest.mark.parametrize(
    "public_format",
    [
        serialization.PublicFormat.SubjectPublicKeyInfo,
        serialization.PublicFormat.PKCS1,
    ],
)
def test_hs256_signed_with_the_public_key_is_refused(
    app, client, tokens, public_format
):
    """Algorithm confusion: the attacker only has the JWKS."""
    token = tokens["access_token"]
    kid = header_of(token)["kid"]
    (jwk,) = [jwk for jwk in jwks(client) if jwk["kid"] == kid]
    secret = jwt.PyJWK(jwk).key.public_bytes(serialization.Encoding.PEM, public_format)
    forged = forge_by_hand(
        {"alg": "HS256", "typ": "at+jwt", "kid": kid},
        payload_like(token, app),
        lambda data: hmac.new(secret, data, hashlib.sha256).digest(),
    )
    problem(me(client, forged), "invalid_token", 401)


def test_alg_none_with_a_good_kid_is_refused(app, client, tokens):
    token = tokens["access_token"]
    forged = forge_by_hand(
        {"alg": "none", "typ": "at+jwt", "kid": header_of(token)["kid"]},
        payload_like(token, app),
        lambda data: b"",
    )
    problem(me(client, forged), "invalid_token", 401)


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


# --- POST /introspect (RFC 7662) ------------------------------------------------


@pytest.fixture
def inspector(make_app):
    """A client of an app on the same database with introspection enabled."""
    return make_app(INTROSPECTION_SECRET=INTROSPECTION_SECRET).test_client()


def introspect(
    client, token, *, form: bool = False, credential: str | None = INTROSPECTION_SECRET
):
    headers = bearer(credential) if credential is not None else {}
    body = {"token": token} if token is not None else {}
    if form:
        return client.post("/introspect", data=body, content_type=FORM, headers=headers)
    return client.post("/introspect", json=body, headers=headers)


def test_introspection_is_off_without_a_secret(client, tokens):
    problem(introspect(client, tokens["access_token"]), "not_found", 404)
    problem(introspect(client, tokens["access_token"], form=True), "not_found", 404)


def test_introspection_needs_the_credential(inspector, tokens):
    response = introspect(inspector, tokens["access_token"], credential=None)
    problem(response, "authentication_required", 401)
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="authsvc"')


@pytest.mark.parametrize("form", [False, True])
@pytest.mark.parametrize(
    "credential", ["wrong", INTROSPECTION_SECRET + "x", INTROSPECTION_SECRET[:-1]]
)
def test_introspection_refuses_a_wrong_credential(inspector, tokens, credential, form):
    response = introspect(
        inspector, tokens["access_token"], credential=credential, form=form
    )
    problem(response, "invalid_token", 401)
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_a_user_access_token_is_not_the_introspection_credential(inspector, tokens):
    response = introspect(
        inspector, tokens["access_token"], credential=tokens["access_token"]
    )
    problem(response, "invalid_token", 401)


ROLES = ("--role", "admin", "--role", "ops")


@pytest.mark.parametrize("form", [False, True])
def test_introspection_of_a_live_access_token(inspector, client, runner, clock, form):
    result = runner.invoke(
        args=[*("users", "create", "bob", "--password-stdin"), *ROLES],
        input=PASSWORD + "\n",
    )
    assert result.exit_code == 0, result.output
    tokens = sign_in(client, "bob")
    token = tokens["access_token"]
    user = me(client, token).json
    now = int(clock().timestamp())
    response = introspect(inspector, token, form=form)
    assert response.status_code == 200, response.json
    assert response.mimetype == "application/json"
    body = response.json
    assert body.keys() == TOKEN_KEYS
    assert body == {
        "active": True,
        "sub": user["id"],
        "sid": tokens["session_id"],
        "username": "bob",
        "roles": ["admin", "ops"],
        "exp": now + 900,
        "iat": now,
        "iss": "authsvc",
        "aud": "authsvc",
        "jti": claims_of(token)["jti"],
        "token_type": "access_token",
    }


def test_introspection_reports_the_configured_issuer_and_audience(make_app):
    app = make_app(
        INTROSPECTION_SECRET=INTROSPECTION_SECRET,
        ISSUER="https://auth.example",
        AUDIENCE="https://api.example",
    )
    client = app.test_client()
    token = signup(client)["access_token"]
    body = introspect(client, token).json
    assert (body["iss"], body["aud"]) == ("https://auth.example", "https://api.example")
    assert (body["iss"], body["aud"]) == (
        claims_of(token)["iss"],
        claims_of(token)["aud"],
    )


@pytest.mark.parametrize("form", [False, True])
@pytest.mark.parametrize("hint", ["access_token", "refresh_token"])
def test_introspection_takes_either_hint(inspector, tokens, hint, form):
    body = {"token": tokens["access_token"], "token_type_hint": hint}
    headers = bearer(INTROSPECTION_SECRET)
    if form:
        response = inspector.post(
            "/introspect", data=body, content_type=FORM, headers=headers
        )
    else:
        response = inspector.post("/introspect", json=body, headers=headers)
    assert response.status_code == 200
    assert response.json["active"] is True


INACTIVE = {"active": False}


@pytest.mark.parametrize("form", [False, True])
def test_introspection_of_an_expired_token(inspector, tokens, clock, form):
    clock.advance(899)
    assert introspect(inspector, tokens["access_token"], form=form).json["active"]
    clock.advance(1)
    response = introspect(inspector, tokens["access_token"], form=form)
    assert response.status_code == 200
    assert response.json == INACTIVE


def test_introspection_after_logout_is_inactive_at_once(inspector, client, tokens):
    token = tokens["access_token"]
    assert introspect(inspector, token).json["active"] is True
    assert client.post("/logout", headers=bearer(token)).status_code == 204
    assert introspect(inspector, token).json == INACTIVE


def test_introspection_after_deleting_the_session(inspector, client, tokens, login):
    other = login()
    response = client.delete(
        f"/sessions/{tokens['session_id']}", headers=bearer(other["access_token"])
    )
    assert response.status_code == 204
    assert introspect(inspector, tokens["access_token"]).json == INACTIVE
    assert introspect(inspector, other["access_token"]).json["active"] is True


def test_introspection_of_a_disabled_users_token(inspector, runner, tokens):
    assert introspect(inspector, tokens["access_token"]).json["active"] is True
    assert runner.invoke(args=["users", "disable", "alice"]).exit_code == 0
    assert introspect(inspector, tokens["access_token"], form=True).json == INACTIVE


def test_introspection_of_a_forged_token(app, inspector, tokens):
    token = tokens["access_token"]
    kid = header_of(token)["kid"]
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = forge(payload_like(token, app), attacker, "RS256", kid=kid)
    assert introspect(inspector, forged).json == INACTIVE
    head, _, signature = token.split(".")
    claims = {**claims_of(token), "roles": ["admin"]}
    tampered = f"{head}.{b64url(json.dumps(claims).encode())}.{signature}"
    assert introspect(inspector, tampered, form=True).json == INACTIVE


@pytest.mark.parametrize("form", [False, True])
@pytest.mark.parametrize(
    "token", ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "x" * 4000]
)
def test_introspection_of_garbage(inspector, token, form):
    response = introspect(inspector, token, form=form)
    assert response.status_code == 200
    assert response.json == INACTIVE


def test_introspection_of_a_refresh_token(inspector, tokens):
    response = introspect(inspector, tokens["refresh_token"])
    assert response.status_code == 200
    assert response.json == INACTIVE
    assert introspect(inspector, tokens["refresh_token"], form=True).json == INACTIVE


@pytest.mark.parametrize("form", [False, True])
@pytest.mark.parametrize("token", [None, ""])
def test_introspection_without_a_token(inspector, form, token):
    problem(introspect(inspector, token, form=form), "validation_error", 400)


def test_introspection_answers_only_json_or_form(inspector, tokens):
    response = inspector.post(
        "/introspect",
        data=tokens["access_token"],
        content_type="text/plain",
        headers=bearer(INTROSPECTION_SECRET),
    )
    problem(response, "unsupported_media_type", 415)


# --- POST /revoke (RFC 7009) ----------------------------------------------------


def revoke(client, token, *, form: bool = False, **extra):
    body = {"token": token, **extra} if token is not None else dict(extra)
    if form:
        return client.post("/revoke", data=body, content_type=FORM)
    return client.post("/revoke", json=body)


def assert_session_revoked(client, tokens) -> None:
    problem(me(client, tokens["access_token"]), "token_revoked", 401)
    response = client.post("/refresh", json={"refresh_token": tokens["refresh_token"]})
    problem(response, "invalid_refresh_token", 401)


def assert_session_alive(client, tokens) -> None:
    assert me(client, tokens["access_token"]).status_code == 200


@pytest.mark.parametrize("form", [False, True])
@pytest.mark.parametrize("hint", [None, "refresh_token", "access_token"])
def test_revoking_a_refresh_token_ends_its_session(client, tokens, login, form, hint):
    other = login()
    extra = {"token_type_hint": hint} if hint else {}
    response = revoke(client, tokens["refresh_token"], form=form, **extra)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.json == {}
    assert_session_revoked(client, tokens)
    assert_session_alive(client, other)


@pytest.mark.parametrize("form", [False, True])
@pytest.mark.parametrize("hint", [None, "access_token", "refresh_token"])
def test_revoking_an_access_token_ends_its_session(client, tokens, login, form, hint):
    other = login()
    extra = {"token_type_hint": hint} if hint else {}
    response = revoke(client, tokens["access_token"], form=form, **extra)
    assert response.status_code == 200
    assert response.json == {}
    assert_session_revoked(client, tokens)
    assert_session_alive(client, other)


def test_revoking_twice_is_fine(client, tokens):
    assert revoke(client, tokens["refresh_token"]).json == {}
    assert revoke(client, tokens["refresh_token"]).json == {}
    assert revoke(client, tokens["access_token"], form=True).json == {}
    assert_session_revoked(client, tokens)


@pytest.mark.parametrize("form", [False, True])
@pytest.mark.parametrize(
    "token", ["garbage", "a.b.c", "x" * 43, "eyJhbGciOiJub25lIn0.e30."]
)
def test_revoking_an_unknown_token_is_200(client, tokens, form, token):
    response = revoke(client, token, form=form, token_type_hint="refresh_token")
    assert response.status_code == 200
    assert response.json == {}
    assert_session_alive(client, tokens)


def test_revoking_a_forged_access_token_revokes_nothing(app, client, tokens):
    token = tokens["access_token"]
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = forge(
        payload_like(token, app), attacker, "RS256", kid=header_of(token)["kid"]
    )
    assert revoke(client, forged, token_type_hint="access_token").json == {}
    assert_session_alive(client, tokens)


@pytest.mark.parametrize("form", [False, True])
@pytest.mark.parametrize("token", [None, ""])
def test_revoking_without_a_token(client, form, token):
    problem(revoke(client, token, form=form), "validation_error", 400)


def test_revoking_needs_no_credential(client, tokens):
    response = client.post(
        "/revoke",
        data={"token": tokens["refresh_token"]},
        headers={"Authorization": "Basic " + base64.b64encode(b"spa:").decode()},
    )
    assert response.status_code == 200
    assert_session_revoked(client, tokens)


@pytest.mark.parametrize("form", [True, False])
def test_revoking_ignores_client_id(client, tokens, form):
    response = revoke(client, tokens["refresh_token"], form=form, client_id="spa")
    assert response.status_code == 200, response.json
    assert_session_revoked(client, tokens)


def test_revoked_session_is_inactive_for_introspection(inspector, client, tokens):
    assert revoke(client, tokens["refresh_token"], form=True).status_code == 200
    assert introspect(inspector, tokens["access_token"]).json == INACTIVE
