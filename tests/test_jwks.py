"""The JWKS: public keys only, cacheable no longer than the publish delay."""

from __future__ import annotations

import re

import jwt
import pytest
from helpers import (
    JWKS_PATH,
    PRIVATE_MEMBERS,
    header_of,
    jwks,
    me,
    signup,
)

ASYMMETRIC = ("RS256", "ES256", "EdDSA")

# --- helpers ------------------------------------------------------------------


def max_age(response) -> int:
    match = re.search(r"(?:^|[,\s])max-age=(\d+)", response.headers["Cache-Control"])
    assert match, response.headers["Cache-Control"]
    return int(match.group(1))


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
