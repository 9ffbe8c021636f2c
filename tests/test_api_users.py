"""POST /users (registration) and GET /me."""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from helpers import PASSWORD, bearer, problem, user_count
from sqlalchemy import select

from authsvc.db import get_session
from authsvc.models import User

USER_KEYS = {
    "id",
    "username",
    "email",
    "email_verified",
    "roles",
    "mfa_enabled",
    "created_at",
}


def test_register_returns_the_user(client):
    response = client.post(
        "/users",
        json={"username": "alice", "password": PASSWORD, "email": "alice@example.com"},
    )
    assert response.status_code == 201
    body = response.json
    assert body.keys() == USER_KEYS
    assert body["username"] == "alice"
    assert body["email"] == "alice@example.com"
    assert body["email_verified"] is False
    assert body["roles"] == []
    assert body["mfa_enabled"] is False
    assert re.fullmatch(r"[0-9a-f-]{36}", body["id"])
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None
    assert response.headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in response.headers


def test_email_is_optional(register):
    assert register("bob")["email"] is None


def test_password_is_stored_only_as_argon2id_hash(app, register):
    register()
    with app.app_context():
        user = get_session().scalar(select(User))
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash


@pytest.mark.parametrize(
    "taken",
    ["alice", "Alice", "ALICE", "ａｌｉｃｅ", "Ａｌｉｃｅ"],
    ids=["same", "capitalised", "upper", "full-width", "full-width-capital"],
)
def test_username_taken_case_insensitively(client, register, taken):
    register("alice")
    response = client.post("/users", json={"username": taken, "password": PASSWORD})
    problem(
        response,
        "already_exists",
        409,
        detail="The username or e-mail is already taken.",
    )


@pytest.mark.parametrize("taken", ["alice@example.com", "ALICE@Example.COM"])
def test_email_taken_case_insensitively(client, register, taken):
    register("alice", email="alice@example.com")
    response = client.post(
        "/users", json={"username": "bob", "password": PASSWORD, "email": taken}
    )
    problem(
        response,
        "already_exists",
        409,
        detail="The username or e-mail is already taken.",
    )


def test_full_width_username_is_stored_normalised(register):
    assert register("ｂｏｂ")["username"] == "bob"


USERNAME_RULE = "must be 3 to 64 characters of letters, digits, '.', '_' and '-'"
BAD_REGISTRATIONS = [
    ({"password": PASSWORD}, {"username": "is required"}),
    ({"username": "alice"}, {"password": "is required"}),
    ({"username": 5, "password": PASSWORD}, {"username": "must be a string"}),
    ({"username": "alice", "password": None}, {"password": "must be a string"}),
    ({"username": ["alice"], "password": PASSWORD}, {"username": "must be a string"}),
    (
        {"username": "alice", "password": PASSWORD, "email": 7},
        {"email": "must be a string"},
    ),
    (
        {"username": "alice", "password": PASSWORD, "admin": True},
        {"admin": "is not a known field"},
    ),
    (
        {"username": "", "password": PASSWORD},
        {"username": USERNAME_RULE},
    ),
    (
        {"username": "al", "password": PASSWORD},
        {"username": USERNAME_RULE},
    ),
    (
        {"username": "a" * 65, "password": PASSWORD},
        {"username": USERNAME_RULE},
    ),
    (
        {"username": "al ice", "password": PASSWORD},
        {"username": USERNAME_RULE},
    ),
    (
        {"username": "alice@x", "password": PASSWORD},
        {"username": USERNAME_RULE},
    ),
    (
        {"username": "x' OR '1'='1", "password": PASSWORD},
        {"username": USERNAME_RULE},
    ),
    (
        {"username": "alice;--", "password": PASSWORD},
        {"username": USERNAME_RULE},
    ),
    (
        {"username": "alice", "password": "short"},
        {"password": "must be at least 8 characters"},
    ),
    (
        {"username": "alice", "password": ""},
        {"password": "must be at least 8 characters"},
    ),
    (
        {"username": "alice", "password": "p" * 1025},
        {"password": "must be at most 1024 characters"},
    ),
    ({"username": "alice", "password": "password123"}, {"password": "is too common"}),
    (
        {"username": "alice", "password": "my-Alice-secret"},
        {"password": "must not contain the username"},
    ),
    (
        {"username": "alice", "password": PASSWORD, "email": "no"},
        {"email": "must be a valid e-mail address"},
    ),
    (
        {"username": "alice", "password": PASSWORD, "email": "a@b"},
        {"email": "must be a valid e-mail address"},
    ),
    (
        {"username": "alice", "password": PASSWORD, "email": "a b@c.de"},
        {"email": "must be a valid e-mail address"},
    ),
    (
        {"username": "alice", "password": PASSWORD, "email": ""},
        {"email": "must be a valid e-mail address"},
    ),
]


@pytest.mark.parametrize(("body", "errors"), BAD_REGISTRATIONS)
def test_bad_registration_is_400_and_writes_nothing(app, client, body, errors):
    response = client.post("/users", json=body)
    result = problem(response, "validation_error", 400, errors=errors)
    assert result["errors"].keys() == errors.keys()
    for field, message in errors.items():
        if message is not ...:
            assert result["errors"][field] == message
    assert user_count(app) == 0


