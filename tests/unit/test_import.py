"""``bastion import``: a tree of distributions, a devpi export, refusals, review, idempotency, a
killed import re-run, the CLI's report and exit codes (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from bastion.accounts.models import User
from bastion.cli import main
from bastion.events import Event, verify_chain
from bastion.packaging.importer import ImportUsageError, import_paths
from bastion.packaging.models import File, Project, Release, Role
from bastion.scanning.models import ReviewCase, ScanRecord
from bastion.services import Bastion
from bastion.settings import load_settings
from bastion.simple.models import RenderedPage
from tests.conftest import make_user, snapshot_state
from tests.distbuilder import make_sdist, make_wheel, make_zip_sdist

BASTION = str(Path(sys.executable).parent / "bastion")
INSTALL_HOOK = b"import os\nfrom setuptools import setup\nos.system('id')\nsetup(name='x')\n"


def build_tree(root: Path) -> dict[str, Path]:
    """Wheels, sdists (PEP 625 tar.gz, a pre-PEP 625 name, a zip), junk and two broken files, nested."""
    (root / "a").mkdir(parents=True)
    (root / "b" / "c").mkdir(parents=True)
    files = {
        "wheel": make_wheel(root / "a", "bastion-imp-alpha", "1.0"),
        "sdist": make_sdist(root / "a", "bastion-imp-alpha", "1.0"),
        "legacy": make_sdist(root / "b", "Bastion-Imp-Beta", "0.9", filename="Bastion-Imp-Beta-0.9.tar.gz",
                             top="Bastion-Imp-Beta-0.9"),
        "zip": make_zip_sdist(root / "b" / "c", "bastion-imp-gamma", "2.0"),
        "nover": make_wheel(root / "a", "bastion-imp-nover", "1.0",
                            metadata="Metadata-Version: 2.1\nName: bastion-imp-nover\nSummary: no version\n"),
    }
    files["corrupt"] = root / "b" / "bastion_imp_broken-1.0.tar.gz"
    files["corrupt"].write_bytes(b"this is not an archive at all")
    for junk in ("a/bastion_imp_alpha-1.0.tar.gz.asc", "b/bastion_imp_alpha-0.1-py2.7.egg", "b/c/README.md",
                 "b/bastion_imp_alpha-1.0.tar.gz.md5"):
        (root / junk).write_bytes(b"junk\n")
    return files


@pytest.fixture
def owner(bastion: Bastion) -> str:
    make_user(bastion, "alice")
    return "alice"


def _events(bastion: Bastion, action: str) -> list[Event]:
    with bastion.db.read() as session:
        return list(session.execute(select(Event).where(Event.action == action).order_by(Event.id)).scalars())


def _files(bastion: Bastion) -> dict[str, tuple]:
    with bastion.db.read() as session:
        return {row.filename: tuple(row) for row in session.execute(
            select(File.filename, File.sha256_digest, File.upload_time, File.quarantined, Project.normalized_name,
                   Release.version, Release.yanked)
            .join(Project, Project.id == File.project_id).join(Release, Release.id == File.release_id))}


def test_a_tree_is_imported_with_every_check_and_counted(bastion: Bastion, owner: str, tmp_path: Path) -> None:
    files = build_tree(tmp_path / "tree")
    report = import_paths(bastion, [tmp_path / "tree"], owner, workers=1)
    assert report.counts() == {"accepted": 4, "held_for_review": 0, "refused": 2, "skipped_already_present": 0,
                               "skipped_not_a_distribution": 4}
    assert report.kinds == ["directory"]
    refused = {f.filename: f.reason for f in report.files if f.outcome == "refused"}
    assert "'version' is a required field" in refused[files["nover"].name]
    assert "Invalid distribution file" in refused[files["corrupt"].name]
    assert set(report.refusals_by_reason()) == {"Invalid metadata in", "Invalid distribution file"}, \
        report.refusals_by_reason()
    skipped = {f.path for f in report.files if f.outcome == "skipped"}
    assert skipped == {"a/bastion_imp_alpha-1.0.tar.gz.asc", "b/bastion_imp_alpha-0.1-py2.7.egg", "b/c/README.md",
                       "b/bastion_imp_alpha-1.0.tar.gz.md5"}
    stored = _files(bastion)
    assert set(stored) == {files[k].name for k in ("wheel", "sdist", "legacy", "zip")}
    assert {v[4] for v in stored.values()} == {"bastion-imp-alpha", "bastion-imp-beta", "bastion-imp-gamma"}
    # Upload times are the files' modification times (what a pypiserver directory has).
    assert stored[files["wheel"].name][2].timestamp() == pytest.approx(files["wheel"].stat().st_mtime, abs=1)
    blobs = {p.name for p in bastion.settings.effective_blob_dir.rglob("*") if p.is_file()}
    assert files["nover"].name not in blobs and files["corrupt"].name not in blobs  # nothing of a refused file
    with bastion.db.read() as session:
        roles = set(session.execute(select(Project.normalized_name, User.username, Role.role)
                                    .join(Role, Role.project_id == Project.id).join(User, User.id == Role.user_id)))
        pages = set(session.execute(select(RenderedPage.key)).scalars())
        assert verify_chain(session).ok
    assert roles == {(n, "alice", "owner") for n in ("bastion-imp-alpha", "bastion-imp-beta", "bastion-imp-gamma")}
    assert {"simple/index.html", "simple/bastion-imp-beta/index.html", "pypi/bastion-imp-gamma/json",
            "pypi/bastion-imp-alpha/1.0/json"} <= pages
    uploaded = _events(bastion, "file.uploaded")
    assert sorted(e.details["filename"] for e in uploaded) == sorted(stored)
    assert {e.actor for e in uploaded} == {"alice"}
    [started] = _events(bastion, "import.started")
    [finished] = _events(bastion, "import.finished")
    assert started.subject == finished.subject and started.details["files"] == 6
    assert finished.details["accepted"] == 4 and finished.details["refused"] == 2
    assert finished.details["skipped_not_a_distribution"] == 4


def test_a_second_run_adds_nothing_and_a_changed_file_is_refused(bastion: Bastion, owner: str,
                                                                 tmp_path: Path) -> None:
    files = build_tree(tmp_path / "tree")
    import_paths(bastion, [tmp_path / "tree"], owner, workers=1)
    before = snapshot_state(bastion)
    again = import_paths(bastion, [tmp_path / "tree"], owner, workers=2)
    assert again.counts() == {"accepted": 0, "held_for_review": 0, "refused": 2, "skipped_already_present": 4,
                              "skipped_not_a_distribution": 4}
    after = snapshot_state(bastion)
    assert after["counts"]["events"] == before["counts"]["events"] + 2  # import.started and import.finished
    after["counts"]["events"] = before["counts"]["events"]
    assert after == before
    # Another file under a stored filename: refused as an upload is (twine --skip-existing's words).
    (tmp_path / "other").mkdir()
    make_wheel(tmp_path / "other", "bastion-imp-alpha", "1.0", files={"bastion_imp_alpha/extra.py": b"X = 2\n"})
    changed = import_paths(bastion, [tmp_path / "other"], owner, workers=1)
    [result] = changed.files
    assert result.outcome == "refused" and result.reason.startswith("File already exists ('")
    assert files["wheel"].name in result.reason
    assert snapshot_state(bastion)["blobs"] == before["blobs"]


def test_a_file_refused_when_stored_leaves_no_blob(bastion: Bastion, owner: str, tmp_path: Path) -> None:
    """Worker processes write each checked file's blobs before the storing thread stores its rows:
    a file refused at that point (here: a second, different file under the same name in one
    import) has them removed."""
    for folder, extra in (("one", {}), ("two", {"bastion_imp_twin/extra.py": b"X = 2\n"})):
        (tmp_path / "tree" / folder).mkdir(parents=True)
        make_wheel(tmp_path / "tree" / folder, "bastion-imp-twin", "1.0", files=extra)
    report = import_paths(bastion, [tmp_path / "tree"], owner, workers=2)
    assert report.counts()["accepted"] == 1 and report.counts()["refused"] == 1, report.files
    [refused] = [f for f in report.files if f.outcome == "refused"]
    assert refused.path == "two/bastion_imp_twin-1.0-py3-none-any.whl" and "File already exists" in refused.reason
    with bastion.db.read() as session:
        [path] = session.execute(select(File.path)).scalars().all()
    on_disk = {str(p.relative_to(bastion.settings.effective_blob_dir))
               for p in bastion.settings.effective_blob_dir.rglob("*") if p.is_file()}
    assert on_disk == {path, path + ".metadata"}


def test_a_file_the_scanner_holds_goes_to_review(data_dir: Path, database_url: str, tmp_path: Path) -> None:
    bastion = Bastion(load_settings(data_dir, database_url=database_url, scan_quarantine_score=1.0),
                      run_migrations=False)
    try:
        make_user(bastion, "alice")
        (tmp_path / "tree").mkdir()
        held = make_sdist(tmp_path / "tree", "bastion-imp-hook", "1.0", files={"setup.py": INSTALL_HOOK})
        clean = make_wheel(tmp_path / "tree", "bastion-imp-hook", "1.0")
        report = import_paths(bastion, [tmp_path / "tree"], "alice", workers=1)
        assert report.counts()["held_for_review"] == 1 and report.counts()["accepted"] == 1
        [result] = [f for f in report.files if f.outcome == "held"]
        assert result.filename == held.name and "install.process" in result.reason
        with bastion.db.read() as session:
            [case] = session.execute(select(ReviewCase)).scalars().all()
            page = session.get(RenderedPage, "simple/bastion-imp-hook/index.html")
            assert page is not None
        assert (case.kind, case.source, case.filename, case.hidden) == ("file", "scan", held.name, True)
        assert clean.name.encode() in page.body and held.name.encode() not in page.body
        assert _files(bastion)[held.name][3] is True
        assert [e.details["filename"] for e in _events(bastion, "file.quarantined")] == [held.name]
    finally:
        bastion.close()


def test_a_file_the_scanner_would_refuse_is_held_not_lost(data_dir: Path, database_url: str,
                                                          tmp_path: Path) -> None:
    """On upload a reject verdict refuses the file; an import holds it for review (hidden, the
    case open), since the source index served it and a false positive must not lose it."""
    bastion = Bastion(load_settings(data_dir, database_url=database_url, scan_quarantine_score=1.0,
                                    scan_reject_score=1.0), run_migrations=False)
    try:
        make_user(bastion, "alice")
        (tmp_path / "tree").mkdir()
        rejected = make_sdist(tmp_path / "tree", "bastion-imp-reject", "1.0", files={"setup.py": INSTALL_HOOK})
        report = import_paths(bastion, [tmp_path / "tree"], "alice", workers=1)
        assert report.counts()["held_for_review"] == 1, report.files
        with bastion.db.read() as session:
            [case] = session.execute(select(ReviewCase)).scalars().all()
            verdicts = [r.verdict for r in session.execute(select(ScanRecord)).scalars()]
        assert (case.kind, case.source, case.filename, case.hidden) == ("file", "scan", rejected.name, True)
        assert verdicts == ["reject"]  # the scanner's own word is on record
        assert _files(bastion)[rejected.name][3] is True
        assert _events(bastion, "upload.refused-by-scanner") == []
    finally:
        bastion.close()


def test_project_from_filename_names_a_file_whose_metadata_has_none(bastion: Bastion, owner: str,
                                                                    tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    unknown = make_sdist(tmp_path / "tree", "bastion-imp-old", "0.3",
                         metadata="Metadata-Version: 1.0\nName: UNKNOWN\nVersion: 0.3\nSummary: old\n")
    plain = import_paths(bastion, [tmp_path / "tree"], owner, workers=1)
    assert plain.counts()["refused"] == 1, plain.files
    assert _files(bastion) == {}
    named = import_paths(bastion, [tmp_path / "tree"], owner, workers=1, project_from_filename=True)
    assert named.counts()["accepted"] == 1, named.files
    assert _files(bastion)[unknown.name][4:6] == ("bastion-imp-old", "0.3")


def test_a_stdlib_name_is_imported_and_flagged_while_uploads_still_refuse_it(
        bastion: Bastion, owner: str, tmp_path: Path) -> None:
    """PyPI still serves projects named after stdlib modules (readline, argparse, asyncio), kept
    from before its rule: an import takes them, flagged for an admin; a new upload is refused."""
    from tests.conftest import post_upload
    from tests.distbuilder import upload_form

    (tmp_path / "tree").mkdir()
    taken = make_sdist(tmp_path / "tree", "readline", "6.2.4.1")
    report = import_paths(bastion, [tmp_path / "tree"], owner, workers=1)
    assert report.counts()["accepted"] == 1, report.files
    assert _files(bastion)[taken.name][4] == "readline"
    with bastion.db.read() as session:
        [case] = session.execute(select(ReviewCase)).scalars().all()
    assert (case.kind, case.source, case.project_name, case.hidden) == ("project", "name", "readline", False)
    assert "standard library" in case.summary
    from fastapi.testclient import TestClient

    from bastion.app import create_app

    token = make_user(bastion, "bob")
    other = make_sdist(tmp_path, "asyncio", "3.4.3")
    with TestClient(create_app(bastion=bastion)) as client:  # its start signs the TUF repository
        before = snapshot_state(bastion)
        response = post_upload(client, token, other, upload_form(other, "asyncio", "3.4.3"))
        assert response.status_code == 400 and "standard library" in response.text, response.text
        assert snapshot_state(bastion) == before


def test_an_old_zip_sdist_with_pkg_info_beside_its_directory_is_imported(bastion: Bastion, owner: str,
                                                                         tmp_path: Path) -> None:
    """Hand-made zips of 2008-2010 (reportLab-2.3.zip) carry PKG-INFO at the root beside their one
    directory: lenient (imports) reads it; anything else at the root is still refused."""
    from tests.distbuilder import metadata_text, zip_bytes

    (tmp_path / "tree").mkdir()
    old = tmp_path / "tree" / "bastion-imp-old-zip-2.3.zip"
    old.write_bytes(zip_bytes({"PKG-INFO": metadata_text("bastion-imp-old-zip", "2.3").encode(),
                               "Old_Zip_2_3/setup.py": b"from distutils.core import setup\n"}))
    stray = tmp_path / "tree" / "bastion-imp-stray-1.0.zip"
    stray.write_bytes(zip_bytes({"PKG-INFO": metadata_text("bastion-imp-stray", "1.0").encode(),
                                 "notes.txt": b"at the root\n", "stray-1.0/setup.py": b"\n"}))
    report = import_paths(bastion, [tmp_path / "tree"], owner, workers=1)
    outcomes = {f.filename: (f.outcome, f.reason) for f in report.files}
    assert outcomes[old.name][0] == "accepted", outcomes
    assert outcomes[stray.name] == ("refused", f"Invalid sdist '{stray.name}': all members must be inside one "
                                               "top-level directory."), outcomes
    assert _files(bastion)[old.name][4:6] == ("bastion-imp-old-zip", "2.3")


def test_an_sdist_without_pkg_info_is_refused_with_the_way_in(bastion: Bastion, owner: str, tmp_path: Path) -> None:
    import io
    import tarfile

    (tmp_path / "tree").mkdir()
    bare = tmp_path / "tree" / "bastion-imp-bare-1.26.0.tar.gz"
    with tarfile.open(bare, "w:gz") as archive:
        data = b"from setuptools import setup\nsetup()\n"
        info = tarfile.TarInfo("bastion-imp-bare-1.26.0/setup.py")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    report = import_paths(bastion, [tmp_path / "tree"], owner, workers=1)
    [result] = report.files
    assert result.outcome == "refused" and "PKG-INFO is missing" in result.reason
    assert "--project-from-filename" in result.reason
    named = import_paths(bastion, [tmp_path / "tree"], owner, workers=1, project_from_filename=True)
    assert named.counts()["accepted"] == 1, named.files
    assert _files(bastion)[bare.name][4:6] == ("bastion-imp-bare", "1.26.0")


def _devpi_export(root: Path, tmp_path: Path) -> dict[str, Path]:
    """The layout devpi-export 6.x writes (dataindex.json, <user>/<index>/<project>/<version>/<file>),
    with a yanked version as devpi's version data would carry it."""
    (tmp_path / "build").mkdir()
    wheel = make_wheel(tmp_path / "build", "bastion-imp-devpi", "1.0")
    wheel2 = make_wheel(tmp_path / "build", "bastion-imp-devpi", "2.0")
    entries, placed = [], {}
    for path, version, when in ((wheel, "1.0", [2019, 5, 4, 3, 2, 1]), (wheel2, "2.0", [2021, 1, 2, 3, 4, 5])):
        relpath = f"team/prod/bastion-imp-devpi/{version}/{path.name}"
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_bytes(path.read_bytes())
        placed[version] = root / relpath
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        entries.append({"version": version, "type": "releasefile", "projectname": "bastion-imp-devpi",
                        "relpath": relpath, "log": [{"what": "upload", "who": "team", "when": when, "dst": "team/prod"}],
                        "entrymapping": {"last_modified": "Sat, 04 May 2019 03:02:01 GMT", "hash_spec": f"sha256={sha}",
                                         "hashes": {"sha256": sha}, "project": "bastion-imp-devpi", "version": version}})
    (root / "team/prod/bastion-imp-devpi/1.0/bastion-imp-devpi-1.0.doc.zip").write_bytes(b"PK docs")
    entries.append({"version": "1.0", "type": "doczip", "projectname": "bastion-imp-devpi",
                    "relpath": "team/prod/bastion-imp-devpi/1.0/bastion-imp-devpi-1.0.doc.zip"})
    index = {"users": {"team": {"username": "team"}}, "dumpversion": "2", "devpi_server": "6.20.3",
             "indexes": {"team/prod": {"indexconfig": {"type": "stage", "bases": []},
                                       "projects": {"bastion-imp-devpi": {
                                           "1.0": {"name": "bastion-imp-devpi", "version": "1.0",
                                                   "yanked": "broken on Windows"},
                                           "2.0": {"name": "bastion-imp-devpi", "version": "2.0"}}},
                                       "files": entries}}}
    (root / "dataindex.json").write_text(json.dumps(index))
    return placed


