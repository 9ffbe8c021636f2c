"""A companion for other Flask services: accept authsvc access tokens locally.

Plug it into any Flask app that serves an API behind authsvc::

    from authsvc.resource import ResourceServer, roles_required

    resource = ResourceServer(
        app,
        jwks_url="https://auth.example.com/.well-known/jwks.json",
        issuer="authsvc",
        audience="authsvc",
    )

Then ``flask_login.login_required`` guards views and ``current_user`` has ``id``,
``username``, ``roles``, ``auth_time`` and ``acr``. Views that need a recent
authentication add :func:`fresh_login_required` (RFC 9470 step-up): a stale
token is answered with the challenge that sends the client to authsvc's
``POST /reauthenticate``. Tokens are verified against the cached JWKS (fetched
again when a token names an unknown key, at most once per ``refetch_interval``);
``iss``, ``aud``, ``exp`` and ``typ`` are checked. Views that must see a logout
at once add :meth:`ResourceServer.introspected`, which asks authsvc's
``/introspect``. This module needs neither authsvc's database nor its settings.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, TypeVar, cast

import jwt
from flask import Flask, Response, current_app, g, request
from flask_login import UserMixin, current_user, login_required
from flask_login.config import EXEMPT_METHODS

from . import bearer
from .bearer import (
    ACCESS_TOKEN_TYPES,
    DEFAULT_FRESH_AUTH_MAX_AGE,
    INSUFFICIENT_SCOPE_CHALLENGE,
    BearerLoginManager,
    bearer_token,
    freshness_guard,
    roles_guard,
    www_authenticate,
)
from .errors import AuthFailed, Code, Problem, problem_response

#: Algorithms authsvc signs with; HS256 tokens cannot be verified without the secret.
ALGORITHMS = ("RS256", "ES256", "EdDSA")
HTTP_TIMEOUT = 5

View = TypeVar("View", bound=Callable[..., Any])


@dataclass(frozen=True)
class TokenUser(UserMixin):
    """The caller, as the access token describes them."""

    id: str
    username: str | None
    roles: tuple[str, ...]
    session_id: str
    token: str = field(repr=False)
    #: When and at what level the user last authenticated (RFC 9068 2.2.1);
    #: ``None`` when the token does not say.
    auth_time: int | None = None
    acr: str | None = None


class KeySet:
    """The authsvc JWKS, cached, fetched again for an unknown ``kid`` (rate-limited)."""

    def __init__(self, url: str, *, refetch_interval: float = 30.0) -> None:
        self.url = _http_url(url)
        self.refetch_interval = refetch_interval
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = -float("inf")
        self._lock = threading.Lock()

    def get(self, kid: str) -> jwt.PyJWK | None:
        """The key ``kid``, fetching the set again if it is unknown and it is time."""
        key = self._keys.get(kid)
        if key is not None:
            return key
        # Callers that miss wait for a fetch in flight, then look again.
        with self._lock:
            key = self._keys.get(kid)
            if key is None and (
                time.monotonic() - self._fetched_at >= self.refetch_interval
            ):
                self._fetch()
                key = self._keys.get(kid)
        return key

    def _fetch(self) -> None:
        self._fetched_at = time.monotonic()
        try:
            with urllib.request.urlopen(self.url, timeout=HTTP_TIMEOUT) as answer:  # noqa: S310
                document = json.load(answer)
        except (OSError, ValueError):
            return  # keep the keys we had; the next unknown kid tries again
        keys = {}
        for jwk in document.get("keys", []):
            try:
                keys[jwk["kid"]] = jwt.PyJWK(jwk)
            except (KeyError, jwt.PyJWTError):
                continue
        self._keys = keys


class ResourceServer:
    """A Flask extension that authenticates requests with authsvc access tokens."""

    def __init__(
        self,
        app: Flask | None = None,
        *,
        jwks_url: str,
        issuer: str = "authsvc",
        audience: str = "authsvc",
        algorithms: Sequence[str] = ALGORITHMS,
        leeway: int = 0,
        refetch_interval: float = 30.0,
        introspection_url: str | None = None,
        introspection_secret: str | None = None,
        fresh_auth_max_age: int = DEFAULT_FRESH_AUTH_MAX_AGE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = KeySet(jwks_url, refetch_interval=refetch_interval)
        self.issuer = issuer
        self.audience = audience
        self.algorithms = list(algorithms)
        self.leeway = leeway
        if introspection_url and not introspection_secret:
            raise ValueError("introspection_url needs introspection_secret")
        self.introspection_url = (
            _http_url(introspection_url) if introspection_url else None
        )
        self.introspection_secret = introspection_secret
        #: :func:`fresh_login_required`'s default ``max_age``, and its clock.
        self.fresh_auth_max_age = fresh_auth_max_age
        self.clock = clock
        self.login_manager = BearerLoginManager()
        self.login_manager.request_loader(self._load_user)
        self.login_manager.unauthorized_handler(self._unauthorized)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Install the bearer-token login on ``app``; it never sets a cookie."""
        bearer.install(app, self.login_manager)
        app.extensions["authsvc.resource"] = self

    def verify(self, token: str) -> dict[str, Any]:
        """Return the claims of a valid authsvc access token; raise ``PyJWTError``."""
        header = jwt.get_unverified_header(token)
        if str(header.get("typ", "")).lower() not in ACCESS_TOKEN_TYPES:
            raise jwt.InvalidTokenError("not an access token")
        key = self.keys.get(str(header.get("kid")))
        if key is None or key.algorithm_name not in self.algorithms:
            raise jwt.InvalidTokenError("unknown key")
        return jwt.decode(
            token,
            key.key,
            algorithms=[key.algorithm_name],
            issuer=self.issuer,
            audience=self.audience,
            leeway=self.leeway,
            options={"require": ["iss", "aud", "sub", "sid", "exp", "iat", "roles"]},
        )

    def introspected(self, view: View) -> View:
        """Guard a view that must see revocations at once: ask authsvc every time."""

        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if request.method not in EXEMPT_METHODS and not self._is_active(
                current_user.token
            ):
                g.authsvc_problem = Code.TOKEN_REVOKED
                return self._unauthorized()
            return view(*args, **kwargs)

        return cast(View, login_required(guarded))

    def _load_user(self, req: Any) -> TokenUser | None:
        try:
            token = bearer_token(req)
        except Problem:
            g.authsvc_problem = Code.INVALID_REQUEST
            return None
        if token is None:
            return None
        try:
            claims = self.verify(token)
        except jwt.ExpiredSignatureError:
            g.authsvc_problem = Code.TOKEN_EXPIRED
            return None
        except jwt.PyJWTError:
            g.authsvc_problem = Code.INVALID_TOKEN
            return None
        roles = claims.get("roles")
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            g.authsvc_problem = Code.INVALID_TOKEN
            return None
        auth_time, acr = claims.get("auth_time"), claims.get("acr")
        if (auth_time is not None and type(auth_time) is not int) or (
            acr is not None and not isinstance(acr, str)
        ):
            g.authsvc_problem = Code.INVALID_TOKEN
            return None
        return TokenUser(
            id=str(claims["sub"]),
            username=claims.get("preferred_username"),
            roles=tuple(roles),
            session_id=str(claims["sid"]),
            token=token,
            auth_time=auth_time,
            acr=acr,
        )

    def _unauthorized(self) -> Response:
        code = g.get("authsvc_problem", Code.AUTHENTICATION_REQUIRED)
        # Answered, not raised: the host app has error handlers of its own.
        return problem_response(AuthFailed(code, www_authenticate(code), _detail(code)))

    def _is_active(self, token: str) -> bool:
        if not self.introspection_url:
            raise RuntimeError("introspected views need introspection_url")
        data = urllib.parse.urlencode({"token": token}).encode()
        call = urllib.request.Request(  # noqa: S310 (an http(s) URL, checked)
            self.introspection_url, data=data, method="POST"
        )
        call.add_header("Authorization", f"Bearer {self.introspection_secret}")
        try:
            with urllib.request.urlopen(call, timeout=HTTP_TIMEOUT) as answer:  # noqa: S310
                return bool(json.load(answer).get("active"))
        except (OSError, ValueError):
            return False  # fail closed: an unanswered check is not a live token