def test_validation_messages_never_repeat_the_password(client):
    secret = "Sup3r-Secret-Value-" + "z" * 1100
    response = client.post("/users", json={"username": "a", "password": secret})
    assert response.status_code == 400
    assert "Sup3r" not in response.get_data(as_text=True)


@pytest.mark.parametrize("min_length", [12, 20])
def test_password_min_length_is_configurable(make_app, min_length):
    client = make_app(PASSWORD_MIN_LENGTH=min_length).test_client()
    too_short = "Zq8-" + "k" * (min_length - 5)
    response = client.post("/users", json={"username": "bob", "password": too_short})
    errors = {"password": f"must be at least {min_length} characters"}
    body = problem(response, "validation_error", 400, errors=errors)
    assert body["errors"] == {"password": f"must be at least {min_length} characters"}


def test_registration_closed(app, make_app):
    client = make_app(REGISTRATION="closed").test_client()
    response = client.post("/users", json={"username": "bob", "password": PASSWORD})
    problem(response, "registration_closed", 403)
    assert user_count(app) == 0


def test_me_returns_the_caller(client, register, login):
    created = register("alice", email="alice@example.com")
    tokens = login("ALICE")
    response = client.get("/me", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200
    assert response.json == created
    assert response.headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in response.headers


def test_me_never_shows_secrets(client, tokens):
    text = client.get("/me", headers=bearer(tokens["access_token"])).get_data(True)
    assert "argon2" not in text
    assert PASSWORD not in text
    assert "password" not in text


def test_me_without_a_token(client):
    response = client.get("/me")
    problem(response, "authentication_required", 401)
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="authsvc"'


# Unicode TR39: mixed scripts, invisible characters and look-alike names.

SCRIPT_RULE = (
    "must be written in one script, or in Latin with Chinese, Japanese or Korean"
)
INVISIBLE_RULE = "must not contain invisible, filler or default-ignorable characters"
DIGITS_RULE = "must not mix digits of different scripts"


@pytest.mark.parametrize(
    "username",
    [
        "ada_lovelace-1.0",
        "\u0440\u043e\u0441\u0441\u0438\u044f",  # Cyrillic alone
        "\u03b1\u03b8\u03b7\u03bd\u03b1",  # Greek alone
        "tanaka\u7530\u4e2d\u3072\u3089\u30ab\u30ca",  # Latin, Han, kana: Japanese
        "\u5c71\u7530\u305f\u308d\u3046",  # Han and Hiragana
        "wang\u738b\u3105\u3106",  # Latin, Han, Bopomofo
        "kim\u91d1\ubbfc\uc900",  # Latin, Han, Hangul
        "jos\u00e9",
        "\u0661\u0662\u0663\u0639\u0644\u064a",  # Arabic letters, Arabic digits
    ],
    ids=[
        "ascii",
        "cyrillic",
        "greek",
        "latin-han-hiragana-katakana",
        "han-hiragana",
        "latin-han-bopomofo",
        "latin-han-hangul",
        "latin-accent",
        "arabic-digits",
    ],
)
def test_single_script_and_cjk_names_are_accepted(register, username):
    assert register(username)["username"] == username


#: Refused by the Unicode rules, each with their message.
REFUSED_USERNAMES = [
    ("rt\u0430dmin", SCRIPT_RULE),  # Latin with a Cyrillic a
    ("p\u0430ypal", SCRIPT_RULE),
    ("alph\u03b1", SCRIPT_RULE),  # Latin with a Greek alpha
    ("\u0391\u0399ice", SCRIPT_RULE),  # Greek capitals with Latin
    ("\u0430\u03b2\u03b3", SCRIPT_RULE),  # Cyrillic with Greek
    ("\u3072\u3089\uac00\ub098", SCRIPT_RULE),  # Hiragana with Hangul
    ("wang\u3105\u30ab", SCRIPT_RULE),  # Bopomofo with Katakana
    ("\u738b\u3105\uac00", SCRIPT_RULE),  # Bopomofo with Hangul
    ("user\u0661", SCRIPT_RULE),  # Latin with an Arabic-Indic digit
    ("\u0967\u0968abc", SCRIPT_RULE),  # Devanagari digits with Latin
    ("\u0661\u06f2\u0639\u0644\u064a", DIGITS_RULE),  # two sets of Arabic digits
    ("\u1160\u1160\u1160", INVISIBLE_RULE),  # Hangul jungseong filler
    ("\u115f\u115f\u115f", INVISIBLE_RULE),  # Hangul choseong filler
    ("\u3164\u3164\u3164", INVISIBLE_RULE),  # Hangul filler
    ("\uffa0\uffa0\uffa0", INVISIBLE_RULE),  # halfwidth Hangul filler
    ("ad\u1160min", INVISIBLE_RULE),
]

#: Invisible characters the schema's pattern refuses too; the rules name the reason.
INVISIBLE_TO_THE_PATTERN = [
    "ad\u200dmin",  # zero-width joiner
    "ad\u200bmin",  # zero-width space
    "ad\u200cmin",  # zero-width non-joiner
    "ad\u00admin",  # soft hyphen
    "ad\u2060min",  # word joiner
    "admin\ufe0f",  # variation selector 16
    "admin\ufe00",  # variation selector 1
    "admin\U000e0100",  # variation selector 17
    "adm\u034fin",  # combining grapheme joiner
    "\u17b4admin",  # Khmer inherent vowel
    "admin\U000e0041",  # tag letter A
]


def validation_error(errors: dict[str, str]) -> dict:
    return {
        "type": "about:blank",
        "title": "Bad Request",
        "status": 400,
        "detail": "The request body is not valid.",
        "code": "validation_error",
        "errors": errors,
    }


@pytest.mark.parametrize(
    ("username", "message"),
    [
        *REFUSED_USERNAMES,
        *((username, INVISIBLE_RULE) for username in INVISIBLE_TO_THE_PATTERN),
    ],
)
def test_mixed_script_and_invisible_names_are_refused(app, client, username, message):
    response = client.post("/users", json={"username": username, "password": PASSWORD})
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert response.json == validation_error({"username": message})
    assert user_count(app) == 0


@pytest.mark.parametrize(
    ("username", "message"),
    [
        *REFUSED_USERNAMES,
        *((username, INVISIBLE_RULE) for username in INVISIBLE_TO_THE_PATTERN),
    ],
)
def test_the_cli_refuses_what_the_rules_refuse(app, runner, username, message):
    result = runner.invoke(
        args=["users", "create", username, "--password-stdin"], input=PASSWORD + "\n"
    )
    assert result.exit_code == 1
    assert result.output == f"Error: username {message}\n"
    assert user_count(app) == 0


@pytest.mark.parametrize(
    ("taken", "look_alike"),
    [
        ("rtadmin", "rtadrnin"),  # "rn" for "m"
        ("rtadrnin", "RTADMIN"),
        ("copy", "\u0441\u043e\u0440\u0443"),  # all Cyrillic
        ("scope", "\u0455\u0441\u043e\u0440\u0435"),
        ("opa", "\u03bf\u03c1\u03b1"),  # all Greek
        ("\u0441\u0430\u0440", "cap"),  # the other way round
        ("ace", "\u0430\u0441\u0435"),
        ("ace", "\uff41\uff43\uff45"),  # full width: the same name
        ("alice", "a\u217cice"),  # small roman numeral fifty
        ("tanaka\u30ab\u30ca", "tanaka\u529b\u30ca"),  # Katakana ka, Han ryoku
    ],
)
def test_look_alike_of_a_taken_name_is_409(app, client, register, taken, look_alike):
    register(taken)
    response = client.post(
        "/users", json={"username": look_alike, "password": PASSWORD}
    )
    assert response.status_code == 409
    assert response.mimetype == "application/problem+json"
    assert response.json == {
        "type": "about:blank",
        "title": "Conflict",
        "status": 409,
        "detail": "The username or e-mail is already taken.",
        "code": "already_exists",
    }
    assert user_count(app) == 1


@pytest.mark.parametrize(
    ("taken", "other"),
    [("rtadmin", "rtadmln"), ("foo", "fo0"), ("bob", "b0b"), ("anna", "ana")],
)
def test_names_that_only_resemble_are_both_accepted(register, taken, other):
    register(taken)
    assert register(other)["username"] == other


# E-mail addresses: email-validator, syntax only.


@pytest.mark.parametrize(
    "email",
    [
        "<script>@x.com",
        "a..b@example.com",
        "x@[127.0.0.1]",
        "x@[IPv6:::1]",
        '"a b"@example.com',
        ".a@example.com",
        "a.@example.com",
        "a@-example.com",
        "a@example..com",
        "a@exa_mple.com",
        "a@localhost",
        "a@example.test",
        "a@example.invalid",
        "a@1.2.3.4",
        "alice@example.com>",
        "Alice <alice@example.com>",
        "a@b@example.com",
        "a\u200b@example.com",
    ],
)
def test_malformed_email_is_refused(app, client, email):
    response = client.post(
        "/users", json={"username": "alice", "password": PASSWORD, "email": email}
    )
    assert response.status_code == 400
    assert response.json == validation_error(
        {"email": "must be a valid e-mail address"}
    )
    assert user_count(app) == 0


@pytest.mark.parametrize(
    ("email", "stored"),
    [
        ("alice@example.com", "alice@example.com"),
        ("Alice.Smith+tag@Example.COM", "Alice.Smith+tag@Example.COM"),
        ("o'brien@example.ie", "o'brien@example.ie"),
        ("j\u00fcrgen@b\u00fccher.de", "j\u00fcrgen@b\u00fccher.de"),
        ("\uff41lice@example.com", "alice@example.com"),  # NFKC, as before
    ],
)
def test_valid_email_is_stored_as_given_after_nfkc(register, email, stored):
    assert register("alice", email=email)["email"] == stored