def test_a_devpi_export_keeps_upload_times_and_yanks(bastion: Bastion, owner: str, tmp_path: Path) -> None:
    from bastion.tuf.models import TufTarget
    from bastion.tuf.service import prepare

    prepare(bastion, announce=False)  # a TUF repository, as `bastion serve` makes on first start
    placed = _devpi_export(tmp_path / "export", tmp_path)
    report = import_paths(bastion, [tmp_path / "export"], owner, workers=2)
    assert report.kinds == ["devpi-export"]
    assert report.counts()["accepted"] == 2 and report.counts()["skipped_not_a_distribution"] == 1
    assert report.yanked == ["bastion-imp-devpi 1.0"] and report.tuf.startswith("signed")
    stored = _files(bastion)
    one, two = stored[placed["1.0"].name], stored[placed["2.0"].name]
    assert one[2].isoformat().startswith("2019-05-04T03:02:01") and two[2].isoformat().startswith("2021-01-02T03:04:05")
    assert (one[6], two[6]) == (True, False)
    with bastion.db.read() as session:
        targets = set(session.execute(select(TufTarget.path)).scalars())
        page = session.get(RenderedPage, "simple/bastion-imp-devpi/index.html")
        assert page is not None and b'data-yanked="broken on Windows"' in page.body
    assert {p for p in targets if p.startswith("packages/")} == _blob_paths(bastion)  # the files are TUF targets
    assert "simple/bastion-imp-devpi/index.html" in targets
    assert len(_events(bastion, "release.yanked")) == 1
    # Re-run: nothing added, the yank not repeated.
    again = import_paths(bastion, [tmp_path / "export"], owner, workers=1)
    assert again.counts()["skipped_already_present"] == 2 and again.yanked == []
    # A file that no longer matches the export's sha256 is refused before anything else.
    placed["2.0"].write_bytes(placed["2.0"].read_bytes() + b"\0")
    damaged = import_paths(bastion, [tmp_path / "export"], owner, workers=1)
    assert any("does not match the sha256" in f.reason for f in damaged.files if f.outcome == "refused"), damaged.files


