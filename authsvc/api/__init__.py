"""The HTTP API: one Flask-RESTX ``Api`` on a blueprint, one namespace per module."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Flask, Response, current_app
from flask_restx import Api
from werkzeug.exceptions import BadHost

from ..errors import PROBLEM_MIMETYPE, handle_error
from . import admin, health, keys, sessions, users
from .models import problem_model, user_model

AUTHORIZATIONS = {
    "bearer": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "An access token from POST /login, as `Bearer <access token>`.",
    }
}

DESCRIPTION = """\
Token-based authentication: log in for a short-lived access token (a JWT) and a
rotating refresh token, send `Authorization: Bearer <access token>`, refresh, log out.
Every error is `application/problem+json` with a stable machine-readable `code`.
"""


def output_json(data: Any, code: int, headers: Any = None) -> Response:
    """A JSON body, as Flask-RESTX writes it, made straight into the response.

    Flask-RESTX's own goes through ``make_response`` and then adds the headers;
    this is every answer of the API, ``GET /me`` included.
    """
    return current_app.response_class(
        json.dumps(data) + "\n", code, headers, mimetype="application/json"
    )


class ProblemApi(Api):
    """An ``Api`` whose every error, from any resource, renders as problem+json."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.representations["application/json"] = output_json
        # Listed so the document's ``produces`` names the error media type too.
        self.representations[PROBLEM_MIMETYPE] = output_json

    def handle_error(self, e: Exception) -> Response:
        return handle_error(e)

    def _should_use_fr_error_handler(self) -> bool:
        # Flask-RESTX matches the URL again to route an error, and for a Host
        # header no URL can be built from (an empty or over-long DNS label) that
        # raises werkzeug's BadHost anew, out of the error handler: a 500. Such a
        # request matches no route; the app's handler answers it.
        try:
            return bool(super()._should_use_fr_error_handler())
        except BadHost:
            return False


def create_api(app: Flask) -> Api:
    """Build the app's ``Api``; its routes sit at the root of the service."""
    blueprint = Blueprint("api", __name__)
    docs = app.config["DOCS"]
    api = ProblemApi(
        title="authsvc",
        version="1.0",
        description=DESCRIPTION,
        doc="/docs" if docs else False,
        authorizations=AUTHORIZATIONS,
        validate=False,
    )
    api.init_app(blueprint, add_specs=docs)
    for model in (problem_model, user_model):
        api.models[model.name] = model
    for namespace in (sessions.ns, users.ns, admin.ns, keys.ns, health.ns):
        api.add_namespace(namespace)
    app.register_blueprint(blueprint)
    return api


def init_app(app: Flask) -> None:
    """Mount the API on ``app``."""
    app.config.setdefault("RESTX_ERROR_404_HELP", False)
    app.config.setdefault("RESTX_MASK_SWAGGER", False)
    app.extensions["authsvc.api"] = create_api(app)


def openapi_document(app: Flask) -> dict[str, Any]:
    """The OpenAPI document ``app`` serves at ``/swagger.json``."""
    api: Api = app.extensions["authsvc.api"]
    with app.test_request_context():
        return api.__schema__
