"""Alembic environment: the models' metadata and the service's own database."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from authsvc.config import load_config
from authsvc.db import make_engine
from authsvc.models import Base

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def run_migrations_offline() -> None:
    """Emit SQL for the configured database instead of running it."""
    context.configure(
        url=load_config()["DATABASE_URL"],
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run on the connection the service passes in, or on the configured database."""
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    engine = config.attributes.get("engine") or make_engine(
        load_config()["DATABASE_URL"]
    )
    with engine.connect() as connection:
        run_migrations(connection)


def run_migrations(connection) -> None:  # type: ignore[no-untyped-def]
    """Migrate on ``connection`` and commit."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
