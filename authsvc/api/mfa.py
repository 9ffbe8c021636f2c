"""The second factor and fresh authentication: enrol, log in with a code, step up."""

from __future__ import annotations

from typing import Any, ClassVar

from flask import Response, request
from flask_login import current_user
from flask_restx import Namespace, Resource, fields

from .. import mfa, stepup
from ..bearer import bearer_required
from ..errors import Code
from ..passwords import MAX_PASSWORD_LENGTH
from . import refresh_cookie
from .payload import read_json
from .schemas import (
    AUTHENTICATION_ERRORS,
    TEXT_PATTERN,
    no_content,
    problem_responses,
    step_up_model,
    with_401_model,
)
from .sessions import TOKEN_HEADERS, request_client, tokens_model, tokens_response

ns = Namespace(
    "mfa",
    description="The second factor (TOTP and recovery codes) and fresh authentication.",
    path="/",
)

#: Long enough for a recovery code typed with spaces, short enough to be cheap.
MAX_CODE_LENGTH = 64


def _password(**kwargs: Any) -> fields.String:
    return fields.String(max_length=MAX_PASSWORD_LENGTH, pattern=TEXT_PATTERN, **kwargs)


def _code(
    description: str = "A six-digit TOTP code, or a recovery code.", **kwargs: Any
) -> fields.String:
    return fields.String(
        max_length=MAX_CODE_LENGTH,
        pattern=TEXT_PATTERN,
        description=description,
        **kwargs,
    )


status_model = ns.model(
    "MfaStatus",
    {
        "enabled": fields.Boolean(required=True),
        "recovery_codes_left": fields.Integer(required=True),
    },
)
password_model = ns.model(
    "MfaPassword", {"password": _password(required=True)}, strict=True
)
enrolment_model = ns.model(
    "TotpEnrolment",
    {
        "secret": fields.String(required=True, description="Base32."),
        "otpauth_uri": fields.String(
            required=True,
            description="`otpauth://totp/<issuer>:<username>?secret=...&issuer=...`, "
            "for a QR code.",
        ),
    },
)
code_model = ns.model("MfaCode", {"code": _code(required=True)}, strict=True)
password_code_model = ns.model(
    "MfaPasswordAndCode",
    {"password": _password(required=True), "code": _code(required=True)},
    strict=True,
)
recovery_codes_model = ns.model(
    "RecoveryCodes",
    {
        "recovery_codes": fields.List(
            fields.String, required=True, description="Ten, each usable once."
        )
    },
)
mfa_login_model = ns.model(
    "MfaLogin",
    {
        "mfa_token": fields.String(
            required=True,
            min_length=1,
            max_length=4096,
            pattern=TEXT_PATTERN,
            description="From the `mfa_required` answer of POST /login.",
        ),
        "code": _code(required=True),
        refresh_cookie.TRANSPORT: refresh_cookie.transport_field(),
    },
    strict=True,
)
reauthentication_model = ns.model(
    "Reauthentication",
    {
        "password": _password(required=True),
        "code": _code(
            "A TOTP or recovery code; needed when the user has a second factor."
        ),
    },
    strict=True,
)
access_token_model = ns.model(
    "AccessToken",
    {
        "access_token": fields.String(required=True, description="JWT, `at+jwt`."),
        "token_type": fields.String(required=True, enum=["Bearer"]),
        "expires_in": fields.Integer(required=True, description="Seconds."),
    },
)
#: What an operation that checks the caller's password and a code may answer.
PASSWORD_AND_CODE_ERRORS = (
    Code.VALIDATION_ERROR,
    *AUTHENTICATION_ERRORS,
    Code.INVALID_CREDENTIALS,
    Code.INVALID_MFA_CODE,
    Code.MFA_NOT_ENABLED,
    Code.UNSUPPORTED_MEDIA_TYPE,
    Code.RATE_LIMITED,
)


@ns.route("/me/mfa")
class Factor(Resource):
    """The caller's second factor."""

    method_decorators: ClassVar = [bearer_required]

    @ns.response(200, "Whether it is on.", status_model)
    @ns.doc(security="bearer", responses=problem_responses(*AUTHENTICATION_ERRORS))
    def get(self) -> dict[str, Any]:
        """Say whether the caller's second factor is on."""
        found = mfa.status(current_user)
        return {
            "enabled": found.enabled,
            "recovery_codes_left": found.recovery_codes_left,
        }

    @ns.expect(password_code_model)
    @ns.response(204, "The factor and its recovery codes are gone.")
    @ns.doc(security="bearer", responses=problem_responses(*PASSWORD_AND_CODE_ERRORS))
    def delete(self) -> Response:
        """Turn the caller's second factor off (password and a code)."""
        body = read_json(password_code_model)
        mfa.disable(
            current_user, body["password"], body["code"], address=request.remote_addr
        )
        return no_content()


