"""Tokens: the public JWKS, token introspection (RFC 7662) and revocation (RFC 7009).

These are for other services and clients that check or drop tokens without being
the user: the JWKS lets any JOSE library verify access tokens locally.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, request
from flask_restx import Namespace, Resource, fields

from .. import clock, introspection
from ..bearer import check_static_bearer
from ..errors import Code, Problem
from ..keys import get_keys
from ..throttle import Kind, get_throttle
from . import refresh_cookie
from .payload import read_form_or_json
from .schemas import TEXT_PATTERN, problem_responses

ns = Namespace(
    "keys", description="Verify tokens elsewhere: JWKS, introspection.", path="/"
)

#: Longest a JWKS answer may be cached, capped by the publish delay.
JWKS_MAX_AGE = 300

jwk_model = ns.model(
    "JWK",
    {
        "kid": fields.String(required=True),
        "kty": fields.String(required=True, enum=["RSA", "EC", "OKP"]),
        "alg": fields.String(required=True, enum=["RS256", "ES256", "EdDSA"]),
        "use": fields.String(required=True, enum=["sig"]),
        "n": fields.String(description="RSA modulus."),
        "e": fields.String(description="RSA exponent."),
        "crv": fields.String(description="EC or OKP curve."),
        "x": fields.String(description="EC or OKP public point."),
        "y": fields.String(description="EC public point."),
    },
)
jwks_model = ns.model(
    "JWKS", {"keys": fields.List(fields.Nested(jwk_model), required=True)}
)
token_model = ns.model(
    "TokenParameter",
    {
        "token": fields.String(
            required=True, min_length=1, max_length=8192, pattern=TEXT_PATTERN
        ),
        "token_type_hint": fields.String(
            enum=["access_token", "refresh_token"], description="Optional."
        ),
    },
    # OAuth clients may send client_id and more: ignored (RFC 6749 section 3.2).
    strict=False,
)
introspection_model = ns.model(
    "Introspection",
    {
        "active": fields.Boolean(required=True),
        "sub": fields.String,
        "sid": fields.String,
        "username": fields.String,
        "roles": fields.List(fields.String),
        "exp": fields.Integer,
        "iat": fields.Integer,
        "iss": fields.String,
        "aud": fields.String,
        "jti": fields.String,
        "token_type": fields.String(enum=["access_token"]),
    },
)
empty_model = ns.model("Empty", {})


@ns.route("/.well-known/jwks.json")
class Jwks(Resource):
    """The public keys that sign access tokens."""

    @ns.response(
        200, "Every key whose tokens may be alive; never a private part.", jwks_model
    )
    @ns.doc(responses=problem_responses())
    def get(self) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Return the JSON Web Key Set (empty under HS256)."""
        max_age = min(JWKS_MAX_AGE, current_app.config["KEY_PUBLISH_DELAY"])
        keys = get_keys().jwks(clock.now())
        return {"keys": keys}, 200, {"Cache-Control": f"public, max-age={max_age}"}


@ns.route("/introspect")
class Introspect(Resource):
    """RFC 7662 token introspection, for resource servers."""

    @ns.expect(token_model)
    @ns.response(
        200, "`active` and, for a live access token, its claims.", introspection_model
    )
    @ns.doc(
        security="bearer",
        consumes=["application/x-www-form-urlencoded", "application/json"],
        responses=problem_responses(
            Code.VALIDATION_ERROR,
            Code.AUTHENTICATION_REQUIRED,
            Code.INVALID_TOKEN,
            Code.NOT_FOUND,
            Code.UNSUPPORTED_MEDIA_TYPE,
            Code.RATE_LIMITED,
        ),
    )
    def post(self) -> dict[str, Any]:
        """Is this a live access token? Needs the introspection secret."""
        _check_introspection_secret()
        body = read_form_or_json(token_model)
        return introspection.introspect(body["token"])


@ns.route("/revoke")
class Revoke(Resource):
    """RFC 7009 token revocation, for clients."""

    @ns.expect(token_model)
    @ns.response(
        200,
        "Done, whether or not the token was known; the refresh cookie, if the "
        "request carried it, is cleared.",
        empty_model,
        headers=refresh_cookie.SET_COOKIE_DOC,
    )
    @ns.doc(
        consumes=["application/x-www-form-urlencoded", "application/json"],
        responses=problem_responses(Code.VALIDATION_ERROR, Code.UNSUPPORTED_MEDIA_TYPE),
    )
    def post(self) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Revoke the session of a refresh or access token."""
        body = read_form_or_json(token_model)
        introspection.revoke_token(body["token"], hint=body.get("token_type_hint"))
        return {}, 200, refresh_cookie.clearing_headers()


def _check_introspection_secret() -> None:
    secret = current_app.config["INTROSPECTION_SECRET"]
    if not secret:
        raise Problem(Code.NOT_FOUND, "Introspection is not enabled.")
    # Wrong credentials are throttled per address, as failed logins are.
    with get_throttle().attempt(Kind.INTROSPECTION, request.remote_addr):
        check_static_bearer(secret, "introspection")
