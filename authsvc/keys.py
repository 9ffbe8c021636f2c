"""Keys: the service secret, and the key ring that signs and verifies access tokens.

The keys themselves come from ``key_store``: generated ones shared through the
database, one from the operator's PEM file, or, under HS256, one derived from
the secret. Each key has a life: *published* (in the JWKS, not yet signing),
*active* (signing), *retiring* (verifying until the last token it signed has
expired), then *gone*.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

from flask import Flask, current_app

from . import tokens
from .key_store import DatabaseKeys, FileKeys, Key, SecretKeys

log = logging.getLogger(__name__)

SECRET_FILE_NAME = "secret_key"  # noqa: S105 (a file name, not a secret)
ASYMMETRIC = ("RS256", "ES256", "EdDSA")
#: Seconds between re-reads of the ring even when its version says nothing changed.
#: A rotation is seen at once (see :func:`~authsvc.key_store.key_set_version`);
#: this is a backstop, and the time an instance of an older version may go on
#: signing with a retired key.
RELOAD_INTERVAL = 60
#: Verified access tokens remembered per process (about 1.5 KB each).
VERIFIED_TOKENS = 4096


def load_or_create_secret(instance_path: str) -> str:
    """Return the secret kept in the instance folder, generating it on first use.

    Creation is atomic (write a temporary file, then link it into place), so
    several workers starting at once all end up with the same secret.
    """
    folder = Path(instance_path)
    path = folder / SECRET_FILE_NAME
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=".secret-")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
            os.link(temporary, path)
            log.warning(
                "generated a new secret key in %s: fine for development, "
                "set AUTHSVC_SECRET_KEY in production",
                path,
            )
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)
    return path.read_text().strip()


# --- the ring -----------------------------------------------------------------


@dataclass(frozen=True)
class KeyState:
    """Where a key is in its life at some moment."""

    key: Key
    state: str  # published, active, retiring or gone
    #: Until when tokens it signed are accepted (retiring keys), else ``None``.
    verifies_until: datetime | None


class KeyRing:
    """Signs with the active key; verifies with any key whose tokens may be alive."""

    def __init__(
        self,
        source: SecretKeys | FileKeys | DatabaseKeys,
        *,
        algorithm: str,
        issuer: str,
        audience: str,
        leeway: int,
        token_ttl: int,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.algorithm = algorithm
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.token_ttl = token_ttl
        self.monotonic = monotonic
        self._keys: list[Key] = []
        #: The version of the key set ``_keys`` was read at (see :meth:`see`).
        self._version = 0
        self._loaded_at = -float("inf")
        #: Verified tokens: the ``kid`` that verified each, and its claims.
        self._verified: dict[str, tuple[str, tokens.AccessClaims]] = {}
        #: The last key lookup: (``kid``, second, load time), and the key found.
        self._last_lookup: tuple[tuple[object, int, float], Key | None] = (
            (None, 0, 0.0),
            None,
        )

    def states(self, now: datetime) -> list[KeyState]:
        """Every key and its state at ``now``, in the order they start signing."""
        keys = sorted(self._current(now), key=lambda key: key.activates_at)
        started = [key for key in keys if key.activates_at <= now]
        result = [KeyState(key, "published", None) for key in keys[len(started) :]]
        if started:
            result.insert(0, KeyState(started[-1], "active", None))
        # Each earlier key stopped signing when the next one started.
        for key, successor in reversed(list(pairwise(started))):
            # Tokens signed just as the successor took over, by a request that
            # read the key set's version a moment before, or by an instance of an
            # older version that re-reads the ring only now and then.
            until = successor.activates_at + timedelta(
                seconds=self.token_ttl + self.leeway + RELOAD_INTERVAL
            )
            state = "retiring" if now < until else "gone"
            result.insert(0, KeyState(key, state, until))
        return result

    def sign(
        self,
        *,
        subject: str,
        username: str,
        session_id: str,
        roles: list[str],
        issued_at: int,
        expires_at: int,
        key_version: int | None = None,
        auth_time: int | None = None,
        acr: str | None = None,
        amr: Sequence[str] | None = None,
    ) -> str:
        """Return an access token signed by the active key.

        The key set is checked first, so a key rotated in by any worker or
        instance, and so already in every JWKS, signs as soon as it is due:
        ``key_version`` when the caller read it along with its own query, else
        one cheap query here.
        """
        self.see(self.source.version() if key_version is None else key_version)
        now = datetime.fromtimestamp(issued_at, UTC)
        active = next((s.key for s in self.states(now) if s.state == "active"), None)
        if active is None:
            raise RuntimeError("no signing key is active yet")
        return tokens.encode_access_token(
            key=active.signing_key,
            algorithm=self.algorithm,
            kid=active.kid,
            issuer=self.issuer,
            audience=self.audience,
            subject=subject,
            username=username,
            session_id=session_id,
            roles=roles,
            issued_at=issued_at,
            expires_at=expires_at,
            auth_time=auth_time,
            acr=acr,
            amr=amr,
        )

    def verify(self, token: str, *, now: int) -> tokens.AccessClaims:
        """Return the claims of a valid access token; raise :class:`TokenError`.

        A client presents the same token on every call until it expires, so its
        verified claims are remembered: later calls check only that its key still
        verifies and that it is live. Revocation is not decided here; callers
        check the session on every request.
        """
        remembered = self._verified.get(token)
        kid = tokens.unverified_kid(token) if remembered is None else remembered[0]
        key = self._verifying_key(kid, now)
        if key is None:
            raise tokens.TokenError("unknown key")
        if remembered is None:
            claims = tokens.verify_signed_claims(
                token,
                key=key.verifying_key,
                algorithm=self.algorithm,
                kid=key.kid,
                issuer=self.issuer,
                audience=self.audience,
            )
            if len(self._verified) >= VERIFIED_TOKENS:
                self._verified.clear()
            self._verified[token] = remembered = key.kid, claims
        return tokens.check_lifetime(remembered[1], now=now, leeway=self.leeway)

    def jwks(self, now: datetime) -> list[dict[str, str]]:
        """The public JWKs of every key whose tokens may be alive, or soon will be.

        Read against the stored key set's version every time, so a rotated-in key
        is published by every worker of every instance from the moment it is stored.
        """
        self.see(self.source.version())
        return [
            state.key.public_jwk
            for state in self.states(now)
            if state.state != "gone" and state.key.public_jwk is not None
        ]

    def rotate(self, now: datetime, delay: int) -> str:
        """Add a key that signs after ``delay`` seconds; return its ``kid``."""
        if not isinstance(self.source, DatabaseKeys):
            raise RuntimeError(
                "only generated keys rotate: with AUTHSVC_SIGNING_KEY_FILE replace "
                "the file, under HS256 change AUTHSVC_SECRET_KEY"
            )
        self.source.load(now)  # a first key signs until the new one takes over
        kid = self.source.rotate(now, delay)
        self._loaded_at = -float("inf")
        return kid

    def see(self, version: int) -> None:
        """Re-read the ring at once if the stored key set is newer than ours."""
        if version > self._version:
            self._loaded_at = -float("inf")

    def _verifying_key(self, kid: object, now: int) -> Key | None:
        # Key states change only with the second or a reload: tokens of one
        # second share one lookup.
        asked = (kid, now, self._loaded_at)
        if self._last_lookup[0] == asked:
            return self._last_lookup[1]
        key = self._find_verifying_key(kid, datetime.fromtimestamp(now, UTC))
        self._last_lookup = (kid, now, self._loaded_at), key
        return key

    def _find_verifying_key(self, kid: object, now: datetime) -> Key | None:
        for state in self.states(now):
            if state.key.kid == kid and state.state != "gone":
                return state.key
        # Perhaps another worker signs with a key rotated in since we read the
        # ring: one cheap look at the version says, and only a change re-reads.
        version = self.source.version()
        if version <= self._version:
            return None
        self.see(version)
        for state in self.states(now):
            if state.key.kid == kid and state.state != "gone":
                return state.key
        return None

    def _current(self, now: datetime) -> Sequence[Key]:
        if self.monotonic() - self._loaded_at > RELOAD_INTERVAL:
            self._keys = self.source.load(now)
            self._version = max((key.generation for key in self._keys), default=0)
            self._loaded_at = self.monotonic()
        return self._keys


KEYS = "authsvc.keys"
#: An operator's key file, read at start-up even while the ring waits for a secret.
FILE_KEYS = "authsvc.file_keys"
_first_ring = threading.Lock()


def init_app(app: Flask) -> None:
    """Build the app's key ring now if its secret is configured, else on first use.

    A generated secret is written to the instance folder only when something
    needs a key (serving, signing, verifying): never by ``authsvc --help`` or a
    command that needs none.
    """
    algorithm = app.config["JWT_ALGORITHM"]
    if algorithm != "HS256" and app.config["SIGNING_KEY_FILE"]:
        # Read now: a bad key file stops start-up, secret or not.
        app.extensions[FILE_KEYS] = FileKeys(app.config["SIGNING_KEY_FILE"], algorithm)
    if app.config.get("SECRET_KEY"):
        app.extensions[KEYS] = _key_ring(app)


def _key_ring(app: Flask) -> KeyRing:
    secret = app.config["SECRET_KEY"]
    algorithm = app.config["JWT_ALGORITHM"]
    source: SecretKeys | FileKeys | DatabaseKeys
    if algorithm == "HS256":
        source = SecretKeys(secret)
    elif FILE_KEYS in app.extensions:
        source = app.extensions[FILE_KEYS]
    else:
        source = DatabaseKeys(app.extensions["authsvc.db"].engine, secret, algorithm)
    return KeyRing(
        source,
        algorithm=algorithm,
        issuer=app.config["ISSUER"],
        audience=app.config["AUDIENCE"],
        leeway=app.config["JWT_LEEWAY"],
        token_ttl=app.config["ACCESS_TOKEN_TTL"],
        # Tests move it instead of waiting.
        monotonic=app.config.get("MONOTONIC") or time.monotonic,
    )


def get_keys() -> KeyRing:
    """Return the current app's key ring, resolving the secret on first use."""
    ring = current_app.extensions.get(KEYS)
    if ring is None:
        # Flask types current_app as the app, not the proxy it is.
        ring = _first_key_ring(current_app._get_current_object())  # type: ignore[attr-defined]
    return ring


def _first_key_ring(app: Flask) -> KeyRing:
    with _first_ring:
        if KEYS not in app.extensions:
            app.config["SECRET_KEY"] = load_or_create_secret(
                app.config["INSTANCE_PATH"]
            )
            app.extensions[KEYS] = _key_ring(app)
    ring: KeyRing = app.extensions[KEYS]
    return ring
