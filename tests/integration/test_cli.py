"""The `bastion` command's contract: --help everywhere, errors on stderr with a non-zero exit."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.conftest import BASTION, Dists, LiveServer, clean_env, describe, flat, run

COMMANDS = [
    (["serve"], ["--port", "--host", "--data-dir"]),
    (["user", "create"], ["NAME", "--email", "--data-dir"]),
    (["user", "set-admin"], ["NAME", "--data-dir"]),
    (["token", "create"], ["--user", "--project", "--expires", "--data-dir"]),
    (["project", "add-role"], ["PROJECT", "USER", "owner", "maintainer", "--data-dir"]),
    (["project", "yank"], ["PROJECT", "VERSION", "--reason", "--undo", "--data-dir"]),
]


@pytest.mark.parametrize(("command", "mentions"), COMMANDS, ids=[" ".join(c) for c, _ in COMMANDS])
def test_every_command_answers_help(command: list[str], mentions: list[str], tmp_path: Path) -> None:
    result = run([BASTION, *command, "--help"], env=clean_env(tmp_path / "home"), cwd=tmp_path)
    assert result.returncode == 0, describe(result)
    assert result.stdout.startswith(f"Usage: bastion {' '.join(command)} "), describe(result)
    for mention in mentions:
        assert mention in result.stdout, (mention, describe(result))
    assert result.stderr == ""
    # Asking for help touches nothing: no data dir appears in the working directory.
    assert not (tmp_path / "bastion-data").exists()


def test_top_level_help_lists_the_command_groups(tmp_path: Path) -> None:
    result = run([BASTION, "--help"], env=clean_env(tmp_path / "home"), cwd=tmp_path)
    assert result.returncode == 0, describe(result)
    for group in ("serve", "user", "token", "project"):
        assert f"  {group} " in result.stdout, describe(result)


def test_serve_reports_an_unreachable_database(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = clean_env(tmp_path / "home", BASTION_DATABASE_URL=f"postgresql+psycopg://nobody@127.0.0.1:{port}/none")
    result = run([BASTION, "serve", "--port", "0", "--data-dir", str(tmp_path / "data")], env=env, timeout=60)
    assert result.returncode != 0, describe(result)
    assert "cannot prepare the data dir or database" in flat(result.stderr), describe(result)
    assert "Traceback" not in result.stderr, describe(result)
    assert result.stdout == ""


@pytest.mark.parametrize(
    "command",
    [["user", "create", "erin", "--email", "erin@example.org"], ["token", "create", "--user", "alice"],
     ["project", "yank", "demo-pkg", "1.0.0"]],
    ids=["user-create", "token-create", "project-yank"],
)
def test_commands_report_an_unreachable_database(command: list[str], tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = clean_env(tmp_path / "home", BASTION_DATABASE_URL=f"postgresql+psycopg://nobody@127.0.0.1:{port}/none")
    result = run([BASTION, *command, "--data-dir", str(tmp_path / "data")], env=env, input="a-long-password\n")
    assert result.returncode != 0, describe(result)
    assert "Traceback" not in result.stderr, describe(result)
    stderr = flat(result.stderr)
    assert stderr.startswith("error: cannot open the data dir or database"), describe(result)
    assert f"port {port} failed" in stderr, describe(result)  # the message names what is unreachable
    assert result.stdout == ""


def test_serve_rejects_a_bad_port(tmp_path: Path) -> None:
    result = run([BASTION, "serve", "--port", "70000", "--data-dir", str(tmp_path / "data")],
                 env=clean_env(tmp_path / "home"))
    assert result.returncode == 2, describe(result)
    assert "--port" in result.stderr and "70000" in result.stderr, describe(result)
    assert not (tmp_path / "data").exists()


# -- errors against a real data dir and database (the CLI next to a running server) -----------

@pytest.fixture(scope="module")
def operator(module_server: LiveServer, dists: Dists) -> Iterator[LiveServer]:
    module_server.twine_ok(dists.files("demo-pkg-1.0.0"))
    yield module_server


ERRORS = [
    pytest.param(["token", "create", "--user", "nobody"], 1, ["no user named 'nobody'", "bastion user create nobody"],
                 id="token-unknown-user"),
    pytest.param(["user", "set-admin", "nobody"], 1, ["no user named 'nobody'"], id="set-admin-unknown-user"),
    pytest.param(["project", "add-role", "demo-pkg", "nobody", "maintainer"], 1, ["no user named 'nobody'"],
                 id="add-role-unknown-user"),
    pytest.param(["project", "add-role", "no-such-project", "alice", "maintainer"], 1,
                 ["no project named 'no-such-project'"], id="add-role-unknown-project"),
    pytest.param(["project", "yank", "no-such-project", "1.0"], 1, ["no project named 'no-such-project'"],
                 id="yank-unknown-project"),
    pytest.param(["project", "yank", "demo-pkg", "9.9"], 1, ["has no release 9.9"], id="yank-unknown-version"),
    pytest.param(["project", "yank", "demo-pkg", "not a version"], 1, ["invalid version 'not a version'"],
                 id="yank-invalid-version"),
    pytest.param(["token", "create", "--user", "alice", "--expires", "30x"], 2,
                 ["invalid --expires '30x'", "30d"], id="bad-expires-unit"),
    pytest.param(["token", "create", "--user", "alice", "--expires", "0d"], 2,
                 ["invalid --expires '0d'", "longer than zero"], id="bad-expires-zero"),
    pytest.param(["project", "add-role", "demo-pkg", "alice", "admin"], 2,
                 ["'admin' is not one of 'owner', 'maintainer'"], id="bad-role"),
    pytest.param(["project", "add-role", "demo-pkg", "alice", "owner"], 1, ["already owner of 'demo-pkg'"],
                 id="role-already-held"),
    pytest.param(["token", "create", "--user", "[/red]x"], 1, ["no user named '[/red]x'"],
                 id="unknown-user-with-markup-characters"),
]


Results = dict[tuple[str, ...], subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def error_results(operator: LiveServer) -> Results:
    """Every failing command of ERRORS, run at once (they change nothing; each one is a subprocess)."""
    commands = [tuple(param.values[0]) for param in ERRORS]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda args: operator.cli(*args), commands))
    return dict(zip(commands, results))


@pytest.mark.parametrize(("args", "code", "messages"), ERRORS)
def test_errors_go_to_stderr_with_a_non_zero_exit(error_results: Results, args: list[str], code: int,
                                                 messages: list[str]) -> None:
    result = error_results[tuple(args)]
    assert result.returncode == code, describe(result)
    assert result.stdout == "", describe(result)  # nothing (no token!) on stdout
    stderr = flat(result.stderr)
    for message in messages:
        assert message in stderr, (message, describe(result))
    assert "Traceback" not in result.stderr, describe(result)


@pytest.mark.parametrize(
    ("name", "email", "password", "message"),
    [
        ("alice", "alice@example.org", "a-long-password", "a user named 'alice' already exists"),
        ("bad name!", "x@example.org", "a-long-password", "invalid username 'bad name!'"),
        ("carol", "not-an-email", "a-long-password", "invalid email address 'not-an-email'"),
        ("carol", "carol@example.org", "short", "password too short"),
    ],
    ids=["duplicate", "bad-username", "bad-email", "short-password"],
)
def test_user_create_refusals(operator: LiveServer, name: str, email: str, password: str, message: str) -> None:
    result = operator.cli("user", "create", name, "--email", email, input=password + "\n")
    assert result.returncode == 1, describe(result)
    assert message in flat(result.stderr), describe(result)
    assert "created user" not in result.stdout


def test_successful_commands_report_on_stdout(operator: LiveServer) -> None:
    operator.create_user("dave")
    result = operator.cli_ok("user", "set-admin", "dave")
    assert "dave is now an index admin" in result.stdout
    result = operator.cli_ok("project", "add-role", "demo-pkg", "dave", "owner")
    assert "dave is now owner of demo-pkg" in result.stdout
    token = operator.create_token("dave", "--expires", "2h", "--project", "demo-pkg", "--description", "ci")
    result = operator.cli_ok("token", "create", "--user", "dave", "--expires", "never")
    assert "expires never" in flat(result.stderr)
    # The printed token works: dave (now an owner) yanks a release through the API.
    with operator.http() as client:
        response = client.post("/api/v1/projects/demo-pkg/releases/1.0.0/yank", json={"reason": "via api"},
                               headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert operator.simple_json("demo-pkg")["files"][0]["yanked"] == "via api"
