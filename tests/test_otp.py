"""One-time codes: RFC 6238's test vectors, the window of steps, recovery codes."""

from __future__ import annotations

from datetime import UTC, datetime

import pyotp
import pytest

from authsvc import otp

#: RFC 6238 appendix B's SHA-1 secret, "12345678901234567890", in base32.
RFC_SECRET = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@pytest.mark.parametrize(
    ("seconds", "code"),
    # The last six digits of the appendix's eight-digit codes.
    [(59, "287082"), (1111111109, "081804"), (1234567890, "005924")],
)
def test_rfc_6238_vectors(seconds, code):
    assert otp.matching_step(RFC_SECRET, code, at(seconds)) == seconds // 30


@pytest.mark.parametrize(
    ("offset", "accepted"), [(-2, False), (-1, True), (0, True), (1, True), (2, False)]
)
def test_one_step_either_side_and_no_further(offset, accepted):
    now = at(1111111109)
    step = otp.step_at(now)
    given = pyotp.TOTP(RFC_SECRET).at((step + offset) * 30)
    found = otp.matching_step(RFC_SECRET, given, now)
    assert found == (step + offset if accepted else None)


@pytest.mark.parametrize(
    "code", ["28708", "2870822", "28708a", " 287082", "", "２８７０８２"]
)
def test_malformed_codes_match_nothing(code):
    assert otp.matching_step(RFC_SECRET, code, at(59)) is None


def test_recovery_codes_are_ten_distinct_readable_codes():
    codes = otp.new_recovery_codes()
    assert len(set(codes)) == 10
    for code in codes:
        groups = code.split("-")
        assert [len(group) for group in groups] == [4, 4, 4]
        assert set(code.replace("-", "")) <= set(otp.RECOVERY_ALPHABET)
        assert otp.recovery_code_key(code) == code.replace("-", "")


@pytest.mark.parametrize(
    ("typed", "key"),
    [
        ("abcd-efgh-jkmn", "abcdefghjkmn"),
        ("ABCD EFGH JKMN", "abcdefghjkmn"),
        ("abcdefghjkmn", "abcdefghjkmn"),
        ("abcd-efgh-jkm", None),
        ("abcd-efgh-jkm0", None),
        ("123456", None),
    ],
)
def test_recovery_codes_are_read_however_typed(typed, key):
    assert otp.recovery_code_key(typed) == key


def test_the_provisioning_uri_is_what_apps_read():
    uri = otp.provisioning_uri(RFC_SECRET, username="alice", issuer="authsvc")
    assert uri == f"otpauth://totp/authsvc:alice?secret={RFC_SECRET}&issuer=authsvc"
