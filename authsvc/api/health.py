"""Health: is the process up (liveness), and does it reach its database (readiness)."""

from __future__ import annotations

from typing import Any

from flask_restx import Namespace, Resource, fields
from sqlalchemy.exc import SQLAlchemyError

from ..db import get_db
from ..errors import RETRY_AFTER_UNAVAILABLE
from ..migrations import ensure_schema
from .schemas import problem_responses

ns = Namespace(
    "health", description="Liveness and readiness for orchestrators.", path="/"
)

health_model = ns.model(
    "Health", {"status": fields.String(required=True, enum=["ok", "unavailable"])}
)


@ns.route("/health")
class Health(Resource):
    """Readiness."""

    #: It brings the schema up itself, and answers an outage in its own shape.
    handles_database_outage = True

    @ns.response(200, "The database answers.", health_model)
    @ns.response(503, "The database does not answer.", health_model)
    @ns.doc(responses=problem_responses(always=()))
    def get(self) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Say whether the service can reach its database."""
        try:
            ensure_schema()
            get_db().ping()
        except SQLAlchemyError:
            return (
                {"status": "unavailable"},
                503,
                {"Retry-After": str(RETRY_AFTER_UNAVAILABLE)},
            )
        return {"status": "ok"}, 200, {}


@ns.route("/health/live")
class Liveness(Resource):
    """Liveness."""

    #: It never asks the database, so a put-off schema upgrade never holds it.
    handles_database_outage = True

    @ns.response(200, "The process answers.", health_model)
    @ns.doc(responses=problem_responses(always=()))
    def get(self) -> dict[str, Any]:
        """Say the process answers, without asking the database."""
        # A database outage must not get healthy workers restarted: that is
        # readiness (/health), which takes the instance out of rotation instead.
        return {"status": "ok"}
