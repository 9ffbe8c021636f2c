"""The HTTP edge: OPTIONS answers, CORS headers, and the docs page's protections."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from authsvc.edge import CORS_METHODS

ORIGIN = "https://app.example.com"
TWO_ORIGINS = "https://app.example.com, https://admin.example.com"


def routes(app) -> list[tuple[str, set[str]]]:
    """Every route of the app, ids filled in, with its methods."""
    return [
        (re.sub(r"<[^>]+>", "x", rule.rule), set(rule.methods or ()))
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
    ]


# --- OPTIONS -------------------------------------------------------------------------


@pytest.mark.parametrize("origins", ["", ORIGIN, TWO_ORIGINS])
def test_options_answers_with_no_body_and_no_content_type(make_app, origins):
    app = make_app(CORS_ORIGINS=origins)
    client = app.test_client()
    for path, methods in routes(app):
        for headers in ({}, {"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}):
            response = client.options(path, headers=headers)
            assert response.status_code == 200, path
            assert response.data == b"", path
            assert "Content-Type" not in response.headers, path
            assert set(response.headers["Allow"].split(", ")) == methods, path


# --- CORS ----------------------------------------------------------------------------


def test_cors_allows_exactly_the_methods_the_routes_have(app):
    assert set(CORS_METHODS) == set().union(*(methods for _, methods in routes(app)))
    assert "PUT" not in CORS_METHODS


@pytest.mark.parametrize("origins", [ORIGIN, TWO_ORIGINS])
def test_a_preflight_lists_no_method_that_no_route_has(make_app, origins):
    client = make_app(CORS_ORIGINS=origins).test_client()
    response = client.options(
        "/login", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    )
    assert response.headers.getlist("Access-Control-Allow-Methods") == [
        "DELETE, GET, HEAD, OPTIONS, PATCH, POST"
    ]


@pytest.mark.parametrize("origins", [ORIGIN, TWO_ORIGINS])
@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("OPTIONS", "/login", {"Access-Control-Request-Method": "POST"}),
        ("GET", "/health/live", {}),
        ("GET", "/me", {}),
        ("POST", "/login", {}),
        ("GET", "/nowhere", {}),
    ],
)
@pytest.mark.parametrize("origin", [ORIGIN, "https://evil.example.com", None])
def test_vary_origin_is_said_once(make_app, origins, method, path, headers, origin):
    client = make_app(CORS_ORIGINS=origins).test_client()
    sent = {**headers, **({"Origin": origin} if origin else {})}
    response = client.open(path, method=method, headers=sent, json={})
    assert response.headers.getlist("Vary") == ["Origin"]


# --- /docs ---------------------------------------------------------------------------


def inline_scripts(html: bytes) -> list[bytes]:
    return re.findall(rb"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", html, re.DOTALL)


def sha256(script: bytes) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode() + "'"


def test_the_docs_page_has_a_strict_policy_that_lets_swagger_ui_run(client):
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.headers["X-Frame-Options"] == "DENY"
    # The page's one inline script, its start-up, runs by its hash.
    scripts = inline_scripts(response.data)
    assert len(scripts) == 1
    assert response.headers["Content-Security-Policy"] == (
        "default-src 'none'; "
        f"script-src 'self' {sha256(scripts[0])}; "
        "style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; "
        "font-src 'self'; "
        "connect-src 'self'; "
        "base-uri 'none'; "
        "form-action 'none'; "
        "frame-ancestors 'none'"
    )


def test_everything_the_docs_page_loads_is_served_by_the_service(client):
    html = client.get("/docs").data.decode()
    sources = re.findall(r'<(?:script|link)[^>]*(?:src|href)="([^"]+)"', html)
    assert len(sources) >= 4
    for source in sources:
        assert source.startswith("/swaggerui/"), source
        with client.get(source) as response:
            assert response.status_code == 200, source
    # Fonts come from the service too, and the start-up script fetches the
    # document from it (connect-src 'self').
    with client.get("/swaggerui/droid-sans.css") as response:
        css = response.data.decode()
    for font in re.findall(r"url\('([^']+)'\)", css):
        assert font.startswith("./files/"), font
    assert "/swagger.json" in inline_scripts(html.encode())[0].decode()


def test_only_the_docs_page_gets_the_page_policy(client):
    for path in ["/swagger.json", "/swaggerui/swagger-ui.css", "/health/live"]:
        with client.get(path) as response:
            assert "Content-Security-Policy" not in response.headers, path
