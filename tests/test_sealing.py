"""Secrets sealed at rest: AES-GCM, bound to their row, under a derived key."""

from __future__ import annotations

import pytest

from authsvc.sealing import SealError, seal, unseal
from authsvc.tokens import derive_key

KEY = derive_key("s" * 40, "totp-secret-encryption")


def test_a_sealed_value_opens_with_its_key_and_context():
    sealed = seal(KEY, b"JBSWY3DPEHPK3PXP", context=b"row-1")
    assert b"JBSWY3DPEHPK3PXP" not in sealed
    assert unseal(KEY, sealed, context=b"row-1") == b"JBSWY3DPEHPK3PXP"


def test_each_sealing_differs():
    assert seal(KEY, b"x", context=b"c") != seal(KEY, b"x", context=b"c")


@pytest.mark.parametrize(
    "change",
    [
        lambda sealed: (derive_key("t" * 40, "totp-secret-encryption"), sealed, b"r"),
        lambda sealed: (KEY, sealed, b"another row"),
        lambda sealed: (KEY, sealed[:-1] + bytes([sealed[-1] ^ 1]), b"r"),
        lambda sealed: (KEY, b"\x02" + sealed[1:], b"r"),
        lambda sealed: (KEY, sealed[:5], b"r"),
        lambda sealed: (KEY, b"", b"r"),
    ],
)
def test_another_key_row_or_a_tampered_value_does_not_open(change):
    key, sealed, context = change(seal(KEY, b"secret", context=b"r"))
    with pytest.raises(SealError):
        unseal(key, sealed, context=context)


def test_keys_differ_by_purpose():
    assert derive_key("s" * 40, "signing-key-encryption") != KEY
