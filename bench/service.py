"""authsvc under test on one database: migrated and seeded from here, then served
by ``authsvc serve`` with the settings the benchmark needs.

The harness builds the service's own app on the same database and secret, so it
can seed rows and sign access tokens exactly as the service would.
"""

from __future__ import annotations

import json
import logging
import secrets
import statistics
from pathlib import Path
from typing import Self

from sqlalchemy import text

from authsvc import clock, create_app
from authsvc.keys import get_keys
from authsvc.migrations import upgrade
from bench.load import Load
from bench.seed import Progress, Seeder, verify_seconds
from bench.servers import Server, authsvc_server

ME = "GET /me"
REFRESH = "POST /refresh"
LOGIN = "POST /login"
FORWARD = "GET /auth/forward"
#: The bare route, measured beside each endpoint.
BARE = "bare GET /"
BARE_LOAD = Load("GET", "/")
#: Accounts before any measurement, the bench user's included: the baseline size.
BASE_ACCOUNTS = 1000
#: The account that logs in; the seeded ones share its password.
BENCH_USER = "bench"
#: Unspent refresh tokens handed to each connection of a refresh run; one is
#: enough while every answer is a success, the rest replace failed ones.
TOKENS_PER_CONNECTION = 4
#: Accounts whose identity and token are kept after a large seeding.
KEPT_AFTER_GROWTH = 20_000
#: Never throttle: every request comes from 127.0.0.1.
UNTHROTTLED = "1000000 per minute"
JSON_HEADERS = (("Content-Type", "application/json"),)


class Service:
    """authsvc on ``database_url`` with ``BASE_ACCOUNTS`` accounts, each logged in."""

    def __init__(
        self,
        backend: str,
        database_url: str,
        folder: Path,
        workers: int,
        algorithm: str,
    ) -> None:
        self.backend = backend
        folder.mkdir(parents=True, exist_ok=True)
        self.settings = {
            "DATABASE_URL": database_url,
            "SECRET_KEY": secrets.token_urlsafe(36),
            "INSTANCE_PATH": str(folder),
            "LOGIN_RATE_LIMIT": UNTHROTTLED,
            "REGISTRATION_RATE_LIMIT": UNTHROTTLED,
            "JWT_ALGORITHM": algorithm,
        }
        # Seeding a million rows must not meet the per-statement limit of requests.
        self.app = create_app({**self.settings, "DB_STATEMENT_TIMEOUT": "0"})
        upgrade(self.app)
        # The harness's own writes are not events of the service under test.
        logging.getLogger("authsvc.audit").setLevel(logging.WARNING)
        with self.app.app_context():
            get_keys().states(clock.now())  # the signing key, before any worker
        self.seeder = Seeder(self.app, secrets.token_urlsafe(18))
        self.seeder.bench_user(BENCH_USER)
        self.seeded = self.seeder.seed_accounts(BASE_ACCOUNTS - 1)
        self.server: Server = authsvc_server(folder, workers, self.settings)
        self._verify_seconds: list[float] = []

    def __enter__(self) -> Self:
        self.server.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.stop()
        self.app.extensions["authsvc.db"].dispose()

    @property
    def port(self) -> int:
        """Where the service listens."""
        return self.server.port

    def accounts(self) -> int:
        """Accounts seeded so far, the bench user included."""
        return self.seeder.accounts + 1

    def load(self, endpoint: str, connections: int) -> Load:
        """The requests of one run of ``endpoint`` over ``connections`` connections."""
        if endpoint == ME:
            identity = secrets.choice(self.seeded.identities)
            token = self.seeder.access_token(identity)
            return Load("GET", "/me", (("Authorization", f"Bearer {token}"),))
        if endpoint == FORWARD:
            # The same check as GET /me, asked by a reverse proxy.
            identity = secrets.choice(self.seeded.identities)
            token = self.seeder.access_token(identity)
            return Load("GET", "/auth/forward", (("Authorization", f"Bearer {token}"),))
        if endpoint == REFRESH:
            tokens = self._take(connections * TOKENS_PER_CONNECTION)
            return Load("POST", "/refresh", JSON_HEADERS, refresh_tokens=tokens)
        if endpoint == LOGIN:
            self.time_verification()
            body = {"username": BENCH_USER, "password": self.seeder.password}
            return Load("POST", "/login", JSON_HEADERS, json.dumps(body))
        raise ValueError(f"unknown endpoint {endpoint}")

    def _take(self, count: int) -> tuple[str, ...]:
        """``count`` refresh tokens never presented; more sessions when short."""
        tokens = self.seeded.tokens
        if len(tokens) < count:
            tokens += self.seeder.seed_sessions(self.seeded.identities, count)
        taken, self.seeded.tokens = tokens[-count:], tokens[:-count]
        return tuple(taken)

    def grow(self, accounts: int, progress: Progress) -> None:
        """Seed accounts up to ``accounts``; later runs use the new sessions."""
        count = accounts - self.accounts()
        keep_every = max(1, count // KEPT_AFTER_GROWTH)
        self.seeded = self.seeder.seed_accounts(
            count, keep_every=keep_every, progress=progress
        )
        if self.backend == "postgresql":
            # What autovacuum does on its own soon after a bulk load; done now so
            # the measurement does not straddle it.
            with self.app.extensions["authsvc.db"].engine.connect() as connection:
                connection.execute(text("ANALYZE"))
                connection.commit()

    def time_verification(self) -> None:
        """Time argon2 verifications now, right before a run of logins.

        The machine's speed drifts over minutes; timed beside each login run, the
        hash that login p50 is divided by is the hash of the same moments.
        """
        self._verify_seconds.append(verify_seconds(self.app, self.seeder.password, 5))

    def verify_ms(self) -> float:
        """One argon2 verification with the service's parameters, in ms.

        The median of those timed beside the login runs, else timed now.
        """
        if not self._verify_seconds:
            self.time_verification()
        return statistics.median(self._verify_seconds) * 1000

    def argon2(self) -> str:
        """The service's argon2 parameters, for the report."""
        config = self.app.config
        return (
            f"argon2id t={config['ARGON2_TIME_COST']} "
            f"m={config['ARGON2_MEMORY_COST']} KiB p={config['ARGON2_PARALLELISM']}"
        )

    def problems(self) -> list[str]:
        """Lines of the service's output that point at a fault."""
        needles = ("Traceback", "ERROR", "CRITICAL", "WORKER TIMEOUT", "locked")
        with self.server.log.open(errors="replace") as output:
            return [line.rstrip() for line in output if any(n in line for n in needles)]
