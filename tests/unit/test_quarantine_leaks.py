"""A held file or a quarantined project must leak nowhere a non-admin can look: every read route
(simple pages in both formats and by TUF target name, files by plain and consistent-snapshot name,
wheel metadata, the JSON API, the web pages), the TUF targets, pages cached by a server before
another process quarantined, and what owners can still do to a project under review. Both
databases (the ``bastion`` and ``client`` fixtures)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from bastion.authz import OPERATOR
from bastion.errors import Forbidden
from bastion.events import CLI_CONTEXT
from bastion.packaging import service
from bastion.packaging.models import File, Project
from bastion.packaging.names import is_valid_name, name_refusal
from bastion.scanning import review
from bastion.services import Bastion
from bastion.simple.models import RenderedPage
from bastion.tuf.models import TufPageVersion, TufTarget
from tests.unit.uploads import hold_stored
from tests.conftest import make_user, post_upload, settle_tuf
from tests.distbuilder import make_sdist, make_wheel, upload_form

_hold = hold_stored
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


def _upload(client, token: str, tmp_path: Path, name: str, version: str, *, summary: str = "",  # type: ignore[no-untyped-def]
            tag: str = "py3-none-any"):
    directory = tmp_path / f"{name}-{version}-{tag}"
    directory.mkdir()
    metadata = None
    if summary:
        metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: {summary}\n"
    wheel = make_wheel(directory, name, version, tag=tag, metadata=metadata)
    response = post_upload(client, token, wheel, upload_form(wheel, name, version))
    assert response.status_code == 200, response.text
    return wheel


def _quarantine(bastion: Bastion, name: str) -> None:
    with bastion.db.write() as session:
        project = session.execute(select(Project).where(Project.normalized_name == name)).scalar_one()
        outcome = review.quarantine_project(session, bastion, project, source="admin", summary="suspected",
                                            principal=OPERATOR, context=CLI_CONTEXT)
    review.finish(bastion, outcome)


def _file(bastion: Bastion, filename: str) -> File:
    with bastion.db.read() as session:
        file = session.execute(select(File).where(File.filename == filename)).scalar_one()
        session.expunge(file)
        return file


def _every_read(client, bastion: Bastion, name: str, filename: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Each read route a non-admin can reach, and what it answered (status or where the name shows)."""
    f = _file(bastion, filename)
    out: dict[str, str] = {}
    for label, url, headers in [
        ("simple", f"/simple/{name}/", {}),
        ("simple-json", f"/simple/{name}/", JSON),
        ("simple-format", f"/simple/{name}/?format=application/vnd.pypi.simple.v1+json", {}),
        ("index.html", f"/simple/{name}/index.html", {}),
        ("index.json", f"/simple/{name}/index.json", {}),
        ("json-api", f"/pypi/{name}/json", {}),
        ("project-page", f"/projects/{name}/", {}),
        ("list-page", f"/projects/?q={name}", {}),
    ]:
        response = client.get(url, headers=headers)
        out[label] = "shows" if filename in response.text or f.sha256_digest in response.text else "hidden"
    for label, url in [
        ("file", f"/{f.path}"),
        ("metadata", f"/{f.path}.metadata"),
        ("snapshot-name", "/" + f.path.rpartition("/")[0] + f"/{f.sha256_digest}.{filename}"),
    ]:
        out[label] = str(client.get(url).status_code)
        out[label + "-head"] = str(client.head(url).status_code)
    return out


HIDDEN = {"simple": "hidden", "simple-json": "hidden", "simple-format": "hidden", "index.html": "hidden",
          "index.json": "hidden", "json-api": "hidden", "project-page": "hidden", "list-page": "hidden",
          "file": "404", "file-head": "404", "metadata": "404", "metadata-head": "404", "snapshot-name": "404",
          "snapshot-name-head": "404"}


def test_a_held_wheel_is_on_no_read_route_and_no_tuf_target(bastion: Bastion, client, tmp_path: Path) -> None:
    token = make_user(bastion, "alice")
    _upload(client, token, tmp_path, "leaky", "1.0")
    wheel = _upload(client, token, tmp_path, "leaky", "1.1")
    seen = _every_read(client, bastion, "leaky", wheel.name)  # read (and cached) while still published
    assert seen["file"] == "200" and seen["metadata"] == "200" and seen["simple"] == "shows"
    _hold(bastion, wheel.name)
    assert _every_read(client, bastion, "leaky", wheel.name) == HIDDEN
    assert client.get("/pypi/leaky/1.1/json").status_code == 404
    settle_tuf(bastion)
    path = _file(bastion, wheel.name).path
    with bastion.db.read() as session:
        targets = set(session.execute(select(TufTarget.path)).scalars())
    assert path not in targets and any(t.endswith("leaky-1.0-py3-none-any.whl") for t in targets)


