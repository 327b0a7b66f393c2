"""The security pages over HTTP, on SQLite and PostgreSQL: what anyone sees (HTML, the JSON twin,
the badge, the index-wide page), what follows an advisory import at once, the owners' declaration
forms (CSRF, re-authentication, owners only, bad input refused with nothing stored, audit events)
and the same declarations from the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from bastion.advisories.ingest import import_path
from bastion.advisories.models import ProjectSecurity
from bastion.events import Event
from bastion.packaging.models import Project
from bastion.services import Bastion
from tests.conftest import make_user, post_upload, settle_tuf
from tests.distbuilder import make_wheel, metadata_text, upload_form
from tests.unit.test_commitments import write_advisory
from tests.unit.test_web_pages import age_reauth, csrf_from, reauth, sign_in
from tests.unit.world import state

BASTION = str(Path(sys.executable).parent / "bastion")
PUBLISHED = datetime(2025, 6, 1, tzinfo=UTC)


def _upload(client: Any, tmp_path: Path, token: str, name: str, version: str, extra: str = "") -> None:
    folder = tmp_path / "dists" / f"{name}-{version}"
    folder.mkdir(parents=True)
    wheel = make_wheel(folder, name, version, metadata=metadata_text(name, version, extra=extra))
    response = post_upload(client, token, wheel, upload_form(wheel, name, version))
    assert response.status_code == 200, response.text


def _commitment(document: dict, key: str) -> dict:
    return next(c for c in document["commitments"] if c["key"] == key)


def _events(bastion: Bastion, action: str) -> list[Event]:
    with bastion.db.read() as session:
        return list(session.execute(select(Event).where(Event.action == action).order_by(Event.id)).scalars())


def test_public_pages_follow_imports(bastion: Bastion, client: Any, tmp_path: Path) -> None:
    token = make_user(bastion, "alice")
    _upload(client, tmp_path, token, "web-lib", "1.0")
    _upload(client, tmp_path, token, "web-lib", "1.1")
    _upload(client, tmp_path, token, "web-app", "2.0", extra="Requires-Dist: web-lib>=1.1\n")
    _upload(client, tmp_path, token, "web-gone", "1.0")
    tree = tmp_path / "advisories"
    write_advisory(tree, "PYSEC-2025-10", "web-lib", published=PUBLISHED, fixed="1.1", summary="old bug")
    import_path(bastion, tree)

    # Anyone: the page, its JSON twin, the badge and the link from the project page.
    page = client.get("/projects/web-app/security")
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert 'id="commitment-dependencies" data-status="pass"' in page.text
    assert 'href="/projects/web-lib/security"' in page.text  # the dependency, linked
    document = client.get("/projects/web-app/security.json").json()
    assert _commitment(document, "dependencies")["status"] == "pass"
    assert document["latest_version"] == "2.0" and document["counts"]["pass"] >= 3
    lib = client.get("/projects/web-lib/security.json").json()
    assert _commitment(lib, "vulnerability-fixes")["status"] == "pass"
    assert [(v["id"], v["affected"], v["first_fixed"]) for v in lib["vulnerabilities"]] == [
        ("PYSEC-2025-10", ["1.0"], "1.1")]
    assert lib["usage"]["reverse_dependencies"] == ["web-app"]
    badge = client.get("/projects/web-app/security/badge.svg")
    assert badge.status_code == 200 and badge.headers["content-type"].startswith("image/svg+xml")
    assert "<script" not in badge.text and f"{document['counts']['pass']} pass" in badge.text
    project_page = client.get("/projects/web-app/")
    assert 'href="/projects/web-app/security"' in project_page.text
    assert 'src="/projects/web-app/security/badge.svg"' in project_page.text
    assert client.get("/projects/Web_App/security", follow_redirects=False).headers["location"] == \
        "/projects/web-app/security"
    assert client.get("/projects/no-such/security").status_code == 404
    assert client.get("/projects/no-such/security.json").status_code == 404
    index = client.get("/security.json").json()
    assert index["projects"] == [] and index["totals"]["advisories"] == 1
    assert index["median_days_to_fix"] is not None and index["fixes_measured"] == 1

    # A new advisory on web-lib 1.1: the dependency and the index-wide page follow the import at once.
    write_advisory(tree, "GHSA-webl-ib11-xxxx", "web-lib", published=PUBLISHED, fixed="1.2", severity="HIGH",
                   summary="new bug")
    import_path(bastion, tree)
    document = client.get("/projects/web-app/security.json").json()
    assert _commitment(document, "dependencies")["status"] == "fail"
    assert _commitment(document, "dependencies")["evidence"] == [
        "web-lib>=1.1: every release satisfying >=1.1 has an open advisory (1.1)"]
    index = client.get("/security.json").json()
    assert [(p["normalized_name"], p["open_advisories"], p["severity"]) for p in index["projects"]] == [
        ("web-lib", 1, "HIGH")]
    assert index["totals"]["vulnerable_latest_releases"] == 1
    html = client.get("/security")
    assert html.status_code == 200 and 'id="fix-chart"' in html.text
    assert 'href="/projects/web-lib/security"' in html.text

    # A quarantined project's page says so and shows nothing else.
    with bastion.db.write() as session:
        session.execute(update(Project).where(Project.normalized_name == "web-gone").values(status="quarantined"))
    gone = client.get("/projects/web-gone/security")
    assert gone.status_code == 200 and 'id="quarantine-banner"' in gone.text
    assert 'id="commitments"' not in gone.text and "1.0" not in gone.text
    assert client.get("/projects/web-gone/security.json").json()["commitments"] == []


def _post(client: Any, name: str, data: dict[str, str], *, csrf: bool = True) -> Any:
    token = csrf_from(client.get(f"/projects/{name}/security").text) if csrf else "forged"
    return client.post(f"/projects/{name}/security", data={"csrf_token": token, **data})


def test_owner_declarations(bastion: Bastion, client: Any, tmp_path: Path) -> None:
    token = make_user(bastion, "olga")
    make_user(bastion, "mallory")
    _upload(client, tmp_path, token, "decl-pkg", "1.0")
    with bastion.db.write() as session:
        from bastion.authz import OPERATOR
        from bastion.packaging import service

        service.add_role(session, "decl-pkg", "mallory", "maintainer", principal=OPERATOR)

    # Anonymous: the forms are not shown, and posting asks to sign in.
    assert 'id="declarations"' not in client.get("/projects/decl-pkg/security").text
    response = client.post("/projects/decl-pkg/security", data={"action": "reaffirm"}, follow_redirects=False)
    assert response.status_code == 403  # no CSRF token: refused before anything else

    # A maintainer (not an owner) is refused with the reason, and nothing is stored.
    sign_in(client, "mallory")
    assert 'id="declarations"' not in client.get("/projects/decl-pkg/security").text
    settle_tuf(bastion)
    before = state(bastion)
    refused = _post(client, "decl-pkg", {"action": "contact", "contact": "evil@example.org"})
    assert refused.status_code == 403 and "only an owner of &#39;decl-pkg&#39; may do this" in refused.text
    assert state(bastion) == before

    sign_in(client, "olga")
    page = client.get("/projects/decl-pkg/security")
    assert 'id="declarations"' in page.text
    assert 'href="/projects/decl-pkg/security#declarations"' in client.get("/projects/decl-pkg/manage").text
    # Without a valid CSRF token: refused, nothing stored but the refusal's own event.
    before = state(bastion)
    forged = _post(client, "decl-pkg", {"action": "contact", "contact": "sec@example.org"}, csrf=False)
    assert forged.status_code == 403 and "CSRF" in forged.text
    after = state(bastion)
    assert after["db"]["project_security"] == before["db"]["project_security"] == []
    assert [e.actor for e in _events(bastion, "csrf.refused")] == [None, "olga"]  # the anonymous post, this one
    # An old sign-in is asked to re-authenticate first.
    age_reauth(bastion)
    asked = _post(client, "decl-pkg", {"action": "reaffirm"})
    assert asked.url.path == "/account/reauth"
    reauth(client)
    # A bad contact: 400, what is wrong and how to fix it, nothing stored.
    before = state(bastion)
    bad = _post(client, "decl-pkg", {"action": "contact", "contact": "javascript:alert(1)"})
    assert bad.status_code == 400
    assert "neither an email address nor an https URL: give an email address" in bad.text
    assert state(bastion) == before
    # Every declaration, each with its audit event.
    for data, flash in (({"action": "contact", "contact": "https://example.org/security"}, "Security contact"),
                        ({"action": "confirm_roles"}, "Role list of decl-pkg confirmed (2 people"),
                        ({"action": "reaffirm"}, "Decl-pkg reaffirmed as maintained"),
                        ({"action": "codehost_2fa"}, "2fa on the code host of decl-pkg reported")):
        done = _post(client, "decl-pkg", data)
        assert done.status_code == 200 and done.url.path == "/projects/decl-pkg/security", done.text
        assert flash.lower() in done.text.lower()
    document = client.get("/projects/decl-pkg/security.json").json()
    statuses = {c["key"]: c["status"] for c in document["commitments"]}
    assert (statuses["disclosure"], statuses["release-managers"], statuses["codehost-2fa"],
            statuses["maintenance"]) == ("pass", "pass", "pass", "pass")
    assert _commitment(document, "release-managers")["evidence"][0].startswith("confirmed by olga on ")
    page = client.get("/projects/decl-pkg/security").text
    assert 'href="https://example.org/security"' in page
    withdrawn = _post(client, "decl-pkg", {"action": "codehost_2fa_withdraw"})
    assert withdrawn.status_code == 200
    assert _commitment(client.get("/projects/decl-pkg/security.json").json(), "codehost-2fa")["status"] == "fail"
    cleared = _post(client, "decl-pkg", {"action": "clear_contact"})
    assert cleared.status_code == 200
    assert [e.details for e in _events(bastion, "project.security-contact")] == [
        {"contact": "https://example.org/security"}, {"contact": None}]
    roles = _events(bastion, "project.roles-confirmed")
    assert [(e.actor, e.subject) for e in roles] == [("olga", "project:decl-pkg")]
    assert roles[0].details == {"roles": [{"user": "olga", "role": "owner"}, {"user": "mallory", "role": "maintainer"}]}
    assert len(_events(bastion, "project.reaffirmed")) == 1
    assert [e.details for e in _events(bastion, "project.codehost-2fa")] == [{"enabled": True}, {"enabled": False}]


def _cli(bastion: Bastion, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env["BASTION_DATABASE_URL"] = bastion.settings.effective_database_url
    env["COLUMNS"] = "200"
    return subprocess.run([BASTION, "project", "security", *args, "--data-dir", str(bastion.settings.data_dir)],
                          env=env, capture_output=True, text=True, timeout=120)


def test_cli_declarations(bastion: Bastion, client: Any, tmp_path: Path) -> None:
    token = make_user(bastion, "olga")
    _upload(client, tmp_path, token, "cli-pkg", "1.0")
    settle_tuf(bastion)
    before = state(bastion)
    bad = _cli(bastion, "cli-pkg", "--contact", "http://example.org/security", "--reaffirm")
    assert bad.returncode == 1
    assert "'http://example.org/security' is not an https URL: give an email address" in bad.stderr
    assert state(bastion) == before  # the reaffirmation given with it was not stored either
    done = _cli(bastion, "cli-pkg", "--contact", "security@example.org", "--confirm-roles", "--reaffirm",
                "--codehost-2fa", "yes")
    assert done.returncode == 0, done.stderr
    assert "security contact of cli-pkg: security@example.org" in done.stdout
    with bastion.db.read() as session:
        row = session.execute(select(ProjectSecurity)).scalar_one()
        assert (row.security_contact, row.roles_confirmed_by, row.reaffirmed_by, row.codehost_2fa_by) == (
            "security@example.org", "operator (cli)", "operator (cli)", "operator (cli)")
    assert [e.action for e in _events(bastion, "project.roles-confirmed")] == ["project.roles-confirmed"]
    shown = _cli(bastion, "cli-pkg")
    assert shown.returncode == 0 and "Dependencies monitored" in shown.stdout and "pass" in shown.stdout
    document = json.loads(_cli(bastion, "cli-pkg", "--json").stdout)
    assert _commitment(document, "disclosure")["status"] == "pass"