def _blob_paths(bastion: Bastion) -> set[str]:
    with bastion.db.read() as session:
        return set(session.execute(select(File.path)).scalars())


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------

def _env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env.update(BASTION_DATABASE_URL=database_url, COLUMNS="200", NO_COLOR="1")
    return env


def _cli(data_dir: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BASTION, "import", *args, "--data-dir", str(data_dir)], env=_env(database_url),
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def test_usage_errors_exit_2_with_a_message(bastion: Bastion, owner: str, data_dir: Path, database_url: str,
                                            tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"BASTION_DATABASE_URL": database_url}
    cases = {
        ("import", str(tmp_path)): "--owner USER is required",
        ("import", str(tmp_path / "missing"), "--owner", "alice"): "path not found",
        ("import", "--owner", "alice"): "give at least one PATH",
        ("import", str(tmp_path), "--owner", "nobody"): "no user named 'nobody'",
    }
    for args, needle in cases.items():
        result = runner.invoke(main, [*args, "--data-dir", str(data_dir)], env=env)
        assert result.exit_code == 2, (args, result.output)
        assert needle in " ".join(result.output.split()), (args, result.output)
    help_text = " ".join(runner.invoke(main, ["import", "--help"]).output.split())
    assert "0 when no file was refused, 1 when some were" in help_text and "2 on a usage error" in help_text
    with pytest.raises(ImportUsageError, match="no user named"):
        import_paths(bastion, [tmp_path], "nobody")


