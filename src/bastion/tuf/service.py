"""The TUF repository of one Bastion instance: created or opened at start, its online signer
checked, the snapshot worker and the refresh task run (used by the server and the CLI)."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from securesystemslib.signer import Signer
from sqlalchemy import func, select
from tuf.api.metadata import Root, Snapshot, Targets, Timestamp

from bastion.changes import ChangeMarker
from bastion.events import record_event
from bastion.tuf import repository
from bastion.tuf.keys import (
    OFFLINE_DIR,
    ROOT_KEY_NAME,
    TARGETS_KEY_NAME,
    TufError,
    generate_key_files,
    load_key_file,
    load_signer,
)
from bastion.tuf.models import TufHead, TufMetadata, TufTarget

if TYPE_CHECKING:
    from bastion.services import Bastion

logger = logging.getLogger("bastion.tuf")

DEVELOPMENT_WARNING = (
    "TUF: this index signs with a DEVELOPMENT key set that `bastion serve` made by itself in {keys}: "
    "its ROOT KEY IS ONLINE, so whoever takes this server can sign anything. For production, run "
    "`bastion tuf init` on a fresh index and move the offline keys away."
)
GC_BATCH = 500
"""Metadata or page versions deleted per garbage-collection transaction."""
FAULT_PAUSE_ENV = "BASTION_TUF_FAULT_PAUSE"
"""Seconds the snapshot worker sleeps inside its transaction, before commit (crash tests only)."""


def online_signer(bastion: Bastion) -> Signer:
    """The configured online signer, checked against the key root trusts (TufError otherwise)."""
    with bastion.db.read() as session:
        public_key = repository.online_public_key(session)
    return load_signer(bastion.settings.effective_tuf_online_signer, public_key, what="TUF online")


def development_offline_signers(bastion: Bastion) -> dict[str, list[Signer]]:
    """The offline keys of a development key set, when they are still beside the online key."""
    offline = bastion.settings.tuf_keys_dir / OFFLINE_DIR
    roots = sorted(offline.glob(ROOT_KEY_NAME.format(n="*")))
    targets = offline / TARGETS_KEY_NAME
    if not roots or not targets.is_file():
        return {}
    try:
        return {Root.type: [load_key_file(p, what="root") for p in roots],
                Targets.type: [load_key_file(targets, what="targets")]}
    except TufError:
        return {}


def create_development_repository(bastion: Bastion) -> Path:
    """A key set with every key in the data dir, and version 1 of every role (loudly online)."""
    keys_dir = bastion.settings.tuf_keys_dir
    _, roots, targets, online = generate_key_files(keys_dir)
    with bastion.db.write() as session:
        repository.initialize(session, root_signers=roots, root_threshold=2, targets_signer=targets,
                              online_signer=online, bins=bastion.settings.tuf_bins,
                              lifetimes=repository.Lifetimes.from_settings(bastion.settings),
                              development_keys=True)
        record_event(session, "tuf.init", actor="bastion serve", secret=bastion.secret,
                     details={"bins": bastion.settings.tuf_bins, "development_keys": True})
    return keys_dir


def prepare(bastion: Bastion, *, announce: bool = True) -> Signer | None:
    """At server start: open (or, on a fresh index, create with development keys) the repository
    and check the online signer. None when TUF is off; TufError when signing is configured but
    cannot work, so that the server refuses to start rather than serve unsigned state."""
    settings = bastion.settings
    with bastion.db.read() as session:
        repo = repository.repository_row(session)
        development = bool(repo and repo.development_keys)
    if settings.tuf == "off":
        if repo is not None and not repo.suspended:
            with bastion.db.write() as session:
                row = repository.repository_row(session)
                assert row is not None
                row.suspended = True
            logger.warning("TUF is off (BASTION_TUF=off): /tuf/metadata/ is not served and changes are not "
                           "signed; turning it back on re-signs every project")
        return None
    check_refresh_interval(bastion)
    if repo is None:
        create_development_repository(bastion)
        development = True
    elif repo.bins != settings.tuf_bins:
        raise TufError(f"BASTION_TUF_BINS is {settings.tuf_bins} but the TUF repository was created with "
                       f"{repo.bins} bins, and the bin count cannot change: set BASTION_TUF_BINS={repo.bins}")
    signer = online_signer(bastion)
    if repo is not None and repo.suspended:
        with bastion.db.write() as session:
            row = repository.repository_row(session)
            assert row is not None
            row.suspended = False
            repository.enqueue_all(session)
    if development and announce:
        logger.warning(DEVELOPMENT_WARNING.format(keys=settings.tuf_keys_dir))
    return signer


def check_refresh_interval(bastion: Bastion) -> None:
    """TufError unless the refresh task runs often enough: it re-signs an online role once that
    role has used half its lifetime, so an interval of half the shortest lifetime or more lets
    the role expire between two runs (clients then refuse every download)."""
    settings = bastion.settings
    interval = settings.duration("tuf_refresh_interval")
    name = min(("tuf_timestamp_expiry", "tuf_snapshot_expiry", "tuf_bins_expiry"), key=settings.duration)
    shortest = settings.duration(name)
    if interval * 2 < shortest:
        return
    seconds = max(int(shortest.total_seconds()) // 4, 1)
    unit = next((u for u, n in (("d", 86400), ("h", 3600), ("m", 60)) if seconds % n == 0), "s")
    suggestion = f"{seconds // dict(d=86400, h=3600, m=60, s=1)[unit]}{unit}"
    raise TufError(f"BASTION_TUF_REFRESH_INTERVAL ({settings.tuf_refresh_interval}) must be shorter than half of "
                   f"BASTION_{name.upper()} ({getattr(settings, name)}): online metadata would expire between two "
                   f"refreshes; set BASTION_TUF_REFRESH_INTERVAL to at most {suggestion} (or lengthen the expiry)")


def write_marker(bastion: Bastion, version: int) -> None:
    """Tell every process that timestamp.json changed (one small file replaced atomically)."""
    ChangeMarker(bastion.settings.tuf_changes_path).write(str(version))


def run_snapshot(bastion: Bastion, signer: Signer, *, attempts: int = 5) -> repository.CycleReport | None:
    """One snapshot-process run (None when nothing was queued): planned and signed under a read
    transaction, stored in a short write transaction. Uploads commit while the run signs (on
    SQLite a write transaction would hold the database's one write lock all along); a plan that
    another process's run made stale is planned again."""
    lifetimes = repository.Lifetimes.from_settings(bastion.settings)
    pause = float(os.environ.get(FAULT_PAUSE_ENV) or 0)
    for attempt in range(1, attempts + 1):
        with bastion.db.read() as session:
            plan = repository.plan_snapshot(session, signer, lifetimes)
        if plan is None:
            return None
        try:
            with bastion.db.write() as session:
                report = repository.apply_snapshot(session, plan)
                if pause:
                    logger.warning("TUF fault injection: pausing %.1fs before committing snapshot %s", pause,
                                   report.snapshot)
                    time.sleep(pause)
        except repository.PlanStale:
            if attempt == attempts:
                raise
            continue
        if report.timestamp is not None:
            write_marker(bastion, report.timestamp)
        return report
    return None  # not reached: the last attempt returns or raises


def run_refresh(bastion: Bastion, signer: Signer) -> repository.RefreshReport:
    """Re-sign online roles past half their life, collect garbage; in its own transaction. When
    a rotation committed since ``signer`` was chosen, the configured signer is reloaded once."""
    try:
        return _refresh(bastion, signer)
    except repository.SignerRotated:
        logger.warning("TUF: the online key was rotated during a refresh; reloading it")
        return _refresh(bastion, online_signer(bastion))


def _refresh(bastion: Bastion, signer: Signer) -> repository.RefreshReport:
    settings = bastion.settings
    with bastion.db.read() as session:
        repo = repository.repository_row(session)
    offline = development_offline_signers(bastion) if repo is not None and repo.development_keys else {}
    with bastion.db.write() as session:
        report = repository.refresh(session, signer, repository.Lifetimes.from_settings(settings),
                                    offline_signers=offline)
    grace = settings.duration("tuf_gc_grace")
    while True:  # in short transactions: one big delete would hold SQLite's write lock for seconds
        with bastion.db.write() as session:
            removed = repository.collect_garbage(session, grace, limit=GC_BATCH)
        if max(removed) < GC_BATCH:
            break
    for warning in report.warnings:
        logger.warning("TUF: %s", warning)
    if report.timestamp is not None or report.root is not None:  # a new root alone changes root.json too
        write_marker(bastion, report.timestamp if report.timestamp is not None else report.root or 0)
    return report


# A snapshot run under a stream of uploads starts no sooner than PACING times the last run's
# duration after it. A run costs a fixed part (the snapshot lists every bin) plus a little per
# project: spacing the runs out lets each sign more uploads. 30 keeps signing under about 3% of
# the process and a stream's uploads signed within a fraction of a second.
PACING = 30


class SnapshotWorker:
    """The one thread per process that runs the snapshot process: woken at once by an upload in
    this process, and at least once per ``tuf_window`` for changes other processes queued.
    Across processes the repository lock serializes runs."""

    def __init__(self, bastion: Bastion, signer: Signer) -> None:
        self.bastion = bastion
        self.signer = signer
        window = bastion.settings.duration("tuf_window").total_seconds()
        self.poll = max(window / 2, 0.05)
        # Under a stream of uploads, one run signs every upload queued since the last one: a run
        # starts no sooner than PACING times the last run's duration after it (signing takes at
        # most about 1/PACING of the process), and never waits more than half the window, so a
        # busy index signs a few times a second instead of once per upload, an upload that follows
        # a quiet spell is signed at once, and every upload is signed within tuf_window.
        self.max_spacing = window / 2
        self._wake = threading.Event()
        self._urgent = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0

    def wake(self, *, now: bool = False) -> None:
        """Ask for a run: at once after a quiet spell, paced under a stream of changes; ``now``
        skips the pacing (a caller that waits for the queue to empty)."""
        if now:
            self._urgent.set()
        self._wake.set()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="bastion-tuf-snapshot", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._urgent.set()  # ends a paced wait
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def current_signer(self) -> Signer:
        """The signer, reloaded when root names another online key (after `bastion tuf rotate`)."""
        with self.bastion.db.read() as session:
            trusted = repository.online_public_key(session)
        if trusted.keyid != self.signer.public_key.keyid:
            self.signer = online_signer(self.bastion)
            logger.warning("TUF: the online key was rotated; now signing with key %s", trusted.keyid[:16])
        return self.signer

    def _loop(self) -> None:
        failures = 0
        next_start = float("-inf")
        while not self._stop.is_set():
            self._wake.wait(self.poll)
            if self._urgent.wait(max(0.0, next_start - time.monotonic())):
                self._urgent.clear()
            if self._stop.is_set():
                return
            self._wake.clear()
            started = time.monotonic()
            signed = False
            try:
                while not self._stop.is_set():
                    try:
                        report = run_snapshot(self.bastion, self.current_signer())
                    except repository.SignerRotated:  # a rotation committed under this run: reload
                        continue
                    self.runs += 1
                    signed = signed or report is not None
                    if report is None or report.queued < repository.MAX_BATCH:
                        break
                failures = 0
                if signed:  # a run that found nothing queued paces nothing
                    ended = time.monotonic()
                    next_start = ended + min(self.max_spacing, PACING * (ended - started))
            except Exception:  # noqa: BLE001  (logged; the queue keeps the work for the next run)
                failures += 1
                logger.exception("TUF snapshot run failed (the queue is kept; retrying)")
                self._stop.wait(min(30.0, 0.5 * 2 ** min(failures, 6)))


@dataclass(frozen=True)
class RoleStatus:
    role: str
    version: int
    expires: datetime


@dataclass(frozen=True)
class Status:
    """What `bastion tuf status` shows."""

    bins: int
    development_keys: bool
    suspended: bool
    roles: list[RoleStatus]
    """root, targets, snapshot, timestamp."""
    bins_oldest_expiry: datetime | None
    bins_newest_version: int
    targets: int
    queue_depth: int
    queue_oldest: datetime | None
    metadata_rows: int
    metadata_bytes: int


def status(bastion: Bastion) -> Status:
    with bastion.db.read() as session:
        repo = repository.repository_row(session)
        if repo is None:
            raise TufError("this index has no TUF repository yet: run `bastion tuf init` (or start "
                           "`bastion serve` once, which creates a development key set)")
        roles = [RoleStatus(row.role, row.version, row.expires) for row in session.execute(
            select(TufHead.role, TufHead.version, TufHead.expires)
            .where(TufHead.role.in_([Root.type, Targets.type, Snapshot.type, Timestamp.type])))]
        order = [Root.type, Targets.type, Snapshot.type, Timestamp.type]
        roles.sort(key=lambda r: order.index(r.role))
        oldest, newest = session.execute(
            select(func.min(TufHead.expires), func.max(TufHead.version))
            .where(TufHead.role.like(repository.BIN_PREFIX + "-%"))).one()
        targets = session.execute(select(func.count()).select_from(TufTarget)).scalar() or 0
        depth, queue_oldest = repository.queue_depth(session)
        rows, size = session.execute(
            select(func.count(), func.coalesce(func.sum(func.length(TufMetadata.body)), 0))).one()
    return Status(bins=repo.bins, development_keys=repo.development_keys, suspended=repo.suspended,
                  roles=roles, bins_oldest_expiry=oldest, bins_newest_version=int(newest or 0),
                  targets=int(targets), queue_depth=depth, queue_oldest=queue_oldest,
                  metadata_rows=int(rows), metadata_bytes=int(size))
