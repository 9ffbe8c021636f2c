"""Settings: defaults, then ``AUTHSVC_*`` environment variables, then overrides.

Every setting is declared once below with its default and the parser that turns an
environment string into a typed value. A value that cannot be parsed stops start-up
with a :class:`ConfigError` naming the variable, never a traceback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from limits import parse_many
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

ENV_PREFIX = "AUTHSVC_"

#: Set by ``authsvc serve`` for the workers it forks when the database was
#: unreachable at start, so they migrate on first use: internal, not a setting.
UPGRADE_PENDING_ENV = f"{ENV_PREFIX}UPGRADE_PENDING"

#: Algorithms access tokens can be signed with; HS256 only when chosen.
SUPPORTED_ALGORITHMS = ("RS256", "ES256", "EdDSA", "HS256")


class ConfigError(Exception):
    """A setting has a value the service cannot run with."""


def _integer(minimum: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("must be a whole number")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"must be a whole number, not {value!r}") from None
        if number < minimum:
            raise ValueError(f"must be at least {minimum}, not {number}")
        return number

    return parse


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"must be 1 or 0, not {value!r}")


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip()
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, not {value!r}")
        return text

    return parse


def _text(value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise ValueError("must not be empty")
    return text


def _optional_text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _rate_limit(value: Any) -> str:
    text = str(value).strip()
    try:
        limits = parse_many(text)
    except ValueError:
        raise ValueError(
            f"is not a rate limit like '10 per minute': {value!r}"
        ) from None
    if any(limit.amount < 1 for limit in limits):
        raise ValueError(f"must allow at least one attempt: {value!r}")
    return text


def _origins(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    origins = tuple(item.strip().rstrip("/") for item in items if item.strip())
    for origin in origins:
        if not re.fullmatch(r"https?://[^/\s*]+", origin):
            raise ValueError(
                f"must list origins like https://app.example.com: {origin!r}"
            )
    return origins


def _storage_uri(value: Any) -> str | None:
    if value in (None, ""):
        return None
    text = str(value).strip()
    if not text.startswith(("redis://", "rediss://")):
        raise ValueError("must be a redis:// URL, or unset for the service's database")
    return text


def _smtp_url(value: Any) -> str | None:
    if value in (None, ""):
        return None
    text = str(value).strip()
    rule = "must be a URL like smtp://user:password@host:587?starttls=1 or smtps://"
    try:
        url = urlsplit(text)
        url.port  # noqa: B018 (parsing the port is the check)
    except ValueError:
        raise ValueError(rule) from None
    if url.scheme not in {"smtp", "smtps"} or not url.hostname:
        raise ValueError(rule)
    return text


def _link_base(value: Any) -> str | None:
    if value in (None, ""):
        return None
    text = str(value).strip().rstrip("/")
    if not re.fullmatch(r"https?://[^\s?#]+", text):
        raise ValueError(f"must be an http(s) URL without query or fragment: {value!r}")
    return text


def _database_url(value: Any) -> str | None:
    if value in (None, ""):
        return None
    try:
        url = make_url(str(value))
    except ArgumentError:
        raise ValueError("is not a database URL SQLAlchemy can parse") from None
    if url.get_backend_name() not in {"sqlite", "postgresql"}:
        raise ValueError("must be a sqlite:// or postgresql+psycopg:// URL")
    return str(value)


@dataclass(frozen=True)
class Setting:
    """One configuration variable: its default and how to parse it."""

    default: Any
    parse: Callable[[Any], Any]


SETTINGS: dict[str, Setting] = {
    #: SQLAlchemy URL; unset means SQLite in the instance folder.
    "DATABASE_URL": Setting(None, _database_url),
    #: Where the embedded default keeps its database and generated secret.
    "INSTANCE_PATH": Setting("instance", _text),
    #: Secret for anything symmetric; generated into the instance folder when unset.
    "SECRET_KEY": Setting(None, _optional_text),
    #: ``iss`` of access tokens.
    "ISSUER": Setting("authsvc", _text),
    #: ``aud`` of access tokens.
    "AUDIENCE": Setting("authsvc", _text),
    #: Access token lifetime in seconds.
    "ACCESS_TOKEN_TTL": Setting(900, _integer(1)),
    #: Idle lifetime of a refresh token; each rotation starts a new one.
    "REFRESH_TOKEN_TTL": Setting(604800, _integer(1)),
    #: Absolute lifetime of a session, however often it is refreshed.
    "SESSION_TTL": Setting(2592000, _integer(1)),
    #: Seconds a just-rotated refresh token may be presented again without being reuse.
    "REFRESH_REUSE_GRACE": Setting(10, _integer(0)),
    #: Minimum password length in characters.
    "PASSWORD_MIN_LENGTH": Setting(8, _integer(1)),
    #: Clock-skew leeway in seconds when checking ``exp``, ``nbf`` and ``iat``.
    "JWT_LEEWAY": Setting(0, _integer(0)),
    #: Signing algorithm of access tokens.
    "JWT_ALGORITHM": Setting("RS256", _choice(*SUPPORTED_ALGORITHMS)),
    #: PEM private key supplied by the operator instead of generated keys.
    "SIGNING_KEY_FILE": Setting(None, _optional_text),
    #: Seconds a rotated-in key is published before it signs.
    "KEY_PUBLISH_DELAY": Setting(3600, _integer(0)),
    #: Bearer credential for POST /introspect; unset disables it.
    "INTROSPECTION_SECRET": Setting(None, _optional_text),
    #: Bearer credential ``GET /metrics`` asks for; unset leaves it open.
    "METRICS_TOKEN": Setting(None, _optional_text),
    #: ``open`` or ``closed`` (then ``POST /users`` answers 403).
    "REGISTRATION": Setting("open", _choice("open", "closed")),
    #: Bring the schema to the newest revision when the server starts.
    "AUTO_MIGRATE": Setting(True, _boolean),
    #: Seconds one PostgreSQL statement may run before it is cancelled; 0: no limit.
    "DB_STATEMENT_TIMEOUT": Setting(5, _integer(0)),
    #: ``development`` or ``production``.
    "ENV": Setting("development", _choice("development", "production")),
    #: Serve ``/docs`` and ``/swagger.json``; unset means on in development only.
    "DOCS": Setting(None, _boolean),
    #: ``text`` or ``json`` log lines.
    "LOG_FORMAT": Setting("text", _choice("text", "json")),
    #: Failed logins allowed per account and per client address (Flask-Limiter syntax).
    "LOGIN_RATE_LIMIT": Setting("10 per minute", _rate_limit),
    #: Registration attempts allowed per client address.
    "REGISTRATION_RATE_LIMIT": Setting("20 per hour", _rate_limit),
    #: Where throttling counters live; unset means the service's own database.
    "RATELIMIT_STORAGE_URI": Setting(None, _storage_uri),
    #: Trusted reverse proxies in front; only then is X-Forwarded-For believed.
    "PROXY_COUNT": Setting(0, _integer(0)),
    #: Origins allowed to call the API from a browser (comma-separated).
    "CORS_ORIGINS": Setting((), _origins),
    #: Password hashes computed at once per process; more wait briefly, then 503.
    "HASH_CONCURRENCY": Setting(4, _integer(1)),
    #: Argon2id iterations (OWASP minimum with 19 MiB: 2).
    "ARGON2_TIME_COST": Setting(2, _integer(1)),
    #: Argon2id memory in KiB (OWASP minimum: 19456).
    "ARGON2_MEMORY_COST": Setting(19456, _integer(8)),
    #: Argon2id lanes.
    "ARGON2_PARALLELISM": Setting(1, _integer(1)),
    # --- e-mail and account recovery ---
    #: ``console`` or ``smtp``; unset means console in development, smtp in production.
    "MAIL_BACKEND": Setting(None, _choice("console", "smtp")),
    #: ``smtp://[user:password@]host:port[?starttls=1]`` or ``smtps://...``.
    "SMTP_URL": Setting(None, _smtp_url),
    #: The ``From`` address of every message.
    "MAIL_FROM": Setting("authsvc@localhost", _text),
    #: Base URL of the client app's pages that links in messages point to.
    "LINK_BASE_URL": Setting(None, _link_base),
    #: Lifetime in seconds of a password-reset code or link.
    "PASSWORD_RESET_TTL": Setting(3600, _integer(1)),
    #: Lifetime in seconds of an e-mail verification (or change) code or link.
    "EMAIL_VERIFY_TTL": Setting(86400, _integer(1)),
    #: Login refuses accounts whose e-mail address is not verified.
    "REQUIRE_VERIFIED_EMAIL": Setting(False, _boolean),
    #: Messages per e-mail address, whether or not an account has it.
    "MAIL_RATE_LIMIT": Setting("3 per hour", _rate_limit),
    #: Mail-sending requests per client address.
    "MAIL_CLIENT_RATE_LIMIT": Setting("30 per hour", _rate_limit),
    #: A folder of message templates (``<kind>.txt``) that replace the built-in ones.
    "MAIL_TEMPLATES": Setting(None, _optional_text),
    #: Lifetime of the ``mfa_token`` a password login hands a user with a factor.
    "MFA_TOKEN_TTL": Setting(300, _integer(1)),
    #: The issuer authenticator apps show; unset means ``ISSUER``.
    "TOTP_ISSUER": Setting(None, _optional_text),
    #: Seconds since the last authentication within which a token is fresh.
    "FRESH_AUTH_MAX_AGE": Setting(300, _integer(0)),
    # Browser apps and reverse proxies.
    #: Let a browser client take its refresh token in an HttpOnly cookie; unset
    #: means on in development only.
    "REFRESH_COOKIE": Setting(None, _boolean),
    #: Serve the demo single-page app at ``/demo/``; unset means on in development.
    "DEMO_SPA": Setting(None, _boolean),
}

#: Settings that default to on in development and off in production.
DEVELOPMENT_ONLY = ("DOCS", "REFRESH_COOKIE", "DEMO_SPA")


def load_config(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Resolve every setting from defaults, environment and overrides, in that order.

    Keys of ``overrides`` that are not settings (``TESTING``, ``CLOCK``...) pass
    through unchanged so tests can hand Flask its own options too.
    """
    environ = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    config: dict[str, Any] = {}
    for name, setting in SETTINGS.items():
        source = f"{ENV_PREFIX}{name}"
        if name in overrides:
            raw = overrides.pop(name)
        elif source in environ:
            raw = environ[source]
        else:
            config[name] = setting.default
            continue
        try:
            config[name] = setting.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{source} {exc}") from None
    config["INSTANCE_PATH"] = str(Path(config["INSTANCE_PATH"]).resolve())
    if config["DATABASE_URL"] is None:
        database = Path(config["INSTANCE_PATH"]) / "authsvc.db"
        config["DATABASE_URL"] = f"sqlite:///{database}"
    for name in DEVELOPMENT_ONLY:
        if config[name] is None:
            config[name] = config["ENV"] == "development"
    if config["MAIL_BACKEND"] is None:
        config["MAIL_BACKEND"] = "console" if config["ENV"] == "development" else "smtp"
    if config["TOTP_ISSUER"] is None:
        config["TOTP_ISSUER"] = config["ISSUER"]
    if config["ENV"] == "production":
        _check_production(config)
    _check_mail(config)
    config["UPGRADE_PENDING"] = environ.get(UPGRADE_PENDING_ENV) == "1"
    config.update(overrides)
    return config


