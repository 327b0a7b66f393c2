"""The 2FA mandate (issue 3), at the service layer and over the package API, on both databases:
policies off / critical / all-uploaders / everyone; critical projects from real download counts;
an owner's opt-in (``Project.mfa_required``, which holds under ``off`` too). A user without 2FA is
refused uploads (403, the message says how to enable 2FA), tokens for such projects and roles on
them; existing tokens stop working there; once TOTP is enabled the same actions succeed.
``bastion policy set`` leaves a ``policy.changed`` event.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from urllib.parse import urljoin

import pyotp
import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from bastion.accounts import mfa
from bastion.accounts import service as accounts
from bastion.accounts.models import User
from bastion.accounts.policy import mfa_policy, set_mfa_policy
from bastion.authz import OPERATOR, Principal
from bastion.db import utcnow
from bastion.errors import Forbidden
from bastion.events import Event
from bastion.http import reason_phrase
from bastion.insights import tasks
from bastion.insights.critical import recompute_critical
from bastion.insights.models import CriticalProject
from bastion.packaging import service as packaging
from bastion.packaging.models import File, Project, Role
from bastion.services import Bastion
from tests.conftest import make_token, make_user, post_upload, snapshot_state
from tests.distbuilder import make_wheel, upload_form

HOW_TO = "enable two-factor authentication (an authenticator app or a security key) on your account page, /account/2fa"
PROJECT = "mandate-proj"
POLICIES = ("off", "critical", "all-uploaders", "everyone")
KINDS = ("plain", "critical", "opted-in")


def required(policy: str, kind: str) -> bool:
    """What issue 3 asks: whether owners and maintainers of a ``kind`` project need 2FA."""
    return {"off": kind == "opted-in", "critical": kind in ("critical", "opted-in")}.get(policy, True)


def upload(client, tmp_path: Path, token: str, name: str, version: str):  # type: ignore[no-untyped-def]
    directory = tmp_path / f"{name}-{version}"
    directory.mkdir(exist_ok=True)
    wheel = make_wheel(directory, name, version)
    return post_upload(client, token, wheel, upload_form(wheel, name, version))


def set_policy(bastion: Bastion, value: str) -> None:
    with bastion.db.write() as session:
        set_mfa_policy(session, value, principal=OPERATOR, secret=bastion.secret)


def enable_totp(bastion: Bastion, name: str) -> None:
    secret = mfa.new_totp_secret()
    with bastion.db.write() as session:
        user = session.execute(select(User).where(User.username == name)).scalar_one()
        mfa.enable_totp(session, user, secret, pyotp.TOTP(secret).now(), key=bastion.encryption_key,
                        secret=bastion.secret)


def principal(bastion: Bastion, name: str) -> Principal:
    from bastion.accounts.sessions import principal_of

    with bastion.db.read() as session:
        return principal_of(session.execute(select(User).where(User.username == name)).scalar_one())


def count_download(bastion: Bastion, project: str, times: int = 1) -> None:
    """As the read path does for every file download: counted in memory, flushed in a batch."""
    with bastion.db.read() as session:
        paths = session.execute(select(File.path).join(Project, Project.id == File.project_id)
                                .where(Project.normalized_name == project)).scalars().all()
    for _ in range(times):
        bastion.downloads.count(paths[0])
    bastion.downloads.flush(bastion.db)


def recompute(bastion: Bastion) -> list[str]:
    with bastion.db.write() as session:
        return recompute_critical(session, percent=1.0, window=timedelta(days=180), secret=bastion.secret)


def refused(response, *needles: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 403, response.text
    text = response.text if not response.headers.get("content-type", "").startswith("application/json") \
        else response.json()["error"]
    for needle in needles:
        assert needle in text, (needle, text)
    assert response.headers["x-bastion-reason"] == reason_phrase(text)  # what twine prints


def try_token(bastion: Bastion, name: str, projects: list[str] | None) -> str:
    """Create a token as the user would (their own principal); 'ok' or the refusal's message."""
    who = principal(bastion, name)
    try:
        with bastion.db.write() as session:
            accounts.create_token(session, bastion.secret, name, projects=projects, expires_in=timedelta(days=1),
                                  principal=who)
    except Forbidden as exc:
        return exc.message
    return "ok"