def test_the_command_reports_a_table_and_json_and_exits_1_on_refusals(bastion: Bastion, owner: str,
                                                                      data_dir: Path, database_url: str,
                                                                      tmp_path: Path) -> None:
    build_tree(tmp_path / "tree")
    report_file = tmp_path / "report.json"
    result = _cli(data_dir, database_url, str(tmp_path / "tree"), "--owner", "alice", "--json", str(report_file))
    assert result.returncode == 1, result.stderr
    text = " ".join(result.stdout.split())
    for needle in ("accepted │ 4", "refused │ 2", "Invalid metadata in │ 1", "skipped: already present │ 0",
                   "skipped: not a distribution pip installs │ 4", "3 projects (3 created)"):
        assert needle in text, result.stdout
    assert "refused b/bastion_imp_broken-1.0.tar.gz" in " ".join(result.stderr.split())
    data = json.loads(report_file.read_text())
    assert (data["accepted"], data["refused"], data["skipped_not_a_distribution"]) == (4, 2, 4)
    assert data["refused_by_reason"] == {"Invalid metadata in": 1, "Invalid distribution file": 1}
    assert len(data["files"]) == 10
    # Only what imports cleanly: exit 0; --json - prints the report alone on stdout.
    (tmp_path / "good").mkdir()
    make_wheel(tmp_path / "good", "bastion-imp-alpha", "1.1")
    good = _cli(data_dir, database_url, str(tmp_path / "good"), "--owner", "alice", "--json", "-")
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["accepted"] == 1


