"""The PEP 458 repository of a live ``bastion serve`` under load, across restarts and a crash
(SQLite and PostgreSQL).

- Many uploads from 8 threads while timestamp.json is polled: versions only go up in one linear
  sequence, no role ever leaves a snapshot, every bin is served at the version the snapshot names,
  every target's hash and length are those of the bytes served, every root is served, and
  python-tuf's ngclient refreshes and downloads every target.
- A server whose online roles were signed for 40 minutes is restarted with a day's lifetimes: the
  refresh task run at start re-signs every bin (also those that never changed), snapshot and
  timestamp.
- A server killed (SIGKILL) while its snapshot worker holds the snapshot transaction open
  (BASTION_TUF_FAULT_PAUSE) leaves the previous complete set served; once restarted the queue
  drains and the upload becomes a signed target.
"""

from __future__ import annotations

import hashlib
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.pool import NullPool
from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp
from tuf.ngclient import Updater

from bastion.tuf.models import TufHead, TufQueue, TufTarget
from tests.distbuilder import make_wheel, upload_form
from tests.integration.conftest import (
    _RUNNING,
    BASTION,
    LiveServer,
    _free_port,
    _shutdown,
    _sqlite_data_dir,
    _wait_healthy,
    clean_env,
    describe,
)

WAIT = 90.0  # seconds for the snapshot worker to catch up (2 shared cores, PostgreSQL included)
FAULT_LINE = "TUF fault injection: pausing"


# ---------------------------------------------------------------------------------------------
# One index (data dir and database) across server restarts
# ---------------------------------------------------------------------------------------------