def test_a_quarantined_project_is_on_no_read_route(bastion: Bastion, client, tmp_path: Path) -> None:
    token = make_user(bastion, "alice")
    wheel = _upload(client, token, tmp_path, "qproj", "1.0")
    assert _every_read(client, bastion, "qproj", wheel.name)["file"] == "200"
    f = _file(bastion, wheel.name)
    etags = {url: client.get(url).headers["etag"] for url in (f"/{f.path}", f"/{f.path}.metadata", "/pypi/qproj/json")}
    _quarantine(bastion, "qproj")
    assert _every_read(client, bastion, "qproj", wheel.name) == HIDDEN
    for url, headers in (("/simple/", {}), ("/simple/", JSON), ("/simple/index.html", {}),
                         ("/simple/index.json", {}), ("/projects/", {})):
        assert "qproj" not in client.get(url, headers=headers).text, (url, headers)
    for url, etag in etags.items():  # a client revalidating what it fetched before gets no 304
        assert client.get(url, headers={"If-None-Match": etag}).status_code == 404, url
    assert client.get("/pypi/qproj/1.0/json").status_code == 404
    settle_tuf(bastion)
    with bastion.db.read() as session:
        targets = set(session.execute(select(TufTarget.path)).scalars())
    assert _file(bastion, wheel.name).path not in targets


def test_a_quarantine_in_another_process_drops_the_servers_cached_pages(bastion: Bastion, client, bastion_with,  # type: ignore[no-untyped-def]
                                                                        tmp_path: Path) -> None:
    token = make_user(bastion, "alice")
    wheel = _upload(client, token, tmp_path, "cached", "1.0")
    before = client.get("/simple/cached/")
    assert wheel.name in before.text and _every_read(client, bastion, "cached", wheel.name)["file"] == "200"
    other, _ = bastion_with()  # the CLI: another Bastion on the same data dir and database
    _quarantine(other, "cached")
    assert _every_read(client, bastion, "cached", wheel.name) == HIDDEN
    # A client revalidating the page it cached before the quarantine gets the new page, not a 304.
    again = client.get("/simple/cached/", headers={"If-None-Match": before.headers["etag"]})
    assert again.status_code == 200 and wheel.name not in again.text


def test_yank_and_unyank_of_a_held_release_expose_nothing(bastion: Bastion, client, tmp_path: Path) -> None:
    token = make_user(bastion, "alice")
    _upload(client, token, tmp_path, "yanky", "1.0")
    wheel = _upload(client, token, tmp_path, "yanky", "2.0")
    _hold(bastion, wheel.name)
    owner = _principal(bastion, "alice")
    for yanked in (True, False):
        with bastion.db.write() as session:
            serial = service.set_yanked(session, "yanky", "2.0", yanked=yanked, reason="x" if yanked else None,
                                        principal=owner)
        bastion.notify_change(serial)
        assert _every_read(client, bastion, "yanky", wheel.name) == HIDDEN
        assert client.get("/pypi/yanky/2.0/json").status_code == 404


def _principal(bastion: Bastion, name: str):  # type: ignore[no-untyped-def]
    from bastion.accounts.models import User
    from bastion.authz import Principal

    with bastion.db.read() as session:
        user = session.execute(select(User).where(User.username == name)).scalar_one()
        return Principal(user_id=user.id, username=user.username, is_admin=user.is_admin, has_2fa=True)


