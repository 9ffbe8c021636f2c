"""The second factor over HTTP: enrolment, the mfa_token login, recovery codes.

Codes are made by pyotp at the app's injected clock, which the tests move by
whole 30-second steps; nothing waits for real time.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
from helpers import (
    PASSWORD,
    bearer,
    claims_of,
    me,
    problem,
    problem_body,
    refresh,
)

from authsvc import otp

CHALLENGE = 'Bearer realm="authsvc"'
INVALID_TOKEN = 'Bearer realm="authsvc", error="invalid_token"'


def code_at(secret: str, clock, steps: int = 0) -> str:
    """The TOTP code of ``secret`` at the app's now, ``steps`` steps away."""
    moment = clock() + timedelta(seconds=30 * steps)
    return pyotp.TOTP(secret).at(int(moment.timestamp()))


@dataclass
class Enrolled:
    """A user with the factor on: its secret, recovery codes and first session."""

    username: str
    secret: str
    recovery_codes: list[str]
    tokens: dict


def enrol(client, tokens: dict, password: str = PASSWORD):
    return client.post(
        "/me/mfa/totp",
        json={"password": password},
        headers=bearer(tokens["access_token"]),
    )


def confirm(client, tokens: dict, code: str):
    return client.post(
        "/me/mfa/totp/confirm",
        json={"code": code},
        headers=bearer(tokens["access_token"]),
    )


@pytest.fixture
def enrolled(client, register, login, clock):
    """Make ``username`` a user with the factor on; the clock ends a step later."""

    def make(username: str = "alice") -> Enrolled:
        register(username)
        tokens = login(username)
        secret = enrol(client, tokens).json["secret"]
        response = confirm(client, tokens, code_at(secret, clock))
        assert response.status_code == 200, response.json
        clock.advance(30)
        return Enrolled(username, secret, response.json["recovery_codes"], tokens)

    return make


def password_step(client, username: str = "alice", password: str = PASSWORD):
    return client.post("/login", json={"username": username, "password": password})


def mfa_token(client, username: str = "alice") -> str:
    response = password_step(client, username)
    assert response.status_code == 401, response.json
    return response.json["mfa_token"]


def second_step(client, token: str, code: str):
    return client.post("/login/mfa", json={"mfa_token": token, "code": code})


def mfa_status(client, tokens: dict):
    return client.get("/me/mfa", headers=bearer(tokens["access_token"]))


# --- enrolment ------------------------------------------------------------------------


def test_a_new_user_has_no_factor(client, tokens):
    response = mfa_status(client, tokens)
    assert response.status_code == 200
    assert response.json == {"enabled": False, "recovery_codes_left": 0}
    assert me(client, tokens).json["mfa_enabled"] is False


def test_enrolment_hands_out_a_secret_and_its_otpauth_uri(client, tokens):
    response = enrol(client, tokens)
    assert response.status_code == 200, response.json
    assert response.json.keys() == {"secret", "otpauth_uri"}
    secret = response.json["secret"]
    assert len(secret) == 32 and set(secret) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    uri = urlsplit(response.json["otpauth_uri"])
    assert (uri.scheme, uri.netloc, uri.path) == ("otpauth", "totp", "/authsvc:alice")
    assert parse_qs(uri.query) == {"secret": [secret], "issuer": ["authsvc"]}
    parsed = pyotp.parse_uri(response.json["otpauth_uri"])
    assert (parsed.digits, parsed.interval, parsed.digest().name) == (6, 30, "sha1")
    # Pending, not on, until confirmed.
    assert mfa_status(client, tokens).json == {
        "enabled": False,
        "recovery_codes_left": 0,
    }


def test_the_issuer_shown_follows_the_setting(make_app):
    client = make_app(TOTP_ISSUER="Example Corp").test_client()
    client.post("/users", json={"username": "alice", "password": PASSWORD})
    tokens = password_step(client).json
    uri = enrol(client, tokens).json["otpauth_uri"]
    assert uri.startswith("otpauth://totp/Example%20Corp:alice?secret=")
    assert uri.endswith("&issuer=Example%20Corp")


def test_enrolment_needs_the_password(client, tokens):
    response = enrol(client, tokens, password="wrong password")
    problem(response, "invalid_credentials", 401, detail="The password is incorrect.")
    assert response.headers["WWW-Authenticate"] == CHALLENGE