@dataclass
class Site:
    backend: str
    data_dir: Path
    database_url: str | None
    home: Path
    token: str = ""
    servers: list[LiveServer] = field(default_factory=list)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'bastion.db'}"

    def boot(self, **env: str) -> LiveServer:
        """``bastion serve`` with extra BASTION_* settings, in its own process group; alice and her
        token are made on the first boot."""
        port = _free_port()
        stderr_path = self.data_dir.parent / f"server-{port}.stderr.log"
        extra = {"BASTION_DATABASE_URL": self.database_url} if self.database_url else {}
        with open(stderr_path, "wb") as handle:
            proc = subprocess.Popen(
                [BASTION, "serve", "--port", str(port), "--data-dir", str(self.data_dir)],
                env=clean_env(self.home, **extra, **env), stdout=subprocess.DEVNULL, stderr=handle,
                stdin=subprocess.DEVNULL, start_new_session=True)
        server = LiveServer(backend=self.backend, port=port, data_dir=self.data_dir, database_url=self.database_url,
                            home=self.home, proc=proc, stderr_path=stderr_path)
        self.servers.append(server)
        _RUNNING.append(server)
        _wait_healthy(server)
        if not self.token:
            server.create_user("alice")
            self.token = server.create_token("alice")
        server.token = self.token
        return server

    def kill9(self, server: LiveServer) -> None:
        """SIGKILL to the server's whole process group: no shutdown code runs."""
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=30)
        assert server.proc.returncode == -signal.SIGKILL
        if server in _RUNNING:
            _RUNNING.remove(server)
        assert "Traceback" not in server.stderr_text(), server.stderr_text()

    def stop(self, server: LiveServer) -> None:
        """SIGTERM; fails the test if the server logged an unhandled exception."""
        _shutdown(server)

    def query(self, statement: Any) -> list[Any]:
        engine = create_engine(self.db_url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                return list(conn.execute(statement).all())
        finally:
            engine.dispose()

    def queue_depth(self) -> int:
        return int(self.query(select(func.count()).select_from(TufQueue))[0][0])

    def heads(self) -> dict[str, int]:
        return {row.role: row.version for row in self.query(select(TufHead.role, TufHead.version))}


@pytest.fixture
def site(backend: str, database_url: str, tmp_path: Path) -> Iterator[Site]:
    if backend == "sqlite":
        made = Site(backend, _sqlite_data_dir(database_url), None, tmp_path / "home")
    else:
        made = Site(backend, tmp_path / "pgdata", database_url, tmp_path / "home")
        made.data_dir.mkdir()
    yield made
    for server in made.servers:
        if server.proc.poll() is None:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait(timeout=30)
        if server in _RUNNING:
            _RUNNING.remove(server)


def upload(server: LiveServer, path: Path, name: str, version: str, client: httpx.Client | None = None) -> None:
    """POST /legacy/ as twine does, with alice's token."""
    own = client is None
    client = client or httpx.Client(timeout=120, trust_env=False)
    try:
        response = client.post(server.upload_url, data=upload_form(path, name, version),
                               files={"content": (path.name, path.read_bytes(), "application/octet-stream")},
                               auth=("__token__", server.token))
    finally:
        if own:
            client.close()
    assert response.status_code == 200, (path.name, response.status_code, response.text)


def get(server: LiveServer, path: str) -> httpx.Response:
    with server.http() as client:
        return client.get(path)


def metadata(server: LiveServer, name: str) -> tuple[Metadata[Any], bytes]:
    response = get(server, f"/tuf/metadata/{name}")
    assert response.status_code == 200, (name, response.status_code, response.text)
    return Metadata.from_bytes(response.content), response.content


def wait_until_drained(site: Site, server: LiveServer, *, status: bool = False) -> None:
    """Until the queue is empty and the server serves the timestamp the database holds (and, with
    ``status``, `bastion tuf status` says so too)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if site.queue_depth() == 0:
            head = site.heads()["timestamp"]
            if metadata(server, "timestamp.json")[0].signed.version == head:
                if status:
                    shown = server.cli_ok("tuf", "status")
                    assert "queue: 0 project(s) waiting" in " ".join(shown.stdout.split()), describe(shown)
                return
        time.sleep(0.2)
    pytest.fail(f"the TUF queue did not drain within {WAIT}s (depth {site.queue_depth()})\n{server.stderr_text()}")


def wait_for_log(server: LiveServer, needle: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in server.stderr_text():
            return
        assert server.proc.poll() is None, server.stderr_text()
        time.sleep(0.1)
    pytest.fail(f"{needle!r} not logged within {timeout}s:\n{server.stderr_text()}")


# ---------------------------------------------------------------------------------------------
# What a client of the live server sees
# ---------------------------------------------------------------------------------------------

def consistent_name(path: str, sha256: str) -> str:
    directory, _, base = path.rpartition("/")
    return f"{directory}/{sha256}.{base}"


@dataclass
class Served:
    root: Metadata[Root]
    timestamp: Metadata[Timestamp]
    snapshot: Metadata[Snapshot]
    targets: Metadata[Targets]
    bins: dict[str, Metadata[Targets]]

    def listed(self) -> dict[str, tuple[str, int]]:
        found: dict[str, tuple[str, int]] = {}
        for bin_md in self.bins.values():
            for path, info in bin_md.signed.targets.items():
                assert path not in found
                found[path] = (info.hashes["sha256"], info.length)
        return found


def served_set(server: LiveServer) -> Served:
    """The current set, every signature checked: root chain from 1, timestamp, the snapshot it
    names (hash and length), targets and every bin at the versions the snapshot names."""
    root, _ = metadata(server, "1.root.json")
    version = 1
    while (response := get(server, f"/tuf/metadata/{version + 1}.root.json")).status_code == 200:
        new = Metadata[Root].from_bytes(response.content)
        root.signed.verify_delegate(Root.type, new.signed_bytes, new.signatures)
        new.signed.verify_delegate(Root.type, new.signed_bytes, new.signatures)
        root, version = new, version + 1
    assert response.status_code == 404
    assert metadata(server, "root.json")[0].signed.version == version, "root.json is the newest root"
    timestamp, _ = metadata(server, "timestamp.json")
    root.signed.verify_delegate(Timestamp.type, timestamp.signed_bytes, timestamp.signatures)
    snapshot, snapshot_bytes = metadata(server, f"{timestamp.signed.snapshot_meta.version}.snapshot.json")
    timestamp.signed.snapshot_meta.verify_length_and_hashes(snapshot_bytes)
    root.signed.verify_delegate(Snapshot.type, snapshot.signed_bytes, snapshot.signatures)
    targets, _ = metadata(server, f"{snapshot.signed.meta['targets.json'].version}.targets.json")
    root.signed.verify_delegate(Targets.type, targets.signed_bytes, targets.signatures)
    assert targets.signed.delegations is not None and targets.signed.delegations.succinct_roles is not None
    succinct = targets.signed.delegations.succinct_roles
    bins = {}
    names = list(succinct.get_roles())
    assert set(snapshot.signed.meta) == {"targets.json", *(f"{n}.json" for n in names)}
    with server.http() as client:
        for name in names:
            listed_version = snapshot.signed.meta[f"{name}.json"].version
            response = client.get(f"/tuf/metadata/{listed_version}.{name}.json")
            assert response.status_code == 200, f"{listed_version}.{name}.json is not served"
            bin_md = Metadata[Targets].from_bytes(response.content)
            assert bin_md.signed.version == listed_version
            targets.signed.verify_delegate(name, bin_md.signed_bytes, bin_md.signatures)
            for path in bin_md.signed.targets:
                assert succinct.get_role_for_target(path) == name, f"{path} listed by {name}"
            bins[name] = bin_md
    return Served(root, timestamp, snapshot, targets, bins)


def check_targets_served(server: LiveServer, listed: dict[str, tuple[str, int]], *, plain: bool = True) -> None:
    """Every target's hash and length are those of the bytes served at its consistent name (and
    its plain name when nothing is waiting to be signed)."""
    with server.http() as client:
        for path, (sha256, length) in listed.items():
            for name in [consistent_name(path, sha256)] + ([path] if plain else []):
                response = client.get("/" + name)
                assert response.status_code == 200, (name, response.status_code)
                body = response.content
                assert (hashlib.sha256(body).hexdigest(), len(body)) == (sha256, length), name


def expected_targets(server: LiveServer, projects: list[str]) -> set[str]:
    """The target paths the served pages call for: both pages of every project and of the
    project list, and every file a project's JSON page lists."""
    paths = {"simple/index.html", "simple/index.json"}
    for name in projects:
        paths |= {f"simple/{name}/index.html", f"simple/{name}/index.json"}
        for entry in server.simple_json(name)["files"]:
            assert entry["url"].startswith("../../packages/"), entry["url"]
            paths.add(entry["url"].removeprefix("../../"))
    return paths


