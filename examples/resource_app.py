"""A Flask API of your own that accepts authsvc access tokens.

Run authsvc (``scripts/serve``), then, in another shell::

    AUTHSVC_URL=http://127.0.0.1:8000 flask --app examples/resource_app.py run -p 5000

and call it with an access token from ``POST /login``::

    curl -s http://127.0.0.1:5000/hello -H "Authorization: Bearer $ACCESS"

``/hello`` needs any valid token, ``/reports`` the role ``reporter``,
``/transfer`` asks authsvc's ``/introspect`` on every call, so a logout is seen
at once (set ``AUTHSVC_INTROSPECTION_SECRET`` to the same value on both sides),
and ``/payouts`` needs a token whose user logged in (or reauthenticated at
authsvc's ``POST /reauthenticate``) within the last five minutes.
"""

from __future__ import annotations

import os

from flask import Flask
from flask_login import current_user, login_required

from authsvc.resource import ResourceServer, fresh_login_required, roles_required

AUTHSVC_URL = os.environ.get("AUTHSVC_URL", "http://127.0.0.1:8000").rstrip("/")

app = Flask(__name__)
resource = ResourceServer(
    app,
    jwks_url=f"{AUTHSVC_URL}/.well-known/jwks.json",
    issuer=os.environ.get("AUTHSVC_ISSUER", "authsvc"),
    audience=os.environ.get("AUTHSVC_AUDIENCE", "authsvc"),
    introspection_url=f"{AUTHSVC_URL}/introspect",
    introspection_secret=os.environ.get("AUTHSVC_INTROSPECTION_SECRET"),
)


@app.get("/hello")
@login_required
def hello() -> dict[str, object]:
    """Greet the caller by the name in their token."""
    return {"hello": current_user.username, "id": current_user.id}


@app.get("/reports")
@roles_required("reporter")
def reports() -> dict[str, object]:
    """Only for users with the role ``reporter``."""
    return {"reports": [], "roles": list(current_user.roles)}


@app.post("/transfer")
@resource.introspected
def transfer() -> dict[str, object]:
    """A sensitive action: the token's session must still be live right now."""
    return {"transferred": True, "session": current_user.session_id}


@app.post("/payouts")
@fresh_login_required(max_age=300)
def payouts() -> dict[str, object]:
    """A step-up action: a stale token is sent back to authenticate again."""
    return {"paid": True, "auth_time": current_user.auth_time}
