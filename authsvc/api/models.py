"""Shapes shared by several namespaces: the error body, the user, empty answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from flask import Response
from flask_restx import Model, fields

from ..errors import CODES


class NullableString(fields.String):
    """A string that may be null (Swagger 2.0 says so with ``x-nullable``)."""

    def schema(self) -> dict[str, Any]:
        return {**super().schema(), "x-nullable": True}


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
        "roles": fields.List(fields.String, required=True),
        "created_at": fields.String(required=True, description="ISO 8601, UTC."),
    },
)


#: What any operation behind ``login_required`` may answer.
AUTHENTICATION_ERRORS = (
    "invalid_request",
    "authentication_required",
    "invalid_token",
    "token_expired",
    "token_revoked",
)


#: What any operation may answer: a crash, or a database that does not answer.
ALWAYS = ("internal_error", "service_unavailable")


def problem_responses(*codes: str) -> dict[str, tuple[str, Model]]:
    """Document the error ``codes`` an operation can answer, grouped by status.

    Every operation may also fail with :data:`ALWAYS`, and one that reads a body
    (it lists ``unsupported_media_type``) with ``payload_too_large``.
    """
    if "unsupported_media_type" in codes:
        codes = (*codes, "payload_too_large")
    by_status: dict[int, list[str]] = {}
    for code in (*codes, *ALWAYS):
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
    roles: list[str]
    created_at: datetime


def user_json(user: UserView) -> dict[str, Any]:
    """The public view of a user: never a hash or anything secret."""
    return {
        "id": str(user.id),
        "username": user.username,
        "email": user.email,
        "roles": list(user.roles),
        "created_at": iso(user.created_at),
    }


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``."""
    return moment.isoformat().replace("+00:00", "Z")


def no_content() -> Response:
    """A 204 with neither body nor content type."""
    response = Response(status=204)
    del response.headers["Content-Type"]
    return response
