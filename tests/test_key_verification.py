"""Verification picks the key by ``kid``: forged tokens are refused.

Tokens are forged the way an attacker or a careless verifier would make them:
with PyJWT, or by hand with ``hmac`` where PyJWT refuses.
"""

from __future__ import annotations

import hashlib
import hmac
import json

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from helpers import (
    b64url,
    forge,
    genuine,
    header_of,
    jwks,
    me,
    payload_like,
    problem,
    published,
    signup,
)

# --- helpers ------------------------------------------------------------------


def forge_by_hand(header: dict, payload: dict, sign) -> str:
    """A compact JWS built without PyJWT, signed by ``sign(signing_input)``."""
    signing_input = (
        b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode())
    )
    return signing_input + "." + b64url(sign(signing_input.encode()))


# --- verification picks the key by kid ----------------------------------------


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
