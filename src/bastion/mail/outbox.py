"""OutboxMailer: writes each message as an ``.eml`` file into ``<data_dir>/outbox`` (no SMTP server)."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import tempfile
from datetime import UTC, datetime
from email import policy
from pathlib import Path

from bastion.mail.interface import Mailer, MailError, Message

logger = logging.getLogger("bastion.mail")


class OutboxMailer(Mailer):
    """Each message becomes one RFC 5322 file, written atomically (readers never see half a file).

    Bodies carry verification and reset links, so the directory and the files are private to the
    server's user (0700 / 0600), and the log line names recipients, subject and path, never the body.
    """

    def __init__(self, directory: Path, sender: str) -> None:
        self.directory = directory
        self.sender = sender

    def send(self, message: Message) -> None:
        now = datetime.now(UTC)
        data = message.as_email(self.sender, now=now).as_bytes(policy=policy.SMTP)
        name = f"{now:%Y%m%dT%H%M%S.%fZ}-{secrets.token_hex(4)}.eml"
        path = self.directory / name
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".eml")  # mode 0600
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            raise MailError(
                f"cannot write to the outbox {self.directory}: {exc.strerror or exc}; make it writable by the "
                "server's user, or set BASTION_SMTP_HOST to send mail by SMTP"
            ) from None
        logger.info("mail to %s: %s (written to %s)", ", ".join(message.to), message.subject, path)

