"""Configuration (authsvc.config): defaults, environment, overrides, production checks.

Every test passes its own ``environ``; the process environment is never read.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from authsvc.config import SETTINGS, ConfigError, load_config

#: The contract's defaults, for the variables the settings declare.
CONTRACT_DEFAULTS = {
    "SECRET_KEY": None,
    "ISSUER": "authsvc",
    "AUDIENCE": "authsvc",
    "ACCESS_TOKEN_TTL": 900,
    "REFRESH_TOKEN_TTL": 604800,
    "SESSION_TTL": 2592000,
    "REFRESH_REUSE_GRACE": 10,
    "PASSWORD_MIN_LENGTH": 8,
    "JWT_LEEWAY": 0,
    "REGISTRATION": "open",
    "AUTO_MIGRATE": True,
    "JWT_ALGORITHM": "RS256",
    "ENV": "development",
    "DOCS": True,
    "LOG_FORMAT": "text",
}
POSTGRES_URL = "postgresql+psycopg://authsvc@db.example/authsvc"
PRODUCTION = {
    "AUTHSVC_ENV": "production",
    "AUTHSVC_SECRET_KEY": "s" * 48,
    "AUTHSVC_DATABASE_URL": POSTGRES_URL,
    "AUTHSVC_SMTP_URL": "smtp://mail.example.com:587?starttls=1",
}


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty directory, as an operator starting the service there would."""
    monkeypatch.chdir(tmp_path)
    return tmp_path.resolve()


def refusal(environ: dict, overrides: dict | None = None) -> str:
    """Assert the configuration is refused; return the message."""
    with pytest.raises(ConfigError) as info:
        load_config(overrides, environ=environ)
    return str(info.value)


# Defaults.


def test_the_contract_defaults_are_settings():
    assert CONTRACT_DEFAULTS.keys() <= SETTINGS.keys()


@pytest.mark.parametrize(("name", "default"), list(CONTRACT_DEFAULTS.items()))
def test_default(in_tmp, name, default):
    assert load_config(environ={})[name] == default


def test_default_instance_path_is_instance_under_the_current_directory(in_tmp):
    assert load_config(environ={})["INSTANCE_PATH"] == str(in_tmp / "instance")


def test_default_database_is_sqlite_in_the_instance_folder(in_tmp):
    assert load_config(environ={})["DATABASE_URL"] == (
        f"sqlite:///{in_tmp / 'instance' / 'authsvc.db'}"
    )


def test_default_database_follows_the_instance_path(tmp_path):
    instance = tmp_path / "data"
    config = load_config(environ={"AUTHSVC_INSTANCE_PATH": str(instance)})
    assert config["INSTANCE_PATH"] == str(instance.resolve())
    assert config["DATABASE_URL"] == f"sqlite:///{instance.resolve() / 'authsvc.db'}"


def test_loading_creates_nothing(in_tmp):
    load_config(environ={})
    assert list(in_tmp.iterdir()) == []


# The environment.


@pytest.mark.parametrize(
    ("name", "raw", "value"),
    [
        ("DATABASE_URL", POSTGRES_URL, POSTGRES_URL),
        ("DATABASE_URL", "sqlite:////srv/authsvc.db", "sqlite:////srv/authsvc.db"),
        ("SECRET_KEY", "a secret of my own", "a secret of my own"),
        ("ISSUER", "https://auth.example", "https://auth.example"),
        ("AUDIENCE", "https://api.example", "https://api.example"),
        ("ACCESS_TOKEN_TTL", "60", 60),
        ("REFRESH_TOKEN_TTL", "3600", 3600),
        ("SESSION_TTL", "86400", 86400),
        ("REFRESH_REUSE_GRACE", "0", 0),
        ("REFRESH_REUSE_GRACE", "30", 30),
        ("PASSWORD_MIN_LENGTH", "12", 12),
        ("JWT_LEEWAY", "5", 5),
        ("JWT_ALGORITHM", "HS256", "HS256"),
        ("REGISTRATION", "closed", "closed"),
        ("REGISTRATION", "open", "open"),
        ("AUTO_MIGRATE", "0", False),
        ("AUTO_MIGRATE", "1", True),
        ("DOCS", "0", False),
        ("DOCS", "1", True),
        ("LOG_FORMAT", "json", "json"),
        ("ARGON2_TIME_COST", "3", 3),
        ("ARGON2_MEMORY_COST", "65536", 65536),
        ("ARGON2_PARALLELISM", "4", 4),
    ],
)
def test_environment_values_are_parsed(name, raw, value):
    config = load_config(environ={f"AUTHSVC_{name}": raw})
    assert config[name] == value
    assert type(config[name]) is type(value)