def try_role(bastion: Bastion, user: str, role: str) -> str:
    try:
        with bastion.db.write() as session:
            packaging.add_role(session, PROJECT, user, role, principal=OPERATOR, secret=bastion.secret)
    except Forbidden as exc:
        return exc.message
    return "ok"


def actions(bastion: Bastion, after: int = 0) -> list[str]:
    with bastion.db.read() as session:
        return list(session.execute(select(Event.action).where(Event.id > after).order_by(Event.id)).scalars())


def last_event(bastion: Bastion) -> int:
    with bastion.db.read() as session:
        return session.execute(select(Event.id).order_by(Event.id.desc()).limit(1)).scalar() or 0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("policy", POLICIES)
def test_the_mandate_by_policy_and_project(bastion: Bastion, client, tmp_path: Path, policy: str,  # type: ignore[no-untyped-def]
                                           kind: str) -> None:
    alice = make_user(bastion, "alice")  # the owner; her token is made before any of this applies
    make_user(bastion, "bob")
    set_policy(bastion, "off")
    assert upload(client, tmp_path, alice, PROJECT, "1.0").status_code == 200
    if kind == "critical":
        count_download(bastion, PROJECT, 3)
        assert recompute(bastion) == [PROJECT]
    elif kind == "opted-in":
        with bastion.db.write() as session:
            session.execute(update(Project).where(Project.normalized_name == PROJECT).values(mfa_required=True))
    set_policy(bastion, policy)
    must = required(policy, kind)

    # without 2FA
    before = snapshot_state(bastion)
    response = upload(client, tmp_path, alice, PROJECT, "1.1")
    if must:
        refused(response, "two-factor authentication is required", f"project '{PROJECT}'", "user 'alice'", HOW_TO)
        assert snapshot_state(bastion) == before  # nothing stored, no event
        yank = client.post(f"/api/v1/projects/{PROJECT}/releases/1.0/yank", json={"reason": "x"},
                           headers={"Authorization": f"Bearer {alice}"})
        refused(yank, "two-factor authentication is required", HOW_TO)
        first = last_event(bastion)
        message = try_token(bastion, "alice", [PROJECT])
        assert message.startswith(f"cannot create an API token for {PROJECT}: two-factor authentication is "
                                  f"required of user 'alice' there (index 2FA policy: {policy}); "), message
        assert HOW_TO in message
        assert actions(bastion, first) == ["token.refused"]
        message = try_role(bastion, "bob", "maintainer")
        assert message == (f"user 'bob' cannot be given a role on '{PROJECT}': the project requires two-factor "
                           "authentication and 'bob' has not enabled it; ask them to enable 2FA at /account/2fa first")
    else:
        assert response.status_code == 200, response.text
        assert try_token(bastion, "alice", [PROJECT]) == "ok"
        assert try_role(bastion, "bob", "maintainer") == "ok"
    with bastion.db.read() as session:
        roles = session.execute(select(User.username, Role.role).join(Role, Role.user_id == User.id)
                                .order_by(User.username)).all()
    assert [tuple(r) for r in roles] == ([("alice", "owner")] if must else [("alice", "owner"), ("bob", "maintainer")])

    # with TOTP, the same actions succeed (and the same, older token works again)
    enable_totp(bastion, "alice")
    enable_totp(bastion, "bob")
    assert upload(client, tmp_path, alice, PROJECT, "1.2").status_code == 200
    assert try_token(bastion, "alice", [PROJECT]) == "ok"
    assert try_role(bastion, "bob", "maintainer" if must else "owner") == "ok"


@pytest.mark.parametrize("policy", POLICIES)
def test_creating_a_project_without_2fa(bastion: Bastion, client, tmp_path: Path, policy: str) -> None:  # type: ignore[no-untyped-def]
    alice = make_user(bastion, "alice")
    set_policy(bastion, policy)
    response = upload(client, tmp_path, alice, "brand-new", "1.0")
    if policy in ("all-uploaders", "everyone"):
        refused(response, "two-factor authentication is required", "project 'brand-new'", HOW_TO)
        assert try_token(bastion, "alice", None).startswith("cannot create an API token for any project")
    else:
        assert response.status_code == 200, response.text
        assert try_token(bastion, "alice", None) == "ok"  # a token for all her projects


