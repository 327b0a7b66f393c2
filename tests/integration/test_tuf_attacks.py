"""PEP 458 attacks on a live index, through a man-in-the-middle: every one is refused.

A loopback proxy (tests/integration/mitm.py) sits between the client and a live ``bastion serve``
and alters what the server said: tampered files, rolled-back and replayed metadata, expired
metadata, old metadata under new names, metadata signed by an attacker's key or by an online key
that root has revoked, and endless responses. The clients are python-tuf's ngclient (an
``Updater`` bootstrapped with the server's real 1.root.json) and ``bastion verify-proxy`` with
unmodified pip behind it. Each attack is also run without the alteration (or through the proxy
passing everything through), so a refusal is the attack's doing and not a broken setup.

One server (module fixture ``index``) holds attack-target 1.0 and then 2.0, with the signed state
captured after each, for the tampering, rollback, mix-and-match, untrusted-key, endless-data
and PEP 658 scenarios; the freeze scenario (6-second timestamps) and the key rotation (which
changes the server's keys) start servers of their own. Attacks that need the online key use a
copy of the development key set's online.pem: the attacker is assumed to have stolen it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from securesystemslib.signer import CryptoSigner, Signer
from tuf.api import exceptions
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, Targets, Timestamp
from tuf.ngclient import Updater

from tests.distbuilder import make_wheel
from tests.integration.conftest import (
    LiveServer,
    _shutdown,
    clean_env,
    describe,
    installed,
    output,
    start_server,
)
from tests.integration.mitm import Mitm
from tests.integration.tufclient import HTTP_TIMEOUT, SIMPLE_JSON, fetch_root, pip_install, tuf_updater, verify_proxy

PROJECT = "attack-target"
PAGE = f"simple/{PROJECT}/index.json"
WHEEL_V1 = "attack_target-1.0-py3-none-any.whl"
WHEEL_V2 = "attack_target-2.0-py3-none-any.whl"
SIGNED_TIMEOUT = 30.0
TIMESTAMP_MAX = 16384  # ngclient's default UpdaterConfig.timestamp_max_length


@pytest.fixture(autouse=True)
def _no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """ngclient's fetcher honours *_proxy variables: the clients here talk to 127.0.0.1 only."""
    for key in list(os.environ):
        if "proxy" in key.lower():
            monkeypatch.delenv(key)


# ---------------------------------------------------------------------------------------------
# TUF clients and what they fetched
# ---------------------------------------------------------------------------------------------

def fetch_target(client: Updater, path: str) -> bytes:
    """The verified bytes of one target (refreshing first if the client has not)."""
    info = client.get_targetinfo(path)
    assert info is not None, f"{path} is not a target the client trusts"
    return Path(client.download_target(info)).read_bytes()


def trusted(metadata_dir: Path, role: str) -> Metadata[Any]:
    """The metadata an Updater accepted and stored (it stores only what verified)."""
    return Metadata.from_file(str(metadata_dir / f"{role}.json"))