def test_owners_cannot_change_a_quarantined_project_under_review(bastion: Bastion, client, tmp_path: Path) -> None:
    """Deleting it would destroy the files under review (and free the name); role changes would
    change who a remove-project decision freezes (an innocent user added as owner, an accomplice
    removed); yanking and the 2FA opt-in are changes too. The admins' decision ends the freeze."""
    token = make_user(bastion, "mal")
    make_user(bastion, "accomplice")
    make_user(bastion, "victim")
    wheel = _upload(client, token, tmp_path, "frozenproj", "1.0")
    owner = _principal(bastion, "mal")
    with bastion.db.write() as session:
        service.add_role(session, "frozenproj", "accomplice", "maintainer", principal=owner)
    _quarantine(bastion, "frozenproj")
    attempts = {
        "delete": lambda s: service.delete_project(s, bastion, "frozenproj", principal=owner),
        "add-role": lambda s: service.add_role(s, "frozenproj", "victim", "owner", principal=owner),
        "remove-role": lambda s: service.remove_role(s, "frozenproj", "accomplice", principal=owner),
        "yank": lambda s: service.set_yanked(s, "frozenproj", "1.0", yanked=True, reason="x", principal=owner),
        "mfa": lambda s: service.set_project_mfa_required(s, "frozenproj", True, principal=owner),
    }
    for what, attempt in attempts.items():
        with pytest.raises(Forbidden, match="quarantined"), bastion.db.write() as session:
            attempt(session)
    with bastion.db.read() as session:
        assert sorted((r.username, r.role) for r in service.list_roles(session, "frozenproj", principal=owner)) == [
            ("accomplice", "maintainer"), ("mal", "owner")]
        assert session.execute(select(File.id).where(File.filename == wheel.name)).first() is not None
    # Released by an admin: the owners may act again.
    with bastion.db.read() as session:
        case_id = session.execute(select(review.ReviewCase.id)).scalar_one()
    with bastion.db.write() as session:
        review.finish(bastion, review.decide_case(session, bastion, case_id, "release", OPERATOR))
    with bastion.db.write() as session:
        service.set_yanked(session, "frozenproj", "1.0", yanked=True, reason="x", principal=owner)


def test_a_clean_file_added_to_a_held_release_does_not_publish_the_held_files_metadata(
        bastion: Bastion, client, tmp_path: Path) -> None:
    token = make_user(bastion, "alice")
    _upload(client, token, tmp_path, "metapkg", "1.0", summary="the old release")
    held = _upload(client, token, tmp_path, "metapkg", "2.0", summary="visit evil.example for the key",
                   tag="py3-none-any")
    _hold(bastion, held.name)
    assert "evil.example" not in client.get("/projects/metapkg/").text
    _upload(client, token, tmp_path, "metapkg", "2.0", summary="the clean build", tag="py2.py3-none-any")
    for url in ("/pypi/metapkg/json", "/pypi/metapkg/2.0/json", "/projects/metapkg/", "/projects/?q=metapkg"):
        text = client.get(url).text
        assert "evil.example" not in text, url
        assert "the clean build" in text, url


def test_an_identical_retry_of_a_held_file_publishes_nothing(bastion: Bastion, client, tmp_path: Path) -> None:
    token = make_user(bastion, "alice")
    _upload(client, token, tmp_path, "retry", "1.0")
    held = _upload(client, token, tmp_path, "retry", "1.1")
    _hold(bastion, held.name)
    again = post_upload(client, token, held, upload_form(held, "retry", "1.1"))
    assert again.status_code == 200, again.text  # twine --skip-existing: the same file is stored
    assert _every_read(client, bastion, "retry", held.name) == HIDDEN


@pytest.mark.parametrize("spelling", ["Evil.Pkg", "EVIL__pkg", "evilpkg", "evi1-pkg", "EviI-Pkg", "evil-pk9"])
def test_a_banned_name_is_refused_in_any_confusable_spelling(bastion: Bastion, client, tmp_path: Path,
                                                              spelling: str) -> None:
    """The ban list uses the same fold as the check against existing projects (separators, l/i/1,
    o/0): banning a removed malware project's name must not leave 'evilpkg' or 'evi1-pkg' open."""
    token = make_user(bastion, "alice")
    with bastion.db.write() as session:
        review.set_name_rule(session, bastion, "evil-pkg", "ban", OPERATOR, "removed as malware")
    directory = tmp_path / "w"
    directory.mkdir()
    wheel = make_wheel(directory, spelling, "1.0")
    response = post_upload(client, token, wheel, upload_form(wheel, spelling, "1.0"))
    if spelling == "evil-pk9":  # a different name (9 is no confusable of g): the ban does not reach it
        assert response.status_code == 200, response.text
        return
    assert response.status_code == 400 and "prohibited" in response.text, response.text
    with bastion.db.read() as session:
        assert session.execute(select(Project.id)).first() is None


def test_an_allowed_name_is_not_caught_by_the_ban_of_a_look_alike(bastion: Bastion, client, tmp_path: Path) -> None:
    token = make_user(bastion, "alice")
    with bastion.db.write() as session:
        review.set_name_rule(session, bastion, "evil-pkg", "ban", OPERATOR, "removed as malware")
        review.set_name_rule(session, bastion, "evilpkg", "allow", OPERATOR, "a different, known project")
    for name, status in (("evilpkg", 200), ("evi1pkg", 400)):
        directory = tmp_path / name
        directory.mkdir()
        wheel = make_wheel(directory, name, "1.0")
        response = post_upload(client, token, wheel, upload_form(wheel, name, "1.0"))
        assert response.status_code == status, (name, response.text)


