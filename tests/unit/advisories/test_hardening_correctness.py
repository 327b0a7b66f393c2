"""Hardening: stored matches stay right through what happens to releases and advisories, on both
databases: a yank and unyank (matches kept; the JSON API lists them either way), a project deleted
and its name registered again (no match inherited), an advisory that renames its package on
re-import (the old project's matches and JSON page cleared), and a PYSEC -> CVE <- GHSA alias chain
shown as one advisory on the security page, its JSON twin and the JSON API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bastion.advisories.ingest import import_path
from bastion.advisories.models import VulnerabilityMatch
from bastion.authz import OPERATOR
from bastion.packaging import service
from bastion.services import Bastion
from tests.conftest import make_user
from tests.unit.advisories.test_hardening_quarantine import _upload


def _record(tree: Path, ident: str, name: str, *, modified: str, aliases: str = "", fixed: str = "2.0") -> None:
    folder = tree / "vulns" / name
    folder.mkdir(parents=True, exist_ok=True)
    for old in tree.rglob(f"{ident}.yaml"):
        old.unlink()
    (folder / f"{ident}.yaml").write_text(
        f"id: {ident}\nmodified: {modified}\naliases: [{aliases}]\nsummary: flaw {ident}\naffected:\n"
        f"- package:\n    ecosystem: PyPI\n    name: {name}\n  ranges:\n  - type: ECOSYSTEM\n    events:\n"
        f'    - introduced: "0"\n    - fixed: "{fixed}"\n')


def _ids(client: Any, url: str) -> list[str]:
    return sorted(v["id"] for v in client.get(url).json()["vulnerabilities"])


def _matches(bastion: Bastion) -> int:
    with bastion.db.read() as session:
        query = select(func.count()).select_from(VulnerabilityMatch)
        return session.execute(query).scalar_one()


def test_matches_follow_releases_and_advisories(bastion: Bastion, client: Any, tmp_path: Path) -> None:
    token = make_user(bastion, "alice")
    for name in ("oldname", "newname", "chain"):
        _upload(client, tmp_path / name, token, name, "1.0")
    tree = tmp_path / "advisories"
    _record(tree, "PYSEC-2099-31", "oldname", modified="2099-01-01T00:00:00Z")
    _record(tree, "PYSEC-2099-32", "chain", modified="2099-01-01T00:00:00Z", aliases="CVE-2099-32")
    _record(tree, "GHSA-aaaa-bbbb-cccc", "chain", modified="2099-01-01T00:00:00Z", aliases="CVE-2099-32")
    _record(tree, "CVE-2099-32", "chain", modified="2099-01-01T00:00:00Z")
    import_path(bastion, tree)
    assert _ids(client, "/pypi/oldname/json") == ["PYSEC-2099-31"]

    # Yank and unyank: the match stays, the JSON API lists it either way.
    for yanked in (True, False):
        with bastion.db.write() as session:
            serial = service.set_yanked(session, "oldname", "1.0", yanked=yanked, reason="x" if yanked else None,
                                        principal=OPERATOR)
        bastion.notify_change(serial)
        assert _ids(client, "/pypi/oldname/1.0/json") == ["PYSEC-2099-31"], yanked

    # The advisory now names another package: the old project's match and page are cleared.
    _record(tree, "PYSEC-2099-31", "newname", modified="2099-02-01T00:00:00Z")
    import_path(bastion, tree)
    assert _ids(client, "/pypi/oldname/json") == []
    assert _ids(client, "/pypi/newname/json") == ["PYSEC-2099-31"]
    assert client.get("/projects/oldname/security.json").json()["vulnerabilities"] == []

    # The alias chain is one advisory everywhere it is shown.
    listed = client.get("/pypi/chain/json").json()["vulnerabilities"]
    assert len(listed) == 1 and set(listed[0]["aliases"]) >= {"CVE-2099-32"}, listed
    report = client.get("/projects/chain/security.json").json()
    assert len(report["vulnerabilities"]) == 1, report["vulnerabilities"]
    page = client.get("/projects/chain/security").text
    assert page.count('data-id="') == 1

    # A deleted project's matches go with it; its name registered again inherits none.
    with bastion.db.write() as session:
        service.delete_project(session, bastion, "newname", principal=OPERATOR)
    remaining = _matches(bastion)
    _upload(client, tmp_path / "again", token, "newname", "3.0")  # 3.0 >= the fix: unaffected
    assert _matches(bastion) == remaining
    assert _ids(client, "/pypi/newname/json") == []
