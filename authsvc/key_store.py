"""Where signing keys come from: the service secret, an operator's file, the database.

Asymmetric keys (RS256, ES256, EdDSA) are generated and stored in the database,
their private part encrypted under a key derived from the service secret, so
every instance sharing both loads the same keys. HS256 uses one key derived from
the secret; an operator may instead supply a PEM file. Each source loads its
keys and says the version of its key set; the ring in ``keys`` decides which
signs and which verify.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from sqlalchemy import Engine, ScalarSelect, String, bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import tokens
from .config import ConfigError
from .db import session_factory
from .driver import DriverStatement
from .models import SigningKey

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# --- keys ---------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """One key of the ring, with when it starts signing."""

    kid: str
    algorithm: str
    signing_key: Any
    verifying_key: Any
    public_jwk: dict[str, str] | None
    activates_at: datetime
    #: Its place in the database's key set (0 for keys from elsewhere).
    generation: int = 0


def generate_private_key(algorithm: str) -> Any:
    """A fresh private key for ``algorithm``."""
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


def public_jwk(private_key: Any, algorithm: str) -> dict[str, str]:
    """The public JWK of a key, with its RFC 7638 thumbprint as ``kid``."""
    public = private_key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(public, as_dict=True)
        members: tuple[str, ...] = ("e", "kty", "n")
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True)
        members = ("crv", "kty", "x", "y")
    else:
        jwk = jwt.algorithms.OKPAlgorithm.to_jwk(public, as_dict=True)
        members = ("crv", "kty", "x")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).digest()
    kid = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    return {**{m: jwk[m] for m in members}, "kid": kid, "alg": algorithm, "use": "sig"}


def _matches(private_key: Any, algorithm: str) -> bool:
    if algorithm == "RS256":
        return isinstance(private_key, rsa.RSAPrivateKey)
    if algorithm == "ES256":
        return isinstance(private_key, ec.EllipticCurvePrivateKey) and isinstance(
            private_key.curve, ec.SECP256R1
        )
    return isinstance(private_key, ed25519.Ed25519PrivateKey)


def _asymmetric_key(
    private_key: Any, algorithm: str, activates_at: datetime, generation: int = 0
) -> Key:
    jwk = public_jwk(private_key, algorithm)
    return Key(
        kid=jwk["kid"],
        algorithm=algorithm,
        signing_key=private_key,
        verifying_key=private_key.public_key(),
        public_jwk=jwk,
        activates_at=activates_at,
        generation=generation,
    )


def key_set_version() -> ScalarSelect[Any]:
    """The version of the stored key set, as a column any statement can carry.

    Keys are only ever added, each with the next generation of its algorithm, so
    the newest generation of ``:key_algorithm`` grows with every rotation. A ring
    compares it with its own to see a rotation at once, without re-reading keys;
    the unique index on (algorithm, generation) answers it without the table.
    """
    return (
        select(func.max(SigningKey.generation))
        .where(SigningKey.algorithm == bindparam("key_algorithm", type_=String))
        .scalar_subquery()
    )


# --- where keys come from ------------------------------------------------------


class SecretKeys:
    """HS256: one key derived from the service secret, published nowhere."""

    rotates = False

    def __init__(self, secret: str) -> None:
        key = tokens.derive_key(secret, "access-token")
        self.key = Key(tokens.key_id(key), "HS256", key, key, None, _EPOCH)

    def load(self, now: datetime) -> list[Key]:
        return [self.key]

    def version(self) -> int:
        return 0


class FileKeys:
    """One asymmetric key from a PEM file the operator supplies."""

    rotates = False

    def __init__(self, path: str, algorithm: str) -> None:
        try:
            private_key = serialization.load_pem_private_key(
                Path(path).read_bytes(), password=None
            )
        except (OSError, ValueError, TypeError) as exc:
            message = (
                f"AUTHSVC_SIGNING_KEY_FILE cannot be read as a PEM private key: {exc}"
            )
            raise ConfigError(message) from None
        if not _matches(private_key, algorithm):
            raise ConfigError(
                f"AUTHSVC_SIGNING_KEY_FILE does not hold a key for {algorithm}"
            )
        self.key = _asymmetric_key(private_key, algorithm, _EPOCH)

    def load(self, now: datetime) -> list[Key]:
        return [self.key]

    def version(self) -> int:
        return 0


class DatabaseKeys:
    """Generated keys, stored with their private part encrypted under the secret.

    Loading and storing keys use ORM sessions of their own, from db.py's
    :func:`~authsvc.db.session_factory`, not the request's: storing a key commits,
    and must commit nothing a request has pending, and the ring is read outside
    requests too. The version, read by every login, is a prebuilt statement.
    """

    rotates = True

    def __init__(self, engine: Engine, secret: str, algorithm: str) -> None:
        self.engine = engine
        self.algorithm = algorithm
        self._password = tokens.derive_key(secret, "signing-key-encryption")
        self._sessions = session_factory(engine)
        self._version = DriverStatement(
            engine, select(key_set_version().label("version"))
        )

    def load(self, now: datetime) -> list[Key]:
        """Every stored key of the algorithm, made first if there is none yet."""
        with self._sessions() as db:
            rows = self._rows(db)
            if not rows:
                # Generation 1 is unique per algorithm: of instances starting at
                # once, one stores its key and the others read it. Having no
                # predecessor, it signs from the start, whatever an instance's clock.
                self._insert(db, now, activates_at=_EPOCH, generation=1)
                rows = self._rows(db)
            return [self._key(row) for row in rows]

    def version(self) -> int:
        """The stored key set's version: its newest generation, 0 when it is empty."""
        found = self._version.first({"key_algorithm": self.algorithm})
        return found.version or 0

    def rotate(self, now: datetime, delay: int) -> str:
        """Add a key that is published now and signs after ``delay`` seconds."""
        with self._sessions() as db:
            kid = self._insert(db, now, activates_at=now + timedelta(seconds=delay))
        if kid is None:
            raise RuntimeError("another rotation was stored at the same time")
        return kid

    def _rows(self, db: Session) -> Sequence[SigningKey]:
        return db.scalars(
            select(SigningKey)
            .where(SigningKey.algorithm == self.algorithm)
            .order_by(SigningKey.generation)
        ).all()

    def _insert(
        self,
        db: Session,
        now: datetime,
        *,
        activates_at: datetime,
        generation: int | None = None,
    ) -> str | None:
        """Store a new key; ``None`` when another instance stored that generation."""
        private_key = generate_private_key(self.algorithm)
        jwk = public_jwk(private_key, self.algorithm)
        if generation is None:
            latest = db.scalar(
                select(func.max(SigningKey.generation)).where(
                    SigningKey.algorithm == self.algorithm
                )
            )
            generation = (latest or 0) + 1
        db.add(
            SigningKey(
                kid=jwk["kid"],
                generation=generation,
                algorithm=self.algorithm,
                public_jwk=jwk,
                private_key=private_key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.BestAvailableEncryption(self._password),
                ),
                created_at=now,
                activates_at=activates_at,
            )
        )
        try:
            db.commit()
        except IntegrityError:
            db.rollback()
            return None
        return jwk["kid"]

    def _key(self, row: SigningKey) -> Key:
        try:
            private_key = serialization.load_pem_private_key(
                row.private_key, password=self._password
            )
        except ValueError:
            raise RuntimeError(
                f"cannot decrypt signing key {row.kid}: was AUTHSVC_SECRET_KEY changed?"
            ) from None
        return _asymmetric_key(
            private_key, row.algorithm, row.activates_at, row.generation
        )
