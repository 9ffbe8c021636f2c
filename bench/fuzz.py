"""``python -m bench.fuzz``: Schemathesis' command line against ``authsvc serve``.

The test suite runs Schemathesis in-process on every operation; this runs its
command line the way an outsider would, over HTTP, with every check and every
phase, stateful included, once per backend: a fresh database, an administrator
made through the CLI, two workers. Requests carry a fresh administrator's token
(``bench/fuzz_hooks.py``); the exceptions to Schemathesis' checks are in
``bench/schemathesis.toml``, each with its reason.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from bench.databases import DEFAULT_POSTGRES_URL, postgres_database, sqlite_database
from bench.servers import ROOT, authsvc_server

BACKENDS = ("sqlite", "postgresql")
CONFIG = Path(__file__).with_name("schemathesis.toml")
ADMIN = "fuzz-admin"
#: High enough that no generated request is throttled: throttling has its own tests.
UNTHROTTLED = "1000000 per minute"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The options; anything after ``--`` goes to ``schemathesis run``."""
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__)
    parser.add_argument("--backend", choices=(*BACKENDS, "both"), default="both")
    parser.add_argument("--max-examples", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("extra", nargs="*", help="more options for schemathesis run")
    return parser.parse_args(argv)


def run(backend: str, args: argparse.Namespace, folder: Path) -> int:
    """One Schemathesis run against a new service on ``backend``; its exit code."""
    database: AbstractContextManager[str] = (
        sqlite_database(folder)
        if backend == "sqlite"
        else postgres_database(args.postgres_url)
    )
    password = secrets.token_urlsafe(24)
    introspection = secrets.token_urlsafe(32)
    with database as url:
        settings = {
            "DATABASE_URL": url,
            "INSTANCE_PATH": str(folder / "instance"),
            "SECRET_KEY": secrets.token_urlsafe(48),
            "ACCESS_TOKEN_TTL": "86400",
            "LOGIN_RATE_LIMIT": UNTHROTTLED,
            "REGISTRATION_RATE_LIMIT": UNTHROTTLED,
            "INTROSPECTION_SECRET": introspection,
        }
        env = {**os.environ, **{f"AUTHSVC_{k}": v for k, v in settings.items()}}
        authsvc = Path(sys.executable).parent / "authsvc"
        subprocess.run(  # noqa: S603 (our own argv)
            [authsvc, "db", "upgrade"], env=env, check=True, cwd=folder
        )
        subprocess.run(  # noqa: S603 (our own argv)
            [authsvc, "users", "create", ADMIN, "--role", "admin", "--password-stdin"],
            input=f"{password}\n",
            text=True,
            env=env,
            check=True,
            cwd=folder,
        )
        with authsvc_server(folder, 2, settings) as server:
            base = f"http://127.0.0.1:{server.port}"
            command = [
                Path(sys.executable).parent / "schemathesis",
                "--config-file",
                CONFIG,
                "run",
                f"{base}/swagger.json",
                "--checks=all",
                # Replaced by the hooks' version, which leaves bodiless 204s alone.
                "--exclude-checks=content_type_conformance",
                "--phases=examples,coverage,fuzzing,stateful",
                f"--max-examples={args.max_examples}",
                f"--seed={args.seed}",
                *args.extra,
            ]
            hooks_env = {
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "SCHEMATHESIS_HOOKS": "bench.fuzz_hooks",
                "FUZZ_ADDRESS": f"127.0.0.1:{server.port}",
                "FUZZ_ADMIN": ADMIN,
                "FUZZ_ADMIN_PASSWORD": password,
                "FUZZ_INTROSPECTION_SECRET": introspection,
            }
            print(f"fuzz: {backend}: {base}", flush=True)
            return subprocess.run(command, env=hooks_env).returncode  # noqa: S603


def main(argv: Sequence[str] | None = None) -> int:
    """Run on each chosen backend; non-zero when any run found a failure."""
    args = parse_args(argv)
    backends = BACKENDS if args.backend == "both" else (args.backend,)
    codes = {}
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix=f"authsvc-fuzz-{backend}-") as tmp:
            codes[backend] = run(backend, args, Path(tmp))
    for backend, code in codes.items():
        print(f"fuzz: {backend}: {'no failures' if code == 0 else 'FAILURES'}")
    return max(codes.values())


if __name__ == "__main__":
    sys.exit(main())
