"""The demo single-page app's files: served with a strict policy, or not at all."""

from __future__ import annotations

import pytest
from helpers import problem

from authsvc.demo import POLICY


@pytest.mark.parametrize(
    ("path", "mimetype"),
    [
        ("/demo/", "text/html"),
        ("/demo/app.js", "text/javascript"),
        ("/demo/style.css", "text/css"),
    ],
)
def test_the_demo_is_served_with_a_strict_policy(client, path, mimetype):
    response = client.get(path)
    assert response.status_code == 200
    assert response.mimetype == mimetype
    assert response.headers["Content-Security-Policy"] == POLICY
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "Set-Cookie" not in response.headers


def test_the_page_loads_one_module_and_no_inline_script(client):
    page = client.get("/demo/").get_data(as_text=True)
    assert '<script type="module" src="app.js"></script>' in page
    assert page.count("<script") == 1


def test_the_script_keeps_no_token_in_storage(client):
    lines = client.get("/demo/app.js").get_data(as_text=True).splitlines()
    # The comments say where tokens must not go; the code must not go there.
    script = "\n".join(line for line in lines if not line.lstrip().startswith("//"))
    for forbidden in ("localStorage", "sessionStorage", "document.cookie", "innerHTML"):
        assert forbidden not in script


@pytest.mark.parametrize("path", ["/demo/missing.js", "/demo/../pyproject.toml"])
def test_anything_else_is_not_found(client, path):
    problem(client.get(path), "not_found", 404)


@pytest.mark.parametrize("path", ["/demo/", "/demo/app.js"])
def test_the_demo_can_be_turned_off(make_app, path):
    problem(make_app(DEMO_SPA=False).test_client().get(path), "not_found", 404)
