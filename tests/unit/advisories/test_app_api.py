"""The applications API (PUT/GET/DELETE /api/applications) and ``bastion app ...`` on SQLite and
PostgreSQL: who may do what (owner, admin, others, project-scoped tokens, no token), the three
ways to send a list, findings from imported advisories, refusals that change nothing, audit events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bastion.advisories.ingest import import_path
from bastion.events import Event
from bastion.services import Bastion
from tests.conftest import basic_auth, make_token, make_user, settle_tuf
from tests.unit.test_web_pages import upload
from tests.unit.world import state

BASTION = str(Path(sys.executable).parent / "bastion")

ADVISORY = """\
id: PYSEC-2099-7
modified: 2099-02-01T00:00:00Z
aliases:
- CVE-2099-7
details: Zorblax reads what it should not.
affected:
- package:
    ecosystem: PyPI
    name: zorblax
  ranges:
  - type: ECOSYSTEM
    events:
    - introduced: "0"
    - fixed: "2.0"
"""


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def cli(data_dir: Path, database_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env["BASTION_DATABASE_URL"] = database_url
    env["COLUMNS"] = "200"
    return subprocess.run([BASTION, *args, "--data-dir", str(data_dir)], env=env, capture_output=True, text=True,
                          timeout=60)


def test_api_owner_admin_others_and_refusals(bastion: Bastion, client: Any, tmp_path: Path) -> None:
    tokens = {name: make_user(bastion, name) for name in ("carol", "dave")}
    tokens["root"] = make_user(bastion, "root", admin=True)
    tokens["scoped"] = make_token(bastion, "carol", projects=["zorblax"])
    for version in ("1.0", "1.5", "2.0"):
        upload(client, tmp_path, tokens["carol"], "zorblax", version)
    tree = tmp_path / "advisories"
    (tree / "vulns" / "zorblax").mkdir(parents=True)
    (tree / "vulns" / "zorblax" / "PYSEC-2099-7.yaml").write_text(ADVISORY)
    import_path(bastion, tree)
    carol = bearer(tokens["carol"])

    # The list as the body (text), with the options in the query.
    created = client.put("/api/applications/shop?format=requirements&contact_email=ops@example.org",
                         content=b"zorblax>=1.0,<2\nnot-here==3.1\n", headers={**carol, "Content-Type": "text/plain"})
    assert created.status_code == 201, created.text
    document = created.json()
    assert document["name"] == "shop" and document["owner"] == "carol" and document["format"] == "requirements"
    assert document["packages"] == {"direct": 2, "transitive": 0}
    assert document["contact_email"] == "ops@example.org" and "webhook_secret" not in document
    assert document["vulnerable"] is True
    assert document["packages_list"] == [
        {"name": "not-here", "version": "3.1", "specifier": "==3.1", "direct": True, "in_index": False,
         "vulnerabilities": []},
        {"name": "zorblax", "version": "1.5", "specifier": "<2,>=1.0", "direct": True, "in_index": True,
         "vulnerabilities": ["PYSEC-2099-7"]},
    ]
    (finding,) = document["findings"]
    assert finding == {"package": "zorblax", "version": "1.5", "direct": True, "id": "PYSEC-2099-7",
                       "aliases": ["CVE-2099-7"], "summary": None,
                       "link": "https://osv.dev/vulnerability/PYSEC-2099-7", "fixed_in": ["2.0"]}

    # The JSON form, with a webhook (its secret shown once); Basic __token__ works as for uploads.
    updated = client.put("/api/applications/shop", headers=basic_auth(tokens["carol"]), json={
        "content": "zorblax==2.0\n", "webhook_url": "https://hooks.example.org/bastion"})
    assert updated.status_code == 200, updated.text
    assert updated.json()["vulnerable"] is False and len(updated.json()["webhook_secret"]) == 64
    shown = client.get("/api/applications/shop", headers=carol)
    assert shown.status_code == 200 and "webhook_secret" not in shown.json()
    assert shown.json()["webhook_url"] == "https://hooks.example.org/bastion"
    assert [p["name"] for p in shown.json()["packages_list"]] == ["zorblax"]

    # A CycloneDX SBOM sent as is (JSON with bomFormat).
    sbom = {"bomFormat": "CycloneDX", "specVersion": "1.5",
            "components": [{"name": "zorblax", "purl": "pkg:pypi/zorblax@1.0"}]}
    assert client.put("/api/applications/kiosk", headers=carol, json=sbom).status_code == 201

    # Refusals, each with what to fix, and none changes anything (the uploads above signed first:
    # the snapshot worker paces its runs, so one may still be due).
    settle_tuf(bastion)
    before = state(bastion)
    refusals: list[tuple[str, str, dict[str, Any], int, str]] = [
        ("put", "/api/applications/shop", {"content": b"zorblax==1.0\nbad line !!\n"}, 400,
         "shop (body):2: 'bad line !!' is not a valid requirement"),
        ("put", "/api/applications/shop", {"json": {"content": "zorblax\n", "webhook_url": "http://example.org/"}},
         400, "the webhook URL must use https"),
        ("put", "/api/applications/shop", {"json": {"content": "zorblax\n", "colour": "red"}}, 400,
         "unknown field(s) colour"),
        ("put", "/api/applications/shop", {"json": {"format": "requirements"}}, 400, "'content' (a string) is missing"),
        ("put", "/api/applications/shop", {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
         400, "the body is not valid JSON"),
        ("put", "/api/applications/shop", {"json": sbom | {"specVersion": "1.1"}}, 400,
         '$.specVersion is "1.1"'),
        ("put", "/api/applications/shop", {"content": b"x" * (6 * 1024 * 1024)}, 413, "larger than"),
        ("put", "/api/applications/bad name", {"content": b"zorblax\n"}, 400, "invalid application name"),
        ("get", "/api/applications/nope", {}, 404, "no application named 'nope': register it first"),
    ]
    for method, url, kwargs, status, message in refusals:
        headers = {**carol, **kwargs.pop("headers", {})}
        response = getattr(client, method)(url, headers=headers, **kwargs)
        assert response.status_code == status, (url, response.text)
        assert message in response.json()["error"], response.text
    # Who may: nobody without a token, not a project-scoped token, not another user.
    others = [({}, 401, "authentication required"), (bearer(tokens["scoped"]), 403, "project-scoped API token"),
              (bearer(tokens["dave"]), 403, "only the application's owner or an index admin may do this")]
    for headers, status, message in others:
        for method, kwargs in [("get", {}), ("delete", {}), ("put", {"content": b"zorblax==1.0\n"})]:
            response = getattr(client, method)("/api/applications/shop", headers=headers, **kwargs)
            assert response.status_code == status and message in response.json()["error"], response.text
    assert client.get("/api/applications", headers={}).status_code == 401
    assert client.get("/api/applications", headers=bearer(tokens["scoped"])).status_code == 403
    assert state(bastion) == before

    # Listing: mine; everything for an admin (who may read and change any).
    assert client.get("/api/applications", headers=bearer(tokens["dave"])).json() == []
    mine = client.get("/api/applications", headers=carol).json()
    assert [(a["name"], a["packages"]) for a in mine] == [("kiosk", {"direct": 1, "transitive": 0}),
                                                          ("shop", {"direct": 1, "transitive": 0})]
    root = bearer(tokens["root"])
    assert [a["name"] for a in client.get("/api/applications", headers=root).json()] == ["kiosk", "shop"]
    assert client.get("/api/applications/kiosk", headers=root).json()["vulnerable"] is True
    assert client.delete("/api/applications/kiosk", headers=root).json() == {"removed": "kiosk"}
    assert client.get("/api/applications/kiosk", headers=carol).status_code == 404
    with bastion.db.read() as session:
        events = [(e.action, e.actor, e.subject) for e in session.execute(
            select(Event).where(Event.action.like("application.%")).order_by(Event.id)).scalars()]
        ip_hashes = session.execute(select(Event.ip_hash).where(Event.action.like("application.%"))).scalars().all()
    assert events == [("application.registered", "carol", "application:shop"),
                      ("application.updated", "carol", "application:shop"),
                      ("application.registered", "carol", "application:kiosk"),
                      ("application.removed", "root", "application:kiosk")]
    assert all(ip_hashes)  # the request's address, as a keyed hash


def test_cli_register_show_list_remove(bastion: Bastion, client: Any, tmp_path: Path, data_dir: Path,
                                       database_url: str) -> None:
    token = make_user(bastion, "carol")
    upload(client, tmp_path, token, "zorblax", "1.0")
    tree = tmp_path / "advisories"
    (tree / "vulns" / "zorblax").mkdir(parents=True)
    (tree / "vulns" / "zorblax" / "PYSEC-2099-7.yaml").write_text(ADVISORY)
    import_path(bastion, tree)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("zorblax\nnot-here>=1\n")

    bad = tmp_path / "broken.txt"
    bad.write_text("zorblax\n-r other.txt\n")
    refused = cli(data_dir, database_url, "app", "register", "shop", str(bad), "--owner", "carol")
    assert refused.returncode == 1 and f"{bad}:2: '-r other.txt' includes another file" in refused.stderr

    registered = cli(data_dir, database_url, "app", "register", "shop", str(requirements), "--owner", "carol",
                     "--webhook", "https://hooks.example.org/x")
    assert registered.returncode == 0, registered.stderr
    assert "registered shop (requirements): 2 direct and 0 transitive package(s), 1 vulnerable" in registered.stdout
    assert "PYSEC-2099-7" in registered.stdout
    secret = registered.stdout.split("webhook secret (shown once")[1].split("\n")[1].strip()
    assert len(secret) == 64
    with bastion.db.read() as session:
        event = session.execute(select(Event).where(Event.action == "application.registered")).scalar_one()
    assert event.actor == "operator (cli)" and event.details["owner"] == "carol"
    assert secret not in json.dumps(event.details)

    shown = cli(data_dir, database_url, "app", "show", "shop")
    assert shown.returncode == 1, shown.stderr  # vulnerable
    assert "not in this index" in shown.stdout and "vulnerable" in shown.stdout and "CVE-2099-7" in shown.stdout
    listed = cli(data_dir, database_url, "app", "list", "--json")
    assert [(a["name"], a["owner"], a["webhook_url"]) for a in json.loads(listed.stdout)] == \
        [("shop", "carol", "https://hooks.example.org/x")]
    requirements.write_text("zorblax==2.0\n")
    clean = cli(data_dir, database_url, "app", "register", "shop", str(requirements), "--owner", "carol")
    assert clean.returncode == 0 and "updated shop" in clean.stdout and "webhook secret" not in clean.stdout
    assert cli(data_dir, database_url, "app", "show", "shop").returncode == 0  # 2.0 is fixed
    assert cli(data_dir, database_url, "app", "remove", "shop").stdout.strip() == "removed shop"
    with bastion.db.read() as session:
        assert session.execute(select(Event.action).order_by(Event.id.desc()).limit(1)).scalar() == \
            "application.removed"
