"""The sender (authsvc.mail_sender): its thread, `authsvc mail worker`, keyed hashes."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import SECRET
from helpers import PASSWORD
from live import clean_env
from smtp_catcher import Mailbox, code_of

from authsvc import create_app, mail_sender
from authsvc.migrations import upgrade
from authsvc.tokens import hash_opaque_token

BIN = Path(sys.executable).parent


def sender_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "authsvc-mail-sender"]


def test_building_an_app_starts_no_sender(app):
    assert sender_threads() == []


def test_the_sender_thread_sends_and_stops(make_app, tmp_path):
    box = Mailbox()
    box.start()
    try:
        app = make_app(MAIL_BACKEND="smtp", SMTP_URL=box.url, CLOCK=None)
        client = app.test_client()
        client.post(
            "/users",
            json={"username": "alice", "password": PASSWORD, "email": "a@example.com"},
        )
        thread = mail_sender.SenderThread(app, interval=0.05)
        thread.start()
        try:
            (message,) = box.wait_for(1)
        finally:
            thread.stop()
        assert not thread.is_alive()
        assert len(code_of(message)) == 6
    finally:
        box.stop()


def test_stop_in_process_stops_every_started_thread(app):
    thread = mail_sender.start_in_process(app)
    mail_sender.stop_in_process()
    assert not thread.is_alive()
    assert sender_threads() == []


def test_a_pass_that_meets_a_broken_database_is_logged_not_raised(make_app, caplog):
    app = make_app(DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert mail_sender.run_pass(app) == 0
    assert "mail sender: database unavailable" in caplog.text


def test_keyed_hashes_differ_from_plain_ones():
    key = b"k" * 32
    keyed = hash_opaque_token("123456", key)
    assert keyed != hash_opaque_token("123456")
    assert keyed != hash_opaque_token("123456", b"j" * 32)
    assert len(keyed) == 64


@pytest.mark.live
def test_mail_worker_sends_until_sigterm(tmp_path):
    url = f"sqlite:///{tmp_path / 'authsvc.db'}"
    box = Mailbox()
    box.start()
    settings = {
        "DATABASE_URL": url,
        "SECRET_KEY": SECRET,
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "MAIL_BACKEND": "smtp",
        "SMTP_URL": box.url,
    }
    app = create_app(settings)
    upgrade(app)
    client = app.test_client()
    response = client.post(
        "/users",
        json={"username": "alice", "password": PASSWORD, "email": "a@example.com"},
    )
    assert response.status_code == 201
    app.extensions["authsvc.db"].dispose()
    env = clean_env(**{name: value for name, value in settings.items()})
    worker = subprocess.Popen(
        [str(BIN / "authsvc"), "mail", "worker", "--interval", "0.2"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        (message,) = box.wait_for(1)
        assert message["To"] == "a@example.com"
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
        box.stop()
    assert worker.returncode == 0, output
    assert "mail worker: stopped" in output
    assert "Traceback" not in output
