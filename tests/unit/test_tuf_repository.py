"""The PEP 458 repository side, tested hard (SQLite and PostgreSQL).

The repository functions are called directly with an explicit ``now`` so that time can be moved;
uploads, yanks and deletions go through the real upload route and services; what a client sees is
checked by walking the served metadata with python-tuf's own TrustedMetadataSet (the verification
core of ngclient: signatures, thresholds, versions, hashes, expiry) over the in-process read path,
and every target's hash and length against the bytes the index serves at its plain and at its
consistent-snapshot name. The CLI and ``bastion serve`` failures run as real subprocesses.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from securesystemslib.signer import CryptoSigner, Key, Signature, Signer
from sqlalchemy import func, select
from starlette.testclient import TestClient
from tuf.api.metadata import Metadata, Root, SuccinctRoles, Targets
from tuf.ngclient._internal.trusted_metadata_set import TrustedMetadataSet
from tuf.ngclient.config import EnvelopeType

from bastion.app import create_app
from bastion.authz import OPERATOR
from bastion.db import utcnow
from bastion.packaging import service as packaging
from bastion.services import Bastion
from bastion.settings import SettingsError, load_settings
from bastion.tuf import repository as tufrepo
from bastion.tuf import service as tufservice
from bastion.tuf.keys import TufError, load_key_file, load_signer
from bastion.tuf.models import TufHead, TufMetadata, TufPageVersion, TufQueue, TufRepository, TufTarget
from bastion.tuf.repository import Lifetimes, SignerRotated
from tests.conftest import make_user, post_upload
from tests.distbuilder import make_sdist, make_wheel, upload_form

BASTION = str(Path(sys.executable).parent / "bastion")
DAY = timedelta(days=1)
LIFETIMES = Lifetimes(root=365 * DAY, targets=365 * DAY, bins=DAY, snapshot=DAY, timestamp=DAY)
ONLINE = ("snapshot", "timestamp")


# ---------------------------------------------------------------------------------------------
# A repository with known keys, driven by hand
# ---------------------------------------------------------------------------------------------

@dataclass
class Repo:
    """An index (read path and upload route, no background worker) with a TUF repository made
    from keys the test holds, and the time it was created."""

    bastion: Bastion
    client: TestClient
    roots: list[CryptoSigner]
    targets: CryptoSigner
    online: CryptoSigner
    bins: int
    lifetimes: Lifetimes
    t0: datetime
    token: str
    tmp: Path

    def cycle(self, now: datetime | None = None, signer: Signer | None = None) -> tufrepo.CycleReport | None:
        """One snapshot run, committed, then the marker the read path watches (as run_snapshot does)."""
        with self.bastion.db.write() as session:
            report = tufrepo.snapshot_cycle(session, signer or self.online, self.lifetimes, now=now or self.t0)
        if report is not None:
            tufservice.write_marker(self.bastion, report.timestamp or 0)
        return report

    def refresh(self, now: datetime, *, lifetimes: Lifetimes | None = None,
                offline: dict[str, list[Signer]] | None = None, signer: Signer | None = None) -> tufrepo.RefreshReport:
        with self.bastion.db.write() as session:
            report = tufrepo.refresh(session, signer or self.online, lifetimes or self.lifetimes, now=now,
                                     offline_signers=offline)
        if report.timestamp is not None:
            tufservice.write_marker(self.bastion, report.timestamp)
        return report

    def rotate(self, now: datetime, **kwargs: Any) -> tufrepo.RotationReport:
        with self.bastion.db.write() as session:
            report = tufrepo.rotate(session, lifetimes=self.lifetimes, now=now, **kwargs)
        tufservice.write_marker(self.bastion, report.timestamp if report.timestamp is not None else report.root_version)
        return report

    def upload(self, name: str, version: str, *, sdist: bool = False) -> None:
        directory = self.tmp / f"{name}-{version}-{'sdist' if sdist else 'wheel'}"
        directory.mkdir(parents=True, exist_ok=True)
        path = (make_sdist if sdist else make_wheel)(directory, name, version)
        response = post_upload(self.client, self.token, path, upload_form(path, name, version))
        assert response.status_code == 200, response.text

    def heads(self) -> dict[str, int]:
        with self.bastion.db.read() as session:
            return tufrepo.head_versions(session)

    def targets_table(self) -> dict[str, tuple[str, int]]:
        with self.bastion.db.read() as session:
            return {row.path: (row.sha256, row.length) for row in session.execute(select(TufTarget.path, TufTarget.sha256, TufTarget.length))}

    def queue_depth(self) -> int:
        with self.bastion.db.read() as session:
            return tufrepo.queue_depth(session)[0]

    def stored(self) -> dict[str, Any]:
        """Everything the TUF repository holds, to show that a refused operation changed nothing."""
        with self.bastion.db.read() as session:
            return {
                "metadata": sorted((r.role, r.version, r.superseded is None) for r in session.execute(
                    select(TufMetadata.role, TufMetadata.version, TufMetadata.superseded))),
                "heads": sorted(tuple(r) for r in session.execute(select(TufHead.role, TufHead.version))),
                "targets": sorted(tuple(r) for r in session.execute(select(TufTarget.path, TufTarget.sha256))),
                "pages": sorted(tuple(r) for r in session.execute(
                    select(TufPageVersion.path, TufPageVersion.sha256, TufPageVersion.superseded))),
                "queue": sorted(tuple(r) for r in session.execute(select(TufQueue.id, TufQueue.name))),
                "repository": [(r.bins, r.suspended) for r in session.execute(select(TufRepository)).scalars()],
            }

    def body(self, role: str, version: int) -> bytes:
        with self.bastion.db.read() as session:
            body = session.execute(select(TufMetadata.body).where(
                TufMetadata.role == role, TufMetadata.version == version)).scalar()
        assert body is not None, f"{version}.{role}.json is not stored"
        return body

    def head(self, role: str) -> Metadata[Any]:
        return Metadata.from_bytes(self.body(role, self.heads()[role]))

    @property
    def root1(self) -> bytes:
        return self.body("root", 1)


def new_keys(n_roots: int = 3) -> tuple[list[CryptoSigner], CryptoSigner, CryptoSigner]:
    return ([CryptoSigner.generate_ed25519() for _ in range(n_roots)], CryptoSigner.generate_ed25519(),
            CryptoSigner.generate_ed25519())


def now_s() -> datetime:
    return utcnow().replace(microsecond=0)


@pytest.fixture
def make_repo(bastion: Bastion, tmp_path: Path) -> Iterator[Callable[..., Repo]]:
    """make_repo(bins=16, lifetimes=LIFETIMES, drain=True): a repository created now (t0)."""
    clients: list[TestClient] = []

    def build(bins: int = 16, lifetimes: Lifetimes = LIFETIMES, drain: bool = True) -> Repo:
        # No `with`: the app's lifespan (and so the snapshot worker) does not run; the test signs.
        client = TestClient(create_app(bastion=bastion), base_url="http://testserver")
        clients.append(client)
        roots, targets, online = new_keys()
        t0 = now_s()
        with bastion.db.write() as session:
            tufrepo.initialize(session, root_signers=roots, root_threshold=2, targets_signer=targets,
                               online_signer=online, bins=bins, lifetimes=lifetimes, development_keys=False, now=t0)
        repo = Repo(bastion, client, roots, targets, online, bins, lifetimes, t0, make_user(bastion, "alice"),
                    tmp_path / "dists")
        if drain:
            repo.cycle(t0)
        return repo

    yield build
    for client in clients:
        client.close()


# ---------------------------------------------------------------------------------------------
# What a client sees
# ---------------------------------------------------------------------------------------------

@dataclass
class Walk:
    trusted: TrustedMetadataSet
    bins: dict[str, Targets]
    succinct: SuccinctRoles

    def listed(self) -> dict[str, tuple[str, int, str]]:
        """Every target of every bin: path -> (sha256, length, bin)."""
        found: dict[str, tuple[str, int, str]] = {}
        for name, bin_role in self.bins.items():
            for path, info in bin_role.targets.items():
                assert path not in found, f"{path} listed by two bins"
                found[path] = (info.hashes["sha256"], info.length, name)
        return found


def fetch(client: TestClient, path: str) -> bytes | None:
    response = client.get(path)
    if response.status_code == 404:
        return None
    assert response.status_code == 200, (path, response.status_code, response.text)
    return response.content


def client_walk(client: TestClient, trusted_root: bytes) -> Walk:
    """The top-level walk of the TUF client workflow over HTTP: root chain from ``trusted_root``,
    timestamp.json, the snapshot and targets it names, then every bin at the snapshot's version."""
    trusted = TrustedMetadataSet(trusted_root, EnvelopeType.METADATA)
    while (data := fetch(client, f"/tuf/metadata/{trusted.root.version + 1}.root.json")) is not None:
        trusted.update_root(data)
    timestamp = fetch(client, "/tuf/metadata/timestamp.json")
    assert timestamp is not None
    trusted.update_timestamp(timestamp)
    snapshot = fetch(client, f"/tuf/metadata/{trusted.timestamp.snapshot_meta.version}.snapshot.json")
    assert snapshot is not None, "the snapshot timestamp.json names is not served"
    trusted.update_snapshot(snapshot)
    targets = fetch(client, f"/tuf/metadata/{trusted.snapshot.meta['targets.json'].version}.targets.json")
    assert targets is not None
    trusted.update_targets(targets)
    assert trusted.targets.delegations is not None
    succinct = trusted.targets.delegations.succinct_roles
    assert succinct is not None
    bins = {}
    for name in succinct.get_roles():
        meta = trusted.snapshot.meta.get(f"{name}.json")
        assert meta is not None, f"snapshot v{trusted.snapshot.version} does not list {name}"
        data = fetch(client, f"/tuf/metadata/{meta.version}.{name}.json")
        assert data is not None, f"{meta.version}.{name}.json is not served"
        bins[name] = trusted.update_delegated_targets(data, name, Targets.type)
    return Walk(trusted, bins, succinct)