def http_get(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(url, timeout=HTTP_TIMEOUT, trust_env=False, **kwargs)


def file_path(server: LiveServer, filename: str) -> str | None:
    """The target path (``packages/...``) of a file the server lists, or None."""
    response = http_get(f"{server.url}/simple/{PROJECT}/", headers={"Accept": SIMPLE_JSON})
    if response.status_code != 200:
        return None
    for entry in response.json()["files"]:
        if entry["filename"] == filename:
            url = entry["url"]
            return url[len("../../"):] if url.startswith("../../") else url
    return None


def any_name(target: str) -> str:
    """A path pattern for a target under its plain or its consistent-snapshot name."""
    directory, _, basename = target.rpartition("/")
    return "/" + re.escape(directory) + r"/(?:[0-9a-f]{64}\.)?" + re.escape(basename)


def wait_signed(server: LiveServer, root: bytes, filename: str, scratch: Path) -> str:
    """Wait until the snapshot process has signed ``filename``; returns its target path."""
    deadline = time.monotonic() + SIGNED_TIMEOUT
    attempt = 0
    last = ""
    while time.monotonic() < deadline:
        attempt += 1
        path = file_path(server, filename)
        if path is not None:
            client = tuf_updater(server.url, scratch / f"wait-{filename}-{attempt}", root)
            if client.get_targetinfo(path) is not None:
                return path
            last = "listed on the simple page, not yet in signed metadata"
        else:
            last = "not listed on the simple page"
        time.sleep(0.2)
    raise AssertionError(f"{filename} was not signed within {SIGNED_TIMEOUT} s ({last})")


# ---------------------------------------------------------------------------------------------
# bastion verify-proxy and pip
# ---------------------------------------------------------------------------------------------

PAGE_REFUSED = r"Could not find a version that satisfies the requirement attack-target \(from versions: none\)"
"""What pip prints when the project's page was refused (pip logs the 502 of a page at debug level)."""
FILE_REFUSED = r"HTTP error 502 while getting http://127\.0\.0\.1:\d+/packages/\S+"
"""What pip prints when a file was refused."""


def pip_through_verify_proxy(upstream: str, root_file: Path, workdir: Path,
                             cache_dir: Path | None) -> tuple[subprocess.CompletedProcess[str], str, Path]:
    """pip installing the project through a verify-proxy on ``upstream``: (pip's result, the
    proxy's log, pip's --target). After a refused file pip may reset its connection to the
    proxy, which then logs the stdlib's traceback of that reset: the only traceback allowed."""
    env = clean_env(workdir / "home")
    target = workdir / "target"
    with verify_proxy(f"{upstream}/", root_file, workdir, env, cache_dir=cache_dir) as proxy:
        result = pip_install(proxy.index_url, target, env, PROJECT)
        return result, proxy.log(), target


def assert_pip_refused(upstream: str, root_file: Path, workdir: Path, reason: str, *,
                       cache_dir: Path | None = None, pip_says: str = PAGE_REFUSED) -> str:
    """pip through a verify-proxy on ``upstream`` fails, installs nothing, prints ``pip_says``,
    and the proxy's log names ``reason`` (a regex) as a TUF verification failure. Returns the
    proxy's log."""
    result, log, target = pip_through_verify_proxy(upstream, root_file, workdir, cache_dir)
    assert result.returncode != 0, describe(result) + "\n--- verify-proxy ---\n" + log
    assert not target.exists() or not any(target.iterdir()), describe(result)
    assert re.search(r"TUF verification failed: .*" + reason, log), f"{reason!r} not in the proxy's log:\n{log}"
    assert re.search(pip_says, output(result)), describe(result)
    return log


def assert_pip_installs(upstream: str, root_file: Path, workdir: Path, version: str, *,
                        cache_dir: Path | None = None) -> str:
    """The control: pip through a verify-proxy on ``upstream`` installs ``version``."""
    result, log, target = pip_through_verify_proxy(upstream, root_file, workdir, cache_dir)
    assert result.returncode == 0, describe(result) + "\n--- verify-proxy ---\n" + log
    assert installed(target) == {PROJECT: version}, describe(result)
    assert "TUF verification failed" not in log, log
    return log


# ---------------------------------------------------------------------------------------------
# Forging, with securesystemslib signers only
# ---------------------------------------------------------------------------------------------

def forge(data: bytes, change: Callable[[Any], None], signer: Signer | None) -> bytes:
    """``data`` (signed metadata) with ``change`` applied to its signed part, signed by ``signer``
    alone; with ``signer`` None the original signatures are kept (now over other bytes)."""
    md: Metadata[Any] = Metadata.from_bytes(data)
    change(md.signed)
    if signer is not None:
        md.signatures.clear()
        md.sign(signer)
    return md.to_bytes()


def online_key_signer(key_file: Path, root: bytes) -> Signer:
    """A signer for the online key file, bound to the public key root lists for timestamp."""
    signed = Metadata[Root].from_bytes(root).signed
    (keyid,) = signed.roles[Timestamp.type].keyids
    return Signer.from_priv_key_uri(f"file2:{key_file}", signed.keys[keyid])


def pointing_at(snapshot: bytes) -> Callable[[Any], None]:
    """A change for a timestamp: point it at ``snapshot`` (version, length, sha256)."""
    version = Metadata[Snapshot].from_bytes(snapshot).signed.version

    def change(signed: Timestamp) -> None:
        signed.snapshot_meta = MetaFile(version, length=len(snapshot),
                                        hashes={"sha256": hashlib.sha256(snapshot).hexdigest()})
    return change


def bump(by: int = 1) -> Callable[[Any], None]:
    def change(signed: Any) -> None:
        signed.version += by
    return change


def then(*changes: Callable[[Any], None]) -> Callable[[Any], None]:
    def change(signed: Any) -> None:
        for one in changes:
            one(signed)
    return change


def flip_middle(data: bytes) -> bytes:
    """Same length, 16 bytes inverted in the middle."""
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 16]) + data[middle + 16:]


def append_junk(data: bytes) -> bytes:
    return data + b"# appended by the attacker\n"


# ---------------------------------------------------------------------------------------------
# The shared index: attack-target 1.0, then 2.0, with the signed state captured after each
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class State:
    """What a client fetched and verified at one moment (the exact bytes the server sent)."""

    timestamp: bytes
    snapshot: bytes
    snapshot_version: int
    bins: dict[str, bytes]
    """The bins the client read, by role name."""
    bin_of: dict[str, str]
    """The bin role of each target fetched."""
    page: bytes
    """simple/attack-target/index.json."""
    page_sha256: str

    def bin_version(self, role: str) -> int:
        return int(Metadata[Targets].from_bytes(self.bins[role]).signed.version)

    @property
    def bin_role(self) -> str:
        """The bin that holds the project's pages."""
        return self.bin_of[PAGE]


