"""Access tokens and refresh tokens (authsvc.tokens): pure functions, no Flask.

Forged tokens are made with PyJWT directly, the way an attacker would.
"""

import base64
import hashlib
import hmac
import json
import re

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from authsvc import bearer, tokens
from authsvc.tokens import (
    AccessClaims,
    TokenError,
    TokenExpired,
    check_lifetime,
    derive_key,
    encode_access_token,
    key_id,
    successor_refresh_token,
    unverified_kid,
    verify_signed_claims,
)
from authsvc.tokens import hash_opaque_token as hash_refresh_token
from authsvc.tokens import new_opaque_token as new_refresh_token

SECRET = "test-secret-" + "x" * 40
KEY = derive_key(SECRET, "access-token")
KID = key_id(KEY)
OTHER_KEY = derive_key("another-secret-" + "y" * 40, "access-token")
ISSUER = "https://auth.example"
AUDIENCE = "https://api.example"
NOW = 1_700_000_000
TTL = 900
URL_SAFE = re.compile(r"[A-Za-z0-9_-]+")
CONTRACT_CLAIMS = ("iss", "aud", "sub", "sid", "jti", "iat", "exp", "roles")
#: Marks a claim or header to leave out of a forged token.
MISSING = object()
#: The claims of a valid access token at NOW, for tokens made without the service.
VALID_CLAIMS = {
    "iss": ISSUER,
    "aud": AUDIENCE,
    "sub": "user-1",
    "sid": "session-1",
    "jti": "jti-1",
    "iat": NOW,
    "exp": NOW + TTL,
    "roles": ["admin"],
}


def issue(**changes) -> str:
    """An access token as the service issues it, at NOW, valid for TTL."""
    arguments = {
        "key": KEY,
        "algorithm": "HS256",
        "kid": KID,
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "subject": "user-1",
        "session_id": "session-1",
        "roles": ["admin", "ops"],
        "issued_at": NOW,
        "expires_at": NOW + TTL,
    }
    return encode_access_token(**{**arguments, **changes})


def decode(token: str, **changes) -> AccessClaims:
    """Verify ``token`` the way the service does, at NOW unless told otherwise."""
    arguments = {
        "key": KEY,
        "algorithm": "HS256",
        "kid": KID,
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "now": NOW,
        "leeway": 0,
    }
    arguments.update(changes)
    now, leeway = arguments.pop("now"), arguments.pop("leeway")
    claims = verify_signed_claims(token, **arguments)
    return check_lifetime(claims, now=now, leeway=leeway)


def forge(*, key=KEY, algorithm: str = "HS256", headers=None, **changes) -> str:
    """Sign claims with PyJWT; they default to a valid set, MISSING drops one."""
    payload = {**VALID_CLAIMS, **changes}
    header = {"typ": "at+jwt", "kid": KID, **(headers or {})}
    claims = {name: value for name, value in payload.items() if value is not MISSING}
    # The JWS layer signs any bytes, so claims PyJWT would not encode get through.
    return jwt.api_jws.encode(
        json.dumps(claims).encode(),
        key,
        algorithm=algorithm,
        headers={name: value for name, value in header.items() if value is not MISSING},
    )


def b64(data: dict) -> str:
    text = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(text).decode().rstrip("=")


def refused(token: str, **changes) -> TokenError:
    """Assert ``token`` is refused as invalid (not merely expired); return the error."""
    with pytest.raises(TokenError) as info:
        decode(token, **changes)
    assert not isinstance(info.value, TokenExpired)
    return info.value


# Access tokens: what the service issues.


def test_header_is_typed_at_jwt_with_the_kid():
    assert jwt.get_unverified_header(issue()) == {
        "alg": "HS256",
        "typ": "at+jwt",
        "kid": KID,
    }


def test_token_carries_every_claim_of_the_contract():
    token = issue()
    payload = jwt.decode(
        token,
        KEY,
        algorithms=["HS256"],
        audience=AUDIENCE,
        issuer=ISSUER,
        options={"verify_exp": False},
    )
    assert payload == {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "sid": "session-1",
        "jti": payload["jti"],
        "iat": NOW,
        "exp": NOW + TTL,
        "roles": ["admin", "ops"],
    }
    assert isinstance(payload["jti"], str)
    assert payload["jti"]


def test_round_trip_gives_back_the_claims():
    token = issue()
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    assert decode(token) == AccessClaims(
        subject="user-1",
        session_id="session-1",
        token_id=jti,
        issued_at=NOW,
        expires_at=NOW + TTL,
        roles=("admin", "ops"),
    )


def test_round_trip_without_roles():
    assert decode(issue(roles=[])).roles == ()


def test_every_token_has_its_own_jti():
    tokens = [issue() for _ in range(50)]
    assert len({decode(token).token_id for token in tokens}) == 50


@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt", "AT+JWT"])
def test_typ_is_compared_as_a_media_type(typ):
    assert decode(forge(headers={"typ": typ})).subject == "user-1"