def test_confirming_turns_the_factor_on(client, register, login, clock):
    register()
    tokens, other = login(), login()
    secret = enrol(client, tokens).json["secret"]

    response = confirm(client, tokens, code_at(secret, clock))

    assert response.status_code == 200, response.json
    codes = response.json["recovery_codes"]
    assert response.json == {"recovery_codes": codes}
    assert len(codes) == len(set(codes)) == 10
    assert all(otp.recovery_code_key(code) for code in codes)
    assert mfa_status(client, tokens).json == {
        "enabled": True,
        "recovery_codes_left": 10,
    }
    assert me(client, tokens).json["mfa_enabled"] is True
    # Every other session is revoked; the caller's counts as aal2 from its next
    # token on, with its authentication time unchanged.
    problem(me(client, other), "token_revoked", 401)
    problem(refresh(client, other), "invalid_refresh_token", 401)
    before = claims_of(tokens["access_token"])
    assert (before["acr"], before["amr"]) == ("aal1", ["pwd"])
    clock.advance(60)
    after = claims_of(refresh(client, tokens).json["access_token"])
    assert (after["acr"], after["amr"]) == ("aal2", ["pwd", "otp", "mfa"])
    assert after["auth_time"] == before["auth_time"]


def test_a_new_enrolment_replaces_the_pending_one(client, tokens, clock):
    first = enrol(client, tokens).json["secret"]
    second = enrol(client, tokens).json["secret"]
    assert first != second
    problem(confirm(client, tokens, code_at(first, clock)), "invalid_mfa_code", 401)
    assert confirm(client, tokens, code_at(second, clock)).status_code == 200


def test_confirming_with_nothing_pending_is_a_conflict(client, tokens):
    problem(confirm(client, tokens, "123456"), "mfa_not_enabled", 409)


@pytest.mark.parametrize("code", ["000000", "12345", "1234567", "abcdef", "", " "])
def test_confirming_with_a_wrong_or_malformed_code_is_refused(
    client, tokens, clock, code
):
    secret = enrol(client, tokens).json["secret"]
    if code == code_at(secret, clock):
        pytest.skip("the wrong code happens to be right this step")
    response = confirm(client, tokens, code)
    problem(response, "invalid_mfa_code", 401)
    assert response.headers["WWW-Authenticate"] == CHALLENGE
    assert mfa_status(client, tokens).json["enabled"] is False


def test_enrolling_twice_is_a_conflict(client, enrolled):
    user = enrolled()
    problem(enrol(client, user.tokens), "mfa_already_enabled", 409)


# --- login with the factor ------------------------------------------------------------


def test_the_right_password_answers_mfa_required_and_no_token(client, enrolled, clock):
    enrolled()
    response = password_step(client)
    body = response.json
    assert body == {
        **problem_body("mfa_required", 401),
        "mfa_token": body["mfa_token"],
        "mfa_expires_in": 300,
    }
    assert response.mimetype == "application/problem+json"
    assert len(body["mfa_token"]) >= 43
    assert "Set-Cookie" not in response.headers
    assert "access_token" not in body and "refresh_token" not in body


def test_the_code_finishes_the_login_like_a_login(client, enrolled, clock):
    user = enrolled()
    token = mfa_token(client)

    response = second_step(client, token, code_at(user.secret, clock))

    assert response.status_code == 200, response.json
    assert response.json.keys() == {
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
        "refresh_expires_in",
        "session_id",
    }
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    assert "Set-Cookie" not in response.headers
    claims = claims_of(response.json["access_token"])
    assert claims["acr"] == "aal2"
    assert claims["amr"] == ["pwd", "otp", "mfa"]
    assert claims["auth_time"] == int(clock().timestamp())
    assert me(client, response.json).json["username"] == "alice"
    # A refresh of that session stays aal2.
    refreshed = claims_of(refresh(client, response.json).json["access_token"])
    assert (refreshed["acr"], refreshed["amr"]) == ("aal2", ["pwd", "otp", "mfa"])


def test_the_code_can_put_the_refresh_token_in_the_cookie(app, enrolled, clock):
    user = enrolled()
    browser = app.test_client(use_cookies=False)
    token = mfa_token(browser)

    response = browser.post(
        "/login/mfa",
        json={
            "mfa_token": token,
            "code": code_at(user.secret, clock),
            "refresh_token_transport": "cookie",
        },
    )

    assert response.status_code == 200, response.json
    assert response.json.keys() == {
        "access_token",
        "token_type",
        "expires_in",
        "refresh_expires_in",
        "session_id",
    }
    [cookie] = response.headers.getlist("Set-Cookie")
    assert cookie.startswith("__Host-authsvc_refresh=")
    assert cookie.endswith(
        "; Path=/; Secure; HttpOnly; SameSite=Strict; "
        f"Max-Age={response.json['refresh_expires_in']}"
    )
    refreshed = browser.post(
        "/refresh",
        json={},
        headers={
            "Cookie": cookie.split(";")[0],
            "X-Authsvc-CSRF": "1",
            "Origin": "http://localhost",
        },
    )
    assert refreshed.status_code == 200, refreshed.json
    assert claims_of(refreshed.json["access_token"])["acr"] == "aal2"


