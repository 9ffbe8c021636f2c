"""Sessions: log in, refresh, log out, and see or end your sessions."""

from __future__ import annotations

from typing import Any, ClassVar

from flask import Response, request
from flask_login import current_user
from flask_restx import Namespace, Resource, fields

from .. import accounts, revocation, sessions
from ..bearer import bearer_required
from ..clock import iso
from ..errors import Code, Problem
from ..models import AuthSession
from ..passwords import MAX_PASSWORD_LENGTH
from . import refresh_cookie
from .payload import read_json
from .schemas import (
    AUTHENTICATION_ERRORS,
    TEXT_PATTERN,
    NullableString,
    mfa_required_model,
    no_content,
    problem_responses,
    with_401_model,
)

ns = Namespace("sessions", description="Log in, refresh and log out.", path="/")

TOKEN_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}

login_model = ns.model(
    "Login",
    {
        "username": fields.String(
            required=True,
            min_length=1,
            max_length=320,
            pattern=TEXT_PATTERN,
            description="Username or e-mail.",
        ),
        "password": fields.String(
            required=True,
            min_length=1,
            max_length=MAX_PASSWORD_LENGTH,
            pattern=TEXT_PATTERN,
        ),
        refresh_cookie.TRANSPORT: refresh_cookie.transport_field(),
    },
    strict=True,
)
refresh_model = ns.model(
    "Refresh",
    {
        "refresh_token": fields.String(
            min_length=1,
            max_length=4096,
            pattern=TEXT_PATTERN,
            description="Required, unless the request carries the refresh cookie "
            "(then `{}`, with the `X-Authsvc-CSRF: 1` header).",
        )
    },
    strict=True,
)
logout_model = ns.model(
    "Logout",
    {"all": fields.Boolean(description="Revoke every session of the user.")},
    strict=True,
)
session_model = ns.model(
    "Session",
    {
        "id": fields.String(required=True),
        "created_at": fields.String(required=True, description="ISO 8601, UTC."),
        "last_used_at": fields.String(
            required=True, description="Login or last refresh; ISO 8601, UTC."
        ),
        "expires_at": fields.String(
            required=True, description="Absolute end; ISO 8601, UTC."
        ),
        "user_agent": NullableString(required=True, description="Null when unknown."),
        "ip_address": NullableString(required=True, description="Null when unknown."),
        "current": fields.Boolean(
            required=True, description="Whether this is the caller's own session."
        ),
    },
)
session_list_model = ns.model(
    "SessionList",
    {"sessions": fields.List(fields.Nested(session_model), required=True)},
)
tokens_model = ns.model(
    "Tokens",
    {
        "access_token": fields.String(required=True, description="JWT, `at+jwt`."),
        "token_type": fields.String(required=True, enum=["Bearer"]),
        "expires_in": fields.Integer(required=True, description="Seconds."),
        "refresh_token": fields.String(
            description="Opaque; absent with the cookie transport, which sets it in "
            "the `__Host-authsvc_refresh` cookie instead."
        ),
        "refresh_expires_in": fields.Integer(required=True, description="Seconds."),
        "session_id": fields.String(required=True),
    },
)


def request_client() -> sessions.Client:
    """The device a login comes from, as its request shows it."""
    return sessions.Client(
        user_agent=request.user_agent.string or None,
        ip_address=request.remote_addr,
    )


def tokens_response(
    issued: sessions.IssuedTokens, transport: str | None = None
) -> tuple[dict[str, Any], int, dict]:
    """The body and no-store headers of a token response (RFC 6749 section 5.1).

    With ``transport`` ``"cookie"`` the refresh token goes into the cookie instead.
    """
    body = {
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "refresh_token": issued.refresh_token,
        "refresh_expires_in": issued.refresh_expires_in,
        "session_id": issued.session_id,
    }
    if transport == "cookie":
        return refresh_cookie.into_cookie(body, TOKEN_HEADERS)
    return body, 200, TOKEN_HEADERS


@ns.route("/login")
class Login(Resource):
    """Exchange a username (or e-mail) and password for tokens."""

    @ns.expect(login_model)
    @ns.response(
        200,
        "Logged in: a new session. With `refresh_token_transport: cookie`, no "
        "`refresh_token` member: it is set in the `__Host-authsvc_refresh` cookie.",
        tokens_model,
        headers=refresh_cookie.SET_COOKIE_DOC,
    )
    @ns.doc(
        responses=with_401_model(
            problem_responses(
                Code.VALIDATION_ERROR,
                Code.INVALID_CREDENTIALS,
                Code.MFA_REQUIRED,
                Code.UNSUPPORTED_MEDIA_TYPE,
                Code.RATE_LIMITED,
            ),
            mfa_required_model,
        )
    )
    def post(self) -> tuple[dict[str, Any], int, dict]:
        """Log in and open a new session."""
        body = read_json(login_model, rules=refresh_cookie.transport_rules)
        client = request_client()
        return tokens_response(
            accounts.login(body["username"], body["password"], client),
            body.get(refresh_cookie.TRANSPORT),
        )


