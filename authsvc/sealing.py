"""Secrets kept encrypted at rest: AES-GCM under a key derived from the secret.

The key comes from :func:`authsvc.tokens.derive_key`, as the signing keys' does,
one purpose per kind of secret. Each sealed value is bound to its ``context`` (the
row it belongs to), so a ciphertext moved to another row does not open.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

#: The format's first byte, so another cipher can come later beside this one.
VERSION = b"\x01"
#: AES-GCM's standard nonce: 96 random bits per sealing.
NONCE_BYTES = 12


class SealError(Exception):
    """A sealed value does not open: another key (secret changed) or tampered."""


def seal(key: bytes, plaintext: bytes, *, context: bytes) -> bytes:
    """Encrypt and authenticate ``plaintext`` for ``context`` under ``key``."""
    nonce = os.urandom(NONCE_BYTES)
    return VERSION + nonce + AESGCM(key).encrypt(nonce, plaintext, context)


def unseal(key: bytes, sealed: bytes, *, context: bytes) -> bytes:
    """The plaintext :func:`seal` made for ``context``; raise :class:`SealError`."""
    if sealed[:1] != VERSION or len(sealed) < 1 + NONCE_BYTES:
        raise SealError("not a sealed value")
    nonce, ciphertext = sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :]
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, context)
    except InvalidTag:
        raise SealError("cannot open: was AUTHSVC_SECRET_KEY changed?") from None
