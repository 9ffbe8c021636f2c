"""Only the canonical base64url spelling of an access token is accepted (RFC 7515).

PyJWT decodes leniently: ``=`` padding, or spare bits set in a segment's last
character, decode to the same bytes, so a signed token would have many
spellings that all verified. Each spelling is refused as ``invalid_token``.
"""

from __future__ import annotations

import os

import pytest
from helpers import b64url, bearer

from authsvc.tokens import is_canonical_jws

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
INVALID_TOKEN = {
    "type": "about:blank",
    "title": "Unauthorized",
    "status": 401,
    "detail": "The access token is not valid.",
    "code": "invalid_token",
}
INTROSPECTION_SECRET = "introspection-credential-" + "e" * 24


def with_spare_bits(segment: str) -> str | None:
    """The same bytes spelt with a spare bit set, if the segment has spare bits."""
    spare = {2: 0b1111, 3: 0b11}.get(len(segment) % 4)
    if spare is None:
        return None
    last = ALPHABET.index(segment[-1])
    return segment[:-1] + ALPHABET[last | 1]


def variants(token: str) -> dict[str, str]:
    """Non-canonical spellings of ``token`` that decode to the same bytes."""
    segments = token.split(".")
    made = {}
    for index, name in enumerate(("header", "payload", "signature")):
        for padding in ("=", "==", "==="):
            changed = list(segments)
            changed[index] += padding
            made[f"{name}{padding}"] = ".".join(changed)
        spelt = with_spare_bits(segments[index])
        if spelt is not None:
            changed = list(segments)
            changed[index] = spelt
            made[f"{name}-spare-bits"] = ".".join(changed)
    standard = token.replace("-", "+").replace("_", "/")
    if standard != token:
        made["standard-alphabet"] = standard
    return made


@pytest.mark.parametrize("size", range(1, 40))
def test_every_unpadded_encoding_is_canonical(size):
    data = os.urandom(size)
    assert is_canonical_jws(f"{b64url(data)}.{b64url(data)}.{b64url(data)}")


@pytest.mark.parametrize(
    "token",
    [
        "YQ.YQ.YQ=",  # padding
        "YQ.YQ.YR",  # spare bits set: "a" is YQ; YR decodes to "a" too
        "YWI.YWI.YWJ",  # "ab" is YWI; YWJ decodes to "ab" too
        "YWJj.YWJj.Y",  # one character holds no whole byte
        "YQ.YQ.",  # no signature
        "YQ..YQ",
        "YQ.YQ.YQ.YQ",
        "YQ.YQ.Y+",
        "YQ.YQ.Y/",
        "YQ.YQ.YQ\n",
        " YQ.YQ.YQ",
    ],
)
def test_non_canonical_spellings(token):
    assert not is_canonical_jws(token)


@pytest.fixture
def settings(settings: dict) -> dict:
    return {**settings, "INTROSPECTION_SECRET": INTROSPECTION_SECRET}


@pytest.fixture
def token(tokens) -> str:
    return tokens["access_token"]


def test_the_access_token_has_segments_with_spare_bits(token):
    # Otherwise the spare-bit cases below would test nothing.
    names = set(variants(token))
    assert "signature-spare-bits" in names


@pytest.mark.parametrize("remembered", [True, False], ids=["verified-before", "first"])
def test_a_non_canonical_spelling_of_a_valid_token_is_refused(
    client, token, remembered
):
    if remembered:
        assert client.get("/me", headers=bearer(token)).status_code == 200
    for name, variant in variants(token).items():
        response = client.get("/me", headers=bearer(variant))
        assert response.json == INVALID_TOKEN, name
        assert (
            response.headers["WWW-Authenticate"]
            == 'Bearer realm="authsvc", error="invalid_token"'
        )
    assert client.get("/me", headers=bearer(token)).status_code == 200


def test_introspection_finds_a_non_canonical_spelling_inactive(client, token):
    for name, variant in variants(token).items():
        response = client.post(
            "/introspect",
            json={"token": variant},
            headers=bearer(INTROSPECTION_SECRET),
        )
        assert response.json == {"active": False}, name
    response = client.post(
        "/introspect", json={"token": token}, headers=bearer(INTROSPECTION_SECRET)
    )
    assert response.json["active"] is True
