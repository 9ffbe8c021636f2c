"""Schemathesis hooks for ``python -m bench.fuzz``: who the requests are, one check.

Loaded by Schemathesis' command line (``SCHEMATHESIS_HOOKS``), configured by the
environment ``bench.fuzz`` sets.
"""

from __future__ import annotations

import http.client
import json
import os
from typing import Any

import schemathesis
from schemathesis import checks


@schemathesis.auth()
class AdministratorLogin:
    """A fresh administrator's access token, logged in again after any 401.

    Generated requests log out, so a token may die mid-run; Schemathesis then
    asks for a new one. ``/introspect`` takes the introspection secret instead.
    """

    def get(self, case: Any, ctx: Any) -> str:
        """Log in as the run's administrator."""
        body = json.dumps(
            {
                "username": os.environ["FUZZ_ADMIN"],
                "password": os.environ["FUZZ_ADMIN_PASSWORD"],
            }
        ).encode()
        connection = http.client.HTTPConnection(os.environ["FUZZ_ADDRESS"], timeout=30)
        try:
            connection.request(
                "POST", "/login", body, {"Content-Type": "application/json"}
            )
            return str(json.load(connection.getresponse())["access_token"])
        finally:
            connection.close()

    def set(self, case: Any, data: str, ctx: Any) -> None:
        """Send the token, or the introspection secret where that is the credential."""
        if case.operation.path == "/introspect":
            data = os.environ["FUZZ_INTROSPECTION_SECRET"]
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@schemathesis.check
def content_type_of_a_body(ctx: Any, response: Any, case: Any) -> bool | None:
    """Schemathesis' content-type check (excluded by the run), minus bodiless 204s.

    Swagger 2.0 cannot say that a 204 has no body: ``produces`` covers every
    response of an operation, so the stock check wants a Content-Type even on
    a 204, which rightly has none.
    """
    if response.status_code == 204 and not response.content:
        return None
    result: bool | None = checks.content_type_conformance(ctx, response, case)
    return result
