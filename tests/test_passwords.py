"""Passwords (authsvc.passwords): argon2id hashing and the password policy."""

import re

import pytest
from argon2 import PasswordHasher, Type

from authsvc.passwords import Passwords, Verification, password_problem

#: Cheap argon2id so the tests stay fast.
CHEAP = {"time_cost": 1, "memory_cost": 64, "parallelism": 1}
PASSWORD = "password123Xy"
FULL_WIDTH_PASSWORD = "ｐａｓｓｗｏｒｄ１２３Ｘｙ"
GOOD = "correct horse battery staple"


@pytest.fixture(scope="module")
def passwords() -> Passwords:
    return Passwords(**CHEAP)


@pytest.fixture(scope="module")
def stored(passwords) -> str:
    return passwords.hash(PASSWORD)


# Hashing and verification.


def test_hash_is_argon2id_with_the_configured_parameters(stored):
    assert stored.startswith("$argon2id$")
    assert re.fullmatch(r"\$argon2id\$v=19\$m=64,t=1,p=1\$[^$]+\$[^$]+", stored)


def test_hash_shows_other_configured_parameters():
    stored = Passwords(time_cost=2, memory_cost=128, parallelism=2).hash(PASSWORD)
    assert stored.startswith("$argon2id$v=19$m=128,t=2,p=2$")


def test_hash_is_salted_and_never_the_password(passwords, stored):
    assert passwords.hash(PASSWORD) != stored
    assert PASSWORD not in stored


def test_verify_accepts_the_password(passwords, stored):
    assert passwords.verify(stored, PASSWORD) == Verification(ok=True)


@pytest.mark.parametrize(
    "attempt", ["password123xy", "password123Xy ", "password123X", "", "x" * 1024]
)
def test_verify_refuses_another_password(passwords, stored, attempt):
    assert passwords.verify(stored, attempt) == Verification(ok=False)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "garbage",
        PASSWORD,
        "$argon2id$",
        "$argon2id$v=19$m=64,t=1,p=1$bad",
        "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$",
        "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g",
        "$argon2id$v=99$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g",
        "$argon2id$v=19$m=0,t=0,p=0$c2FsdHNhbHQ$aGFzaGhhc2g",
        "$2b$12$KIXQJ1nYQk0Zq5n5mZq5NuW1bq0f5Jf7m2cF1Zl2aTq0m1mZ8f0a2",
        "\x00",
        "$argon2id$v=19$m=64,t=1,p=1$sälz$häsh",
    ],
)
def test_verify_of_a_garbage_stored_hash_is_not_ok(passwords, garbage):
    assert passwords.verify(garbage, PASSWORD) == Verification(ok=False)


def test_verify_of_a_damaged_hash_is_not_ok(passwords, stored):
    assert passwords.verify(stored[:-4], PASSWORD) == Verification(ok=False)
    assert passwords.verify(stored + "AAAA", PASSWORD) == Verification(ok=False)


@pytest.mark.parametrize(
    "old",
    [
        {"time_cost": 2, "memory_cost": 64, "parallelism": 1},
        {"time_cost": 1, "memory_cost": 128, "parallelism": 1},
        {"time_cost": 1, "memory_cost": 64, "parallelism": 2},
    ],
    ids=["time_cost", "memory_cost", "parallelism"],
)
def test_a_hash_with_other_parameters_verifies_and_needs_rehash(passwords, old):
    stored = Passwords(**old).hash(PASSWORD)
    assert passwords.verify(stored, PASSWORD) == Verification(
        ok=True, needs_rehash=True
    )


def test_an_argon2i_hash_verifies_and_needs_rehash(passwords):
    stored = PasswordHasher(**CHEAP, type=Type.I).hash(PASSWORD)
    assert stored.startswith("$argon2i$")
    assert passwords.verify(stored, PASSWORD) == Verification(
        ok=True, needs_rehash=True
    )


def test_a_wrong_password_never_asks_for_a_rehash(passwords):
    stored = Passwords(time_cost=2, memory_cost=128, parallelism=1).hash(PASSWORD)
    assert passwords.verify(stored, "wrong password") == Verification(ok=False)


def test_a_hash_with_the_current_parameters_needs_no_rehash(stored):
    assert Passwords(**CHEAP).verify(stored, PASSWORD).needs_rehash is False


def test_full_width_password_verifies_against_the_ascii_one(passwords, stored):
    assert passwords.verify(stored, FULL_WIDTH_PASSWORD) == Verification(ok=True)


def test_ascii_password_verifies_against_the_full_width_one(passwords):
    stored = passwords.hash(FULL_WIDTH_PASSWORD)
    assert passwords.verify(stored, PASSWORD) == Verification(ok=True)


def test_composed_and_decomposed_accents_are_one_password(passwords):
    stored = passwords.hash("caf\u00e9-au-lait-42")
    assert passwords.verify(stored, "cafe\u0301-au-lait-42").ok is True


def test_verify_dummy_runs_and_returns_nothing(passwords):
    assert passwords.verify_dummy(PASSWORD) is None
    assert passwords.verify_dummy("") is None


# The policy of POST /users.


def test_a_good_password_has_no_problem():
    assert password_problem(GOOD, username="alice", min_length=8) is None


@pytest.mark.parametrize(
    ("password", "min_length", "problem"),
    [
        ("", 8, "must be at least 8 characters"),
        ("Xk9#vq2", 8, "must be at least 8 characters"),
        ("Xk9#vq2m", 8, None),
        ("Xk9#vq2mZp4", 12, "must be at least 12 characters"),
        ("Xk9#vq2mZp4!", 12, None),
        ("Xk9", 3, None),
        # Characters, not bytes: seven two-byte letters are seven characters...
        ("éàüöñçø", 8, "must be at least 8 characters"),
        ("éàüöñçøå", 8, None),
        # ...counted after NFKC normalisation (e + combining accent is one é).
        ("e\u0301" * 7, 8, "must be at least 8 characters"),
    ],
)
def test_minimum_length(password, min_length, problem):
    assert password_problem(password, username="alice", min_length=min_length) == (
        problem
    )


@pytest.mark.parametrize(
    ("length", "problem"),
    [
        (1024, None),
        (1025, "must be at most 1024 characters"),
        (100_000, "must be at most 1024 characters"),
    ],
)
def test_maximum_length(length, problem):
    password = ("Xk9#vq2m" * (length // 8 + 1))[:length]
    assert password_problem(password, username="alice", min_length=8) == problem


@pytest.mark.parametrize(
    "password",
    [
        "password",
        "PASSWORD",
        "Password",
        "123456789",
        "qwerty123",
        "QWERTY123",
        "ｐａｓｓｗｏｒｄ",
    ],
)
def test_common_passwords_are_refused(password):
    assert password_problem(password, username="alice", min_length=8) == (
        "is too common"
    )


@pytest.mark.parametrize(
    "password",
    ["alice-in-wonderland-42", "xxALICExx9k", "my-Alice-pass", "ａｌｉｃｅ-secret-99"],
)
def test_a_password_containing_the_username_is_refused(password):
    assert password_problem(password, username="alice", min_length=8) == (
        "must not contain the username"
    )


def test_the_username_check_is_case_insensitive_both_ways():
    problem = password_problem("my-alice-pass", username="Alice", min_length=8)
    assert problem == "must not contain the username"
