"""Fresh authentication (RFC 9470): auth_time, reauthentication, stale tokens.

Also the administrators' and the command line's reset of a lost second factor.
"""

from __future__ import annotations

import re

import pytest
from helpers import PASSWORD, bearer, claims_of, me, problem, problem_body, refresh
from test_api_mfa import code_at, enrol, mfa_token, password_step, second_step

from authsvc.bearer import step_up_needed

CHALLENGE = 'Bearer realm="authsvc"'
STALE = 'Bearer realm="authsvc", error="insufficient_user_authentication"'

# RFC 9110 section 11: challenge = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
QUOTED = r'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[\t !-~])*"'
AUTH_PARAM = re.compile(rf"({TOKEN})[ \t]*=[ \t]*({TOKEN}|{QUOTED})")


def auth_params(header: str) -> tuple[str, dict[str, str]]:
    """Parse one challenge strictly by RFC 9110's grammar: its scheme and params.

    Anything the grammar does not allow (a stray comma, an unquoted space, a
    parameter twice) fails the test.
    """
    scheme, _, rest = header.partition(" ")
    assert re.fullmatch(TOKEN, scheme), header
    params: dict[str, str] = {}
    position = 0
    while position < len(rest):
        match = AUTH_PARAM.match(rest, position)
        assert match, f"not an auth-param at {position}: {header!r}"
        name, value = match.group(1).lower(), match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        assert name not in params, f"{name} twice: {header!r}"
        params[name] = value
        position = match.end()
        if position < len(rest):
            separator = re.compile(r"[ \t]*,[ \t]*").match(rest, position)
            assert separator and separator.end() < len(rest), header
            position = separator.end()
    return scheme, params


def stale_problem(
    response,
    max_age: int = 300,
    acr_values: str | None = None,
    detail: str | None = None,
):
    """Assert the RFC 9470 answer: body, members and challenge, exactly."""
    body = problem_body("insufficient_user_authentication", 401, detail=detail)
    body["max_age"] = max_age
    if acr_values is not None:
        body["acr_values"] = acr_values
    assert response.status_code == 401, response.json
    assert response.mimetype == "application/problem+json"
    assert response.json == body
    expected = f'{STALE}, max_age="{max_age}"'
    if acr_values is not None:
        expected += f', acr_values="{acr_values}"'
    header = response.headers["WWW-Authenticate"]
    assert header == expected
    scheme, params = auth_params(header)
    assert scheme == "Bearer"
    wanted = {
        "realm": "authsvc",
        "error": "insufficient_user_authentication",
        "max_age": str(max_age),
    }
    if acr_values is not None:
        wanted["acr_values"] = acr_values
    assert params == wanted


def reauthenticate(client, tokens: dict, **body):
    return client.post(
        "/reauthenticate",
        json={"password": PASSWORD, **body},
        headers=bearer(tokens["access_token"]),
    )


# --- the parser itself ----------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        'Bearer realm="authsvc",, error="x"',
        'Bearer realm="authsvc", error=a b',
        'Bearer realm="authsvc",',
        'Bearer realm="authsvc" error="x"',
        'Bearer realm="a", realm="b"',
        'Bearer realm="unterminated',
    ],
)
def test_the_parser_refuses_what_rfc_9110_does_not_allow(header):
    with pytest.raises(AssertionError):
        auth_params(header)


def test_the_parser_reads_quoted_pairs():
    assert auth_params('Bearer a="x\\"y", b=tok') == (
        "Bearer",
        {"a": 'x"y', "b": "tok"},
    )


# --- the claims -----------------------------------------------------------------------


def test_a_login_carries_auth_time_acr_and_amr(client, tokens, clock):
    claims = claims_of(tokens["access_token"])
    assert claims["auth_time"] == int(clock().timestamp())
    assert (claims["acr"], claims["amr"]) == ("aal1", ["pwd"])


def test_a_refresh_keeps_auth_time(client, tokens, clock):
    login_time = int(clock().timestamp())
    clock.advance(400)
    refreshed = refresh(client, tokens)
    claims = claims_of(refreshed.json["access_token"])
    assert claims["iat"] == login_time + 400
    assert claims["auth_time"] == login_time
    assert (claims["acr"], claims["amr"]) == ("aal1", ["pwd"])
    # Twice over: refreshing never makes a token fresh.
    clock.advance(400)
    again = claims_of(refresh(client, refreshed.json).json["access_token"])
    assert again["auth_time"] == login_time


