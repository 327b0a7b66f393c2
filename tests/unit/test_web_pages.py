"""The project and admin pages: lists, project pages (descriptions rendered safely), the owners'
page (roles, the 2FA opt-in), project history, the admin pages; who may see what (SQLite and
PostgreSQL). The helpers at the top sign users in through the real forms; test_project_delete.py
and test_notify_wiring.py use them too."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pyotp
import pytest
from sqlalchemy import select

from bastion.accounts import mfa
from bastion.accounts.models import User
from bastion.authz import OPERATOR
from bastion.events import CLI_CONTEXT, Event
from bastion.insights.models import CriticalProject
from bastion.packaging import service
from bastion.packaging.models import Project, Release, Role
from bastion.services import Bastion
from tests.conftest import PASSWORD, make_user, post_upload
from tests.distbuilder import make_sdist, make_wheel, metadata_text, upload_form

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


# ---------------------------------------------------------------------------------------------
# Helpers (imported by the other web test modules)
# ---------------------------------------------------------------------------------------------

def csrf_from(html: str) -> str:
    found = CSRF_RE.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def csrf(client: Any, path: str = "/account/login") -> str:
    """A CSRF token valid for the client's current session (or pre-sign-in cookie)."""
    return csrf_from(client.get(path).text)


def sign_in(client: Any, username: str, *, recovery_code: str | None = None) -> None:
    """Sign ``username`` in through the forms (with a recovery code as second factor if given)."""
    client.cookies.clear()
    response = client.post("/account/login", data={"csrf_token": csrf(client), "username": username,
                                                   "password": PASSWORD, "next": "/account/"})
    if recovery_code is not None:
        assert response.url.path == "/account/login/2fa", response.text
        response = client.post("/account/login/2fa", data={"csrf_token": csrf_from(response.text),
                                                           "recovery_code": recovery_code, "next": "/account/"})
    assert response.status_code == 200 and response.url.path == "/account/", response.text


def reauth(client: Any, *, recovery_code: str | None = None) -> None:
    """Re-authenticate the signed-in user (unlocks sensitive actions for a while)."""
    data = {"csrf_token": csrf(client, "/account/reauth"), "password": PASSWORD, "next": "/account/"}
    if recovery_code is not None:
        data["recovery_code"] = recovery_code
    response = client.post("/account/reauth", data=data)
    assert response.url.path == "/account/", response.text


def age_reauth(bastion: Bastion) -> None:
    """Make every session's last (re-)authentication old: sensitive actions ask for it again."""
    from datetime import timedelta

    from bastion.accounts.models import BrowserSession
    from bastion.db import utcnow

    with bastion.db.write() as session:
        for row in session.execute(select(BrowserSession)).scalars():
            row.reauth_at = utcnow() - timedelta(hours=2)


def post_form(client: Any, path: str, data: dict[str, str], **kwargs: Any) -> Any:
    """POST ``data`` to ``path`` with a valid CSRF token of the signed-in session."""
    return client.post(path, data={"csrf_token": csrf(client, "/projects/"), **data}, **kwargs)


def enroll_2fa(bastion: Bastion, username: str) -> list[str]:
    """Give ``username`` an authenticator app; the recovery codes (to sign in with)."""
    with bastion.db.write() as session:
        user = session.execute(select(User).where(User.username == username)).scalar_one()
        secret_b32 = mfa.new_totp_secret()
        codes = mfa.enable_totp(session, user, secret_b32, pyotp.TOTP(secret_b32).now(), key=bastion.encryption_key,
                                secret=bastion.secret)
    assert codes
    return codes


def upload(client: Any, directory: Path, token: str, name: str, version: str, *, description: str | None = None,
           content_type: str | None = None, sdist: bool = False, summary: str = "A test project") -> Path:
    """Upload a wheel (or sdist) of ``name`` ``version``; its path."""
    directory = directory / f"{name}-{version}-{'sdist' if sdist else 'wheel'}"
    directory.mkdir(parents=True, exist_ok=True)
    metadata = metadata_text(name, version, description=description, content_type=content_type, summary=summary)
    path = (make_sdist if sdist else make_wheel)(directory, name, version, metadata=metadata)
    response = post_upload(client, token, path, upload_form(path, name, version))
    assert response.status_code == 200, response.text
    return path


