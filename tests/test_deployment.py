"""The deployment files: the compose wiring, the image, and the settings list."""

from __future__ import annotations

import re
from pathlib import Path

import click
import yaml

from authsvc.cli import cli
from authsvc.config import ENV_PREFIX, SETTINGS

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_compose_runs_postgres_redis_a_migration_and_the_service():
    assert set(SERVICES) == {"db", "redis", "migrate", "authsvc", "proxy"}


def test_only_the_buffering_proxy_is_published():
    assert "ports" not in SERVICES["authsvc"]
    proxy = SERVICES["proxy"]
    assert proxy["ports"] == ["8000:8080"]
    assert proxy["volumes"] == ["./deploy/nginx.conf:/etc/nginx/conf.d/default.conf:ro"]
    assert proxy["depends_on"]["authsvc"]["condition"] == "service_healthy"
    assert SERVICES["authsvc"]["environment"]["AUTHSVC_PROXY_COUNT"] == "1"


def test_databases_have_healthchecks_and_named_volumes():
    for name in ("db", "redis"):
        service = SERVICES[name]
        assert service["healthcheck"]["test"]
        volume = service["volumes"][0].split(":")[0]
        assert volume in COMPOSE["volumes"]


def test_the_service_starts_only_after_a_successful_migration():
    depends = SERVICES["authsvc"]["depends_on"]
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert depends["db"]["condition"] == "service_healthy"
    assert depends["redis"]["condition"] == "service_healthy"
    assert SERVICES["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert SERVICES["migrate"]["restart"] == "no"


def test_configuration_is_authsvc_variables_only():
    for name in ("migrate", "authsvc"):
        environment = SERVICES[name]["environment"]
        for variable in environment:
            assert variable.startswith(ENV_PREFIX), variable
            assert variable.removeprefix(ENV_PREFIX) in SETTINGS, variable
        assert environment["AUTHSVC_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert environment["AUTHSVC_RATELIMIT_STORAGE_URI"].startswith("redis://")
        assert environment["AUTHSVC_ENV"] == "production"


def resolve(words: list[str]) -> click.Command:
    """The CLI command that ``authsvc WORDS...`` runs, failing if there is none."""
    command: click.Command = cli
    context = click.Context(cli)
    for word in words:
        if not isinstance(command, click.Group):
            break
        found = command.get_command(context, word)
        assert found is not None, f"no command {word!r} in {words}"
        command = found
    return command


def test_the_commands_compose_runs_exist():
    for name in ("migrate", "authsvc"):
        program, *words = SERVICES[name]["command"]
        assert program == "authsvc"
        command = resolve(words)
        assert not isinstance(command, click.Group)
        options = {opt for param in command.params for opt in param.opts}
        assert {word for word in words if word.startswith("--")} <= options


def test_every_setting_is_listed_in_env_example():
    listed = set(
        re.findall(
            r"^#? ?(AUTHSVC_[A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M
        )
    )
    assert listed == {ENV_PREFIX + name for name in SETTINGS}


def test_every_setting_is_in_the_readme_table():
    readme = (ROOT / "README.md").read_text()
    for name in SETTINGS:
        assert f"| `{ENV_PREFIX}{name}` |" in readme, name


def test_the_image_is_slim_unprivileged_and_checks_health():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.\d+-slim$", dockerfile, re.M)
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.M)
    assert "HEALTHCHECK" in dockerfile and "/health" in dockerfile
    assert "pip wheel" in dockerfile  # dependencies from the project's own metadata
    assert '"authsvc", "serve"' in dockerfile