# --- reauthentication -----------------------------------------------------------------


def test_reauthenticating_issues_a_fresh_token_for_the_same_session(
    client, tokens, clock
):
    login_time = int(clock().timestamp())
    clock.advance(600)
    response = reauthenticate(client, tokens)
    assert response.status_code == 200, response.json
    assert response.json.keys() == {"access_token", "token_type", "expires_in"}
    assert response.json["token_type"] == "Bearer"
    assert response.json["expires_in"] == 900
    assert response.headers["Cache-Control"] == "no-store"
    claims = claims_of(response.json["access_token"])
    assert claims["auth_time"] == login_time + 600
    assert claims["sid"] == tokens["session_id"]
    assert (claims["acr"], claims["amr"]) == ("aal1", ["pwd"])
    assert me(client, response.json).status_code == 200
    # The refresh token is unchanged, and its next refresh carries the new time.
    clock.advance(60)
    refreshed = refresh(client, tokens)
    assert refreshed.status_code == 200, refreshed.json
    assert claims_of(refreshed.json["access_token"])["auth_time"] == login_time + 600


def test_reauthenticating_with_a_wrong_password_is_refused(client, tokens):
    response = reauthenticate(client, tokens, password="wrong password")
    problem(response, "invalid_credentials", 401, detail="The password is incorrect.")
    assert response.headers["WWW-Authenticate"] == CHALLENGE


def test_reauthenticating_needs_a_token(client):
    response = client.post("/reauthenticate", json={"password": PASSWORD})
    problem(response, "authentication_required", 401)


def test_wrong_reauthentications_count_as_failed_logins(make_app):
    client = make_app(LOGIN_RATE_LIMIT="2 per minute").test_client()
    client.post("/users", json={"username": "alice", "password": PASSWORD})
    tokens = password_step(client).json
    for _ in range(2):
        response = reauthenticate(client, tokens, password="wrong password")
        assert response.json["code"] == "invalid_credentials"
    problem(
        reauthenticate(client, tokens),
        "rate_limited",
        429,
        detail="Too many attempts; try again later.",
    )


@pytest.fixture
def with_factor(client, register, login, clock):
    """``alice`` with the factor on, logged in with a code: (secret, tokens)."""
    register()
    tokens = login()
    secret = enrol(client, tokens).json["secret"]
    confirmed = client.post(
        "/me/mfa/totp/confirm",
        json={"code": code_at(secret, clock)},
        headers=bearer(tokens["access_token"]),
    )
    assert confirmed.status_code == 200
    clock.advance(30)
    logged_in = second_step(client, mfa_token(client), code_at(secret, clock))
    assert logged_in.status_code == 200
    clock.advance(30)
    return secret, logged_in.json


def test_a_user_with_a_factor_must_add_a_code(client, with_factor, clock):
    secret, tokens = with_factor
    stale_problem(
        reauthenticate(client, tokens),
        acr_values="aal2",
        detail="A code of the second factor is needed as well.",
    )
    problem(reauthenticate(client, tokens, code="abcdef"), "invalid_mfa_code", 401)
    response = reauthenticate(client, tokens, code=code_at(secret, clock))
    assert response.status_code == 200, response.json
    claims = claims_of(response.json["access_token"])
    assert claims["auth_time"] == int(clock().timestamp())
    assert (claims["acr"], claims["amr"]) == ("aal2", ["pwd", "otp", "mfa"])
    # The same code again is refused.
    problem(
        reauthenticate(client, tokens, code=code_at(secret, clock)),
        "invalid_mfa_code",
        401,
    )


# --- the guard ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "acr", "needed", "refused"),
    [
        (0, "aal1", None, False),
        (300, "aal1", None, False),
        (301, "aal1", None, True),
        (0, "aal1", "aal2", True),
        (0, "aal2", "aal2", False),
        (0, "aal2", "aal1", False),
        (301, "aal2", "aal2", True),
        (0, None, None, False),
        (0, "aal3", "aal2", True),
    ],
)
def test_the_freshness_rule(age, acr, needed, refused):
    refusal = step_up_needed(1000, acr, now=1000 + age, max_age=300, needed_acr=needed)
    assert (refusal is not None) == refused


