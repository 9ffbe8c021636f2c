"""The HTTP API: one Flask-RESTX ``Api`` on a blueprint, one namespace per module."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from flask_restx import Api
from werkzeug.exceptions import BadHost

from ..errors import PROBLEM_MIMETYPE, handle_error
from . import admin, forward, health, mfa, recovery, sessions, tokens, users
from .schemas import mfa_required_model, problem_model, step_up_model, user_model

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
Every text of a request is Unicode text: a NUL (which every text's `pattern` refuses)
or a lone surrogate (`\\ud800` to `\\udfff` unpaired, not Unicode, RFC 7493) is
400 `validation_error` under `body`.
"""


#: The Swagger UI page's endpoint.
DOCS_ENDPOINT = "api.doc"
#: A script written into a page rather than loaded from a file.
INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.DOTALL)


def docs_policy(scripts: list[bytes]) -> str:
    """The Content-Security-Policy of the Swagger UI page with these inline scripts.

    Scripts, styles, fonts and images come from the service itself, requests go
    to it alone; of inline scripts only the page's own start-up script runs, by
    its hash (taken from the page as rendered, so a new Flask-RESTX template
    keeps working). Inline styles stay allowed: the page and Swagger UI style
    elements inline, and styles run no code.
    """
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in scripts
    )
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src 'self' {hashes}".strip(),
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "font-src 'self'",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def protect_docs(response: Response) -> Response:
    """Give the Swagger UI page a strict CSP, and forbid framing it (clickjacking)."""
    if request.endpoint == DOCS_ENDPOINT and response.mimetype == "text/html":
        scripts = INLINE_SCRIPT.findall(response.get_data())
        response.headers["Content-Security-Policy"] = docs_policy(scripts)
        response.headers["X-Frame-Options"] = "DENY"
    return response


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
    blueprint.after_request(protect_docs)
    for model in (problem_model, user_model, mfa_required_model, step_up_model):
        api.models[model.name] = model
    for namespace in (
        sessions.ns,
        users.ns,
        admin.ns,
        tokens.ns,
        health.ns,
        mfa.ns,
        recovery.ns,
        # Browser apps and reverse proxies.
        forward.ns,
    ):
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
        document: dict[str, Any] = api.__schema__
    return document
