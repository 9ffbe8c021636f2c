"""authsvc: a token-based JSON REST authentication service."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the service: settings first, then each part registers itself."""
    # The modules it wires are imported here, as in Flask's tutorial: importing the
    # package alone (for the companion, authsvc.resource) loads none of them.
    from . import (
        api,
        auth,
        cli,
        db,
        demo,
        edge,
        errors,
        keys,
        logs,
        mail_sender,
        metrics,
        migrations,
        passwords,
        sessions,
        throttle,
    )
    from .config import load_config

    settings = load_config(config)
    app = Flask(__name__, instance_path=settings["INSTANCE_PATH"])
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    app.config.update(settings)
    logs.init_app(app)
    metrics.init_app(app)
    db.init_app(app)
    migrations.init_app(app)
    keys.init_app(app)
    sessions.init_app(app)
    passwords.init_app(app)
    throttle.init_app(app)
    auth.init_app(app)
    errors.init_app(app)
    edge.init_app(app)
    mail_sender.init_app(app)
    api.init_app(app)
    demo.init_app(app)
    cli.init_app(app)
    return app
