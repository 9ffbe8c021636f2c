"""The HTTP edge: body limits, trusted proxies, CORS, headers on every response."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response
from flask_cors import CORS
from werkzeug.middleware.proxy_fix import ProxyFix

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
#: Seconds a browser may cache a CORS preflight answer.
CORS_MAX_AGE = 600
#: Every method some route answers (flask-cors would also allow PUT, which none
#: does); a test holds it to the app's routes.
CORS_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST")
#: Request headers allowed from a listed origin.
CORS_HEADERS = ("Authorization", "Content-Type")
#: The static header of a cookie-based refresh (see ``api/refresh_cookie.py``).
CSRF_HEADER = "X-Authsvc-CSRF"

#: A WSGI application: (environ, start_response) -> the body's chunks.
WSGIApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


class BoundedBody:
    """Give a body without ``Content-Length`` (chunked) a length werkzeug can check.

    Werkzeug stops reading such a body at ``MAX_CONTENT_LENGTH`` without raising,
    so an oversized chunked body would be cut short and then processed. Reading
    one byte past the limit here makes it an ordinary 413.
    """

    def __init__(self, app: WSGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if not environ.get("CONTENT_LENGTH") and environ.get("wsgi.input_terminated"):
            body = environ["wsgi.input"].read(self.limit + 1)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            # The body is no longer chunked; werkzeug ignores lengths of chunked ones.
            environ.pop("HTTP_TRANSFER_ENCODING", None)
        return self.app(environ, start_response)


class SecurityHeaders:
    """WSGI middleware: the security headers on every answer, errors included.

    Responses carry tokens or user data, so none is cached unless it says so.
    """

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            if not any(name.lower() == "cache-control" for name, _ in headers):
                headers.append(("Cache-Control", "no-store"))
            headers.extend(SECURITY_HEADERS.items())
            return start_response(status, headers, *exc_info)

        return self.app(environ, start)


def vary_by_origin(response: Response) -> Response:
    """Tell caches that the answer depends on the Origin header."""
    response.vary.add("Origin")
    return response


def answer_options_without_a_body(app: Flask) -> None:
    """Make Flask's automatic ``OPTIONS`` answer say no content type.

    It has no body, yet Flask labels it ``text/html``: a JSON API's answers are
    JSON or nothing.
    """
    default = app.make_default_options_response

    def make_default_options_response() -> Response:
        response = default()
        del response.headers["Content-Type"]
        return response

    # mypy refuses assigning to a method; this instance's one is meant to change.
    app.make_default_options_response = (  # type: ignore[method-assign]
        make_default_options_response
    )


def init_app(app: Flask) -> None:
    """Bound bodies, trust only the configured proxies, allow only listed origins."""
    answer_options_without_a_body(app)
    # Flask declares wsgi_app a method; replacing it is its documented way to wrap.
    app.wsgi_app = BoundedBody(  # type: ignore[method-assign]
        SecurityHeaders(app.wsgi_app), app.config["MAX_CONTENT_LENGTH"]
    )
    proxies = app.config["PROXY_COUNT"]
    if proxies:
        # As above: wrapping wsgi_app, which Flask declares a method.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies
        )
    origins = app.config["CORS_ORIGINS"]
    if origins:
        # Bearer tokens travel in a header; only the refresh cookie, when it is
        # offered, needs credentials mode (and its CSRF header), for these origins.
        cookie = bool(app.config["REFRESH_COOKIE"])
        CORS(
            app,
            origins=list(origins),
            allow_headers=[*CORS_HEADERS, *([CSRF_HEADER] if cookie else [])],
            expose_headers=["Retry-After", "WWW-Authenticate", "X-Request-ID"],
            methods=list(CORS_METHODS),
            supports_credentials=cookie,
            max_age=CORS_MAX_AGE,
            # flask-cors adds Vary: Origin only for several origins (and then a
            # second one beside ours), yet with one the answer still depends on
            # Origin: one Vary: Origin, always, from us.
            vary_header=False,
        )
        app.after_request(vary_by_origin)
