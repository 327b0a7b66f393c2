"""``bastion import`` from the real peers: a pypiserver package directory and a devpi-server export.

The peers run from their own virtual environment, ``.venv-peers/`` at the repository root (made
by the ``peers`` fixture with the pins below, reused while the pins are unchanged; about 25 s to
make): their dependencies (pyramid, an old ``py``...) stay out of the project's venv. Files go up
to each peer with twine, as their users upload; devpi-server runs ``--offline-mode`` on
127.0.0.1 and ``devpi-export`` writes the export; then ``bastion import`` runs next to a live
Bastion, and pip installs from it. devpi-client is not needed: twine uploads, and devpi 6 has no
yank of its own (PEP 592 only on mirror indexes), so the export carries none.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import REPO, TWINE, Dists, LiveServer, _free_port, clean_env, describe, installed, run

PEER_REQUIREMENTS = ["devpi-server==6.20.3", "pypiserver==2.4.2"]
PEERS_VENV = REPO / ".venv-peers"
DEVPI_USER = "team"
DEVPI_PASSWORD = "devpi-password-5c1e"


def _peers_venv() -> Path:
    marker = PEERS_VENV / ".requirements"
    wanted = "\n".join(PEER_REQUIREMENTS)
    if marker.is_file() and marker.read_text() == wanted and (PEERS_VENV / "bin" / "python").exists():
        return PEERS_VENV
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEERS_VENV)], check=True)
    result = subprocess.run([str(PEERS_VENV / "bin" / "python"), "-m", "pip", "install", "-q",
                             "--disable-pip-version-check", *PEER_REQUIREMENTS], capture_output=True, text=True)
    assert result.returncode == 0, f"installing {PEER_REQUIREMENTS} failed:\n{result.stdout}\n{result.stderr}"
    marker.write_text(wanted)
    return PEERS_VENV


@dataclass
class Peer:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own process group (start_new_session)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=20)


def _start(argv: list[str], url: str, log: Path, ready: str) -> Peer:
    with open(log, "ab") as handle:
        proc = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    peer = Peer(proc, url, log)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{argv[0]} exited:\n{log.read_text(errors='replace')[-3000:]}"
        try:
            if httpx.get(url + ready, timeout=2, trust_env=False).status_code < 500:
                return peer
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    peer.stop()
    raise AssertionError(f"{argv[0]} did not start:\n{log.read_text(errors='replace')[-3000:]}")


def _twine(url: str, user: str, password: str, files: list[Path], home: Path) -> None:
    result = run([TWINE, "--no-color", "upload", "--non-interactive", "--disable-progress-bar", "--repository-url",
                  url, "-u", user, "-p", password, *map(str, files)], env=clean_env(home))
    assert result.returncode == 0, describe(result)


@dataclass(frozen=True)
class Sources:
    devpi_export: Path
    pypiserver_dir: Path
    devpi_times: dict[str, datetime]
    """Upload time of each file, from the export's log."""