def roles_required(*roles: str) -> Callable[[View], View]:
    """Guard a view: a valid token whose ``roles`` include every one of ``roles``."""
    return roles_guard(roles, _insufficient_scope)


def fresh_login_required(
    max_age: int | None = None, acr: str | None = None
) -> Callable[[View], View]:
    """Guard a view: a valid token whose user authenticated at most ``max_age`` ago.

    The same rule as authsvc's own: ``max_age`` defaults to the server's
    ``fresh_auth_max_age``; ``acr="aal2"`` asks for a second factor too. A stale
    token gets 401 ``insufficient_user_authentication`` with the RFC 9470
    challenge (``max_age``, and ``acr_values`` when a second factor is needed),
    checked from the token's claims alone.
    """
    guard = freshness_guard(
        max_age,
        acr,
        now=lambda: _server().clock(),
        default_max_age=lambda: _server().fresh_auth_max_age,
        refuse=_step_up,
    )

    def decorator(view: View) -> View:
        return cast(View, login_required(guard(view)))

    return decorator


def _server() -> ResourceServer:
    server: ResourceServer = current_app.extensions["authsvc.resource"]
    return server


def _step_up(problem: AuthFailed) -> Response:
    code = Code.INSUFFICIENT_USER_AUTHENTICATION
    return problem_response(
        AuthFailed(code, problem.challenge, _detail(code), members=problem.members)
    )


def _insufficient_scope() -> Response:
    code = Code.INSUFFICIENT_SCOPE
    challenge = INSUFFICIENT_SCOPE_CHALLENGE
    return problem_response(AuthFailed(code, challenge, _detail(code)))


def _http_url(url: str) -> str:
    if urllib.parse.urlsplit(url).scheme not in {"http", "https"}:
        raise ValueError(f"not an http(s) URL: {url!r}")
    return url


def _detail(code: str) -> str:
    # The companion's own wording since its first release, kept for its clients.
    return code.replace("_", " ").capitalize() + "."
