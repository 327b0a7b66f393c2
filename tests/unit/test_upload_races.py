"""The upload transaction against concurrent writers and its own bookkeeping (SQLite and
PostgreSQL): a revocation during an upload, and a new project's serial after its first file."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bastion.accounts import service as accounts
from bastion.accounts.models import ApiToken
from bastion.authz import OPERATOR
from bastion.packaging import upload as upload_module
from bastion.packaging.importer import import_paths
from bastion.packaging.models import JournalEntry, Project
from bastion.services import Bastion
from tests.conftest import make_user, post_upload
from tests.distbuilder import make_wheel, upload_form


def _serials(bastion: Bastion, name: str) -> tuple[int, int]:
    with bastion.db.read() as session:
        last = session.execute(select(Project.last_serial).where(Project.normalized_name == name)).scalar_one()
        newest = session.execute(select(func.max(JournalEntry.id)).where(JournalEntry.name == name)).scalar_one()
    return last, newest


def test_a_new_projects_first_upload_leaves_its_newest_serial(client, bastion: Bastion,  # type: ignore[no-untyped-def]
                                                              tmp_path: Path) -> None:
    token = make_user(bastion, "alice")
    wheel = make_wheel(tmp_path, "fresh-proj", "1.0")
    assert post_upload(client, token, wheel, upload_form(wheel, "fresh-proj", "1.0")).status_code == 200
    last, newest = _serials(bastion, "fresh-proj")
    assert last == newest, f"projects.last_serial={last}, but the newest journal entry is {newest}"
    page = client.get("/simple/fresh-proj/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    assert page.json()["meta"]["_last-serial"] == newest
    assert client.get("/pypi/fresh-proj/json").json()["last_serial"] == newest


def test_a_new_project_imported_with_one_file_has_its_newest_serial(bastion: Bastion, tmp_path: Path) -> None:
    make_user(bastion, "alice")
    (tmp_path / "tree").mkdir()
    make_wheel(tmp_path / "tree", "single-proj", "1.0")
    assert import_paths(bastion, [tmp_path / "tree"], "alice", workers=1).counts()["accepted"] == 1
    last, newest = _serials(bastion, "single-proj")
    assert last == newest


def test_a_revocation_during_an_upload_completes_and_wins(client, bastion: Bastion, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The upload takes the audit chain's lock before the token's row, as a revocation does: on
    PostgreSQL the opposite order deadlocked (the revoke or the upload failed). The revocation
    succeeds; the upload is refused as revoked or, if it committed first, accepted."""
    token = make_user(bastion, "alice")
    first = make_wheel(tmp_path, "race-proj", "1.0")
    assert post_upload(client, token, first, upload_form(first, "race-proj", "1.0")).status_code == 200
    with bastion.db.read() as session:
        token_id = session.execute(select(ApiToken.id)).scalar_one()
    entered = threading.Event()
    original = upload_module._project_for

    def slow_project_for(*args, **kwargs):  # type: ignore[no-untyped-def]
        entered.set()
        time.sleep(0.5)  # inside the upload's transaction: the revocation starts meanwhile
        return original(*args, **kwargs)

    monkeypatch.setattr(upload_module, "_project_for", slow_project_for)
    results: dict[str, object] = {}

    def do_upload() -> None:
        wheel = make_wheel(tmp_path, "race-proj", "1.1")
        response = post_upload(client, token, wheel, upload_form(wheel, "race-proj", "1.1"))
        results["upload"] = (response.status_code, response.text)

    def do_revoke() -> None:
        entered.wait(10)
        try:
            with bastion.db.write() as session:
                accounts.revoke_token(session, token_id, principal=OPERATOR, secret=bastion.secret)
            results["revoke"] = "ok"
        except Exception as exc:  # noqa: BLE001  (the assertion shows it)
            results["revoke"] = repr(exc)

    threads = [threading.Thread(target=do_upload), threading.Thread(target=do_revoke)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results.get("revoke") == "ok", results
    status, text = results["upload"]  # type: ignore[misc]
    assert status == 200 or (status == 403 and "revoked" in text), results
    with bastion.db.read() as session:
        assert session.get(ApiToken, token_id).revoked is not None
