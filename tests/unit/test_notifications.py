"""Security notifications: who gets each message, and what it says (built, not sent)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bastion.accounts import notifications
from bastion.accounts.models import User
from bastion.mail import Message
from bastion.packaging.models import Project, Role
from bastion.services import Bastion
from tests.conftest import make_user

WHEN = datetime(2031, 4, 5, 6, 7, 8, tzinfo=UTC)
WHEN_TEXT = "2031-04-05 06:07:08 UTC"


@dataclass(frozen=True)
class Cast:
    demo: int
    other: int
    lonely: int
    ids: dict[str, int]


def _project(session, name: str) -> int:  # type: ignore[no-untyped-def]
    project = Project(name=name, normalized_name=name, ultranormalized_name=name)
    session.add(project)
    session.flush()
    return project.id


@pytest.fixture
def cast(bastion: Bastion) -> Cast:
    """demo: alice owner, bob maintainer, dave owner (inactive), alias (bob's address, other case)
    maintainer; other: carol owner, bob owner; lonely: erin owner. mallory has no role."""
    for name in ("alice", "bob", "carol", "dave", "erin", "mallory"):
        make_user(bastion, name)
    with bastion.db.write() as session:
        session.add(User(username="alias", username_key="alias", email="BOB@example.org", password_hash="x"))
        session.flush()
        users = {u.username: u for u in session.execute(select(User)).scalars()}
        users["dave"].is_active = False
        demo, other, lonely = _project(session, "demo"), _project(session, "other"), _project(session, "lonely")
        for project_id, name, role in [
            (demo, "alice", "owner"), (demo, "bob", "maintainer"), (demo, "dave", "owner"),
            (demo, "alias", "maintainer"), (other, "carol", "owner"), (other, "bob", "owner"),
            (lonely, "erin", "owner"),
        ]:
            session.add(Role(project_id=project_id, user_id=users[name].id, role=role))
        return Cast(demo, other, lonely, {name: user.id for name, user in users.items()})


def by_recipient(messages: list[Message]) -> dict[str, Message]:
    """One message per recipient, each to exactly one address (co-maintainers' addresses stay private)."""
    assert all(len(m.to) == 1 for m in messages)
    recipients = [m.to[0] for m in messages]
    assert len({r.lower() for r in recipients}) == len(recipients), f"duplicate recipients: {recipients}"
    return {m.to[0].lower(): m for m in messages}


def assert_explains(message: Message, *facts: str) -> None:
    assert message.subject.startswith("[Bastion] ")
    assert WHEN_TEXT in message.body
    assert "If" in message.body and "not" in message.body  # what to do if it was not expected
    for fact in facts:
        assert fact in message.body, f"{fact!r} missing from:\n{message.body}"


def test_release_file_uploaded_goes_to_active_owners_and_maintainers_once(bastion: Bastion, cast: Cast) -> None:
    with bastion.db.read() as session:
        messages = notifications.release_files_uploaded(
            session, cast.demo, [("demo-1.0-py3-none-any.whl", "1.0", WHEN)], "alice"
        )
    mail = by_recipient(messages)
    assert set(mail) == {"alice@example.org", "bob@example.org"}  # not dave (inactive), bob's address once
    message = mail["bob@example.org"]
    assert message.subject == "[Bastion] demo-1.0-py3-none-any.whl uploaded to demo 1.0"
    assert_explains(message, "demo-1.0-py3-none-any.whl", "Version:     1.0", "Uploaded by: alice",
                    "yank", "revoke")


def test_files_uploaded_together_make_one_message_per_person(bastion: Bastion, cast: Cast) -> None:
    later = WHEN + timedelta(seconds=3)
    files = [("demo-1.1.tar.gz", "1.1", WHEN), ("demo-1.1-py3-none-any.whl", "1.1", later),
             ("demo-1.0-cp312-cp312-manylinux_2_17_x86_64.whl", "1.0", later)]
    with bastion.db.read() as session:
        messages = notifications.release_files_uploaded(session, cast.demo, files, "alice")
        assert notifications.release_files_uploaded(session, cast.demo, [], "alice") == []
    mail = by_recipient(messages)
    assert len(messages) == 2 and set(mail) == {"alice@example.org", "bob@example.org"}
    message = mail["alice@example.org"]
    assert message.subject == "[Bastion] 3 files uploaded to demo 1.1, 1.0"
    body = message.body
    assert body.index("demo-1.1.tar.gz") < body.index("demo-1.1-py3-none-any.whl") < body.index("cp312")
    assert_explains(message, "3 files were uploaded to the project demo", "Uploaded by: alice",
                    f"{WHEN:%Y-%m-%d %H:%M:%S} UTC  1.1  demo-1.1.tar.gz",
                    f"{later:%Y-%m-%d %H:%M:%S} UTC  1.0  demo-1.0-cp312", "bastion project yank demo VERSION")


def test_role_changed_reaches_the_affected_user_even_without_a_role(bastion: Bastion, cast: Cast) -> None:
    with bastion.db.read() as session:
        granted = notifications.role_changed(session, cast.demo, "alice", "mallory", "maintainer", True, when=WHEN)
        removed = notifications.role_changed(session, cast.other, "carol", "mallory", "owner", False, when=WHEN)
    mail = by_recipient(granted)
    assert set(mail) == {"alice@example.org", "bob@example.org", "mallory@example.org"}
    assert mail["mallory@example.org"].subject == "[Bastion] mallory is now maintainer of demo"
    assert_explains(mail["alice@example.org"], "alice gave mallory the role maintainer on the project demo",
                    "Changed by: alice", "(granted)")
    mail = by_recipient(removed)
    assert set(mail) == {"carol@example.org", "bob@example.org", "mallory@example.org"}
    assert mail["bob@example.org"].subject == "[Bastion] mallory is no longer owner of other"
    assert_explains(mail["mallory@example.org"], "carol removed the role owner of mallory", "(removed)")


def test_role_changed_does_not_mail_the_affected_user_twice(bastion: Bastion, cast: Cast) -> None:
    with bastion.db.read() as session:
        messages = notifications.role_changed(session, cast.demo, "alice", "bob", "owner", True, when=WHEN)
    assert set(by_recipient(messages)) == {"alice@example.org", "bob@example.org"}


def test_token_created_lists_to_each_recipient_only_their_projects(bastion: Bastion, cast: Cast) -> None:
    with bastion.db.read() as session:
        messages = notifications.token_created_for_project(
            session, [cast.demo, cast.other, cast.demo], "bob", "CI upload\nfor releases", when=WHEN
        )
    mail = by_recipient(messages)
    assert set(mail) == {"alice@example.org", "bob@example.org", "carol@example.org"}
    assert "  - demo\n" in mail["alice@example.org"].body and "- other" not in mail["alice@example.org"].body
    assert "  - other\n" in mail["carol@example.org"].body and "- demo" not in mail["carol@example.org"].body
    assert "  - demo\n  - other\n" in mail["bob@example.org"].body
    assert mail["bob@example.org"].subject == "[Bastion] New API token for demo and 1 more"
    assert mail["carol@example.org"].subject == "[Bastion] New API token for other"
    assert_explains(mail["carol@example.org"], "Token description: CI upload for releases", "Created by:        bob",
                    "bastion token revoke")
    with bastion.db.read() as session:
        assert notifications.token_created_for_project(session, [], "bob", "x") == []


def test_maintainer_disabled_2fa_reaches_everyone_they_share_a_project_with(bastion: Bastion, cast: Cast) -> None:
    with bastion.db.read() as session:
        messages = notifications.maintainer_disabled_2fa(session, cast.ids["bob"], when=WHEN)
        nobody = notifications.maintainer_disabled_2fa(session, cast.ids["mallory"], when=WHEN)
        missing = notifications.maintainer_disabled_2fa(session, 10_000, when=WHEN)
    mail = by_recipient(messages)
    assert set(mail) == {"alice@example.org", "bob@example.org", "carol@example.org"}  # not erin (lonely)
    assert mail["alice@example.org"].subject == "[Bastion] bob turned off two-factor authentication"
    assert_explains(mail["alice@example.org"], "bob turned off two-factor authentication", "  - demo\n")
    assert "- other" not in mail["alice@example.org"].body
    assert_explains(mail["bob@example.org"], "You turned off", "  - demo\n  - other\n", "Change your password")
    assert_explains(mail["carol@example.org"], "  - other\n", "Tell bob")
    assert nobody == [] and missing == []


def personal_user() -> User:
    return User(username="Alice", username_key="alice", email="alice@example.org", password_hash="x")


@pytest.mark.parametrize(
    ("build", "subject", "facts"),
    [
        (notifications.recovery_code_used, "A recovery code was used to sign in", ("recovery code", "new recovery")),
        (notifications.password_changed, "Your password was changed", ("password of your account was changed",)),
    ],
)
def test_personal_notices(build, subject: str, facts: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    [message] = build(personal_user(), when=WHEN)
    assert message.to == ("alice@example.org",)
    assert message.subject == "[Bastion] " + subject
    assert_explains(message, "Hello Alice", "Account: Alice", *facts)


@pytest.mark.parametrize(
    ("build", "subject"),
    [(notifications.verify_email, "Verify your email address"), (notifications.password_reset, "Reset your password")],
)
def test_link_messages_carry_the_link(build, subject: str) -> None:  # type: ignore[no-untyped-def]
    link = "https://index.example/account/link/SECRET"
    [message] = build(personal_user(), link, when=WHEN)
    assert message.to == ("alice@example.org",)
    assert message.subject == "[Bastion] " + subject
    assert_explains(message, f"  {link}\n", "Do not share", "If you did not ask for this, ignore this message")


def test_time_defaults_to_now_in_utc() -> None:
    [message] = notifications.password_changed(personal_user())
    assert datetime.now(UTC).strftime("%Y-%m-%d ") in message.body and " UTC\n" in message.body


def test_a_user_without_an_address_gets_nothing() -> None:
    user = personal_user()
    user.email = ""
    assert notifications.password_changed(user) == []
