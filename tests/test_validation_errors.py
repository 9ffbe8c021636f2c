"""``validation_error`` always names what was invalid: every field, or ``body``.

The contract's "Errors" section: the member ``errors`` is always an object, with
every invalid field of the request at once, and a body that is not a JSON object
at all (malformed, wrongly encoded, an array, a number...) is reported under the
member name ``body``, on every endpoint that reads a body.
"""

from __future__ import annotations

import pytest
from helpers import PASSWORD, bearer, problem

INTROSPECTION_SECRET = "introspection-credential-" + "v" * 24

NOT_JSON = "The request body is not valid JSON."
NOT_OBJECT = "The request body must be a JSON object."
BAD_CHARACTERS = "The request body contains NUL or a lone surrogate."

#: (body sent as application/json, the message under ``body``)
NOT_AN_OBJECT = [
    pytest.param(b"", NOT_JSON, id="empty"),
    pytest.param(b"{", NOT_JSON, id="truncated"),
    pytest.param(b"not json", NOT_JSON, id="words"),
    pytest.param(b'{"a": "\xff\xfe"}', NOT_JSON, id="invalid-utf-8"),
    pytest.param(b'{"a": NaN}', NOT_JSON, id="NaN"),
    pytest.param(b'{"a": -Infinity}', NOT_JSON, id="Infinity"),
    pytest.param(b'{"a": 1, "a": 2}', NOT_JSON, id="duplicate-key"),
    pytest.param(b"[" * 30000 + b"]" * 30000, NOT_JSON, id="deep-nesting"),
    pytest.param(b'{"a": "\\ud800"}', BAD_CHARACTERS, id="lone-surrogate"),
    pytest.param(b'{"a\\udfff": "b"}', BAD_CHARACTERS, id="surrogate-in-key"),
    pytest.param(b'{"a": "x\\u0000y"}', BAD_CHARACTERS, id="NUL"),
    pytest.param(b"[]", NOT_OBJECT, id="array"),
    pytest.param(b'[{"a": 1}]', NOT_OBJECT, id="array-of-object"),
    pytest.param(b"42", NOT_OBJECT, id="number"),
    pytest.param(b"null", NOT_OBJECT, id="null"),
    pytest.param(b"true", NOT_OBJECT, id="boolean"),
    pytest.param(b'"text"', NOT_OBJECT, id="string"),
]

#: Every operation that reads a body: method, path, and who calls it.
BODY_ENDPOINTS = [
    ("POST", "/login", None),
    ("POST", "/users", None),
    ("POST", "/refresh", None),
    ("POST", "/logout", "user"),
    ("POST", "/me/password", "user"),
    ("DELETE", "/me", "user"),
    ("PATCH", "/admin/users/{id}", "admin"),
    ("POST", "/introspect", "introspection"),
    ("POST", "/revoke", None),
]


@pytest.fixture
def settings(settings: dict) -> dict:
    return {**settings, "INTROSPECTION_SECRET": INTROSPECTION_SECRET}


@pytest.fixture
def callers(runner, register, login) -> dict:
    """The credentials and user id each kind of caller uses."""
    alice = register("alice")
    result = runner.invoke(
        args=["users", "create", "root", "--role", "admin", "--password-stdin"],
        input=PASSWORD + "\n",
    )
    assert result.exit_code == 0, result.output
    return {
        None: {},
        "user": bearer(login("alice")["access_token"]),
        "admin": bearer(login("root")["access_token"]),
        "introspection": bearer(INTROSPECTION_SECRET),
        "id": alice["id"],
    }


def send(client, callers, method, path, caller, **kwargs):
    return client.open(
        path.format(id=callers["id"]),
        method=method,
        headers=callers[caller],
        **kwargs,
    )


def validation_error(errors: dict[str, str], detail: str | None = None) -> dict:
    return {
        "type": "about:blank",
        "title": "Bad Request",
        "status": 400,
        "detail": detail or "The request body is not valid.",
        "code": "validation_error",
        "errors": errors,
    }


@pytest.mark.parametrize(("method", "path", "caller"), BODY_ENDPOINTS)
@pytest.mark.parametrize(("data", "message"), NOT_AN_OBJECT)
def test_a_body_that_is_not_an_object_is_reported_under_body(
    client, callers, method, path, caller, data, message
):
    if path == "/logout" and data == b"":
        pytest.skip("/logout takes no body at all: tested below")
    response = send(
        client,
        callers,
        method,
        path,
        caller,
        data=data,
        content_type="application/json",
    )
    problem(response, "validation_error", 400, detail=message, errors={"body": message})
    assert response.json == validation_error({"body": message}, message)


def test_logout_without_a_body_is_fine(client, callers):
    response = client.post("/logout", headers=callers["user"])
    assert response.status_code == 204


