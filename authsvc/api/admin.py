"""Administration: find, inspect, disable, re-role and delete users (role ``admin``)."""

from __future__ import annotations

from typing import Any, ClassVar

from flask import Response
from flask_restx import Namespace, Resource, fields

from .. import accounts, admin, mfa, registration, revocation
from ..bearer import roles_required
from ..clock import iso
from ..errors import Code
from ..freshness import fresh_login_required
from ..models import User
from ..users import find_user
from .payload import read_int_arg, read_json, read_text_arg
from .schemas import (
    AUTHENTICATION_ERRORS,
    TEXT_PATTERN,
    no_content,
    problem_responses,
    step_up_model,
    user_json,
    user_model,
    with_401_model,
)

ns = Namespace("admin", description="User administration; needs the role `admin`.")

#: ``registration.ROLE_PATTERN``, anchored as JSON Schema patterns must be.
ROLE_PATTERN = rf"^{registration.ROLE_PATTERN.pattern}$"
ADMIN_ERRORS = (*AUTHENTICATION_ERRORS, Code.INSUFFICIENT_SCOPE)
#: What an administrator's change may answer besides: it needs a fresh token.
CHANGE_ERRORS = (*ADMIN_ERRORS, Code.INSUFFICIENT_USER_AUTHENTICATION)


def change_responses(*codes: Code) -> dict[str, Any]:
    """The documented errors of a change, its 401s with the RFC 9470 members."""
    return with_401_model(problem_responses(*CHANGE_ERRORS, *codes), step_up_model)


MAX_PER_PAGE = 100
MAX_PAGE = 1_000_000

admin_user_model = ns.inherit(
    "AdminUser",
    user_model,
    {
        "is_active": fields.Boolean(required=True),
        "password_changed_at": fields.String(required=True, description="ISO 8601."),
    },
)
user_page_model = ns.model(
    "UserPage",
    {
        "users": fields.List(fields.Nested(admin_user_model), required=True),
        "total": fields.Integer(required=True, description="Matches on all pages."),
    },
)
user_patch_model = ns.model(
    "UserPatch",
    {
        "is_active": fields.Boolean(description="False disables and logs out."),
        "roles": fields.List(
            fields.String(min_length=1, max_length=64, pattern=ROLE_PATTERN),
            max_items=32,
            description="The complete new set of roles; their sessions are revoked.",
        ),
    },
    strict=True,
)


def admin_user_json(user: User) -> dict[str, Any]:
    """What an administrator sees of a user: still never a hash."""
    return {
        **user_json(user),
        "is_active": user.is_active,
        "password_changed_at": iso(user.password_changed_at),
    }


class AdminResource(Resource):
    """A resource only users with the role ``admin`` may use."""

    method_decorators: ClassVar = [roles_required("admin")]


@ns.route("/users")
class AdminUsers(AdminResource):
    """All users."""

    @ns.doc(
        security="bearer",
        params={
            "q": {
                "description": "Part of a username or e-mail, case-insensitive.",
                "type": "string",
                "pattern": TEXT_PATTERN,
            },
            "page": {
                "description": "Page number from 1 (default 1).",
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_PAGE,
            },
            "per_page": {
                "description": f"Users per page, 1 to {MAX_PER_PAGE} (default 50).",
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_PER_PAGE,
            },
        },
        responses=problem_responses(Code.VALIDATION_ERROR, *ADMIN_ERRORS),
    )
    @ns.response(200, "A page of users, by username.", user_page_model)
    def get(self) -> dict[str, Any]:
        """Search users."""
        page = read_int_arg("page", default=1, minimum=1, maximum=MAX_PAGE)
        per_page = read_int_arg("per_page", default=50, minimum=1, maximum=MAX_PER_PAGE)
        query = read_text_arg("q", max_length=320)
        users, total = admin.list_users(query, page=page, per_page=per_page)
        return {"users": [admin_user_json(user) for user in users], "total": total}


@ns.route("/users/<string:user_id>")
@ns.param("user_id", "The user's id.")
class AdminUser(AdminResource):
    """One user."""

    @ns.response(200, "The user.", admin_user_model)
    @ns.doc(
        security="bearer", responses=problem_responses(*ADMIN_ERRORS, Code.NOT_FOUND)
    )
    def get(self, user_id: str) -> dict[str, Any]:
        """Show a user."""
        return admin_user_json(find_user(user_id))

    @ns.expect(user_patch_model)
    @ns.response(200, "The changed user.", admin_user_model)
    @ns.doc(
        security="bearer",
        responses=change_responses(
            Code.VALIDATION_ERROR,
            Code.NOT_FOUND,
            Code.LAST_ADMIN,
            Code.UNSUPPORTED_MEDIA_TYPE,
        ),
    )
    @fresh_login_required()
    def patch(self, user_id: str) -> dict[str, Any]:
        """Enable, disable or re-role a user; either change ends their sessions.

        Disabling the last active administrator, or taking their role, is refused.
        """
        body = read_json(user_patch_model)
        user = find_user(user_id)
        admin.update_user(
            user, is_active=body.get("is_active"), roles=body.get("roles")
        )
        return admin_user_json(user)

    @ns.response(204, "The user and all their sessions are gone.")
    @ns.doc(
        security="bearer",
        responses=change_responses(Code.NOT_FOUND, Code.LAST_ADMIN),
    )
    @fresh_login_required()
    def delete(self, user_id: str) -> Response:
        """Delete a user; never the last active administrator."""
        accounts.delete_user(find_user(user_id))
        return no_content()


@ns.route("/users/<string:user_id>/sessions")
@ns.param("user_id", "The user's id.")
class AdminUserSessions(AdminResource):
    """A user's sessions."""

    @ns.response(204, "Every session of the user is revoked.")
    @ns.doc(security="bearer", responses=change_responses(Code.NOT_FOUND))
    @fresh_login_required()
    def delete(self, user_id: str) -> Response:
        """Log a user out everywhere."""
        user = find_user(user_id)
        revocation.revoke_user_sessions(user.id, reason="admin")
        return no_content()


@ns.route("/users/<string:user_id>/mfa")
@ns.param("user_id", "The user's id.")
class AdminUserFactor(AdminResource):
    """A user's second factor."""

    @ns.response(204, "The factor is off; every session of the user is revoked.")
    @ns.doc(
        security="bearer",
        responses=change_responses(Code.NOT_FOUND, Code.MFA_NOT_ENABLED),
    )
    @fresh_login_required()
    def delete(self, user_id: str) -> Response:
        """Turn a user's second factor off (a lost phone); they log in afresh."""
        mfa.reset(find_user(user_id))
        return no_content()