def capture(server: LiveServer, root: bytes, directory: Path, *also: str) -> State:
    """The state a fresh client verifies when it fetches the project's page and ``also``."""
    client = tuf_updater(server.url, directory, root)
    page = fetch_target(client, PAGE)
    for path in also:
        fetch_target(client, path)
    succinct = trusted(directory, Targets.type).signed.delegations.succinct_roles
    snapshot = (directory / "snapshot.json").read_bytes()
    return State(
        timestamp=(directory / "timestamp.json").read_bytes(),
        snapshot=snapshot,
        snapshot_version=Metadata[Snapshot].from_bytes(snapshot).signed.version,
        bins={p.stem: p.read_bytes() for p in directory.glob("bins-*.json")},
        bin_of={path: succinct.get_role_for_target(path) for path in (PAGE, *also)},
        page=page,
        page_sha256=hashlib.sha256(page).hexdigest(),
    )


@dataclass(frozen=True)
class Index:
    server: LiveServer
    root: bytes
    """1.root.json as the server published it: every client's trust anchor."""
    root_file: Path
    old: State
    """After attack-target 1.0 was signed."""
    new: State
    """After attack-target 2.0 was signed (the current state)."""
    wheel_v2: bytes
    wheel_v2_path: str
    """Its target path (packages/...)."""
    online_key: Path
    """A copy of the online key file: the attacker stole it (scenarios that assume so say so)."""


def start_index(tmp: Path, *, settings: str = "") -> tuple[LiveServer, bytes, Path]:
    data_dir = tmp / "data"
    data_dir.mkdir(parents=True)
    if settings:
        (data_dir / "bastion.toml").write_text(settings)
    server = start_server("sqlite", data_dir, None, tmp / "home")
    root_file = fetch_root(server, tmp)
    return server, root_file.read_bytes(), root_file


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Index]:
    tmp = tmp_path_factory.mktemp("attacks")
    server, root, root_file = start_index(tmp)
    try:
        wheels = tmp / "wheels"
        wheels.mkdir()
        server.twine_ok([make_wheel(wheels, PROJECT, "1.0")])
        wait_signed(server, root, WHEEL_V1, tmp / "wait")
        old = capture(server, root, tmp / "old")
        wheel_v2 = make_wheel(wheels, PROJECT, "2.0", files={"attack_target/__init__.py": b"VALUE = 2\n"})
        server.twine_ok([wheel_v2])
        wheel_v2_path = wait_signed(server, root, WHEEL_V2, tmp / "wait")
        new = capture(server, root, tmp / "new", wheel_v2_path)
        stolen = tmp / "stolen-online.pem"
        shutil.copyfile(server.data_dir / "tuf" / "keys" / "online.pem", stolen)
        yield Index(server, root, root_file, old, new, wheel_v2.read_bytes(), wheel_v2_path, stolen)
    finally:
        _shutdown(server)


