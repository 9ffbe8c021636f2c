"""Shapes shared by several namespaces: the error body, the user, empty answers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from flask import Response, current_app, has_app_context
from flask_restx import Model, fields
from flask_restx.utils import not_none

from ..clock import iso
from ..config import SETTINGS
from ..errors import CODES, Code
from ..passwords import MAX_PASSWORD_LENGTH

#: What every text of a request may hold: anything but NUL, which PostgreSQL
#: cannot store. Lone surrogates, which UTF-8 cannot encode, are refused too (as
#: ``body``, before any schema), but no pattern says so: the regex dialects of
#: common validators cannot name a surrogate, and drop such a pattern whole.
TEXT_PATTERN = r"^[^\u0000]*$"


class NullableString(fields.String):
    """A string that may be null (Swagger 2.0 says so with ``x-nullable``)."""

    def schema(self) -> dict[str, Any]:
        return {**super().schema(), "x-nullable": True}


class Email(fields.String):
    """An e-mail address; its form is checked by the use case, not the schema."""

    __schema_format__ = "email"


class NewPassword(fields.String):
    """A new password, whose schema states the running policy's length limits.

    Not cached like other fields' schemas: apps with different settings share the
    model, and each states (and checks) its own minimum.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=MAX_PASSWORD_LENGTH, pattern=TEXT_PATTERN, **kwargs)

    @property
    def __schema__(self) -> dict[str, Any]:
        schema: dict[str, Any] = not_none(self.schema())
        return schema

    def schema(self) -> dict[str, Any]:
        return {**super().schema(), "minLength": password_min_length()}


def password_min_length() -> int:
    """The configured minimum password length (the default outside an app)."""
    if has_app_context():
        return int(current_app.config["PASSWORD_MIN_LENGTH"])
    return int(SETTINGS["PASSWORD_MIN_LENGTH"].default)


problem_model = Model(
    "Problem",
    {
        "type": fields.String(required=True, example="about:blank"),
        "title": fields.String(required=True, example="Unauthorized"),
        "status": fields.Integer(required=True, example=401),
        "detail": fields.String(required=True),
        "code": fields.String(
            required=True,
            enum=sorted(CODES),
            description="Stable machine-readable error code.",
        ),
        "errors": fields.Raw(
            description="For `validation_error`: a message per invalid field.",
            example={"password": "must be at least 8 characters"},
        ),
    },
)

user_model = Model(
    "User",
    {
        "id": fields.String(required=True, description="Stable id, never reused."),
        "username": fields.String(required=True),
        "email": NullableString(required=True, description="Null when not given."),
        "email_verified": fields.Boolean(
            required=True, description="The owner proved they read `email`."
        ),
        "roles": fields.List(fields.String, required=True),
        "mfa_enabled": fields.Boolean(
            required=True, description="A second factor is on for this account."
        ),
        "created_at": fields.String(required=True, description="ISO 8601, UTC."),
    },
)


#: What any operation behind ``login_required`` may answer.
AUTHENTICATION_ERRORS = (
    Code.INVALID_REQUEST,
    Code.AUTHENTICATION_REQUIRED,
    Code.INVALID_TOKEN,
    Code.TOKEN_EXPIRED,
    Code.TOKEN_REVOKED,
)


#: What any operation may answer: a crash, or a database that does not answer.
ALWAYS = (Code.INTERNAL_ERROR, Code.SERVICE_UNAVAILABLE)
#: What any route answers to a request it cannot route: malformed HTTP or a
#: malformed ``Host`` header, a request line or a header over the server's limits.
ANY_REQUEST = (Code.INVALID_REQUEST, Code.URI_TOO_LONG, Code.HEADERS_TOO_LARGE)


def problem_responses(
    *codes: Code, always: Sequence[Code] = ALWAYS
) -> dict[str, tuple[str, Model]]:
    """Document the error ``codes`` an operation can answer, grouped by status.

    Every operation may also fail with ``always`` and :data:`ANY_REQUEST`, and
    one that reads a body (it lists ``unsupported_media_type``) with
    ``payload_too_large``.
    """
    if Code.UNSUPPORTED_MEDIA_TYPE in codes:
        codes = (*codes, Code.PAYLOAD_TOO_LARGE)
    by_status: dict[int, list[str]] = {}
    for code in dict.fromkeys((*codes, *always, *ANY_REQUEST)):
        by_status.setdefault(CODES[code][0], []).append(f"`{code}`")
    return {
        str(status): (" or ".join(names), problem_model)
        for status, names in sorted(by_status.items())
    }


class UserView(Protocol):
    """What :func:`user_json` reads: a stored user or the authenticated caller."""

    id: Any
    username: str
    email: str | None
    email_verified: bool
    roles: list[str]
    mfa_enabled: bool
    created_at: datetime


def user_json(user: UserView) -> dict[str, Any]:
    """The public view of a user: never a hash or anything secret."""
    return {
        "id": str(user.id),
        "username": user.username,
        "email": user.email,
        "email_verified": user.email_verified,
        "roles": list(user.roles),
        "mfa_enabled": user.mfa_enabled,
        "created_at": iso(user.created_at),
    }


def no_content() -> Response:
    """A 204 with neither body nor content type."""
    response = Response(status=204)
    del response.headers["Content-Type"]
    return response