@ns.route("/refresh")
class Refresh(Resource):
    """Rotate a refresh token."""

    @ns.expect(refresh_model)
    @ns.response(
        200,
        "A new access token and refresh token. From the cookie, the successor is "
        "set in the cookie and left out of the body.",
        tokens_model,
        headers=refresh_cookie.SET_COOKIE_DOC,
    )
    @ns.doc(
        params={
            refresh_cookie.CSRF_HEADER: {
                "in": "header",
                "type": "string",
                "enum": ["1"],
                "description": "Required when the refresh token comes from the "
                "`__Host-authsvc_refresh` cookie (with an allowed `Origin`).",
            }
        },
        responses=problem_responses(
            Code.VALIDATION_ERROR,
            Code.INVALID_REFRESH_TOKEN,
            Code.CSRF_FAILED,
            Code.UNSUPPORTED_MEDIA_TYPE,
        ),
    )
    def post(self) -> tuple[dict[str, Any], int, dict] | Response:
        """Spend a refresh token for new tokens of the same session."""
        cookie = refresh_cookie.presented()
        body = read_json(refresh_model, rules=lambda body: _refresh_rules(body, cookie))
        if "refresh_token" in body or cookie is None:
            # A token in the body wins: it is no ambient credential, needs no check.
            return tokens_response(sessions.refresh(body["refresh_token"]))
        refresh_cookie.check_csrf()
        try:
            issued = sessions.refresh(cookie)
        except Problem as problem:
            if problem.code != Code.INVALID_REFRESH_TOKEN:
                raise
            return refresh_cookie.refused(problem)
        return tokens_response(issued, "cookie")


@ns.route("/logout")
class Logout(Resource):
    """End the caller's session, or all of them."""

    method_decorators: ClassVar = [bearer_required]

    @ns.expect(logout_model)
    @ns.response(
        204,
        "The session is revoked; the refresh cookie, if the request carried it, is "
        "cleared.",
        headers=refresh_cookie.SET_COOKIE_DOC,
    )
    @ns.doc(
        security="bearer",
        # No body at all is the same as ``{}``.
        params={"payload": {"required": False}},
        responses=problem_responses(
            Code.VALIDATION_ERROR, *AUTHENTICATION_ERRORS, Code.UNSUPPORTED_MEDIA_TYPE
        ),
    )
    def post(self) -> Response:
        """Revoke the session of the presented token (with `all`: every session)."""
        body = read_json(logout_model, optional=True)
        revocation.logout(current_user, everywhere=bool(body.get("all")))
        response = no_content()
        response.headers.update(refresh_cookie.clearing_headers())
        return response


@ns.route("/sessions")
class Sessions(Resource):
    """The caller's live sessions."""

    method_decorators: ClassVar = [bearer_required]

    @ns.response(200, "Live sessions, newest first.", session_list_model)
    @ns.doc(security="bearer", responses=problem_responses(*AUTHENTICATION_ERRORS))
    def get(self) -> dict[str, Any]:
        """List the caller's live sessions."""
        return {
            "sessions": [
                session_json(session, current_user.session_id)
                for session in revocation.list_sessions(current_user)
            ]
        }


@ns.route("/sessions/<string:session_id>")
@ns.param("session_id", "A session id from GET /sessions.")
class Session(Resource):
    """One of the caller's sessions."""

    method_decorators: ClassVar = [bearer_required]

    @ns.response(204, "The session is revoked; its tokens stop working at once.")
    @ns.doc(
        security="bearer",
        responses=problem_responses(*AUTHENTICATION_ERRORS, Code.NOT_FOUND),
    )
    def delete(self, session_id: str) -> Response:
        """Revoke one of the caller's live sessions (log out that device)."""
        revocation.revoke_own_session(current_user, session_id)
        return no_content()


def _refresh_rules(body: dict[str, Any], cookie: str | None) -> dict[str, str]:
    """A refresh body names its token unless the request carries the cookie."""
    if "refresh_token" not in body and cookie is None:
        return {"refresh_token": "is required"}
    return {}


def session_json(session: AuthSession, current_id: str) -> dict[str, Any]:
    """The public view of a session."""
    return {
        "id": str(session.id),
        "created_at": iso(session.created_at),
        "last_used_at": iso(session.last_used_at),
        "expires_at": iso(session.expires_at),
        "user_agent": session.user_agent,
        "ip_address": session.ip_address,
        "current": str(session.id) == current_id,
    }
