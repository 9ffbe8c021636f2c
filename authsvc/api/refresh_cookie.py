"""The refresh token's cookie transport for browser apps, and its CSRF check.

A browser app may ask for its refresh token in a cookie JavaScript cannot read
(``HttpOnly``, ``Secure``, ``SameSite=Strict``, ``__Host-``), as the IETF draft
"OAuth 2.0 for Browser-Based Applications" describes a token-mediating backend.
Only ``POST /refresh`` relies on the cookie, so only it needs the CSRF check: the
static header ``X-Authsvc-CSRF: 1`` (which no form or simple request can send, so a
foreign page meets a CORS preflight) and an ``Origin`` the service trusts.
Everything here is HTTP; the use cases never see the cookie.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Response, current_app, request
from flask_restx import fields

from ..edge import CSRF_HEADER
from ..errors import Code, Problem, problem_response

#: The cookie's name: ``__Host-`` makes browsers insist on Secure, Path=/ and no
#: Domain, so no sibling subdomain can set or shadow it.
COOKIE = "__Host-authsvc_refresh"
#: The body member by which a client chooses where its refresh token goes.
TRANSPORT = "refresh_token_transport"
#: The attributes of the cookie, in the order the contract writes them.
ATTRIBUTES = "Path=/; Secure; HttpOnly; SameSite=Strict"
#: How the OpenAPI document states the cookie an answer may set or clear.
SET_COOKIE_DOC = {
    "Set-Cookie": {
        "type": "string",
        "description": f"Only for the cookie transport: `{COOKIE}=<refresh token>; "
        f"{ATTRIBUTES}; Max-Age=<refresh_expires_in>`, or `Max-Age=0` to clear it.",
    }
}


def transport_field() -> fields.String:
    """The ``refresh_token_transport`` member of a body that logs in."""
    return fields.String(
        enum=["body", "cookie"],
        description="`cookie`: the refresh token goes into an HttpOnly cookie, not "
        "the body (needs AUTHSVC_REFRESH_COOKIE=1).",
    )


def enabled() -> bool:
    """Whether this service offers the cookie transport at all."""
    return bool(current_app.config["REFRESH_COOKIE"])


def transport_rules(body: Mapping[str, Any]) -> dict[str, str]:
    """Refuse ``refresh_token_transport`` where the cookie is not offered."""
    if TRANSPORT in body and not enabled():
        return {TRANSPORT: "is not offered by this service"}
    return {}


def cookie_header(refresh_token: str, max_age: int) -> str:
    """The ``Set-Cookie`` value that hands ``refresh_token`` to the browser."""
    return f"{COOKIE}={refresh_token}; {ATTRIBUTES}; Max-Age={max_age}"


#: The ``Set-Cookie`` value that makes the browser drop the cookie.
CLEARED = f"{COOKIE}=; {ATTRIBUTES}; Max-Age=0"


def into_cookie(
    body: dict[str, Any], headers: Mapping[str, str]
) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Move a token response's refresh token from its body into the cookie."""
    token = body.pop("refresh_token")
    cookie = cookie_header(token, body["refresh_expires_in"])
    return body, 200, {**headers, "Set-Cookie": cookie}


def presented() -> str | None:
    """The refresh token in the request's cookie, where the cookie is offered."""
    if not enabled():
        return None
    return request.cookies.get(COOKIE) or None


def check_csrf() -> None:
    """Let a cookie-based request through only with the header and a trusted Origin.

    Trusted: the origin the request was sent to (scheme and ``Host`` as seen
    through the trusted proxies) or one of ``AUTHSVC_CORS_ORIGINS``.
    """
    origin = request.headers.get("Origin", "").lower()
    trusted = {
        f"{request.scheme}://{request.host}".lower(),
        *(allowed.lower() for allowed in current_app.config["CORS_ORIGINS"]),
    }
    if request.headers.get(CSRF_HEADER) != "1" or origin not in trusted:
        raise Problem(Code.CSRF_FAILED)


def refused(problem: Problem) -> Response:
    """The answer to a cookie whose refresh token was refused: it is cleared too."""
    response = problem_response(problem)
    response.headers["Set-Cookie"] = CLEARED
    return response


def clearing_headers() -> dict[str, str]:
    """The header that clears the cookie, if the request carried it (logout, revoke)."""
    return {"Set-Cookie": CLEARED} if presented() is not None else {}
