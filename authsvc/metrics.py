"""Prometheus metrics, served at ``GET /metrics`` in the text exposition format.

Requests are counted and timed per route (the URL rule, never the raw path, so
ids in paths do not make new series), method and status. Logins, refreshes and
refresh reuse are counted from the audit trail, whose events :func:`count_event`
subscribes to. Live sessions are counted by the database at each scrape.

Under gunicorn each worker is its own process. With ``PROMETHEUS_MULTIPROC_DIR``
set (``authsvc serve`` sets it before it builds any app: prometheus_client picks
in-process or file-backed values once, on import) every worker keeps its counts in
files there and a scrape, whichever worker answers it, adds up those of every
worker, dead ones included. The live-session gauge is not kept by any worker, so
it is never summed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from flask import Flask, Response, current_app, g, has_app_context, request
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from . import audit, clock
from .bearer import check_static_bearer
from .config import ConfigError
from .db import get_session
from .models import AuthSession

log = logging.getLogger(__name__)

EXTENSION = "authsvc.metrics"
#: The folder that makes prometheus_client count across processes.
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Prometheus text exposition format 0.0.4, which every scraper reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: The ``route`` of a request no URL rule matched (404, 405): one series for all.
UNMATCHED_ROUTE = "unmatched"
#: Methods counted by name; anything else a client makes up is ``other``.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
REQUEST_LABELS = ("route", "method", "status")


@dataclass
class Metrics:
    """One app's instruments and the registry a scrape reads."""

    requests: Counter
    latency: Histogram
    logins: Counter
    refreshes: Counter
    reuse: Counter
    mail: Counter
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    #: The counter, labelled if need be, each counted audit event adds one to.
    events: dict[str, Counter] = field(default_factory=dict)
    #: The request counter and histogram of each label set, looked up once.
    _per_request: dict[tuple[str, str, str], tuple[Counter, Histogram]] = field(
        default_factory=dict
    )

    def request_instruments(
        self, labels: tuple[str, str, str]
    ) -> tuple[Counter, Histogram]:
        """The counter and histogram of requests with ``labels``."""
        found = self._per_request.get(labels)
        if found is None:
            found = self.requests.labels(*labels), self.latency.labels(*labels)
            self._per_request[labels] = found
        return found


def make_metrics() -> Metrics:
    """New instruments, registered nowhere yet: each app has its own."""
    metrics = Metrics(
        requests=Counter(
            "authsvc_http_requests",
            "HTTP requests answered, by URL rule, method and status.",
            REQUEST_LABELS,
            registry=None,
        ),
        latency=Histogram(
            "authsvc_http_request_duration_seconds",
            "Time to answer an HTTP request, by URL rule, method and status.",
            REQUEST_LABELS,
            registry=None,
        ),
        logins=Counter(
            "authsvc_logins",
            "Login attempts that were checked, by outcome (success or failure).",
            ["outcome"],
            registry=None,
        ),
        refreshes=Counter(
            "authsvc_refreshes",
            "Refresh tokens rotated.",
            registry=None,
        ),
        reuse=Counter(
            "authsvc_refresh_reuse_detections",
            "Spent refresh tokens presented after the grace window; each ends "
            "its session.",
            registry=None,
        ),
        mail=Counter(
            "authsvc_mail_messages",
            "Queued messages sent, or given up on after retrying, by outcome.",
            ["outcome"],
            registry=None,
        ),
    )
    # Labelled once, here, so rate() has a zero to begin from.
    metrics.events = {
        "login_succeeded": metrics.logins.labels(outcome="success"),
        "login_failed": metrics.logins.labels(outcome="failure"),
        "refreshed": metrics.refreshes,
        "refresh_reuse_detected": metrics.reuse,
        "mail_sent": metrics.mail.labels(outcome="sent"),
        "mail_failed": metrics.mail.labels(outcome="failed"),
    }
    return metrics


class LiveSessionsCollector:
    """``authsvc_active_sessions``: counted by the database at each scrape."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Count the sessions neither revoked nor expired, with one query."""
        try:
            count = get_session().scalar(
                select(func.count())
                .select_from(AuthSession)
                .where(
                    AuthSession.revoked_at.is_(None),
                    AuthSession.expires_at > clock.now(),
                )
            )
        except SQLAlchemyError as exc:
            # The other metrics still tell something; the gauge is left out.
            log.warning("active sessions not counted: %s", type(exc).__name__)
            return
        gauge = GaugeMetricFamily(
            "authsvc_active_sessions", "Sessions neither revoked nor expired."
        )
        gauge.add_metric([], count or 0)
        yield gauge


def count_event(event: str, _fields: Mapping[str, object]) -> None:
    """Count an audit event that has a metric; the audit trail calls this."""
    if not has_app_context():
        return
    metrics: Metrics | None = current_app.extensions.get(EXTENSION)
    counter = metrics.events.get(event) if metrics is not None else None
    if counter is not None:
        counter.inc()


def start_timer() -> None:
    """Note when the request began."""
    g.metrics_started = time.perf_counter()


def observe_request(response: Response) -> Response:
    """Count and time the request under its URL rule, method and status."""
    started = g.pop("metrics_started", None)
    if started is None:
        return response
    rule = request.url_rule
    labels = (
        rule.rule if rule is not None else UNMATCHED_ROUTE,
        request.method if request.method in METHODS else "other",
        str(response.status_code),
    )
    metrics: Metrics = current_app.extensions[EXTENSION]
    counter, histogram = metrics.request_instruments(labels)
    counter.inc()
    histogram.observe(time.perf_counter() - started)
    return response


def metrics_endpoint() -> Response:
    """``GET /metrics``: every metric, in the Prometheus text format."""
    token = current_app.config["METRICS_TOKEN"]
    if token:
        check_static_bearer(token, "metrics")
    metrics: Metrics = current_app.extensions[EXTENSION]
    return current_app.response_class(
        generate_latest(metrics.registry), content_type=CONTENT_TYPE
    )


def init_app(app: Flask) -> None:
    """Count and time every request, and serve ``GET /metrics``."""
    # prometheus_client goes by the variable's presence, so an empty one counts.
    folder = os.environ.get(MULTIPROCESS_ENV)
    if folder is not None and not os.path.isdir(folder):
        raise ConfigError(f"{MULTIPROCESS_ENV} is not a directory: {folder!r}")
    metrics = make_metrics()
    if folder is not None:
        # Every worker's files, this one's included; the instruments write them.
        multiprocess.MultiProcessCollector(metrics.registry, path=folder)
    else:
        for instrument in (
            metrics.requests,
            metrics.latency,
            metrics.logins,
            metrics.refreshes,
            metrics.reuse,
            metrics.mail,
        ):
            metrics.registry.register(instrument)
    metrics.registry.register(LiveSessionsCollector())
    app.extensions[EXTENSION] = metrics
    audit.subscribe(count_event)
    app.before_request(start_timer)
    app.after_request(observe_request)
    app.add_url_rule("/metrics", "metrics", metrics_endpoint, methods=["GET"])