#: OWASP password-storage cheat sheet: argon2id with at least 19 MiB and 2 passes.
OWASP_MIN_MEMORY_COST = 19456
OWASP_MIN_TIME_COST = 2
MIN_SECRET_LENGTH = 32


def _check_mail(config: dict[str, Any]) -> None:
    # Messages carry codes: one that cannot be sent must stop start-up, not a reset.
    if config["MAIL_BACKEND"] == "smtp" and config["SMTP_URL"] is None:
        raise ConfigError(
            f"{ENV_PREFIX}SMTP_URL must be set to send mail "
            f"({ENV_PREFIX}MAIL_BACKEND=smtp, the default in production)"
        )
    if config["MAIL_BACKEND"] == "console" and config["ENV"] == "production":
        raise ConfigError(
            f"{ENV_PREFIX}MAIL_BACKEND=console writes codes to the log: "
            "development only"
        )


def _check_production(config: dict[str, Any]) -> None:
    secret = config["SECRET_KEY"]
    if secret is None:
        raise ConfigError(f"{ENV_PREFIX}SECRET_KEY must be set in production")
    if len(secret.encode()) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"{ENV_PREFIX}SECRET_KEY must be at least {MIN_SECRET_LENGTH} bytes"
        )
    if config["DATABASE_URL"].startswith("sqlite"):
        raise ConfigError(f"{ENV_PREFIX}DATABASE_URL must not be SQLite in production")
    if (
        config["ARGON2_MEMORY_COST"] < OWASP_MIN_MEMORY_COST
        or config["ARGON2_TIME_COST"] < OWASP_MIN_TIME_COST
    ):
        raise ConfigError(
            f"{ENV_PREFIX}ARGON2_MEMORY_COST and {ENV_PREFIX}ARGON2_TIME_COST must be "
            f"at least {OWASP_MIN_MEMORY_COST} and {OWASP_MIN_TIME_COST} in production"
        )