@ns.route("/me/mfa/totp")
class TotpEnrolment(Resource):
    """Enrol a TOTP authenticator."""

    method_decorators: ClassVar = [bearer_required]

    @ns.expect(password_model)
    @ns.response(200, "The pending secret, for an authenticator app.", enrolment_model)
    @ns.doc(
        security="bearer",
        responses=problem_responses(
            Code.VALIDATION_ERROR,
            *AUTHENTICATION_ERRORS,
            Code.INVALID_CREDENTIALS,
            Code.MFA_ALREADY_ENABLED,
            Code.UNSUPPORTED_MEDIA_TYPE,
            Code.RATE_LIMITED,
        ),
    )
    def post(self) -> dict[str, Any]:
        """Start enrolling a TOTP factor; it is on once confirmed with a code."""
        body = read_json(password_model)
        enrolment = mfa.enrol(
            current_user, body["password"], address=request.remote_addr
        )
        return {"secret": enrolment.secret, "otpauth_uri": enrolment.otpauth_uri}


@ns.route("/me/mfa/totp/confirm")
class TotpConfirmation(Resource):
    """Confirm a pending TOTP factor."""

    method_decorators: ClassVar = [bearer_required]

    @ns.expect(code_model)
    @ns.response(200, "The factor is on: the recovery codes.", recovery_codes_model)
    @ns.doc(
        security="bearer",
        responses=problem_responses(
            Code.VALIDATION_ERROR,
            *AUTHENTICATION_ERRORS,
            Code.INVALID_MFA_CODE,
            Code.MFA_NOT_ENABLED,
            Code.UNSUPPORTED_MEDIA_TYPE,
            Code.RATE_LIMITED,
        ),
    )
    def post(self) -> dict[str, Any]:
        """Turn the pending factor on with a code; every other session is revoked."""
        body = read_json(code_model)
        codes = mfa.confirm(current_user, body["code"], address=request.remote_addr)
        return {"recovery_codes": codes}


@ns.route("/me/mfa/recovery-codes")
class RecoveryCodes(Resource):
    """The caller's recovery codes."""

    method_decorators: ClassVar = [bearer_required]

    @ns.expect(password_code_model)
    @ns.response(
        200, "Ten new recovery codes; the old ones died.", recovery_codes_model
    )
    @ns.doc(security="bearer", responses=problem_responses(*PASSWORD_AND_CODE_ERRORS))
    def post(self) -> dict[str, Any]:
        """Make ten new recovery codes (password and a code)."""
        body = read_json(password_code_model)
        codes = mfa.renew_recovery_codes(
            current_user, body["password"], body["code"], address=request.remote_addr
        )
        return {"recovery_codes": codes}


@ns.route("/login/mfa")
class MfaLogin(Resource):
    """The second step of a login with a second factor."""

    @ns.expect(mfa_login_model)
    @ns.response(
        200,
        "Logged in: a new session. With `refresh_token_transport: cookie`, no "
        "`refresh_token` member: it is set in the `__Host-authsvc_refresh` cookie.",
        tokens_model,
        headers=refresh_cookie.SET_COOKIE_DOC,
    )
    @ns.doc(
        responses=problem_responses(
            Code.VALIDATION_ERROR,
            Code.INVALID_MFA_TOKEN,
            Code.INVALID_MFA_CODE,
            Code.UNSUPPORTED_MEDIA_TYPE,
            Code.RATE_LIMITED,
        )
    )
    def post(self) -> tuple[dict[str, Any], int, dict]:
        """Finish a login with the mfa_token of POST /login and a code."""
        body = read_json(mfa_login_model, rules=refresh_cookie.transport_rules)
        client = request_client()
        return tokens_response(
            mfa.log_in_with_code(body["mfa_token"], body["code"], client),
            body.get(refresh_cookie.TRANSPORT),
        )


@ns.route("/reauthenticate")
class Reauthentication(Resource):
    """Authenticate again in the same session (RFC 9470 step-up)."""

    method_decorators: ClassVar = [bearer_required]

    @ns.expect(reauthentication_model)
    @ns.response(
        200, "A fresh access token; the refresh token stays.", access_token_model
    )
    @ns.doc(
        security="bearer",
        responses=with_401_model(
            problem_responses(
                Code.VALIDATION_ERROR,
                *AUTHENTICATION_ERRORS,
                Code.INVALID_CREDENTIALS,
                Code.INVALID_MFA_CODE,
                Code.INSUFFICIENT_USER_AUTHENTICATION,
                Code.UNSUPPORTED_MEDIA_TYPE,
                Code.RATE_LIMITED,
            ),
            step_up_model,
        ),
    )
    def post(self) -> tuple[dict[str, Any], int, dict]:
        """Prove who you are again: a new access token with a new `auth_time`."""
        body = read_json(reauthentication_model)
        issued = stepup.reauthenticate(
            current_user,
            body["password"],
            body.get("code"),
            address=request.remote_addr,
        )
        answer = {
            "access_token": issued.access_token,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
        }
        return answer, 200, TOKEN_HEADERS