def add_role(bastion: Bastion, project: str, user: str, role: str) -> None:
    with bastion.db.write() as session:
        service.add_role(session, project, user, role, principal=OPERATOR)


def roles_of(bastion: Bastion, project: str) -> set[tuple[str, str]]:
    with bastion.db.read() as session:
        return {(r.username, r.role) for r in service.list_roles(session, project, principal=OPERATOR)}


def actions(bastion: Bastion, subject: str | None = None) -> list[str]:
    with bastion.db.read() as session:
        query = select(Event.action).order_by(Event.id)
        if subject is not None:
            query = query.where(Event.subject == subject)
        return list(session.execute(query).scalars())


def assert_page(response: Any, status: int = 200) -> None:
    """An HTML page with the security headers."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"


def redirected_to_sign_in(client: Any, path: str) -> bool:
    response = client.get(path, follow_redirects=False)
    return response.status_code == 303 and response.headers["location"].startswith("/account/login?next=")


class _Markup(HTMLParser):
    """Every element and attribute of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def active_content(html: str) -> list[str]:
    """Anything in the page that could run script: script elements, event-handler attributes,
    javascript:/data:/vbscript: URLs, frames, objects."""
    parser = _Markup()
    parser.feed(html)
    found = []
    for tag, attrs in parser.tags:
        if tag in ("script", "iframe", "object", "embed", "frame", "base", "form") and tag != "form":
            found.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on"):
                found.append(f"<{tag} {name}=...>")
            if name in ("href", "src", "action", "formaction", "xlink:href") and value:
                scheme = re.sub(r"[\s\x00-\x1f]", "", value).lower()
                if scheme.startswith(("javascript:", "vbscript:", "data:text/html")):
                    found.append(f"<{tag} {name}={value}>")
    return found


# ---------------------------------------------------------------------------------------------
# Public pages
# ---------------------------------------------------------------------------------------------

def test_project_list_search_and_pages(bastion: Bastion, client: Any, tmp_path: Path) -> None:
    token = make_user(bastion, "alice")
    upload(client, tmp_path, token, "acme-widgets", "1.0", summary="Widgets for everyone")
    upload(client, tmp_path, token, "acme-widgets", "2.0rc1")  # a pre-release is not the latest
    upload(client, tmp_path, token, "zeta", "0.1", summary="Last letter")

    response = client.get("/projects/")
    assert_page(response)
    assert "acme-widgets" in response.text and "zeta" in response.text
    assert "Widgets for everyone" in response.text
    row = response.text.split("acme-widgets</a>", 1)[1].split("</tr>", 1)[0]
    assert "1.0" in row and "2.0rc1" not in row

    found = client.get("/projects/", params={"q": "ACME_"})  # normalized like names
    assert_page(found)
    assert "acme-widgets" in found.text and "zeta</a>" not in found.text
    none = client.get("/projects/", params={"q": "%"})  # LIKE wildcards are literal
    assert_page(none)
    assert "No projects match" in none.text
    junk = client.get("/projects/", params={"page": "x" * 50})
    assert_page(junk)

    with bastion.db.write() as session:
        owner = session.execute(select(User).where(User.username == "alice")).scalar_one()
        for number in range(55):
            service.create_project(session, f"bulk-{number:02d}", owner, prohibited=frozenset(),
                                   context=CLI_CONTEXT, secret=bastion.secret)
    first = client.get("/projects/")
    assert "Page 1 of 2" in first.text and 'rel="next"' in first.text
    second = client.get("/projects/", params={"page": "2"})
    assert_page(second)
    assert "Page 2 of 2" in second.text and "zeta" in second.text and "acme-widgets" not in second.text
    assert client.get("/projects/", params={"page": "99"}).text.count("Page 2 of 2") == 1
    searched = client.get("/projects/", params={"q": "bulk-1"})
    assert searched.text.count('href="/projects/bulk-1') == 10