def test_older_signed_pages_of_a_quarantined_project_are_not_served(bastion: Bastion, client, tmp_path: Path) -> None:
    """TUF consistent snapshots keep each signed page version at ``<sha256>.index.html``; a
    quarantined project's older versions list its files (names, hashes), so they are withheld until
    the review ends; the current page (no files) stays reachable for TUF clients."""
    token = make_user(bastion, "alice")
    wheel = _upload(client, token, tmp_path, "oldpage", "1.0")
    settle_tuf(bastion)
    with bastion.db.read() as session:
        old = [(path.rsplit("/", 1)[1], digest) for path, digest in session.execute(
            select(TufPageVersion.path, TufPageVersion.sha256).where(TufPageVersion.path.startswith("simple/oldpage/"))
        ).all()]
    assert len(old) == 2
    for page, digest in old:  # served (and cached) before the quarantine
        response = client.get(f"/simple/oldpage/{digest}.{page}")
        assert response.status_code == 200 and wheel.name in response.text
    _quarantine(bastion, "oldpage")
    for settled in (False, True):  # before and after the snapshot worker signed the new pages
        if settled:
            settle_tuf(bastion)
        for page, digest in old:
            assert client.get(f"/simple/oldpage/{digest}.{page}").status_code == 404, (settled, page)
    with bastion.db.read() as session:
        current = session.execute(select(RenderedPage.sha256).where(
            RenderedPage.key == "simple/oldpage/index.html")).scalar_one()
    response = client.get(f"/simple/oldpage/{current}.index.html")
    assert response.status_code == 200 and wheel.name not in response.text
    with bastion.db.read() as session:
        case_id = session.execute(select(review.ReviewCase.id)).scalar_one()
    with bastion.db.write() as session:
        review.finish(bastion, review.decide_case(session, bastion, case_id, "release", OPERATOR))
    for page, digest in old:
        assert client.get(f"/simple/oldpage/{digest}.{page}").status_code == 200


def test_releasing_a_quarantined_project_keeps_its_held_file_held(bastion: Bastion, client, tmp_path: Path) -> None:
    token = make_user(bastion, "alice")
    clean = _upload(client, token, tmp_path, "both", "1.0", summary="SUMMARY-OF-BOTH")
    held = _upload(client, token, tmp_path, "both", "1.1")
    file_case = _hold(bastion, held.name)
    _quarantine(bastion, "both")
    assert _every_read(client, bastion, "both", clean.name) == HIDDEN
    for url in ("/projects/both/", "/projects/?q=both", "/simple/", "/pypi/both/1.0/json"):
        assert "SUMMARY-OF-BOTH" not in client.get(url).text, url
    # Neither a retry of a stored file nor a new one gets into a quarantined project.
    assert post_upload(client, token, clean, upload_form(clean, "both", "1.0")).status_code == 403
    assert post_upload(client, token, held, upload_form(held, "both", "1.1")).status_code == 403
    with bastion.db.read() as session:
        project_case = session.execute(select(review.ReviewCase.id).where(
            review.ReviewCase.kind == "project")).scalar_one()
    with bastion.db.write() as session:
        review.finish(bastion, review.decide_case(session, bastion, project_case, "release", OPERATOR))
    assert _every_read(client, bastion, "both", clean.name)["file"] == "200"
    assert _every_read(client, bastion, "both", held.name) == HIDDEN
    assert client.get("/pypi/both/json").json()["info"]["version"] == "1.0"
    with bastion.db.write() as session:
        review.finish(bastion, review.decide_case(session, bastion, file_case, "release", OPERATOR))
    assert _every_read(client, bastion, "both", held.name)["file"] == "200"


