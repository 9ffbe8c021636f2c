"""Tokens: access token JWTs (PyJWT) and opaque tokens (refresh and one-time).

Pure functions with explicit parameters and no Flask imports, so every rule of
RFC 8725 and RFC 9068 applied here can be tested in isolation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt

ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 (a media type)
#: RFC 9068 section 2.1: an access token's ``typ``, in either spelling. The
#: companion checks the same set from ``bearer.py``: it may not import this module,
#: nor this module Flask (a test holds the two equal).
ACCESS_TOKEN_TYPES = frozenset({ACCESS_TOKEN_TYPE, "application/at+jwt"})
REQUIRED_CLAIMS = ("iss", "aud", "sub", "sid", "jti", "iat", "exp", "roles")
#: Opaque tokens carry 256 bits from the operating system's CSPRNG.
OPAQUE_TOKEN_BYTES = 32


#: Three segments of the base64url alphabet, unpadded (RFC 7515 section 7.1).
COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
#: The last characters that leave no stray bits, by segment length modulo 4:
#: 2 characters carry 1 byte and 4 spare bits, 3 carry 2 bytes and 2 spare bits.
_CLEAN_LAST = {2: frozenset("AQgw"), 3: frozenset("AEIMQUYcgkosw048")}


class TokenError(Exception):
    """An access token was presented but cannot be accepted."""


class TokenExpired(TokenError):
    """The token is well formed and signed but its ``exp`` has passed."""


@dataclass(frozen=True)
class AccessClaims:
    """The validated claims of an access token."""

    subject: str
    session_id: str
    token_id: str
    issued_at: int
    expires_at: int
    roles: tuple[str, ...]
    #: ``nbf``, when the token carries one.
    not_before: int | None = None


def derive_key(secret: str, purpose: str) -> bytes:
    """Derive an independent 256-bit key per purpose from the service secret."""
    return hmac.new(secret.encode(), purpose.encode(), hashlib.sha256).digest()


def key_id(key: bytes) -> str:
    """A short, stable identifier of a key that reveals nothing about it."""
    digest = hashlib.sha256(b"kid\x00" + key).digest()
    return base64.urlsafe_b64encode(digest[:12]).decode().rstrip("=")


def encode_access_token(
    *,
    key: bytes,
    algorithm: str,
    kid: str,
    issuer: str,
    audience: str,
    subject: str,
    session_id: str,
    roles: Sequence[str],
    issued_at: int,
    expires_at: int,
    username: str | None = None,
) -> str:
    """Sign an RFC 9068 access token."""
    claims: dict[str, object] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "sid": session_id,
        "jti": uuid.uuid4().hex,
        "iat": issued_at,
        "exp": expires_at,
        "roles": list(roles),
    }
    if username is not None:
        # OpenID Connect's name for it, so resource servers can greet the user.
        claims["preferred_username"] = username
    headers = {"typ": ACCESS_TOKEN_TYPE, "kid": kid}
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def unverified_kid(token: str) -> object:
    """The ``kid`` a token's header names, read without verifying anything.

    Only to pick the key that then verifies the whole token. Decoding just the
    header segment costs a fraction of a full parse, which PyJWT then does once.
    """
    segment = token.partition(".")[0]
    padding = "=" * (-len(segment) % 4)
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + padding))
    except (ValueError, RecursionError):
        raise TokenError("malformed token") from None
    if not isinstance(header, dict):
        raise TokenError("malformed token")
    return header.get("kid")


def is_canonical_jws(token: str) -> bool:
    """Is ``token`` the one base64url spelling (RFC 7515) of its three segments?

    PyJWT decodes leniently: appended ``=`` padding or set spare bits decode to
    the same bytes, so one signed token would have many spellings, each a new
    token to every cache and list keyed by it. Only the canonical one is taken.
    """
    if not COMPACT_JWS.fullmatch(token):
        return False
    for segment in token.split("."):
        spare = len(segment) % 4
        if spare == 1 or (
            spare in _CLEAN_LAST and segment[-1] not in _CLEAN_LAST[spare]
        ):
            return False
    return True


def verify_signed_claims(
    token: str, *, key: Any, algorithm: str, kid: str, issuer: str, audience: str
) -> AccessClaims:
    """Verify everything of an access token that does not change with time.

    Only ``algorithm`` is accepted and every claim of RFC 9068 is required. The
    result holds for as long as ``key`` may verify, so it can be remembered;
    :func:`check_lifetime` must still be applied on every use.
    """
    if not is_canonical_jws(token):
        raise TokenError("not canonical base64url")
    try:
        decoded = jwt.api_jwt.decode_complete(
            token,
            key,
            algorithms=[algorithm],
            issuer=issuer,
            audience=audience,
            options={
                "require": list(REQUIRED_CLAIMS),
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.PyJWTError as exc:
        raise TokenError(str(exc)) from None
    header: dict[str, Any] = decoded["header"]
    if str(header.get("typ", "")).lower() not in ACCESS_TOKEN_TYPES:
        raise TokenError("not an access token")
    if header.get("kid") != kid:
        raise TokenError("unknown key")
    return _checked_claims(decoded["payload"])


def check_lifetime(claims: AccessClaims, *, now: int, leeway: int = 0) -> AccessClaims:
    """Return ``claims`` if the token is live at ``now``, by the caller's clock."""
    if claims.issued_at > now + leeway:
        raise TokenError("issued in the future")
    if claims.expires_at <= now - leeway:
        raise TokenExpired("expired")
    if claims.not_before is not None and claims.not_before > now + leeway:
        raise TokenError("not yet valid")
    return claims


def _checked_claims(payload: dict[str, Any]) -> AccessClaims:
    sub, sid, jti = (payload.get(name) for name in ("sub", "sid", "jti"))
    issued_at, expires_at = payload.get("iat"), payload.get("exp")
    not_before = payload.get("nbf")
    roles = payload.get("roles")
    if not (
        isinstance(sub, str)
        and sub
        and isinstance(sid, str)
        and sid
        and isinstance(jti, str)
        and jti
    ):
        raise TokenError("malformed claims")
    if type(issued_at) is not int or type(expires_at) is not int:
        raise TokenError("malformed time claims")
    if "nbf" in payload and type(not_before) is not int:
        raise TokenError("malformed time claims")
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise TokenError("malformed roles")
    return AccessClaims(sub, sid, jti, issued_at, expires_at, tuple(roles), not_before)


def new_opaque_token() -> str:
    """Return a fresh opaque token, URL-safe: a refresh or a one-time token."""
    return secrets.token_urlsafe(OPAQUE_TOKEN_BYTES)


def successor_refresh_token(key: bytes, token: str) -> str:
    """Return the token that replaces ``token`` when it is rotated.

    Deriving it with a keyed PRF from the presented token means the server can
    hand the same successor to a second caller within the reuse grace window
    without ever storing the token itself.
    """
    digest = hmac.new(key, token.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def hash_opaque_token(token: str) -> str:
    """The only form in which an opaque token is stored."""
    return hashlib.sha256(token.encode()).hexdigest()
