"""The floor beside authsvc: ``bench.floor_app`` served on the same database server.

See ``bench/floor_app.py`` for what the floor does and leaves out. Its tables
are its own: an SQLite file beside authsvc's, or tables in authsvc's throwaway
PostgreSQL database, dropped with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

from sqlalchemy.engine import make_url

from bench.floor_app import DATABASE_ENV, prepare
from bench.load import Load
from bench.servers import flask_server
from bench.service import JSON_HEADERS, ME, REFRESH, TOKENS_PER_CONNECTION, Service

#: The floor of each endpoint of authsvc that has one, by its name in the table.
FLOOR_ME = f"floor {ME}"
FLOOR_REFRESH = f"floor {REFRESH}"
FLOORS = {ME: FLOOR_ME, REFRESH: FLOOR_REFRESH}


class FloorServer:
    """The floor beside ``service``: its tables on the same database server."""

    def __init__(self, service: Service, folder: Path, workers: int) -> None:
        self.service = service
        self.backend = service.backend
        url = make_url(service.settings["DATABASE_URL"])
        if url.get_backend_name() == "sqlite":
            database = str(folder / "floor.db")
        else:
            database = url.set(drivername="postgresql").render_as_string(False)
        self.tokens = prepare(database)
        self.server = flask_server(
            "floor",
            "bench.floor_app:create_app()",
            folder,
            workers,
            ready="/health",
            env={DATABASE_ENV: database},
        )

    def __enter__(self) -> Self:
        self.server.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.stop()

    @property
    def port(self) -> int:
        """Where the floor listens."""
        return self.server.port

    def load(self, endpoint: str, connections: int) -> Load:
        """The requests of a run: for ``GET /me`` the very ones sent to authsvc."""
        if endpoint == FLOOR_ME:
            return self.service.load(ME, connections)
        if endpoint == FLOOR_REFRESH:
            count = connections * TOKENS_PER_CONNECTION
            if len(self.tokens) < count:
                raise RuntimeError("the floor ran out of refresh tokens")
            taken, self.tokens = self.tokens[-count:], self.tokens[:-count]
            return Load("POST", "/refresh", JSON_HEADERS, refresh_tokens=tuple(taken))
        raise ValueError(f"no floor for {endpoint}")