def test_project_page(bastion: Bastion, client: Any, tmp_path: Path) -> None:
    token = make_user(bastion, "alice")
    make_user(bastion, "bob")
    enroll_2fa(bastion, "bob")
    upload(client, tmp_path, token, "Acme_Widgets", "1.0", summary="Old summary")
    upload(client, tmp_path, token, "Acme_Widgets", "1.1", summary="Widgets for everyone")
    sdist = upload(client, tmp_path, token, "Acme_Widgets", "1.1", sdist=True, summary="Widgets for everyone")
    upload(client, tmp_path, token, "Acme_Widgets", "2.0")
    add_role(bastion, "acme-widgets", "bob", "maintainer")
    with bastion.db.write() as session:
        service.set_yanked(session, "acme-widgets", "2.0", yanked=True, reason="broken <b>build</b>",
                           principal=OPERATOR)

    moved = client.get("/projects/Acme_Widgets/", follow_redirects=False)
    assert moved.status_code == 301 and moved.headers["location"] == "/projects/acme-widgets/"
    page = client.get("/projects/acme-widgets/")
    assert_page(page)
    text = page.text
    assert "<h1>Acme_Widgets" in text and "1.1</span>" in text  # 2.0 is yanked: 1.1 is the latest
    assert "Widgets for everyone" in text
    files = text.split('id="files"', 1)[1].split("</table>", 1)[0]
    with bastion.db.read() as session:
        rows = session.execute(select(Release).where(Release.version == "1.1")).scalar_one().files
        assert len(rows) == 2
        for f in rows:
            assert f'href="/{f.path}"' in files and f.sha256_digest in files and f.filename in files
            assert f"{f.size} Bytes" in files or "kB" in files
            assert client.get(f"/{f.path}").status_code == 200
        sdist_path = next(f.path for f in rows if f.packagetype == "sdist")
    assert client.get(f"/{sdist_path}").content == sdist.read_bytes()
    assert "wheel (py3)" in files and "sdist" in files and "1.0-" not in files
    releases = text.split('id="releases"', 1)[1].split("</ul>", 1)[0]
    assert releases.index("2.0") < releases.index("1.1") < releases.index("1.0")
    assert releases.count("yanked</span>") == 1 and "broken &lt;b&gt;build&lt;/b&gt;" in releases
    people = text.split('id="people"', 1)[1].split("</ul>", 1)[0]
    assert re.search(r"alice <span class=\"muted\">\(owner\)</span>\s*<span class=\"badge bad\"[^>]*>no 2FA", people)
    assert re.search(r"bob <span class=\"muted\">\(maintainer\)</span>\s*<span class=\"badge ok\"[^>]*>2FA", people)
    assert people.index("alice") < people.index("bob")
    assert "badge-critical" not in text and "badge-requires-2fa" not in text  # policy critical, not critical
    assert "/manage" not in text  # signed out: no link to the owners' page

    missing = client.get("/projects/no-such-thing/")
    assert_page(missing, 404)
    assert "There is no project named &#39;no-such-thing&#39;" in missing.text
    hostile = client.get("/projects/%0d%0aSet-Cookie:x/", follow_redirects=False)
    assert_page(hostile, 404)
    assert "location" not in hostile.headers


def test_badges_critical_and_requires_2fa(bastion: Bastion, client: Any, tmp_path: Path) -> None:
    token = make_user(bastion, "alice")
    upload(client, tmp_path, token, "popular", "1.0")
    upload(client, tmp_path, token, "opted", "1.0")
    with bastion.db.write() as session:
        popular = service.get_project(session, "popular")
        session.add(CriticalProject(project_id=popular.id, downloads=1234))
    page = client.get("/projects/popular/")
    assert 'id="badge-critical"' in page.text and 'id="badge-requires-2fa"' in page.text
    page = client.get("/projects/opted/")
    assert 'id="badge-critical"' not in page.text and 'id="badge-requires-2fa"' not in page.text
    with bastion.db.write() as session:
        blocked = service.set_project_mfa_required(session, "opted", True, principal=OPERATOR)
    assert blocked == ["alice"]
    page = client.get("/projects/opted/")
    assert 'id="badge-critical"' not in page.text and 'id="badge-requires-2fa"' in page.text