@pytest.fixture(scope="module")
def sources(dists: Dists, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sources]:
    """demo-pkg 1.0.0 and demo-dep uploaded to devpi-server and exported; demo-pkg 1.1.0 and the
    sdist-only project uploaded to pypiserver (its package directory, nested, is the source)."""
    venv = _peers_venv()
    work = tmp_path_factory.mktemp("peers")
    home = work / "home"
    # devpi-server: a user, a stage index, twine uploads, then devpi-export on the stopped server.
    serverdir = work / "devpi-server"
    subprocess.run([str(venv / "bin" / "devpi-init"), "--serverdir", str(serverdir), "--no-root-pypi",
                    "--root-passwd", DEVPI_PASSWORD], check=True, capture_output=True)
    port = _free_port()
    devpi = _start([str(venv / "bin" / "devpi-server"), "--serverdir", str(serverdir), "--host", "127.0.0.1",
                    "--port", str(port), "--offline-mode"], f"http://127.0.0.1:{port}", work / "devpi.log", "/+api")
    try:
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        with httpx.Client(base_url=devpi.url, headers=headers, timeout=30, trust_env=False) as client:
            client.put(f"/{DEVPI_USER}", content=json.dumps({"password": DEVPI_PASSWORD})).raise_for_status()
            login = client.post("/+login", content=json.dumps({"user": DEVPI_USER, "password": DEVPI_PASSWORD}))
            login.raise_for_status()
            auth = base64.b64encode(f"{DEVPI_USER}:{login.json()['result']['password']}".encode()).decode()
            client.put(f"/{DEVPI_USER}/prod", headers={"X-Devpi-Auth": auth},
                       content=json.dumps({"type": "stage", "bases": [], "volatile": True})).raise_for_status()
        _twine(f"{devpi.url}/{DEVPI_USER}/prod/", DEVPI_USER, DEVPI_PASSWORD,
               [*dists.files("demo-pkg-1.0.0"), *dists.files("demo-dep-0.1.0")], home)
    finally:
        devpi.stop()
    export = work / "devpi-export"
    result = subprocess.run([str(venv / "bin" / "devpi-export"), "--serverdir", str(serverdir), str(export)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    index = json.loads((export / "dataindex.json").read_text())
    times = {}
    for entry in index["indexes"][f"{DEVPI_USER}/prod"]["files"]:
        [upload] = [e for e in entry["log"] if e["what"] == "upload"]
        year, month, day, hour, minute, second = upload["when"]
        times[Path(entry["relpath"]).name] = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    # pypiserver: uploads land in its package directory (a subdirectory too: it serves nested trees).
    packages = work / "pypiserver-packages"
    (packages / "more").mkdir(parents=True)
    port = _free_port()
    pypiserver = _start([str(venv / "bin" / "pypi-server"), "run", "--host", "127.0.0.1", "--port", str(port),
                         "-a", ".", "-P", ".", "--disable-fallback", str(packages)],
                        f"http://127.0.0.1:{port}", work / "pypiserver.log", "/simple/")
    try:
        _twine(pypiserver.url + "/", "anyone", "anything", dists.files("demo-pkg-1.1.0"), home)
    finally:
        pypiserver.stop()
    for path in dists.files("demo-sdist-only-0.1.0"):
        (packages / "more" / path.name).write_bytes(path.read_bytes())  # an operator's copy, nested
    (packages / "more" / "notes.txt").write_text("not a distribution\n")
    yield Sources(devpi_export=export, pypiserver_dir=packages, devpi_times=times)


def _import(server: LiveServer, *paths: Path) -> dict:
    result = server.cli("import", *map(str, paths), "--owner", "alice", "--json", "-")
    assert result.returncode == 0, describe(result)
    return json.loads(result.stdout)


def test_a_devpi_export_is_served_with_its_upload_times(live_server: LiveServer, sources: Sources,
                                                        dists: Dists, tmp_path: Path) -> None:
    report = _import(live_server, sources.devpi_export)
    assert report["sources"] == ["devpi-export"]
    assert (report["accepted"], report["refused"], report["projects_created"]) == (4, 0, 2), report
    assert report["yanked"] == []  # devpi 6 keeps no yanks on a stage index
    for project in ("demo-pkg", "demo-dep"):
        page = live_server.simple_json(project)
        for entry in page["files"]:
            when = datetime.fromisoformat(entry["upload-time"].replace("Z", "+00:00"))
            assert when == sources.devpi_times[entry["filename"]], entry
            assert entry["yanked"] is False
    assert live_server.simple_json("demo-pkg")["versions"] == ["1.0.0"]
    target = tmp_path / "target"
    result = live_server.pip_install(target, "demo-pkg", "demo-dep")
    assert result.returncode == 0, describe(result)
    assert installed(target) == {"demo-pkg": "1.0.0", "demo-dep": "0.1.0"}
    # Re-running the import adds nothing.
    again = _import(live_server, sources.devpi_export)
    assert (again["accepted"], again["skipped_already_present"]) == (0, 4)


def test_a_pypiserver_directory_and_an_export_together(live_server: LiveServer, sources: Sources,
                                                       dists: Dists, tmp_path: Path) -> None:
    report = _import(live_server, sources.pypiserver_dir, sources.devpi_export)
    assert report["sources"] == ["directory", "devpi-export"]
    assert (report["accepted"], report["refused"], report["skipped_not_a_distribution"]) == (7, 0, 1), report
    assert live_server.filenames("demo-pkg") == {p.name for p in [*dists.files("demo-pkg-1.0.0"),
                                                                    *dists.files("demo-pkg-1.1.0")]}
    target = tmp_path / "target"
    # The sdist builds with the venv's setuptools (the index holds no setuptools to isolate a build with).
    result = live_server.pip_install(target, "--no-build-isolation", "demo-pkg", "demo-dep", "demo-sdist-only")
    assert result.returncode == 0, describe(result)
    assert installed(target) == {"demo-pkg": "1.1.0", "demo-dep": "0.1.0", "demo-sdist-only": "0.1.0"}
    with live_server.http() as client:
        timestamp = client.get("/tuf/metadata/timestamp.json")
    assert timestamp.status_code == 200  # the import's changes went through the TUF snapshot process
