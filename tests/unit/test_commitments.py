"""The seven commitments of the security page and its panels, on SQLite and PostgreSQL, over one
prepared world: real uploads (twine's form), advisories imported from OSV YAML files with the
importer, roles, 2FA and owner declarations made through the services. Every boundary is checked
by computing the report at chosen moments (``now``) around fixed dates: 30 days for a fresh
advisory, 365 days for the role review, 12 and 24 months of maintenance, archived, a yanked latest
release, a pre-release latest release, a held release, a quarantined project."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from bastion.advisories.ingest import import_path
from bastion.advisories.models import Application, ApplicationPackage, ProjectSecurity
from bastion.authz import OPERATOR
from bastion.errors import NotFound, ServiceError
from bastion.insights import commitments
from bastion.insights.commitments import Declaration, _months_before, project_report
from bastion.packaging import service
from bastion.packaging.models import Project, Release
from tests.conftest import BACKENDS, post_upload, require_backend
from tests.distbuilder import make_wheel, metadata_text, upload_form
from tests.unit.test_web_pages import enroll_2fa
from tests.unit.uploads import hold_stored
from tests.unit.world import Recipe, World

P = datetime(2026, 1, 1, tzinfo=UTC)
"""When the advisories of this world were published; releases are dated around it."""

ADVISORY = """\
id: {id}
modified: 2026-01-02T00:00:00Z
published: {published}
aliases: [{aliases}]
summary: {summary}
details: A flaw in {name}.
{extra}affected:
- package:
    ecosystem: PyPI
    name: {name}
  ranges:
  - type: ECOSYSTEM
    events:
    - introduced: "{introduced}"
{fixed}"""


def write_advisory(tree: Path, ident: str, name: str, *, published: datetime, introduced: str = "0",
                   fixed: str | None = None,
                   last_affected: str | None = None, aliases: tuple[str, ...] = (), severity: str | None = None,
                   summary: str = "a flaw") -> None:
    """One OSV record in the PyPA layout (vulns/<project>/<ID>.yaml)."""
    folder = tree / "vulns" / name
    folder.mkdir(parents=True, exist_ok=True)
    events = ""
    if fixed:
        events = f'    - fixed: "{fixed}"\n'
    elif last_affected:
        events = f'    - last_affected: "{last_affected}"\n'
    extra = f"database_specific:\n  severity: {severity}\n" if severity else ""
    (folder / f"{ident}.yaml").write_text(ADVISORY.format(
        id=ident, published=published.strftime("%Y-%m-%dT%H:%M:%SZ"), aliases=", ".join(aliases), summary=summary,
        name=name, extra=extra, introduced=introduced, fixed=events))


def upload(w: World, token: str, name: str, version: str, *, extra: str = "") -> None:
    folder = w.root / "dists" / f"{name}-{version}"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = make_wheel(folder, name, version, metadata=metadata_text(name, version, extra=extra))
    response = post_upload(w.client, token, wheel, upload_form(wheel, name, version))
    assert response.status_code == 200, response.text


def set_created(w: World, name: str, version: str, when: datetime) -> None:
    with w.bastion.db.write() as session:
        project_id = session.execute(select(Project.id).where(Project.normalized_name == name)).scalar_one()
        session.execute(update(Release).where(Release.project_id == project_id, Release.version == version)
                        .values(created=when))


def declare(w: World, name: str, *actions: str, when: datetime | None = None, value: str = "") -> None:
    """Declarations made by the operator, then dated ``when``."""
    with w.bastion.db.write() as session:
        commitments.declare(session, name, [Declaration(a, value) for a in actions], principal=OPERATOR,
                            secret=w.bastion.secret)
        if when is not None:
            row = session.get(ProjectSecurity, service.get_project(session, name).id)
            assert row is not None
            for action in actions:
                if action == "confirm-roles":
                    row.roles_confirmed = when
                elif action == "reaffirm":
                    row.reaffirmed = when
                elif action == "codehost-2fa":
                    row.codehost_2fa = when


def build(w: World) -> None:
    w.user("alice")
    w.user("bob")
    w.user("carol")
    alice = w.token("alice", "alice")
    carol = w.token("carol", "carol")
    upload(w, alice, "clean-pkg", "1.0", extra="Project-URL: Security Policy, https://example.org/security\n")
    upload(w, alice, "vuln-old", "1.0")
    upload(w, alice, "vuln-fresh", "1.0")
    upload(w, alice, "fixed-pkg", "1.0")
    upload(w, alice, "fixed-pkg", "1.1")
    upload(w, alice, "yanked-latest", "1.0")
    upload(w, alice, "yanked-latest", "2.0")
    upload(w, alice, "pre-latest", "1.0")
    upload(w, alice, "pre-latest", "2.0rc1")
    upload(w, alice, "only-pre", "1.0a1")
    upload(w, alice, "held-pkg", "1.0")
    upload(w, alice, "held-pkg", "2.0")
    upload(w, alice, "app-pkg", "1.0", extra=(
        "Requires-Dist: fixed-pkg<1.1\nRequires-Dist: clean-pkg>=1\n"
        "Requires-Dist: not-here>=1; python_version < \"3.9\"\n"))
    upload(w, alice, "dep-warn", "1.0", extra="Requires-Dist: clean-pkg\nRequires-Dist: not-here\n")
    upload(w, alice, "dep-unknown", "1.0", extra="Requires-Dist: not-here\nRequires-Dist: dep-unknown[extra]; extra == 'all'\n")
    upload(w, carol, "carols-pkg", "1.0")
    upload(w, alice, "archived-pkg", "1.0")
    upload(w, alice, "quarantined-pkg", "1.0")
    with w.bastion.db.write() as session:
        service.add_role(session, "clean-pkg", "bob", "maintainer", principal=OPERATOR)
        session.execute(update(Project).where(Project.normalized_name == "archived-pkg").values(status="archived"))
        session.execute(update(Project).where(Project.normalized_name == "quarantined-pkg")
                        .values(status="quarantined"))
        service.set_yanked(session, "yanked-latest", "2.0", yanked=True, reason="broken", principal=OPERATOR)
    enroll_2fa(w.bastion, "alice")
    enroll_2fa(w.bastion, "carol")
    hold_stored(w.bastion, "held_pkg-2.0-py3-none-any.whl")
    for name, version, when in (("fixed-pkg", "1.0", P - timedelta(days=100)), ("fixed-pkg", "1.1", P + timedelta(days=10)),
                                ("clean-pkg", "1.0", P), ("carols-pkg", "1.0", P)):
        set_created(w, name, version, when)

    tree = w.root / "advisories"
    write_advisory(tree, "PYSEC-2026-1", "vuln-old", published=P - timedelta(days=400), aliases=("CVE-2026-0001",),
                   severity="MODERATE", summary="old flaw")
    write_advisory(tree, "GHSA-aaaa-bbbb-cccc", "vuln-old", published=P - timedelta(days=400),
                   aliases=("CVE-2026-0001",), summary="old flaw, seen by GitHub")
    write_advisory(tree, "PYSEC-2026-2", "vuln-fresh", published=P, severity="CRITICAL", summary="fresh flaw")
    write_advisory(tree, "PYSEC-2026-3", "fixed-pkg", published=P, fixed="1.1", summary="fixed flaw")
    write_advisory(tree, "PYSEC-2026-4", "yanked-latest", published=P - timedelta(days=400), introduced="2.0")
    write_advisory(tree, "PYSEC-2026-5", "pre-latest", published=P - timedelta(days=400), introduced="2.0rc1")
    write_advisory(tree, "PYSEC-2026-6", "only-pre", published=P - timedelta(days=400), last_affected="1.0a1")
    write_advisory(tree, "PYSEC-2026-7", "held-pkg", published=P - timedelta(days=400), introduced="2.0")
    summary = import_path(w.bastion, tree)
    assert summary.skipped == 0, summary.problems
    assert summary.added == 8

    with w.bastion.db.write() as session:  # registered applications (another part registers them)
        for app_name, direct in (("shop", True), ("billing", False), ("crm", False)):
            app = Application(name=app_name, source_format="requirements")
            session.add(app)
            session.flush()
            session.add(ApplicationPackage(application_id=app.id, normalized_name="clean-pkg", version="1.0",
                                           direct=direct))
    # Role events carry the real time: the role lists are confirmed now, after bob joined clean-pkg
    # and before he joins carols-pkg.
    declare(w, "clean-pkg", "confirm-roles")
    declare(w, "clean-pkg", "codehost-2fa", when=P)
    declare(w, "carols-pkg", "contact", value="security@example.org")
    declare(w, "carols-pkg", "confirm-roles")
    declare(w, "dep-warn", "reaffirm", when=P + timedelta(days=300))
    set_created(w, "dep-warn", "1.0", P - timedelta(days=400))
    with w.bastion.db.write() as session:
        service.add_role(session, "carols-pkg", "bob", "maintainer", principal=OPERATOR)  # after the review
    declare(w, "vuln-old", "codehost-2fa")
    declare(w, "vuln-old", "codehost-2fa-withdraw")


WORLD = Recipe(build, "commitments")


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return require_backend(request.param)


def report(world: World, name: str, now: datetime) -> commitments.ProjectReport:
    with world.bastion.db.read() as session:
        return project_report(session, name, now=now)


def status(world: World, name: str, key: str, now: datetime) -> tuple[str, list[str]]:
    found = next(c for c in report(world, name, now).commitments if c.key == key)
    return found.status, found.evidence


def test_vulnerability_fixes_boundaries(world: World) -> None:
    # No open advisory on the latest release.
    assert status(world, "clean-pkg", "vulnerability-fixes", P)[0] == "pass"
    # Under 30 days old: warn; from 30 days on: fail.
    assert status(world, "vuln-fresh", "vulnerability-fixes", P + timedelta(days=29, hours=23))[0] == "warn"
    verdict, evidence = status(world, "vuln-fresh", "vulnerability-fixes", P + timedelta(days=30))
    assert verdict == "fail"
    assert evidence == ["PYSEC-2026-2 open since 2026-01-01 on 1.0 (30 days)"]
    # The PYSEC and GHSA records of one CVE are one advisory, shown under the PYSEC id with the CVE.
    verdict, evidence = status(world, "vuln-old", "vulnerability-fixes", P)
    assert verdict == "fail"
    assert evidence == ["PYSEC-2026-1 (CVE-2026-0001) open since 2024-11-27 on 1.0 (400 days)"]
    # The fix is the latest release: pass, though 1.0 stays vulnerable.
    assert status(world, "fixed-pkg", "vulnerability-fixes", P)[0] == "pass"
    # A yanked latest release is not the latest: 1.0 is, and it is clean.
    assert status(world, "yanked-latest", "vulnerability-fixes", P) == ("pass", ["no open advisory on 1.0"])
    # A pre-release is not the latest while a final release exists ...
    assert status(world, "pre-latest", "vulnerability-fixes", P) == ("pass", ["no open advisory on 1.0"])
    # ... but it is when there is nothing else.
    assert status(world, "only-pre", "vulnerability-fixes", P)[0] == "fail"
    # A release whose every file is held is not shown: 1.0 is the latest.
    assert status(world, "held-pkg", "vulnerability-fixes", P) == ("pass", ["no open advisory on 1.0"])


def test_disclosure(world: World) -> None:
    assert status(world, "clean-pkg", "disclosure", P) == (
        "pass", ["Project-URL 'Security Policy': https://example.org/security"])
    assert status(world, "carols-pkg", "disclosure", P) == (
        "pass", ["security contact set by the owners: security@example.org"])
    assert status(world, "vuln-old", "disclosure", P)[0] == "fail"


def test_dependencies_monitored(world: World) -> None:
    rows = {row.name: row for row in report(world, "app-pkg", P).dependencies}
    assert rows["fixed-pkg"].status == "fail"
    assert rows["fixed-pkg"].evidence == "every release satisfying <1.1 has an open advisory (1.0)"
    assert rows["fixed-pkg"].latest_version == "1.1" and not rows["fixed-pkg"].latest_vulnerable
    assert rows["clean-pkg"].status == "pass"
    assert rows["clean-pkg"].evidence == "1.0 satisfies >=1 and has no open advisory"
    assert rows["not-here"].status == "unknown" and not rows["not-here"].in_index
    assert rows["not-here"].marker == 'python_version < "3.9"'
    assert status(world, "app-pkg", "dependencies", P)[0] == "fail"
    verdict, evidence = status(world, "dep-warn", "dependencies", P)
    assert verdict == "warn"
    assert evidence == ["1 of 2 dependencies monitored", "not-here: not on this index: cannot be checked here"]
    assert status(world, "dep-unknown", "dependencies", P)[0] == "unknown"
    assert [row.name for row in report(world, "dep-unknown", P).dependencies] == ["not-here"]  # not itself
    assert status(world, "clean-pkg", "dependencies", P) == ("pass", ["1.0 has no dependencies"])


def confirmed(world: World, name: str) -> datetime:
    with world.bastion.db.read() as session:
        row = session.get(ProjectSecurity, service.get_project(session, name).id)
        assert row is not None and row.roles_confirmed is not None
        return row.roles_confirmed


def test_release_managers_reviewed(world: World) -> None:
    # Passes for 365 days after the confirmation, fails after.
    when = confirmed(world, "clean-pkg")
    verdict, evidence = status(world, "clean-pkg", "release-managers", when + timedelta(days=365))
    assert verdict == "pass"
    assert evidence[0] == f"confirmed by operator (cli) on {when:%Y-%m-%d}"
    assert evidence[1].startswith("alice (owner): last upload ") and evidence[2] == "bob (maintainer): no upload"
    verdict, evidence = status(world, "clean-pkg", "release-managers", when + timedelta(days=365, seconds=1))
    assert verdict == "fail" and evidence[0].endswith("over 365 days ago")
    # A role given after the confirmation: the confirmed list is no longer the list.
    verdict, evidence = status(world, "carols-pkg", "release-managers", confirmed(world, "carols-pkg"))
    assert verdict == "warn"
    assert any(line.startswith("changed since: bob given the role maintainer on ") for line in evidence)
    # Never confirmed.
    assert status(world, "vuln-old", "release-managers", P)[0] == "fail"


def test_index_2fa(world: World) -> None:
    assert status(world, "clean-pkg", "index-2fa", P) == ("fail", ["bob: no 2FA"])
    assert status(world, "vuln-old", "index-2fa", P) == ("pass", ["all 1 owners and maintainers use 2FA"])


def test_codehost_2fa_is_self_reported(world: World) -> None:
    verdict, evidence = status(world, "clean-pkg", "codehost-2fa", P + timedelta(days=365))
    assert verdict == "pass"
    assert evidence == ["self-reported by operator (cli) on 2026-01-01 (not observable by the index)"]
    assert status(world, "clean-pkg", "codehost-2fa", P + timedelta(days=366))[0] == "warn"
    verdict, evidence = status(world, "vuln-old", "codehost-2fa", P)
    assert verdict == "fail" and evidence[0].startswith("withdrawn by operator (cli) on ")
    assert status(world, "vuln-fresh", "codehost-2fa", P)[0] == "unknown"


def test_continued_maintenance(world: World) -> None:
    # carols-pkg's only release is dated P.
    assert status(world, "carols-pkg", "maintenance", datetime(2027, 1, 1, tzinfo=UTC)) == (
        "pass", ["last release 1.0 on 2026-01-01"])
    assert status(world, "carols-pkg", "maintenance", datetime(2027, 1, 1, 0, 0, 1, tzinfo=UTC))[0] == "warn"
    assert status(world, "carols-pkg", "maintenance", datetime(2028, 1, 1, tzinfo=UTC))[0] == "warn"
    verdict, evidence = status(world, "carols-pkg", "maintenance", datetime(2028, 1, 1, 0, 0, 1, tzinfo=UTC))
    assert verdict == "fail" and evidence[-1] == "nothing in the last 24 months"
    # A reaffirmation counts as much as a release: dep-warn's release is older than 24 months then.
    reaffirmed = P + timedelta(days=300)
    verdict, evidence = status(world, "dep-warn", "maintenance", reaffirmed + timedelta(days=360))
    assert verdict == "pass" and evidence[1] == f"reaffirmed by operator (cli) on {reaffirmed:%Y-%m-%d}"
    assert status(world, "dep-warn", "maintenance", reaffirmed + timedelta(days=800))[0] == "fail"
    assert status(world, "archived-pkg", "maintenance", P) == ("fail", ["the project is archived"])


def test_month_arithmetic() -> None:
    assert _months_before(datetime(2026, 3, 31, tzinfo=UTC), 1) == datetime(2026, 2, 28, tzinfo=UTC)
    assert _months_before(datetime(2028, 2, 29, tzinfo=UTC), 12) == datetime(2027, 2, 28, tzinfo=UTC)
    assert _months_before(datetime(2026, 1, 15, tzinfo=UTC), 24) == datetime(2024, 1, 15, tzinfo=UTC)


def test_panels(world: World) -> None:
    fixed = report(world, "fixed-pkg", P)
    assert [(r.version, r.latest, r.advisories) for r in fixed.releases] == [("1.1", True, []),
                                                                            ("1.0", False, ["PYSEC-2026-3"])]
    [vuln] = fixed.vulnerabilities
    assert (vuln.id, vuln.affected, vuln.fixed_in, vuln.first_fixed, vuln.days_to_fix, vuln.open_on_latest) == (
        "PYSEC-2026-3", ["1.0"], ["1.1"], "1.1", 10, False)
    assert fixed.median_days_to_fix == 10 and fixed.fixes_measured == 1

    old = report(world, "vuln-old", P)
    [merged] = old.vulnerabilities
    assert merged.id == "PYSEC-2026-1" and merged.aliases == ["CVE-2026-0001", "GHSA-aaaa-bbbb-cccc"]
    assert merged.severity == "MODERATE" and merged.first_fixed is None and merged.open_on_latest

    yanked = report(world, "yanked-latest", P)
    assert [(r.version, r.yanked, r.latest, r.advisories) for r in yanked.releases] == [
        ("2.0", True, False, ["PYSEC-2026-4"]), ("1.0", False, True, [])]
    assert [(r.version, r.prerelease) for r in report(world, "pre-latest", P).releases] == [
        ("2.0rc1", True), ("1.0", False)]
    assert [r.version for r in report(world, "held-pkg", P).releases] == ["1.0"]  # 2.0 is held

    clean = report(world, "clean-pkg", P)
    assert clean.usage is not None
    assert clean.usage.reverse_dependencies == ["app-pkg", "dep-warn"]
    assert (clean.usage.applications_direct, clean.usage.applications_transitive) == (1, 2)
    assert [(p.username, p.role, p.has_2fa) for p in clean.people] == [("alice", "owner", True),
                                                                       ("bob", "maintainer", False)]
    assert clean.counts() == {"pass": 6, "warn": 0, "fail": 1, "unknown": 0}  # bob: no 2FA
    document = clean.as_json()
    assert document["commitments"][0]["key"] == "vulnerability-fixes"
    assert document["quarantined"] is False and document["counts"] == clean.counts()


def test_quarantined_project_shows_nothing(world: World) -> None:
    quarantined = report(world, "quarantined-pkg", P)
    assert quarantined.quarantined and not quarantined.commitments and not quarantined.releases
    assert quarantined.usage is None and quarantined.declarations is None
    with pytest.raises(NotFound):
        report(world, "no-such-pkg", P)


def test_index_snapshot(world: World) -> None:
    with world.bastion.db.read() as session:
        snapshot = commitments.index_snapshot(session)
        assert commitments.index_snapshot(session) is snapshot  # cached until the index changes
    # Most severe first, then oldest: vuln-fresh (CRITICAL), vuln-old (MODERATE), only-pre.
    assert [(p.normalized_name, p.latest_version, p.advisories) for p in snapshot.vulnerable] == [
        ("vuln-fresh", "1.0", ["PYSEC-2026-2"]), ("vuln-old", "1.0", ["PYSEC-2026-1"]),
        ("only-pre", "1.0a1", ["PYSEC-2026-6"])]
    assert snapshot.projects == 13  # quarantined-pkg is not counted
    assert snapshot.advisories == 8 and snapshot.last_import is not None
    assert snapshot.fix_days == [10]
    assert snapshot.reverse_dependencies["fixed-pkg"] == ["app-pkg"]


def test_contact_validation_changes_nothing(world: World) -> None:
    before = world.state()
    for bad, needle in (("not an address", "spaces"), ("http://example.org/security", "not an https URL"),
                        ("javascript:alert(1)", "neither an email address nor an https URL"),
                        ("https://", "names no host"), ("x" * 600, "at most 500")):
        with pytest.raises(ServiceError) as raised, world.bastion.db.write() as session:
            commitments.declare(session, "clean-pkg", [Declaration("contact", bad)], principal=OPERATOR)
        assert needle in raised.value.message
    assert commitments.validate_contact(" mailto:sec@example.org ") == "sec@example.org"
    assert commitments.validate_contact("https://example.org/SECURITY.md") == "https://example.org/SECURITY.md"
    assert world.state() == before


def test_index_snapshot_recomputed_in_the_background_when_slow(world: World) -> None:
    """A snapshot that took long is served while its successor is computed in a thread."""
    import dataclasses
    import time

    with world.bastion.db.read() as session:
        fresh = commitments.index_snapshot(session)
        where = session.get_bind().engine.url.render_as_string(hide_password=True)
        stale = dataclasses.replace(fresh, key=("an older index",), seconds=commitments.SYNC_RECOMPUTE_SECONDS + 1,
                                    vulnerable=[])
        commitments._SNAPSHOTS[where] = stale
        assert commitments.index_snapshot(session) is stale  # served at once, dated by its ``computed``
        deadline = time.monotonic() + 30
        while commitments._SNAPSHOTS[where] is stale:
            assert time.monotonic() < deadline, "the background recomputation did not finish"
            time.sleep(0.02)
        again = commitments.index_snapshot(session)
    assert again.key == fresh.key and [p.normalized_name for p in again.vulnerable] == [
        p.normalized_name for p in fresh.vulnerable]


def test_a_record_without_a_summary_is_summarized_by_its_first_sentence() -> None:
    from bastion.insights.commitments import _first_words

    assert _first_words("Jinja2 before 2.10.1 has a sandbox escape. Details follow.") == \
        "Jinja2 before 2.10.1 has a sandbox escape."
    long = "word " * 100
    cut = _first_words(long)
    assert cut is not None and cut.endswith("…") and len(cut) <= 201
    assert _first_words("   ") is None
