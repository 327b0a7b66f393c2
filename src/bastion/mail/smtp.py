"""SMTPMailer: delivers messages to the SMTP server named by the ``smtp_*`` settings (stdlib smtplib)."""

from __future__ import annotations

import logging
import smtplib
import ssl

from bastion.mail.interface import Mailer, MailError, Message
from bastion.settings import Settings

logger = logging.getLogger("bastion.mail")

SMTP_TIMEOUT = 10.0
"""Seconds to wait for the server at each step: a hung server must not hold a worker forever."""


class SMTPMailer(Mailer):
    """One SMTP connection per message: TLS as ``smtp_tls`` says, login when ``smtp_username`` is set.

    Neither the password nor the message body is ever logged.
    """

    def __init__(self, settings: Settings, *, timeout: float = SMTP_TIMEOUT) -> None:
        self.host = settings.smtp_host
        self.port = settings.smtp_port
        self.tls = settings.smtp_tls
        self.username = settings.smtp_username
        self._password = settings.smtp_password
        self.sender = settings.mail_from
        self.timeout = timeout

    @property
    def _where(self) -> str:
        return f"SMTP server {self.host}:{self.port}"

    def _connect(self) -> smtplib.SMTP:
        context = ssl.create_default_context()
        if self.tls == "ssl":
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        if self.tls == "starttls":
            try:
                smtp.starttls(context=context)
            except BaseException:
                smtp.close()
                raise
        return smtp

    def send(self, message: Message) -> None:
        email = message.as_email(self.sender)
        try:
            with self._connect() as smtp:
                if self.username:
                    smtp.login(self.username, self._password)
                smtp.send_message(email)
        except smtplib.SMTPAuthenticationError as exc:
            raise MailError(
                f"{self._where} refused the login of {self.username!r} ({exc.smtp_code}): "
                "check BASTION_SMTP_USERNAME and BASTION_SMTP_PASSWORD"
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise MailError(
                f"{self._where} does not support a step Bastion needs ({exc}): check BASTION_SMTP_TLS "
                "(starttls needs STARTTLS; a login needs AUTH) or unset BASTION_SMTP_USERNAME"
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise MailError(
                f"{self._where} refused every recipient ({', '.join(exc.recipients)}): check the address"
            ) from None
        except smtplib.SMTPSenderRefused as exc:
            raise MailError(
                f"{self._where} refused the sender {exc.sender!r} ({exc.smtp_code}): "
                "set BASTION_MAIL_FROM to an address the server accepts"
            ) from None
        except smtplib.SMTPResponseException as exc:
            reply = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
            raise MailError(
                f"{self._where} answered {exc.smtp_code} {reply}: "
                "see the server's log"
            ) from None
        except smtplib.SMTPServerDisconnected as exc:
            raise MailError(
                f"{self._where} closed the connection ({exc or 'no reason given'}): check BASTION_SMTP_PORT "
                "and BASTION_SMTP_TLS (ssl is usually port 465, starttls 587)"
            ) from None
        except ssl.SSLError as exc:
            raise MailError(
                f"TLS with {self._where} failed ({exc.reason or exc}): check BASTION_SMTP_TLS "
                "(ssl is usually port 465, starttls 587) and the server's certificate"
            ) from None
        except smtplib.SMTPException as exc:
            raise MailError(f"{self._where} failed: {exc}") from None
        except TimeoutError:
            raise MailError(
                f"{self._where} did not answer within {self.timeout:g} s: check BASTION_SMTP_HOST, "
                "BASTION_SMTP_PORT and the firewall"
            ) from None
        except ConnectionRefusedError:
            raise MailError(
                f"{self._where} refused the connection: is the server running, and are BASTION_SMTP_HOST "
                "and BASTION_SMTP_PORT right?"
            ) from None
        except OSError as exc:
            raise MailError(
                f"cannot reach {self._where}: {exc.strerror or exc}; check BASTION_SMTP_HOST and BASTION_SMTP_PORT"
            ) from None
        logger.info("mail sent via %s to %s: %s", self._where, ", ".join(message.to), message.subject)
