"""Benchmarks of authsvc.

``python -m bench`` (from the repository, after ``pip install -e .[test]``)
serves a bare Flask app with one constant JSON route and authsvc itself, both
under gunicorn with the options ``authsvc serve`` uses (2 sync workers, no
access log), on free 127.0.0.1 ports. authsvc runs on a fresh SQLite database and,
when it answers, on a throwaway PostgreSQL database, each seeded with 1,000
accounts. Rounds of the bare route then GET /me, GET /auth/forward (the same
check, asked by a reverse proxy), POST /refresh and POST /login, alternately,
give the medians printed in a table: requests/s, p50 and p99, and throughput
as a fraction of the bare route's. Login latency is also given in units of one
argon2 verification with the service's parameters, at 8 connections and at 1
(where hashing does not queue).

The load comes from ``wrk`` when it is on PATH, else from a Python generator
(processes of threads, one connection per request, as gunicorn's sync workers
close each). Options: ``--rounds``, ``--duration``, ``--connections``,
``--backends sqlite,postgresql``, ``--generator``, ``--json FILE``; ``--smoke``
makes it a few seconds long.

``--floor`` also measures the floor (``bench/floor_app.py``): the same stack doing
GET /me's and POST /refresh's database work and signature and nothing of
authsvc, beside the bare route in the same way, so each ratio can be read
against the most this stack reaches on the machine.

``--seed-users 1000000`` is the scale mode: GET /me and POST /refresh at 1,000
accounts, then again after bulk-seeding up to a million accounts with a session
each, then the workers' memory around 100,000 GET /me.

``bench/prune.py`` times ``authsvc sessions prune`` on its own.
"""
