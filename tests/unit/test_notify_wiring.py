"""Security notices reach the right people after the change committed: uploads, role changes (API,
web page, CLI), project-scoped tokens made through the API. Captured by a real SMTP server, or in
the outbox directory when no SMTP server is configured (SQLite and PostgreSQL)."""

from __future__ import annotations

import email
import os
import subprocess
from collections.abc import Callable
from email import policy
from pathlib import Path
from typing import Any

import pytest

from bastion.authz import OPERATOR
from bastion.packaging import service
from bastion.services import Bastion
from tests.conftest import make_user, post_upload
from tests.distbuilder import make_wheel, upload_form
from tests.mailbox import Mailbox, free_port
from tests.unit.test_project_delete import BASTION, cli
from tests.unit.test_web_pages import add_role, post_form, sign_in, upload

Build = Callable[..., tuple[Bastion, Any]]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def received(bastion: Bastion, box: Mailbox) -> list[tuple[str, str]]:
    """(recipient, subject) of every message delivered so far, once the queued sends finished."""
    assert bastion.tasks.drain(timeout=30)
    return sorted((rcpt, str(message["Subject"])) for message, rcpts in zip(box.messages, box.recipients, strict=True)
                  for rcpt in rcpts)


@pytest.fixture
def index(bastion_with: Build, smtp_server: Mailbox, tmp_path: Path) -> dict[str, Any]:
    """An index sending mail by SMTP; acme: alice owner, bob maintainer; carol has no role."""
    bastion, client = bastion_with(smtp_host=smtp_server.host, smtp_port=smtp_server.port)
    tokens = {name: make_user(bastion, name) for name in ("alice", "bob", "carol")}
    upload(client, tmp_path, tokens["alice"], "acme", "1.0")
    add_role(bastion, "acme", "bob", "maintainer")
    assert bastion.tasks.drain(timeout=30)
    smtp_server.messages.clear()
    smtp_server.recipients.clear()
    return {"bastion": bastion, "client": client, "tokens": tokens}


def test_upload_notifies_the_project_people(index: dict[str, Any], smtp_server: Mailbox, tmp_path: Path) -> None:
    bastion, client, tokens = index["bastion"], index["client"], index["tokens"]
    path = upload(client, tmp_path, tokens["bob"], "acme", "2.0")
    message = smtp_server.wait_for("alice@example.org", "acme-2.0-py3-none-any.whl uploaded to acme 2.0")
    assert "Uploaded by: bob" in message.get_content()
    assert received(bastion, smtp_server) == [
        ("alice@example.org", "[Bastion] acme-2.0-py3-none-any.whl uploaded to acme 2.0"),
        ("bob@example.org", "[Bastion] acme-2.0-py3-none-any.whl uploaded to acme 2.0"),
    ]
    # The identical file again (twine --skip-existing): nothing changed, nobody is told.
    again = post_upload(client, tokens["bob"], path, upload_form(path, "acme", "2.0"))
    assert again.status_code == 200 and "already stored" in again.text
    # A refused upload tells nobody either.
    refused = make_wheel(tmp_path, "acme", "3.0")
    assert post_upload(client, tokens["carol"], refused, upload_form(refused, "acme", "3.0")).status_code == 403
    assert len(received(bastion, smtp_server)) == 2


def test_files_uploaded_together_make_one_notice_per_person(index: dict[str, Any], smtp_server: Mailbox,
                                                            tmp_path: Path) -> None:
    bastion, client, tokens = index["bastion"], index["client"], index["tokens"]
    upload(client, tmp_path, tokens["bob"], "acme", "2.0")
    upload(client, tmp_path, tokens["bob"], "acme", "2.1")
    subject = "[Bastion] 2 files uploaded to acme 2.0, 2.1"
    assert received(bastion, smtp_server) == [("alice@example.org", subject), ("bob@example.org", subject)]
    body = smtp_server.wait_for("alice@example.org", "2 files uploaded").get_content()
    assert body.index("acme-2.0-py3-none-any.whl") < body.index("acme-2.1-py3-none-any.whl")
    assert "Uploaded by: bob" in body