def test_a_project_removed_as_malware_cannot_be_registered_again(bastion: Bastion, client, tmp_path: Path) -> None:
    """remove-project frees the name (delete_project does), and another account could register it
    at once and serve a new version to everyone who installs it by name: the decision bans it."""
    token = make_user(bastion, "mallory")
    wheel = _upload(client, token, tmp_path, "stealer", "1.0")
    case_id = _hold(bastion, wheel.name)
    with bastion.db.write() as session:
        review.finish(bastion, review.decide_case(session, bastion, case_id, "remove-project", OPERATOR, "stealer"))
    sock = make_user(bastion, "sockpuppet")
    for name in ("stealer", "Stea1er"):
        directory = tmp_path / f"again-{name}"
        directory.mkdir()
        again = make_wheel(directory, name, "1.1")
        response = post_upload(client, sock, again, upload_form(again, name, "1.1"))
        assert response.status_code == 400 and "prohibited" in response.text, response.text
    with bastion.db.read() as session:
        rules = {r.normalized_name: r.rule for r in review.list_name_rules(session)}
    assert rules == {"stealer": "ban"}


@pytest.mark.parametrize("name", ["ev\u0131l-pkg", "evil-p\u017fg", "\u212aevil"])
def test_a_name_with_a_non_ascii_look_alike_letter_is_refused(bastion: Bastion, client, tmp_path: Path,
                                                              name: str) -> None:
    """Python's re with IGNORECASE lets [A-Z] match the dotless i, the long s and the Kelvin sign,
    so the index's own name check took 'evıl-pkg' for valid (and 'bastion names check' called it
    ok beside the ban on 'evil-pkg'); packaging's metadata check refuses it at upload. Project
    names are ASCII (PEP 508)."""
    assert not is_valid_name(name) and name_refusal(name, frozenset({"evil-pkg"})) is not None
    token = make_user(bastion, "alice")
    with bastion.db.write() as session:
        review.set_name_rule(session, bastion, "evil-pkg", "ban", OPERATOR, "removed as malware")
    directory = tmp_path / "w"
    directory.mkdir()
    wheel = make_wheel(directory, name, "1.0", filename=f"{name.replace('-', '_')}-1.0-py3-none-any.whl")
    response = post_upload(client, token, wheel, upload_form(wheel, name, "1.0"))
    assert response.status_code == 400 and "is invalid for 'name'" in response.text, response.text
    with bastion.db.read() as session:
        assert session.execute(select(Project.id)).first() is None


def test_releasing_a_held_file_publishes_its_own_metadata(bastion: Bastion, client, tmp_path: Path) -> None:
    """Two files of 2.0 held, the one whose metadata the release carries removed, the other
    released: the release must show the released file's metadata, not the removed file's."""
    token = make_user(bastion, "alice")
    _upload(client, token, tmp_path, "twoheld", "1.0", summary="the old release")
    kept = _upload(client, token, tmp_path, "twoheld", "2.0", summary="KEPT-SUMMARY")
    kept_case = _hold(bastion, kept.name)
    removed = _upload(client, token, tmp_path, "twoheld", "2.0", summary="REMOVED-SUMMARY", tag="py2.py3-none-any")
    removed_case = _hold(bastion, removed.name)
    with bastion.db.write() as session:
        review.finish(bastion, review.decide_case(session, bastion, removed_case, "remove", OPERATOR))
    with bastion.db.write() as session:
        review.finish(bastion, review.decide_case(session, bastion, kept_case, "release", OPERATOR))
    for url in ("/pypi/twoheld/json", "/pypi/twoheld/2.0/json", "/projects/twoheld/"):
        text = client.get(url).text
        assert "REMOVED-SUMMARY" not in text and "KEPT-SUMMARY" in text, url


def test_releasing_a_held_sdist_publishes_its_own_metadata(bastion: Bastion, client, tmp_path: Path) -> None:
    token = make_user(bastion, "alice")
    directory = tmp_path / "sdist"
    directory.mkdir()
    sdist = make_sdist(directory, "heldsdist", "2.0", metadata=(
        "Metadata-Version: 2.1\nName: heldsdist\nVersion: 2.0\nSummary: SDIST-SUMMARY\n"))
    response = post_upload(client, token, sdist, upload_form(sdist, "heldsdist", "2.0", filetype="sdist"))
    assert response.status_code == 200, response.text
    sdist_case = _hold(bastion, sdist.name)
    removed = _upload(client, token, tmp_path, "heldsdist", "2.0", summary="REMOVED-SUMMARY")
    removed_case = _hold(bastion, removed.name)
    with bastion.db.write() as session:
        review.finish(bastion, review.decide_case(session, bastion, removed_case, "remove", OPERATOR))
    with bastion.db.write() as session:
        review.finish(bastion, review.decide_case(session, bastion, sdist_case, "release", OPERATOR))
    text = client.get("/pypi/heldsdist/2.0/json").text
    assert "REMOVED-SUMMARY" not in text and "SDIST-SUMMARY" in text
