"""Mail: SMTP delivery to a real server, the outbox, what gets logged, and send_mail in the background."""

from __future__ import annotations

import email
import logging
import stat
from email import policy
from pathlib import Path

import pytest

from bastion.mail import MailError, Message, OutboxMailer, SMTPMailer, make_mailer
from bastion.services import Bastion
from bastion.settings import load_settings
from tests.mailbox import Mailbox, free_port, running_mailbox

SECRET_BODY = "Open https://index.example/verify/SECRET-TOKEN-123 to verify."
PASSWORD = "smtp-pass-word-456"


def settings_for(tmp_path: Path, **overrides: object):  # type: ignore[no-untyped-def]
    return load_settings(tmp_path / "data", mail_from="Bastion <index@bastion.example>", **overrides)


def bastion_log(caplog: pytest.LogCaptureFixture) -> str:
    """What Bastion's own loggers wrote (aiosmtpd's ``mail.log`` echoes whole sessions at DEBUG)."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("bastion"))


def message(to: str = "alice@example.org", subject: str = "Verify your email address") -> Message:
    return Message(to=(to,), subject=subject, body=SECRET_BODY)


def test_a_message_refuses_header_injection_and_no_recipient() -> None:
    with pytest.raises(ValueError, match="line break"):
        Message(to=("a@example.org",), subject="hi\r\nBcc: evil@example.org", body="")
    with pytest.raises(ValueError, match="line break"):
        Message(to=("a@example.org\nBcc: evil@example.org",), subject="hi", body="")
    with pytest.raises(ValueError, match="recipient"):
        Message(to=(), subject="hi", body="")


def test_make_mailer_picks_smtp_only_when_a_host_is_set(tmp_path: Path) -> None:
    outbox = make_mailer(settings_for(tmp_path))
    assert isinstance(outbox, OutboxMailer)
    assert outbox.directory == tmp_path / "data" / "outbox"
    assert isinstance(make_mailer(settings_for(tmp_path, smtp_host="mail.example")), SMTPMailer)


def test_smtp_delivers_without_login(tmp_path: Path, smtp_server: Mailbox, caplog: pytest.LogCaptureFixture) -> None:
    mailer = SMTPMailer(settings_for(tmp_path, smtp_host=smtp_server.host, smtp_port=smtp_server.port))
    with caplog.at_level(logging.DEBUG):
        mailer.send(Message(to=("alice@example.org", "bob@example.org"), subject="Hello", body=SECRET_BODY))
    received = smtp_server.wait_for("bob@example.org", "Hello")
    assert smtp_server.recipients == [["alice@example.org", "bob@example.org"]]
    assert received["From"] == "Bastion <index@bastion.example>"
    assert received["To"] == "alice@example.org, bob@example.org"
    assert received["Date"] and received["Message-ID"].endswith("@bastion.example>")
    assert received.get_content().strip() == SECRET_BODY
    assert smtp_server.logins == []
    assert "alice@example.org" in bastion_log(caplog) and "Hello" in bastion_log(caplog)
    assert "SECRET-TOKEN" not in bastion_log(caplog)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # loopback test server
def test_smtp_logs_in_when_a_username_is_set(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with running_mailbox(users={"index": PASSWORD}) as box:
        good = SMTPMailer(settings_for(tmp_path, smtp_host=box.host, smtp_port=box.port,
                                       smtp_username="index", smtp_password=PASSWORD))
        with caplog.at_level(logging.DEBUG):
            good.send(message())
        assert box.wait_for("alice@example.org", "Verify").get_content().strip() == SECRET_BODY
        assert box.logins == ["index"]

        anonymous = SMTPMailer(settings_for(tmp_path, smtp_host=box.host, smtp_port=box.port))
        with pytest.raises(MailError, match=f"127.0.0.1:{box.port}"):
            anonymous.send(message())  # the server requires a login

        wrong = SMTPMailer(settings_for(tmp_path, smtp_host=box.host, smtp_port=box.port,
                                        smtp_username="index", smtp_password="not-" + PASSWORD))
        with pytest.raises(MailError) as refused:
            wrong.send(message())
        assert f"127.0.0.1:{box.port}" in str(refused.value)
        assert "BASTION_SMTP_PASSWORD" in str(refused.value)
        assert PASSWORD not in str(refused.value)
        assert refused.value.__cause__ is None and refused.value.__suppress_context__
    assert len(box.messages) == 1
    assert "alice@example.org" in bastion_log(caplog)
    assert PASSWORD not in bastion_log(caplog) and "SECRET-TOKEN" not in bastion_log(caplog)


def test_connection_refused_names_host_and_port(tmp_path: Path) -> None:
    port = free_port()
    mailer = SMTPMailer(settings_for(tmp_path, smtp_host="127.0.0.1", smtp_port=port))
    with pytest.raises(MailError, match=rf"127\.0\.0\.1:{port} refused the connection.*BASTION_SMTP_PORT"):
        mailer.send(message())


def test_starttls_against_a_server_without_it_says_which_setting(tmp_path: Path, smtp_server: Mailbox) -> None:
    mailer = SMTPMailer(settings_for(tmp_path, smtp_host=smtp_server.host, smtp_port=smtp_server.port,
                                     smtp_tls="starttls"))
    with pytest.raises(MailError, match=rf"127\.0\.0\.1:{smtp_server.port}.*BASTION_SMTP_TLS"):
        mailer.send(message())
    assert smtp_server.messages == []


def test_ssl_against_a_plain_server_is_a_mail_error(tmp_path: Path, smtp_server: Mailbox) -> None:
    mailer = SMTPMailer(settings_for(tmp_path, smtp_host=smtp_server.host, smtp_port=smtp_server.port,
                                     smtp_tls="ssl"), timeout=3)
    with pytest.raises(MailError, match=rf"127\.0\.0\.1:{smtp_server.port}"):
        mailer.send(message())


def test_outbox_writes_one_parseable_private_file_and_logs_no_body(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = tmp_path / "data" / "outbox"
    mailer = OutboxMailer(outbox, "Bastion <index@bastion.example>")
    with caplog.at_level(logging.DEBUG, logger="bastion.mail"):
        mailer.send(message())
        mailer.send(message(to="bob@example.org", subject="Your password was changed"))
    files = sorted(outbox.iterdir())
    assert [f.suffix for f in files] == [".eml", ".eml"]  # no temp files left behind
    assert stat.S_IMODE(outbox.stat().st_mode) == 0o700
    parsed = {}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        raw = path.read_bytes()
        assert b"\r\n" in raw  # RFC 5322 line endings
        mail = email.message_from_bytes(raw, policy=policy.default)
        assert mail["From"] == "Bastion <index@bastion.example>"
        assert mail["Date"] and mail["Message-ID"]
        parsed[str(mail["To"])] = mail
    assert set(parsed) == {"alice@example.org", "bob@example.org"}
    assert parsed["alice@example.org"]["Subject"] == "Verify your email address"
    assert parsed["alice@example.org"].get_content().strip() == SECRET_BODY

    lines = [r.getMessage() for r in caplog.records if r.name == "bastion.mail"]
    assert len(lines) == 2
    assert "alice@example.org" in lines[0] and "Verify your email address" in lines[0]
    assert any(str(path) in lines[0] for path in files)
    assert "SECRET-TOKEN" not in bastion_log(caplog) and "verify/" not in bastion_log(caplog)


def test_outbox_that_cannot_be_written_is_a_mail_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(MailError, match="outbox"):
        OutboxMailer(blocker / "outbox", "index@bastion.example").send(message())


def test_send_mail_runs_in_the_background_once_started(tmp_path: Path, smtp_server: Mailbox) -> None:
    # Migrated: starting the background work opens the TUF repository in the database.
    services = Bastion(settings_for(tmp_path, smtp_host=smtp_server.host, smtp_port=smtp_server.port))
    try:
        services.send_mail([message(), message(to="bob@example.org")])
        assert not services.tasks.drain(timeout=0.2)  # Bastion() does not start the runner
        assert smtp_server.messages == []
        services.start_background()
        assert services.tasks.drain(timeout=10)
        smtp_server.wait_for("alice@example.org", "Verify")
        smtp_server.wait_for("bob@example.org", "Verify")
        assert len(smtp_server.messages) == 2  # one message per Message, each to its own recipient
        services.send_mail([message(to="carol@example.org")])
        services.stop_background()  # finishes the queued send first
        assert smtp_server.wait_for("carol@example.org", "Verify", timeout=0)
        services.stop_background()  # idempotent, and close() calls it again
    finally:
        services.close()


def test_send_mail_failure_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    services = Bastion(settings_for(tmp_path, smtp_host="127.0.0.1", smtp_port=port))
    ran: list[str] = []
    try:
        services.start_background()
        with caplog.at_level(logging.DEBUG):
            services.send_mail([message()])
            services.tasks.submit("after", ran.append, "still working")
            assert services.tasks.drain(timeout=10)
    finally:
        services.close()
    assert ran == ["still working"]
    errors = [r for r in caplog.records if r.name == "bastion.mail" and r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "alice@example.org" in errors[0].getMessage()
    assert f"127.0.0.1:{port} refused the connection" in errors[0].getMessage()
    assert not [r for r in caplog.records if r.name == "bastion.tasks"]  # handled, not a task failure
    assert "SECRET-TOKEN" not in bastion_log(caplog)
