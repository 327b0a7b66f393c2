"""The 2FA mandate end to end (issue 3): a live ``bastion serve``, real HTTP downloads, the
critical-projects task run with ``bastion insights recompute``, and real twine.

121 projects exist; demo-pkg alone is downloaded, so it is the top 1% and becomes critical. Its
owner alice has no 2FA: twine's upload is refused with the server's reason phrase (which twine
prints). alice enables TOTP through the web pages (httpx, the forms as a browser posts them), and
the same upload, with the same token, succeeds.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urljoin

import pyotp
import pytest
from sqlalchemy import func, select

from bastion.events import CLI_CONTEXT, Event
from bastion.insights.models import CriticalProject, DownloadCount, MfaSnapshot
from bastion.packaging import service as packaging
from bastion.packaging.models import Project
from bastion.services import Bastion
from bastion.settings import load_settings
from tests.integration.conftest import (
    USER_PASSWORD,
    Dists,
    LiveServer,
    _shutdown,
    _sqlite_data_dir,
    describe,
    output,
    start_server,
)

FILLERS = 120


@pytest.fixture
def server(backend: str, database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """A fresh server that writes its download counts every second (the default is 10 s)."""
    if backend == "sqlite":
        data_dir, url = _sqlite_data_dir(database_url), None
    else:
        data_dir, url = tmp_path / "pgdata", database_url
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "bastion.toml").write_text('download_flush_interval = "1s"\n')
    live = start_server(backend, data_dir, url, tmp_path / "home")
    yield live
    _shutdown(live)


@pytest.fixture
def same_database(server: LiveServer) -> Iterator[Bastion]:
    """The server's database and data dir, opened in this process (another process, as the CLI is)."""
    instance = Bastion(load_settings(server.data_dir, database_url=server.database_url), run_migrations=False)
    yield instance
    instance.close()


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', html)
    assert found, html[:2000]
    return found.group(1)


def enable_totp_on_the_web(server: LiveServer, user: str) -> list[str]:
    """Sign in and enroll an authenticator app through the pages; the recovery codes shown."""
    with server.http() as web:
        login = web.get("/account/login")
        signed = web.post("/account/login", data={"csrf_token": _csrf(login.text), "username": user,
                                                  "password": USER_PASSWORD})
        assert signed.status_code == 303 and signed.headers["location"] == "/account/", signed.text
        mfa_page = web.get("/account/2fa")
        assert mfa_page.status_code == 200 and 'id="mfa-status">not enabled' in mfa_page.text
        begun = web.post("/account/2fa/totp/begin", data={"csrf_token": _csrf(mfa_page.text)})
        assert begun.status_code == 200, begun.text
        secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', begun.text)
        assert secret, begun.text
        done = web.post("/account/2fa/totp/confirm", data={"csrf_token": _csrf(begun.text),
                                                           "code": pyotp.TOTP(secret.group(1)).now()})
        assert done.status_code == 200, done.text
        codes = re.search(r'id="recovery-codes">(.*?)</pre>', done.text, re.S)
        assert codes, done.text
        assert 'id="mfa-status">enabled' in web.get("/account/2fa").text
        return codes.group(1).split()


def make_fillers(bastion: Bastion) -> None:
    """Many projects, cheaply, through the service layer (no files: they are never downloaded)."""
    with bastion.db.write() as session:
        for number in range(FILLERS):
            packaging.create_project(session, f"filler-{number:03d}", None, prohibited=frozenset(),
                                     context=CLI_CONTEXT, secret=bastion.secret)


def download(server: LiveServer, project: str, times: int) -> None:
    """GET the project's only file ``times`` times over HTTP."""
    files = server.simple_json(project)["files"]
    assert len(files) == 1
    url = urljoin(f"{server.url}/simple/{project}/", files[0]["url"])  # relative to the page
    with server.http() as client:
        for _ in range(times):
            response = client.get(url)
            assert response.status_code == 200 and len(response.content) == files[0]["size"]


def counted(bastion: Bastion) -> int:
    with bastion.db.read() as session:
        return int(session.execute(select(func.coalesce(func.sum(DownloadCount.count), 0))).scalar_one())


def critical_projects(bastion: Bastion) -> list[str]:
    with bastion.db.read() as session:
        return list(session.execute(select(Project.normalized_name).join(
            CriticalProject, CriticalProject.project_id == Project.id)).scalars())


def test_a_critical_projects_owner_needs_2fa_to_upload(server: LiveServer, same_database: Bastion,
                                                       dists: Dists) -> None:
    bastion = same_database
    make_fillers(bastion)
    server.twine_ok([dists.wheel("demo-pkg-1.0.0")])  # alice creates demo-pkg (not critical yet: allowed)

    # downloads of demo-pkg's file over HTTP: the server counts them and writes them every second
    download(server, "demo-pkg", 4)
    deadline = time.monotonic() + 30
    while counted(bastion) < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert counted(bastion) == 4, "the server did not write its download counts"

    # the daily task, run now
    ranked = server.cli_ok("insights", "recompute")
    assert ranked.stdout == "newly critical: demo-pkg\n", describe(ranked)
    with bastion.db.read() as session:
        assert session.execute(select(func.count()).select_from(Project)).scalar_one() == FILLERS + 1
    assert critical_projects(bastion) == ["demo-pkg"]  # the top 1% of 121 projects: 2 slots, 1 downloaded

    # alice, without 2FA: twine prints the refusal
    wheel = dists.wheel("demo-pkg-1.1.0")
    result = server.twine_upload([wheel])
    assert result.returncode != 0, describe(result)
    text = output(result)
    assert "403" in text, describe(result)
    assert ("two-factor authentication is required: project 'demo-pkg' requires 2FA of user 'alice'; "
            "enable two-factor authentication (an authenticator app or a security key) on your account page, "
            "/account/2fa, then retry") in text, describe(result)
    assert wheel.name not in server.filenames("demo-pkg")
    # her other projects are not held back
    server.twine_ok(dists.files("demo-dep-0.1.0"))

    # TOTP through the web pages; then the same upload with the same token succeeds
    codes = enable_totp_on_the_web(server, "alice")
    assert len(codes) == 8
    server.twine_ok([wheel])
    assert wheel.name in server.filenames("demo-pkg")

    with bastion.db.read() as session:
        actions = list(session.execute(select(Event.action).order_by(Event.id)).scalars())
    for action in ("project.critical", "login.succeeded", "mfa.totp_added", "mfa.recovery_codes_generated",
                   "token.used", "file.uploaded"):
        assert action in actions, (action, actions)
    assert actions[-1] == "file.uploaded" and actions[-2] == "token.used"  # the accepted upload, last
    verified = server.cli_ok("events", "verify")
    assert verified.stdout.startswith(f"audit chain verified: {len(actions)} events"), describe(verified)


def test_the_recompute_command_on_an_index_without_downloads(server: LiveServer, same_database: Bastion) -> None:
    result = server.cli_ok("insights", "recompute")
    assert result.stdout == "no project newly critical\n", describe(result)
    with same_database.db.read() as session:  # the snapshot it took
        days = session.execute(select(MfaSnapshot.day)).scalars().all()
    assert days == [datetime.now(UTC).date()]