def ngclient_downloads_everything(server: LiveServer, workdir: Path, paths: list[str]) -> dict[str, bytes]:
    """python-tuf's ngclient: one refresh, then every target in ``paths`` found and downloaded."""
    root = get(server, "/tuf/metadata/1.root.json").content
    (workdir / "metadata").mkdir(parents=True)
    (workdir / "targets").mkdir(parents=True)
    updater = Updater(metadata_dir=str(workdir / "metadata"), metadata_base_url=f"{server.url}/tuf/metadata/",
                      target_dir=str(workdir / "targets"), target_base_url=f"{server.url}/", bootstrap=root)
    updater.refresh()
    got = {}
    for path in paths:
        info = updater.get_targetinfo(path)
        assert info is not None, f"ngclient finds no target {path}"
        local = updater.download_target(info, str(workdir / "targets" / hashlib.sha256(path.encode()).hexdigest()))
        got[path] = Path(local).read_bytes()
    return got


def ngclient_lacks(server: LiveServer, workdir: Path, path: str) -> None:
    root = get(server, "/tuf/metadata/1.root.json").content
    (workdir / "metadata").mkdir(parents=True)
    updater = Updater(metadata_dir=str(workdir / "metadata"), metadata_base_url=f"{server.url}/tuf/metadata/",
                      bootstrap=root)
    updater.refresh()
    assert updater.get_targetinfo(path) is None, f"{path} is a target already"


def utc_now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------------
# Concurrent uploads
# ---------------------------------------------------------------------------------------------

class TimestampPoller(threading.Thread):
    """Polls timestamp.json and records (timestamp version, snapshot version, snapshot hash, length)."""

    def __init__(self, server: LiveServer) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.seen: list[tuple[int, int, str, int | None]] = []
        self.errors: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        with self.server.http() as client:
            while not self.done.is_set():
                try:
                    response = client.get("/tuf/metadata/timestamp.json")
                except httpx.HTTPError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                if response.status_code != 200:
                    self.errors.append(f"{response.status_code} {response.text}")
                else:
                    signed = Metadata[Timestamp].from_bytes(response.content).signed
                    meta = signed.snapshot_meta
                    self.seen.append((signed.version, meta.version, (meta.hashes or {}).get("sha256", ""),
                                      meta.length))
                self.done.wait(0.02)


PROJECTS = [f"live-{letter}" for letter in "abcdef"]
VERSIONS = [f"1.{n}" for n in range(8)]