def test_role_changes_through_the_api(index: dict[str, Any], smtp_server: Mailbox) -> None:
    bastion, client, tokens = index["bastion"], index["client"], index["tokens"]
    granted = client.post("/api/v1/projects/acme/roles", json={"user": "carol", "role": "maintainer"},
                          headers=bearer(tokens["alice"]))
    assert granted.status_code == 200, granted.text
    subject = "[Bastion] carol is now maintainer of acme"
    assert received(bastion, smtp_server) == [(f"{n}@example.org", subject) for n in ("alice", "bob", "carol")]
    assert "alice gave carol the role maintainer" in smtp_server.wait_for("bob@example.org", subject).get_content()

    removed = client.delete("/api/v1/projects/acme/roles/carol", headers=bearer(tokens["alice"]))
    assert removed.status_code == 200, removed.text
    gone = "[Bastion] carol is no longer maintainer of acme"
    assert [r for r in received(bastion, smtp_server) if r[1] == gone] == [
        (f"{n}@example.org", gone) for n in ("alice", "bob", "carol")]  # carol too: she lost it

    before = received(bastion, smtp_server)
    for response in (
        client.post("/api/v1/projects/acme/roles", json={"user": "carol", "role": "owner"}, headers=bearer(tokens["bob"])),
        client.post("/api/v1/projects/acme/roles", json={"user": "nobody", "role": "owner"},
                    headers=bearer(tokens["alice"])),
        client.delete("/api/v1/projects/acme/roles/carol", headers=bearer(tokens["alice"])),
    ):
        assert response.status_code in (403, 404), response.text
    assert received(bastion, smtp_server) == before  # refusals tell nobody


def test_role_changes_on_the_web_page(index: dict[str, Any], smtp_server: Mailbox) -> None:
    bastion, client = index["bastion"], index["client"]
    sign_in(client, "alice")
    added = post_form(client, "/projects/acme/manage", {"action": "add_role", "username": "carol", "role": "owner"})
    assert "carol is now owner of acme." in added.text
    subject = "[Bastion] carol is now owner of acme"
    assert received(bastion, smtp_server) == [(f"{n}@example.org", subject) for n in ("alice", "bob", "carol")]
    post_form(client, "/projects/acme/manage", {"action": "remove_role", "username": "bob"})
    gone = "[Bastion] bob is no longer maintainer of acme"
    assert [r for r in received(bastion, smtp_server) if r[1] == gone] == [
        (f"{n}@example.org", gone) for n in ("alice", "bob", "carol")]


def test_project_token_made_through_the_api(index: dict[str, Any], smtp_server: Mailbox) -> None:
    bastion, client, tokens = index["bastion"], index["client"], index["tokens"]
    made = client.post("/api/v1/users/bob/tokens", json={"projects": ["ACME"], "description": "CI"},
                       headers=bearer(tokens["bob"]))
    assert made.status_code == 201, made.text
    subject = "[Bastion] New API token for acme"
    assert received(bastion, smtp_server) == [(f"{n}@example.org", subject) for n in ("alice", "bob")]
    body = smtp_server.wait_for("alice@example.org", subject).get_content()
    assert "bob created an API token" in body and "Token description: CI" in body
    # A token for all of a user's projects, or a refused one, is not announced.
    assert client.post("/api/v1/users/bob/tokens", json={}, headers=bearer(tokens["bob"])).status_code == 201
    assert client.post("/api/v1/users/alice/tokens", json={"projects": ["acme"]},
                       headers=bearer(tokens["bob"])).status_code == 403
    assert len(received(bastion, smtp_server)) == 2