def _database_state(bastion: Bastion) -> dict[str, object]:
    """What an import leaves, without ids and serials (a killed run consumes sequence values)."""
    with bastion.db.read() as session:
        pages = {row.key: row.body for row in session.execute(select(RenderedPage)).scalars()
                 if row.key.endswith("index.html")}
        counts = {model.__tablename__: session.execute(select(func.count()).select_from(model)).scalar()
                  for model in (Project, Release, File, Role)}
        uploaded = session.execute(select(func.count()).select_from(Event).where(Event.action == "file.uploaded")).scalar()
    # A kill during a blob's atomic write leaves its ".tmp-" file (never served, no row names it).
    blobs = sorted(str(p.relative_to(bastion.settings.effective_blob_dir))
                   for p in bastion.settings.effective_blob_dir.rglob("*") if p.is_file() and not p.name.startswith(".tmp-"))
    return {"files": _files(bastion), "pages": pages, "counts": counts, "uploaded": uploaded, "blobs": blobs}


def test_an_import_killed_midway_completes_on_a_rerun_as_a_clean_import(
        bastion: Bastion, owner: str, data_dir: Path, database_url: str, backend: str, tmp_path: Path,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests.conftest import fresh_database

    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(12):
        for version in ("1.0", "1.1", "2.0"):
            make_wheel(tree, f"bastion-kill-{i:02d}", version)
            make_sdist(tree, f"bastion-kill-{i:02d}", version)
    total = 72
    proc = subprocess.Popen([BASTION, "import", str(tree), "--owner", "alice", "--workers", "2",
                             "--data-dir", str(data_dir)], env=_env(database_url), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    stored = 0
    try:
        while stored < 10:
            assert proc.poll() is None, "the import ended before it could be killed"
            assert time.monotonic() < deadline
            with bastion.db.read() as session:
                stored = session.execute(select(func.count()).select_from(File)).scalar_one()
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    with bastion.db.read() as session:
        killed_at = session.execute(select(func.count()).select_from(File)).scalar_one()
    assert 10 <= killed_at < total
    rerun = _cli(data_dir, database_url, str(tree), "--owner", "alice", "--json", "-")
    assert rerun.returncode == 0, rerun.stderr
    data = json.loads(rerun.stdout)
    assert data["accepted"] + data["skipped_already_present"] == total and data["skipped_already_present"] >= killed_at
    resumed = _database_state(bastion)
    assert resumed["counts"]["files"] == total and resumed["uploaded"] == total
    assert not list(bastion.tmp_dir.iterdir())
    # The same tree imported in one go into another database and data dir.
    clean_dir = tmp_path_factory.mktemp("clean-import") / "data"
    with fresh_database(backend, clean_dir, tmp_path_factory) as clean_url:
        clean = Bastion(load_settings(clean_dir, database_url=clean_url), run_migrations=False)
        try:
            make_user(clean, "alice")
            import_paths(clean, [tree], "alice", workers=1)
            assert _database_state(clean) == resumed
        finally:
            clean.close()
