"""Time POST /password/forgot for known and for unknown addresses, interleaved.

Against a running authsvc (it starts nothing): registers COUNT accounts with
addresses of their own, then asks for a reset of each known address and of as
many unknown ones, alternating, each address once (so no per-address limit is
reached), and prints the median and 95th percentile of each kind. The server
must allow that many registrations and mail requests from one client, e.g.::

    AUTHSVC_REGISTRATION_RATE_LIMIT="100000 per hour" \\
    AUTHSVC_MAIL_CLIENT_RATE_LIMIT="100000 per hour" authsvc serve

    python scripts/forgot_timing.py --url http://127.0.0.1:8000 --count 200
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import urllib.error
import urllib.request
import uuid

PASSWORD = "correct horse battery staple"  # noqa: S105 (throwaway accounts)


def post(url: str, body: dict) -> tuple[int, float]:
    """POST ``body`` as JSON; the status and the seconds it took."""
    request = urllib.request.Request(  # noqa: S310 (see below)
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    started = time.perf_counter()
    try:
        # The URL is the operator's own server, given on the command line.
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    return status, time.perf_counter() - started


def summary(name: str, seconds: list[float]) -> str:
    ms = sorted(1000 * s for s in seconds)
    p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
    median = statistics.median(ms)
    return f"{name:8} n={len(ms):4}  median {median:7.2f} ms  p95 {p95:7.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--count", type=int, default=100)
    options = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    known = [f"known-{run}-{n}@example.com" for n in range(options.count)]
    for n, email in enumerate(known):
        body = {"username": f"t{run}{n}", "password": PASSWORD, "email": email}
        status, _ = post(f"{options.url}/users", body)
        if status != 201:
            raise SystemExit(f"registration answered {status}: raise its limit")
    timings: dict[str, list[float]] = {"known": [], "unknown": []}
    for n, email in enumerate(known):
        pair = [("known", email), ("unknown", f"nobody-{run}-{n}@example.com")]
        # Alternating which goes first, so neither always follows the other.
        for kind, address in pair if n % 2 == 0 else reversed(pair):
            status, seconds = post(f"{options.url}/password/forgot", {"email": address})
            if status != 202:
                raise SystemExit(f"forgot answered {status}: raise its limit")
            timings[kind].append(seconds)
    for kind, seconds in timings.items():
        print(summary(kind, seconds))


if __name__ == "__main__":
    main()