HOSTILE_MARKDOWN = """# Hello

<script>alert(1)</script>

[click](javascript:alert(1)) and [also](JaVaScRiPt:alert(2))

<img src="x" onerror="alert(3)">

<a href="javascript:alert(4)" onclick="alert(5)">a</a>
<iframe src="https://evil.example/"></iframe>
<svg onload="alert(6)"></svg>
<form action="https://evil.example/"><button formaction="javascript:alert(7)">go</button></form>
"""

HOSTILE_RST = """Hello
=====

`click <javascript:alert(1)>`_

.. image:: x
   :alt: y" onerror="alert(2)

.. image:: javascript:alert(3)

<script>alert(4)</script>
"""


@pytest.mark.parametrize("content_type, description", [
    ("text/markdown", HOSTILE_MARKDOWN),
    ("text/markdown; variant=CommonMark", HOSTILE_MARKDOWN),
    ("text/x-rst", HOSTILE_RST),
    (None, HOSTILE_RST),  # reStructuredText is the default
    ("text/plain", HOSTILE_MARKDOWN),
])
def test_hostile_description_is_never_active(bastion: Bastion, client: Any, tmp_path: Path,
                                             content_type: str | None, description: str) -> None:
    token = make_user(bastion, "mallory")
    upload(client, tmp_path, token, "evil", "1.0", description=description, content_type=content_type)
    page = client.get("/projects/evil/")
    assert_page(page)
    section = page.text.split('id="description"', 1)[1]
    assert "Hello" in section  # it was rendered, not dropped
    assert active_content(page.text) == []
    assert "<script>alert" not in page.text and "<img src=\"x\" onerror" not in page.text
    assert "&lt;script&gt;" in section or "alert(4)" not in section


def test_description_that_fails_to_render_is_shown_as_text(bastion: Bastion, client: Any, tmp_path: Path) -> None:
    token = make_user(bastion, "mallory")
    upload(client, tmp_path, token, "evil", "1.0")
    # Stored metadata the upload checks would refuse (raw HTML in reStructuredText): as if older.
    raw = ".. raw:: html\n\n   <script>alert(1)</script><img src=x onerror=alert(2)>\n\nText after.\n"
    with bastion.db.write() as session:
        release = session.execute(select(Release)).scalar_one()
        release.core_metadata = {**release.core_metadata, "description": raw, "description_content_type": "text/x-rst"}
    page = client.get("/projects/evil/")
    assert_page(page)
    assert active_content(page.text) == []
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text and "Text after." in page.text


# ---------------------------------------------------------------------------------------------
# Who may see the owners' pages and the admin pages
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def people(bastion: Bastion, client: Any, tmp_path: Path) -> dict[str, str]:
    """acme: alice owner, bob maintainer; carol a stranger; root an admin."""
    tokens = {"alice": make_user(bastion, "alice"), "bob": make_user(bastion, "bob"),
              "carol": make_user(bastion, "carol"), "root": make_user(bastion, "root", admin=True)}
    upload(client, tmp_path, tokens["alice"], "acme", "1.0")
    add_role(bastion, "acme", "bob", "maintainer")
    return tokens


PROTECTED = ("/projects/acme/manage", "/projects/acme/history", "/admin/", "/admin/events")


def test_signed_out_visitors_are_sent_to_sign_in(bastion: Bastion, client: Any, people: dict[str, str]) -> None:
    for path in PROTECTED:
        assert redirected_to_sign_in(client, path), path


@pytest.mark.parametrize("who, allowed, refusal", [
    ("alice", {"/projects/acme/manage", "/projects/acme/history"}, "only an index admin may do this"),
    ("bob", set(), "only an owner of &#39;acme&#39; may do this"),
    ("carol", set(), "only an owner of &#39;acme&#39; may do this"),
    ("root", set(PROTECTED), ""),
])
def test_who_may_see_what(bastion: Bastion, client: Any, people: dict[str, str], who: str, allowed: set[str],
                          refusal: str) -> None:
    sign_in(client, who)
    for path in PROTECTED:
        response = client.get(path)
        if path in allowed:
            assert_page(response, 200)
        else:
            assert_page(response, 403)
            assert "Not allowed" in response.text
            wanted = "only an index admin may do this" if path.startswith("/admin") else refusal
            assert wanted in response.text, (path, response.text)
    page = client.get("/projects/acme/")
    assert ('href="/projects/acme/manage"' in page.text) == (who in ("alice", "root"))


