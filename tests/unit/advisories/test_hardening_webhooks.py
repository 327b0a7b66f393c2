"""Hardening of webhook calls (no database): a receiver that answers a byte at a time, each within
the per-read timeout, cannot hold a call (and the task runner that sends everyone's mail) past the
call's whole deadline; redirects are answers, not new places to send the alert; the URL rules."""

from __future__ import annotations

import socket
from typing import Any
import threading
import time

import pytest

from bastion.advisories import alerts
from bastion.advisories.applications import check_webhook_url
from bastion.errors import ServiceError


def _trickler(first: bytes, then: bytes, every: float) -> tuple[socket.socket, str, threading.Event]:
    """A receiver that sends ``first`` then ``then`` a byte at a time, every ``every`` seconds."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.recv(65536)
                    conn.sendall(first)
                    while not stop.is_set():
                        conn.sendall(then)
                        time.sleep(every)
                except OSError:
                    continue

    threading.Thread(target=serve, daemon=True).start()
    return server, f"http://127.0.0.1:{server.getsockname()[1]}/hook", stop


def test_a_trickling_receiver_is_cut_off_at_the_deadline() -> None:
    server, url, stop = _trickler(b"HTTP/1.1 200 OK\r\nX-Slow: ", b"a", 0.2)
    outcome: list[str] = []
    started = time.monotonic()
    caller = threading.Thread(target=lambda: outcome.append(
        alerts.post_signed(url, b"{}", "s3cret", timeout=1.0, deadline=1.0, delays=(0.0,))), daemon=True)
    caller.start()
    caller.join(10)
    took = time.monotonic() - started
    stop.set()
    server.close()
    assert not caller.is_alive(), "the call was still held by the receiver after 10 s"
    assert took < 4, took
    assert outcome and outcome[0].startswith("error:") and outcome[0].endswith("(2 tries)"), outcome
    assert alerts._gave_up(outcome[0])  # the application's later calls are not tried


def test_a_redirect_is_not_followed() -> None:
    server, url, stop = _trickler(b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/x\r\nContent-Length: 0\r\n\r\n",
                                  b"", 0.05)
    try:
        assert alerts.post_signed(url, b"{}", "s3cret", delays=()) == \
            "error: HTTP 302 (redirects are not followed) (1 try)"
    finally:
        stop.set()
        server.close()


@pytest.mark.parametrize(("url", "message"), [
    ("http://example.org/hook", "must use https"),
    ("http://127.0.0.1.example.org/hook", "must use https"),
    ("http://localhost@example.org/hook", "must use https"),
    ("https://user:pw@example.org/hook", "must not carry a user name or password"),
    ("ftp://example.org/hook", "give an https:// URL"),
    ("javascript:alert(1)", "give an https:// URL"),
    ("https://example.org:99999/hook", "invalid webhook URL"),
])
def test_webhook_url_rules(url: str, message: str) -> None:
    with pytest.raises(ServiceError) as refused:
        check_webhook_url(url)
    assert message in refused.value.message


def test_a_failed_call_logs_no_secret_part_of_the_url(bastion: Any, caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Chat-style webhook URLs carry their credential in the path or query: the log names the host."""
    from sqlalchemy import select

    from bastion.advisories.applications import register
    from bastion.advisories.models import Application
    from bastion.authz import OPERATOR
    from tests.conftest import make_user
    from tests.mailbox import free_port

    make_user(bastion, "carol")
    url = f"http://127.0.0.1:{free_port()}/services/T000/B000/XyZsEcReTpAtH?token=QuErYsEcReT"
    with bastion.db.write() as session:
        register(session, bastion, "chat", "flask\n", principal=OPERATOR, owner="carol", webhook_url=url)
        application_id = session.execute(select(Application.id)).scalar_one()
    monkeypatch.setattr(alerts, "RETRY_DELAYS", (0.0,))
    with caplog.at_level("WARNING", logger="bastion.alerts"):
        outcomes = alerts.call_webhooks(bastion, [alerts.WebhookCall(application_id, ("PYSEC-1",), b"{}")])
    assert outcomes[0].startswith("error: ConnectionRefusedError")
    assert "webhook of application chat (http://127.0.0.1:" in caplog.text
    assert "XyZsEcReTpAtH" not in caplog.text and "QuErYsEcReT" not in caplog.text