def consistent_name(path: str, sha256: str) -> str:
    directory, _, base = path.rpartition("/")
    return f"{directory}/{sha256}.{base}"


def check_served(repo: Repo, walk: Walk, *, plain: bool = True) -> dict[str, tuple[str, int, str]]:
    """Every listed target is in the bin its path hashes to and is served with its hash and length
    at its consistent name (and, when nothing is pending, at its plain name); the targets table
    is exactly what the bins list."""
    listed = walk.listed()
    for path, (sha256, length, name) in listed.items():
        assert walk.succinct.get_role_for_target(path) == name, f"{path} is in {name}"
        names = [consistent_name(path, sha256)] + ([path] if plain else [])
        for served_name in names:
            data = fetch(repo.client, "/" + served_name)
            assert data is not None, f"target {served_name} is not served"
            assert (hashlib.sha256(data).hexdigest(), len(data)) == (sha256, length), served_name
    assert {p: (s, n) for p, (s, n, _) in listed.items()} == repo.targets_table()
    return listed


def expected_targets(repo: Repo, projects: list[str]) -> dict[str, tuple[str, int]]:
    """Target path -> (sha256, length) of the bytes the index serves now for ``projects``: their
    two pages, every file their JSON page lists, and the project list's two pages."""
    wanted: dict[str, tuple[str, int]] = {}

    def add(path: str) -> bytes:
        data = fetch(repo.client, "/" + path)
        assert data is not None, path
        wanted[path] = (hashlib.sha256(data).hexdigest(), len(data))
        return data

    add("simple/index.html")
    add("simple/index.json")
    for name in projects:
        add(f"simple/{name}/index.html")
        page = repo.client.get(f"/simple/{name}/index.json").json()
        add(f"simple/{name}/index.json")
        for entry in page["files"]:
            path = entry["url"].removeprefix("../../")
            add(path)
            assert wanted[path] == (entry["hashes"]["sha256"], entry["size"])
    return wanted


def succinct_for(repo: Repo) -> SuccinctRoles:
    targets = repo.head("targets").signed
    assert targets.delegations is not None and targets.delegations.succinct_roles is not None
    return targets.delegations.succinct_roles


def bumped(before: dict[str, int], after: dict[str, int]) -> set[str]:
    return {role for role, version in after.items() if version != before.get(role)}


# ---------------------------------------------------------------------------------------------
# Creation
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bins", [16, 256, 1024])
def test_initialize_signs_version_1_of_every_role(make_repo: Callable[..., Repo], bins: int) -> None:
    repo = make_repo(bins=bins, drain=False)
    t0 = repo.t0
    heads = repo.heads()
    width = (bins.bit_length() - 1 + 3) // 4
    bin_names = [f"bins-{n:0{width}x}" for n in range(bins)]
    assert set(heads) == {"root", "targets", "snapshot", "timestamp", *bin_names}
    assert set(heads.values()) == {1}

    root = Metadata[Root].from_bytes(repo.root1)
    assert root.signed.consistent_snapshot is True
    assert root.signed.roles["root"].threshold == 2
    assert set(root.signed.roles["root"].keyids) == {s.public_key.keyid for s in repo.roots}
    assert len(root.signatures) == 3
    root.signed.verify_delegate("root", root.signed_bytes, root.signatures)
    assert root.signed.roles["targets"].keyids == [repo.targets.public_key.keyid]
    for role in ONLINE:
        assert root.signed.roles[role].keyids == [repo.online.public_key.keyid]
    assert root.signed.expires == t0 + LIFETIMES.root

    targets = repo.head("targets")
    root.signed.verify_delegate("targets", targets.signed_bytes, targets.signatures)
    assert targets.signed.expires == t0 + LIFETIMES.targets
    delegations = targets.signed.delegations
    assert delegations is not None and delegations.succinct_roles is not None
    assert set(delegations.keys) == {repo.online.public_key.keyid}
    assert delegations.succinct_roles.bit_length == bins.bit_length() - 1
    assert delegations.succinct_roles.name_prefix == "bins"
    assert list(delegations.succinct_roles.get_roles()) == bin_names

    snapshot = repo.head("snapshot")
    root.signed.verify_delegate("snapshot", snapshot.signed_bytes, snapshot.signatures)
    assert {name: meta.version for name, meta in snapshot.signed.meta.items()} == {
        "targets.json": 1, **{f"{name}.json": 1 for name in bin_names}}
    timestamp = repo.head("timestamp")
    root.signed.verify_delegate("timestamp", timestamp.signed_bytes, timestamp.signatures)
    snapshot_bytes = repo.body("snapshot", 1)
    assert timestamp.signed.snapshot_meta.version == 1
    assert timestamp.signed.snapshot_meta.length == len(snapshot_bytes)
    assert timestamp.signed.snapshot_meta.hashes == {"sha256": hashlib.sha256(snapshot_bytes).hexdigest()}
    for name in bin_names:
        md = Metadata[Targets].from_bytes(repo.body(name, 1))
        targets.signed.verify_delegate(name, md.signed_bytes, md.signatures)
        assert md.signed.targets == {} and md.signed.expires == t0 + LIFETIMES.bins

    if bins <= 256:  # what a client gets over HTTP verifies too (1024 bins: 1024 requests, left out)
        walk = client_walk(repo.client, repo.root1)
        assert len(walk.bins) == bins and walk.trusted.timestamp.version == 1

    before = repo.stored()
    with pytest.raises(TufError) as refused, repo.bastion.db.write() as session:
        tufrepo.initialize(session, root_signers=repo.roots, root_threshold=2, targets_signer=repo.targets,
                           online_signer=repo.online, bins=bins, lifetimes=LIFETIMES, development_keys=False)
    assert str(refused.value) == ("this index already has a TUF repository: use `bastion tuf rotate` to change keys")
    assert repo.stored() == before


def test_initialize_refuses_an_impossible_threshold(bastion: Bastion) -> None:
    roots, targets, online = new_keys()
    for threshold in (0, 4):
        with pytest.raises(TufError, match=f"root threshold {threshold} is impossible with 3 root keys"), \
                bastion.db.write() as session:
            tufrepo.initialize(session, root_signers=roots, root_threshold=threshold, targets_signer=targets,
                               online_signer=online, bins=16, lifetimes=LIFETIMES, development_keys=False)
        with bastion.db.read() as session:
            assert tufrepo.repository_row(session) is None
            assert session.execute(select(func.count()).select_from(TufMetadata)).scalar() == 0


# ---------------------------------------------------------------------------------------------
# The snapshot process
# ---------------------------------------------------------------------------------------------

