"""The audit log: every security-relevant action leaves one event, and the events form a hash chain."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
from sqlalchemy import select

from bastion.accounts import service as accounts
from bastion.accounts.models import User
from bastion.authz import OPERATOR
from bastion.events import Event
from tests.conftest import BACKENDS, require_backend
from tests.unit.world import Recipe, World

GENESIS = "0" * 64


@dataclasses.dataclass
class Row:
    """An event as read from the database (plain values, so a test can alter a copy)."""

    id: int
    time: str
    action: str
    actor_id: int | None
    actor: str | None
    subject: str | None
    ip_hash: str | None
    user_agent: str | None
    details: dict
    prev_hash: str
    hash: str


def events(w: World) -> list[Row]:
    with w.bastion.db.read() as session:
        return [Row(e.id, e.time.isoformat(), e.action, e.actor_id, e.actor, e.subject, e.ip_hash, e.user_agent,
                    e.details, e.prev_hash, e.hash)
                for e in session.execute(select(Event).order_by(Event.id)).scalars()]


def chain_problems(rows: list[Row]) -> list[str]:
    """Everything wrong with the chain, recomputing each hash from the event's own fields."""
    problems = []
    previous = GENESIS
    for event in rows:
        if event.prev_hash != previous:
            problems.append(f"event {event.id}: prev_hash does not link to the previous event")
        fields = {
            "time": event.time, "action": event.action, "actor_id": event.actor_id,
            "actor": event.actor, "subject": event.subject, "ip_hash": event.ip_hash,
            "user_agent": event.user_agent, "details": event.details,
        }
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
        if hashlib.sha256((event.prev_hash + canonical).encode()).hexdigest() != event.hash:
            problems.append(f"event {event.id}: hash does not match its contents")
        previous = event.hash
    return problems


def run_every_action(w: World) -> None:
    """Operator bootstrap, then every action over HTTP."""
    bastion, client = w.bastion, w.client
    with bastion.db.write() as session:
        accounts.create_user(session, "root", "root@example.org", "a-long-password", principal=OPERATOR,
                             secret=bastion.secret)
        accounts.set_admin(session, "root", principal=OPERATOR, secret=bastion.secret)
    root = w.token("root", "root", expires=None)
    api = {"Authorization": f"Bearer {root}"}
    assert client.post("/api/v1/users", headers=api, json={"name": "alice", "email": "alice@example.org",
                                                           "password": "another-long-one"}).status_code == 201
    made = client.post("/api/v1/users/alice/tokens", headers=api, json={"projects": ["ev-proj"], "expires": "1d"})
    assert made.status_code == 201
    w.tokens["alice"], w.token_ids["alice"] = made.json()["token"], made.json()["id"]
    alice_api = {"Authorization": f"Bearer {w.tokens['alice']}"}
    assert w.upload(w.tokens["alice"], "ev-proj", "1.0").status_code == 200
    roles = "/api/v1/projects/ev-proj/roles"
    assert client.post(roles, headers=alice_api, json={"user": "root", "role": "maintainer"}).status_code == 200
    assert client.delete(f"{roles}/root", headers=alice_api).status_code == 200
    release = "/api/v1/projects/ev-proj/releases/1.0"
    assert client.post(f"{release}/yank", headers=alice_api, json={"reason": "oops"}).status_code == 200
    assert client.post(f"{release}/unyank", headers=alice_api).status_code == 200
    assert client.delete(f"/api/v1/tokens/{w.token_ids['alice']}", headers=api).status_code == 200
    assert client.post("/api/v1/users/alice/admin", headers=api).status_code == 200


WORLD = Recipe(run_every_action, "events", share=False)


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return require_backend(request.param)


@pytest.fixture(scope="module")
def w(world: World) -> World:
    """Every action done once per backend; the tests only read the log (no reset between them)."""
    return world


def test_every_security_relevant_action_leaves_an_event(w: World) -> None:
    ids = w.token_ids
    rows = events(w)
    got = [(e.action, e.actor, e.subject) for e in rows]
    operator = OPERATOR.username
    assert got == [
        ("user.created", operator, "user:root"),
        ("user.admin_set", operator, "user:root"),
        ("token.created", operator, "user:root"),
        ("user.created", "root", "user:alice"),
        ("token.created", "root", "user:alice"),
        ("project.created", "alice", "project:ev-proj"),
        ("token.used", "alice", f"token:{ids['alice']}"),
        ("file.uploaded", "alice", "project:ev-proj"),
        ("role.granted", "alice", "project:ev-proj"),
        ("role.removed", "alice", "project:ev-proj"),
        ("release.yanked", "alice", "project:ev-proj"),
        ("release.unyanked", "alice", "project:ev-proj"),
        ("token.revoked", "root", f"token:{ids['alice']}"),
        ("user.admin_set", "root", "user:alice"),
    ]
    by_action = {}
    for event in rows:
        by_action.setdefault(event.action, []).append(event)
    assert by_action["user.created"][1].details == {"email": "alice@example.org"}
    assert by_action["token.created"][1].details["token_id"] == ids["alice"]
    assert by_action["token.created"][1].details["projects"] == ["ev-proj"]
    assert by_action["token.created"][0].details == {"token_id": ids["root"], "projects": None, "expires": None}
    upload = by_action["file.uploaded"][0].details
    assert upload["filename"] == "ev_proj-1.0-py3-none-any.whl" and upload["version"] == "1.0"
    assert upload["token_id"] == ids["alice"] and len(upload["sha256"]) == 64
    assert by_action["role.granted"][0].details == {"user": "root", "role": "maintainer"}
    assert by_action["role.removed"][0].details == {"user": "root", "role": "maintainer"}
    assert by_action["release.yanked"][0].details == {"version": "1.0", "reason": "oops"}
    assert by_action["release.unyanked"][0].details == {"version": "1.0", "reason": None}
    # who and from where: the CLI/operator has no address; HTTP callers' addresses are stored hashed
    with w.bastion.db.read() as session:
        user_ids = dict(session.execute(select(User.username, User.id)).all())
    assert rows[0].actor_id is None and rows[0].ip_hash is None and rows[0].user_agent == "bastion-cli"
    for event in rows[3:]:
        assert event.actor_id == user_ids[event.actor]
        assert event.ip_hash is not None and len(event.ip_hash) == 32 and event.ip_hash != "testclient"
        assert event.user_agent == "testclient"
    assert len({e.ip_hash for e in rows[3:]}) == 1


def test_events_form_a_hash_chain(w: World) -> None:
    rows = events(w)
    assert len(rows) == 14
    assert rows[0].prev_hash == GENESIS
    for previous, event in zip(rows, rows[1:]):
        assert event.prev_hash == previous.hash
    assert len({e.hash for e in rows}) == len(rows)
    assert chain_problems(rows) == []


@pytest.mark.parametrize("field", ["action", "actor", "subject", "details", "time", "user_agent"])
def test_the_chain_check_detects_an_edited_event(w: World, field: str) -> None:
    rows = events(w)
    value = {"details": {"forged": True}}.get(field, "forged")
    edited = [*rows[:5], dataclasses.replace(rows[5], **{field: value}), *rows[6:]]
    assert chain_problems(edited) == [f"event {rows[5].id}: hash does not match its contents"]


def test_the_chain_check_detects_a_removed_event(w: World) -> None:
    rows = events(w)
    assert chain_problems(rows[:4] + rows[5:]) == [
        f"event {rows[5].id}: prev_hash does not link to the previous event"]
    assert chain_problems(rows[1:]) == [f"event {rows[1].id}: prev_hash does not link to the previous event"]
