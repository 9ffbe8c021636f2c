"""The committed OpenAPI document is exactly what the app serves and exports."""

from __future__ import annotations

import json
from pathlib import Path

from openapi_spec_validator import validate
from openapi_spec_validator.validation import OpenAPIV2SpecValidator

from authsvc.api import openapi_document
from authsvc.cli_service import render_openapi
from authsvc.errors import CODES

COMMITTED = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"
REGENERATE = "regenerate it with: authsvc export-openapi openapi/openapi.json"


def test_committed_document_is_current(app):
    assert COMMITTED.read_text() == render_openapi(openapi_document(app)), REGENERATE


def test_document_is_valid_openapi_2():
    validate(json.loads(COMMITTED.read_text()), cls=OpenAPIV2SpecValidator)


def test_served_document_is_the_committed_one(client):
    response = client.get("/swagger.json")
    assert response.status_code == 200
    assert response.json == json.loads(COMMITTED.read_text())


def test_export_command_writes_the_committed_bytes(runner, tmp_path):
    target = tmp_path / "openapi.json"
    result = runner.invoke(args=["export-openapi", str(target)])
    assert result.exit_code == 0, result.output
    assert target.read_bytes() == COMMITTED.read_bytes()


def test_every_contract_path_is_documented():
    paths = json.loads(COMMITTED.read_text())["paths"]
    expected = {
        "/login": {"post"},
        "/refresh": {"post"},
        "/logout": {"post"},
        "/me": {"get"},
        "/users": {"post"},
        "/health": {"get"},
        "/me/mfa": {"get", "delete"},
        "/me/mfa/totp": {"post"},
        "/me/mfa/totp/confirm": {"post"},
        "/me/mfa/recovery-codes": {"post"},
        "/login/mfa": {"post"},
        "/reauthenticate": {"post"},
        "/admin/users/{user_id}/mfa": {"delete"},
    }
    for path, methods in expected.items():
        assert methods <= paths[path].keys(), path


def test_protected_operations_declare_the_bearer_scheme():
    document = json.loads(COMMITTED.read_text())
    assert document["securityDefinitions"]["bearer"]["in"] == "header"
    for path in ("/logout", "/me"):
        for operation in document["paths"][path].values():
            if isinstance(operation, dict) and "responses" in operation:
                assert operation["security"] == [{"bearer": []}]
                assert "401" in operation["responses"]


def test_error_codes_are_listed_in_the_problem_model():
    problem = json.loads(COMMITTED.read_text())["definitions"]["Problem"]
    assert problem["properties"]["code"]["enum"] == sorted(CODES)


def test_docs_can_be_turned_off(make_app):
    client = make_app(DOCS=False).test_client()
    assert client.get("/swagger.json").status_code == 404
    assert client.get("/docs").status_code == 404


def test_docs_page_is_served(client):
    response = client.get("/docs")
    assert response.status_code == 200
    assert "swagger" in response.get_data(as_text=True).lower()


def test_the_mfa_required_problem_and_the_challenges_are_documented():
    document = json.loads(COMMITTED.read_text())
    definitions = document["definitions"]
    assert {"mfa_token", "mfa_expires_in"} <= definitions["MfaRequiredProblem"][
        "properties"
    ].keys()
    assert {"max_age", "acr_values"} <= definitions["StepUpProblem"][
        "properties"
    ].keys()
    login = document["paths"]["/login"]["post"]["responses"]["401"]
    assert "`mfa_required`" in login["description"]
    assert login["schema"]["$ref"] == "#/definitions/MfaRequiredProblem"
    for path, method in [
        ("/reauthenticate", "post"),
        ("/admin/users/{user_id}", "patch"),
        ("/admin/users/{user_id}", "delete"),
        ("/admin/users/{user_id}/sessions", "delete"),
        ("/admin/users/{user_id}/mfa", "delete"),
    ]:
        stale = document["paths"][path][method]["responses"]["401"]
        assert "`insufficient_user_authentication`" in stale["description"], path
        assert stale["schema"]["$ref"] == "#/definitions/StepUpProblem", path