def test_uploads_become_targets_in_one_snapshot(make_repo: Callable[..., Repo]) -> None:
    repo = make_repo()
    assert repo.cycle() is None  # nothing queued: nothing signed
    before = repo.heads()
    repo.upload("alpha", "1.0")
    repo.upload("alpha", "1.0", sdist=True)
    repo.upload("beta", "0.1")
    assert repo.queue_depth() > 0
    assert repo.heads() == before, "an upload signs nothing by itself"

    report = repo.cycle(repo.t0 + timedelta(minutes=1))
    assert report is not None
    after = repo.heads()
    assert (after["snapshot"], after["timestamp"]) == (before["snapshot"] + 1, before["timestamp"] + 1)
    assert (report.snapshot, report.timestamp) == (after["snapshot"], after["timestamp"])
    assert repo.queue_depth() == 0
    expected = expected_targets(repo, ["alpha", "beta"])
    assert len([p for p in expected if p.startswith("packages/")]) == 3
    assert repo.targets_table() == expected
    succinct = succinct_for(repo)
    touched = {succinct.get_role_for_target(path) for path in expected}
    assert bumped(before, after) == touched | {"snapshot", "timestamp"}, "only the touched bins are re-signed"
    assert set(report.bins) == touched and all(after[name] == before[name] + 1 for name in touched)
    assert report.added == len(expected) and report.removed == 0
    walk = client_walk(repo.client, repo.root1)
    assert walk.trusted.timestamp.version == after["timestamp"]
    check_served(repo, walk)

    assert repo.cycle(repo.t0 + timedelta(minutes=2)) is None
    assert repo.heads() == after

    # A new version: only the bins of targets whose bytes changed or that appeared get new versions.
    old_targets = repo.targets_table()
    repo.upload("alpha", "2.0")
    repo.cycle(repo.t0 + timedelta(minutes=3))
    new_targets = repo.targets_table()
    assert new_targets == expected_targets(repo, ["alpha", "beta"])
    changed = {p for p in new_targets.keys() | old_targets.keys() if new_targets.get(p) != old_targets.get(p)}
    assert any(p.endswith("alpha-2.0-py3-none-any.whl") for p in changed)
    assert not any("beta" in p for p in changed)
    final = repo.heads()
    assert bumped(after, final) == {succinct.get_role_for_target(p) for p in changed} | {"snapshot", "timestamp"}
    assert (final["snapshot"], final["timestamp"]) == (after["snapshot"] + 1, after["timestamp"] + 1)
    check_served(repo, client_walk(repo.client, repo.root1))


def test_yank_changes_the_pages_and_keeps_the_file(make_repo: Callable[..., Repo]) -> None:
    repo = make_repo()
    repo.upload("gamma", "1.0")
    repo.upload("gamma", "2.0")
    repo.cycle()
    before = repo.targets_table()
    with repo.bastion.db.write() as session:
        serial = packaging.set_yanked(session, "gamma", "1.0", yanked=True, reason="broken", principal=OPERATOR)
    repo.bastion.notify_change(serial)
    assert repo.cycle(repo.t0 + timedelta(minutes=1)) is not None
    after = repo.targets_table()
    assert after == expected_targets(repo, ["gamma"])
    files = {p for p in before if p.startswith("packages/")}
    assert len(files) == 2 and {p: after[p] for p in files} == {p: before[p] for p in files}
    pages = {"simple/gamma/index.html", "simple/gamma/index.json"}
    assert all(after[p] != before[p] for p in pages), "the yank shows on both pages"
    assert repo.client.get("/simple/gamma/index.json").json()["files"][0]["yanked"] == "broken"
    check_served(repo, client_walk(repo.client, repo.root1))
    for page in pages:  # the previous signed version stays served at its consistent name
        old = fetch(repo.client, "/" + consistent_name(page, before[page][0]))
        assert old is not None and hashlib.sha256(old).hexdigest() == before[page][0]


def test_project_deletion_removes_its_targets_in_the_next_snapshot(make_repo: Callable[..., Repo]) -> None:
    repo = make_repo()
    repo.upload("doomed", "1.0")
    repo.upload("doomed", "1.0", sdist=True)
    repo.upload("keeper", "1.0")
    t1 = repo.t0 + timedelta(minutes=1)
    repo.cycle(t1)
    before = repo.targets_table()
    doomed = {p: v for p, v in before.items() if "doomed" in p}
    assert len(doomed) == 4
    with repo.bastion.db.write() as session:
        deletion = packaging.delete_project(session, repo.bastion, "doomed", principal=OPERATOR)
    packaging.delete_blobs(repo.bastion, deletion.blob_paths)
    repo.bastion.notify_change(deletion.serial)
    t2 = repo.t0 + timedelta(minutes=2)
    report = repo.cycle(t2)
    assert report is not None and report.removed == 4
    after = repo.targets_table()
    assert not any("doomed" in p for p in after)
    assert {p: v for p, v in after.items() if "keeper" in p} == {p: v for p, v in before.items() if "keeper" in p}
    assert after == expected_targets(repo, ["keeper"])
    walk = client_walk(repo.client, repo.root1)
    assert not any("doomed" in p for p in check_served(repo, walk))

    # The signed pages of the deleted project stay at their consistent names until collected.
    old_pages = {p: v for p, v in doomed.items() if p.startswith("simple/")}
    for page, (sha256, _) in old_pages.items():
        data = fetch(repo.client, "/" + consistent_name(page, sha256))
        assert data is not None and hashlib.sha256(data).hexdigest() == sha256
    grace = timedelta(hours=1)
    with repo.bastion.db.write() as session:
        assert tufrepo.collect_garbage(session, grace, now=t2 + grace - timedelta(seconds=1))[1] == 0
    with repo.bastion.db.write() as session:
        _, pages_removed = tufrepo.collect_garbage(session, grace, now=t2 + grace + timedelta(seconds=1))
    assert pages_removed >= len(old_pages)
    fresh = TestClient(create_app(bastion=repo.bastion), base_url="http://testserver")  # a process with no cache
    for page, (sha256, _) in old_pages.items():
        assert fresh.get("/" + consistent_name(page, sha256)).status_code == 404
    check_served(repo, client_walk(fresh, repo.root1))
    fresh.close()


# ---------------------------------------------------------------------------------------------
# Keeping online metadata fresh
# ---------------------------------------------------------------------------------------------

def online_expiries(repo: Repo) -> dict[str, datetime]:
    with repo.bastion.db.read() as session:
        return {row.role: row.expires for row in session.execute(select(TufHead.role, TufHead.expires))
                if row.role in ONLINE or row.role.startswith("bins-")}


def test_refresh_resigns_every_online_role_past_half_its_life(make_repo: Callable[..., Repo]) -> None:
    repo = make_repo()
    repo.upload("delta", "1.0")
    repo.cycle()
    t0 = repo.t0
    heads = repo.heads()
    untouched = {name for name, version in heads.items() if name.startswith("bins-") and version == 1}
    assert untouched, "some bins never changed"

    early = repo.refresh(t0 + timedelta(hours=11))  # not yet at half of a day
    assert (early.bins, early.snapshot, early.timestamp, early.warnings) == (0, None, None, [])
    assert repo.heads() == heads

    late = t0 + timedelta(hours=13)
    report = repo.refresh(late)
    assert report.bins == 16 and report.warnings == []
    after = repo.heads()
    assert bumped(heads, after) == {*(n for n in heads if n.startswith("bins-")), "snapshot", "timestamp"}
    assert (report.snapshot, report.timestamp) == (heads["snapshot"] + 1, heads["timestamp"] + 1)
    expiries = online_expiries(repo)
    assert set(expiries.values()) == {late + DAY}, "every online role, changed or not, is fresh"
    assert min(expiries.values()) - late > timedelta(hours=1)
    for name in untouched:
        md = Metadata[Targets].from_bytes(repo.body(name, 2))
        assert md.signed.targets == {} and md.signed.expires == late + DAY
    check_served(repo, client_walk(repo.client, repo.root1))
    again = repo.refresh(late + timedelta(minutes=5))
    assert (again.bins, again.snapshot) == (0, None) and repo.heads() == after

    # Down for three days: everything had expired; one refresh makes the whole set valid again.
    down = t0 + timedelta(days=3)
    assert repo.refresh(down).bins == 16
    assert set(online_expiries(repo).values()) == {down + DAY}
    check_served(repo, client_walk(repo.client, repo.root1))

    # A short timestamp lifetime: only snapshot and timestamp are re-signed, not the bins.
    short = Lifetimes(root=LIFETIMES.root, targets=LIFETIMES.targets, bins=DAY, snapshot=DAY,
                      timestamp=timedelta(hours=2))
    assert repo.refresh(down + timedelta(hours=13), lifetimes=short).bins == 16
    assert repo.head("timestamp").signed.expires == down + timedelta(hours=15)
    before_short = repo.heads()
    assert repo.refresh(down + timedelta(hours=13, minutes=59), lifetimes=short).timestamp is None
    report = repo.refresh(down + timedelta(hours=14, minutes=1), lifetimes=short)
    assert report.bins == 0 and report.timestamp == before_short["timestamp"] + 1
    assert bumped(before_short, repo.heads()) == {"snapshot", "timestamp"}


