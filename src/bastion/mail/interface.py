"""The Mailer interface: plain-text messages, sent by SMTP or written to an outbox directory."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid


class MailError(Exception):
    """A message could not be sent; the text says what failed (host, port, step) and how to fix it."""


@dataclass(frozen=True)
class Message:
    """One plain-text email, before it gets a sender, a date and a Message-ID."""

    to: tuple[str, ...]
    """The recipients' addresses (at least one)."""

    subject: str
    """One line of text; CR and LF are refused (they would inject headers)."""

    body: str
    """Plain text. It may carry secrets (verification and reset links): never log it."""

    def __post_init__(self) -> None:
        if not self.to:
            raise ValueError("a Message needs at least one recipient")
        for text in (self.subject, *self.to):
            if "\r" in text or "\n" in text:
                raise ValueError(f"line break in a mail header value: {text!r}")

    def as_email(self, sender: str, *, now: datetime | None = None) -> EmailMessage:
        """The RFC 5322 message from ``sender``, with Date and Message-ID headers."""
        email = EmailMessage()
        email["From"] = sender
        email["To"] = ", ".join(self.to)
        email["Subject"] = self.subject
        email["Date"] = format_datetime(now or datetime.now(UTC))
        # make_msgid's default domain is socket.getfqdn(), a DNS lookup that can hang: use the sender's.
        domain = sender.rpartition("@")[2].strip("<> ") or "localhost"
        email["Message-ID"] = make_msgid(domain=domain)
        email.set_content(self.body)
        return email


class Mailer(abc.ABC):
    """Sends messages. ``send`` blocks: call it from a background task, not from a request."""

    @abc.abstractmethod
    def send(self, message: Message) -> None:
        """Deliver ``message``, or raise MailError saying what failed and how to fix it."""
