"""The real pip-audit (2.10.1) against the OSV endpoint of a live ``bastion serve``, and
``bastion audit`` beside it on the same requirements files (same ids after alias merging).

The server holds the whole shared PyPA snapshot (imported with ``bastion advisories import``
while it runs) and a few small wheels uploaded with twine, so that ``bastion audit`` resolves an
unpinned requirement and its Requires-Dist through the index. pip-audit runs with ``--no-deps
--disable-pip`` on pinned files: its default mode builds a venv and upgrades pip from PyPI, and
these tests reach nothing beyond 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.advisories import SNAPSHOT, merge_overlapping, snapshot_requirements, write_requirements
from tests.distbuilder import make_wheel, metadata_text
from tests.integration.conftest import BASTION, BIN, LiveServer, describe, run

PIP_AUDIT = str(BIN / "pip-audit")
AGREEMENT_LINES = 80

@pytest.fixture(scope="module")
def index(module_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The live server with the snapshot imported and agree-app -> jinja2<2.5 uploaded."""
    assert SNAPSHOT.is_dir(), f"the shared advisory snapshot is not at {SNAPSHOT} (set BASTION_ADVISORY_DB)"
    result = module_server.cli_ok("advisories", "import", str(SNAPSHOT))
    assert "2661 added" in " ".join(result.stdout.split()), describe(result)
    dists = tmp_path_factory.mktemp("audit-dists")
    files = [make_wheel(dists, "jinja2", version) for version in ("2.4.1", "2.10", "3.1.6")]
    files.append(make_wheel(dists, "agree-app", "1.0.0",
                            metadata=metadata_text("agree-app", "1.0.0", extra="Requires-Dist: jinja2<2.5\n")))
    module_server.twine_ok(files)
    yield module_server


def pip_audit(server: LiveServer, requirements: Path, tmp_path: Path, *args: str) -> Any:
    return run([PIP_AUDIT, "-s", "osv", "--osv-url", f"{server.url}/osv/v1/query", "--no-deps", "--disable-pip",
                "--progress-spinner", "off", "--cache-dir", str(tmp_path / "pip-audit-cache"),
                "-r", str(requirements), *args], env=server.client_env)


def bastion_audit(server: LiveServer, *args: str) -> Any:
    return run([BASTION, "audit", "--index-url", server.index_url, *args], env=server.client_env)


def merged(report: dict[str, Any]) -> dict[str, set[frozenset[str]]]:
    """{name version: {each finding's ids and aliases}}, findings that share any id merged (pip-audit
    merges only into a PYSEC result, never two PYSEC records of one CVE, such as distributed's
    PYSEC-2021-871 and -872; bastion audit merges every overlap, as the JSON API shows them)."""
    return {f"{d['name']} {d['version']}": merge_overlapping(frozenset([v["id"], *v.get("aliases", [])])
                                                             for v in d["vulns"])
            for d in report["dependencies"] if d.get("vulns")}


def test_pip_audit_reports_what_the_osv_endpoint_holds(index: LiveServer, tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("jinja2==2.4.1\nagree-app==1.0.0\n")
    result = pip_audit(index, requirements, tmp_path, "-f", "json")
    assert result.returncode == 1, describe(result)  # pip-audit: 1 when vulnerabilities were found
    report = json.loads(result.stdout)
    by_name = {d["name"]: d for d in report["dependencies"]}
    assert by_name["agree-app"]["vulns"] == []  # our {} answer read as clean
    jinja = {v["id"]: v for v in by_name["jinja2"]["vulns"]}
    with index.http() as client:
        served = client.post("/osv/v1/query", json={"package": {"name": "jinja2", "ecosystem": "PyPI"},
                                                    "version": "2.4.1"}).json()["vulns"]
    assert len(served) >= 5
    # pip-audit collapses records that share an alias; every served id is in exactly one of its results.
    assert {i for v in jinja.values() for i in (v["id"], *v["aliases"])} >= {r["id"] for r in served}
    assert jinja["PYSEC-2019-217"]["fix_versions"] == ["2.10.1"]
    assert "CVE-2019-10906" in jinja["PYSEC-2019-217"]["aliases"]


def test_pip_audit_exits_0_on_a_clean_file(index: LiveServer, tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("agree-app==1.0.0\nnot-a-project-anywhere==1.0\n")
    result = pip_audit(index, requirements, tmp_path)
    assert result.returncode == 0, describe(result)
    assert "No known vulnerabilities found" in result.stdout + result.stderr


def test_pip_audit_and_bastion_audit_agree_on_real_advisories(index: LiveServer, tmp_path: Path) -> None:
    picks = snapshot_requirements(SNAPSHOT, AGREEMENT_LINES)
    assert len(picks) == AGREEMENT_LINES and sum(v for *_, v in picks) == AGREEMENT_LINES // 2
    requirements = write_requirements(tmp_path / "requirements.txt", picks)
    theirs = pip_audit(index, requirements, tmp_path, "-f", "json")
    ours = bastion_audit(index, "-r", str(requirements), "--no-deps", "-f", "json")
    assert theirs.returncode == 1 and ours.returncode == 1, describe(theirs) + describe(ours)
    theirs_merged, ours_merged = merged(json.loads(theirs.stdout)), merged(json.loads(ours.stdout))
    assert ours_merged == theirs_merged
    # Every vulnerable pin is reported, no clean one is.
    assert set(ours_merged) == {f"{name} {version}" for name, version, vulnerable in picks if vulnerable}
    assert sum(len(v) for v in ours_merged.values()) >= AGREEMENT_LINES // 2


def test_bastion_audit_resolves_through_the_live_index(index: LiveServer, tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("agree-app\n")
    result = bastion_audit(index, "-r", str(requirements), "--fix", "-f", "json")
    assert result.returncode == 1, describe(result)
    report = json.loads(result.stdout)
    versions = {d["name"]: d.get("version") for d in report["dependencies"]}
    assert versions == {"agree-app": "1.0.0", "jinja2": "2.4.1"}  # jinja2<2.5 from agree-app's Requires-Dist
    jinja = next(d for d in report["dependencies"] if d["name"] == "jinja2")
    ids = {v["id"] for v in jinja["vulns"]}
    assert {"PYSEC-2014-8", "PYSEC-2019-217"} <= ids
    # 2.10 is affected too (PYSEC-2019-217 is fixed in 2.10.1); 3.1.6 is the smallest clean upgrade.
    assert report["fixes"] == [{"name": "jinja2", "old_version": "2.4.1", "new_version": "3.1.6"}]
    # The same findings as pip-audit on the resolved pins.
    pinned = tmp_path / "pinned.txt"
    pinned.write_text("agree-app==1.0.0\njinja2==2.4.1\n")
    theirs = pip_audit(index, pinned, tmp_path, "-f", "json")
    assert merged(json.loads(theirs.stdout)) == merged(report)
    # The columns report, as a person reads it.
    result = bastion_audit(index, "-r", str(requirements))
    assert result.returncode == 1
    assert result.stdout.splitlines()[0].split() == ["Name", "Version", "ID", "Fix", "Versions"]
    assert "jinja2 2.4.1 PYSEC-2019-217 2.10.1" in " ".join(result.stdout.split())