def test_refresh_warns_about_offline_roles_and_resigns_them_with_their_keys(make_repo: Callable[..., Repo]) -> None:
    short = Lifetimes(root=timedelta(days=20), targets=timedelta(days=20), bins=DAY, snapshot=DAY, timestamp=DAY)
    repo = make_repo(lifetimes=short)
    report = repo.refresh(repo.t0 + timedelta(minutes=1))
    assert len(report.warnings) == 2
    assert report.warnings[0].startswith("root metadata expires ") and "offline keys" in report.warnings[0]
    assert report.warnings[1].startswith("targets metadata expires ")
    assert all("bastion tuf rotate" in w for w in report.warnings)
    assert repo.heads()["root"] == 1 and repo.heads()["targets"] == 1

    later = repo.t0 + timedelta(days=15)
    before = repo.heads()
    report = repo.refresh(later, offline={"root": list(repo.roots), "targets": [repo.targets]})
    assert report.warnings == []
    after = repo.heads()
    assert (after["root"], after["targets"]) == (2, 2)
    root2 = repo.head("root")
    assert root2.signed.expires == later + timedelta(days=20)
    Metadata[Root].from_bytes(repo.root1).signed.verify_delegate("root", root2.signed_bytes, root2.signatures)
    assert repo.head("snapshot").signed.meta["targets.json"].version == 2
    assert after["snapshot"] == before["snapshot"] + 1
    walk = client_walk(repo.client, repo.root1)  # the client follows the root chain 1 -> 2
    assert walk.trusted.root.version == 2 and walk.trusted.targets.version == 2


def test_refresh_resigns_offline_roles_at_half_life_not_at_every_run(make_repo: Callable[..., Repo]) -> None:
    """With the keys at hand (a development key set), root and targets are re-signed once they
    have used half their lifetime, not at every hourly run: every root version is kept for ever
    and walked by clients, so a new root per run would pile up without end."""
    short = Lifetimes(root=timedelta(days=20), targets=timedelta(days=20), bins=DAY, snapshot=DAY, timestamp=DAY)
    repo = make_repo(lifetimes=short)
    offline: dict[str, list[Signer]] = {"root": list(repo.roots), "targets": [repo.targets]}
    for hours in range(1, 6):  # five hourly runs, well within the first half of 20 days
        report = repo.refresh(repo.t0 + timedelta(hours=hours), offline=offline)
        assert report.warnings == []
    assert (repo.heads()["root"], repo.heads()["targets"]) == (1, 1)
    repo.refresh(repo.t0 + timedelta(days=10, hours=1), offline=offline)
    assert (repo.heads()["root"], repo.heads()["targets"]) == (2, 2)
    repo.refresh(repo.t0 + timedelta(days=10, hours=2), offline=offline)
    assert (repo.heads()["root"], repo.heads()["targets"]) == (2, 2)


def test_a_root_resigned_by_the_refresh_task_reaches_a_running_server(data_dir: Path, database_url: str) -> None:
    """The development key set's root re-signed by run_refresh (no new timestamp needed) must be
    what a running server answers at root.json."""
    created = _bastion(data_dir, database_url, tuf_bins=16, tuf_root_expiry="20d")
    try:
        assert tufservice.prepare(created, announce=False) is not None
    finally:
        created.close()
    running = _bastion(data_dir, database_url, tuf_bins=16, tuf_root_expiry="60d")
    client = TestClient(create_app(bastion=running), base_url="http://testserver")
    try:
        signer = tufservice.prepare(running, announce=False)
        assert signer is not None
        assert client.get("/tuf/metadata/root.json").json()["signed"]["version"] == 1
        report = tufservice.run_refresh(running, signer)  # 20 days left of 60: past half, re-signed
        assert report.timestamp is None, "only root needed signing"
        with running.db.read() as session:
            assert tufrepo.head_versions(session, ["root"]) == {"root": 2}
        assert client.get("/tuf/metadata/root.json").json()["signed"]["version"] == 2
    finally:
        client.close()
        running.close()


# ---------------------------------------------------------------------------------------------
# Garbage
# ---------------------------------------------------------------------------------------------

def assert_current_set_complete(repo: Repo) -> None:
    """Every head is stored, every version the current snapshot names is stored, every root from
    1 up is stored, and every signed page the bins list is served at its consistent name."""
    heads = repo.heads()
    for role, version in heads.items():
        repo.body(role, version)
    for name, meta in repo.head("snapshot").signed.meta.items():
        repo.body(name[: -len(".json")], meta.version)
    for version in range(1, heads["root"] + 1):
        repo.body("root", version)
    fresh = TestClient(create_app(bastion=repo.bastion), base_url="http://testserver")
    try:
        check_served(repo, client_walk(fresh, repo.root1))
    finally:
        fresh.close()


def test_a_plan_made_stale_by_another_run_stores_nothing(make_repo: Callable[..., Repo]) -> None:
    """The server plans and signs under a read, then stores in a short write: two runs planned
    from the same state (two processes) cannot both be stored; the loser stores nothing and its
    queue entries stay for the next run."""
    repo = make_repo()
    repo.upload("stale-a", "1.0")
    with repo.bastion.db.read() as session:
        first = tufrepo.plan_snapshot(session, repo.online, repo.lifetimes, now=repo.t0)
        second = tufrepo.plan_snapshot(session, repo.online, repo.lifetimes, now=repo.t0)
    assert first is not None and second is not None
    assert first.base_timestamp == second.base_timestamp
    with repo.bastion.db.write() as session:
        tufrepo.apply_snapshot(session, first, now=repo.t0)
    after_first = repo.stored()
    with pytest.raises(tufrepo.PlanStale), repo.bastion.db.write() as session:
        tufrepo.apply_snapshot(session, second, now=repo.t0)
    assert repo.stored() == after_first
    repo.upload("stale-a", "2.0")  # queued after both plans: signed by the next run
    report = repo.cycle()
    assert report is not None and report.timestamp == first.report.timestamp + 1
    assert_current_set_complete(repo)


