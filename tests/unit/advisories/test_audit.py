"""``bastion audit`` (bastion.advisories.audit, audit_cli) against a real index over HTTP.

One index per backend for the module: advisories imported from PyPA-layout YAML, small wheels
uploaded (with Requires-Dist), one release yanked, and the app served by uvicorn on 127.0.0.1 in
a thread; the command runs in-process (click's runner) and talks HTTP to it, as from any machine.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest
import uvicorn
from click.testing import CliRunner, Result
from starlette.testclient import TestClient

from bastion.advisories.audit import IndexClient, Wanted, resolve
from bastion.advisories.audit_cli import audit_command
from bastion.app import create_app
from bastion.services import Bastion
from bastion.settings import load_settings
from packaging.specifiers import SpecifierSet
from tests.conftest import BACKENDS, fresh_database, make_user, post_upload, require_backend
from tests.distbuilder import make_wheel, metadata_text, upload_form
from tests.unit.advisories.test_osv_api import import_advisories, write_advisories
from tests.unit.world import db_rows

# alpha-web: PYSEC-2098-1 and GHSA-2098-alph-aaaa are one CVE (fixed in 1.2.0); PYSEC-2098-2
# affects 1.2.0 only (so the smallest clean upgrade of 1.1.0 is 1.3.0); beta-parser 2.0.0 is
# affected (listed and last_affected); gamma-crypto has no fix at all.
ADVISORIES = {
    "alpha-web/PYSEC-2098-1.yaml": """
        id: PYSEC-2098-1
        modified: 2098-01-01T00:00:00Z
        summary: Request smuggling in alpha-web
        details: Long text.
        aliases: [CVE-2098-1001, GHSA-2098-alph-aaaa]
        affected:
        - package: {name: alpha-web, ecosystem: PyPI}
          ranges:
          - type: ECOSYSTEM
            events: [{introduced: "0"}, {fixed: 1.2.0}]
    """,
    "alpha-web/GHSA-2098-alph-aaaa.yaml": """
        id: GHSA-2098-alph-aaaa
        modified: 2098-01-02T00:00:00Z
        summary: Request smuggling (GitHub record)
        aliases: [CVE-2098-1001]
        affected:
        - package: {name: alpha-web, ecosystem: PyPI}
          ranges:
          - type: ECOSYSTEM
            events: [{introduced: 1.0.0}, {fixed: 1.2.0}]
    """,
    "alpha-web/PYSEC-2098-2.yaml": """
        id: PYSEC-2098-2
        modified: 2098-02-01T00:00:00Z
        details: |
          A regression in 1.2.0
          opens files.
        affected:
        - package: {name: alpha-web, ecosystem: PyPI}
          ranges:
          - type: ECOSYSTEM
            events: [{introduced: 1.2.0}, {fixed: 1.3.0}]
    """,
    "beta-parser/PYSEC-2098-3.yaml": """
        id: PYSEC-2098-3
        modified: 2098-03-01T00:00:00Z
        summary: Billion laughs in beta-parser
        aliases: [CVE-2098-3003]
        affected:
        - package: {name: Beta_Parser, ecosystem: PyPI}
          versions: [2.0.0]
          ranges:
          - type: ECOSYSTEM
            events: [{introduced: "0"}, {last_affected: 2.0.0}]
    """,
    "gamma-crypto/PYSEC-2098-4.yaml": """
        id: PYSEC-2098-4
        modified: 2098-04-01T00:00:00Z
        summary: Weak keys in gamma-crypto
        affected:
        - package: {name: gamma-crypto, ecosystem: PyPI}
          ranges:
          - type: ECOSYSTEM
            events: [{introduced: "0"}]
    """,
}

RELEASES = [
    ("alpha-web", "1.0.0", []),
    ("alpha-web", "1.1.0", ["beta-parser<2.1", "gamma-crypto; extra == 'crypto'", "delta-utils; python_version < '3'"]),
    ("alpha-web", "1.2.0", []),
    ("alpha-web", "1.3.0", ["beta-parser>=2.0"]),
    ("alpha-web", "1.4.0rc1", []),
    ("alpha-web", "1.5.0", []),  # yanked below
    ("beta-parser", "1.0.0", []),
    ("beta-parser", "2.0.0", []),
    ("beta-parser", "2.1.0", []),
    ("gamma-crypto", "0.1.0", []),
    ("delta-utils", "1.0.0", []),
]


@dataclass
class Index:
    bastion: Bastion
    url: str
    root: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return require_backend(str(request.param))


@pytest.fixture(scope="module")
def index(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Index]:
    root = tmp_path_factory.mktemp("audit")
    with fresh_database(backend, root / "data", tmp_path_factory) as url:
        instance = Bastion(load_settings(root / "data", database_url=url, tuf="off"), run_migrations=False)
        try:
            import_advisories(instance, write_advisories(root / "advisories", ADVISORIES))
            token = make_user(instance, "maintainer")
            app = create_app(bastion=instance)
            with TestClient(app, base_url="http://testserver") as client:
                for name, version, requires in RELEASES:
                    directory = root / "dists" / f"{name}-{version}"
                    directory.mkdir(parents=True)
                    extra = "".join(f"Requires-Dist: {r}\n" for r in requires)
                    wheel = make_wheel(directory, name, version, metadata=metadata_text(name, version, extra=extra))
                    response = post_upload(client, token, wheel, upload_form(wheel, name, version))
                    assert response.status_code == 200, response.text
                response = client.post("/api/v1/projects/alpha-web/releases/1.5.0/yank", json={"reason": "broken"},
                                       headers={"Authorization": f"Bearer {token}"})
                assert response.status_code == 200, response.text
            port = _free_port()
            server = uvicorn.Server(uvicorn.Config(create_app(bastion=instance), host="127.0.0.1", port=port,
                                                   log_level="warning", lifespan="off"))
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            deadline = time.monotonic() + 30
            while not server.started:
                assert time.monotonic() < deadline and thread.is_alive(), "the test server did not start"
                time.sleep(0.02)
            try:
                yield Index(bastion=instance, url=f"http://127.0.0.1:{port}", root=root)
            finally:
                server.should_exit = True
                thread.join(timeout=15)
        finally:
            instance.close()


def run_audit(index: Index, *args: str) -> Result:
    return CliRunner().invoke(audit_command, ["--index-url", index.url, *args], catch_exceptions=False)


def requirements(tmp_path: Path, text: str, name: str = "requirements.txt") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def report_json(result: Result) -> dict:
    return json.loads(result.stdout)


def vulns(report: dict) -> dict[str, set[str]]:
    """{name version: {ids}} of the dependencies with findings."""
    return {f"{d['name']} {d['version']}": {v["id"] for v in d["vulns"]}
            for d in report["dependencies"] if d.get("vulns")}


def test_pinned_requirements_with_their_dependencies(index: Index, tmp_path: Path) -> None:
    result = run_audit(index, "-r", requirements(tmp_path, "alpha-web==1.1.0\n"), "-f", "json")
    assert result.exit_code == 1, result.output
    report = report_json(result)
    # The PYSEC and GHSA records of CVE-2098-1001 are one finding (PYSEC shown, the rest as aliases);
    # beta-parser comes from Requires-Dist (<2.1: 2.0.0); gamma-crypto only with the extra;
    # delta-utils's marker is false here.
    assert vulns(report) == {"alpha-web 1.1.0": {"PYSEC-2098-1"}, "beta-parser 2.0.0": {"PYSEC-2098-3"}}
    assert [d["name"] for d in report["dependencies"]] == ["alpha-web", "beta-parser"]
    (alpha,) = [d for d in report["dependencies"] if d["name"] == "alpha-web"]
    assert alpha["vulns"] == [{"id": "PYSEC-2098-1", "fix_versions": ["1.2.0"],
                               "aliases": ["GHSA-2098-alph-aaaa", "CVE-2098-1001"],
                               "description": "Request smuggling in alpha-web"}]
    assert report["fixes"] == []
    assert "Found 2 known vulnerabilities in 2 packages (2 audited)" in result.stderr


def test_columns_are_the_default_and_extras_and_no_deps_count(index: Index, tmp_path: Path) -> None:
    result = run_audit(index, "-r", requirements(tmp_path, "Alpha_Web[crypto]==1.1.0\n"))
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["Name", "Version", "ID", "Fix", "Versions"]
    assert set(lines[1]) == {"-", " "}
    rows = {tuple(line.split()) for line in lines[2:]}
    assert rows == {("alpha-web", "1.1.0", "PYSEC-2098-1", "1.2.0"), ("beta-parser", "2.0.0", "PYSEC-2098-3"),
                    ("gamma-crypto", "0.1.0", "PYSEC-2098-4")}
    result = run_audit(index, "-r", requirements(tmp_path, "alpha-web[crypto]==1.1.0\n"), "--no-deps", "-f", "json")
    assert vulns(report_json(result)) == {"alpha-web 1.1.0": {"PYSEC-2098-1"}}


def test_unpinned_requirements_resolve_to_the_newest_final_unyanked_version(index: Index, tmp_path: Path) -> None:
    # 1.5.0 is yanked and 1.4.0rc1 a pre-release: >=1.0 is 1.3.0, clean; its beta-parser>=2.0 is 2.1.0.
    result = run_audit(index, "-r", requirements(tmp_path, "alpha-web>=1.0\n"), "-f", "json")
    assert result.exit_code == 0, result.output
    assert [(d["name"], d["version"], d["vulns"]) for d in report_json(result)["dependencies"]] == [
        ("alpha-web", "1.3.0", []), ("beta-parser", "2.1.0", [])]
    assert "No known vulnerabilities found (2 audited)" in result.stderr
    # A pre-release is taken when the specifier names one; beta-parser's own range applies too.
    result = run_audit(index, "-r", requirements(tmp_path, "alpha-web>=1.4.0rc1\nbeta-parser<=2.0\n"), "-f", "json")
    assert vulns(report_json(result)) == {"beta-parser 2.0.0": {"PYSEC-2098-3"}}
    assert ("alpha-web", "1.4.0rc1") in [(d["name"], d.get("version")) for d in report_json(result)["dependencies"]]


def test_what_cannot_be_resolved_is_listed_as_skipped(index: Index, tmp_path: Path) -> None:
    text = "alpha-web>=9\nnot-on-this-index\n-e git+https://example.org/repo.git#egg=local-thing\ndelta-utils\n"
    req = requirements(tmp_path, text)
    result = run_audit(index, "-r", req)
    assert result.exit_code == 0, result.output
    assert "Skipped:" in result.stdout
    flat = " ".join(result.stdout.split())
    assert f"alpha-web {req}:1: no version on the index satisfies >=9" in flat
    assert f"not-on-this-index {req}:2: not found on the index" in flat
    assert "an editable, URL or local path requirement cannot be resolved" in flat
    assert "(1 audited, 3 skipped)" in result.stderr
    # A pin the index does not hold is still audited (the advisory data decides), and said so.
    result = run_audit(index, "-r", requirements(tmp_path, "beta-parser==0.5\n"), "-f", "json")
    assert result.exit_code == 1 and vulns(report_json(result)) == {"beta-parser 0.5": {"PYSEC-2098-3"}}
    assert report_json(result)["notes"] == ["beta-parser 0.5 is not on the index: audited, its dependencies not followed"]
    assert "note: beta-parser 0.5 is not on the index" in result.stderr
    # Many such pins: five notes on stderr, then a count.
    result = run_audit(index, "-r", requirements(tmp_path, "".join(f"beta-parser-{i}==1.0\n" for i in range(8))))
    assert result.exit_code == 0 and result.stderr.count("note: ") == 6
    assert "... and 3 more" in result.stderr


def test_markdown_format(index: Index, tmp_path: Path) -> None:
    result = run_audit(index, "-r", requirements(tmp_path, "alpha-web==1.2.0\n"), "-f", "markdown")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[:3] == [
        "Name | Version | ID | Fix Versions | Description", "--- | --- | --- | --- | ---",
        "alpha-web | 1.2.0 | PYSEC-2098-2 | 1.3.0 | A regression in 1.2.0 opens files.",
    ]


def test_ignores_are_alias_aware_and_expire(index: Index, tmp_path: Path) -> None:
    req = requirements(tmp_path, "alpha-web==1.1.0\n")
    tomorrow, yesterday = date.today() + timedelta(days=1), date.today() - timedelta(days=1)
    # The CVE id hides the PYSEC finding that lists it.
    result = run_audit(index, "-r", req, "--no-deps", "--ignore", f"CVE-2098-1001:{tomorrow}",
                       "--ignore-reason", "not reachable from our code", "-f", "json")
    assert result.exit_code == 0, result.output
    report = report_json(result)
    assert vulns(report) == {}
    assert report["ignored"] == [{"name": "alpha-web", "version": "1.1.0", "id": "PYSEC-2098-1",
                                  "aliases": ["GHSA-2098-alph-aaaa", "CVE-2098-1001"],
                                  "reason": "not reachable from our code", "expires": tomorrow.isoformat()}]
    assert "1 ignored" in result.stderr
    # Expired yesterday: reported again, and the warning says why.
    result = run_audit(index, "-r", req, "--no-deps", "--ignore", f"GHSA-2098-alph-aaaa:{yesterday}")
    assert result.exit_code == 1
    assert "PYSEC-2098-1" in result.stdout
    assert (f"the ignore of GHSA-2098-alph-aaaa (--ignore) expired on {yesterday}: PYSEC-2098-1 in alpha-web 1.1.0 "
            "is reported again") in " ".join(result.stderr.split())
    # An ignore file, with reasons and expiries.
    ignore_file = tmp_path / "audit-ignore.toml"
    ignore_file.write_text(f'[[ignore]]\nid = "PYSEC-2098-3"\nreason = "we never parse XML"\nexpires = {tomorrow}\n'
                           f'[[ignore]]\nid = "CVE-2098-1001"\nreason = "fixed by a proxy rule"\n')
    result = run_audit(index, "-r", req, "--ignore-file", str(ignore_file))
    assert result.exit_code == 0, result.output
    assert "Ignored:" in result.stdout and "we never parse XML" in result.stdout and "never" in result.stdout


@pytest.mark.parametrize(("content", "message"), [
    ('[[ignore]]\nreason = "x"\n', 'id is missing; add id = "CVE-..."'),
    ('[[ignore]]\nid = "CVE-1"\n', "reason is missing; say why it is safe to ignore"),
    ('[[ignore]]\nid = "CVE-1"\nreason = "r"\nexpires = "soon"\n', "expires must be a date like 2026-12-31"),
    ('[[ignore]]\nid = "CVE-1"\nreason = "r"\nuntil = 2026-01-01\n', "unknown key(s) until"),
    ("[[ignore]\n", "not valid TOML"),
])
def test_a_bad_ignore_file_is_refused(index: Index, tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "ignore.toml"
    path.write_text(content)
    result = run_audit(index, "-r", requirements(tmp_path, "alpha-web==1.1.0\n"), "--ignore-file", str(path))
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split())
    assert str(path) in " ".join(result.stderr.split())


def test_fix_prints_the_smallest_upgrades_that_clear_every_finding(index: Index, tmp_path: Path) -> None:
    req = requirements(tmp_path, "alpha-web[crypto]==1.1.0\n")
    result = run_audit(index, "-r", req, "--fix", "-f", "json")
    assert result.exit_code == 1
    # alpha-web: 1.2.0 fixes PYSEC-2098-1 but has PYSEC-2098-2, so 1.3.0; beta-parser: 2.1.0;
    # gamma-crypto: no version fixes it.
    assert report_json(result)["fixes"] == [
        {"name": "alpha-web", "old_version": "1.1.0", "new_version": "1.3.0"},
        {"name": "beta-parser", "old_version": "2.0.0", "new_version": "2.1.0"},
        {"name": "gamma-crypto", "version": "0.1.0", "skip_reason": "no newer version on the index"},
    ]
    result = run_audit(index, "-r", req, "--fix")
    flat = " ".join(result.stdout.split())
    assert "alpha-web 1.1.0 1.3.0" in flat and "gamma-crypto 0.1.0 - no newer version on the index" in flat


def test_pylock_and_installed_environments(index: Index, tmp_path: Path) -> None:
    lock = tmp_path / "pylock.toml"
    lock.write_text('lock-version = "1.0"\ncreated-by = "test"\n'
                    '[[packages]]\nname = "alpha-web"\nversion = "1.2.0"\n'
                    '[packages.archive]\nurl = "https://example.org/alpha_web-1.2.0.tar.gz"\n'
                    '[packages.archive.hashes]\nsha256 = "' + "0" * 64 + '"\n'
                    '[[packages]]\nname = "delta-utils"\nversion = "1.0.0"\nmarker = "python_version < \'3\'"\n'
                    '[packages.archive]\nurl = "https://example.org/delta_utils-1.0.0.tar.gz"\n'
                    '[packages.archive.hashes]\nsha256 = "' + "0" * 64 + '"\n')
    result = run_audit(index, str(lock), "-f", "json")
    assert result.exit_code == 1, result.output
    assert vulns(report_json(result)) == {"alpha-web 1.2.0": {"PYSEC-2098-2"}}
    assert [d["name"] for d in report_json(result)["dependencies"]] == ["alpha-web"]  # the marker is false here

    site = tmp_path / "site-packages"
    for name, version in (("beta_parser", "2.0.0"), ("delta_utils", "1.0.0")):
        info = site / f"{name}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(metadata_text(name.replace("_", "-"), version))
    result = run_audit(index, "--path", str(site), "-f", "json")
    assert result.exit_code == 1, result.output
    report = report_json(result)
    assert vulns(report) == {"beta-parser 2.0.0": {"PYSEC-2098-3"}}
    assert {d["name"] for d in report["dependencies"]} == {"beta-parser", "delta-utils"}


def test_an_interpreter_environment_and_the_index_from_the_environment(index: Index) -> None:
    # This interpreter's own distributions (none has an advisory here); the index URL from
    # $BASTION_INDEX_URL, as a developer sets it once.
    result = CliRunner(env={"BASTION_INDEX_URL": index.url + "/simple/"}).invoke(
        audit_command, ["--python", sys.executable, "-f", "json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    names = {d["name"] for d in report_json(result)["dependencies"]}
    assert {"packaging", "pip-requirements-parser", "click"} <= names
    result = CliRunner().invoke(audit_command, ["--python", "/nonexistent/python3"])
    assert result.exit_code == 2 and "--python /nonexistent/python3: cannot run it" in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["-r", "{tmp}/missing.txt"], "{tmp}/missing.txt: no such requirements file"),
    (["-r", "{bad}"], "requirements.txt:2: not a valid requirement: 'this is not a requirement'"),
    (["{tmp}/requirements.txt"], "a lock file is named pylock.toml or pylock.NAME.toml"),
    (["-r", "{ok}", "--path", "{tmp}"], "audit either files (-r, pylock.toml) or an environment"),
    (["-r", "{ok}", "--ignore", "CVE-1:someday"], "'someday' is not a date"),
    (["-r", "{ok}", "--ignore-reason", "why"], "--ignore-reason explains --ignore ids"),
    (["--path", "{tmp}/nowhere"], "--path {tmp}/nowhere: no such directory"),
    (["-r", "{ok}", "--index-url", "ftp://x"], "give the index's http(s) URL"),
])
def test_bad_input_exits_2_with_what_to_fix(index: Index, tmp_path: Path, args: list[str], message: str) -> None:
    ok = requirements(tmp_path, "alpha-web==1.1.0\n", "ok.txt")
    bad = requirements(tmp_path, "alpha-web==1.1.0\nthis is not a requirement\n")
    before = db_rows(index.bastion)
    fill = {"tmp": str(tmp_path), "ok": ok, "bad": bad}
    result = run_audit(index, *[a.format(**fill) for a in args])
    assert result.exit_code == 2, result.output
    assert message.format(**fill) in " ".join(result.stderr.split())
    assert result.stdout == ""
    assert db_rows(index.bastion) == before


def test_an_unreachable_index_exits_2(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    result = CliRunner().invoke(audit_command, ["--index-url", url, "-r", requirements(tmp_path, "x==1\n")])
    assert result.exit_code == 2
    assert f"cannot reach the index at {url}" in " ".join(result.stderr.split())


def test_resolution_follows_the_first_version_reached(index: Index) -> None:
    client = IndexClient(index.url + "/simple/")
    wanted = [Wanted(name="alpha-web", specifier=SpecifierSet("==1.3.0"), extras=frozenset(), origin="a"),  # type: ignore[arg-type]
              Wanted(name="beta-parser", specifier=SpecifierSet("<2.1"), extras=frozenset(), origin="b")]  # type: ignore[arg-type]
    resolved, skipped, notes = resolve(client, wanted)
    # The file's own beta-parser<2.1 is reached first (level 0), before alpha-web's beta-parser>=2.0.
    assert [(d.name, d.version, d.direct) for d in resolved] == [("alpha-web", "1.3.0", True),
                                                                  ("beta-parser", "2.0.0", True)]
    assert skipped == [] and notes == []