def test_concurrent_uploads_keep_every_repository_invariant(site: Site, tmp_path: Path) -> None:
    # Two worker processes: two snapshot workers race for the repository lock, and each process's
    # cached timestamp.json must follow the other's commits.
    server = site.boot(BASTION_WORKERS="2")
    wait_until_drained(site, server)
    wheels = []
    for name in PROJECTS:
        for version in VERSIONS:
            directory = tmp_path / "wheels" / f"{name}-{version}"
            directory.mkdir(parents=True)
            wheels.append((make_wheel(directory, name, version), name, version))
    # The six projects are created concurrently (their first uploads go first, to six threads),
    # and every other upload of a project waits until that project exists: two simultaneous
    # first uploads of one new name are a known upload-path race on PostgreSQL (the loser is
    # refused as "too similar to an existing project"), not what this test is about.
    work: queue.Queue[tuple[Path, str, str]] = queue.Queue()
    for item in sorted(wheels, key=lambda w: (VERSIONS.index(w[2]), w[1])):
        work.put(item)
    created = {name: threading.Event() for name in PROJECTS}
    failures: list[str] = []

    def uploader() -> None:
        with httpx.Client(timeout=120, trust_env=False) as client:
            while True:
                try:
                    path, name, version = work.get_nowait()
                except queue.Empty:
                    return
                if version != VERSIONS[0]:
                    created[name].wait(timeout=120)
                try:
                    upload(server, path, name, version, client)
                except Exception as exc:  # noqa: BLE001  (reported below, with the server's log)
                    failures.append(f"{path.name}: {type(exc).__name__}: {exc}")
                finally:
                    created[name].set()

    poller = TimestampPoller(server)
    poller.start()
    threads = [threading.Thread(target=uploader) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not failures, f"{failures}\n--- server stderr ---\n{server.stderr_text()}"
    wait_until_drained(site, server, status=True)
    time.sleep(0.1)
    poller.done.set()
    poller.join(timeout=30)
    assert not poller.errors, f"{poller.errors[:5]}\n--- server stderr ---\n{server.stderr_text()}"

    # Versions seen while uploading never went back, and timestamp and snapshot move together.
    seen = poller.seen
    assert len({v for v, *_ in seen}) >= 3, f"the poll saw too little signing: {sorted({v for v, *_ in seen})}"
    assert [v for v, *_ in seen] == sorted(v for v, *_ in seen), "a timestamp version went back"
    assert [s for _, s, *_ in seen] == sorted(s for _, s, *_ in seen), "a snapshot version went back"

    served = served_set(server)
    last = served.snapshot.signed.version
    assert served.timestamp.signed.snapshot_meta.version == last
    # Every snapshot from 1 is still served (within the GC grace), forms one linear sequence in
    # which no role ever disappears or goes back, and matches every timestamp that named it.
    previous: dict[str, int] = {}
    snapshot_bytes: dict[int, bytes] = {}
    with server.http() as client:
        for version in range(1, last + 1):
            response = client.get(f"/tuf/metadata/{version}.snapshot.json")
            assert response.status_code == 200, f"{version}.snapshot.json is not served"
            snapshot_bytes[version] = response.content
            md = Metadata[Snapshot].from_bytes(response.content)
            assert md.signed.version == version
            served.root.signed.verify_delegate(Snapshot.type, md.signed_bytes, md.signatures)
            meta = {name: info.version for name, info in md.signed.meta.items()}
            assert meta.keys() >= previous.keys(), f"snapshot {version} drops {previous.keys() - meta.keys()}"
            assert all(meta[name] >= old for name, old in previous.items()), f"snapshot {version} goes back"
            previous = meta
        assert client.get(f"/tuf/metadata/{last + 1}.snapshot.json").status_code == 404
    for _, snapshot_version, sha256, length in seen:
        body = snapshot_bytes[snapshot_version]
        assert (hashlib.sha256(body).hexdigest(), len(body)) == (sha256, length)

    listed = served.listed()
    expected = expected_targets(server, PROJECTS)
    assert set(listed) == expected, (sorted(expected - set(listed))[:5], sorted(set(listed) - expected)[:5])
    assert len([p for p in listed if p.startswith("packages/")]) == len(wheels)
    check_targets_served(server, listed)
    db_targets = {row.path: (row.sha256, row.length) for row in site.query(
        select(TufTarget.path, TufTarget.sha256, TufTarget.length))}
    assert db_targets == listed
    assert site.heads()["timestamp"] == served.timestamp.signed.version

    downloaded = ngclient_downloads_everything(server, tmp_path / "ngclient", sorted(listed))
    for path, body in downloaded.items():
        assert hashlib.sha256(body).hexdigest() == listed[path][0]
    site.stop(server)


# ---------------------------------------------------------------------------------------------
# Refresh at start
# ---------------------------------------------------------------------------------------------

def online_expiries(served: Served) -> dict[str, datetime]:
    found = {"timestamp": served.timestamp.signed.expires, "snapshot": served.snapshot.signed.expires}
    found.update({name: md.signed.expires for name, md in served.bins.items()})
    return found


def test_restart_refreshes_online_roles_that_would_expire(site: Site, tmp_path: Path) -> None:
    # (A 40-minute lifetime needs a refresh at least every 20 minutes: the server refuses to start
    # with the default hourly one.)
    short = {"BASTION_TUF_BINS_EXPIRY": "40m", "BASTION_TUF_SNAPSHOT_EXPIRY": "40m",
             "BASTION_TUF_TIMESTAMP_EXPIRY": "40m", "BASTION_TUF_REFRESH_INTERVAL": "10m"}
    first = site.boot(**short)
    wheel = make_wheel(tmp_path, "refresh-me", "1.0")
    upload(first, wheel, "refresh-me", "1.0")
    wait_until_drained(site, first)
    before = served_set(first)
    expiries = online_expiries(before)
    assert max(expiries.values()) < utc_now() + timedelta(minutes=41)
    never_changed = {name for name, md in before.bins.items() if md.signed.version == 1}
    assert len(never_changed) > 200, "most of the 256 bins never changed"
    site.stop(first)

    second = site.boot()  # a day's lifetimes (the defaults): the start-up refresh re-signs
    deadline = time.monotonic() + WAIT
    while metadata(second, "timestamp.json")[0].signed.version == before.timestamp.signed.version:
        assert time.monotonic() < deadline, f"no refresh at start:\n{second.stderr_text()}"
        time.sleep(0.2)
    wait_until_drained(site, second)
    after = served_set(second)
    soonest = min(online_expiries(after).values())
    assert soonest > utc_now() + timedelta(hours=1), f"an online role expires at {soonest}"
    assert soonest > utc_now() + timedelta(hours=23)
    for name in never_changed:
        md = after.bins[name]
        assert md.signed.version == 2 and md.signed.targets == {}, name
    assert after.snapshot.signed.version == before.snapshot.signed.version + 1
    assert after.listed() == before.listed()
    check_targets_served(second, after.listed())
    ngclient_downloads_everything(second, tmp_path / "ngclient", sorted(after.listed()))
    site.stop(second)


# ---------------------------------------------------------------------------------------------
# A crash inside the snapshot transaction
# ---------------------------------------------------------------------------------------------

def test_crash_inside_the_snapshot_transaction_keeps_the_previous_set(site: Site, tmp_path: Path) -> None:
    fault = {"BASTION_TUF_FAULT_PAUSE": "30"}
    first = site.boot()
    (tmp_path / "old").mkdir()
    old = make_wheel(tmp_path / "old", "crash-old", "1.0")
    upload(first, old, "crash-old", "1.0")
    wait_until_drained(site, first)
    signed = served_set(first)
    heads = site.heads()
    site.stop(first)

    paused = site.boot(**fault)
    (tmp_path / "new").mkdir()
    new = make_wheel(tmp_path / "new", "crash-new", "1.0")
    upload(paused, new, "crash-new", "1.0")
    wait_for_log(paused, FAULT_LINE)
    site.kill9(paused)

    # Nothing of the interrupted run was stored: same heads, the upload still queued.
    assert site.heads() == heads
    assert site.queue_depth() > 0
    assert not [p for (p,) in site.query(select(TufTarget.path)) if "crash_new" in p or "crash-new" in p]

    # A server that is again stuck inside its snapshot transaction serves the previous set whole.
    stuck = site.boot(**fault)
    wait_for_log(stuck, FAULT_LINE)
    during = served_set(stuck)
    assert during.timestamp.signed.version == signed.timestamp.signed.version
    assert during.listed() == signed.listed()
    check_targets_served(stuck, during.listed(), plain=False)
    got = ngclient_downloads_everything(stuck, tmp_path / "ngclient-during", sorted(during.listed()))
    assert set(got) == set(signed.listed())
    new_path = next(entry["url"].removeprefix("../../") for entry in stuck.simple_json("crash-new")["files"])
    ngclient_lacks(stuck, tmp_path / "ngclient-lacks", new_path)
    site.kill9(stuck)
    assert site.heads() == heads

    healthy = site.boot()
    wait_until_drained(site, healthy)
    after = served_set(healthy)
    listed = after.listed()
    assert new_path in listed
    assert set(listed) == expected_targets(healthy, ["crash-old", "crash-new"]), "nothing is left unsigned"
    check_targets_served(healthy, listed)
    got = ngclient_downloads_everything(healthy, tmp_path / "ngclient-after", sorted(listed))
    assert got[new_path] == new.read_bytes()
    assert after.timestamp.signed.version > signed.timestamp.signed.version
    site.stop(healthy)


# ---------------------------------------------------------------------------------------------
# Online key rotation while uploads go on
# ---------------------------------------------------------------------------------------------

def test_online_key_rotation_under_uploads(site: Site, tmp_path: Path) -> None:
    """`bastion tuf rotate --online` commits while uploads keep the snapshot worker busy: the
    worker switches to the new key by itself (no traceback in the log), every upload ends up signed
    with it, and a client holding root v1 follows the chain and downloads everything."""
    server = site.boot(BASTION_TUF_BINS="16")
    old_root, _ = metadata(server, "1.root.json")
    old_online = old_root.signed.roles["timestamp"].keyids[0]
    names = ["rot-a", "rot-b"]
    for name in names:  # the projects exist before the race (see the concurrency test)
        directory = tmp_path / f"{name}-first"
        directory.mkdir()
        upload(server, make_wheel(directory, name, "1.0"), name, "1.0")
    counter = iter(range(1000))
    lock = threading.Lock()
    stop = threading.Event()
    failures: list[str] = []
    uploaded: list[str] = []

    def uploader() -> None:
        with httpx.Client(timeout=120, trust_env=False) as client:
            while not stop.is_set():
                with lock:
                    n = next(counter)
                name, version = names[n % 2], f"2.{n}"
                directory = tmp_path / f"{name}-{version}"
                directory.mkdir()
                try:
                    upload(server, make_wheel(directory, name, version), name, version, client)
                    with lock:
                        uploaded.append(version)
                except Exception as exc:  # noqa: BLE001
                    failures.append(f"{name} {version}: {type(exc).__name__}: {exc}")
                    return

    threads = [threading.Thread(target=uploader) for _ in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + WAIT
    while len(uploaded) < 5 and not failures and time.monotonic() < deadline:
        time.sleep(0.05)
    offline = site.data_dir / "tuf" / "keys" / "offline"
    before_rotation = len(uploaded)
    rotated = server.cli_ok("tuf", "rotate", "--online", "--root-key", str(offline / "root-1.pem"),
                            "--root-key", str(offline / "root-2.pem"), "--targets-key", str(offline / "targets.pem"))
    assert "online key replaced" in rotated.stdout
    after_rotation = len(uploaded)
    while len(uploaded) < after_rotation + 8 and not failures and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join(timeout=300)
    assert not failures, f"{failures}\n--- server stderr ---\n{server.stderr_text()}"
    assert after_rotation > before_rotation, "no upload ran while the rotation committed"
    assert len(uploaded) >= after_rotation + 8
    wait_until_drained(site, server)

    served = served_set(server)  # every signature checked against the newest root
    assert served.root.signed.version == 2
    new_online = served.root.signed.roles["timestamp"].keyids
    assert new_online != [old_online] and old_online not in served.root.signed.keys
    for md in [served.timestamp, served.snapshot, *served.bins.values()]:
        assert list(md.signatures) == new_online
    listed = served.listed()
    assert set(listed) == expected_targets(server, names)
    assert len([p for p in listed if p.startswith("packages/")]) == len(uploaded) + len(names)
    check_targets_served(server, listed)
    ngclient_downloads_everything(server, tmp_path / "ngclient", sorted(listed))
    assert "the online key was rotated" in server.stderr_text(), "the worker reloaded the key file"
    site.stop(server)  # fails on any traceback the worker logged