def test_manage_roles_and_the_2fa_opt_in(bastion: Bastion, client: Any, people: dict[str, str]) -> None:
    sign_in(client, "alice")
    page = client.get("/projects/acme/manage")
    assert_page(page)
    assert "alice" in page.text and "bob" in page.text and 'id="without-2fa"' in page.text

    # Changes need a recent re-authentication (signing in counts as one): once it is old, the
    # first try is sent there, changing nothing.
    age_reauth(bastion)
    first = post_form(client, "/projects/acme/manage", {"action": "add_role", "username": "carol", "role": "maintainer"})
    assert first.url.path == "/account/reauth"
    assert roles_of(bastion, "acme") == {("alice", "owner"), ("bob", "maintainer")}
    reauth(client)

    added = post_form(client, "/projects/acme/manage", {"action": "add_role", "username": "carol", "role": "owner"})
    assert_page(added)
    assert added.url.path == "/projects/acme/manage" and "carol is now owner of acme." in added.text
    removed = post_form(client, "/projects/acme/manage", {"action": "remove_role", "username": "bob"})
    assert "bob no longer has the role maintainer on acme." in removed.text
    assert roles_of(bastion, "acme") == {("alice", "owner"), ("carol", "owner")}

    again = post_form(client, "/projects/acme/manage", {"action": "add_role", "username": "carol", "role": "owner"})
    assert_page(again, 409)
    assert "already owner" in again.text
    unknown = post_form(client, "/projects/acme/manage", {"action": "add_role", "username": "nobody", "role": "owner"})
    assert_page(unknown, 404)
    assert "no user named &#39;nobody&#39;" in unknown.text
    bad_role = post_form(client, "/projects/acme/manage", {"action": "add_role", "username": "bob", "role": "admin"})
    assert_page(bad_role, 400)
    assert "unknown role &#39;admin&#39;" in bad_role.text
    bad_action = post_form(client, "/projects/acme/manage", {"action": "explode"})
    assert_page(bad_action, 400)

    on = post_form(client, "/projects/acme/manage", {"action": "set_mfa", "required": "on"})
    assert "acme now requires two-factor authentication" in on.text
    assert "these cannot act on it: alice, carol" in on.text
    assert actions(bastion, "project:acme")[-3:] == ["role.granted", "role.removed", "project.mfa_required_set"]
    with bastion.db.read() as session:
        assert service.get_project(session, "acme").mfa_required

    # alice has no 2FA: from now on she is refused, and told how to get back in.
    blocked = client.get("/projects/acme/manage")
    assert_page(blocked, 403)
    assert "two-factor authentication is required" in blocked.text and "/account/2fa" in blocked.text
    # Turning it off again needs 2FA too: an account with a password alone cannot lower the bar.
    off = post_form(client, "/projects/acme/manage", {"action": "set_mfa", "required": "off"})
    assert_page(off, 403)
    with bastion.db.read() as session:
        assert service.get_project(session, "acme").mfa_required


def test_role_refused_to_a_user_without_2fa(bastion: Bastion, client: Any, people: dict[str, str]) -> None:
    codes = enroll_2fa(bastion, "alice")
    make_user(bastion, "dave")
    enroll_2fa(bastion, "dave")
    with bastion.db.write() as session:
        service.set_project_mfa_required(session, "acme", True, principal=OPERATOR)
    sign_in(client, "alice", recovery_code=codes[0])
    reauth(client, recovery_code=codes[1])
    before = roles_of(bastion, "acme")
    refused = post_form(client, "/projects/acme/manage", {"action": "add_role", "username": "carol", "role": "maintainer"})
    assert_page(refused, 403)
    assert ("user &#39;carol&#39; cannot be given a role on &#39;acme&#39;: the project requires two-factor "
            "authentication" in refused.text)
    assert "/account/2fa" in refused.text
    assert roles_of(bastion, "acme") == before
    assert actions(bastion, "project:acme")[-1] == "role.refused"  # the refusal is on record

    page = client.get("/projects/acme/manage")
    assert 'class="error" id="without-2fa"' in page.text and "<li>bob</li>" in page.text
    added = post_form(client, "/projects/acme/manage", {"action": "add_role", "username": "dave", "role": "maintainer"})
    assert "dave is now maintainer of acme." in added.text
    assert roles_of(bastion, "acme") == before | {("dave", "maintainer")}