def test_a_token_without_auth_time_is_never_fresh():
    refusal = step_up_needed(None, "aal1", now=1000, max_age=300, needed_acr=None)
    assert refusal is not None
    assert refusal.members == {"max_age": 300}


@pytest.fixture
def admin_tokens(client, runner):
    result = runner.invoke(
        args=["users", "create", "root", "--role", "admin", "--password-stdin"],
        input=PASSWORD + "\n",
    )
    assert result.exit_code == 0, result.output
    return password_step(client, "root").json


def test_a_stale_admin_token_may_read_but_not_change(
    client, admin_tokens, register, clock
):
    target = register("bob")
    clock.advance(301)
    headers = bearer(admin_tokens["access_token"])
    assert (
        client.get(f"/admin/users/{target['id']}", headers=headers).status_code == 200
    )
    assert client.get("/admin/users", headers=headers).status_code == 200
    for method, path, body in [
        ("PATCH", f"/admin/users/{target['id']}", {"is_active": False}),
        ("DELETE", f"/admin/users/{target['id']}", None),
        ("DELETE", f"/admin/users/{target['id']}/sessions", None),
        ("DELETE", f"/admin/users/{target['id']}/mfa", None),
    ]:
        response = client.open(path, method=method, json=body, headers=headers)
        stale_problem(response)
    # Reauthenticated, the same admin may.
    fresh = reauthenticate(client, admin_tokens).json
    response = client.patch(
        f"/admin/users/{target['id']}",
        json={"is_active": False},
        headers=bearer(fresh["access_token"]),
    )
    assert response.status_code == 200, response.json


def test_within_the_max_age_a_token_is_fresh(client, admin_tokens, register, clock):
    target = register("bob")
    clock.advance(300)
    response = client.patch(
        f"/admin/users/{target['id']}",
        json={"is_active": False},
        headers=bearer(admin_tokens["access_token"]),
    )
    assert response.status_code == 200, response.json


def test_the_max_age_follows_the_setting(make_app, clock, runner):
    app = make_app(FRESH_AUTH_MAX_AGE=60)
    client = app.test_client()
    result = app.test_cli_runner().invoke(
        args=["users", "create", "root", "--role", "admin", "--password-stdin"],
        input=PASSWORD + "\n",
    )
    assert result.exit_code == 0
    tokens = password_step(client, "root").json
    clock.advance(61)
    response = client.delete(
        "/admin/users/nobody/sessions", headers=bearer(tokens["access_token"])
    )
    stale_problem(response, max_age=60)


def test_a_stale_admin_with_a_factor_is_asked_for_it(
    client, runner, with_factor, clock
):
    secret, _ = with_factor
    assert runner.invoke(args=["users", "grant", "alice", "admin"]).exit_code == 0
    # Granting revoked the sessions: log in again.
    fresh = second_step(client, mfa_token(client), code_at(secret, clock)).json
    clock.advance(301)
    response = client.delete(
        "/admin/users/nobody/sessions", headers=bearer(fresh["access_token"])
    )
    stale_problem(response, acr_values="aal2")


def test_a_non_admin_gets_insufficient_scope_before_freshness(client, tokens, clock):
    clock.advance(301)
    response = client.delete(
        "/admin/users/nobody/mfa", headers=bearer(tokens["access_token"])
    )
    problem(response, "insufficient_scope", 403)


# --- resetting a lost factor ----------------------------------------------------------


def test_an_admin_resets_a_lost_factor(client, admin_tokens, with_factor):
    _, tokens = with_factor
    user_id = me(client, tokens).json["id"]
    headers = bearer(admin_tokens["access_token"])

    response = client.delete(f"/admin/users/{user_id}/mfa", headers=headers)

    assert response.status_code == 204
    assert response.data == b""
    problem(me(client, tokens), "token_revoked", 401)
    problem(refresh(client, tokens), "invalid_refresh_token", 401)
    assert password_step(client).status_code == 200
    shown = client.get(f"/admin/users/{user_id}", headers=headers).json
    assert shown["mfa_enabled"] is False
    problem(
        client.delete(f"/admin/users/{user_id}/mfa", headers=headers),
        "mfa_not_enabled",
        409,
    )