def test_the_cookie_transport_of_the_code_step_needs_the_setting(
    make_app, register, login, clock
):
    app = make_app(REFRESH_COOKIE=False)
    client = app.test_client(use_cookies=False)
    response = client.post(
        "/login/mfa",
        json={"mfa_token": "x", "code": "123456", "refresh_token_transport": "cookie"},
    )
    problem(
        response,
        "validation_error",
        400,
        errors={"refresh_token_transport": "is not offered by this service"},
    )


def test_the_mfa_token_works_once(client, enrolled, clock):
    user = enrolled()
    token = mfa_token(client)
    assert second_step(client, token, code_at(user.secret, clock)).status_code == 200
    clock.advance(30)
    problem(
        second_step(client, token, code_at(user.secret, clock)),
        "invalid_mfa_token",
        401,
    )


@pytest.mark.parametrize("token", ["", "x" * 43, "not a token at all"])
def test_an_unknown_mfa_token_is_refused(client, enrolled, clock, token):
    user = enrolled()
    response = second_step(client, token, code_at(user.secret, clock))
    if token == "":
        assert response.status_code == 400
        return
    problem(response, "invalid_mfa_token", 401)


def test_the_mfa_token_expires(client, enrolled, clock):
    user = enrolled()
    token = mfa_token(client)
    clock.advance(300)
    problem(
        second_step(client, token, code_at(user.secret, clock)),
        "invalid_mfa_token",
        401,
    )


def test_the_mfa_token_lifetime_follows_the_setting(make_app, clock):
    client = make_app(MFA_TOKEN_TTL=60).test_client()
    client.post("/users", json={"username": "alice", "password": PASSWORD})
    tokens = password_step(client).json
    secret = enrol(client, tokens).json["secret"]
    assert confirm(client, tokens, code_at(secret, clock)).status_code == 200
    clock.advance(30)
    response = password_step(client)
    assert response.json["mfa_expires_in"] == 60
    clock.advance(61)
    problem(
        second_step(client, response.json["mfa_token"], code_at(secret, clock)),
        "invalid_mfa_token",
        401,
    )


def test_five_wrong_codes_burn_the_mfa_token(client, enrolled, clock):
    user = enrolled()
    token = mfa_token(client)
    right = code_at(user.secret, clock)
    wrong = "000000" if right != "000000" else "111111"
    for _ in range(5):
        problem(second_step(client, token, wrong), "invalid_mfa_code", 401)
    problem(second_step(client, token, right), "invalid_mfa_token", 401)
    # A new password step starts afresh.
    assert second_step(client, mfa_token(client), right).status_code == 200


def test_four_wrong_codes_leave_the_mfa_token_alive(client, enrolled, clock):
    user = enrolled()
    token = mfa_token(client)
    for _ in range(4):
        problem(second_step(client, token, "abcdef"), "invalid_mfa_code", 401)
    assert second_step(client, token, code_at(user.secret, clock)).status_code == 200


@pytest.mark.parametrize(
    ("steps", "accepted"), [(-2, False), (-1, True), (0, True), (1, True), (2, False)]
)
def test_codes_one_step_either_side_are_accepted(
    client, enrolled, clock, steps, accepted
):
    user = enrolled()
    clock.advance(60)  # two steps past the confirmation's
    response = second_step(
        client, mfa_token(client), code_at(user.secret, clock, steps)
    )
    if accepted:
        assert response.status_code == 200, response.json
    else:
        problem(response, "invalid_mfa_code", 401)


def test_a_code_is_accepted_once(client, enrolled, clock):
    user = enrolled()
    code = code_at(user.secret, clock)
    assert second_step(client, mfa_token(client), code).status_code == 200
    problem(second_step(client, mfa_token(client), code), "invalid_mfa_code", 401)


def test_a_step_before_the_last_accepted_one_is_refused(client, enrolled, clock):
    user = enrolled()
    ahead = code_at(user.secret, clock, 1)
    assert second_step(client, mfa_token(client), ahead).status_code == 200
    # The current step is before the one just accepted: refused too.
    problem(
        second_step(client, mfa_token(client), code_at(user.secret, clock)),
        "invalid_mfa_code",
        401,
    )
    clock.advance(60)
    assert (
        second_step(client, mfa_token(client), code_at(user.secret, clock)).status_code
        == 200
    )