def test_a_run_committed_while_another_plans_makes_that_plan_stale(make_repo: Callable[..., Repo],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Two server processes: one run commits while the other is half-way through planning. On
    PostgreSQL the planner's later reads see that commit (READ COMMITTED), so its plan mixes two
    states; storing it must be refused as stale, not fail on a duplicate version or store it."""
    repo = make_repo()
    repo.upload("mid-a", "1.0")
    original = tufrepo._listed_targets

    def another_run_commits_first(session: Any, bins: Any) -> Any:
        monkeypatch.setattr(tufrepo, "_listed_targets", original)
        repo.upload("mid-b", "1.0")
        assert repo.cycle() is not None
        return original(session, bins)

    monkeypatch.setattr(tufrepo, "_listed_targets", another_run_commits_first)
    with repo.bastion.db.read() as session:
        plan = tufrepo.plan_snapshot(session, repo.online, repo.lifetimes, now=repo.t0)
    assert plan is not None
    stored = repo.stored()
    with pytest.raises(tufrepo.PlanStale), repo.bastion.db.write() as session:
        tufrepo.apply_snapshot(session, plan, now=repo.t0)
    assert repo.stored() == stored
    assert repo.cycle() is None  # the other run signed both uploads
    assert_current_set_complete(repo)


def test_collect_garbage_after_the_grace_period_only(make_repo: Callable[..., Repo]) -> None:
    repo = make_repo()
    t0 = repo.t0
    for minute, name in enumerate(["eps", "zeta", "eta"], start=1):
        repo.upload(name, "1.0")
        repo.cycle(t0 + timedelta(minutes=minute))
        if minute == 2:
            repo.rotate(t0 + timedelta(minutes=2), root_signers=repo.roots[:2],
                        new_root_signers=[CryptoSigner.generate_ed25519() for _ in range(3)])
    with repo.bastion.db.read() as session:
        rows = session.execute(select(TufMetadata.role, TufMetadata.version, TufMetadata.superseded)).all()
        pages = session.execute(select(TufPageVersion.path, TufPageVersion.sha256, TufPageVersion.superseded)).all()
    assert any(r.role == "root" and r.superseded is not None for r in rows)
    assert any(r.superseded is not None for r in pages)
    grace = timedelta(hours=1)

    before = repo.stored()
    with repo.bastion.db.write() as session:
        assert tufrepo.collect_garbage(session, grace, now=t0 + timedelta(minutes=30)) == (0, 0)
    assert repo.stored() == before

    cutoff_now = t0 + grace + timedelta(minutes=2)  # removes what was superseded before t0+2m
    with repo.bastion.db.write() as session:
        removed = tufrepo.collect_garbage(session, grace, now=cutoff_now)
    with repo.bastion.db.read() as session:
        kept = {(r.role, r.version) for r in session.execute(select(TufMetadata.role, TufMetadata.version))}
        kept_pages = {(r.path, r.sha256) for r in session.execute(select(TufPageVersion.path, TufPageVersion.sha256))}
    cutoff = cutoff_now - grace
    gone = {(r.role, r.version) for r in rows if r.role != "root" and r.superseded is not None and r.superseded < cutoff}
    assert gone and kept == {(r.role, r.version) for r in rows} - gone
    gone_pages = {(r.path, r.sha256) for r in pages if r.superseded is not None and r.superseded < cutoff}
    assert kept_pages == {(r.path, r.sha256) for r in pages} - gone_pages
    assert removed == (len(gone), len(gone_pages))
    assert_current_set_complete(repo)

    # In batches (as the server collects, in short transactions): at most `limit` of each per call.
    batches = []
    while True:
        with repo.bastion.db.write() as session:
            batches.append(tufrepo.collect_garbage(session, grace, now=t0 + DAY, limit=3))
        if max(batches[-1]) < 3:
            break
    assert len(batches) > 1 and all(max(b) <= 3 for b in batches)
    with repo.bastion.db.write() as session:
        assert tufrepo.collect_garbage(session, grace, now=t0 + DAY) == (0, 0)
    with repo.bastion.db.read() as session:
        left = session.execute(select(TufMetadata.role, TufMetadata.version, TufMetadata.superseded)).all()
    assert {(r.role, r.version) for r in left if r.superseded is not None} == {("root", 1)}, \
        "only superseded roots are kept for ever"
    assert_current_set_complete(repo)


# ---------------------------------------------------------------------------------------------
# Key rotation
# ---------------------------------------------------------------------------------------------

def test_online_key_rotation(make_repo: Callable[..., Repo]) -> None:
    repo = make_repo()
    repo.upload("theta", "1.0")
    repo.cycle()
    targets_before = repo.targets_table()
    heads = repo.heads()
    old, new = repo.online, CryptoSigner.generate_ed25519()
    t1 = repo.t0 + timedelta(minutes=5)
    report = repo.rotate(t1, root_signers=repo.roots[:2], targets_signer=repo.targets, new_online_signer=new)
    assert (report.root_version, report.targets_version, report.bins) == (2, 2, 16)
    after = repo.heads()
    assert bumped(heads, after) == set(heads), "root, targets, every bin, snapshot and timestamp"

    root1 = Metadata[Root].from_bytes(repo.root1).signed
    root2 = repo.head("root")
    root1.verify_delegate("root", root2.signed_bytes, root2.signatures)  # the old root trusts it
    root2.signed.verify_delegate("root", root2.signed_bytes, root2.signatures)  # and so does it
    for role in ONLINE:
        assert root2.signed.roles[role].keyids == [new.public_key.keyid]
    assert old.public_key.keyid not in root2.signed.keys
    targets2 = repo.head("targets")
    root2.signed.verify_delegate("targets", targets2.signed_bytes, targets2.signatures)
    assert targets2.signed.delegations is not None and set(targets2.signed.delegations.keys) == {new.public_key.keyid}
    for role in ONLINE:
        md = repo.head(role)
        root2.signed.verify_delegate(role, md.signed_bytes, md.signatures)
    for name in (n for n in after if n.startswith("bins-")):
        md = repo.head(name)
        targets2.signed.verify_delegate(name, md.signed_bytes, md.signatures)
        assert [s.keyid for s in md.signatures.values()] == [new.public_key.keyid]
    assert repo.targets_table() == targets_before
    check_served(repo, client_walk(repo.client, repo.root1))

    # The old online key is refused from now on, before anything is written.
    repo.upload("theta", "2.0")
    stored = repo.stored()
    with pytest.raises(SignerRotated, match="configure the rotated key"):
        repo.cycle(t1, signer=old)
    with pytest.raises(SignerRotated):
        repo.refresh(t1 + timedelta(hours=13), signer=old)
    assert repo.stored() == stored
    assert repo.cycle(t1, signer=new) is not None
    repo.online = new
    check_served(repo, client_walk(repo.client, repo.root1))


def test_root_key_rotation_with_a_new_threshold(make_repo: Callable[..., Repo]) -> None:
    repo = make_repo()
    new_roots = [CryptoSigner.generate_ed25519() for _ in range(5)]
    t1 = repo.t0 + timedelta(minutes=1)
    heads = repo.heads()
    report = repo.rotate(t1, root_signers=repo.roots[:2], new_root_signers=new_roots, new_root_threshold=3)
    assert report.root_version == 2 and report.timestamp is None
    assert bumped(heads, repo.heads()) == {"root"}
    root2 = repo.head("root")
    assert set(root2.signed.roles["root"].keyids) == {s.public_key.keyid for s in new_roots}
    assert root2.signed.roles["root"].threshold == 3
    assert not {s.public_key.keyid for s in repo.roots} & set(root2.signed.keys)
    Metadata[Root].from_bytes(repo.root1).signed.verify_delegate("root", root2.signed_bytes, root2.signatures)
    root2.signed.verify_delegate("root", root2.signed_bytes, root2.signatures)

    stored = repo.stored()
    with pytest.raises(TufError, match=r"^rotation needs 3 of the current root keys; 0 of those given are root keys"):
        repo.rotate(t1, root_signers=repo.roots, new_root_signers=[CryptoSigner.generate_ed25519()])
    with pytest.raises(TufError, match=r"^rotation needs 3 of the current root keys; 2 of those given"):
        repo.rotate(t1, root_signers=new_roots[:2], new_root_signers=[CryptoSigner.generate_ed25519()])
    assert repo.stored() == stored
    report = repo.rotate(t1, root_signers=new_roots[2:], new_root_signers=new_roots[:3])
    root3 = repo.head("root")
    assert report.root_version == 3 and root3.signed.roles["root"].threshold == 3
    walk = client_walk(repo.client, repo.root1)  # 1 -> 2 -> 3
    assert walk.trusted.root.version == 3


def test_rotation_refusals_store_nothing(make_repo: Callable[..., Repo]) -> None:
    repo = make_repo()
    stranger = CryptoSigner.generate_ed25519()
    stored = repo.stored()
    refusals: list[tuple[dict[str, Any], str]] = [
        ({"root_signers": repo.roots[:1], "new_root_signers": [stranger]},
         "rotation needs 2 of the current root keys; 1 of those given are root keys: pass more --root-key files"),
        ({"root_signers": [repo.roots[0], repo.roots[0]], "new_root_signers": [stranger]},
         "rotation needs 2 of the current root keys; 1 of those given"),
        ({"root_signers": [repo.roots[0], stranger, repo.targets], "new_online_signer": stranger,
          "targets_signer": repo.targets},
         "rotation needs 2 of the current root keys; 1 of those given"),
        ({"root_signers": repo.roots[:2], "new_online_signer": stranger},
         "rotating the online key re-signs targets: pass --targets-key"),
        ({"root_signers": repo.roots[:2], "new_online_signer": stranger, "targets_signer": repo.online},
         "the --targets-key given is not the targets key listed in root"),
        ({"root_signers": repo.roots[:2], "new_root_signers": [stranger], "new_root_threshold": 2},
         "root threshold 2 is impossible with 1 new root keys"),
    ]
    for kwargs, message in refusals:
        with pytest.raises(TufError) as refused:
            repo.rotate(repo.t0, **kwargs)
        assert str(refused.value).startswith(message), (kwargs, str(refused.value))
        assert "\n" not in str(refused.value)
        assert repo.stored() == stored


# ---------------------------------------------------------------------------------------------
# Signers that must not sign
# ---------------------------------------------------------------------------------------------

class ImpostorSigner(Signer):
    """A signer that names the trusted online key but signs with another one: what a KMS or HSM
    signer does when the key behind its URI was replaced after the server started."""

    def __init__(self, claimed: Key, actual: CryptoSigner) -> None:
        self._claimed = claimed
        self._actual = actual

    @property
    def public_key(self) -> Key:
        return self._claimed

    def sign(self, payload: bytes) -> Signature:
        signature = self._actual.sign(payload)
        return Signature(self._claimed.keyid, signature.signature)

    @classmethod
    def from_priv_key_uri(cls, priv_key_uri: str, public_key: Key, secrets_handler: Any = None) -> Signer:
        raise NotImplementedError


def test_an_untrusted_signer_stores_nothing(make_repo: Callable[..., Repo]) -> None:
    repo = make_repo()
    repo.upload("iota", "1.0")
    stored = repo.stored()
    stranger = CryptoSigner.generate_ed25519()
    with pytest.raises(SignerRotated) as refused:
        repo.cycle(signer=stranger)
    assert isinstance(refused.value, TufError) and "not the signer's" in str(refused.value)
    with pytest.raises(SignerRotated):
        repo.refresh(repo.t0 + timedelta(hours=13), signer=stranger)
    assert repo.stored() == stored

    impostor = ImpostorSigner(repo.online.public_key, stranger)
    # The first signature made (a bin's) is already checked against root.
    with pytest.raises(TufError, match="^the online signer's bins-[0-9a-f]+ signature does not verify with the key "
                                       "root lists for it"):
        repo.cycle(signer=impostor)
    assert repo.stored() == stored, "metadata no client can verify must not be stored"
    with pytest.raises(TufError, match="does not verify"):
        repo.refresh(repo.t0 + timedelta(hours=13), signer=impostor)
    assert repo.stored() == stored
    assert repo.cycle() is not None  # the real key signs the queued upload
    check_served(repo, client_walk(repo.client, repo.root1))


class OneBadMemberSigner(Signer):
    """A pool of signers behind one URI where one member holds another key (or one signature
    comes out corrupt): only the second signature of a run is bad."""

    def __init__(self, good: CryptoSigner, bad: CryptoSigner) -> None:
        self.good, self.bad, self.calls = good, bad, 0

    @property
    def public_key(self) -> Key:
        return self.good.public_key

    def sign(self, payload: bytes) -> Signature:
        member = self.bad if self.calls == 1 else self.good
        self.calls += 1
        return Signature(self.good.public_key.keyid, member.sign(payload).signature)

    @classmethod
    def from_priv_key_uri(cls, priv_key_uri: str, public_key: Key, secrets_handler: Any = None) -> Signer:
        raise NotImplementedError


def test_one_bad_signature_in_a_run_stores_nothing(make_repo: Callable[..., Repo]) -> None:
    """Every signature of a run is verified, not only the first: a bin signed by the wrong pool
    member would make its projects uninstallable for TUF clients until it is re-signed."""
    repo = make_repo()
    for name in ("iota", "kappa", "lambda", "mu", "nu", "xi"):
        repo.upload(name, "1.0")
    stored = repo.stored()
    signer = OneBadMemberSigner(repo.online, CryptoSigner.generate_ed25519())
    with pytest.raises(TufError, match="signature does not verify with the key root lists"):
        repo.cycle(signer=signer)
    assert signer.calls >= 2 and repo.stored() == stored
    assert repo.cycle() is not None
    check_served(repo, client_walk(repo.client, repo.root1))


# ---------------------------------------------------------------------------------------------
# Bad key files and signer URIs
# ---------------------------------------------------------------------------------------------

def _pem(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def test_bad_key_files_are_one_line_errors_naming_the_file(tmp_path: Path) -> None:
    good = CryptoSigner.generate_ed25519()
    trusted = good.public_key
    public_file = tmp_path / "public.pem"
    private = serialization.load_pem_private_key(good.private_bytes, None)
    public_file.write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(os.urandom(200))
    empty = tmp_path / "empty.pem"
    empty.write_bytes(b"")
    rsa_file = tmp_path / "rsa.pem"
    rsa_file.write_bytes(_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    ec_file = tmp_path / "ec.pem"
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_file.write_bytes(_pem(ec_key))
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.BestAvailableEncryption(b"secret")))
    other = tmp_path / "other.pem"
    other.write_bytes(CryptoSigner.generate_ed25519().private_bytes)
    directory = tmp_path / "a-directory"  # unreadable as a file even for root (chmod 000 does not stop root)
    directory.mkdir()
    cases = [
        (tmp_path / "missing.pem", "does not exist: give the path of the PEM file written by `bastion tuf init`"),
        (directory, "is a directory: give the path of the PEM file"),
        (garbage, "cannot be used: it is not a PEM private key; give an unencrypted PKCS#8 PEM Ed25519 key"),
        (empty, "cannot be used: it is not a PEM private key"),
        (public_file, "cannot be used: it is not a PEM private key"),
        (encrypted, "cannot be used: it is encrypted; give an unencrypted PKCS#8 PEM Ed25519 key"),
        (rsa_file, "holds a RSAPrivateKey, not an Ed25519 key: use a key written by `bastion tuf init`"),
        (ec_file, f"holds a {type(ec_key).__name__}, not an Ed25519 key"),
        (other, "is not the key the repository trusts"),
    ]
    if os.geteuid() != 0:  # root reads a chmod 000 file anyway
        unreadable = tmp_path / "unreadable.pem"
        unreadable.write_bytes(good.private_bytes)
        unreadable.chmod(0)
        cases.append((unreadable, "cannot be read (Permission denied): check its permissions"))
    for path, message in cases:
        for load in (lambda: load_key_file(path, what="TUF online", public_key=trusted),  # noqa: B023
                     lambda: load_signer(f"file2:{path}", trusted, what="TUF online")):  # noqa: B023
            with pytest.raises(TufError) as refused:
                load()
            text = str(refused.value)
            assert text.startswith(f"TUF online key file {path} ") and message in text, text
            assert "\n" not in text
    good_file = tmp_path / "good.pem"
    good_file.write_bytes(good.private_bytes)
    assert load_signer(f"file2:{good_file}", trusted, what="TUF online").public_key.keyid == trusted.keyid


def test_unknown_signer_uri_is_a_one_line_error() -> None:
    trusted = CryptoSigner.generate_ed25519().public_key
    for uri in ("nosuch:foo", "file:/nonexistent?encrypted=false", "not a uri"):
        with pytest.raises(TufError) as refused:
            load_signer(uri, trusted, what="TUF online")
        text = str(refused.value)
        assert text.startswith(f"TUF online signer {uri} cannot ") and "check the URI" in text, text
        assert "\n" not in text


def test_bin_count_must_be_a_power_of_two(data_dir: Path) -> None:
    with pytest.raises(SettingsError, match="invalid value 0 for tuf_bins: expected a positive whole number"):
        load_settings(data_dir, tuf_bins=0)
    for bins in (1, 3, 100, 255, 32768):
        with pytest.raises(SettingsError, match=f"invalid value {bins} for BASTION_TUF_BINS: use a power of two"):
            load_settings(data_dir, tuf_bins=bins)
    assert load_settings(data_dir, tuf_bins=16384).tuf_bins == 16384


# ---------------------------------------------------------------------------------------------
# The service: prepare at start, TUF off and on again
# ---------------------------------------------------------------------------------------------

def _bastion(data_dir: Path, database_url: str, **overrides: Any) -> Bastion:
    return Bastion(load_settings(data_dir, database_url=database_url, **overrides), run_migrations=False)


def test_prepare_refuses_a_different_bin_count_or_a_broken_key(data_dir: Path, database_url: str) -> None:
    first = _bastion(data_dir, database_url, tuf_bins=16)
    try:
        signer = tufservice.prepare(first, announce=False)
        assert signer is not None
    finally:
        first.close()
    other = _bastion(data_dir, database_url, tuf_bins=32)
    try:
        with pytest.raises(TufError, match=r"^BASTION_TUF_BINS is 32 but the TUF repository was created with 16 "
                                           r"bins, and the bin count cannot change: set BASTION_TUF_BINS=16$"):
            tufservice.prepare(other, announce=False)
    finally:
        other.close()
    online = data_dir / "tuf" / "keys" / "online.pem"
    online.write_bytes(CryptoSigner.generate_ed25519().private_bytes)  # replaced by another key
    again = _bastion(data_dir, database_url, tuf_bins=16)
    try:
        with pytest.raises(TufError, match="is not the key the repository trusts"):
            tufservice.prepare(again, announce=False)
    finally:
        again.close()


def test_prepare_refuses_a_refresh_interval_that_lets_online_metadata_expire(data_dir: Path,
                                                                             database_url: str) -> None:
    """The refresh task re-signs what has used half its lifetime, once per interval: an interval
    of half the shortest online lifetime or more lets that role expire between two runs."""
    cases = [
        ({"tuf_timestamp_expiry": "40m"}, "BASTION_TUF_TIMESTAMP_EXPIRY (40m)", "at most 10m"),
        ({"tuf_bins_expiry": "2h", "tuf_refresh_interval": "1h"}, "BASTION_TUF_BINS_EXPIRY (2h)", "at most 30m"),
        ({"tuf_snapshot_expiry": "20s", "tuf_timestamp_expiry": "30s"}, "BASTION_TUF_SNAPSHOT_EXPIRY (20s)",
         "at most 5s"),
    ]
    for overrides, named, suggestion in cases:
        instance = _bastion(data_dir, database_url, tuf_bins=16, **overrides)
        try:
            with pytest.raises(TufError) as refused:
                tufservice.prepare(instance, announce=False)
        finally:
            instance.close()
        text = str(refused.value)
        interval = overrides.get("tuf_refresh_interval", "1h")
        assert text.startswith(f"BASTION_TUF_REFRESH_INTERVAL ({interval}) must be shorter than half of {named}: "
                               "online metadata would expire between two refreshes; set "), text
        assert f"BASTION_TUF_REFRESH_INTERVAL to {suggestion}" in text and "\n" not in text
        with instance.db.read() as session:
            assert tufrepo.repository_row(session) is None, "nothing was created"
    fine = _bastion(data_dir, database_url, tuf_bins=16, tuf_timestamp_expiry="6s", tuf_refresh_interval="1s")
    try:
        assert tufservice.prepare(fine, announce=False) is not None
    finally:
        fine.close()


def test_tuf_off_queues_nothing_and_on_again_signs_what_changed(data_dir: Path, database_url: str,
                                                                  tmp_path: Path) -> None:
    def open_index(mode: str) -> tuple[Bastion, TestClient, Signer | None]:
        instance = _bastion(data_dir, database_url, tuf=mode, tuf_bins=16)
        return instance, TestClient(create_app(bastion=instance), base_url="http://testserver"), \
            tufservice.prepare(instance, announce=False)

    def upload(instance: Bastion, client: TestClient, token: str, name: str) -> None:
        directory = tmp_path / name
        directory.mkdir()
        path = make_wheel(directory, name, "1.0")
        assert post_upload(client, token, path, upload_form(path, name, "1.0")).status_code == 200

    on, client, signer = open_index("on")
    assert signer is not None
    token = make_user(on, "alice")
    upload(on, client, token, "before-off")
    upload(on, client, token, "gone-while-off")
    assert tufservice.run_snapshot(on, signer) is not None
    root1 = fetch(client, "/tuf/metadata/1.root.json")
    assert root1 is not None
    client.close()
    on.close()

    off, client, signer = open_index("off")
    assert signer is None
    with off.db.read() as session:
        assert tufrepo.repository_row(session).suspended is True  # type: ignore[union-attr]
        depth = tufrepo.queue_depth(session)[0]
    assert depth == 0
    upload(off, client, token, "while-off")
    with off.db.write() as session:
        packaging.set_yanked(session, "before-off", "1.0", yanked=True, reason="while off", principal=OPERATOR)
    with off.db.write() as session:
        deletion = packaging.delete_project(session, off, "gone-while-off", principal=OPERATOR)
    packaging.delete_blobs(off, deletion.blob_paths)
    with off.db.read() as session:
        assert tufrepo.queue_depth(session)[0] == 0, "TUF off: nothing is queued"
    for path in ("/tuf/metadata/timestamp.json", "/tuf/metadata/1.root.json"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.text == "Not Found: this index serves no TUF metadata (BASTION_TUF=off)\n"
    client.close()
    off.close()

    on, client, signer = open_index("on")
    assert signer is not None
    with on.db.read() as session:
        assert tufrepo.repository_row(session).suspended is False  # type: ignore[union-attr]
        assert tufrepo.queue_depth(session)[0] > 0, "turning TUF on again queues every project"
    while tufservice.run_snapshot(on, signer) is not None:
        pass
    repo = Repo(on, client, [], CryptoSigner.generate_ed25519(), CryptoSigner.generate_ed25519(), 16, LIFETIMES,
                now_s(), token, tmp_path)
    walk = client_walk(client, root1)
    listed = check_served(repo, walk)
    assert any(p.endswith("/while_off-1.0-py3-none-any.whl") for p in listed), \
        "the file uploaded while TUF was off is signed now"
    assert not [p for p in listed if "gone" in p], "the project deleted while TUF was off is no target any more"
    assert {p: (s, n) for p, (s, n, _) in listed.items()} == expected_targets(repo, ["before-off", "while-off"])
    client.close()
    on.close()


# ---------------------------------------------------------------------------------------------
# The CLI and `bastion serve`, as subprocesses
# ---------------------------------------------------------------------------------------------

def _env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env.update(COLUMNS="200", NO_COLOR="1", BASTION_DATABASE_URL=database_url, BASTION_TUF_BINS="16")
    env.update(extra)
    return env


def cli(data_dir: Path, database_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BASTION, *args, "--data-dir", str(data_dir)], env=_env(database_url, **env),
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def clis(data_dir: Path, database_url: str, *commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Several commands run at the same time (each ``bastion`` start costs most of a second)."""
    started = [subprocess.Popen([BASTION, *args, "--data-dir", str(data_dir)], env=_env(database_url),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
               for args in commands]
    done = []
    for proc in started:
        stdout, stderr = proc.communicate(timeout=120)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return done


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The error a failed command printed: one line (unwrapped) starting with 'error:'."""
    assert result.returncode != 0, result
    text = " ".join(result.stderr.split())
    assert text.startswith("error: ") and text.count("error:") == 1, result.stderr
    assert "Traceback" not in result.stderr
    return text


def test_cli_init_status_refresh_and_rotate(data_dir: Path, database_url: str) -> None:
    public = data_dir.parent / "kms-public.pem"
    public.write_bytes(serialization.load_pem_private_key(CryptoSigner.generate_ed25519().private_bytes, None)
                       .public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    missing, too_high, unknown, no_public = clis(
        data_dir, database_url, ["tuf", "status"], ["tuf", "init", "--root-keys", "2", "--root-threshold", "3"],
        ["tuf", "init", "--online-signer", "nosuch:foo", "--online-public-key", str(public)],
        ["tuf", "init", "--online-signer", "nosuch:foo"])
    assert missing.returncode == 1
    assert one_line_error(missing) == ("error: this index has no TUF repository yet: run `bastion tuf init` (or start "
                                       "`bastion serve` once, which creates a development key set)")
    assert one_line_error(too_high) == "error: --root-threshold 3 is more than --root-keys 2: k must be at most n"
    assert one_line_error(unknown).startswith("error: online signer nosuch:foo cannot be loaded (ValueError: ")
    assert one_line_error(no_public).startswith("error: --online-signer needs --online-public-key")
    assert not (data_dir / "tuf").exists(), "a refused ceremony writes no key"
    assert cli(data_dir, database_url, "tuf", "status").returncode == 1, "and creates no repository"

    created = cli(data_dir, database_url, "tuf", "init", "--root-keys", "3", "--root-threshold", "2")
    assert created.returncode == 0, created.stderr
    keys = data_dir / "tuf" / "keys"
    offline = keys / "offline"
    assert "TUF repository created: 16 bins, root 2 of 3." in created.stdout
    assert sorted(p.name for p in offline.iterdir()) == ["root-1.pem", "root-2.pem", "root-3.pem", "targets.pem"]
    assert all((p.stat().st_mode & 0o777) == 0o600 for p in offline.iterdir())
    root1 = (keys / "1.root.json").read_bytes()
    instance = _bastion(data_dir, database_url)
    try:
        with instance.db.read() as session:
            assert tufrepo.load_head(session, "root").to_bytes() == root1
            before = session.execute(select(TufHead.role, TufHead.version)).all()
        # Refusals, all at once: none of them may change anything.
        again, status, few, few_roots, wrong, absent, not_root, lone_threshold = clis(
            data_dir, database_url, ["tuf", "init"], ["tuf", "status"],
            ["tuf", "rotate", "--online", "--root-key", str(offline / "root-1.pem"), "--targets-key",
             str(offline / "targets.pem")],
            ["tuf", "rotate", "--new-root-keys", "2", "--root-key", str(offline / "root-1.pem")],
            ["tuf", "rotate", "--online", "--root-key", str(offline / "root-1.pem"), "--root-key",
             str(offline / "root-2.pem"), "--targets-key", str(offline / "root-3.pem")],
            ["tuf", "rotate", "--new-root-keys", "1", "--root-key", str(offline / "root-9.pem")],
            ["tuf", "rotate", "--new-root-keys", "1", "--root-key", str(offline / "targets.pem")],
            ["tuf", "rotate", "--online", "--new-root-threshold", "1", "--root-key", str(offline / "root-1.pem"),
             "--root-key", str(offline / "root-2.pem"), "--targets-key", str(offline / "targets.pem")])
        assert one_line_error(lone_threshold) == ("error: --new-root-threshold applies to new root keys: give "
                                                  "--new-root-keys N as well")
        assert one_line_error(again).startswith("error: this index already has a TUF repository: `bastion tuf init` "
                                                "runs once")
        assert status.returncode == 0, status.stderr
        assert "bins: 16" in status.stdout and "queue: 1 project(s) waiting" in status.stdout
        assert one_line_error(few).startswith("error: rotation needs 2 of the current root keys; 1 of those given")
        assert one_line_error(few_roots).startswith("error: rotation needs 2 of the current root keys; 1 of those")
        assert one_line_error(wrong) == (f"error: targets key file {offline / 'root-3.pem'} is not the key the "
                                         "repository trusts (keyid " + one_line_error(wrong).split("(keyid ")[1])
        assert one_line_error(absent) == (f"error: root key file {offline / 'root-9.pem'} does not exist: give the "
                                          "path of the PEM file written by `bastion tuf init`")
        assert one_line_error(not_root).startswith(f"error: root key file {offline / 'targets.pem'} is not one of "
                                                   "the current root keys")
        key_files = sorted(p.relative_to(keys) for p in keys.rglob("*.pem*"))
        assert key_files == [Path("offline/root-1.pem"), Path("offline/root-2.pem"), Path("offline/root-3.pem"),
                             Path("offline/targets.pem"), Path("online.pem")], "a refused rotation leaves no new key"
        with instance.db.read() as session:
            assert session.execute(select(TufHead.role, TufHead.version)).all() == before
        assert (keys / "1.root.json").read_bytes() == root1

        refreshed = cli(data_dir, database_url, "tuf", "refresh")
        assert refreshed.returncode == 0, refreshed.stderr
        assert refreshed.stdout.startswith("snapshot runs: 1;")
        with instance.db.read() as session:
            assert tufrepo.queue_depth(session)[0] == 0
        old_online = (keys / "online.pem").read_bytes()
        rotated = cli(data_dir, database_url, "tuf", "rotate", "--online", "--root-key", str(offline / "root-1.pem"),
                      "--root-key", str(offline / "root-3.pem"), "--targets-key", str(offline / "targets.pem"))
        assert rotated.returncode == 0, rotated.stderr
        assert "online key replaced: targets v2, 16 bins re-signed" in rotated.stdout
        assert (keys / "online.pem").read_bytes() != old_online
        assert [p.read_bytes() for p in keys.glob("online.pem.retired-*")] == [old_online]
        assert (keys / "2.root.json").is_file()
        after = cli(data_dir, database_url, "tuf", "refresh")  # the server's key file is the new key now
        assert after.returncode == 0, after.stderr
        with instance.db.read() as session:
            root2 = tufrepo.load_head(session, "root").signed
        signer = load_key_file(keys / "online.pem", what="online")
        assert root2.roles["timestamp"].keyids == [signer.public_key.keyid]
    finally:
        instance.close()


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_refused(data_dir: Path, database_url: str, *envs: dict[str, str]) -> list[str]:
    """Run `bastion serve` once per environment in ``envs`` (at the same time); each must exit with
    code 2 without ever listening. Their error lines."""
    envs = envs or ({},)
    started = []
    for env in envs:
        port = _free_port()
        started.append((port, subprocess.Popen(
            [BASTION, "serve", "--port", str(port), "--data-dir", str(data_dir)], env=_env(database_url, **env),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)))
    errors = []
    for port, proc in started:
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            listening = _port_open(port)
            proc.kill()
            proc.communicate()
            pytest.fail(f"bastion serve did not exit (listening: {listening})")
        assert not _port_open(port)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        assert result.returncode == 2, result
        errors.append(one_line_error(result))
    return errors


def test_serve_refuses_to_start_with_broken_signing(data_dir: Path, database_url: str) -> None:
    created = cli(data_dir, database_url, "tuf", "init")
    assert created.returncode == 0, created.stderr
    online = data_dir / "tuf" / "keys" / "online.pem"
    key = online.read_bytes()
    instance = _bastion(data_dir, database_url)
    try:
        with instance.db.read() as session:
            before = session.execute(select(TufHead.role, TufHead.version)).all()
    finally:
        instance.close()
    prefix = "error: TUF signing is configured but cannot work: "

    online.unlink()
    (missing,) = serve_refused(data_dir, database_url)
    assert missing == (f"{prefix}TUF online key file {online.resolve()} does not exist: give the path of the PEM "
                       "file written by `bastion tuf init`")
    online.write_bytes(CryptoSigner.generate_ed25519().private_bytes)
    (replaced,) = serve_refused(data_dir, database_url)
    assert replaced.startswith(f"{prefix}TUF online key file {online.resolve()} is not the key the repository "
                               "trusts (keyid ")
    online.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    (garbage,) = serve_refused(data_dir, database_url)
    assert garbage.startswith(f"{prefix}TUF online key file {online.resolve()} cannot be used: it is not a PEM "
                              "private key")
    online.write_bytes(key)
    unknown, directory, bins, not_power, expiring = serve_refused(
        data_dir, database_url, {"BASTION_TUF_ONLINE_SIGNER": "nosuch:foo"},
        {"BASTION_TUF_ONLINE_SIGNER": f"file2:{data_dir}"}, {"BASTION_TUF_BINS": "1024"}, {"BASTION_TUF_BINS": "100"},
        {"BASTION_TUF_TIMESTAMP_EXPIRY": "40m"})
    assert unknown.startswith(f"{prefix}TUF online signer nosuch:foo cannot be loaded (ValueError: ")
    assert directory.startswith(f"{prefix}TUF online key file {data_dir} is a directory: give the path of the PEM file")
    assert bins == (f"{prefix}BASTION_TUF_BINS is 1024 but the TUF repository was created with 16 bins, and the bin "
                    "count cannot change: set BASTION_TUF_BINS=16")
    assert not_power.startswith("error: invalid value 100 for BASTION_TUF_BINS: use a power of two from 2 to 16384")
    assert expiring.startswith(f"{prefix}BASTION_TUF_REFRESH_INTERVAL (1h) must be shorter than half of "
                               "BASTION_TUF_TIMESTAMP_EXPIRY (40m)")
    instance = _bastion(data_dir, database_url)
    try:
        with instance.db.read() as session:
            assert session.execute(select(TufHead.role, TufHead.version)).all() == before
    finally:
        instance.close()


def test_root_rotation_by_the_cli_reaches_a_running_server(data_dir: Path, database_url: str) -> None:
    """A running server caches root.json until the TUF marker changes: a root-only rotation (no
    new timestamp) must still make it serve the new root."""
    assert cli(data_dir, database_url, "tuf", "init").returncode == 0
    running = _bastion(data_dir, database_url, tuf_bins=16)
    client = TestClient(create_app(bastion=running), base_url="http://testserver")
    try:
        assert client.get("/tuf/metadata/root.json").json()["signed"]["version"] == 1
        offline = data_dir / "tuf" / "keys" / "offline"
        rotated = cli(data_dir, database_url, "tuf", "rotate", "--new-root-keys", "2", "--new-root-threshold", "2",
                      "--root-key", str(offline / "root-1.pem"), "--root-key", str(offline / "root-2.pem"))
        assert rotated.returncode == 0, rotated.stderr
        assert client.get("/tuf/metadata/2.root.json").status_code == 200
        assert client.get("/tuf/metadata/root.json").json()["signed"]["version"] == 2
    finally:
        client.close()
        running.close()


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_the_worker_signs_at_once_after_a_quiet_spell_paces_a_stream_and_signs_now_when_asked(
        make_repo: Callable[..., Repo], monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a stream of uploads a run waits PACING times the last run's duration (here made a
    minute); ``wake(now=True)`` (what settle and a waiting caller use) skips that wait, and
    ``stop`` ends it."""
    import time

    repo = make_repo()
    monkeypatch.setattr(tufservice, "PACING", 100_000)
    worker = tufservice.SnapshotWorker(repo.bastion, repo.online)
    worker.max_spacing = 60.0
    worker.start()
    try:
        repo.upload("alpha", "1.0")
        worker.wake()  # the first change after a quiet spell: signed at once
        assert _wait_for(lambda: repo.queue_depth() == 0, 10), "the first upload was not signed at once"
        signed = repo.heads()["timestamp"]
        repo.upload("alpha", "1.1")
        worker.wake()
        time.sleep(1.2)  # more than the poll interval: the paced run still waits
        assert repo.queue_depth() > 0 and repo.heads()["timestamp"] == signed, "the paced run did not wait"
        worker.wake(now=True)
        assert _wait_for(lambda: repo.queue_depth() == 0, 10), "wake(now=True) did not skip the pacing"
        assert repo.heads()["timestamp"] == signed + 1
        repo.upload("alpha", "1.2")
        worker.wake()
        started = time.monotonic()
    finally:
        worker.stop()
    assert time.monotonic() - started < 5 and worker._thread is None, "stop did not end the paced wait"
    assert repo.queue_depth() > 0, "the last upload stays queued for the next run"
