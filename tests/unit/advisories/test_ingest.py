"""Importing advisories, on SQLite and PostgreSQL: every source layout, incremental re-import,
withdrawn records, malformed records, alias merging and PEP 503 names in the JSON API, matches
stored on import and on upload, and an import killed half-way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bastion.advisories.ingest import ImportError_, import_path
from bastion.advisories.models import Advisory, AdvisoryImport, AdvisoryPackage, VulnerabilityMatch
from bastion.advisories.query import advisories_affecting
from bastion.events import Event
from bastion.packaging.models import JournalEntry, Release
from bastion.services import Bastion
from tests.unit.advisories.records import write_pysec
from tests.conftest import make_user, post_upload
from tests.distbuilder import make_wheel, upload_form

# The shared snapshot lives beside the project on this machine (and in CI, which runs here), not in the repository.
SNAPSHOT = Path(os.environ.get("BASTION_ADVISORY_DB", "/work/shared/data/advisory-database"))
BASTION = str(Path(sys.executable).with_name("bastion"))
PYPI_KEYS = {"id", "source", "link", "aliases", "details", "summary", "fixed_in", "withdrawn"}

GHSA = {
    "id": "GHSA-zorb-0001-abcd",
    "modified": "2024-03-01T00:00:00Z",
    "published": "2024-01-02T00:00:00Z",
    "aliases": ["CVE-2099-1"],
    "summary": "Zorblax executes what it reads",
    "details": "The same flaw as PYSEC-2099-1, seen by GitHub.",
    "affected": [{"package": {"ecosystem": "PyPI", "name": "ZORBLAX_core"},
                  "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.1"}]}]}],
}


def _pysec(tree: Path, n: int, *, name: str = "Zorblax.Core", fixed: str = "1.1",
           modified: str = "2024-02-01T00:00:00Z", extra: str = "") -> Path:
    """The advisories name the project as "Zorblax.Core": matched to zorblax-core by PEP 503."""
    return write_pysec(tree, n, name=name, fixed=fixed, modified=modified, extra=extra, folder=name.lower())


def _upload(bastion: Bastion, client, token: str, tmp_path: Path, version: str,  # type: ignore[no-untyped-def]
            name: str = "zorblax-core") -> None:
    folder = tmp_path / f"dist-{name}-{version}"
    folder.mkdir()
    wheel = make_wheel(folder, name, version)
    response = post_upload(client, token, wheel, upload_form(wheel, name, version))
    assert response.status_code == 200, response.text


def _vulns(client, version: str | None = None) -> list[dict]:  # type: ignore[no-untyped-def]
    url = "/pypi/zorblax-core/json" if version is None else f"/pypi/zorblax-core/{version}/json"
    response = client.get(url)
    assert response.status_code == 200, response.text
    return response.json()["vulnerabilities"]


def _matches(bastion: Bastion) -> set[tuple[str, str]]:
    with bastion.db.read() as session:
        return set(session.execute(
            select(Release.version, VulnerabilityMatch.advisory_id)
            .join(Release, Release.id == VulnerabilityMatch.release_id)
        ).all())


@pytest.fixture
def released(bastion: Bastion, client, tmp_path: Path):  # type: ignore[no-untyped-def]
    """zorblax-core 1.0, 1.1 and 2.0 uploaded (with its display name spelt differently from the advisories)."""
    token = make_user(bastion, "alice")
    for version in ("1.0", "1.1", "2.0"):
        _upload(bastion, client, token, tmp_path, version)
    return token


def test_import_matches_merges_aliases_and_serves_pypis_eight_keys(bastion: Bastion, client, released,  # type: ignore[no-untyped-def]
                                                                   tmp_path: Path) -> None:
    tree = tmp_path / "advisory-database"
    _pysec(tree, 1)
    (tree / "vulns" / "zorblax.core" / "GHSA-zorb-0001-abcd.json").write_text(json.dumps(GHSA))
    summary = import_path(bastion, tree)
    assert (summary.added, summary.updated, summary.skipped, summary.matches_added) == (2, 0, 0, 2)
    assert summary.projects == {"zorblax-core"}
    assert _matches(bastion) == {("1.0", "PYSEC-2099-1"), ("1.0", "GHSA-zorb-0001-abcd")}

    (entry,) = _vulns(client, "1.0")  # the PYSEC and the GHSA of one CVE show once
    assert set(entry) == PYPI_KEYS
    assert entry["id"] == "PYSEC-2099-1"
    assert entry["aliases"] == ["GHSA-zorb-0001-abcd", "CVE-2099-1"]
    assert entry["fixed_in"] == ["1.1"]
    assert entry["source"] == "osv"
    assert entry["link"] == "https://osv.dev/vulnerability/PYSEC-2099-1"
    assert entry["summary"] == "Zorblax executes what it reads"
    assert entry["withdrawn"] is None
    assert _vulns(client, "1.1") == [] and _vulns(client, "2.0") == []
    assert _vulns(client) == []  # the project page shows its latest release's
    with bastion.db.read() as session:
        run = session.execute(select(AdvisoryImport)).scalar_one()
        assert run.finished is not None and run.summary["added"] == 2
        event = session.execute(select(Event).where(Event.action == "advisories.imported")).scalar_one()
        assert event.details["added"] == 2 and event.details["matches_added"] == 2


def test_reimport_is_incremental_by_id_and_modified(bastion: Bastion, client, released,  # type: ignore[no-untyped-def]
                                                     tmp_path: Path) -> None:
    tree = tmp_path / "db"
    _pysec(tree, 1)
    import_path(bastion, tree)
    with bastion.db.read() as session:
        serial = session.execute(select(func.max(JournalEntry.id))).scalar_one()
        imported = session.get(Advisory, "PYSEC-2099-1").imported

    again = import_path(bastion, tree)
    assert (again.added, again.updated, again.unchanged, again.matches_added, again.matches_removed) == (0, 0, 1, 0, 0)
    with bastion.db.read() as session:
        assert session.execute(select(func.max(JournalEntry.id))).scalar_one() == serial  # no page re-rendered
        assert session.get(Advisory, "PYSEC-2099-1").imported == imported

    # An older copy of the record changes nothing either.
    _pysec(tree, 1, fixed="3.0", modified="2023-01-01T00:00:00Z")
    assert import_path(bastion, tree).unchanged == 1
    assert _matches(bastion) == {("1.0", "PYSEC-2099-1")}

    # A newer one replaces it: now 1.1 and 2.0 are affected too, and their JSON pages say so.
    _pysec(tree, 1, fixed="3.0", modified="2024-06-01T00:00:00Z")
    newer = import_path(bastion, tree)
    assert (newer.updated, newer.matches_added) == (1, 2)
    assert _matches(bastion) == {("1.0", "PYSEC-2099-1"), ("1.1", "PYSEC-2099-1"), ("2.0", "PYSEC-2099-1")}
    assert [v["id"] for v in _vulns(client)] == ["PYSEC-2099-1"]
    assert _vulns(client, "2.0")[0]["fixed_in"] == ["3.0"]

    # And narrowing it removes matches.
    _pysec(tree, 1, fixed="1.0.1", modified="2024-07-01T00:00:00Z")
    narrower = import_path(bastion, tree)
    assert (narrower.updated, narrower.matches_removed) == (1, 2)
    assert _vulns(client) == []


def test_withdrawn_records_are_marked_and_no_longer_count(bastion: Bastion, client, released,  # type: ignore[no-untyped-def]
                                                          tmp_path: Path) -> None:
    tree = tmp_path / "db"
    _pysec(tree, 1)
    import_path(bastion, tree)
    with bastion.db.read() as session:
        assert [a.id for a in advisories_affecting(session, "zorblax-core", "1.0")] == ["PYSEC-2099-1"]
    _pysec(tree, 1, modified="2024-05-01T00:00:00Z", extra="withdrawn: 2024-05-01T00:00:00Z\n")
    summary = import_path(bastion, tree)
    assert (summary.updated, summary.withdrawn) == (1, 1)
    (entry,) = _vulns(client, "1.0")  # listed as PyPI lists withdrawn ones...
    assert entry["withdrawn"] == "2024-05-01T00:00:00Z"
    with bastion.db.read() as session:  # ...but nothing treats them as a vulnerability
        assert advisories_affecting(session, "zorblax-core", "1.0") == []


def test_a_malformed_record_is_reported_and_skipped_and_the_rest_imported(bastion: Bastion, released,  # type: ignore[no-untyped-def]
                                                                          tmp_path: Path) -> None:
    tree = tmp_path / "db"
    _pysec(tree, 1)
    _pysec(tree, 2, fixed="2.1")
    bad_yaml = tree / "vulns" / "zorblax.core" / "PYSEC-2099-3.yaml"
    bad_yaml.write_text("id: PYSEC-2099-3\nmodified: [oops\n")
    bad_range = write_pysec(tree, 4, fixed="2", folder="zorblax.core")
    bad_range.write_text(bad_range.read_text().replace("type: ECOSYSTEM", "type: CALVER"))
    bad_json = tree / "vulns" / "zorblax.core" / "GHSA-bad.json"
    bad_json.write_text('{"id": "GHSA-bad", "modified": ')
    summary = import_path(bastion, tree)
    assert (summary.added, summary.skipped) == (2, 3)
    reasons = {p.path: p.reason for p in summary.problems}
    assert "not valid YAML" in reasons[str(bad_yaml.relative_to(tree))]
    assert "unknown range type 'CALVER'" in reasons[str(bad_range.relative_to(tree))]
    assert "not valid JSON" in reasons[str(bad_json.relative_to(tree))]
    assert _matches(bastion) == {("1.0", "PYSEC-2099-1"), ("1.0", "PYSEC-2099-2"), ("1.1", "PYSEC-2099-2"),
                                 ("2.0", "PYSEC-2099-2")}
    with bastion.db.read() as session:
        run = session.execute(select(AdvisoryImport)).scalar_one()
        assert len(run.problems) == 3 and run.summary["skipped"] == 3


def test_json_directory_zip_single_file_and_git_checkout(bastion: Bastion, released, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    export = tmp_path / "export"
    export.mkdir()
    (export / "GHSA-zorb-0001-abcd.json").write_text(json.dumps(GHSA))
    assert import_path(bastion, export).added == 1

    second = dict(GHSA, id="GHSA-zorb-0002-abcd", aliases=["CVE-2099-2"])
    archive = tmp_path / "all.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("GHSA-zorb-0001-abcd.json", json.dumps(GHSA))
        z.writestr("GHSA-zorb-0002-abcd.json", json.dumps(second))
        z.writestr("README.txt", "not a record")
    zipped = import_path(bastion, archive)
    assert (zipped.added, zipped.unchanged, zipped.skipped) == (1, 1, 0)

    single = _pysec(tmp_path / "one", 7)
    assert import_path(bastion, single).added == 1

    checkout = tmp_path / "checkout"
    _pysec(checkout, 8)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "advisories"]):
        subprocess.run(["git", "-C", str(checkout), *args], check=True, env=env)
    commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    from_git = import_path(bastion, checkout)
    assert from_git.added == 1
    assert from_git.source.endswith(f"(git {commit[:12]})")
    assert {v for _, v in _matches(bastion)} == {"GHSA-zorb-0001-abcd", "GHSA-zorb-0002-abcd", "PYSEC-2099-7",
                                                  "PYSEC-2099-8"}


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "holds no .yaml, .yml or .json files"),
    (lambda p: (p / "notes.txt").write_text("x") and p / "notes.txt", "neither a zip nor"),
])
def test_an_unreadable_source_is_refused_and_nothing_is_recorded(bastion: Bastion, tmp_path: Path, make,  # type: ignore[no-untyped-def]
                                                                 message: str) -> None:
    with pytest.raises(ImportError_, match=message):
        import_path(bastion, make(tmp_path))
    with bastion.db.read() as session:
        assert session.execute(select(func.count()).select_from(AdvisoryImport)).scalar_one() == 0


def test_a_new_upload_is_matched_and_its_json_lists_the_advisory(bastion: Bastion, client, released,  # type: ignore[no-untyped-def]
                                                                tmp_path: Path) -> None:
    tree = tmp_path / "db"
    _pysec(tree, 1, fixed="2.5")
    import_path(bastion, tree)
    _upload(bastion, client, released, tmp_path, "2.4")
    _upload(bastion, client, released, tmp_path, "2.5")
    assert ("2.4", "PYSEC-2099-1") in _matches(bastion)
    assert ("2.5", "PYSEC-2099-1") not in _matches(bastion)
    assert [v["id"] for v in _vulns(client, "2.4")] == ["PYSEC-2099-1"]
    assert _vulns(client) == []  # 2.5 is the latest and is fixed


def test_the_cli_prints_the_summary_and_fails_on_skipped_records(bastion: Bastion, released,  # type: ignore[no-untyped-def]
                                                                 tmp_path: Path) -> None:
    tree = tmp_path / "db"
    _pysec(tree, 1)
    (tree / "vulns" / "zorblax.core" / "PYSEC-2099-9.yaml").write_text("id: PYSEC-2099-9\n")
    env = {**os.environ, "BASTION_DATABASE_URL": bastion.settings.effective_database_url}
    done = subprocess.run([BASTION, "advisories", "import", str(tree), "--data-dir", str(bastion.settings.data_dir)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "1 added, 0 updated, 0 withdrawn, 0 unchanged, 1 skipped" in done.stdout
    assert "PYSEC-2099-9.yaml: 'modified' is missing" in done.stderr
    shown = subprocess.run([BASTION, "advisories", "show", "pysec-2099-1", "--data-dir",
                            str(bastion.settings.data_dir)], capture_output=True, text=True, env=env, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "matches here: zorblax-core 1.0" in shown.stdout
    rematched = subprocess.run([BASTION, "advisories", "rematch", "--data-dir", str(bastion.settings.data_dir)],
                               capture_output=True, text=True, env=env, timeout=60)
    assert rematched.returncode == 0, rematched.stderr
    assert rematched.stdout.strip() == "matches: +0 -0 across 1 project(s)"  # the stored matches were right
    missing = subprocess.run([BASTION, "advisories", "import", str(tmp_path / "nope"), "--data-dir",
                              str(bastion.settings.data_dir)], capture_output=True, text=True, env=env, timeout=60)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_an_import_killed_half_way_leaves_whole_records_and_can_be_run_again(bastion: Bastion, tmp_path: Path) -> None:
    """SIGKILL the CLI importing the real snapshot; every stored advisory is whole (its affected
    rows all there) and a second run completes the set."""
    env = {**os.environ, "BASTION_DATABASE_URL": bastion.settings.effective_database_url}
    args = [BASTION, "advisories", "import", str(SNAPSHOT), "--data-dir", str(bastion.settings.data_dir)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    stored = 0
    while time.monotonic() < deadline and stored < 300:  # at least one batch committed
        time.sleep(0.05)
        with bastion.db.read() as session:
            stored = session.execute(select(func.count()).select_from(Advisory)).scalar_one()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    with bastion.db.read() as session:
        stored = session.execute(select(func.count()).select_from(Advisory)).scalar_one()
        without_rows = session.execute(
            select(func.count()).select_from(Advisory)
            .where(~Advisory.id.in_(select(AdvisoryPackage.advisory_id)))
        ).scalar_one()
    assert 0 < stored < 2661, "the kill came too late to test anything; the machine is very fast or slow"
    assert without_rows == 0
    summary = import_path(bastion, SNAPSHOT)
    assert summary.unchanged == stored and summary.added == 2661 - stored and summary.skipped == 0


def test_the_scheduled_task_reimports_the_configured_source(bastion_with, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tree = tmp_path / "db"
    _pysec(tree, 1)
    instance, _client = bastion_with(advisories_source=str(tree), advisories_interval="1h")
    tasks = {task.name: task.interval.total_seconds() for task in instance.tasks.periodic_tasks()}
    assert tasks["advisories_import"] == 3600
    instance.tasks.run_now("advisories_import")
    _pysec(tree, 2)
    instance.tasks.run_now("advisories_import")
    with instance.db.read() as session:
        runs = session.execute(select(AdvisoryImport).order_by(AdvisoryImport.id)).scalars().all()
        assert [(r.summary["added"], r.summary["unchanged"]) for r in runs] == [(1, 0), (1, 1)]
        events = session.execute(select(Event).where(Event.action == "advisories.imported")).scalars().all()
        assert {e.actor for e in events} == {"bastion (scheduled)"}
