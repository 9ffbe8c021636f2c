"""The OpenAPI document says what the service checks, no less.

Every text a request may carry refuses NUL and lone surrogates in its schema, as
the service does; a new password states the policy's length; an e-mail its
format; /logout's body is optional; 413, 414 and 431 appear where they happen.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from schemathesis.core.jsonschema.patterns import enforced_pattern

from authsvc.api import openapi_document

COMMITTED = json.loads(
    (Path(__file__).resolve().parent.parent / "openapi" / "openapi.json").read_text()
)
METHODS = {"get", "post", "patch", "delete", "put"}


def operations(document: dict):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield method.upper(), path, operation


def body_schema(document: dict, operation: dict) -> dict | None:
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "body":
            name = parameter["schema"]["$ref"].rsplit("/", 1)[-1]
            return document["definitions"][name]
    return None


def request_strings(document: dict):
    """(where, schema) of every string a request can carry."""
    for method, path, operation in operations(document):
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "query" and parameter.get("type") == "string":
                yield f"{method} {path} ?{parameter['name']}", parameter
        schema = body_schema(document, operation)
        for name, field in (schema or {}).get("properties", {}).items():
            if field.get("type") == "array":
                field = field["items"]
            if field.get("type") == "string":
                yield f"{method} {path} {name}", field


def test_every_request_text_refuses_nul():
    checked = 0
    for where, field in request_strings(COMMITTED):
        if "enum" in field:
            continue
        pattern = re.compile(field["pattern"])
        for bad in ["\x00", "a\x00", "x\x00y"]:
            assert not pattern.search(bad), (where, bad)
        checked += 1
    assert checked >= 12


def test_the_document_says_lone_surrogates_are_refused():
    # No pattern can name a surrogate in the regex dialects validators use, so
    # the document's description says it (tests/test_validation_errors.py pins it).
    assert "lone surrogate" in COMMITTED["info"]["description"]


def test_every_request_pattern_is_one_validators_keep():
    # A pattern a validator cannot compile is dropped whole: then the document
    # no longer says even what it could.
    patterns = {
        field["pattern"]
        for _, field in request_strings(COMMITTED)
        if "pattern" in field
    }
    assert patterns
    for pattern in patterns:
        assert enforced_pattern(pattern) == pattern


def test_new_passwords_state_the_policy():
    definitions = COMMITTED["definitions"]
    for model, field in [
        ("Registration", "password"),
        ("PasswordChange", "new_password"),
    ]:
        schema = definitions[model]["properties"][field]
        assert (schema["minLength"], schema["maxLength"]) == (8, 1024), model


def test_the_email_has_its_format():
    assert (
        COMMITTED["definitions"]["Registration"]["properties"]["email"]["format"]
        == "email"
    )


def test_only_logout_may_go_without_a_body():
    required = {
        (method, path): parameter["required"]
        for method, path, operation in operations(COMMITTED)
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "body"
    }
    assert {key for key, value in required.items() if not value} == {
        ("POST", "/logout")
    }


def test_server_limits_are_documented_where_they_happen():
    for method, path, operation in operations(COMMITTED):
        responses = operation["responses"]
        assert {"414", "431"} <= responses.keys(), (method, path)
        if body_schema(COMMITTED, operation) is not None:
            assert "413" in responses, (method, path)


@pytest.mark.parametrize("minimum", [4, 12])
def test_the_served_document_follows_the_configured_minimum(make_app, minimum):
    app = make_app(PASSWORD_MIN_LENGTH=minimum)
    document = openapi_document(app)
    password = document["definitions"]["Registration"]["properties"]["password"]
    assert password["minLength"] == minimum


@pytest.mark.parametrize("text", ["\x00", "a\x00b"])
def test_the_service_refuses_what_the_patterns_refuse(client, text):
    response = client.post("/login", json={"username": text, "password": "x"})
    assert response.status_code == 400
    assert response.json["errors"] == {
        "body": "The request body contains NUL or a lone surrogate."
    }
