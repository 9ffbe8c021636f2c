"""The baseline: a Flask app with one route and nothing else.

Served by gunicorn with the settings ``authsvc serve`` uses, it is what the
service's throughput is divided by, so the ratio shows the service's own cost
rather than that of the machine, gunicorn or Flask.
"""

from __future__ import annotations

from flask import Flask

app = Flask(__name__)


@app.get("/")
def ok() -> dict[str, bool]:
    """A constant answer: no database, no hashing, no token."""
    return {"ok": True}
