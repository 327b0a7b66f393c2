"""Hardening: a release whose every file is held for review, or a quarantined project, leaks through
none of issue 6's surfaces (security pages and JSON, the index-wide page, the JSON API's
vulnerabilities, application resolution and findings, reverse dependencies), on both databases."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bastion.advisories.ingest import import_path
from bastion.authz import OPERATOR
from bastion.scanning import review
from bastion.services import Bastion
from tests.conftest import make_user, post_upload
from tests.distbuilder import make_wheel, metadata_text, upload_form
from tests.unit.test_commitments import write_advisory
from tests.unit.uploads import hold_stored

PUBLISHED = datetime(2025, 6, 1, tzinfo=UTC)


def _upload(client: Any, tmp_path: Path, token: str, name: str, version: str, extra: str = "") -> str:
    folder = tmp_path / "dists" / f"{name}-{version}"
    folder.mkdir(parents=True)
    wheel = make_wheel(folder, name, version, metadata=metadata_text(name, version, extra=extra))
    response = post_upload(client, token, wheel, upload_form(wheel, name, version))
    assert response.status_code == 200, response.text
    return wheel.name


def test_held_release_is_on_no_security_surface(bastion: Bastion, client: Any, tmp_path: Path) -> None:
    token = make_user(bastion, "alice")
    _upload(client, tmp_path, token, "hidelib", "1.0")
    held = _upload(client, tmp_path, token, "hidelib", "7.7.7")
    held_dep = _upload(client, tmp_path, token, "hideuser", "1.0", extra="Requires-Dist: hidelib\n")
    tree = tmp_path / "advisories"
    write_advisory(tree, "PYSEC-2099-11", "hidelib", published=PUBLISHED, fixed="9.0", summary="bad")
    import_path(bastion, tree)
    assert "7.7.7" in client.get("/security.json").text  # computed (and cached) while still published
    assert "7.7.7" in client.get("/projects/hidelib/security.json").text
    case_id = hold_stored(bastion, held)
    hold_stored(bastion, held_dep)

    for url in ("/projects/hidelib/security", "/projects/hidelib/security.json", "/security", "/security.json",
                "/pypi/hidelib/json", "/projects/hidelib/security/badge.svg"):
        response = client.get(url)
        assert "7.7.7" not in response.text, url
        assert "hideuser" not in response.text, url
    # An application asking for hidelib (any version) resolves to the published 1.0, never the held one.
    owner = {"Authorization": f"Bearer {token}"}
    created = client.put("/api/applications/shop", content=b"hidelib>=1\n",
                         headers={**owner, "Content-Type": "text/plain"})
    assert created.status_code == 201, created.text
    assert "7.7.7" not in created.text
    assert [(p["name"], p["version"]) for p in created.json()["packages_list"]] == [("hidelib", "1.0")]
    pinned = client.put("/api/applications/pinned", content=b"hidelib==7.7.7\n",
                        headers={**owner, "Content-Type": "text/plain"})
    assert pinned.status_code == 201, pinned.text
    # What the owner wrote is echoed, and the advisory data judges it (as the OSV API would), but the
    # index does not say it holds that version.
    assert [(p["version"], p["in_index"]) for p in pinned.json()["packages_list"]] == [("7.7.7", False)]

    # Released from review: published, matched, listed, and what a new resolution picks.
    with bastion.db.write() as session:
        review.finish(bastion, review.decide_case(session, bastion, case_id, "release", OPERATOR))
    document = client.get("/pypi/hidelib/json").json()
    assert document["info"]["version"] == "7.7.7"
    assert [v["id"] for v in document["vulnerabilities"]] == ["PYSEC-2099-11"]
    report = client.get("/projects/hidelib/security.json").json()
    assert "7.7.7" in {r["version"] for r in report["releases"]}
    again = client.put("/api/applications/shop", content=b"hidelib>=1\n",
                       headers={**owner, "Content-Type": "text/plain"})
    assert [(p["name"], p["version"]) for p in again.json()["packages_list"]] == [("hidelib", "7.7.7")]


def test_maintainers_hear_of_their_published_latest_not_a_held_one(bastion_with: Any, smtp_server: Any,
                                                                   tmp_path: Path) -> None:
    from tests.unit.advisories.test_alerts import advisory_mail

    bastion, client = bastion_with(smtp_host=smtp_server.host, smtp_port=smtp_server.port)
    token = make_user(bastion, "alice")
    _upload(client, tmp_path, token, "heldmail", "1.0")
    held = _upload(client, tmp_path, token, "heldmail", "2.0")
    hold_stored(bastion, held)
    tree = tmp_path / "advisories"
    write_advisory(tree, "PYSEC-2099-41", "heldmail", published=PUBLISHED, fixed="2.0", summary="bad")
    import_path(bastion, tree)
    # 1.0 is what pip installs: its maintainers are told; the held 2.0 (fixed) does not hide it.
    assert advisory_mail(bastion, smtp_server) == [("alice@example.org", "[Bastion] heldmail 1.0: PYSEC-2099-41 affects "
                                                                        "your latest release")]


def test_quarantined_project_is_on_no_security_surface(bastion: Bastion, client: Any, tmp_path: Path) -> None:
    from sqlalchemy import select

    from bastion.events import CLI_CONTEXT
    from bastion.packaging.models import Project

    token = make_user(bastion, "alice")
    _upload(client, tmp_path, token, "qsec", "1.0")
    _upload(client, tmp_path, token, "qdependent", "1.0", extra="Requires-Dist: qsec\n")
    tree = tmp_path / "advisories"
    write_advisory(tree, "PYSEC-2099-71", "qsec", published=PUBLISHED, fixed="9.0", summary="bad")
    import_path(bastion, tree)
    assert "qsec" in client.get("/security.json").text  # cached while visible
    assert "qsec" in client.get("/projects/qdependent/security.json").text
    with bastion.db.write() as session:
        project = session.execute(select(Project).where(Project.normalized_name == "qsec")).scalar_one()
        outcome = review.quarantine_project(session, bastion, project, source="admin", summary="suspected",
                                            principal=OPERATOR, context=CLI_CONTEXT)
    review.finish(bastion, outcome)

    assert "qsec" not in client.get("/security.json").text and "qsec" not in client.get("/security").text
    report = client.get("/projects/qsec/security.json").json()
    assert report["quarantined"] is True and report["vulnerabilities"] == [] and report["releases"] == []
    assert "1.0" not in client.get("/projects/qsec/security").text
    dependency = client.get("/projects/qdependent/security.json").json()["dependencies"]
    assert [(d["name"], d["in_index"]) for d in dependency] == [("qsec", False)]
    owner = {"Authorization": f"Bearer {token}", "Content-Type": "text/plain"}
    created = client.put("/api/applications/qapp", content=b"qsec\n", headers=owner).json()
    assert [(p["version"], p["in_index"], p["vulnerabilities"]) for p in created["packages_list"]] == \
        [(None, False, [])]


def test_a_stale_snapshot_served_during_a_background_recompute_hides_new_holds(
        bastion: Bastion, client: Any, tmp_path: Path, monkeypatch: Any) -> None:
    """On a large index the index-wide snapshot is recomputed in the background while the previous
    one is served: what was quarantined or held since must not be in what is served meanwhile."""
    from sqlalchemy import select

    from bastion.events import CLI_CONTEXT
    from bastion.insights import commitments
    from bastion.packaging.models import Project

    token = make_user(bastion, "alice")
    _upload(client, tmp_path, token, "sbase", "1.0")
    _upload(client, tmp_path, token, "squar", "1.0", extra="Requires-Dist: sbase\n")
    _upload(client, tmp_path, token, "sheld", "1.0")
    held = _upload(client, tmp_path, token, "sheld", "2.0", extra="Requires-Dist: sbase\n")
    tree = tmp_path / "advisories"
    for n, name in ((81, "squar"), (82, "sheld")):
        write_advisory(tree, f"PYSEC-2099-{n}", name, published=PUBLISHED, fixed="9.0", summary="bad")
    import_path(bastion, tree)
    primed = client.get("/security.json").text
    assert "squar" in primed and '"2.0"' in primed
    assert sorted(client.get("/projects/sbase/security.json").json()["usage"]["reverse_dependencies"]) == \
        ["sheld", "squar"]

    monkeypatch.setattr(commitments, "SYNC_RECOMPUTE_SECONDS", -1.0)  # from now on, recomputed in the background
    with bastion.db.write() as session:
        project = session.execute(select(Project).where(Project.normalized_name == "squar")).scalar_one()
        outcome = review.quarantine_project(session, bastion, project, source="admin", summary="suspected",
                                            principal=OPERATOR, context=CLI_CONTEXT)
    review.finish(bastion, outcome)
    hold_stored(bastion, held)
    for url in ("/security.json", "/security", "/projects/sbase/security.json"):
        text = client.get(url).text
        assert "squar" not in text and "sheld 2.0" not in text and '"2.0"' not in text, (url, text[:2000])