def test_the_confirmation_code_cannot_log_in(client, register, login, clock):
    register()
    tokens = login()
    secret = enrol(client, tokens).json["secret"]
    code = code_at(secret, clock)
    assert confirm(client, tokens, code).status_code == 200
    problem(second_step(client, mfa_token(client), code), "invalid_mfa_code", 401)


def test_two_racing_logins_with_one_code_let_exactly_one_in(
    app, enrolled, clock, monkeypatch
):
    user = enrolled()
    code = code_at(user.secret, clock)
    client = app.test_client()
    tokens = [mfa_token(client), mfa_token(client)]
    # Both requests have matched the code before either spends its step.
    barrier = threading.Barrier(2, timeout=10)
    matching_step = otp.matching_step

    def in_step(secret, given, now):
        step = matching_step(secret, given, now)
        barrier.wait()
        return step

    monkeypatch.setattr(otp, "matching_step", in_step)
    responses = [None, None]

    def attempt(index: int) -> None:
        responses[index] = second_step(app.test_client(), tokens[index], code)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200, 401], [r.json for r in responses]
    (refused,) = [r for r in responses if r.status_code == 401]
    problem(refused, "invalid_mfa_code", 401)


def test_wrong_codes_count_as_failed_logins(make_app, clock):
    app = make_app(LOGIN_RATE_LIMIT="3 per minute")
    client = app.test_client()
    client.post("/users", json={"username": "alice", "password": PASSWORD})
    tokens = password_step(client).json
    secret = enrol(client, tokens).json["secret"]
    assert confirm(client, tokens, code_at(secret, clock)).status_code == 200
    clock.advance(30)
    for _ in range(3):
        token = password_step(client).json["mfa_token"]
        problem(second_step(client, token, "abcdef"), "invalid_mfa_code", 401)
    response = password_step(client)
    problem(response, "rate_limited", 429, detail="Too many attempts; try again later.")
    assert response.headers["Retry-After"]


def comparable(response) -> tuple:
    varying = {"date", "x-request-id"}
    headers = sorted((k, v) for k, v in response.headers if k.lower() not in varying)
    return response.status_code, response.data, headers


def test_a_wrong_password_reads_alike_with_and_without_a_factor(
    client, register, enrolled
):
    enrolled("alice")
    register("bob")
    with_factor = password_step(client, "alice", "wrong password")
    without = password_step(client, "bob", "wrong password")
    problem(with_factor, "invalid_credentials", 401)
    assert comparable(with_factor) == comparable(without)


def test_a_disabled_user_cannot_finish_a_login(client, enrolled, clock, runner):
    user = enrolled()
    token = mfa_token(client)
    assert runner.invoke(args=["users", "disable", "alice"]).exit_code == 0
    problem(
        second_step(client, token, code_at(user.secret, clock)),
        "invalid_mfa_token",
        401,
    )


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"mfa_token": "t"}, {"code": "is required"}),
        ({"code": "123456"}, {"mfa_token": "is required"}),
        ({"mfa_token": 1, "code": 2}, {"mfa_token": "must be a string"}),
        ({"mfa_token": "t", "code": "1" * 65}, None),
        ({"mfa_token": "t", "code": "123456", "extra": 1}, None),
    ],
)
def test_a_malformed_second_step_is_a_validation_error(client, body, errors):
    response = client.post("/login/mfa", json=body)
    assert response.status_code == 400
    assert response.json["code"] == "validation_error"
    if errors:
        assert errors.items() <= response.json["errors"].items()


# --- recovery codes -------------------------------------------------------------------


def test_each_recovery_code_works_once(client, enrolled):
    user = enrolled()
    first, second = user.recovery_codes[:2]
    response = second_step(client, mfa_token(client), first)
    assert response.status_code == 200, response.json
    assert claims_of(response.json["access_token"])["acr"] == "aal2"
    problem(second_step(client, mfa_token(client), first), "invalid_mfa_code", 401)
    # However it is typed: case, spaces and dashes do not matter.
    typed = second.upper().replace("-", " ")
    assert second_step(client, mfa_token(client), typed).status_code == 200
    assert mfa_status(client, user.tokens).json == {
        "enabled": True,
        "recovery_codes_left": 8,
    }


def renew(client, tokens: dict, code: str, password: str = PASSWORD):
    return client.post(
        "/me/mfa/recovery-codes",
        json={"password": password, "code": code},
        headers=bearer(tokens["access_token"]),
    )