@pytest.fixture
def mitm(index: Index) -> Iterator[Mitm]:
    with Mitm(index.server.url) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def proxy_memory(index: Index, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A verify-proxy cache dir that has seen the current state: a first run through the honest
    path installed 2.0 (the control of the rollback scenarios). Tests copy it, then attack."""
    workdir = tmp_path_factory.mktemp("proxy-memory")
    with Mitm(index.server.url) as honest:
        assert_pip_installs(honest.url, index.root_file, workdir, "2.0", cache_dir=workdir / "cache")
    remembered = Metadata[Timestamp].from_file(str(workdir / "cache" / "metadata" / "timestamp.json")).signed
    assert remembered.version == Metadata[Timestamp].from_bytes(index.new.timestamp).signed.version
    return workdir / "cache"


def remembering_cache(proxy_memory: Path, tmp_path: Path) -> Path:
    cache = tmp_path / "proxy-cache"
    shutil.copytree(proxy_memory, cache)
    return cache


def assert_clean(index: Index, mitm: Mitm, directory: Path) -> None:
    """The control: through the proxy passing everything through, a fresh client verifies and
    downloads the current page and the 2.0 wheel, byte for byte what the server signed."""
    client = tuf_updater(mitm.url, directory, index.root)
    assert fetch_target(client, PAGE) == index.new.page
    assert fetch_target(client, index.wheel_v2_path) == index.wheel_v2
    assert all(exchange.rule is None for exchange in mitm.seen), mitm.seen


def test_the_captured_states_differ_as_the_attacks_need(index: Index) -> None:
    """Preconditions of the rollback and mix-and-match attacks: two signed states, the project's
    bin re-signed between them, the old state not listing 2.0."""
    old, new = index.old, index.new
    assert Metadata[Timestamp].from_bytes(old.timestamp).signed.version < \
        Metadata[Timestamp].from_bytes(new.timestamp).signed.version
    assert old.snapshot_version < new.snapshot_version
    assert old.bin_role == new.bin_role and old.bin_version(old.bin_role) < new.bin_version(new.bin_role)
    assert old.page_sha256 != new.page_sha256
    assert WHEEL_V1 in old.page.decode() and WHEEL_V2 not in old.page.decode()
    assert WHEEL_V2 in new.page.decode()


def test_a_client_through_the_passing_proxy_gets_the_signed_files(index: Index, mitm: Mitm, tmp_path: Path) -> None:
    assert_clean(index, mitm, tmp_path / "client")
    assert mitm.hits("/tuf/metadata/timestamp.json"), mitm.seen
    assert mitm.hits(r"/packages/.*/[0-9a-f]{64}\." + re.escape(WHEEL_V2)), mitm.seen
    log = assert_pip_installs(mitm.url, index.root_file, tmp_path / "pip", "2.0")
    assert re.search(rf"GET /packages/\S+/{re.escape(WHEEL_V2)} -> 200", log), log
    assert all(exchange.rule is None for exchange in mitm.seen)
    # The verify-proxy fetched the wheel under its consistent-snapshot name, through the MITM.
    assert len(mitm.hits(r"/packages/.*/[0-9a-f]{64}\." + re.escape(WHEEL_V2))) == 2, mitm.seen


# -- 1. tampered files --------------------------------------------------------------------------

@pytest.mark.parametrize(("what", "tamper", "expected"), [
    ("wheel", flip_middle, exceptions.LengthOrHashMismatchError),
    ("wheel", append_junk, exceptions.DownloadLengthMismatchError),
    ("page", flip_middle, exceptions.LengthOrHashMismatchError),
    ("page", append_junk, exceptions.DownloadLengthMismatchError),
])
def test_tampered_target_is_refused(index: Index, mitm: Mitm, tmp_path: Path, what: str,
                                    tamper: Callable[[bytes], bytes], expected: type[Exception]) -> None:
    assert_clean(index, mitm, tmp_path / "control")
    target = index.wheel_v2_path if what == "wheel" else PAGE
    rule = mitm.rewrite(any_name(target), tamper, name=f"tampered {what}")
    client = tuf_updater(mitm.url, tmp_path / "client", index.root)
    info = client.get_targetinfo(target)
    assert info is not None
    with pytest.raises(expected):
        client.download_target(info)
    assert rule.hits == 1, mitm.seen
    assert not list((tmp_path / "client" / "targets").glob("*")), "nothing unverified is written"
    reason = "Observed hash" if expected is exceptions.LengthOrHashMismatchError else \
        rf"Downloaded \d+ bytes exceeding the maximum allowed length of {info.length}\b"
    assert_pip_refused(mitm.url, index.root_file, tmp_path / "pip", re.escape(target) + ".*" + reason,
                       pip_says=FILE_REFUSED if what == "wheel" else PAGE_REFUSED)
    assert rule.hits == 2, mitm.seen


# -- 2. rollback --------------------------------------------------------------------------------

def test_timestamp_rollback_is_refused(index: Index, mitm: Mitm, tmp_path: Path, proxy_memory: Path) -> None:
    memory = tmp_path / "client"
    tuf_updater(mitm.url, memory, index.root).refresh()  # the client sees the current timestamp
    new_version = trusted(memory, Timestamp.type).signed.version
    rule = mitm.serve("/tuf/metadata/timestamp.json", index.old.timestamp, name="old timestamp")
    with pytest.raises(exceptions.BadVersionNumberError, match=rf"must be >= {new_version}"):
        tuf_updater(mitm.url, memory, index.root).refresh()
    assert rule.hits == 1
    assert trusted(memory, Timestamp.type).signed.version == new_version
    # The replayed timestamp is genuine (signed, unexpired): a client with no memory takes it and
    # sees the old state (TUF's known window for fresh clients, bounded by the timestamp expiry).
    fresh = tuf_updater(mitm.url, tmp_path / "fresh", index.root)
    assert fresh.get_targetinfo(index.wheel_v2_path) is None
    assert fetch_target(fresh, PAGE) == index.old.page

    # verify-proxy: a cache that saw the current state (proxy_memory), served the old timestamp.
    rule.hits = 0
    assert_pip_refused(mitm.url, index.root_file, tmp_path / "pip", rf"must be >= {new_version}",
                       cache_dir=remembering_cache(proxy_memory, tmp_path))
    assert rule.hits >= 1


def test_old_snapshot_under_the_new_name_is_refused(index: Index, mitm: Mitm, tmp_path: Path) -> None:
    assert len(index.old.snapshot) <= len(index.new.snapshot)  # else a DownloadLengthMismatchError
    memory = tmp_path / "client"
    tuf_updater(mitm.url, memory, index.root).refresh()
    rule = mitm.serve(f"/tuf/metadata/{index.new.snapshot_version}.snapshot.json", index.old.snapshot,
                      name="old snapshot, new name")
    for directory in (memory, tmp_path / "fresh"):
        (directory / "snapshot.json").unlink(missing_ok=True)  # make the client download it
        with pytest.raises(exceptions.LengthOrHashMismatchError):
            tuf_updater(mitm.url, directory, index.root).refresh()
    assert rule.hits == 2
    assert_pip_refused(mitm.url, index.root_file, tmp_path / "pip", "Observed (length|hash)")


def test_snapshot_older_than_trusted_is_refused_even_signed_with_the_online_key(
        index: Index, mitm: Mitm, tmp_path: Path, proxy_memory: Path) -> None:
    """The attacker holds the online key, signs a newer timestamp pointing at the old snapshot
    (correct length and hash, served by the server itself at its old name)."""
    online = online_key_signer(index.online_key, index.root)
    new_ts = Metadata[Timestamp].from_bytes(index.new.timestamp).signed
    forged = forge(index.new.timestamp, then(bump(), pointing_at(index.old.snapshot)), online)
    memory = tmp_path / "client"
    tuf_updater(mitm.url, memory, index.root).refresh()
    rule = mitm.serve("/tuf/metadata/timestamp.json", forged, name="timestamp -> old snapshot")
    with pytest.raises(exceptions.BadVersionNumberError,
                       match=rf"snapshot version must be >= {new_ts.snapshot_meta.version}"):
        tuf_updater(mitm.url, memory, index.root).refresh()
    # Control: the forgery is well signed; only the client's memory refuses it.
    fresh = tmp_path / "fresh"
    tuf_updater(mitm.url, fresh, index.root).refresh()
    assert trusted(fresh, Timestamp.type).signed.version == new_ts.version + 1
    assert trusted(fresh, Snapshot.type).signed.version == index.old.snapshot_version
    assert rule.hits == 2

    assert_pip_refused(mitm.url, index.root_file, tmp_path / "pip",
                       rf"snapshot version must be >= {new_ts.snapshot_meta.version}",
                       cache_dir=remembering_cache(proxy_memory, tmp_path))
    assert rule.hits >= 3


def test_bin_rollback_in_a_snapshot_signed_with_the_online_key_is_refused(
        index: Index, mitm: Mitm, tmp_path: Path, proxy_memory: Path) -> None:
    """A new snapshot (signed with the stolen online key) listing the project's bin at its old
    version, and a timestamp pointing at it: the client remembers the newer bin version."""
    online = online_key_signer(index.online_key, index.root)
    name = f"{index.new.bin_role}.json"

    def roll_back_bin(signed: Snapshot) -> None:
        signed.meta[name] = MetaFile(index.old.bin_version(index.old.bin_role))
    snapshot = forge(index.new.snapshot, then(bump(), roll_back_bin), online)
    timestamp = forge(index.new.timestamp, then(bump(), pointing_at(snapshot)), online)
    memory = tmp_path / "client"
    tuf_updater(mitm.url, memory, index.root).refresh()
    mitm.serve("/tuf/metadata/timestamp.json", timestamp, name="timestamp")
    rule = mitm.serve(f"/tuf/metadata/{index.new.snapshot_version + 1}.snapshot.json", snapshot,
                      name="snapshot with an old bin")
    with pytest.raises(exceptions.BadVersionNumberError, match=re.escape(name)):
        tuf_updater(mitm.url, memory, index.root).refresh()
    # Control: a client with no memory accepts the forged pair and reads the old bin (its page
    # lists 1.0 only; the 2.0 wheel's own target sits in another bin).
    fresh = tuf_updater(mitm.url, tmp_path / "fresh", index.root)
    assert fetch_target(fresh, PAGE) == index.old.page
    assert rule.hits == 2

    assert_pip_refused(mitm.url, index.root_file, tmp_path / "pip", rf"Expected {re.escape(name)} version",
                       cache_dir=remembering_cache(proxy_memory, tmp_path))
    assert rule.hits >= 3


# -- 4. mix and match ---------------------------------------------------------------------------

def test_old_bin_under_the_new_version_name_is_refused(index: Index, mitm: Mitm, tmp_path: Path) -> None:
    """The current snapshot with the project's old bin (genuinely signed, listing only 1.0)."""
    assert_clean(index, mitm, tmp_path / "control")
    role = index.new.bin_role
    new_version, old_version = index.new.bin_version(role), index.old.bin_version(role)
    rule = mitm.serve(f"/tuf/metadata/{new_version}.{role}.json", index.old.bins[role], name="old bin, new name")
    client = tuf_updater(mitm.url, tmp_path / "client", index.root)
    with pytest.raises(exceptions.BadVersionNumberError, match=rf"Expected {role} v{new_version}, got v{old_version}"):
        client.get_targetinfo(PAGE)
    assert rule.hits == 1
    assert_pip_refused(mitm.url, index.root_file, tmp_path / "pip", rf"Expected {role} v{new_version}, got v{old_version}")


def test_old_page_under_the_new_hash_name_is_refused(index: Index, mitm: Mitm, tmp_path: Path) -> None:
    assert_clean(index, mitm, tmp_path / "control")
    rule = mitm.serve(f"/simple/{PROJECT}/{index.new.page_sha256}.index.json", index.old.page,
                      name="old page, new name", content_type="application/vnd.pypi.simple.v1+json")
    client = tuf_updater(mitm.url, tmp_path / "client", index.root)
    info = client.get_targetinfo(PAGE)
    assert info is not None and info.hashes["sha256"] == index.new.page_sha256
    expected = (exceptions.LengthOrHashMismatchError if len(index.old.page) <= info.length
                else exceptions.DownloadLengthMismatchError)
    with pytest.raises(expected):
        client.download_target(info)
    assert rule.hits == 1
    assert_pip_refused(mitm.url, index.root_file, tmp_path / "pip", re.escape(PAGE) + ".*Observed (length|hash)")


# -- 5. untrusted keys --------------------------------------------------------------------------

def _forged_bin(index: Index, signer: Signer) -> bytes:
    """The current bin of the 2.0 wheel with the wheel re-pointed at other bytes."""
    evil = b"an attacker's wheel"

    def repoint(signed: Targets) -> None:
        target = signed.targets[index.wheel_v2_path]
        target.length = len(evil)
        target.hashes = {"sha256": hashlib.sha256(evil).hexdigest()}
    return forge(index.new.bins[index.new.bin_of[index.wheel_v2_path]], repoint, signer)


@pytest.mark.parametrize("role", ["timestamp", "snapshot", "bin", "root"])
@pytest.mark.parametrize("signed_by", ["attacker", "nobody"])
def test_metadata_signed_by_an_untrusted_key_is_refused(index: Index, mitm: Mitm, tmp_path: Path, role: str,
                                                        signed_by: str) -> None:
    """Altered metadata re-signed with the attacker's own key, or altered under the original
    signatures. The snapshot (pinned by hash in the timestamp) is reached with a timestamp signed
    by the online key, so that its own signature is what is checked."""
    assert_clean(index, mitm, tmp_path / "control")
    attacker = CryptoSigner.generate_ed25519()
    signer = attacker if signed_by == "attacker" else None
    if role == "timestamp":
        rule = mitm.serve("/tuf/metadata/timestamp.json", forge(index.new.timestamp, bump(), signer), name=role)
    elif role == "snapshot":
        online = online_key_signer(index.online_key, index.root)
        snapshot = forge(index.new.snapshot, bump(), signer)
        mitm.serve("/tuf/metadata/timestamp.json",
                   forge(index.new.timestamp, then(bump(), pointing_at(snapshot)), online), name="timestamp")
        rule = mitm.serve(f"/tuf/metadata/{index.new.snapshot_version + 1}.snapshot.json", snapshot, name=role)
    elif role == "bin":
        forged = _forged_bin(index, attacker) if signer else _forged_bin_unsigned(index)
        bin_role = index.new.bin_of[index.wheel_v2_path]
        rule = mitm.serve(f"/tuf/metadata/{index.new.bin_version(bin_role)}.{bin_role}.json", forged, name=role)
    else:  # a root v2 that trusts the attacker's key for everything
        def take_over(signed: Root) -> None:
            signed.version = 2
            for name in (Root.type, Timestamp.type, Snapshot.type, Targets.type):
                for keyid in list(signed.roles[name].keyids):
                    signed.revoke_key(keyid, name)
                signed.add_key(attacker.public_key, name)
            signed.roles[Root.type].threshold = 1
        rule = mitm.serve("/tuf/metadata/2.root.json", forge(index.root, take_over, signer), name=role)
    client = tuf_updater(mitm.url, tmp_path / "client", index.root)
    with pytest.raises(exceptions.UnsignedMetadataError) as refused:
        client.get_targetinfo(index.wheel_v2_path)
    assert rule.hits == 1, mitm.seen
    signed_role = index.new.bin_of[index.wheel_v2_path] if role == "bin" else role
    assert re.fullmatch(rf"{signed_role} was signed by 0/[12] keys", str(refused.value)), refused.value
    if signed_by == "attacker":  # pip once per role: the unsigned variants fail the same check
        # The wheel's bin is forged, not the page's: pip gets the page and is refused the wheel.
        assert_pip_refused(mitm.url, index.root_file, tmp_path / "pip", rf"{signed_role} was signed by 0/[12] keys",
                           pip_says=FILE_REFUSED if role == "bin" else PAGE_REFUSED)


def _forged_bin_unsigned(index: Index) -> bytes:
    """The bin re-pointed, keeping the online key's signature over the original bytes."""
    md = Metadata[Targets].from_bytes(_forged_bin(index, CryptoSigner.generate_ed25519()))
    md.signatures.clear()
    md.signatures.update(Metadata[Targets].from_bytes(index.new.bins[index.new.bin_of[index.wheel_v2_path]]).signatures)
    return md.to_bytes()


# -- 6. endless data ----------------------------------------------------------------------------

def wait_stream_end(rule: Any, count: int) -> None:
    """Wait (at most 15 s) until ``count`` endless streams of ``rule`` ended, and check each
    ended because its client hung up or stopped reading, not at the proxy's own cap."""
    deadline = time.monotonic() + 15
    while len(rule.outcomes) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(rule.outcomes) >= count, (rule.outcomes, rule.hits)
    assert set(rule.outcomes) <= {"client closed", "client stalled"}, (rule.outcomes, rule.sent)


@pytest.mark.parametrize("what", ["timestamp", "wheel"])
def test_endless_response_is_cut_at_the_length_limit(index: Index, mitm: Mitm, tmp_path: Path, what: str) -> None:
    assert_clean(index, mitm, tmp_path / "control")
    client = tuf_updater(mitm.url, tmp_path / "client", index.root)
    if what == "timestamp":
        rule = mitm.endless("/tuf/metadata/timestamp.json", name="endless timestamp")
        limit = TIMESTAMP_MAX
        attempt: Callable[[], object] = client.refresh
    else:
        info = client.get_targetinfo(index.wheel_v2_path)
        assert info is not None
        rule = mitm.endless(any_name(index.wheel_v2_path), name="endless wheel",
                            content_type="application/octet-stream")
        limit = info.length
        attempt = lambda: client.download_target(info)  # noqa: E731
    started = time.monotonic()
    with pytest.raises(exceptions.DownloadLengthMismatchError, match=rf"maximum allowed length of {limit}\b"):
        attempt()
    assert time.monotonic() - started < 20
    assert rule.hits == 1
    wait_stream_end(rule, 1)

    started = time.monotonic()
    assert_pip_refused(mitm.url, index.root_file, tmp_path / "pip",
                       rf"exceeding the maximum allowed length of {limit}\b",
                       pip_says=FILE_REFUSED if what == "wheel" else PAGE_REFUSED)
    assert time.monotonic() - started < 60, "the verify-proxy must fail, not hang"
    assert rule.hits >= 2
    wait_stream_end(rule, rule.hits)


# -- PEP 658 metadata (not a TUF target: checked against the verified page) -------------------

def test_tampered_core_metadata_is_refused(index: Index, mitm: Mitm, tmp_path: Path) -> None:
    """The wheel's .metadata gains a dependency on the attacker's project. TUF does not sign
    .metadata files; the verify-proxy checks them against the sha256 the verified page announced."""
    page = json.loads(index.new.page)
    (entry,) = [f for f in page["files"] if f["filename"] == WHEEL_V2]
    assert entry.get("core-metadata", {}).get("sha256"), entry  # pip will ask for the .metadata file

    def add_dependency(data: bytes) -> bytes:
        assert b"Name: attack-target" in data
        return data.replace(b"Name: attack-target\n", b"Name: attack-target\nRequires-Dist: evil-dependency\n")
    rule = mitm.rewrite(any_name(index.wheel_v2_path + ".metadata"), add_dependency, name="tampered .metadata")
    assert_pip_refused(mitm.url, index.root_file, tmp_path / "pip",
                       re.escape(WHEEL_V2) + r"\.metadata: sha256 [0-9a-f]{64} is not the "
                       + entry["core-metadata"]["sha256"], pip_says=r"502 Server Error: TUF verification failed")
    assert rule.hits == 1, mitm.seen
    assert not mitm.hits(r"/simple/evil-dependency/")


# -- 3. freeze (a server of its own) -------------------------------------------------------------

def _expires(timestamp: bytes) -> datetime:
    return Metadata[Timestamp].from_bytes(timestamp).signed.expires


def test_expired_timestamp_is_refused(tmp_path: Path) -> None:
    """A server whose timestamps live 6 s (re-signed every second once past half their life, so
    the live one always has seconds left, even on a loaded machine): a captured timestamp,
    replayed to fresh clients once it has expired."""
    server, root, root_file = start_index(tmp_path, settings='tuf_timestamp_expiry = "6s"\n'
                                                             'tuf_refresh_interval = "1s"\n')
    try:
        server.twine_ok([make_wheel(tmp_path, PROJECT, "1.0")])
        wheel = wait_signed(server, root, WHEEL_V1, tmp_path / "wait")
        captured = http_get(f"{server.url}/tuf/metadata/timestamp.json").content
        expires = _expires(captured)
        assert (expires - datetime.now(UTC)).total_seconds() <= 6
        with Mitm(server.url) as proxy:
            # The control (while the captured timestamp expires): the honest path installs.
            assert_pip_installs(proxy.url, root_file, tmp_path / "pip-control", "1.0")
            while datetime.now(UTC) <= expires:
                time.sleep(0.2)
            time.sleep(0.5)
            control = tuf_updater(proxy.url, tmp_path / "control", root)
            assert fetch_target(control, wheel)  # the server keeps re-signing: fresh metadata verifies
            assert trusted(tmp_path / "control", Timestamp.type).signed.expires > expires
            rule = proxy.serve("/tuf/metadata/timestamp.json", captured, name="expired timestamp")
            with pytest.raises(exceptions.ExpiredMetadataError, match="timestamp.json is expired"):
                tuf_updater(proxy.url, tmp_path / "client", root).refresh()
            assert rule.hits == 1
            assert_pip_refused(proxy.url, root_file, tmp_path / "pip", "timestamp.json is expired")
            assert rule.hits >= 2
    finally:
        _shutdown(server)


# -- 7. a revoked online key (a server of its own) ------------------------------------------------

def test_online_key_revoked_by_rotation_is_refused(tmp_path: Path) -> None:
    """The attacker copied online.pem. Before rotation a timestamp forged with it is accepted
    (it is the online key); after `bastion tuf rotate --online` the client follows 2.root.json
    and refuses the same forgery."""
    server, root, root_file = start_index(tmp_path)
    try:
        server.twine_ok([make_wheel(tmp_path, PROJECT, "1.0")])
        wheel = wait_signed(server, root, WHEEL_V1, tmp_path / "wait")
        keys = server.data_dir / "tuf" / "keys"
        stolen = tmp_path / "stolen-online.pem"
        shutil.copyfile(keys / "online.pem", stolen)
        signer = online_key_signer(stolen, root)
        memory = tmp_path / "client"
        with Mitm(server.url) as proxy:
            assert fetch_target(tuf_updater(proxy.url, memory, root), wheel)
            current = http_get(f"{server.url}/tuf/metadata/timestamp.json").content
            rule = proxy.serve("/tuf/metadata/timestamp.json", forge(current, bump(1000), signer), name="forged")
            tuf_updater(proxy.url, memory, root).refresh()
            accepted = trusted(memory, Timestamp.type).signed
            assert accepted.version == Metadata[Timestamp].from_bytes(current).signed.version + 1000
            assert rule.hits == 1
            proxy.clear()

            result = server.cli("tuf", "rotate", "--online", "--root-key", str(keys / "offline" / "root-1.pem"),
                                "--root-key", str(keys / "offline" / "root-2.pem"),
                                "--targets-key", str(keys / "offline" / "targets.pem"))
            assert result.returncode == 0, describe(result)
            assert http_get(f"{server.url}/tuf/metadata/2.root.json").status_code == 200
            # The client follows 2.root.json; the fast-forwarded timestamp it had stored is signed
            # by a key the new root does not list, so it is dropped and the real one accepted.
            assert fetch_target(tuf_updater(proxy.url, memory, root), wheel)
            assert Path(memory / "root.json").resolve().name == "2.root.json"
            assert trusted(memory, Root.type).signed.version == 2
            assert signer.public_key.keyid not in trusted(memory, Root.type).signed.roles[Timestamp.type].keyids
            # verify-proxy, bootstrapped with 1.root.json, follows the rotation too.
            cache = tmp_path / "proxy-cache"
            assert_pip_installs(proxy.url, root_file, tmp_path / "pip-control", "1.0", cache_dir=cache)
            assert (cache / "metadata" / "root.json").resolve().name == "2.root.json"

            current = http_get(f"{server.url}/tuf/metadata/timestamp.json").content
            rule = proxy.serve("/tuf/metadata/timestamp.json", forge(current, bump(1000), signer), name="forged")
            for directory in (memory, tmp_path / "fresh"):
                with pytest.raises(exceptions.UnsignedMetadataError, match=r"timestamp was signed by 0/1 keys"):
                    tuf_updater(proxy.url, directory, root).refresh()
            assert rule.hits == 2
            assert trusted(tmp_path / "fresh", Root.type).signed.version == 2
            assert_pip_refused(proxy.url, root_file, tmp_path / "pip", r"timestamp was signed by 0/1 keys",
                               cache_dir=cache)
            assert rule.hits >= 3
    finally:
        _shutdown(server)


def test_json_page_and_wheel_bytes_are_what_pip_would_install(index: Index) -> None:
    """The targets are the bytes the simple API serves (so verifying them protects pip)."""
    page = http_get(f"{index.server.url}/simple/{PROJECT}/", headers={"Accept": SIMPLE_JSON})
    assert page.content == index.new.page
    files = {f["filename"]: f for f in json.loads(page.content)["files"]}
    assert files[WHEEL_V2]["hashes"]["sha256"] == hashlib.sha256(index.wheel_v2).hexdigest()
