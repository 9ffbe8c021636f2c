"""Errors: one stable table of codes, typed errors, and the one place that renders them.

Every error leaves the service as RFC 9457 ``application/problem+json`` with a
machine-readable ``code``. Use cases raise :class:`Problem` (or one of its typed
subclasses, which carry data such as a retry delay, never HTTP headers); the edge
turns it, and anything else that escapes a view, into a response with its headers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from http import HTTPStatus
from types import MappingProxyType

from flask import Flask, Response, current_app
from werkzeug.exceptions import BadHost, HTTPException, MethodNotAllowed

log = logging.getLogger(__name__)

PROBLEM_MIMETYPE = "application/problem+json"
#: Seconds a client is asked to wait after a 503.
RETRY_AFTER_UNAVAILABLE = 5
#: Where an app keeps the translations :func:`translate_with` registers.
TRANSLATIONS = "authsvc.errors.translations"


class Code(StrEnum):
    """The stable machine-readable codes a client may meet; see :data:`CODES`."""

    VALIDATION_ERROR = "validation_error"
    INVALID_REQUEST = "invalid_request"
    AUTHENTICATION_REQUIRED = "authentication_required"
    INVALID_TOKEN = "invalid_token"  # noqa: S105 (a code, not a secret)
    TOKEN_EXPIRED = "token_expired"  # noqa: S105
    TOKEN_REVOKED = "token_revoked"  # noqa: S105
    INVALID_CREDENTIALS = "invalid_credentials"
    INVALID_REFRESH_TOKEN = "invalid_refresh_token"  # noqa: S105
    REGISTRATION_CLOSED = "registration_closed"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    ALREADY_EXISTS = "already_exists"
    LAST_ADMIN = "last_admin"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    URI_TOO_LONG = "uri_too_long"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    RATE_LIMITED = "rate_limited"
    HEADERS_TOO_LARGE = "headers_too_large"
    INTERNAL_ERROR = "internal_error"
    SERVICE_UNAVAILABLE = "service_unavailable"
    # --- e-mail and account recovery ---
    INVALID_CODE = "invalid_code"
    ALREADY_VERIFIED = "already_verified"
    EMAIL_NOT_VERIFIED = "email_not_verified"
    # The second factor and fresh authentication.
    MFA_REQUIRED = "mfa_required"
    INVALID_MFA_TOKEN = "invalid_mfa_token"  # noqa: S105
    INVALID_MFA_CODE = "invalid_mfa_code"
    MFA_ALREADY_ENABLED = "mfa_already_enabled"
    MFA_NOT_ENABLED = "mfa_not_enabled"
    INSUFFICIENT_USER_AUTHENTICATION = "insufficient_user_authentication"
    # Browser apps: the refresh cookie.
    CSRF_FAILED = "csrf_failed"


#: code -> (status, detail shown when the raiser gives none). A ``Code`` hashes
#: like its string, so ``CODES["invalid_token"]`` finds it too.
CODES: dict[Code, tuple[int, str]] = {
    Code.VALIDATION_ERROR: (400, "The request body is not valid."),
    Code.INVALID_REQUEST: (400, "The Authorization header is malformed."),
    Code.AUTHENTICATION_REQUIRED: (401, "An access token is required."),
    Code.INVALID_TOKEN: (401, "The access token is not valid."),
    Code.TOKEN_EXPIRED: (401, "The access token has expired."),
    Code.TOKEN_REVOKED: (401, "The session of this access token has ended."),
    Code.INVALID_CREDENTIALS: (401, "The username or password is incorrect."),
    Code.INVALID_REFRESH_TOKEN: (401, "The refresh token is not valid."),
    Code.REGISTRATION_CLOSED: (403, "Registration is closed."),
    Code.INSUFFICIENT_SCOPE: (403, "The access token's user lacks the required role."),
    Code.NOT_FOUND: (404, "The requested resource does not exist."),
    Code.METHOD_NOT_ALLOWED: (405, "The method is not allowed for this resource."),
    Code.ALREADY_EXISTS: (409, "The resource already exists."),
    Code.LAST_ADMIN: (
        409,
        "The service would be left without an active administrator.",
    ),
    Code.PAYLOAD_TOO_LARGE: (413, "The request body is too large."),
    Code.URI_TOO_LONG: (414, "The request line is too long."),
    Code.UNSUPPORTED_MEDIA_TYPE: (415, "The request body must be application/json."),
    Code.RATE_LIMITED: (429, "Too many requests."),
    Code.HEADERS_TOO_LARGE: (431, "A request header is too large."),
    Code.INTERNAL_ERROR: (500, "The server failed to handle the request."),
    Code.SERVICE_UNAVAILABLE: (503, "The service is temporarily unavailable."),
    # --- e-mail and account recovery ---
    Code.INVALID_CODE: (400, "The code or link is not valid; request a new one."),
    Code.ALREADY_VERIFIED: (409, "The e-mail address is already verified."),
    Code.EMAIL_NOT_VERIFIED: (403, "The account's e-mail address is not verified."),
    Code.MFA_REQUIRED: (
        401,
        "The password is right; present a code of the second factor with the "
        "mfa_token at POST /login/mfa.",
    ),
    Code.INVALID_MFA_TOKEN: (
        401,
        "The mfa_token is not valid: log in with the password again.",
    ),
    Code.INVALID_MFA_CODE: (401, "The code is not valid."),
    Code.MFA_ALREADY_ENABLED: (409, "A second factor is already enabled."),
    Code.MFA_NOT_ENABLED: (409, "No second factor is enabled or pending."),
    Code.INSUFFICIENT_USER_AUTHENTICATION: (
        401,
        "The access token's authentication is too old or of too low a level: "
        "authenticate again.",
    ),
    # Browser apps: the refresh cookie.
    Code.CSRF_FAILED: (
        403,
        "A request that relies on the refresh cookie needs the X-Authsvc-CSRF "
        "header and an allowed Origin.",
    ),
}
if set(CODES) != set(Code):
    # A code without its row would fail at its first raise: fail at import instead.
    raise RuntimeError(f"codes without a row: {sorted(set(Code) - set(CODES))}")

#: The code of a werkzeug (or gunicorn) refusal, by its status.
HTTP_CODES: dict[int, Code] = {
    400: Code.VALIDATION_ERROR,
    401: Code.AUTHENTICATION_REQUIRED,
    404: Code.NOT_FOUND,
    405: Code.METHOD_NOT_ALLOWED,
    413: Code.PAYLOAD_TOO_LARGE,
    414: Code.URI_TOO_LONG,
    415: Code.UNSUPPORTED_MEDIA_TYPE,
    429: Code.RATE_LIMITED,
    431: Code.HEADERS_TOO_LARGE,
    503: Code.SERVICE_UNAVAILABLE,
}


class Problem(Exception):
    """An error the client caused or must know about, named by its stable code."""

    #: Further members of the body where the contract names them (``mfa_token``,
    #: ``max_age``...); never ``.data``, which Flask-RESTX would take for the body.
    members: Mapping[str, object] = MappingProxyType({})

    def __init__(
        self,
        code: Code,
        detail: str | None = None,
        *,
        errors: Mapping[str, str] | None = None,
        members: Mapping[str, object] | None = None,
    ) -> None:
        # Code() refuses a string the table does not name: a typo fails here, at
        # the raise, instead of becoming a silent 500.
        named = Code(code)
        self.code: str = named
        self.status, default_detail = CODES[named]
        self.detail = detail or default_detail
        super().__init__(self.detail)
        self.errors = dict(errors) if errors is not None else None
        if members:
            self.members = MappingProxyType(dict(members))
        if self.code == Code.VALIDATION_ERROR and not self.errors:
            # The contract: a validation error always names what was invalid.
            self.errors = {"body": self.detail}


class RetryLater(Problem):
    """A refusal that clears by itself: the client may try again in ``retry_after``."""

    def __init__(self, code: Code, retry_after: int, detail: str | None = None) -> None:
        super().__init__(code, detail)
        self.retry_after = retry_after


class RateLimited(RetryLater):
    """Too many attempts (429) until ``retry_after`` seconds have passed."""

    def __init__(self, retry_after: int, detail: str | None = None) -> None:
        super().__init__(Code.RATE_LIMITED, retry_after, detail)


class Busy(RetryLater):
    """The service has no room for this request just now (503)."""

    def __init__(self, retry_after: int, detail: str | None = None) -> None:
        super().__init__(Code.SERVICE_UNAVAILABLE, retry_after, detail)


class Unavailable(RetryLater):
    """Something the service needs, such as its database, does not answer (503)."""

    def __init__(
        self, retry_after: int = RETRY_AFTER_UNAVAILABLE, detail: str | None = None
    ) -> None:
        super().__init__(Code.SERVICE_UNAVAILABLE, retry_after, detail)


class AuthFailed(Problem):
    """A 401 or 403 that must tell the client how to authenticate (``challenge``)."""

    def __init__(
        self,
        code: Code,
        challenge: str,
        detail: str | None = None,
        *,
        errors: Mapping[str, str] | None = None,
        members: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(code, detail, errors=errors, members=members)
        self.challenge = challenge


class MfaRequired(Problem):
    """A right password of a user with a second factor: the token to present it."""

    def __init__(self, mfa_token: str, expires_in: int) -> None:
        super().__init__(
            Code.MFA_REQUIRED,
            members={"mfa_token": mfa_token, "mfa_expires_in": expires_in},
        )


class HTTPError(Problem):
    """A refusal at the HTTP level (werkzeug's, gunicorn's) that keeps its status.

    It is never raised by the service, only made from such a refusal: its code is
    the one given, else the table's for the status, else (a status no code of
    ours names) one made from the status phrase.
    """

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        code: Code | None = None,
        allow: Iterable[str] = (),
    ) -> None:
        named = code or HTTP_CODES.get(status)
        if named is not None:
            super().__init__(named, detail)
        else:
            phrase = HTTPStatus(status).phrase
            self.code = phrase.lower().replace(" ", "_").replace("-", "_")
            self.detail = detail or HTTPStatus(status).description
            self.errors = None
            Exception.__init__(self, self.detail)
        self.status = status
        self.allow = sorted(allow)


def problem_body(problem: Problem) -> dict[str, object]:
    """The RFC 9457 body of a :class:`Problem`."""
    body: dict[str, object] = {
        "type": "about:blank",
        "title": HTTPStatus(problem.status).phrase,
        "status": problem.status,
        "detail": problem.detail,
        "code": str(problem.code),
    }
    if problem.errors is not None:
        body["errors"] = problem.errors
    body.update(problem.members)
    return body


def problem_headers(problem: Problem) -> dict[str, str]:
    """The HTTP headers the data of a typed :class:`Problem` stands for."""
    if isinstance(problem, RetryLater):
        return {"Retry-After": str(problem.retry_after)}
    if isinstance(problem, AuthFailed):
        return {"WWW-Authenticate": problem.challenge}
    if isinstance(problem, HTTPError) and problem.allow:
        return {"Allow": ", ".join(problem.allow)}
    return {}


def problem_response(problem: Problem) -> Response:
    """Render a :class:`Problem` as ``application/problem+json``."""
    response = current_app.response_class(
        json.dumps(problem_body(problem)),
        status=problem.status,
        mimetype=PROBLEM_MIMETYPE,
    )
    response.headers.update(problem_headers(problem))
    return response


Translation = Callable[[BaseException], Problem | None]


def translate_with(app: Flask, translation: Translation) -> None:
    """Have ``app`` answer exceptions ``translation`` recognises with its Problem.

    Lets a lower part (the database) name its own failures without this module
    importing it; :func:`to_problem` asks each translation before answering 500.
    """
    app.extensions.setdefault(TRANSLATIONS, []).append(translation)


def to_problem(error: BaseException) -> Problem:
    """Translate anything raised while handling a request into a :class:`Problem`."""
    if isinstance(error, Problem):
        return error
    if isinstance(error, HTTPException):
        return _http_problem(error)
    translations: list[Translation] = current_app.extensions.get(TRANSLATIONS, [])
    for translation in translations:
        problem = translation(error)
        if problem is not None:
            return problem
    log.error("unhandled exception", exc_info=error)
    return Problem(Code.INTERNAL_ERROR)


def _http_problem(error: HTTPException) -> Problem:
    if isinstance(error, BadHost):
        # Not the body: a Host header no URL can be built from (an empty or
        # over-long DNS label). The client's fault; one line, no traceback.
        log.info("refused a request with a malformed Host header")
        return Problem(Code.INVALID_REQUEST, "The Host header is not valid.")
    status = error.code or 500
    allow: Iterable[str] = ()
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        allow = error.valid_methods
    if status >= 500 and status not in HTTP_CODES:
        return HTTPError(500, code=Code.INTERNAL_ERROR, allow=allow)
    return HTTPError(status, allow=allow)


def handle_error(error: BaseException) -> Response:
    """Flask error handler: every exception becomes the contract's error shape."""
    return problem_response(to_problem(error))


def init_app(app: Flask) -> None:
    """Route every HTTP error and unexpected exception through :func:`handle_error`."""
    app.register_error_handler(HTTPException, handle_error)
    app.register_error_handler(Exception, handle_error)