def test_project_history(bastion: Bastion, client: Any, people: dict[str, str]) -> None:
    with bastion.db.write() as session:
        for number in range(120):
            service.set_yanked(session, "acme", "1.0", yanked=number % 2 == 0, reason=f"r{number}",
                               principal=OPERATOR)
    with bastion.db.write() as session:
        service.create_project(session, "other", None, prohibited=frozenset(), context=CLI_CONTEXT,
                               secret=bastion.secret)
    sign_in(client, "alice")
    page = client.get("/projects/acme/history")
    assert_page(page)
    ids = [int(i) for i in re.findall(r"<tr>\s*<td>(\d+)</td>", page.text)]
    assert len(ids) == 100 and ids == sorted(ids, reverse=True)
    assert "project:other" not in page.text and "release.yanked" in page.text
    older = re.search(r'href="(/projects/acme/history\?before=\d+)"', page.text)
    assert older
    rest = client.get(older.group(1))
    assert_page(rest)
    rest_ids = [int(i) for i in re.findall(r"<tr>\s*<td>(\d+)</td>", rest.text)]
    assert rest_ids and max(rest_ids) < min(ids)
    assert "project.created" in rest.text and "role.granted" in rest.text
    assert len(ids) + len(rest_ids) == len(actions(bastion, "project:acme"))


# ---------------------------------------------------------------------------------------------
# Admin pages
# ---------------------------------------------------------------------------------------------

def test_admin_page_and_policy(bastion: Bastion, client: Any, people: dict[str, str]) -> None:
    enroll_2fa(bastion, "bob")
    with bastion.db.write() as session:
        session.add(CriticalProject(project_id=service.get_project(session, "acme").id, downloads=99))
    # An admin without 2FA may not change a mandate in force (that would be the way around it).
    sign_in(client, "root")
    age_reauth(bastion)
    post_form(client, "/admin/policy", {"policy": "off"})
    reauth(client)
    refused = post_form(client, "/admin/policy", {"policy": "off"})
    assert refused.status_code == 403 and "two-factor authentication is required" in refused.text
    assert actions(bastion, "policy:mfa") == []
    codes = enroll_2fa(bastion, "root")
    sign_in(client, "root", recovery_code=codes[0])
    page = client.get("/admin/")
    assert_page(page)
    assert '<strong id="policy">critical</strong>' in page.text
    users = page.text.split('id="users"', 1)[1].split("</table>", 1)[0]
    for name in ("alice", "bob", "carol", "root"):
        assert name in users
    assert re.search(r"bob</td>.*?badge ok\">2FA", users, re.S)
    assert re.search(r"carol</td>.*?badge bad\">no 2FA", users, re.S)
    critical = page.text.split('id="critical"', 1)[1].split("</table>", 1)[0]
    assert 'href="/projects/acme/"' in critical and ">99<" in critical

    age_reauth(bastion)
    first = post_form(client, "/admin/policy", {"policy": "all-uploaders"})
    assert first.url.path == "/account/reauth"
    reauth(client, recovery_code=codes[1])
    changed = post_form(client, "/admin/policy", {"policy": "all-uploaders"})
    assert_page(changed)
    assert "The 2FA policy is now &#39;all-uploaders&#39;." in changed.text
    assert '<strong id="policy">all-uploaders</strong>' in changed.text
    bad = post_form(client, "/admin/policy", {"policy": "sometimes"})
    assert_page(bad, 400)
    assert "unknown 2FA policy" in bad.text
    back = post_form(client, "/admin/policy", {"policy": "default"})
    assert '<strong id="policy">critical</strong>' in back.text
    assert actions(bastion, "policy:mfa") == ["policy.changed", "policy.changed"]

    with bastion.db.write() as session:
        for number in range(60):
            session.add(User(username=f"user{number:02d}", username_key=f"user{number:02d}",
                             email=f"u{number}@example.org", password_hash="x"))
    second = client.get("/admin/", params={"users_page": "2"})
    assert_page(second)
    assert "Page 2 of 2" in second.text and "user59" in second.text and "alice" not in second.text.split('id="users"')[1]


