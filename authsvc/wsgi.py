"""WSGI entry point for operators' own servers: ``gunicorn 'authsvc.wsgi:app'``."""

from __future__ import annotations

import sys

from . import create_app
from .config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    print(f"authsvc: configuration error: {exc}", file=sys.stderr)
    # gunicorn's "worker failed to boot" status: the arbiter stops, not loops.
    sys.exit(3)