def test_the_service_and_the_companion_accept_the_same_typ():
    # Written in two leaves that may not import each other (see tokens.py).
    assert tokens.ACCESS_TOKEN_TYPES == bearer.ACCESS_TOKEN_TYPES


@pytest.fixture(scope="module")
def rsa_pem() -> tuple[bytes, bytes]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def test_rs256_round_trip(rsa_pem):
    private_pem, public_pem = rsa_pem
    token = issue(key=private_pem, algorithm="RS256")
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert decode(token, key=public_pem, algorithm="RS256").subject == "user-1"


def test_rs256_refuses_hs256_signed_with_the_public_key(rsa_pem):
    """The key-confusion attack of RFC 8725 section 2.1."""
    _, public_pem = rsa_pem
    signing_input = (
        b64({"alg": "HS256", "typ": "at+jwt", "kid": KID}) + "." + b64(VALID_CLAIMS)
    )
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    signature = base64.urlsafe_b64encode(mac).decode().rstrip("=")
    refused(f"{signing_input}.{signature}", key=public_pem, algorithm="RS256")


# Access tokens: what is refused.


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_refuses_alg_none(alg):
    header = {"alg": alg, "typ": "at+jwt", "kid": KID}
    payload = jwt.decode(issue(), options={"verify_signature": False})
    refused(f"{b64(header)}.{b64(payload)}.")


def test_refuses_alg_none_made_by_pyjwt():
    refused(forge(key=None, algorithm="none"))


@pytest.mark.filterwarnings("ignore::jwt.InsecureKeyLengthWarning")
@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_refuses_another_algorithm_with_the_same_key(algorithm):
    token = forge(algorithm=algorithm)
    assert jwt.get_unverified_header(token)["alg"] == algorithm
    refused(token)


def test_refuses_an_asymmetric_algorithm_it_was_not_configured_for():
    private = ec.generate_private_key(ec.SECP256R1())
    refused(forge(key=private, algorithm="ES256"))


def test_refuses_a_token_signed_with_another_key():
    refused(forge(key=OTHER_KEY))


def test_refuses_changed_claims_under_the_original_signature():
    header, _, signature = issue(roles=[]).split(".")
    payload = jwt.decode(issue(roles=[]), options={"verify_signature": False})
    payload["roles"] = ["admin"]
    refused(f"{header}.{b64(payload)}.{signature}")


@pytest.mark.parametrize("signature", ["", "AAAA", "not-a-signature"])
def test_refuses_a_bad_signature(signature):
    header, payload, _ = issue().split(".")
    refused(f"{header}.{payload}.{signature}")


@pytest.mark.parametrize("issuer", ["https://evil.example", "authsvc", ""])
def test_refuses_a_wrong_issuer(issuer):
    refused(issue(issuer=issuer))


@pytest.mark.parametrize("audience", ["https://other.example", "authsvc"])
def test_refuses_a_wrong_audience(audience):
    refused(issue(audience=audience))


def test_refuses_an_audience_list_without_ours():
    refused(forge(aud=["https://other.example"]))


@pytest.mark.parametrize(
    "typ", ["JWT", "jwt", "application/jwt", "rt+jwt", "at+jwt+x", "", MISSING]
)
def test_refuses_a_wrong_or_missing_typ(typ):
    refused(forge(headers={"typ": typ}))


@pytest.mark.parametrize(
    "kid", ["another-kid", key_id(OTHER_KEY), "", MISSING], ids=str
)
def test_refuses_a_wrong_or_missing_kid(kid):
    refused(forge(headers={"kid": kid}))


@pytest.mark.parametrize("claim", CONTRACT_CLAIMS)
def test_refuses_a_token_missing_a_required_claim(claim):
    refused(forge(**{claim: MISSING}))


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("sub", 42),
        ("sub", ""),
        ("sub", None),
        ("sub", ["user-1"]),
        ("sid", 7),
        ("sid", ""),
        ("jti", 1),
        ("iat", NOW + 0.5),
        ("iat", str(NOW)),
        ("iat", True),
        ("iat", None),
        ("exp", NOW + TTL + 0.5),
        ("exp", str(NOW + TTL)),
        ("exp", None),
        ("roles", "admin"),
        ("roles", [1]),
        ("roles", ["admin", None]),
        ("roles", [["admin"]]),
        ("roles", {"admin": True}),
        ("roles", None),
        ("iss", 5),
        ("aud", 5),
    ],
)
def test_refuses_malformed_claims(claim, value):
    refused(forge(**{claim: value}))


def test_refuses_iat_in_the_future():
    refused(forge(iat=NOW + 1))


def test_leeway_allows_iat_that_far_in_the_future_and_no_further():
    assert decode(forge(iat=NOW + 30), leeway=30).issued_at == NOW + 30
    refused(forge(iat=NOW + 31), leeway=30)


def test_nbf_in_the_past_or_now_is_accepted():
    assert decode(forge(nbf=NOW)).not_before == NOW
    assert decode(forge(nbf=NOW - 60)).not_before == NOW - 60
    assert decode(forge()).not_before is None


