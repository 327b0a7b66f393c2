"""The ``bastion`` command, run as a subprocess on a temporary data dir (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from sqlalchemy import select

from bastion.accounts import service as accounts
from bastion.accounts.models import ApiToken, User
from bastion.accounts.passwords import verify_password
from bastion.accounts.service import authenticate_token
from bastion.authz import OPERATOR
from bastion.errors import Forbidden
from bastion.events import CLI_CONTEXT, Event
from bastion.packaging import service as packaging
from bastion.services import Bastion
from bastion.settings import load_settings
from tests.unit.world import state

BASTION = str(Path(sys.executable).parent / "bastion")


def _env(database_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env["COLUMNS"] = "80"  # as in a pipe or a narrow terminal
    if database_url:
        env["BASTION_DATABASE_URL"] = database_url
    return env


def start(data_dir: Path | None, database_url: str | None, *args: str, stdin: str | None = None) -> subprocess.Popen:
    command = [BASTION, *args] + (["--data-dir", str(data_dir)] if data_dir else [])
    proc = subprocess.Popen(command, env=_env(database_url), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc._stdin_text = stdin  # type: ignore[attr-defined]
    return proc


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = proc.communicate(proc._stdin_text, timeout=60)  # type: ignore[attr-defined]
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def run(data_dir: Path | None, database_url: str | None, *args: str, stdin: str | None = None):  # type: ignore[no-untyped-def]
    return finish(start(data_dir, database_url, *args, stdin=stdin))


def open_bastion(data_dir: Path, database_url: str) -> Bastion:
    return Bastion(load_settings(data_dir, database_url=database_url))


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path, lazily registered ones included (loaded through get_command)."""
    context = click.Context(group)
    found = [prefix]
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        assert command is not None, name
        if isinstance(command, click.Group):
            found += _commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


CLIENT_COMMANDS = {("verify-proxy",), ("download",), ("audit",)}  # they talk to an index over HTTP


def test_every_command_has_help() -> None:
    from bastion.cli import main

    commands = _commands(main)
    assert ("token", "create") in commands and ("project", "yank") in commands and ("serve",) in commands
    procs = {command: start(None, None, *command, "--help") for command in commands}
    for command, proc in procs.items():
        result = finish(proc)
        assert result.returncode == 0, (command, result.stderr)
        assert result.stdout.startswith("Usage: bastion"), command
        leaf = main
        for part in command:
            leaf = leaf.get_command(click.Context(leaf), part)
        if not isinstance(leaf, click.Group):
            # Operator commands act on a data dir; the TUF client commands act on a remote index.
            option = "--index" if command in CLIENT_COMMANDS else "--data-dir"
            assert option in result.stdout, command
            if command in CLIENT_COMMANDS:
                assert "--data-dir" not in result.stdout, command
    short = run(None, None, "token", "-h")
    assert short.returncode == 0 and "Usage: bastion token" in short.stdout


def test_user_and_token_lifecycle(data_dir: Path, database_url: str) -> None:
    created = run(data_dir, database_url, "user", "create", "alice", "--email", "alice@example.org",
                  stdin="a-long-password\n")
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == "created user alice"
    admin = run(data_dir, database_url, "user", "set-admin", "alice")
    assert admin.returncode == 0, admin.stderr
    made = run(data_dir, database_url, "token", "create", "--user", "alice", "--project", "Foo_Bar",
               "--project", "baz", "--expires", "7d")
    assert made.returncode == 0, made.stderr
    assert made.stdout.count("\n") == 1 and made.stdout.endswith("\n")
    token = made.stdout.strip()
    assert token.startswith("bastion-") and len(made.stdout.splitlines()) == 1
    assert "scope baz, foo-bar" in made.stderr and token not in made.stderr

    bastion = open_bastion(data_dir, database_url)
    try:
        with bastion.db.read() as session:
            user = session.execute(select(User).where(User.username == "alice")).scalar_one()
            assert user.is_admin and verify_password(user.password_hash, "a-long-password")
            principal, row = authenticate_token(session, bastion.secret, token)
        assert principal.username == "alice" and principal.token_projects == frozenset({"foo-bar", "baz"})
        assert abs(row.expires.timestamp() - (time.time() + 7 * 86400)) < 120
        assert f"token {row.id} for alice" in made.stderr

        listing = run(data_dir, database_url, "token", "list", "--user", "alice")
        assert listing.returncode == 0, listing.stderr
        assert row.id in listing.stdout, "the listed id must be usable with `token revoke`"
        assert "baz, foo-bar" in listing.stdout
        assert token not in listing.stdout and token[len("bastion-"):][:40] not in listing.stdout

        revoked = run(data_dir, database_url, "token", "revoke", row.id)
        assert revoked.returncode == 0, revoked.stderr
        assert revoked.stdout.strip() == f"revoked {row.id}"
        with bastion.db.read() as session:
            assert session.get(ApiToken, row.id).revoked is not None
            with pytest.raises(Forbidden, match="revoked"):
                authenticate_token(session, bastion.secret, token)
            events = list(session.execute(select(Event).order_by(Event.id)).scalars())
        assert [e.action for e in events] == ["user.created", "user.admin_set", "token.created", "token.revoked"]
        assert {(e.actor, e.actor_id, e.user_agent) for e in events} == {(OPERATOR.username, None, "bastion-cli")}
        assert [e.prev_hash for e in events] == ["0" * 64] + [e.hash for e in events[:-1]]
    finally:
        bastion.close()


