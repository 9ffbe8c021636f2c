"""Users: registration and the caller's own account."""

from __future__ import annotations

from typing import Any, ClassVar

from flask import Response, request
from flask_login import current_user
from flask_restx import Namespace, Resource, fields

from .. import accounts, registration
from ..bearer import bearer_required
from ..errors import Code, Problem
from ..passwords import MAX_PASSWORD_LENGTH
from .payload import checked, read_json, read_object
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

ns = Namespace("users", description="Register and read your own account.", path="/")

#: What an operation that first checks the caller's password may answer.
PASSWORD_CHECK_ERRORS = (
    Code.VALIDATION_ERROR,
    *AUTHENTICATION_ERRORS,
    Code.INVALID_CREDENTIALS,
    Code.UNSUPPORTED_MEDIA_TYPE,
    Code.RATE_LIMITED,
)

registration_model = ns.model(
    "Registration",
    {
        "username": fields.String(
            required=True,
            min_length=3,
            max_length=64,
            pattern=r"^[\w.-]+$",
            description="3 to 64 letters, digits, `.`, `_` or `-`; case-insensitive.",
        ),
        "password": NewPassword(
            required=True,
            description="At least AUTHSVC_PASSWORD_MIN_LENGTH (8) characters, at most "
            "1024; not a common password; not containing the username.",
        ),
        "email": Email(
            max_length=254,
            pattern=TEXT_PATTERN,
            description="Optional; unique, case-insensitive.",
        ),
    },
    strict=True,
)

password_change_model = ns.model(
    "PasswordChange",
    {
        "current_password": fields.String(
            required=True, max_length=MAX_PASSWORD_LENGTH, pattern=TEXT_PATTERN
        ),
        "new_password": NewPassword(
            required=True, description="The same policy as at registration."
        ),
    },
    strict=True,
)
account_deletion_model = ns.model(
    "AccountDeletion",
    {
        "password": fields.String(
            required=True, max_length=MAX_PASSWORD_LENGTH, pattern=TEXT_PATTERN
        )
    },
    strict=True,
)


@ns.route("/users")
class Users(Resource):
    """Registration."""

    @ns.expect(registration_model)
    @ns.response(201, "The new user.", user_model)
    @ns.doc(
        responses=problem_responses(
            Code.VALIDATION_ERROR,
            Code.REGISTRATION_CLOSED,
            Code.ALREADY_EXISTS,
            Code.UNSUPPORTED_MEDIA_TYPE,
            Code.RATE_LIMITED,
        )
    )
    def post(self) -> tuple[dict[str, Any], int]:
        """Create an account."""
        body = read_object()
        policy = registration.registration_errors(body)
        try:
            checked(registration_model, body, lambda _: policy)
        except Problem as problem:
            # Refused by the policy alone, it is a registration attempt, which
            # counts (and may find registration closed); a malformed one is not.
            if policy.keys() >= (problem.errors or {}).keys():
                registration.registration_attempt(request.remote_addr)
            raise
        user = registration.register(
            body["username"],
            body["password"],
            body.get("email"),
            address=request.remote_addr,
        )
        return user_json(user), 201


@ns.route("/me")
class Me(Resource):
    """The caller's own account."""

    method_decorators: ClassVar = [bearer_required]

    @ns.response(200, "The caller.", user_model)
    @ns.doc(security="bearer", responses=problem_responses(*AUTHENTICATION_ERRORS))
    def get(self) -> dict[str, Any]:
        """Return the user of the presented access token."""
        # Unwrapped once: each attribute read through the proxy looks the user up.
        return user_json(current_user._get_current_object())

    @ns.expect(account_deletion_model)
    @ns.response(204, "The account and all its sessions are gone.")
    @ns.doc(
        security="bearer",
        responses=problem_responses(*PASSWORD_CHECK_ERRORS, Code.LAST_ADMIN),
    )
    def delete(self) -> Response:
        """Delete the caller's account; the username and e-mail become free.

        The last active administrator cannot delete their own account.
        """
        body = read_json(account_deletion_model)
        accounts.delete_account(
            current_user, body["password"], address=request.remote_addr
        )
        return no_content()


@ns.route("/me/password")
class Password(Resource):
    """The caller's password."""

    method_decorators: ClassVar = [bearer_required]

    @ns.expect(password_change_model)
    @ns.response(204, "Changed; every other session of the user is revoked.")
    @ns.doc(security="bearer", responses=problem_responses(*PASSWORD_CHECK_ERRORS))
    def post(self) -> Response:
        """Change the caller's password, keeping only the calling session."""
        body = read_json(password_change_model, rules=_new_password_errors)
        accounts.change_password(
            current_user,
            body["current_password"],
            body["new_password"],
            address=request.remote_addr,
        )
        return no_content()


def _new_password_errors(body: dict[str, Any]) -> dict[str, str]:
    # Checked with the rest of the body, before the current password is.
    return registration.new_password_errors(
        body.get("new_password"), username=current_user.username, field="new_password"
    )
