"""The PEP 458 repository: build, sign and store TUF metadata with python-tuf's Metadata API.

Roles: root and targets (offline keys), and timestamp, snapshot and the bin-n roles of a succinct
hash-bin delegation (TAP 15, online key). Consistent snapshots: every version of every role but
timestamp is served as ``<version>.<role>.json``; targets are served at ``<sha256>.<name>``.

The snapshot process folds everything queued into new bin versions, then one snapshot, then one
timestamp, in one database transaction under one lock: concurrent uploads give one linear
sequence of versions, and a crash leaves the previous complete set served. Targets come from the
simple pages: a project's pages are targets, and so is every file its JSON page lists, so the page
that lists a file is signed in the same snapshot as the file.
"""

from __future__ import annotations

import functools

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from securesystemslib.signer import Key, Signer
from sqlalchemy import Table, bindparam, delete, func, select, tuple_, update
from sqlalchemy.orm import Session
from tuf.api.metadata import (
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    SuccinctRoles,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from bastion.db import advisory_lock, upsert, utcnow
from bastion.settings import Settings
from bastion.simple.models import RenderedPage
from bastion.simple.render import simple_detail_key, simple_index_key
from bastion.tuf.keys import TufError
from bastion.tuf.models import TufHead, TufMetadata, TufPageVersion, TufQueue, TufRepository, TufTarget

logger = logging.getLogger("bastion.tuf")

BIN_PREFIX = "bins"
LOCK = "bastion:tuf-snapshot"
INDEX_NAME = ""  # the queue's name for the project list pages (simple/index.*)
ONLINE_ROLES = (Timestamp.type, Snapshot.type)
MAX_BATCH = 20_000
_SERIALIZER = JSONSerializer(compact=True)


@dataclass(frozen=True)
class Lifetimes:
    """How long each role's metadata is valid after signing."""

    root: timedelta
    targets: timedelta
    bins: timedelta
    snapshot: timedelta
    timestamp: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> Lifetimes:
        return cls(
            root=settings.duration("tuf_root_expiry"),
            targets=settings.duration("tuf_targets_expiry"),
            bins=settings.duration("tuf_bins_expiry"),
            snapshot=settings.duration("tuf_snapshot_expiry"),
            timestamp=settings.duration("tuf_timestamp_expiry"),
        )

    def of(self, role: str) -> timedelta:
        if role.startswith(BIN_PREFIX + "-"):
            return self.bins
        return cast(timedelta, getattr(self, role))


@dataclass
class CycleReport:
    """What one run of the snapshot process signed."""

    queued: int = 0
    """Queue entries consumed."""
    projects: int = 0
    added: int = 0
    """Targets added or changed."""
    removed: int = 0
    bins: dict[str, int] = field(default_factory=dict)
    """Re-signed bin-n roles and their new versions."""
    snapshot: int | None = None
    timestamp: int | None = None
    oldest_enqueued: datetime | None = None

    @property
    def signatures(self) -> int:
        """Signatures made: the bins, the snapshot and the timestamp."""
        return len(self.bins) + (self.snapshot is not None) + (self.timestamp is not None)


def bit_length(bins: int) -> int:
    return bins.bit_length() - 1


def succinct_roles(online_keyid: str, bins: int) -> SuccinctRoles:
    return SuccinctRoles([online_keyid], 1, bit_length(bins), BIN_PREFIX)


def _expiry(now: datetime, lifetime: timedelta) -> datetime:
    return (now + lifetime).replace(microsecond=0)


def metadata_bytes(md: Metadata[Any]) -> bytes:
    return md.to_bytes(_SERIALIZER)


def store_metadata(session: Session, role: str, md: Metadata[Any], now: datetime) -> bytes:
    """Store one signed version of ``role`` and make it the role's head; returns its bytes."""
    return store_many(session, [(role, md)], now)[role]


def store_many(session: Session, signed: list[tuple[str, Metadata[Any]]], now: datetime) -> dict[str, bytes]:
    """Store signed versions in bulk (one insert, one head upsert, one superseded update)."""
    rows = []
    heads = []
    bodies: dict[str, bytes] = {}
    for role, md in signed:
        body = metadata_bytes(md)
        bodies[role] = body
        expires = md.signed.expires
        rows.append({"role": role, "version": md.signed.version, "body": body, "expires": expires,
                     "created": now, "superseded": None})
        heads.append({"role": role, "version": md.signed.version, "expires": expires})
    if not rows:
        return bodies
    roles = [r for r, _ in signed]
    for chunk in _chunks(roles, 2000):
        session.execute(
            update(TufMetadata).where(TufMetadata.role.in_(chunk), TufMetadata.superseded.is_(None))
            .values(superseded=now)
        )
    session.execute(cast(Table, TufMetadata.__table__).insert(), rows)
    upsert(session, TufHead, heads, ["role"])
    return bodies


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def head_versions(session: Session, roles: Iterable[str] | None = None) -> dict[str, int]:
    query = select(TufHead.role, TufHead.version)
    if roles is not None:
        wanted = list(roles)
        result: dict[str, int] = {}
        for chunk in _chunks(wanted, 2000):
            result.update({r: v for r, v in session.execute(query.where(TufHead.role.in_(chunk)))})
        return result
    return {r: v for r, v in session.execute(query)}


def load_head(session: Session, role: str) -> Metadata[Any]:
    return Metadata.from_bytes(_head_body(session, role))


def _head_body(session: Session, role: str) -> bytes:
    body = session.execute(
        select(TufMetadata.body).join(TufHead, (TufHead.role == TufMetadata.role)
                                      & (TufHead.version == TufMetadata.version))
        .where(TufHead.role == role)
    ).scalar()
    if body is None:
        raise TufError(f"the TUF repository has no {role} metadata: run `bastion tuf init` (or start "
                       "`bastion serve` once on an embedded data dir)")
    return bytes(body)


def repository_row(session: Session) -> TufRepository | None:
    return session.get(TufRepository, 1)


# -- creating the repository -------------------------------------------------------------------
def initialize(session: Session, *, root_signers: Sequence[Signer], root_threshold: int, targets_signer: Signer,
               online_signer: Signer, bins: int, lifetimes: Lifetimes, development_keys: bool,
               now: datetime | None = None) -> None:
    """Create version 1 of every role and queue every existing simple page for signing."""
    now = now or utcnow()
    advisory_lock(session, LOCK)
    if repository_row(session) is not None:
        raise TufError("this index already has a TUF repository: use `bastion tuf rotate` to change keys")
    if not 1 <= root_threshold <= len(root_signers):
        raise TufError(f"root threshold {root_threshold} is impossible with {len(root_signers)} root keys")
    online_key = online_signer.public_key
    root = Root(expires=_expiry(now, lifetimes.root), consistent_snapshot=True)
    for signer in root_signers:
        root.add_key(signer.public_key, Root.type)
    root.roles[Root.type].threshold = root_threshold
    root.add_key(targets_signer.public_key, Targets.type)
    for role in ONLINE_ROLES:
        root.add_key(online_key, role)
    root_md = Metadata(root)
    for signer in root_signers:
        root_md.sign(signer, append=True)

    targets_md = _targets_metadata(1, online_key, bins, _expiry(now, lifetimes.targets))
    targets_md.sign(targets_signer)

    succinct = succinct_roles(online_key.keyid, bins)
    signed: list[tuple[str, Metadata[Any]]] = [(Root.type, root_md), (Targets.type, targets_md)]
    bin_expiry = _expiry(now, lifetimes.bins)
    for name in succinct.get_roles():
        md = Metadata(Targets(version=1, expires=bin_expiry))
        md.sign(online_signer)
        signed.append((name, md))
    store_many(session, signed, now)
    _publish(session, online_signer, {}, lifetimes, now)
    session.add(TufRepository(id=1, bins=bins, development_keys=development_keys, created=now))
    enqueue_all(session)


def _targets_metadata(version: int, online_key: Key, bins: int, expires: datetime) -> Metadata[Targets]:
    targets = Targets(version=version, expires=expires)
    targets.delegations = Delegations(keys={online_key.keyid: online_key},
                                      succinct_roles=succinct_roles(online_key.keyid, bins))
    return Metadata(targets)


def enqueue_all(session: Session) -> int:
    """Queue every project that has simple pages or signed targets, and the project list (used at
    creation and when TUF is turned on again: a project deleted meanwhile has no pages left, and
    its targets must go)."""
    names = {INDEX_NAME}
    for key in session.execute(select(RenderedPage.key).where(RenderedPage.key.like("simple/%/index.json"))).scalars():
        names.add(key.split("/")[1])
    names.update(session.execute(select(TufTarget.project).distinct()).scalars())
    enqueue(session, names)
    return len(names)


def enqueue_changed(session: Session, names: Iterable[str]) -> None:
    """Queue projects whose simple pages changed or went (inside the transaction that changed them),
    unless the index runs with TUF off."""
    settings = session.info.get("settings")
    if settings is not None and getattr(settings, "tuf", "on") == "off":
        return
    enqueue(session, names)


def enqueue(session: Session, names: Iterable[str]) -> None:
    """Queue projects whose simple pages changed (inside the transaction that changed them)."""
    now = utcnow()
    rows = [{"name": name, "enqueued": now} for name in sorted(set(names))]
    if rows:
        session.execute(cast(Table, TufQueue.__table__).insert(), rows)


def queue_depth(session: Session) -> tuple[int, datetime | None]:
    count, oldest = session.execute(select(func.count(TufQueue.id), func.min(TufQueue.enqueued))).one()
    return int(count or 0), oldest


# -- the snapshot process ------------------------------------------------------------------------
def _desired_targets(name: str, pages: dict[str, tuple[bytes, str]]) -> dict[str, tuple[str, int]]:
    """Target path -> (sha256, length) for a project's pages and the files its JSON page lists
    (the project list lists no files)."""
    desired = {key: (digest, len(body)) for key, (body, digest) in pages.items()}
    json_page = pages.get(simple_detail_key(name, "json")) if name != INDEX_NAME else None
    if json_page is not None:
        for entry in json.loads(json_page[0]).get("files", []):
            url = entry["url"]
            path = url[len("../../"):] if url.startswith("../../") else url
            desired[path] = (entry["hashes"]["sha256"], int(entry["size"]))
    return desired


@dataclass
class SnapshotPlan:
    """A snapshot run computed and signed from a read of the repository, to be stored by
    ``apply_snapshot`` if nothing was signed in between (so signing holds no write lock)."""

    report: CycleReport
    queue_ids: list[int]
    base_timestamp: int
    """The timestamp version the plan builds on; another version at apply time makes it stale."""
    target_upserts: list[dict[str, Any]]
    target_deletes: list[str]
    pages: list[tuple[str, str | None, bytes | None]]
    """(page path, its digest now or None when it is gone, its body when it is a new target)."""
    signed: list[tuple[str, Metadata[Any]]]
    """New bins, then the snapshot, then the timestamp."""


class PlanStale(TufError):
    """Another run stored metadata after the plan was read: plan again."""


def _page_keys(name: str) -> list[str]:
    return ([simple_index_key("html"), simple_index_key("json")] if name == INDEX_NAME
            else [simple_detail_key(name, "html"), simple_detail_key(name, "json")])


def _sign_verified(md: Metadata[Any], signer: Signer, key: Key, role: str) -> None:
    """Sign the canonical bytes once and check the signature against the key root lists, so that
    a signer that names the trusted key but signs with another (a KMS or HSM key replaced under
    its URI after the start-up check, one member of a key pool that diverged) never publishes a
    set no client accepts: every signature is verified."""
    data = md.signed_bytes
    signature = signer.sign(data)
    try:
        if signature.keyid != key.keyid:
            raise ValueError(signature.keyid)
        key.verify_signature(signature, data)
    except Exception:  # noqa: BLE001  (securesystemslib's VerificationError, or a foreign keyid)
        raise TufError(f"the online signer's {role} signature does not verify with the key root lists for it: the "
                       "key behind BASTION_TUF_ONLINE_SIGNER changed; configure the trusted key, or rotate to the new "
                       "one with `bastion tuf rotate` (nothing was stored)") from None
    md.signatures.clear()
    md.signatures[signature.keyid] = signature


def _bin_metadata(listed: dict[str, dict[str, TargetFile]], versions: dict[str, int], signer: Signer, key: Key,
                  lifetimes: Lifetimes, now: datetime) -> list[tuple[str, Metadata[Any]]]:
    expires = _expiry(now, lifetimes.bins)
    signed = []
    for name in sorted(listed):
        md = Metadata(Targets(version=versions.get(name, 0) + 1, expires=expires, targets=listed[name]))
        _sign_verified(md, signer, key, name)
        signed.append((name, md))
    return signed


def _listed_targets(session: Session, bins: Iterable[str]) -> dict[str, dict[str, TargetFile]]:
    """The current targets of ``bins``, by bin."""
    listed: dict[str, dict[str, TargetFile]] = {name: {} for name in bins}
    for chunk in _chunks(sorted(listed), 2000):
        for row in session.execute(select(TufTarget.path, TufTarget.sha256, TufTarget.length, TufTarget.bin)
                                   .where(TufTarget.bin.in_(chunk))):
            listed[row.bin][row.path] = TargetFile(row.length, {"sha256": row.sha256}, row.path)
    return listed


def _sign_bins(session: Session, bins: set[str], signer: Signer, lifetimes: Lifetimes,
               now: datetime) -> list[tuple[str, Metadata[Any]]]:
    """New versions of ``bins`` listing their current targets, signed with the online key."""
    if not bins:
        return []
    return _bin_metadata(_listed_targets(session, bins), head_versions(session, bins), signer,
                         online_public_key(session), lifetimes, now)


def _snapshot_and_timestamp(heads: dict[str, int], signer: Signer, key: Key, changed_meta: dict[str, int],
                            lifetimes: Lifetimes, now: datetime) -> list[tuple[str, Metadata[Any]]]:
    """A new snapshot listing the newest version of targets and every bin, with ``changed_meta``
    ({'<role>.json': version}) folded in, and a new timestamp pointing at it (signed, not stored).

    The versions come from the heads table (``heads``: ``head_versions``), not from parsing the
    previous snapshot: every stored version of targets or a bin is listed by the snapshot stored
    with it."""
    meta = {f"{role}.json": MetaFile(version) for role, version in heads.items()
            if role not in (Root.type, Snapshot.type, Timestamp.type)}
    for name, version in changed_meta.items():
        meta[name] = MetaFile(version)
    snapshot_md = Metadata(Snapshot(version=heads.get(Snapshot.type, 0) + 1,
                                    expires=_expiry(now, lifetimes.snapshot), meta=meta))
    _sign_verified(snapshot_md, signer, key, Snapshot.type)
    snapshot_bytes = metadata_bytes(snapshot_md)
    snapshot_file = MetaFile(snapshot_md.signed.version, length=len(snapshot_bytes),
                             hashes={"sha256": hashlib.sha256(snapshot_bytes).hexdigest()})
    timestamp_md = Metadata(Timestamp(version=heads.get(Timestamp.type, 0) + 1,
                                      expires=_expiry(now, lifetimes.timestamp), snapshot_meta=snapshot_file))
    _sign_verified(timestamp_md, signer, key, Timestamp.type)
    return [(Snapshot.type, snapshot_md), (Timestamp.type, timestamp_md)]


def _publish(session: Session, signer: Signer, changed_meta: dict[str, int], lifetimes: Lifetimes,
             now: datetime) -> tuple[int, int]:
    """Store a new snapshot (``changed_meta`` folded in) and timestamp; returns their versions."""
    key = online_public_key(session)
    signed = _snapshot_and_timestamp(head_versions(session), signer, key, changed_meta, lifetimes, now)
    store_many(session, signed, now)
    return signed[0][1].signed.version, signed[1][1].signed.version


def online_public_key(session: Session) -> Key:
    """The key root names for the online roles (every snapshot run asks, twice)."""
    return _online_key_of(_head_body(session, Root.type))


@functools.lru_cache(maxsize=16)
def _online_key_of(root_body: bytes) -> Key:
    root = Metadata[Root].from_bytes(root_body).signed
    return root.keys[root.roles[Timestamp.type].keyids[0]]


class SignerRotated(TufError):
    """The online key changed under a run (a rotation committed first): reload the signer, retry."""


def _require_online(session: Session, signer: Signer) -> Key:
    """The online key root trusts now, checked against ``signer`` inside the locked transaction."""
    trusted = online_public_key(session)
    if trusted.keyid != signer.public_key.keyid:
        raise SignerRotated(f"the online key is now {trusted.keyid[:16]}..., not the signer's "
                            f"{signer.public_key.keyid[:16]}...: configure the rotated key")
    return trusted


def plan_snapshot(session: Session, signer: Signer, lifetimes: Lifetimes, *, now: datetime | None = None,
                  max_batch: int = MAX_BATCH) -> SnapshotPlan | None:
    """Read what is queued, work out the target changes and sign new bins, one snapshot and one
    timestamp, without writing anything; None if nothing was queued."""
    now = now or utcnow()
    # Read first: on PostgreSQL (READ COMMITTED) each later statement may see a newer commit, and
    # every run that stores metadata stores a new timestamp, so apply_snapshot then finds another
    # timestamp than this one and refuses the plan as stale.
    base = head_versions(session, [Timestamp.type]).get(Timestamp.type, 0)
    rows = session.execute(select(TufQueue.id, TufQueue.name, TufQueue.enqueued)
                           .order_by(TufQueue.id).limit(max_batch)).all()
    if not rows:
        return None
    repo = repository_row(session)
    if repo is None:
        raise TufError("the TUF repository is not initialised: run `bastion tuf init`")
    online_key = _require_online(session, signer)
    succinct = succinct_roles(online_key.keyid, repo.bins)
    report = CycleReport(queued=len(rows), oldest_enqueued=min(row.enqueued for row in rows))
    names = sorted({row.name for row in rows})
    report.projects = len(names)
    keys = [key for name in names for key in _page_keys(name)]
    pages: dict[str, tuple[bytes, str]] = {}
    for chunk in _chunks(keys, 1000):
        pages.update({row.key: (row.body, row.sha256) for row in session.execute(
            select(RenderedPage.key, RenderedPage.body, RenderedPage.sha256).where(RenderedPage.key.in_(chunk)))})
    current: dict[str, dict[str, tuple[str, int]]] = {name: {} for name in names}
    for chunk in _chunks(names, 1000):
        for row in session.execute(select(TufTarget.path, TufTarget.sha256, TufTarget.length, TufTarget.project)
                                   .where(TufTarget.project.in_(chunk))):
            current[row.project][row.path] = (row.sha256, row.length)
    upserts: list[dict[str, Any]] = []
    deletes: list[str] = []
    page_changes: list[tuple[str, str | None, bytes | None]] = []
    for name in names:
        own = {key: pages[key] for key in _page_keys(name) if key in pages}
        desired = _desired_targets(name, own)
        changed = {path: value for path, value in desired.items() if current[name].get(path) != value}
        upserts.extend({"path": path, "sha256": digest, "length": length,
                        "bin": succinct.get_role_for_target(path), "project": name}
                       for path, (digest, length) in changed.items())
        deletes.extend(path for path in current[name] if path not in desired)
        for key in _page_keys(name):
            page = own.get(key)
            page_changes.append((key, page[1] if page else None, page[0] if page and key in changed else None))
    report.added, report.removed = len(upserts), len(deletes)
    touched = {row["bin"] for row in upserts} | {succinct.get_role_for_target(path) for path in deletes}
    listed = _listed_targets(session, touched)
    for path in deletes:
        listed[succinct.get_role_for_target(path)].pop(path, None)
    for change in upserts:
        listed[change["bin"]][change["path"]] = TargetFile(change["length"], {"sha256": change["sha256"]},
                                                            change["path"])
    heads = head_versions(session)  # read once: the bins' versions and the snapshot's list
    signed = _bin_metadata(listed, heads, signer, online_key, lifetimes, now)
    report.bins = {name: md.signed.version for name, md in signed}
    signed += _snapshot_and_timestamp(heads, signer, online_key,
                                      {f"{name}.json": version for name, version in report.bins.items()},
                                      lifetimes, now)
    report.snapshot, report.timestamp = signed[-2][1].signed.version, signed[-1][1].signed.version
    return SnapshotPlan(report=report, queue_ids=[row.id for row in rows], base_timestamp=base,
                        target_upserts=upserts, target_deletes=deletes, pages=page_changes, signed=signed)


_page_versions = cast(Table, TufPageVersion.__table__)
_SUPERSEDE_PAGE = update(_page_versions).where(
    _page_versions.c.path == bindparam("b_path"), _page_versions.c.superseded.is_(None),
    _page_versions.c.sha256 != bindparam("b_sha256"),
).values(superseded=bindparam("b_now"))


def apply_snapshot(session: Session, plan: SnapshotPlan, *, now: datetime | None = None) -> CycleReport:
    """Store a plan under the repository lock, in the caller's write transaction; PlanStale if
    another run stored metadata since the plan was read (nothing is written then)."""
    now = now or utcnow()
    advisory_lock(session, LOCK)
    if head_versions(session, [Timestamp.type]).get(Timestamp.type) != plan.base_timestamp:
        raise PlanStale("another snapshot run stored metadata since this one was planned")
    upsert(session, TufTarget, plan.target_upserts, ["path"])
    for chunk in _chunks(plan.target_deletes, 2000):
        session.execute(delete(TufTarget).where(TufTarget.path.in_(chunk)))
    if plan.pages:  # two executemany statements for every page of the run
        session.execute(_SUPERSEDE_PAGE, [{"b_path": key, "b_sha256": digest or "", "b_now": now}
                                          for key, digest, _ in plan.pages])
        upsert(session, TufPageVersion, [{"path": key, "sha256": digest, "body": body, "created": now,
                                          "superseded": None} for key, digest, body in plan.pages if body is not None],
               ["path", "sha256"])
    store_many(session, plan.signed, now)
    for chunk in _chunks(plan.queue_ids, 2000):
        session.execute(delete(TufQueue).where(TufQueue.id.in_(chunk)))
    return plan.report


def snapshot_cycle(session: Session, signer: Signer, lifetimes: Lifetimes, *, now: datetime | None = None,
                   max_batch: int = MAX_BATCH) -> CycleReport | None:
    """Plan and store one run in the caller's write transaction (under the repository lock
    throughout); None if nothing was queued. The server plans under a read instead and stores
    in a short write (``service.run_snapshot``)."""
    now = now or utcnow()
    advisory_lock(session, LOCK)
    plan = plan_snapshot(session, signer, lifetimes, now=now, max_batch=max_batch)
    return None if plan is None else apply_snapshot(session, plan, now=now)


# -- keeping online metadata fresh, and garbage --------------------------------------------------
@dataclass
class RefreshReport:
    bins: int = 0
    snapshot: int | None = None
    timestamp: int | None = None
    warnings: list[str] = field(default_factory=list)
    root: int | None = None
    """The new root version, when root was re-signed."""


def refresh(session: Session, signer: Signer, lifetimes: Lifetimes, *, now: datetime | None = None,
            offline_signers: dict[str, list[Signer]] | None = None) -> RefreshReport:
    """Re-sign every online role that has used half its lifetime (bins that never change too), and
    warn about offline roles (root, targets) that expire within 30 days; when their keys are at
    hand (``offline_signers``: the development key set) they are re-signed at half their lifetime
    instead (not at every run: every root version is kept and walked by clients)."""
    now = now or utcnow()
    advisory_lock(session, LOCK)
    _require_online(session, signer)
    report = RefreshReport()
    heads = {row.role: (row.version, row.expires) for row in session.execute(
        select(TufHead.role, TufHead.version, TufHead.expires))}
    changed_meta: dict[str, int] = {}
    offline_signers = offline_signers or {}
    for role in (Root.type, Targets.type):
        version, expires = heads[role]
        signers = offline_signers.get(role)
        if not signers:
            if expires - now < timedelta(days=30):
                report.warnings.append(f"{role} metadata expires {expires:%Y-%m-%d %H:%M} UTC: re-sign it "
                                       "with its offline keys (`bastion tuf rotate`)")
            continue
        if expires - now < lifetimes.of(role) / 2:
            md = load_head(session, role)
            md.signed.version = version + 1
            md.signed.expires = _expiry(now, lifetimes.of(role))
            md.signatures.clear()
            for offline in signers:
                md.sign(offline, append=True)
            trusted = load_head(session, Root.type).signed
            try:  # only keys root lists count: a stale key file must never produce bad metadata
                trusted.verify_delegate(role, md.signed_bytes, md.signatures)
            except Exception:  # noqa: BLE001  (python-tuf's UnsignedMetadataError)
                report.warnings.append(f"{role} metadata expires {expires:%Y-%m-%d %H:%M} UTC and the key files "
                                       "at hand do not meet its threshold: re-sign it with `bastion tuf rotate`")
                continue
            store_metadata(session, role, md, now)
            if role == Targets.type:
                changed_meta["targets.json"] = version + 1
            else:
                report.root = version + 1
    stale_bins = {role for role, (_, expires) in heads.items()
                  if role.startswith(BIN_PREFIX + "-") and expires - now < lifetimes.bins / 2}
    signed = _sign_bins(session, stale_bins, signer, lifetimes, now)
    store_many(session, signed, now)
    report.bins = len(signed)
    changed_meta.update({f"{name}.json": md.signed.version for name, md in signed})
    snapshot_expires = heads[Snapshot.type][1]
    timestamp_expires = heads[Timestamp.type][1]
    if (changed_meta or snapshot_expires - now < lifetimes.snapshot / 2
            or timestamp_expires - now < lifetimes.timestamp / 2):
        report.snapshot, report.timestamp = _publish(session, signer, changed_meta, lifetimes, now)
    return report


def collect_garbage(session: Session, grace: timedelta, *, now: datetime | None = None,
                    limit: int | None = None) -> tuple[int, int]:
    """Delete metadata versions and page versions superseded more than ``grace`` ago (never a root);
    at most ``limit`` of each when given (the server deletes in short transactions).

    A superseded bin version is referenced only by snapshots that were themselves superseded no
    later than it, so the whole consistent set a client may still be reading goes together.
    """
    now = now or utcnow()
    cutoff = now - grace
    old_metadata = (TufMetadata.role != Root.type, TufMetadata.superseded.is_not(None),
                    TufMetadata.superseded < cutoff)
    old_pages = (TufPageVersion.superseded.is_not(None), TufPageVersion.superseded < cutoff)
    if limit is not None:
        metadata_keys = [tuple(row) for row in session.execute(
            select(TufMetadata.role, TufMetadata.version).where(*old_metadata).limit(limit))]
        page_keys = [tuple(row) for row in session.execute(
            select(TufPageVersion.path, TufPageVersion.sha256).where(*old_pages).limit(limit))]
        if metadata_keys:
            session.execute(delete(TufMetadata).where(
                tuple_(TufMetadata.role, TufMetadata.version).in_(metadata_keys)))
        if page_keys:
            session.execute(delete(TufPageVersion).where(
                tuple_(TufPageVersion.path, TufPageVersion.sha256).in_(page_keys)))
        return len(metadata_keys), len(page_keys)
    metadata = session.execute(delete(TufMetadata).where(*old_metadata))
    pages = session.execute(delete(TufPageVersion).where(*old_pages))
    return int(getattr(metadata, "rowcount", 0) or 0), int(getattr(pages, "rowcount", 0) or 0)


# -- key rotation ----------------------------------------------------------------------------------
@dataclass
class RotationReport:
    root_version: int
    targets_version: int | None = None
    bins: int = 0
    snapshot: int | None = None
    timestamp: int | None = None


def _signing_count(root: Root, role: str, signers: Sequence[Signer]) -> int:
    keyids = set(root.roles[role].keyids)
    return len({s.public_key.keyid for s in signers} & keyids)


def rotate(session: Session, *, root_signers: Sequence[Signer], lifetimes: Lifetimes,
           new_root_signers: Sequence[Signer] | None = None, new_root_threshold: int | None = None,
           targets_signer: Signer | None = None, new_online_signer: Signer | None = None,
           new_targets_signer: Signer | None = None, online_signer: Signer | None = None,
           now: datetime | None = None) -> RotationReport:
    """A new root signed by the old root threshold and the new one. With ``new_online_signer`` the
    online key is replaced: targets (signed with ``targets_signer``) delegates the bins to it, and
    every bin, the snapshot and the timestamp are re-signed with it, so a client that has the new
    root refuses anything signed with the old online key. With ``new_targets_signer`` the targets
    key is replaced and targets re-signed with it (the old targets key is not needed)."""
    now = now or utcnow()
    advisory_lock(session, LOCK)
    old_md = load_head(session, Root.type)
    old_root = old_md.signed
    old_threshold = old_root.roles[Root.type].threshold
    if _signing_count(old_root, Root.type, root_signers) < old_threshold:
        raise TufError(f"rotation needs {old_threshold} of the current root keys; "
                       f"{_signing_count(old_root, Root.type, root_signers)} of those given are root keys: "
                       "pass more --root-key files written by `bastion tuf init`")
    if new_targets_signer is not None:
        targets_signer = new_targets_signer
    elif new_online_signer is not None and targets_signer is None:
        raise TufError("rotating the online key re-signs targets: pass --targets-key (the offline targets key)")
    if (targets_signer is not None and new_targets_signer is None
            and _signing_count(old_root, Targets.type, [targets_signer]) < 1):
        raise TufError("the --targets-key given is not the targets key listed in root: give the targets key "
                       "written by `bastion tuf init`")
    new_md = Metadata.from_bytes(metadata_bytes(old_md))
    root = new_md.signed
    root.version += 1
    root.expires = _expiry(now, lifetimes.root)
    if new_root_signers:
        for keyid in list(root.roles[Root.type].keyids):
            root.revoke_key(keyid, Root.type)
        for signer in new_root_signers:
            root.add_key(signer.public_key, Root.type)
        threshold = new_root_threshold or old_threshold
        if not 1 <= threshold <= len(new_root_signers):
            raise TufError(f"root threshold {threshold} is impossible with {len(new_root_signers)} new root keys")
        root.roles[Root.type].threshold = threshold
    if new_targets_signer is not None:
        for keyid in list(root.roles[Targets.type].keyids):
            root.revoke_key(keyid, Targets.type)
        root.add_key(new_targets_signer.public_key, Targets.type)
    if new_online_signer is not None:
        for role in ONLINE_ROLES:
            for keyid in list(root.roles[role].keyids):
                root.revoke_key(keyid, role)
            root.add_key(new_online_signer.public_key, role)
    new_md.signatures.clear()
    seen: set[str] = set()
    for signer in [*root_signers, *(new_root_signers or [])]:
        if signer.public_key.keyid not in seen:
            seen.add(signer.public_key.keyid)
            new_md.sign(signer, append=True)
    try:
        old_root.verify_delegate(Root.type, new_md.signed_bytes, new_md.signatures)
        root.verify_delegate(Root.type, new_md.signed_bytes, new_md.signatures)
    except Exception as exc:  # noqa: BLE001  (python-tuf's UnsignedMetadataError)
        raise TufError(f"the new root would not verify ({exc}): pass the root keys of both the old and the "
                       "new threshold") from None
    store_metadata(session, Root.type, new_md, now)
    report = RotationReport(root_version=root.version)
    repo_row = repository_row(session)
    if repo_row is not None and new_root_signers and new_targets_signer is not None:
        repo_row.development_keys = False  # every offline key is new: the development set is retired
    if new_online_signer is None and new_targets_signer is None:
        return report
    assert targets_signer is not None
    repo = repository_row(session)
    assert repo is not None
    targets_version = head_versions(session, [Targets.type])[Targets.type] + 1
    online_key = new_online_signer.public_key if new_online_signer is not None else online_public_key(session)
    targets_md = _targets_metadata(targets_version, online_key, repo.bins, _expiry(now, lifetimes.targets))
    targets_md.sign(targets_signer)
    store_metadata(session, Targets.type, targets_md, now)
    report.targets_version = targets_version
    if new_online_signer is None:
        if online_signer is None:
            raise TufError("replacing the targets key re-signs snapshot and timestamp: the online signer is needed")
        _require_online(session, online_signer)
        report.snapshot, report.timestamp = _publish(session, online_signer, {"targets.json": targets_version},
                                                     lifetimes, now)
        return report
    every_bin = set(succinct_roles(new_online_signer.public_key.keyid, repo.bins).get_roles())
    signed = _sign_bins(session, every_bin, new_online_signer, lifetimes, now)
    store_many(session, signed, now)
    report.bins = len(signed)
    changed = {f"{name}.json": md.signed.version for name, md in signed}
    changed["targets.json"] = targets_version
    report.snapshot, report.timestamp = _publish(session, new_online_signer, changed, lifetimes, now)
    return report