SQLITE_ONLY_REFUSALS: dict[str, tuple[tuple[str, ...], str | None, int, str]] = {
    "markup in a name": (("user", "create", "x[/]y", "--email", "x@example.org"), "a-long-password\n", 1,
                         "invalid username 'x[/]y'"),
    "bad expiry": (("token", "create", "--user", "alice", "--expires", "30x"), None, 2, "invalid --expires '30x'"),
    "unknown role": (("project", "add-role", "cli-proj", "alice", "admin"), None, 2,
                     "'admin' is not one of 'owner', 'maintainer'"),
    "advisories import, missing source": (("advisories", "import", "/nonexistent/advisories"), None, 2,
                                          "/nonexistent/advisories does not exist: give a directory in the PyPA"),
}


def test_refusals_leave_nothing_changed(data_dir: Path, database_url: str, backend: str) -> None:
    bastion = open_bastion(data_dir, database_url)
    try:
        with bastion.db.write() as session:
            accounts.create_user(session, "alice", "alice@example.org", "a-long-password", principal=OPERATOR)
            owner = session.execute(select(User).where(User.username == "alice")).scalar_one()
            packaging.create_project(session, "cli-proj", owner, prohibited=frozenset(), context=CLI_CONTEXT,
                                     secret=bastion.secret)
        before = state(bastion)
        # name: (args, stdin, exit code, message on stderr)
        refusals: dict[str, tuple[tuple[str, ...], str | None, int, str]] = {
            "short password": (("user", "create", "bob", "--email", "bob@example.org"), "short\n", 1,
                               "password too short: use at least 10 characters"),
            "add-role, unknown project": (("project", "add-role", "nope", "alice", "maintainer"), None, 1,
                                          "no project named 'nope'"),
            "add-role, unknown user": (("project", "add-role", "cli-proj", "nobody", "maintainer"), None, 1,
                                       "no user named 'nobody'"),
            "yank, unknown project": (("project", "yank", "nope", "1.0", "--reason", "x"), None, 1,
                                      "no project named 'nope'"),
            "review, unknown case": (("review", "release", "999"), None, 1, "no review case #999"),
            "review show, unknown case": (("review", "show", "999"), None, 1, "no review case #999"),
            "review trust, unknown user": (("review", "trust", "nobody"), None, 1, "no user named 'nobody'"),
            "review quarantine, unknown project": (("review", "quarantine", "nope", "--reason", "x"), None, 1,
                                                   "no project named 'nope'"),
            "names ban, invalid name": (("names", "ban", "bad name!"), None, 1,
                                        "'bad name!' is not a valid project name"),
            "names clear, no rule": (("names", "clear", "nothing-here"), None, 1,
                                     "no rule for the name 'nothing-here'"),
            "advisories show, unknown id": (("advisories", "show", "NOPE-1"), None, 1,
                                            "no advisory 'NOPE-1' is stored: import advisories first"),
        }
        if backend == "sqlite":  # refusals that do not depend on the database: one backend is enough
            refusals.update(SQLITE_ONLY_REFUSALS)
        procs = {name: start(data_dir, database_url, *args, stdin=stdin)
                 for name, (args, stdin, _, _) in refusals.items()}
        results = {name: finish(proc) for name, proc in procs.items()}
        for name, result in results.items():
            _, _, code, message = refusals[name]
            assert result.returncode == code, (name, result.returncode, result.stderr)
            assert result.stdout == "", name
            if code == 1 or "--expires" in message:
                assert result.stderr.startswith("error: "), (name, result.stderr)
            assert message in result.stderr, (name, result.stderr)
            assert "Traceback" not in result.stderr, name
        assert state(bastion) == before
    finally:
        bastion.close()