def test_renewed_recovery_codes_replace_the_old_ones(client, enrolled, clock):
    user = enrolled()
    response = renew(client, user.tokens, code_at(user.secret, clock))
    assert response.status_code == 200, response.json
    fresh = response.json["recovery_codes"]
    assert len(set(fresh)) == 10 and not set(fresh) & set(user.recovery_codes)
    problem(
        second_step(client, mfa_token(client), user.recovery_codes[0]),
        "invalid_mfa_code",
        401,
    )
    assert second_step(client, mfa_token(client), fresh[0]).status_code == 200


def test_a_recovery_code_renews_the_recovery_codes(client, enrolled):
    user = enrolled()
    response = renew(client, user.tokens, user.recovery_codes[3])
    assert response.status_code == 200, response.json
    assert mfa_status(client, user.tokens).json["recovery_codes_left"] == 10


@pytest.mark.parametrize(
    ("password", "code", "expected"),
    [
        ("wrong password", None, "invalid_credentials"),
        (PASSWORD, "000000", "invalid_mfa_code"),
    ],
)
def test_renewing_needs_the_password_and_a_code(
    client, enrolled, clock, password, code, expected
):
    user = enrolled()
    code = code or code_at(user.secret, clock)
    if code == code_at(user.secret, clock) and expected == "invalid_mfa_code":
        pytest.skip("the wrong code happens to be right this step")
    response = renew(client, user.tokens, code, password)
    assert response.status_code == 401
    assert response.json["code"] == expected
    assert response.headers["WWW-Authenticate"] == CHALLENGE
    assert mfa_status(client, user.tokens).json["recovery_codes_left"] == 10


def test_renewing_without_a_factor_is_a_conflict(client, tokens):
    problem(renew(client, tokens, "123456"), "mfa_not_enabled", 409)


# --- turning it off -------------------------------------------------------------------


def disable(client, tokens: dict, code: str, password: str = PASSWORD):
    return client.delete(
        "/me/mfa",
        json={"password": password, "code": code},
        headers=bearer(tokens["access_token"]),
    )


def test_turning_the_factor_off(client, enrolled, clock):
    user = enrolled()
    response = disable(client, user.tokens, code_at(user.secret, clock))
    assert response.status_code == 204
    assert response.data == b""
    assert mfa_status(client, user.tokens).json == {
        "enabled": False,
        "recovery_codes_left": 0,
    }
    assert me(client, user.tokens).json["mfa_enabled"] is False
    assert password_step(client).status_code == 200
    problem(disable(client, user.tokens, "123456"), "mfa_not_enabled", 409)


def test_turning_it_off_needs_a_right_code(client, enrolled):
    user = enrolled()
    problem(disable(client, user.tokens, "abcdef"), "invalid_mfa_code", 401)
    problem(
        disable(client, user.tokens, user.recovery_codes[0], "wrong password"),
        "invalid_credentials",
        401,
        detail="The password is incorrect.",
    )
    assert mfa_status(client, user.tokens).json["enabled"] is True


# --- at rest --------------------------------------------------------------------------


def test_secrets_codes_and_tokens_are_not_stored_as_given(app, client, enrolled):
    import hashlib

    from sqlalchemy import select

    from authsvc.db import get_session
    from authsvc.models import MfaFactor, MfaToken, RecoveryCode

    user = enrolled()
    token = mfa_token(client)
    with app.app_context():
        db = get_session()
        (factor,) = db.scalars(select(MfaFactor)).all()
        hashes = set(db.scalars(select(RecoveryCode.code_hash)).all())
        (token_hash,) = db.scalars(select(MfaToken.token_hash)).all()
    assert factor.pending_secret is None
    assert user.secret.encode() not in factor.secret
    assert len(factor.secret) >= 1 + 12 + 20 + 16  # version, nonce, secret, tag
    plain = {
        hashlib.sha256(value.encode()).hexdigest()
        for code in user.recovery_codes
        for value in (code, otp.recovery_code_key(code))
    }
    assert len(hashes) == 10 and not hashes & plain
    assert not {code.replace("-", "") for code in user.recovery_codes} & hashes
    assert token_hash not in {token, hashlib.sha256(token.encode()).hexdigest()}


def test_the_sealed_secret_is_bound_to_its_user(app, enrolled):
    from sqlalchemy import select

    from authsvc import second_factor
    from authsvc.db import get_session
    from authsvc.models import MfaFactor
    from authsvc.sealing import SealError

    user = enrolled()
    with app.app_context():
        factor = get_session().scalars(select(MfaFactor)).one()
        assert second_factor._unseal(factor.user_id, factor.secret) == user.secret
        other = factor.user_id.__class__(int=factor.user_id.int ^ 1)
        with pytest.raises(SealError):
            second_factor._unseal(other, factor.secret)