def test_a_project_that_becomes_critical_stops_existing_tokens(bastion: Bastion, client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Downloads over HTTP, the daily task, then the token made before is refused for that project
    (and only that one), until its owner enables 2FA."""
    alice = make_user(bastion, "alice")
    scoped = make_token(bastion, "alice", projects=[PROJECT])
    assert mfa_policy_of(bastion) == "critical"  # the default
    for name in [PROJECT] + [f"quiet-{i}" for i in range(3)]:
        assert upload(client, tmp_path, alice, name, "1.0").status_code == 200
    page = client.get(f"/simple/{PROJECT}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}).json()
    file_url = urljoin(f"http://testserver/simple/{PROJECT}/", page["files"][0]["url"])
    for _ in range(5):
        assert client.get(file_url).status_code == 200
    marked = tasks.daily_insights(bastion)  # flushes this process's counts, then ranks
    assert marked == [PROJECT]
    with bastion.db.read() as session:
        critical = session.execute(select(Project.normalized_name).join(
            CriticalProject, CriticalProject.project_id == Project.id)).scalars().all()
        event = session.execute(select(Event).where(Event.action == "project.critical")).scalar_one()
    assert critical == [PROJECT] and event.subject == f"project:{PROJECT}" and event.details["downloads"] == 5
    for token in (alice, scoped):
        refused(upload(client, tmp_path, token, PROJECT, "1.1"), "two-factor authentication is required", HOW_TO)
    assert upload(client, tmp_path, alice, "quiet-0", "1.1").status_code == 200  # not critical
    enable_totp(bastion, "alice")
    for version, token in (("1.1", alice), ("1.2", scoped)):
        assert upload(client, tmp_path, token, PROJECT, version).status_code == 200
    # critical stays critical: a later ranking without downloads changes nothing
    assert recompute(bastion) == []


def mfa_policy_of(bastion: Bastion) -> str:
    with bastion.db.read() as session:
        return mfa_policy(session)


def test_an_owner_opt_in_holds_under_policy_off(bastion: Bastion, client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    alice = make_user(bastion, "alice")
    make_user(bastion, "bob")
    set_policy(bastion, "off")
    assert upload(client, tmp_path, alice, PROJECT, "1.0").status_code == 200
    assert try_role(bastion, "bob", "maintainer") == "ok"
    bob = make_token(bastion, "bob", projects=[PROJECT])
    with bastion.db.write() as session:
        session.execute(update(Project).where(Project.normalized_name == PROJECT).values(mfa_required=True))
    # bob, a maintainer already, cannot upload until he enables 2FA; nor can alice
    for token in (bob, alice):
        refused(upload(client, tmp_path, token, PROJECT, "1.1"), "two-factor authentication is required", HOW_TO)
    enable_totp(bastion, "bob")
    assert upload(client, tmp_path, bob, PROJECT, "1.1").status_code == 200
    refused(upload(client, tmp_path, alice, PROJECT, "1.2"), "two-factor authentication is required")


def test_admins_are_held_to_the_mandate_but_the_operator_is_not(bastion: Bastion, client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    alice = make_user(bastion, "alice")
    root = make_user(bastion, "root", admin=True)
    assert upload(client, tmp_path, alice, PROJECT, "1.0").status_code == 200
    set_policy(bastion, "all-uploaders")
    refused(upload(client, tmp_path, root, PROJECT, "1.1"), "two-factor authentication is required",
            "user 'root'")
    with bastion.db.write() as session:  # the CLI's operator (who holds the data dir) may still act
        packaging.set_yanked(session, PROJECT, "1.0", yanked=True, reason="cli", principal=OPERATOR)


def test_under_policy_everyone_the_account_pages_send_users_to_enroll(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    from tests.unit.test_web_account import open_session

    make_user(bastion, "alice")
    set_policy(bastion, "everyone")
    open_session(bastion, client, "alice")
    for path in ("/account/", "/account/tokens", "/account/history"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/account/2fa", path
    assert client.get("/account/2fa", follow_redirects=False).status_code == 200
    enable_totp(bastion, "alice")
    assert client.get("/account/tokens", follow_redirects=False).status_code == 200


def test_policy_changes_are_audited(bastion: Bastion) -> None:
    make_user(bastion, "root", admin=True)
    make_user(bastion, "alice")
    first = last_event(bastion)
    with bastion.db.write() as session, pytest.raises(Forbidden, match="only an index admin may do this"):
        set_mfa_policy(session, "off", principal=principal(bastion, "alice"), secret=bastion.secret)
    with bastion.db.write() as session:
        from bastion.errors import ServiceError

        with pytest.raises(ServiceError, match="unknown 2FA policy 'sometimes'"):
            set_mfa_policy(session, "sometimes", principal=OPERATOR, secret=bastion.secret)
    # An admin without 2FA cannot loosen (or change) a mandate in force: that would be the way around it.
    with bastion.db.write() as session, pytest.raises(Forbidden, match="two-factor authentication is required"):
        set_mfa_policy(session, "off", principal=principal(bastion, "root"), secret=bastion.secret)
    enable_totp(bastion, "root")
    first = last_event(bastion)
    with bastion.db.write() as session:
        assert set_mfa_policy(session, "everyone", principal=principal(bastion, "root"),
                              secret=bastion.secret) == "everyone"
    with bastion.db.read() as session:
        events = session.execute(select(Event).where(Event.id > first)).scalars().all()
    assert [(e.action, e.actor, e.subject, e.details) for e in events] == [
        ("policy.changed", "root", "policy:mfa", {"from": "critical", "to": "everyone", "explicit": True})]


def test_bastion_policy_set_leaves_a_policy_changed_event(bastion: Bastion, database_url: str) -> None:
    from bastion.cli import main

    env = {"BASTION_DATABASE_URL": database_url}
    data_dir = str(bastion.settings.data_dir)
    runner = CliRunner()
    shown = runner.invoke(main, ["policy", "show", "--data-dir", data_dir], env=env)
    assert shown.exit_code == 0 and shown.output == "mfa: critical (configured default: critical)\n"
    first = last_event(bastion)
    changed = runner.invoke(main, ["policy", "set", "all-uploaders", "--data-dir", data_dir], env=env)
    assert changed.exit_code == 0, changed.output
    assert changed.output == "mfa policy now: all-uploaders\n"
    assert mfa_policy_of(bastion) == "all-uploaders"
    back = runner.invoke(main, ["policy", "set", "default", "--data-dir", data_dir], env=env)
    assert back.exit_code == 0 and back.output == "mfa policy now: critical\n"
    wrong = runner.invoke(main, ["policy", "set", "sometimes", "--data-dir", data_dir], env=env)
    assert wrong.exit_code == 2 and "'sometimes' is not one of" in wrong.output
    with bastion.db.read() as session:
        events = session.execute(select(Event).where(Event.id > first).order_by(Event.id)).scalars().all()
    assert [(e.action, e.actor, e.actor_id, e.user_agent, e.details) for e in events] == [
        ("policy.changed", "operator (cli)", None, "bastion-cli",
         {"from": "critical", "to": "all-uploaders", "explicit": True}),
        ("policy.changed", "operator (cli)", None, "bastion-cli",
         {"from": "all-uploaders", "to": "critical", "explicit": False}),
    ]
    assert utcnow() - events[0].time < timedelta(minutes=5)


def test_bastion_insights_recompute_marks_critical_projects(bastion: Bastion, client, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                            database_url: str) -> None:
    """The daily task's work, on demand: it ranks what is in the database (a server's own counts
    are written by that server)."""
    from bastion.cli import main
    from bastion.insights.models import MfaSnapshot

    alice = make_user(bastion, "alice")
    for name in ("popular", "unknown"):
        assert upload(client, tmp_path, alice, name, "1.0").status_code == 200
    count_download(bastion, "popular", 2)
    runner, env = CliRunner(), {"BASTION_DATABASE_URL": database_url}
    args = ["insights", "recompute", "--data-dir", str(bastion.settings.data_dir)]
    first = runner.invoke(main, args, env=env)
    assert first.exit_code == 0 and first.output == "newly critical: popular\n", first.output
    again = runner.invoke(main, args, env=env)
    assert again.exit_code == 0 and again.output == "no project newly critical\n", again.output
    with bastion.db.read() as session:
        assert session.execute(select(MfaSnapshot.day)).scalars().all() == [utcnow().date()]
        assert session.execute(select(Event.action).where(Event.action == "project.critical")).scalars().all() \
            == ["project.critical"]
    refused(upload(client, tmp_path, alice, "popular", "1.1"), "two-factor authentication is required")