#: (method, path, caller, JSON body, every invalid field with its message)
SEVERAL_FAULTS = [
    (
        "POST",
        "/users",
        None,
        {"username": "ab", "password": "short"},
        {
            "username": "must be 3 to 64 characters of letters, digits, '.', '_' "
            "and '-'",
            "password": "must be at least 8 characters",
        },
    ),
    (
        "POST",
        "/users",
        None,
        {"username": 5, "password": "password", "email": "no address", "x": 1},
        {
            "username": "must be a string",
            "password": "is too common",
            "email": "must be a valid e-mail address",
            "x": "is not a known field",
        },
    ),
    (
        "POST",
        "/users",
        None,
        {"username": "zoe", "password": "zoe's long password " + "z" * 1010},
        {"password": "must be at most 1024 characters"},
    ),
    (
        "POST",
        "/users",
        None,
        {"username": "zoe", "password": "my name is zoe!"},
        {"password": "must not contain the username"},
    ),
    (
        "POST",
        "/users",
        None,
        {"email": ["a@example.com"]},
        {
            "username": "is required",
            "password": "is required",
            "email": "must be a string",
        },
    ),
    (
        "POST",
        "/login",
        None,
        {"username": 1, "password": "", "remember": True},
        {
            "username": "must be a string",
            "password": "must be at least 1 characters",
            "remember": "is not a known field",
        },
    ),
    (
        "POST",
        "/refresh",
        None,
        {},
        {"refresh_token": "is required"},
    ),
    (
        "POST",
        "/logout",
        "user",
        {"all": "yes", "other": None},
        {"all": "must be true or false", "other": "is not a known field"},
    ),
    (
        "POST",
        "/me/password",
        "user",
        {"current_password": 5, "new_password": "short"},
        {
            "current_password": "must be a string",
            "new_password": "must be at least 8 characters",
        },
    ),
    (
        "POST",
        "/me/password",
        "user",
        {"new_password": "alice in wonderland"},
        {
            "current_password": "is required",
            "new_password": "must not contain the username",
        },
    ),
    (
        "DELETE",
        "/me",
        "user",
        {"password": None, "reason": "x"},
        {"password": "must be a string", "reason": "is not a known field"},
    ),
    (
        "PATCH",
        "/admin/users/{id}",
        "admin",
        {"is_active": "no", "roles": ["a role"]},
        {
            "is_active": "must be true or false",
            "roles": "has characters that are not allowed",
        },
    ),
    (
        "POST",
        "/introspect",
        "introspection",
        {"token": "", "token_type_hint": "id_token"},
        {"token": "must be at least 1 characters", "token_type_hint": "is not valid"},
    ),
    (
        "POST",
        "/revoke",
        None,
        {"token": 7, "token_type_hint": 1},
        {"token": "must be a string", "token_type_hint": "must be a string"},
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "caller", "body", "errors"),
    SEVERAL_FAULTS,
    ids=[f"{method} {path}-{i}" for i, (method, path, *_) in enumerate(SEVERAL_FAULTS)],
)
def test_every_invalid_field_is_reported_at_once(
    client, callers, method, path, caller, body, errors
):
    response = send(client, callers, method, path, caller, json=body)
    assert response.json == validation_error(errors)


@pytest.mark.parametrize(
    ("data", "errors"),
    [
        ("token=a&token=b", {"token": "must be given once"}),
        (
            "token=a&token=b&token_type_hint=x&token_type_hint=y",
            {"token": "must be given once", "token_type_hint": "must be given once"},
        ),
        ("token=&token_type_hint=id_token", None),
        ("token=a%00b", {"body": BAD_CHARACTERS}),
    ],
)
@pytest.mark.parametrize(
    ("path", "caller"), [("/revoke", None), ("/introspect", "introspection")]
)
def test_form_bodies_report_every_invalid_field(
    client, callers, path, caller, data, errors
):
    response = send(
        client,
        callers,
        "POST",
        path,
        caller,
        data=data,
        content_type="application/x-www-form-urlencoded",
    )
    if errors is None:
        errors = {
            "token": "must be at least 1 characters",
            "token_type_hint": "is not valid",
        }
    detail = BAD_CHARACTERS if "body" in errors else None
    assert response.json == validation_error(errors, detail)


def test_a_password_below_a_lower_configured_minimum_passes_the_schema(make_app):
    # The schema states the running policy's minimum, not a fixed one.
    client = make_app(PASSWORD_MIN_LENGTH=4).test_client()
    response = client.post("/users", json={"username": "kim", "password": "wxyz!"})
    assert response.status_code == 201, response.json
    response = client.post("/users", json={"username": "lee", "password": "wx!"})
    assert response.json == validation_error(
        {"password": "must be at least 4 characters"}
    )


def test_a_registration_refused_by_the_policy_counts_as_an_attempt(make_app):
    client = make_app(REGISTRATION_RATE_LIMIT="2 per hour").test_client()
    # Malformed: no registration attempt at all, nothing counted.
    for body in ([], {"username": 5, "password": PASSWORD}, {"username": "kim"}):
        assert client.post("/users", json=body).status_code == 400
    # Well-formed but refused by the policy: attempts, as a taken name is.
    for body in (
        {"username": "ab", "password": "short"},
        {"username": "kim", "password": "password"},
    ):
        assert client.post("/users", json=body).status_code == 400
    response = client.post("/users", json={"username": "kim", "password": PASSWORD})
    problem(response, "rate_limited", 429, detail="Too many attempts; try again later.")


def test_closed_registration_is_closed_to_a_policy_refusal_too(make_app):
    client = make_app(REGISTRATION="closed").test_client()
    response = client.post("/users", json={"username": "ab", "password": "short"})
    problem(response, "registration_closed", 403)
