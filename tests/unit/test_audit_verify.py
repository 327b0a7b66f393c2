"""The audit log of issue 3: every action the issue names leaves an event, done through the web
pages, the package API and the CLI; ``bastion events verify`` (a subprocess, as an operator runs
it) passes on that real log and names the event where it was tampered with; each user sees their
own history, and only theirs.

One log per backend is built once; each test starts from it as built (tampering is undone).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, insert, select, update
from starlette.testclient import TestClient

from bastion.accounts import service as accounts
from bastion.accounts.models import User
from bastion.app import create_app
from bastion.authz import OPERATOR
from bastion.cli import main as cli_main
from bastion.events import Event, _event_digest, _fields_of, verify_chain
from bastion.services import Bastion
from bastion.settings import load_settings
from tests.conftest import BACKENDS, PASSWORD, fresh_database, post_upload, require_backend
from tests.distbuilder import make_wheel, upload_form
from tests.unit.test_web_account import code_now, csrf_of, open_session, page, sign_in

BASTION = str(Path(sys.executable).parent / "bastion")
PROJECT = "audit-proj"


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return require_backend(request.param)


@dataclass
class Log:
    bastion: Bastion
    client: TestClient
    data_dir: Path
    url: str
    backend: str
    rows: list[dict]
    """The events as built."""
    ids: dict[str, int]
    """User ids by name."""
    token_id: str
    """alice's web-made token."""

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.cli_many(args)[0]

    def cli_many(self, *commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
        """Run read-only commands at the same time (each starts a Python: the wait is the cost)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
        if self.backend == "postgresql":
            env["BASTION_DATABASE_URL"] = self.url
        procs = [subprocess.Popen([BASTION, *args, "--data-dir", str(self.data_dir)], env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
                 for args in commands]
        results = []
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=60)
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
        return results

    def restore(self) -> None:
        with self.bastion.db.write() as session:
            session.execute(delete(Event))
            session.execute(insert(Event), self.rows)


def _every_action(bastion: Bastion, client: TestClient, tmp: Path) -> str:
    """Every action issue 3 names, the way a user does it; alice's web token id."""
    with bastion.db.write() as session:
        for name in ("alice", "bob"):
            accounts.create_user(session, name, f"{name}@example.org", PASSWORD, principal=OPERATOR,
                                 secret=bastion.secret)
    # sign-in failure and success (no 2FA yet)
    token = csrf_of(page(client, "/account/login"))
    assert client.post("/account/login", data={"csrf_token": token, "username": "alice",
                                                "password": "not-her-password"}).status_code == 403
    sign_in(client, "alice")
    # the address, then TOTP through the web
    with bastion.db.read() as session:
        alice = session.execute(select(User).where(User.username == "alice")).scalar_one()
        link = accounts.email_verification_token(bastion.secret, alice)
    assert client.get("/account/verify-email", params={"token": link}).status_code == 200
    begun = client.post("/account/2fa/totp/begin", data={"csrf_token": csrf_of(page(client, "/account/2fa"))})
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', begun.text).group(1)  # type: ignore[union-attr]
    # codes computed right before use: the enrollment's is one step back, so that the sign-in's,
    # whenever it comes, is of a later step (a code works once)
    done = client.post("/account/2fa/totp/confirm", data={"csrf_token": csrf_of(begun.text),
                                                          "code": code_now(secret, -1)})
    codes = re.search(r'id="recovery-codes">(.*?)</pre>', done.text, re.S).group(1).split()  # type: ignore[union-attr]
    # a token on the web page (the sign-in was a re-authentication), used for an upload
    made = client.post("/account/tokens", data={"csrf_token": csrf_of(page(client, "/account/tokens")),
                                                "scope": "all", "expires": "7d", "description": "ci"})
    raw = re.search(r'id="new-token">(bastion-[^<]+)<', made.text).group(1)  # type: ignore[union-attr]
    wheel = make_wheel(tmp, PROJECT, "1.0")
    assert post_upload(client, raw, wheel, upload_form(wheel, PROJECT, "1.0")).status_code == 200
    api = {"Authorization": f"Bearer {raw}"}
    assert client.post(f"/api/v1/projects/{PROJECT}/releases/1.0/yank", headers=api,
                       json={"reason": "broken"}).status_code == 200
    roles = f"/api/v1/projects/{PROJECT}/roles"
    assert client.post(roles, headers=api, json={"user": "bob", "role": "maintainer"}).status_code == 200
    assert client.delete(f"{roles}/bob", headers=api).status_code == 200
    # sign out; sign in with the app's code; then with a recovery code
    client.post("/account/logout", data={"csrf_token": csrf_of(page(client, "/account/"))})
    sign_in(client, "alice")
    assert client.post("/account/login/2fa", data={"csrf_token": csrf_of(page(client, "/account/login/2fa")),
                                                   "code": code_now(secret)},
                       follow_redirects=False).status_code == 303
    client.post("/account/logout", data={"csrf_token": csrf_of(page(client, "/account/"))})
    sign_in(client, "alice")
    assert client.post("/account/login/2fa", data={"csrf_token": csrf_of(page(client, "/account/login/2fa")),
                                                   "recovery_code": codes[0]},
                       follow_redirects=False).status_code == 303
    # password change (ends the sessions), then 2FA removed and the token revoked in a new one
    assert client.post("/account/password", data={
        "csrf_token": csrf_of(page(client, "/account/")), "current_password": PASSWORD,
        "new_password": "a-new-long-password", "new_password_confirm": "a-new-long-password"},
        follow_redirects=False).status_code == 303
    open_session(bastion, client, "alice")
    token = csrf_of(page(client, "/account/2fa"))
    removed = client.post("/account/2fa/totp/remove", data={"csrf_token": token}, follow_redirects=False)
    assert removed.status_code == 303
    with bastion.db.read() as session:
        token_id = session.execute(select(Event.details).where(Event.action == "token.created")).scalars().all()[-1]
    assert client.post(f"/account/tokens/{token_id['token_id']}/revoke",
                       data={"csrf_token": token}, follow_redirects=False).status_code == 303
    # bob signs in
    client.cookies.clear()
    sign_in(client, "bob")
    # the operator changes the policy
    runner = CliRunner()
    env = {"BASTION_DATABASE_URL": bastion.settings.effective_database_url}
    result = runner.invoke(cli_main, ["policy", "set", "all-uploaders", "--data-dir", str(bastion.settings.data_dir)],
                           env=env)
    assert result.exit_code == 0, result.output
    return str(token_id["token_id"])


@pytest.fixture(scope="module")
def built(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Log]:
    root = tmp_path_factory.mktemp(f"audit-{backend}")
    data_dir = root / "data"
    with fresh_database(backend, data_dir, tmp_path_factory) as url:
        bastion = Bastion(load_settings(data_dir, database_url=url), run_migrations=False)
        client = TestClient(create_app(bastion=bastion), base_url="http://testserver")
        try:
            token_id = _every_action(bastion, client, root)
            with bastion.db.read() as session:
                rows = [{c: getattr(e, c) for c in Event.__table__.columns.keys()}
                        for e in session.execute(select(Event).order_by(Event.id)).scalars()]
                ids = {name: uid for name, uid in session.execute(select(User.username, User.id)).all()}
            yield Log(bastion, client, data_dir, url, backend, rows, ids, token_id)
        finally:
            client.close()
            bastion.close()


@pytest.fixture
def log(built: Log) -> Log:
    built.restore()
    built.client.cookies.clear()
    return built


def _events(log: Log) -> list[Event]:
    with log.bastion.db.read() as session:
        return list(session.execute(select(Event).order_by(Event.id)).scalars())


# ---------------------------------------------------------------------------------------------
# Every action of the issue leaves an event
# ---------------------------------------------------------------------------------------------

def test_every_security_relevant_action_leaves_an_event(log: Log) -> None:
    events = _events(log)
    seen = [(e.action, e.actor, e.subject) for e in events]
    alice, bob, proj = "user:alice", "user:bob", f"project:{PROJECT}"
    expected = [
        ("login.failed", "alice", alice),  # sign-in failure
        ("login.succeeded", "alice", alice),  # sign-in success
        ("mfa.totp_added", "alice", alice),  # 2FA added
        ("mfa.recovery_codes_generated", "alice", alice),
        ("token.created", "alice", alice),  # token created
        ("project.created", "alice", proj),  # project created
        ("token.used", "alice", f"token:{log.token_id}"),  # token used
        ("file.uploaded", "alice", proj),  # upload
        ("release.yanked", "alice", proj),  # yank
        ("role.granted", "alice", proj),  # role granted
        ("role.removed", "alice", proj),  # role removed
        ("mfa.used", "alice", alice),  # 2FA used
        ("mfa.recovery_code_used", "alice", alice),  # recovery code used
        ("user.password_changed", "alice", alice),  # password change
        ("mfa.totp_removed", "alice", alice),  # 2FA removed
        ("token.revoked", "alice", f"token:{log.token_id}"),  # token revoked
        ("login.succeeded", "bob", bob),
        ("policy.changed", "operator (cli)", "policy:mfa"),  # policy change
    ]
    positions = []
    for wanted in expected:
        assert wanted in seen, (wanted, seen)
        positions.append(seen.index(wanted, positions[-1] + 1 if positions else 0))
    assert positions == sorted(positions)  # in the order they happened
    by_action = {e.action: e for e in events}
    assert by_action["login.failed"].details == {"username": "alice", "reason": "password"}
    assert by_action["mfa.used"].details == {"method": "totp"}
    assert by_action["mfa.recovery_code_used"].details == {"codes_left": 7}
    assert by_action["token.used"].details == {"project": PROJECT, "filename": "audit_proj-1.0-py3-none-any.whl"}
    assert by_action["policy.changed"].details == {"from": "critical", "to": "all-uploaders", "explicit": True}
    web = [e for e in events if e.actor in ("alice", "bob")]
    assert all(e.ip_hash and e.user_agent == "testclient" for e in web)
    assert all(e.actor_id == log.ids[e.actor] for e in web)


# ---------------------------------------------------------------------------------------------
# bastion events verify
# ---------------------------------------------------------------------------------------------

def test_audit_verify_passes_on_the_real_log(log: Log) -> None:
    events = _events(log)
    head = f"{events[-1].id}:{events[-1].hash}"
    verified, shown, anchored = log.cli_many(("events", "verify"), ("events", "head"),
                                             ("events", "verify", "--anchor", head))
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout == f"audit chain verified: {len(events)} events, head {head}\n"
    assert shown.returncode == 0 and shown.stdout == head + "\n"
    assert anchored.returncode == 0 and anchored.stdout == verified.stdout, anchored.stderr


def _broken(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr
    return " ".join(result.stderr.split())


def test_an_altered_event_is_named(log: Log) -> None:
    events = _events(log)
    target = next(e for e in events if e.action == "role.granted")
    with log.bastion.db.write() as session:
        session.execute(update(Event).where(Event.id == target.id).values(details={"user": "mallory", "role": "owner"}))
    message = _broken(log.cli("events", "verify"))
    assert message.startswith(f"error: audit chain broken at event {target.id}: event {target.id} (role.granted, "), \
        message
    assert "was altered: its contents no longer match its hash" in message


def test_a_deleted_event_is_named_by_the_next_one(log: Log) -> None:
    events = _events(log)
    index = next(i for i, e in enumerate(events) if e.action == "release.yanked")
    gone, after, before = events[index], events[index + 1], events[index - 1]
    with log.bastion.db.write() as session:
        session.execute(delete(Event).where(Event.id == gone.id))
    message = _broken(log.cli("events", "verify"))
    assert message == (f"error: audit chain broken at event {after.id}: event {after.id} ({after.action}) does not "
                       f"link to event {before.id}: an event between them was removed, or event {before.id} was "
                       "altered")


def test_an_altered_event_with_a_recomputed_hash_is_caught_at_the_next(log: Log) -> None:
    events = _events(log)
    index = next(i for i, e in enumerate(events) if e.action == "mfa.totp_removed")
    target, following = events[index], events[index + 1]
    forged = dict(_fields_of(target), details={"forged": True}, action="mfa.totp_checked")
    new_hash = _event_digest(target.prev_hash, forged)
    with log.bastion.db.write() as session:
        session.execute(update(Event).where(Event.id == target.id).values(
            details={"forged": True}, action="mfa.totp_checked", hash=new_hash))
    message = _broken(log.cli("events", "verify"))
    assert message.startswith(f"error: audit chain broken at event {following.id}: event {following.id} "
                              f"({following.action}) does not link to event {target.id}"), message


def test_removing_the_newest_event_is_caught_only_with_an_anchor(log: Log) -> None:
    events = _events(log)
    newest = events[-1]
    anchor = log.cli("events", "head").stdout.strip()
    assert anchor == f"{newest.id}:{newest.hash}"
    with log.bastion.db.write() as session:
        session.execute(delete(Event).where(Event.id == newest.id))
    unanchored, anchored = log.cli_many(("events", "verify"), ("events", "verify", "--anchor", anchor))
    assert unanchored.returncode == 0, unanchored.stderr  # nothing links to the newest event
    assert f"{len(events) - 1} events" in unanchored.stdout
    message = _broken(anchored)
    assert message == (f"error: audit chain broken at event {newest.id}: the anchored event {newest.id} is missing: "
                       "the newest events were removed")


def test_a_rewritten_newest_event_does_not_match_its_anchor(log: Log) -> None:
    newest = _events(log)[-1]
    forged = dict(_fields_of(newest), details={"from": "critical", "to": "off", "explicit": True})
    with log.bastion.db.write() as session:
        session.execute(update(Event).where(Event.id == newest.id).values(
            details=forged["details"], hash=_event_digest(newest.prev_hash, forged)))
    with log.bastion.db.read() as session:  # in-process: the command's output is checked above
        assert verify_chain(session).ok  # consistent on its own
        report = verify_chain(session, anchor=(newest.id, newest.hash))
    assert not report.ok and report.first_problem_id == newest.id
    assert report.problem == f"event {newest.id} does not have the anchored hash: the log was rewritten"


def test_a_malformed_anchor_is_refused(tmp_path: Path) -> None:
    """Checked before the data dir is opened: no database needed."""
    anchors = ["12", "5:" + "a" * 63]
    procs = [subprocess.Popen([BASTION, "events", "verify", "--anchor", anchor, "--data-dir", str(tmp_path)],
                              text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for anchor in anchors]
    for anchor, proc in zip(anchors, procs):
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 2, (anchor, stderr)
        assert f"invalid --anchor '{anchor}': use ID:HASH as printed by `bastion events head`" in " ".join(
            stderr.split()), anchor
    assert not any(tmp_path.iterdir())  # nothing created


# ---------------------------------------------------------------------------------------------
# Each user's own history
# ---------------------------------------------------------------------------------------------

def _history_ids(client: TestClient) -> list[int]:
    return [int(i) for i in re.findall(r"<tr>\s*<td>(\d+)</td>", page(client, "/account/history"))]


def test_users_see_their_own_history_and_not_others(log: Log) -> None:
    events = _events(log)
    own = {name: [e.id for e in reversed(events) if e.actor_id == uid or e.subject == f"user:{name}"]
           for name, uid in log.ids.items()}
    open_session(log.bastion, log.client, "alice")
    alice_sees = _history_ids(log.client)
    log.client.cookies.clear()
    open_session(log.bastion, log.client, "bob")
    bob_sees = _history_ids(log.client)
    assert alice_sees == own["alice"] and bob_sees == own["bob"]
    assert len(alice_sees) >= 15 and len(bob_sees) >= 2
    actors = {e.id: e.actor for e in events}
    assert {actors[i] for i in bob_sees} <= {"bob", "operator (cli)"}
    assert not set(alice_sees) & {e.id for e in events if e.actor == "bob"}
    assert not set(bob_sees) & {e.id for e in events if e.actor == "alice"}
    # the policy change (the operator's) is nobody's account history
    policy = next(e.id for e in events if e.action == "policy.changed")
    assert policy not in alice_sees and policy not in bob_sees