def _outbox(data_dir: Path) -> list[tuple[str, str]]:
    found = []
    for path in sorted((data_dir / "outbox").glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        found.append((str(message["To"]), str(message["Subject"])))
    return sorted(found)


def test_cli_role_changes_are_sent_before_it_exits(bastion: Bastion, client: Any, tmp_path: Path, data_dir: Path,
                                                   database_url: str) -> None:
    """The CLI runs no background worker: it sends its notices itself, then exits (here into the
    outbox directory, as no SMTP server is configured)."""
    token = make_user(bastion, "alice")
    make_user(bastion, "bob")
    upload(client, tmp_path, token, "acme", "1.0")
    assert bastion.tasks.drain(timeout=30)
    before = _outbox(data_dir)
    assert ("alice@example.org", "[Bastion] acme-1.0-py3-none-any.whl uploaded to acme 1.0") in before  # the server's

    added = cli(data_dir, database_url, "project", "add-role", "acme", "bob", "maintainer")
    assert added.returncode == 0, added.stderr
    subject = "[Bastion] bob is now maintainer of acme"
    assert sorted(set(_outbox(data_dir)) - set(before)) == [("alice@example.org", subject), ("bob@example.org", subject)]
    removed = cli(data_dir, database_url, "project", "remove-role", "acme", "bob")
    assert removed.returncode == 0, removed.stderr
    gone = "[Bastion] bob is no longer maintainer of acme"
    assert [m for m in _outbox(data_dir) if m[1] == gone] == [("alice@example.org", gone), ("bob@example.org", gone)]
    refused = cli(data_dir, database_url, "project", "add-role", "acme", "nobody", "maintainer")
    assert refused.returncode == 1
    assert len(_outbox(data_dir)) == len(before) + 4


def test_cli_mail_failure_is_a_warning(bastion: Bastion, client: Any, tmp_path: Path, data_dir: Path,
                                       database_url: str) -> None:
    """An unreachable SMTP server does not undo the committed change: the CLI warns and succeeds."""
    token = make_user(bastion, "alice")
    make_user(bastion, "bob")
    upload(client, tmp_path, token, "acme", "1.0")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env.update(BASTION_DATABASE_URL=database_url, BASTION_SMTP_HOST="127.0.0.1", BASTION_SMTP_PORT=str(free_port()))
    result = subprocess.run([BASTION, "project", "add-role", "acme", "bob", "owner", "--data-dir", str(data_dir)],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "bob is now owner of acme"
    assert "warning: notice to alice@example.org not sent" in result.stderr
    with bastion.db.read() as session:
        assert ("bob", "owner") in {(r.username, r.role) for r in service.list_roles(session, "acme", principal=OPERATOR)}


def test_a_notice_collected_for_a_project_deleted_since_reaches_nobody(index: dict[str, Any], smtp_server: Mailbox,
                                                                      tmp_path: Path) -> None:
    """The notice is sent seconds after the upload: if the project was deleted meanwhile and its id
    went to a new project (SQLite reuses the newest deleted row's id), the new project's people
    must not hear of the old project's files."""
    from sqlalchemy import select

    from bastion.packaging.models import Project

    bastion, client, tokens = index["bastion"], index["client"], index["tokens"]
    upload(client, tmp_path, tokens["alice"], "zzsecret", "1.0")  # collected: sent once uploads go quiet
    with bastion.db.write() as session:
        service.delete_project(session, bastion, "zzsecret", principal=OPERATOR)
    upload(client, tmp_path, tokens["carol"], "carolproj", "1.0")
    with bastion.db.read() as session:
        ids = {name: id_ for name, id_ in session.execute(select(Project.normalized_name, Project.id))}
    assert "zzsecret" not in ids and "carolproj" in ids
    mail = received(bastion, smtp_server)
    assert mail == [("carol@example.org", "[Bastion] carolproj-1.0-py3-none-any.whl uploaded to carolproj 1.0")]
