"""Errors: one stable list of codes and the one place that renders them.

Every error leaves the service as RFC 9457 ``application/problem+json`` with a
machine-readable ``code``. Use cases raise :class:`Problem` with a code; the edge
turns it, and anything else that escapes a view, into a response.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from http import HTTPStatus

from flask import Flask, Response, current_app
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import BadHost, HTTPException, MethodNotAllowed

log = logging.getLogger(__name__)

PROBLEM_MIMETYPE = "application/problem+json"
#: Seconds a client is asked to wait after a 503.
RETRY_AFTER_UNAVAILABLE = 5

#: code -> (status, detail shown when the raiser gives none)
CODES: dict[str, tuple[int, str]] = {
    "validation_error": (400, "The request body is not valid."),
    "invalid_request": (400, "The Authorization header is malformed."),
    "authentication_required": (401, "An access token is required."),
    "invalid_token": (401, "The access token is not valid."),
    "token_expired": (401, "The access token has expired."),
    "token_revoked": (401, "The session of this access token has ended."),
    "invalid_credentials": (401, "The username or password is incorrect."),
    "invalid_refresh_token": (401, "The refresh token is not valid."),
    "registration_closed": (403, "Registration is closed."),
    "insufficient_scope": (403, "The access token's user lacks the required role."),
    "not_found": (404, "The requested resource does not exist."),
    "method_not_allowed": (405, "The method is not allowed for this resource."),
    "already_exists": (409, "The resource already exists."),
    "last_admin": (409, "The service would be left without an active administrator."),
    "payload_too_large": (413, "The request body is too large."),
    "uri_too_long": (414, "The request line is too long."),
    "unsupported_media_type": (415, "The request body must be application/json."),
    "rate_limited": (429, "Too many requests."),
    "headers_too_large": (431, "A request header is too large."),
    "internal_error": (500, "The server failed to handle the request."),
    "service_unavailable": (503, "The service is temporarily unavailable."),
}

HTTP_CODES = {
    400: "validation_error",
    401: "authentication_required",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    429: "rate_limited",
    431: "headers_too_large",
    503: "service_unavailable",
}


class Problem(Exception):
    """An error the client caused or must know about, named by its stable code."""

    def __init__(
        self,
        code: str,
        detail: str | None = None,
        *,
        errors: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        default_status, default_detail = CODES.get(code, (500, "The request failed."))
        status = status or default_status
        super().__init__(detail or default_detail)
        self.code = code
        self.status = status
        self.detail = detail or default_detail
        self.errors = dict(errors) if errors is not None else None
        if code == "validation_error" and not self.errors:
            # The contract: a validation error always names what was invalid.
            self.errors = {"body": self.detail}
        self.headers = dict(headers or {})


def problem_body(problem: Problem) -> dict[str, object]:
    """The RFC 9457 body of a :class:`Problem`."""
    body: dict[str, object] = {
        "type": "about:blank",
        "title": HTTPStatus(problem.status).phrase,
        "status": problem.status,
        "detail": problem.detail,
        "code": problem.code,
    }
    if problem.errors is not None:
        body["errors"] = problem.errors
    return body


def problem_response(problem: Problem) -> Response:
    """Render a :class:`Problem` as ``application/problem+json``."""
    response = current_app.response_class(
        json.dumps(problem_body(problem)),
        status=problem.status,
        mimetype=PROBLEM_MIMETYPE,
    )
    response.headers.update(problem.headers)
    return response


def to_problem(error: BaseException) -> Problem:
    """Translate anything raised while handling a request into a :class:`Problem`."""
    if isinstance(error, Problem):
        return error
    if isinstance(error, HTTPException):
        return _http_problem(error)
    if database_unavailable(error):
        cause = error.orig if isinstance(error, DBAPIError) else error
        log.warning("database unavailable: %s", type(cause).__name__)
        return Problem(
            "service_unavailable",
            headers={"Retry-After": str(RETRY_AFTER_UNAVAILABLE)},
        )
    log.error("unhandled exception", exc_info=error)
    return Problem("internal_error")


def database_unavailable(error: BaseException) -> bool:
    """Is ``error`` the database being unreachable, gone, or too slow (503)?

    The driver's operational errors cover a refused or lost connection, a server
    shutting down, and a statement cancelled by the statement timeout (psycopg's
    ``QueryCanceled`` is one); they are worth retrying later, unlike a bad query.
    """
    if isinstance(error, DisconnectionError | PoolTimeout):
        return True
    if not isinstance(error, DBAPIError):
        return False
    return error.connection_invalidated or isinstance(
        error, OperationalError | InterfaceError
    )


def _http_problem(error: HTTPException) -> Problem:
    if isinstance(error, BadHost):
        # Not the body: a Host header no URL can be built from (an empty or
        # over-long DNS label). The client's fault; one line, no traceback.
        log.info("refused a request with a malformed Host header")
        return Problem("invalid_request", "The Host header is not valid.")
    status = error.code or 500
    headers = {}
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        headers["Allow"] = ", ".join(sorted(error.valid_methods))
    if status in HTTP_CODES:
        return Problem(HTTP_CODES[status], headers=headers)
    if status >= 500:
        return Problem("internal_error", headers=headers)
    # A status no code of ours names (rare werkzeug errors): keep it, name it plainly.
    code = HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    return Problem(code, HTTPStatus(status).description, headers=headers, status=status)


def handle_error(error: BaseException) -> Response:
    """Flask error handler: every exception becomes the contract's error shape."""
    return problem_response(to_problem(error))


def init_app(app: Flask) -> None:
    """Route every HTTP error and unexpected exception through :func:`handle_error`."""
    app.register_error_handler(HTTPException, handle_error)
    app.register_error_handler(Exception, handle_error)