@pytest.mark.parametrize(
    "algorithm",
    ["RS256", "ES256", "EdDSA", "HS256"],
)
def test_every_algorithm_of_the_contract_is_accepted(algorithm):
    config = load_config(environ={"AUTHSVC_JWT_ALGORITHM": algorithm})
    assert config["JWT_ALGORITHM"] == algorithm


def test_instance_path_from_the_environment_is_made_absolute(in_tmp):
    config = load_config(environ={"AUTHSVC_INSTANCE_PATH": "var/authsvc"})
    assert config["INSTANCE_PATH"] == str(in_tmp / "var" / "authsvc")


def test_variables_without_the_prefix_are_ignored():
    config = load_config(environ={"ACCESS_TOKEN_TTL": "60", "TTL": "60"})
    assert config["ACCESS_TOKEN_TTL"] == 900


# Overrides.


def test_overrides_beat_the_environment():
    config = load_config(
        {"ACCESS_TOKEN_TTL": 30},
        environ={"AUTHSVC_ACCESS_TOKEN_TTL": "60", "AUTHSVC_REGISTRATION": "closed"},
    )
    assert config["ACCESS_TOKEN_TTL"] == 30
    assert config["REGISTRATION"] == "closed"


def test_an_override_replaces_a_bad_environment_value():
    config = load_config(
        {"ACCESS_TOKEN_TTL": 30}, environ={"AUTHSVC_ACCESS_TOKEN_TTL": "abc"}
    )
    assert config["ACCESS_TOKEN_TTL"] == 30


def test_overrides_are_parsed_like_the_environment():
    config = load_config({"ACCESS_TOKEN_TTL": "45", "AUTO_MIGRATE": "0"}, environ={})
    assert (config["ACCESS_TOKEN_TTL"], config["AUTO_MIGRATE"]) == (45, False)


def test_a_bad_override_names_the_variable():
    message = refusal({}, {"ACCESS_TOKEN_TTL": 0})
    assert message.startswith("AUTHSVC_ACCESS_TOKEN_TTL ")


def test_unknown_override_keys_pass_through():
    clock = object()
    overrides = {"TESTING": True, "CLOCK": clock, "ACCESS_TOKEN_TTL": 30}
    config = load_config(overrides, environ={})
    assert config["TESTING"] is True
    assert config["CLOCK"] is clock
    assert overrides == {"TESTING": True, "CLOCK": clock, "ACCESS_TOKEN_TTL": 30}


# Invalid values stop start-up with a message naming the variable.


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AUTHSVC_ACCESS_TOKEN_TTL", "abc"),
        ("AUTHSVC_ACCESS_TOKEN_TTL", "0"),
        ("AUTHSVC_ACCESS_TOKEN_TTL", "-5"),
        ("AUTHSVC_ACCESS_TOKEN_TTL", "1.5"),
        ("AUTHSVC_ACCESS_TOKEN_TTL", ""),
        ("AUTHSVC_REFRESH_TOKEN_TTL", "0"),
        ("AUTHSVC_SESSION_TTL", "forever"),
        ("AUTHSVC_REFRESH_REUSE_GRACE", "-1"),
        ("AUTHSVC_PASSWORD_MIN_LENGTH", "0"),
        ("AUTHSVC_JWT_LEEWAY", "-1"),
        ("AUTHSVC_JWT_ALGORITHM", "none"),
        ("AUTHSVC_JWT_ALGORITHM", "XYZ"),
        ("AUTHSVC_JWT_ALGORITHM", "HS512"),
        ("AUTHSVC_DATABASE_URL", "not a url"),
        ("AUTHSVC_DATABASE_URL", "mysql://x/y"),
        ("AUTHSVC_REGISTRATION", "maybe"),
        ("AUTHSVC_AUTO_MIGRATE", "perhaps"),
        ("AUTHSVC_DOCS", "maybe"),
        ("AUTHSVC_ENV", "staging"),
        ("AUTHSVC_LOG_FORMAT", "xml"),
        ("AUTHSVC_ISSUER", ""),
        ("AUTHSVC_AUDIENCE", "  "),
    ],
)
def test_invalid_value_is_refused_naming_the_variable(variable, value):
    message = refusal({variable: value})
    assert message.startswith(f"{variable} ")
    assert "\n" not in message