def test_an_admin_reset_of_nobody_is_not_found(client, admin_tokens):
    response = client.delete(
        "/admin/users/nobody/mfa", headers=bearer(admin_tokens["access_token"])
    )
    problem(response, "not_found", 404, detail="No such user.")


def test_a_reset_burns_outstanding_mfa_tokens(client, admin_tokens, with_factor, clock):
    secret, tokens = with_factor
    user_id = me(client, tokens).json["id"]
    waiting = mfa_token(client)
    headers = bearer(admin_tokens["access_token"])
    assert (
        client.delete(f"/admin/users/{user_id}/mfa", headers=headers).status_code == 204
    )
    problem(
        second_step(client, waiting, code_at(secret, clock)), "invalid_mfa_token", 401
    )


def test_the_cli_resets_a_lost_factor(client, runner, with_factor):
    _, tokens = with_factor
    result = runner.invoke(args=["users", "reset-mfa", "ALICE"])
    assert result.exit_code == 0, result.output
    assert result.output == (
        "turned off the second factor of alice; their sessions are revoked\n"
    )
    problem(me(client, tokens), "token_revoked", 401)
    assert password_step(client).status_code == 200
    again = runner.invoke(args=["users", "reset-mfa", "alice"])
    assert again.exit_code == 1
    assert again.output == "Error: No second factor is enabled or pending.\n"
    unknown = runner.invoke(args=["users", "reset-mfa", "nobody"])
    assert unknown.exit_code == 1
    assert unknown.output == "Error: no such user: nobody\n"


# --- the audit trail ------------------------------------------------------------------


def test_every_second_factor_event_is_audited_without_its_secrets(
    client, runner, register, login, clock, caplog
):
    import logging

    caplog.set_level(logging.INFO, logger="authsvc.audit")
    register()
    tokens = login()
    secret = enrol(client, tokens).json["secret"]
    confirm_code = code_at(secret, clock)
    codes = client.post(
        "/me/mfa/totp/confirm",
        json={"code": confirm_code},
        headers=bearer(tokens["access_token"]),
    ).json["recovery_codes"]
    token = mfa_token(client)
    assert second_step(client, token, codes[0]).status_code == 200
    clock.advance(30)
    again = reauthenticate(client, tokens, code=code_at(secret, clock))
    assert again.status_code == 200
    clock.advance(30)
    disabled = client.delete(
        "/me/mfa",
        json={"password": PASSWORD, "code": code_at(secret, clock)},
        headers=bearer(tokens["access_token"]),
    )
    assert disabled.status_code == 204
    secret = enrol(client, tokens).json["secret"]
    client.post(
        "/me/mfa/totp/confirm",
        json={"code": code_at(secret, clock)},
        headers=bearer(tokens["access_token"]),
    )
    assert runner.invoke(args=["users", "reset-mfa", "alice"]).exit_code == 0

    trail = [r.audit for r in caplog.records if r.name == "authsvc.audit"]
    events = [fields["event"] for fields in trail]
    for event in [
        "mfa_enrolment_started",
        "mfa_enabled",
        "mfa_challenged",
        "mfa_recovery_code_used",
        "reauthenticated",
        "mfa_disabled",
        "mfa_reset",
    ]:
        assert event in events, event
    (used,) = [
        r.audit for r in caplog.records if r.audit["event"] == "mfa_recovery_code_used"
    ]
    assert used["left"] == 9
    for value in [secret, token, *codes, confirm_code, PASSWORD]:
        assert value not in caplog.text
        assert all(value not in str(fields) for fields in trail)


def test_a_stale_aal2_token_is_asked_for_aal2_whatever_the_endpoint_needs():
    for needed in (None, "aal1", "aal2"):
        refusal = step_up_needed(1000, "aal2", now=2000, max_age=300, needed_acr=needed)
        assert refusal is not None
        assert refusal.members == {"max_age": 300, "acr_values": "aal2"}
        assert refusal.challenge.endswith(', max_age="300", acr_values="aal2"')
