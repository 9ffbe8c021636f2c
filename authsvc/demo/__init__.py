"""The demo single-page app at ``/demo/``: the reference browser client.

Plain HTML and one JavaScript module, served from the package, same-origin with
the API, so the refresh cookie (``SameSite=Strict``, ``__Host-``) reaches
``POST /refresh``. Served only with ``AUTHSVC_DEMO_SPA=1`` (on in development).
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Flask, Response, abort

#: Where the app's files are, inside the installed package.
STATIC = Path(__file__).resolve().parent / "static"
#: The app's files and their media types: nothing else under /demo/ is served.
FILES = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
}

#: The page may load its own script and style and talk to the service, nothing
#: else: no inline script, no framing, no form posting anywhere.
POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

blueprint = Blueprint("demo", __name__, url_prefix="/demo")


@blueprint.get("/")
def index() -> Response:
    """The page."""
    return asset("index.html")


@blueprint.get("/<path:name>")
def asset(name: str) -> Response:
    """The page's script and style (anything else is 404)."""
    if name not in FILES:
        abort(404)
    # A few kilobytes, read whole: no file handle outlives the request.
    return Response((STATIC / name).read_bytes(), mimetype=FILES[name])


@blueprint.after_request
def protect(response: Response) -> Response:
    """A strict Content-Security-Policy, and no framing (clickjacking)."""
    response.headers["Content-Security-Policy"] = POLICY
    response.headers["X-Frame-Options"] = "DENY"
    return response


def init_app(app: Flask) -> None:
    """Serve the demo on ``app`` when ``AUTHSVC_DEMO_SPA`` is on."""
    if app.config["DEMO_SPA"]:
        app.register_blueprint(blueprint)