def test_admin_events_filters(bastion: Bastion, client: Any, people: dict[str, str]) -> None:
    sign_in(client, "root")
    everything = client.get("/admin/events")
    assert_page(everything)
    for action in ("project.created", "file.uploaded", "role.granted", "login.succeeded"):
        assert f"<code>{action}</code>" in everything.text
    only = client.get("/admin/events", params={"action": "role.granted"})
    assert set(re.findall(r"<code>([a-z_.0-9]+)</code>", only.text)) == {"role.granted"}
    prefix = client.get("/admin/events", params={"action": "project.*"})
    assert set(re.findall(r"<code>([a-z_.0-9]+)</code>", prefix.text)) == {"project.created"}
    by_actor = client.get("/admin/events", params={"actor": "ROOT"})
    assert set(re.findall(r"<code>([a-z_.0-9]+)</code>", by_actor.text)) == {"login.succeeded"}
    by_subject = client.get("/admin/events", params={"subject": "project:acme"})
    assert set(re.findall(r"<code>([a-z_.0-9]+)</code>", by_subject.text)) == {
        "project.created", "file.uploaded", "role.granted"}
    nothing = client.get("/admin/events", params={"subject": "project:%"})
    assert "No events match" in nothing.text


# ---------------------------------------------------------------------------------------------
# CSRF on every form this module adds
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path, data", [
    ("/projects/acme/manage", {"action": "add_role", "username": "carol", "role": "owner"}),
    ("/projects/acme/manage", {"action": "set_mfa", "required": "on"}),
    ("/projects/acme/delete", {"confirm": "acme"}),
    ("/admin/policy", {"policy": "everyone"}),
])
def test_forms_without_csrf_token_are_refused(bastion: Bastion, client: Any, people: dict[str, str], path: str,
                                              data: dict[str, str]) -> None:
    sign_in(client, "root")
    reauth(client)
    with bastion.db.read() as session:
        before = session.execute(select(Project.name, Project.mfa_required)).all()
        roles = session.execute(select(Role.user_id, Role.role)).all()
    for token in (None, "0" * 64, csrf(client, "/account/login") + "x"):
        response = client.post(path, data={**data, **({"csrf_token": token} if token else {})})
        assert_page(response, 403)
        assert "CSRF check failed" in response.text
    with bastion.db.read() as session:
        assert session.execute(select(Project.name, Project.mfa_required)).all() == before
        assert session.execute(select(Role.user_id, Role.role)).all() == roles
    assert actions(bastion)[-3:] == ["csrf.refused"] * 3
    assert "policy.changed" not in actions(bastion)


def test_hostile_query_strings_are_harmless(bastion: Bastion, client: Any, people: dict[str, str]) -> None:
    """NUL and control characters (PostgreSQL text cannot hold NUL), huge and negative numbers,
    LIKE wildcards: a page, never a 500."""
    for params in ({"q": "\x00"}, {"q": "ac\x00me"}, {"q": "a" * 10_000}, {"page": "9" * 400}, {"page": "-3"},
                   {"page": "١٢"}):
        response = client.get("/projects/", params=params)
        assert_page(response)
    assert "acme" in client.get("/projects/", params={"q": "ac\x00me"}).text
    sign_in(client, "root")
    for params in ({"action": "\x00"}, {"actor": "\x00*"}, {"subject": "project:\x00"}, {"before": "9" * 400},
                   {"before": "-1"}, {"action": "%_*"}):
        assert_page(client.get("/admin/events", params=params))
    for params in ({"before": "9" * 400}, {"before": "x"}):
        assert_page(client.get("/projects/acme/history", params=params))
    assert_page(client.get("/admin/", params={"users_page": "9" * 40}))
