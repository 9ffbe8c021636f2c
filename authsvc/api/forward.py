"""Forward authentication: a reverse proxy asks whether a request may pass.

nginx ``auth_request``, Traefik ``ForwardAuth`` and Caddy ``forward_auth`` send the
client's ``Authorization`` header here before they let a request through to the
service behind them. The token is checked exactly as for ``GET /me`` (the same
loader, the same database read, so a logout takes effect at once), and the answer
names the caller in the ``X-Auth-Request-*`` headers oauth2-proxy made common, for
the proxy to hand on to its upstream. Never throttled: every request through the
proxy comes here.
"""

from __future__ import annotations

from typing import ClassVar

from flask import Response, request
from flask_login import current_user
from flask_restx import Namespace, Resource

from ..bearer import bearer_required, insufficient_scope
from ..errors import Code
from ..principal import Principal
from .schemas import AUTHENTICATION_ERRORS, no_content, problem_responses

ns = Namespace(
    "forward",
    description="Forward authentication for reverse proxies.",
    path="/auth",
)

#: What the answer tells the proxy about the caller, for its upstream.
IDENTITY_HEADERS = {
    "X-Auth-Request-User": "The user's id.",
    "X-Auth-Request-Preferred-Username": "The username (UTF-8).",
    "X-Auth-Request-Email": "The e-mail address; absent when the user has none.",
    "X-Auth-Request-Groups": "The user's roles, comma-separated.",
    "X-Auth-Request-Session": "The session id.",
}

HEADER_DOCS = {
    name: {"type": "string", "description": text}
    for name, text in IDENTITY_HEADERS.items()
}
#: What GET and HEAD both take and answer.
CHECK_DOCS = {
    "security": "bearer",
    "params": {
        "role": {
            "in": "query",
            "type": "array",
            "items": {"type": "string"},
            "collectionFormat": "multi",
            "description": "Repeatable: the caller must hold one of these roles.",
        }
    },
    "responses": problem_responses(*AUTHENTICATION_ERRORS, Code.INSUFFICIENT_SCOPE),
}


def header_text(text: str) -> str:
    """``text`` as a header value whose bytes on the wire are its UTF-8.

    WSGI writes header values as Latin-1; a username such as ``tanaka田中`` would
    not fit, so its UTF-8 bytes are handed over one per character, as PEP 3333
    says for bytes in headers.
    """
    return text.encode("utf-8").decode("latin-1")


def identity_headers(caller: Principal) -> dict[str, str]:
    """The ``X-Auth-Request-*`` headers naming ``caller``."""
    headers = {
        "X-Auth-Request-User": caller.id,
        "X-Auth-Request-Preferred-Username": header_text(caller.username),
        "X-Auth-Request-Groups": ",".join(caller.roles),
        "X-Auth-Request-Session": caller.session_id,
    }
    if caller.email:
        headers["X-Auth-Request-Email"] = header_text(caller.email)
    return headers


@ns.route("/forward")
class Forward(Resource):
    """May the request the proxy holds pass?"""

    method_decorators: ClassVar = [bearer_required]

    @ns.response(204, "Yes: the caller is named in the headers.", headers=HEADER_DOCS)
    @ns.doc(**CHECK_DOCS)
    def get(self) -> Response:
        """Check the bearer token (and roles) as ``GET /me`` would; name the caller."""
        return answer()

    @ns.response(204, "Yes, as for GET.", headers=HEADER_DOCS)
    @ns.doc(**CHECK_DOCS)
    def head(self) -> Response:
        """The same check as ``GET``, for proxies that ask with ``HEAD``."""
        return answer()


def answer() -> Response:
    """204 naming the authenticated caller, if they hold one of the roles asked for."""
    # Unwrapped once: each attribute read through the proxy looks the user up.
    caller: Principal = current_user._get_current_object()
    required = request.args.getlist("role")
    if required and not set(required) & set(caller.roles):
        insufficient_scope()
    response = no_content()
    response.headers.update(identity_headers(caller))
    return response
