"""Recovery: forgotten passwords, and verifying or changing the e-mail address.

Links in messages lead to the client app's pages, which POST the token here:
nothing is ever spent by a GET (mail scanners open links).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from flask import request
from flask_login import current_user
from flask_restx import Namespace, Resource, fields

from .. import recovery
from ..bearer import bearer_required
from ..errors import Code
from ..passwords import MAX_PASSWORD_LENGTH
from .payload import read_json
from .schemas import (
    AUTHENTICATION_ERRORS,
    TEXT_PATTERN,
    Email,
    NewPassword,
    no_content,
    problem_responses,
    user_json,
    user_model,
)

ns = Namespace(
    "recovery",
    description="Reset a forgotten password; verify or change the e-mail address.",
    path="/",
)

#: What every request that asks for a message may answer.
MAIL_REQUEST_ERRORS = (
    Code.VALIDATION_ERROR,
    Code.UNSUPPORTED_MEDIA_TYPE,
    Code.RATE_LIMITED,
)
#: What every request that spends a code may answer.
CODE_ERRORS = (Code.VALIDATION_ERROR, Code.INVALID_CODE, Code.UNSUPPORTED_MEDIA_TYPE)


def _email(**kwargs: Any) -> Email:
    return Email(max_length=254, pattern=TEXT_PATTERN, **kwargs)


def _code() -> fields.String:
    return fields.String(
        max_length=32,
        pattern=TEXT_PATTERN,
        description="The six digits of the message.",
        example="123456",
    )


def _token() -> fields.String:
    return fields.String(
        min_length=1,
        max_length=512,
        pattern=TEXT_PATTERN,
        description="The `token` of the message's link.",
    )


accepted_model = ns.model("Accepted", {})
forgot_model = ns.model(
    "PasswordForgot",
    {"email": _email(required=True, description="The account's e-mail address.")},
    strict=True,
)
reset_model = ns.model(
    "PasswordReset",
    {
        "email": _email(description="With `code`: the address the code went to."),
        "code": _code(),
        "token": _token(),
        "new_password": NewPassword(
            required=True, description="The same policy as at registration."
        ),
    },
    strict=True,
)
verify_model = ns.model(
    "EmailVerification",
    {
        "email": _email(description="With `code`: the address the code went to."),
        "code": _code(),
        "token": _token(),
    },
    strict=True,
)
change_model = ns.model(
    "EmailChange",
    {
        "email": _email(required=True, description="The new address."),
        "password": fields.String(
            required=True, max_length=MAX_PASSWORD_LENGTH, pattern=TEXT_PATTERN
        ),
    },
    strict=True,
)
confirm_model = ns.model(
    "EmailChangeConfirmation",
    {"code": _code(), "token": _token()},
    strict=True,
)


def _either(*by_code: str) -> Callable[[dict[str, Any]], dict[str, str]]:
    """A rule: ``token`` alone, or every field of ``by_code``; and a valid address."""

    def rule(body: dict[str, Any]) -> dict[str, str]:
        errors = recovery.email_errors(body.get("email"))
        if "token" in body:
            errors.update(
                {
                    name: "must not be given with token"
                    for name in by_code
                    if name in body
                }
            )
        else:
            errors.update({name: "is required" for name in by_code if name not in body})
        return errors

    return rule


@ns.route("/password/forgot")
class PasswordForgot(Resource):
    """Ask for a password-reset message."""

    @ns.expect(forgot_model)
    @ns.response(202, "Queued, if an active account has the address.", accepted_model)
    @ns.doc(responses=problem_responses(*MAIL_REQUEST_ERRORS))
    def post(self) -> tuple[dict[str, Any], int]:
        """Send a reset code (and link) to the address, if an account has it.

        The answer is the same whether or not one does, whether it is disabled,
        and whether the address's own limit is reached.
        """
        body = read_json(forgot_model, rules=_either())
        recovery.forgot(body["email"], address=request.remote_addr)
        return {}, 202


@ns.route("/password/reset")
class PasswordReset(Resource):
    """Set a new password with a reset code or link."""

    @ns.expect(reset_model)
    @ns.response(204, "Changed; every session of the user is revoked.")
    @ns.doc(responses=problem_responses(*CODE_ERRORS))
    def post(self) -> Any:
        """Set a new password with `email` and `code`, or with `token`.

        No session is opened: the client logs in afresh.
        """
        body = read_json(reset_model, rules=_either("email", "code"))
        recovery.reset(
            body["new_password"],
            email=body.get("email"),
            code=body.get("code"),
            token=body.get("token"),
        )
        return no_content()


@ns.route("/email/verify")
class EmailVerify(Resource):
    """Verify an e-mail address with its code or link; no bearer token needed."""

    @ns.expect(verify_model)
    @ns.response(200, "The user, with the address verified.", user_model)
    @ns.doc(responses=problem_responses(*CODE_ERRORS, Code.ALREADY_EXISTS))
    def post(self) -> dict[str, Any]:
        """Verify with `email` and `code`, or with `token` (also a change's link)."""
        body = read_json(verify_model, rules=_either("email", "code"))
        user = recovery.verify(
            email=body.get("email"), code=body.get("code"), token=body.get("token")
        )
        return user_json(user)


@ns.route("/me/email/verify")
class MyEmailVerify(Resource):
    """Ask for a verification message to the caller's address."""

    method_decorators: ClassVar = [bearer_required]

    @ns.response(202, "Queued.", accepted_model)
    @ns.doc(
        security="bearer",
        responses=problem_responses(
            *AUTHENTICATION_ERRORS,
            Code.VALIDATION_ERROR,
            Code.ALREADY_VERIFIED,
            Code.RATE_LIMITED,
        ),
    )
    def post(self) -> tuple[dict[str, Any], int]:
        """Send a verification code (and link) to the caller's address."""
        recovery.request_verification(current_user, address=request.remote_addr)
        return {}, 202


@ns.route("/me/email")
class MyEmail(Resource):
    """Change the caller's e-mail address."""

    method_decorators: ClassVar = [bearer_required]

    @ns.expect(change_model)
    @ns.response(202, "Queued: a code to the new address.", accepted_model)
    @ns.doc(
        security="bearer",
        responses=problem_responses(
            *MAIL_REQUEST_ERRORS,
            *AUTHENTICATION_ERRORS,
            Code.INVALID_CREDENTIALS,
            Code.ALREADY_EXISTS,
        ),
    )
    def post(self) -> tuple[dict[str, Any], int]:
        """Ask to change the address; it changes once the new one confirms.

        A notice (without a code) goes to the old address.
        """
        body = read_json(change_model, rules=_either())
        recovery.change_email(
            current_user, body["email"], body["password"], address=request.remote_addr
        )
        return {}, 202


@ns.route("/me/email/confirm")
class MyEmailConfirm(Resource):
    """Confirm the caller's new e-mail address."""

    method_decorators: ClassVar = [bearer_required]

    @ns.expect(confirm_model)
    @ns.response(200, "The user, with the new address, verified.", user_model)
    @ns.doc(
        security="bearer",
        responses=problem_responses(
            *CODE_ERRORS, *AUTHENTICATION_ERRORS, Code.ALREADY_EXISTS
        ),
    )
    def post(self) -> dict[str, Any]:
        """Confirm with the `code` or `token` sent to the new address."""
        body = read_json(confirm_model, rules=_either("code"))
        user = recovery.confirm_change(
            current_user, code=body.get("code"), token=body.get("token")
        )
        return user_json(user)