def test_leeway_allows_nbf_that_far_in_the_future_and_no_further():
    refused(forge(nbf=NOW + 1))
    assert decode(forge(nbf=NOW + 30), leeway=30).not_before == NOW + 30
    refused(forge(nbf=NOW + 31), leeway=30)


@pytest.mark.parametrize("value", [NOW + 0.5, str(NOW), True, None, [NOW]])
def test_refuses_a_malformed_nbf(value):
    refused(forge(nbf=value))


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b.c",
        "..",
        "eyJhbGciOiJIUzI1NiJ9",
        "eyJhbGciOiJIUzI1NiJ9.e30",
        "Bearer x.y.z",
        "\x00\x01\x02",
        "ünïcödé.ünïcödé.ünïcödé",
    ],
)
def test_refuses_garbage(token):
    refused(token)


def test_the_kid_is_read_from_the_header_alone():
    assert unverified_kid(issue()) == KID
    assert unverified_kid(issue(kid="other")) == "other"


def _segment(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "header",
    [
        "",
        "%%%",
        "ünïcödé",
        _segment("[1, 2]"),
        _segment('"kid"'),
        _segment("{not json"),
        _segment("[" * 100_000 + "]" * 100_000),
        base64.urlsafe_b64encode(b"\xff\xfe{}").decode(),
    ],
)
def test_an_unreadable_header_is_a_token_error(header):
    with pytest.raises(TokenError):
        unverified_kid(header + ".e30.sig")


def test_refuses_a_refresh_token():
    refused(new_refresh_token())


# Access tokens: expiry against the caller's clock.


def test_accepted_until_the_second_before_exp():
    assert decode(issue(), now=NOW + TTL - 1).expires_at == NOW + TTL


@pytest.mark.parametrize("after", [0, 1, 3600])
def test_expired_when_exp_is_not_after_now(after):
    with pytest.raises(TokenExpired):
        decode(issue(), now=NOW + TTL + after)


def test_expired_is_a_kind_of_token_error():
    assert issubclass(TokenExpired, TokenError)


def test_leeway_accepts_a_token_up_to_leeway_seconds_past_exp():
    token = issue()
    assert decode(token, now=NOW + TTL + 29, leeway=30).subject == "user-1"
    with pytest.raises(TokenExpired):
        decode(token, now=NOW + TTL + 30, leeway=30)


def test_an_expired_forgery_is_invalid_not_expired():
    refused(forge(key=OTHER_KEY), now=NOW + TTL + 3600)


# Refresh tokens.


def test_refresh_token_is_url_safe_and_carries_256_bits():
    token = new_refresh_token()
    assert URL_SAFE.fullmatch(token)
    assert len(token) >= 43


def test_refresh_tokens_are_unique():
    tokens = {new_refresh_token() for _ in range(10_000)}
    assert len(tokens) == 10_000


def test_refresh_token_hash_is_sha256_hex():
    token = new_refresh_token()
    digest = hash_refresh_token(token)
    assert digest == hashlib.sha256(token.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert digest != token
    assert hash_refresh_token(token) == digest


def test_refresh_token_hashes_differ_per_token():
    assert hash_refresh_token("a" * 43) != hash_refresh_token("b" * 43)


def test_successor_is_deterministic():
    key, token = derive_key(SECRET, "refresh-token"), new_refresh_token()
    assert successor_refresh_token(key, token) == successor_refresh_token(key, token)


def test_successor_depends_on_the_key_and_the_token():
    key, token = derive_key(SECRET, "refresh-token"), new_refresh_token()
    successor = successor_refresh_token(key, token)
    assert successor_refresh_token(OTHER_KEY, token) != successor
    assert successor_refresh_token(key, new_refresh_token()) != successor
    assert successor != token
    assert successor_refresh_token(key, successor) not in {successor, token}


def test_successor_looks_like_a_refresh_token():
    token = new_refresh_token()
    successor = successor_refresh_token(derive_key(SECRET, "refresh-token"), token)
    assert URL_SAFE.fullmatch(successor)
    assert len(successor) == len(token)


# Keys.


def test_derived_keys_are_256_bits_and_differ_per_purpose():
    keys = {derive_key(SECRET, purpose) for purpose in ("access", "refresh", "keys")}
    assert len(keys) == 3
    assert {len(key) for key in keys} == {32}


def test_derived_keys_are_deterministic_and_depend_on_the_secret():
    assert derive_key(SECRET, "access") == derive_key(SECRET, "access")
    assert derive_key(SECRET + "!", "access") != derive_key(SECRET, "access")
    assert SECRET.encode() not in derive_key(SECRET, "access")


def test_key_id_is_stable_and_url_safe():
    assert key_id(KEY) == key_id(bytes(KEY))
    assert URL_SAFE.fullmatch(KID)
    assert key_id(OTHER_KEY) != KID


def test_key_id_does_not_contain_the_key():
    for encoded in (
        KEY.hex(),
        base64.urlsafe_b64encode(KEY).decode().rstrip("="),
        base64.b64encode(KEY).decode().rstrip("="),
    ):
        assert KID not in encoded
        assert encoded not in KID
    assert KID.encode() not in KEY