def test_a_refused_database_url_does_not_echo_its_password():
    message = refusal({"AUTHSVC_DATABASE_URL": "mysql://authsvc:hunter2@db/authsvc"})
    assert message.startswith("AUTHSVC_DATABASE_URL ")
    assert "hunter2" not in message


# Documentation follows the environment.


def test_docs_are_on_in_development():
    assert load_config(environ={})["DOCS"] is True


def test_docs_can_be_turned_off_in_development():
    assert load_config(environ={"AUTHSVC_DOCS": "0"})["DOCS"] is False


def test_docs_are_off_in_production():
    assert load_config(environ=PRODUCTION)["DOCS"] is False


def test_docs_can_be_turned_on_in_production():
    assert load_config(environ={**PRODUCTION, "AUTHSVC_DOCS": "1"})["DOCS"] is True


# Production.


def test_production_accepts_a_good_setup():
    config = load_config(environ=PRODUCTION)
    assert config["ENV"] == "production"
    assert config["SECRET_KEY"] == "s" * 48
    assert config["DATABASE_URL"] == POSTGRES_URL


def test_production_accepts_a_secret_of_exactly_32_bytes():
    config = load_config(environ={**PRODUCTION, "AUTHSVC_SECRET_KEY": "s" * 32})
    assert config["SECRET_KEY"] == "s" * 32


@pytest.mark.parametrize(
    ("changes", "variable"),
    [
        ({"AUTHSVC_SECRET_KEY": None}, "AUTHSVC_SECRET_KEY"),
        ({"AUTHSVC_SECRET_KEY": ""}, "AUTHSVC_SECRET_KEY"),
        ({"AUTHSVC_SECRET_KEY": "s" * 31}, "AUTHSVC_SECRET_KEY"),
        ({"AUTHSVC_DATABASE_URL": None}, "AUTHSVC_DATABASE_URL"),
        ({"AUTHSVC_DATABASE_URL": "sqlite:////srv/a.db"}, "AUTHSVC_DATABASE_URL"),
        ({"AUTHSVC_ARGON2_MEMORY_COST": "19455"}, "AUTHSVC_ARGON2_MEMORY_COST"),
        ({"AUTHSVC_ARGON2_MEMORY_COST": "64"}, "AUTHSVC_ARGON2_MEMORY_COST"),
        ({"AUTHSVC_ARGON2_TIME_COST": "1"}, "AUTHSVC_ARGON2_TIME_COST"),
    ],
    ids=[
        "no-secret",
        "empty-secret",
        "31-byte-secret",
        "default-sqlite",
        "sqlite",
        "argon2-memory-19455",
        "argon2-memory-64",
        "argon2-time-1",
    ],
)
def test_production_refuses(changes, variable):
    environ = {**PRODUCTION, **changes}
    environ = {name: value for name, value in environ.items() if value is not None}
    message = refusal(environ)
    assert variable in message
    assert "\n" not in message


def test_production_can_be_chosen_by_override():
    assert "AUTHSVC_SECRET_KEY" in refusal({}, {"ENV": "production"})


# The console script.


def test_console_script_reports_a_bad_setting_in_one_line(tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "authsvc")
    assert os.path.exists(script), "the package is not installed next to pytest"
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AUTHSVC_", "FLASK_"))
    }
    result = subprocess.run(
        [script, "db", "current"],
        env={**environ, "AUTHSVC_ACCESS_TOKEN_TTL": "abc"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "AUTHSVC_ACCESS_TOKEN_TTL" in lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
