"""The library internals authsvc relies on are still where it expects them.

``bearer.BearerLoginManager`` overrides private methods of Flask-Login, and
``server.ProblemWorker`` builds on private parts of gunicorn's threaded worker.
Both libraries are pinned below their next major version in ``pyproject.toml``;
when that pin is raised, these tests say at once what moved.
"""

from __future__ import annotations

import inspect

import pytest
from flask_login import LoginManager, utils
from gunicorn import glogging, util
from gunicorn.http.unreader import Unreader
from gunicorn.workers import base
from gunicorn.workers.gthread import TConn, ThreadWorker

from authsvc.bearer import BearerLoginManager
from authsvc.server import ProblemWorker


def parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("_load_user", ["self"]),
        ("_update_remember_cookie", ["self", "response"]),
        ("_update_request_context_with_user", ["self", "user"]),
    ],
)
def test_flask_login_has_the_methods_the_bearer_manager_uses(name, expected):
    assert parameters(getattr(LoginManager, name)) == expected


def test_flask_login_loads_the_user_through_the_overridden_method():
    # current_user is found by calling the manager's _load_user, which is ours.
    assert "login_manager._load_user()" in inspect.getsource(utils._get_user)
    assert BearerLoginManager._load_user is not LoginManager._load_user
    # The request loader is kept where the override reads it.
    manager = LoginManager()
    assert manager._request_callback is None
    manager.request_loader(len)
    assert manager._request_callback is len


def test_flask_login_clears_the_remember_cookie_through_the_overridden_method():
    source = inspect.getsource(LoginManager.init_app)
    assert "after_request(self._update_remember_cookie)" in source


def test_gunicorn_answers_malformed_requests_through_write_error():
    # ProblemWorker swaps util.write_error for one that answers in problem+json.
    assert parameters(util.write_error) == ["sock", "status_int", "reason", "mesg"]
    assert "util.write_error(client, status_int, reason, mesg)" in inspect.getsource(
        base.Worker.handle_error
    )
    assert parameters(util.write_nonblock)[:2] == ["sock", "data"]


def test_gunicorn_threaded_worker_has_what_the_problem_worker_builds_on():
    assert issubclass(ProblemWorker, ThreadWorker)
    assert parameters(ThreadWorker.accept)[-1] == "listener"
    assert parameters(ThreadWorker.enqueue_req) == ["self", "conn"]
    assert parameters(ThreadWorker.murder_keepalived)[0] == "self"
    init = inspect.getsource(ThreadWorker.__init__)
    assert "self.nr_conns = 0" in init
    assert "self.poller" in init
    # New connections reach the overridden accept through the poller.
    assert "EVENT_READ, self.accept" in inspect.getsource(ThreadWorker)
    assert parameters(TConn.__init__) == ["self", "cfg", "sock", "client", "server"]
    assert parameters(TConn.init) == ["self"]
    assert "self.parser = " in inspect.getsource(TConn.init)
    assert parameters(Unreader.unread) == ["self", "data"]


def test_gunicorn_logger_keeps_its_two_logs():
    assert parameters(glogging.Logger.setup) == ["self", "cfg"]
    source = inspect.getsource(glogging.Logger.__init__)
    assert "self.error_log" in source
    assert "self.access_log" in source
