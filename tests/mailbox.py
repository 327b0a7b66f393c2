"""A real SMTP server for tests (aiosmtpd on 127.0.0.1, a free port) that keeps what it receives.

``smtp_server`` is a fixture (registered in tests/conftest.py): a server without login.
``running_mailbox(users={"name": "password"})`` starts one that requires a login (AUTH PLAIN or
LOGIN, allowed without TLS: mark such tests
``@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")``), for tests that need it.
"""

from __future__ import annotations

import contextlib
import email
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on (just now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Mailbox:
    """What the server received: parsed messages, their envelope recipients and the logins used."""

    host: str = "127.0.0.1"
    port: int = 0
    messages: list[EmailMessage] = field(default_factory=list)
    recipients: list[list[str]] = field(default_factory=list)
    """The envelope (RCPT TO) recipients of each message, in the order of ``messages``."""
    logins: list[str] = field(default_factory=list)
    """The user name of every successful login."""
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, to: str, subject_contains: str, timeout: float = 10) -> EmailMessage:
        """The first message to ``to`` whose subject contains ``subject_contains``, waiting for it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for message, rcpts in zip(self.messages, self.recipients, strict=True):
                    if to in rcpts and subject_contains in str(message["Subject"]):
                        return message
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(r, str(m["Subject"])) for m, r in zip(self.messages, self.recipients, strict=True)]
                    raise AssertionError(f"no message to {to!r} with {subject_contains!r} in {timeout} s; got {seen}")
                self._cond.wait(left)

    # -- aiosmtpd handler hooks --------------------------------------------------------------------

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        with self._cond:
            self.messages.append(parsed)
            self.recipients.append(list(envelope.rcpt_tos))
            self._cond.notify_all()
        return "250 Message accepted for delivery"


@contextlib.contextmanager
def running_mailbox(users: dict[str, str] | None = None) -> Iterator[Mailbox]:
    """An SMTP server on 127.0.0.1; with ``users``, a login (one of them) is required."""
    box = Mailbox(port=free_port())
    kwargs: dict[str, Any] = {}
    if users is not None:
        def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
            if isinstance(data, LoginPassword):
                name, password = data.login.decode(), data.password.decode()
                if users.get(name) == password:
                    box.logins.append(name)
                    return AuthResult(success=True)
            return AuthResult(success=False, handled=False)

        kwargs = {"authenticator": authenticate, "auth_required": True, "auth_require_tls": False}
    controller = Controller(box, hostname=box.host, port=box.port, **kwargs)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[Mailbox]:
    """A real SMTP server (no login) collecting what it receives: ``.host``, ``.port``,
    ``.messages`` and ``.wait_for(to, subject_contains)``."""
    with running_mailbox() as box:
        yield box
