"""``bastion scan``: table and --json output, exit codes 0/1/2, directories and bad paths.

The command is run in a subprocess (the real entry point), on small distributions built in the test.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bastion.cli import main
from bastion.scanning.cli import collect, scan_command
from tests.distbuilder import make_sdist, make_wheel

EVIL_SETUP = (
    "from setuptools import setup\nimport base64\n"
    f"exec(base64.b64decode('{base64.b64encode(b'import os; os.system(chr(105) + chr(100))').decode()}'))\n"
    "setup(name='evil', version='1.0')\n"
)


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "bastion"), "scan", *map(str, args)], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def dists(tmp_path: Path) -> dict[str, Path]:
    clean = tmp_path / "clean"
    clean.mkdir()
    evil = tmp_path / "evil"
    evil.mkdir()
    return {
        "wheel": make_wheel(clean, "tidy", "1.0"),
        "sdist": make_sdist(clean, "tidy", "1.0"),
        "evil": make_sdist(evil, "evil", "1.0", files={"setup.py": EVIL_SETUP.encode()}),
        "broken": _write(tmp_path / "broken-1.0.tar.gz", b"this is not an archive"),
    }


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_clean_files_exit_0_and_print_a_row_each(dists: dict[str, Path]) -> None:
    result = run(dists["wheel"], dists["sdist"])
    assert result.returncode == 0, result.stderr
    assert "tidy-1.0-py3-none-any.whl" in result.stdout and "allow" in result.stdout
    assert "tidy-1.0.tar.gz" in result.stdout


def test_malicious_file_exits_1_with_a_findings_table(dists: dict[str, Path]) -> None:
    result = run(dists["evil"])
    assert result.returncode == 1
    out = result.stdout
    assert "evil-1.0.tar.gz" in out
    assert "reject" in out or "quarantine" in out
    assert "code.exec-decoded" in out
    assert "evil-1.0/setup.py:3" in out  # member:line
    assert "Executes decoded" in out  # the why


def test_json_prints_one_object_per_file(dists: dict[str, Path]) -> None:
    result = run("--json", dists["wheel"], dists["evil"])
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    objects = [json.loads(line) for line in lines]
    assert [o["file"] for o in objects] == ["tidy-1.0-py3-none-any.whl", "evil-1.0.tar.gz"]
    assert objects[0]["verdict"] == "allow" and objects[0]["findings"] == []
    evil = objects[1]
    assert evil["verdict"] in ("quarantine", "reject") and evil["score"] >= 8.0
    assert {"file", "sha256", "verdict", "score", "findings", "rules_version", "seconds", "error"} <= set(evil)
    rules = {f["rule"] for f in evil["findings"]}
    assert "code.exec-decoded" in rules
    finding = next(f for f in evil["findings"] if f["rule"] == "code.exec-decoded")
    assert finding["file"] == "evil-1.0/setup.py" and finding["line"] == 3 and finding["why"]


def test_directories_are_searched_recursively(dists: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "clean" / "notes.txt").write_text("not a distribution")
    result = run("--json", tmp_path)
    assert result.returncode == 1  # the evil sdist and the broken file are in the tree
    names = sorted(json.loads(line)["file"] for line in result.stdout.strip().splitlines())
    assert names == ["broken-1.0.tar.gz", "evil-1.0.tar.gz", "tidy-1.0-py3-none-any.whl", "tidy-1.0.tar.gz"]
    clean_only = run("--json", tmp_path / "clean")
    assert clean_only.returncode == 0
    assert len(clean_only.stdout.strip().splitlines()) == 2


def test_unreadable_archive_is_reported_not_crashed(dists: dict[str, Path]) -> None:
    result = run("--json", dists["broken"])
    assert result.returncode == 1
    obj = json.loads(result.stdout)
    assert obj["verdict"] == "reject"
    assert "not a zip, gzip, bzip2, xz or tar archive" in obj["error"]
    table = run(dists["broken"])
    assert "error:" in table.stdout and "Traceback" not in table.stderr


def test_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    result = run(tmp_path / "nowhere.whl")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "nowhere.whl" in result.stderr and "no such file" in result.stderr
    assert result.stdout == ""


def test_no_path_and_bad_options_are_usage_errors(dists: dict[str, Path]) -> None:
    assert run().returncode == 2
    assert run("--quarantine-score", "11", dists["wheel"]).returncode == 2
    assert run("--quarantine-score", "9", "--reject-score", "5", dists["wheel"]).returncode == 2


def test_thresholds_change_the_verdict(dists: dict[str, Path]) -> None:
    lenient = run("--json", "--quarantine-score", "10", "--reject-score", "10", dists["evil"])
    strict = run("--json", "--quarantine-score", "0.5", dists["sdist"])
    assert json.loads(lenient.stdout)["verdict"] == "reject"  # score 10 reaches reject even when lenient
    assert json.loads(strict.stdout)["verdict"] == "allow"  # a clean sdist scores 0
    middle = run("--json", "--quarantine-score", "9.5", "--reject-score", "10", dists["evil"])
    assert json.loads(middle.stdout)["verdict"] in ("quarantine", "reject")


def test_registered_on_the_main_cli() -> None:
    assert main.get_command(None, "scan") is scan_command  # type: ignore[arg-type]
    result = CliRunner().invoke(main, ["scan", "--help"])
    assert result.exit_code == 0 and "--json" in result.output and "--quarantine-score" in result.output


def test_collect_finds_distributions_only(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    for name in ("x-1.0.tar.gz", "y-1.0-py3-none-any.whl", "z-1.0.zip", "w-1.0.tar.bz2", "v-1.0.tgz", "readme.md"):
        (nested / name).write_bytes(b"")
    found = [p.name for p in collect([tmp_path])]
    assert sorted(found) == ["v-1.0.tgz", "w-1.0.tar.bz2", "x-1.0.tar.gz", "y-1.0-py3-none-any.whl", "z-1.0.zip"]
