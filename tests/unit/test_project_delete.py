"""Deleting a project, from the owners' page and from the CLI: everything of the project goes (rows,
pages, cached pages, blobs), nothing else changes, the filenames stay taken, the name is free again,
and the audit log and the journal say so (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bastion.authz import OPERATOR, Principal
from bastion.errors import Forbidden, NotFound
from bastion.events import Event
from bastion.insights.models import CriticalProject, DownloadCount
from bastion.packaging import service
from bastion.packaging.models import DeletedFilename, File, JournalEntry, Project
from bastion.services import Bastion
from tests.conftest import make_user, post_upload, settle_tuf
from tests.distbuilder import make_wheel, metadata_text, upload_form
from tests.unit.test_web_pages import (
    actions,
    add_role,
    age_reauth,
    assert_page,
    enroll_2fa,
    post_form,
    reauth,
    redirected_to_sign_in,
    sign_in,
    upload,
)
from tests.unit.world import state

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
BASTION = str(Path(sys.executable).parent / "bastion")


@pytest.fixture
def doomed(bastion: Bastion, client: Any, tmp_path: Path) -> dict[str, Any]:
    """doomed (1.0 wheel and sdist, 2.0 wheel; alice owner, bob maintainer; downloaded) and
    keeper (alice), both read once through the read path so that its caches hold them."""
    tokens = {name: make_user(bastion, name) for name in ("alice", "bob", "carol")}
    tokens["root"] = make_user(bastion, "root", admin=True)
    upload(client, tmp_path, tokens["alice"], "doomed", "1.0")
    upload(client, tmp_path, tokens["alice"], "doomed", "1.0", sdist=True)
    upload(client, tmp_path, tokens["alice"], "doomed", "2.0")
    upload(client, tmp_path, tokens["alice"], "keeper", "1.0")
    add_role(bastion, "doomed", "bob", "maintainer")
    with bastion.db.write() as session:
        project = service.get_project(session, "doomed")
        files = session.execute(select(File).where(File.project_id == project.id)).scalars().all()
        session.add(DownloadCount(file_id=files[0].id, day=date(2026, 1, 1), project_id=project.id, count=10))
        paths = [f.path for f in files]
        metadata_paths = [f"{f.path}.metadata" for f in files if f.metadata_sha256]
        filenames = sorted(f.filename for f in files)
    for path in ("/simple/", "/simple/doomed/", "/simple/keeper/", "/pypi/doomed/json", "/pypi/doomed/1.0/json",
                 *(f"/{p}" for p in paths + metadata_paths)):
        assert client.get(path).status_code == 200, path
    # Nothing left for the background to write while a test compares state before and after: the
    # downloads just counted (the periodic flush wrote them mid-test on a loaded machine) and
    # the uploads' TUF signing.
    from bastion.insights.tasks import flush_downloads

    flush_downloads(bastion)
    settle_tuf(bastion)
    return {"tokens": tokens, "paths": paths, "metadata_paths": metadata_paths, "filenames": filenames}


def _listed(client: Any) -> list[str]:
    response = client.get("/simple/", headers={"Accept": SIMPLE_JSON})
    assert response.status_code == 200
    return [p["name"] for p in json.loads(response.content)["projects"]]


def _without(rows: list[tuple], column: int, value: Any) -> list[tuple]:
    return [row for row in rows if row[column] != value]


def test_owner_deletes_a_project(bastion: Bastion, client: Any, doomed: dict[str, Any]) -> None:
    with bastion.db.write() as session:
        session.add(CriticalProject(project_id=service.get_project(session, "doomed").id, downloads=10))
    sign_in(client, "alice")
    # A critical project (policy "critical"): its owners need 2FA to delete it.
    blocked = post_form(client, "/projects/doomed/delete", {"confirm": "doomed"})
    assert_page(blocked, 403)
    assert "two-factor authentication is required: project &#39;doomed&#39; requires 2FA" in blocked.text
    codes = enroll_2fa(bastion, "alice")
    sign_in(client, "alice", recovery_code=codes[0])
    age_reauth(bastion)
    asked = post_form(client, "/projects/doomed/delete", {"confirm": "doomed"})
    assert asked.url.path == "/account/reauth"  # deleting needs a fresh re-authentication
    reauth(client, recovery_code=codes[1])
    wrong = post_form(client, "/projects/doomed/delete", {"confirm": "doome"})
    assert_page(wrong, 400)
    assert "the project was not deleted: type its name, doomed" in wrong.text
    assert "doomed" in _listed(client)

    with bastion.db.read() as session:
        project_id = service.get_project(session, "doomed").id
    before = state(bastion)
    done = post_form(client, "/projects/doomed/delete", {"confirm": "doomed"})
    assert_page(done)
    assert done.url.path == "/projects/"
    assert "The project doomed was deleted, with its 2 releases and 3 files." in done.text
    after = state(bastion)

    # The read path forgets it at once, in this process (its caches held every page and file).
    for path in ("/simple/doomed/", "/pypi/doomed/json", "/pypi/doomed/1.0/json", "/projects/doomed/",
                 *(f"/{p}" for p in doomed["paths"] + doomed["metadata_paths"])):
        assert client.get(path).status_code == 404, path
    assert _listed(client) == ["keeper"]
    assert "doomed" not in client.get("/simple/").text
    assert client.get("/simple/keeper/").status_code == 200

    # Rows: the project's go, every other row stays as it was.
    db_before, db_after = before["db"], after["db"]
    assert db_after["projects"] == _without(db_before["projects"], 0, project_id)
    # The column holding the project id: releases.project_id, files.project_id, roles.project_id...
    for table, column in (("releases", 1), ("files", 2), ("roles", 1), ("download_counts", 2),
                          ("critical_projects", 0)):
        assert len(_without(db_before[table], column, project_id)) < len(db_before[table]), table
        assert db_after[table] == _without(db_before[table], column, project_id), table
    assert db_after["filename_registry"] == db_before["filename_registry"]  # filenames stay taken
    assert doomed["filenames"] == sorted(f for (f,) in db_after["filename_registry"] if f.startswith("doomed"))
    unchanged = {"users", "api_tokens", "sessions", "webauthn_credentials", "recovery_codes", "index_policy",
                 "mfa_snapshots", "alembic_version"}
    for table in unchanged & set(db_before):
        assert db_after[table] == db_before[table], table
    pages_before = {row[0]: row for row in db_before["rendered_pages"]}
    pages_after = {row[0]: row for row in db_after["rendered_pages"]}
    assert not [key for key in pages_after if "/doomed/" in key]
    assert {k: v for k, v in pages_before.items() if "/doomed/" not in k and not k.startswith("simple/index")} == {
        k: v for k, v in pages_after.items() if not k.startswith("simple/index")}
    assert pages_after["simple/index.json"] != pages_before["simple/index.json"]

    # Blobs go after commit; the journal and the audit log record the deletion.
    gone = set(doomed["paths"] + doomed["metadata_paths"])
    assert after["blobs"] == [b for b in before["blobs"] if b not in gone]
    assert len(after["db"]["journal"]) == len(before["db"]["journal"]) + 1
    with bastion.db.read() as session:
        entry = session.execute(select(JournalEntry).order_by(JournalEntry.id.desc()).limit(1)).scalar_one()
        event = session.execute(select(Event).order_by(Event.id.desc()).limit(1)).scalar_one()
    assert (entry.name, entry.action) == ("doomed", "remove project")
    assert len(after["db"]["events"]) == len(before["db"]["events"]) + 1
    assert (event.action, event.actor, event.subject) == ("project.deleted", "alice", "project:doomed")
    assert event.details["releases"] == ["1.0", "2.0"] and event.details["filenames"] == doomed["filenames"]
    assert int(client.get("/simple/", headers={"Accept": SIMPLE_JSON}).headers["x-pypi-last-serial"]) == entry.id


def test_name_is_free_again_but_filenames_are_not(bastion: Bastion, client: Any, doomed: dict[str, Any],
                                                   tmp_path: Path) -> None:
    with bastion.db.write() as session:
        deletion = service.delete_project(session, bastion, "doomed", principal=OPERATOR)
    service.delete_blobs(bastion, deletion.blob_paths)
    bastion.notify_change(deletion.serial)

    # Another user may register the name, as on PyPI...
    upload(client, tmp_path / "carol", doomed["tokens"]["carol"], "doomed", "3.0")
    with bastion.db.read() as session:
        assert {(r.username, r.role) for r in service.list_roles(session, "doomed", principal=OPERATOR)} == {
            ("carol", "owner")}
    assert client.get("/simple/doomed/").status_code == 200
    # ...but no deleted filename can come back, whoever uploads it.
    again = make_wheel(tmp_path, "doomed", "1.0", metadata=metadata_text("doomed", "1.0"))
    refused = post_upload(client, doomed["tokens"]["carol"], again, upload_form(again, "doomed", "1.0"))
    assert refused.status_code == 400
    assert "This filename has already been used" in refused.text
    # The former owner has no say on the new project.
    other = make_wheel(tmp_path, "doomed", "4.0", metadata=metadata_text("doomed", "4.0"))
    denied = post_upload(client, doomed["tokens"]["alice"], other, upload_form(other, "doomed", "4.0"))
    assert denied.status_code == 403


@pytest.mark.parametrize("who", ["bob", "carol"])
def test_only_owners_and_admins_may_delete(bastion: Bastion, client: Any, doomed: dict[str, Any], who: str) -> None:
    assert redirected_to_sign_in(client, "/projects/doomed/manage")
    sign_in(client, who)
    before = state(bastion)
    refused = post_form(client, "/projects/doomed/delete", {"confirm": "doomed"})
    assert_page(refused, 403)  # told at once, not asked to re-authenticate first
    assert "only an owner of &#39;doomed&#39; may do this" in refused.text
    assert state(bastion)["db"]["projects"] == before["db"]["projects"]
    assert state(bastion)["blobs"] == before["blobs"]
    with bastion.db.read() as session:
        with pytest.raises(Forbidden, match="only an owner"):
            service.delete_project(session, bastion, "doomed",
                                   principal=Principal(user_id=2, username=who, is_admin=False))
        with pytest.raises(Forbidden, match="authentication required"):
            service.delete_project(session, bastion, "doomed", principal=None)
        with pytest.raises(NotFound, match="no project named 'nope'"):
            service.delete_project(session, bastion, "nope", principal=OPERATOR)


def test_admin_deletes_a_project(bastion: Bastion, client: Any, doomed: dict[str, Any]) -> None:
    sign_in(client, "root")
    done = post_form(client, "/projects/Doomed/delete", {"confirm": "doomed"})
    assert "The project doomed was deleted" in done.text
    assert client.get("/simple/doomed/").status_code == 404
    assert actions(bastion, "project:doomed")[-1] == "project.deleted"
    with bastion.db.read() as session:
        assert session.execute(select(Project.normalized_name)).scalars().all() == ["keeper"]
        assert {f for f in session.execute(select(DeletedFilename.filename)).scalars()} >= set(doomed["filenames"])


# ---------------------------------------------------------------------------------------------
# The CLI
# ---------------------------------------------------------------------------------------------

def cli(data_dir: Path, database_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env["BASTION_DATABASE_URL"] = database_url
    return subprocess.run([BASTION, *args, "--data-dir", str(data_dir)], env=env, capture_output=True, text=True,
                          timeout=60)


def test_cli_delete(bastion: Bastion, client: Any, doomed: dict[str, Any], data_dir: Path,
                    database_url: str) -> None:
    before = state(bastion)
    unconfirmed = cli(data_dir, database_url, "project", "delete", "doomed")
    assert unconfirmed.returncode == 2 and "run `bastion project delete doomed --yes` to confirm" in unconfirmed.stderr
    assert state(bastion) == before
    unknown = cli(data_dir, database_url, "project", "delete", "nope", "--yes")
    assert unknown.returncode == 1 and "no project named 'nope'" in unknown.stderr

    done = cli(data_dir, database_url, "project", "delete", "Doomed", "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "deleted doomed: 2 releases, 3 files"
    # The server process sees the change through the data dir's change marker.
    assert client.get("/simple/doomed/").status_code == 404
    assert _listed(client) == ["keeper"]
    assert client.get(f"/{doomed['paths'][0]}").status_code == 404
    blobs = state(bastion)["blobs"]
    assert not set(doomed["paths"] + doomed["metadata_paths"]) & set(blobs)
    with bastion.db.read() as session:
        event = session.execute(select(Event).order_by(Event.id.desc()).limit(1)).scalar_one()
    assert (event.action, event.actor, event.user_agent) == ("project.deleted", OPERATOR.username, "bastion-cli")


def test_cli_require_2fa(bastion: Bastion, client: Any, doomed: dict[str, Any], data_dir: Path,
                         database_url: str) -> None:
    on = cli(data_dir, database_url, "project", "require-2fa", "doomed")
    assert on.returncode == 0, on.stderr
    assert on.stdout.strip() == "doomed now requires 2FA of its owners and maintainers"
    assert "without 2FA, refused until they enable it: alice, bob" in on.stderr
    again = cli(data_dir, database_url, "project", "require-2fa", "doomed")
    assert again.returncode == 1 and "'doomed' already requires two-factor authentication" in again.stderr
    assert 'id="badge-requires-2fa"' in client.get("/projects/doomed/").text
    off = cli(data_dir, database_url, "project", "require-2fa", "doomed", "--off")
    assert off.returncode == 0 and "no longer requires" in off.stdout
    with bastion.db.read() as session:
        assert not service.get_project(session, "doomed").mfa_required
        events = session.execute(
            select(Event.details).where(Event.action == "project.mfa_required_set").order_by(Event.id)
        ).scalars().all()
    assert events == [{"required": True, "without_2fa": ["alice", "bob"]}, {"required": False, "without_2fa": []}]
