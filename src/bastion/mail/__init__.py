"""Email: the Mailer interface, an SMTP backend and an outbox directory backend (the default)."""

from __future__ import annotations

from bastion.mail.interface import Mailer, MailError, Message
from bastion.mail.outbox import OutboxMailer
from bastion.mail.smtp import SMTPMailer
from bastion.settings import Settings

__all__ = ["Mailer", "MailError", "Message", "OutboxMailer", "SMTPMailer", "make_mailer"]


def make_mailer(settings: Settings) -> Mailer:
    """SMTP when ``smtp_host`` is set; otherwise ``.eml`` files in ``settings.outbox_dir``."""
    if settings.smtp_host:
        return SMTPMailer(settings)
    return OutboxMailer(settings.outbox_dir, settings.mail_from)
