"""PEP 458 TUF signing at scale: upload-to-signed latency, throughput, signatures/s, metadata bytes
per install and repository size, for Bastion's batched snapshot worker and, measured in the same
run, the naive approach (one snapshot + timestamp per upload).

    .venv/bin/python benchmarks/tuf.py                        # 100,000 targets, 256 and 16,384 bins, SQLite
    .venv/bin/python benchmarks/tuf.py --backends sqlite postgresql
    .venv/bin/python benchmarks/tuf.py --quick                # smoke run, under a minute

What runs is the server's own code, in-process (no HTTP): an "upload" is one write transaction that
re-renders one project's simple pages with one more file (``render_simple_detail``) and stores them
with ``store_pages`` (which queues the project for signing, as every upload does), then
``Bastion.notify_change`` (which wakes the snapshot worker). It does not write File/Release rows,
events or blobs, so it is cheaper than a real upload. The signing side is the real
``SnapshotWorker`` thread calling ``run_snapshot`` -> ``repository.plan_snapshot`` (read) and
``repository.apply_snapshot`` (write). The index is
synthetic: N projects whose JSON simple pages list synthetic files, signed from scratch by the same
worker code (``initialize`` + the snapshot process); targets = the 2 pages of every project + every
file + the 2 project-list pages. See benchmarks/README.md, section "TUF".
"""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# This file is named tuf.py and Python puts its directory first on sys.path, where it would shadow
# python-tuf (``import tuf`` would import this script): take that entry out before importing tuf.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or os.getcwd()).resolve() != HERE]

from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from securesystemslib.signer import CryptoSigner  # noqa: E402
from sqlalchemy import create_engine, func, select, text  # noqa: E402
from tuf.api.metadata import Metadata, Snapshot, Targets  # noqa: E402

from bastion.services import Bastion  # noqa: E402
from bastion.settings import load_settings  # noqa: E402
from bastion.simple.render import (  # noqa: E402
    FileView,
    ProjectView,
    ReleaseView,
    render_simple_detail,
    render_simple_index_of,
    simple_detail_key,
    store_pages,
)
from bastion.tuf import repository, service  # noqa: E402
from bastion.tuf.models import TufHead, TufMetadata, TufPageVersion, TufQueue, TufTarget  # noqa: E402

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
console = Console(highlight=False, soft_wrap=True)


def code_state() -> dict[str, Any]:
    """Which code was measured: the commit, and the files of the signing path changed since it."""
    root = HERE.parent

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = git("status", "--porcelain", "--", "src/bastion/tuf", "src/bastion/simple", "src/bastion/db.py")
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_changes": [line[3:] for line in changed.splitlines()],
        "repository_py_sha256": hashlib.sha256((root / "src/bastion/tuf/repository.py").read_bytes()).hexdigest()[:16],
    }


def log(message: str) -> None:
    console.print(f"[{time.strftime('%H:%M:%S')}] {message}", markup=False)


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * (len(ordered) - 1)))))]


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


# -- the synthetic index ---------------------------------------------------------------------------
def project_name(i: int) -> str:
    return f"tufbench-{i:05d}"


def _file(name: str, version: str, n: int) -> FileView:
    filename = f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    seed = filename.encode()
    sha256 = hashlib.sha256(seed).hexdigest()
    blake2 = hashlib.blake2b(seed, digest_size=32).hexdigest()
    return FileView(
        filename=filename, path=f"packages/{blake2[:2]}/{blake2[2:4]}/{blake2[4:]}/{filename}",
        packagetype="bdist_wheel", python_version="py3", size=10_000 + int(sha256[:6], 16) % 990_000,
        md5_digest=hashlib.md5(seed).hexdigest(), sha256_digest=sha256, blake2_256_digest=blake2,
        requires_python=">=3.9", metadata_sha256=hashlib.sha256(seed + b".metadata").hexdigest(),
        upload_time=EPOCH + timedelta(minutes=n), yanked=False, yanked_reason=None)


def project_view(i: int, files: int, extra: list[str]) -> ProjectView:
    """Project ``i`` with ``files`` releases 1.<n>.0 (one wheel each) plus the ``extra`` versions."""
    name = project_name(i)
    versions = [f"1.{n}.0" for n in range(files)] + extra
    releases = [ReleaseView(id=n + 1, version=v, yanked=False, yanked_reason=None, requires_python=">=3.9",
                            files=[_file(name, v, n)]) for n, v in enumerate(versions)]
    return ProjectView(id=i + 1, name=name, normalized_name=name, last_serial=len(versions), releases=releases)


# -- where the snapshot process spends its time ---------------------------------------------------
class Split:
    """Exclusive wall and CPU time (of the calling thread) per category, from wrappers put around
    the repository's functions. The functions themselves are unchanged; a wrapper costs about a
    microsecond per call."""

    def __init__(self) -> None:
        self.local = threading.local()
        self.lock = threading.Lock()
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.undo: list[tuple[Any, str, Any]] = []

    def reset(self) -> dict[str, dict[str, float]]:
        with self.lock:
            out = {"wall": dict(self.wall), "cpu": dict(self.cpu)}
            self.wall.clear()
            self.cpu.clear()
        return out

    def _stack(self) -> list[list[float]]:
        stack = getattr(self.local, "stack", None)
        if stack is None:
            stack = self.local.stack = []
        return stack

    def wrap(self, fn: Callable[..., Any], category: Callable[[tuple, Any], str]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            stack = self._stack()
            stack.append([0.0, 0.0])
            start, start_cpu = time.perf_counter(), time.thread_time()
            result = None
            try:
                result = fn(*args, **kwargs)
                return result
            finally:
                wall, cpu = time.perf_counter() - start, time.thread_time() - start_cpu
                child = stack.pop()
                if stack:
                    stack[-1][0] += wall
                    stack[-1][1] += cpu
                name = category(args, result)
                with self.lock:
                    self.wall[name] += wall - child[0]
                    self.cpu[name] += cpu - child[1]
        return timed

    def patch(self, owner: Any, attr: str, category: Callable[[tuple, Any], str], *, classmethod_: bool = False) -> None:
        original = owner.__dict__[attr]
        self.undo.append((owner, attr, original))
        if classmethod_:
            setattr(owner, attr, classmethod(self.wrap(original.__func__, category)))
        else:
            setattr(owner, attr, self.wrap(original, category))

    def restore(self) -> None:
        for owner, attr, original in reversed(self.undo):
            setattr(owner, attr, original)
        self.undo.clear()


def _role(signed_type: str) -> str:
    return "bins" if signed_type == Targets.type else signed_type


SPLIT_GROUPS = [
    # (group, category) in print order
    ("DB", "plan: queue, pages, target changes (read)"),
    ("DB", "apply: lock, stale check, write targets/pages, delete queue"),
    ("DB", "store: insert versions + heads"),
    ("DB", "transaction begin/commit + marker"),
    ("DB", "head versions"),
    ("DB", "read root"),
    ("DB", "read snapshot"),
    ("bins", "bins: query targets"),
    ("bins", "bins: build"),
    ("bins", "bins: canonical JSON"),
    ("bins", "bins: Ed25519"),
    ("bins", "bins: serialize"),
    ("snapshot", "snapshot: parse previous"),
    ("snapshot", "snapshot/timestamp: build meta + sha256"),
    ("snapshot", "snapshot: canonical JSON"),
    ("snapshot", "snapshot: Ed25519"),
    ("snapshot", "snapshot: serialize"),
    ("timestamp", "timestamp: canonical JSON"),
    ("timestamp", "timestamp: Ed25519"),
    ("timestamp", "timestamp: serialize"),
    ("other", "root: parse"),
    ("other", "other"),
]


def install_split(split: Split, worker_batch: Callable[[], int]) -> None:
    """Time the snapshot process by category; plan_snapshot gets ``max_batch=worker_batch()``.

    A signature is the canonical encoding (``Metadata.signed_bytes``), the Ed25519 signature and
    its check against root's key (``repository._sign_verified``): the check is counted with the
    canonical JSON, the signature on its own."""
    local = split.local

    original_sign_verified = repository.__dict__["_sign_verified"]

    @functools.wraps(original_sign_verified)
    def sign_verified(md: Metadata[Any], *args: Any, **kwargs: Any) -> Any:
        local.role = _role(md.signed.type)
        return original_sign_verified(md, *args, **kwargs)

    split.undo.append((repository, "_sign_verified", original_sign_verified))
    repository._sign_verified = split.wrap(  # type: ignore[attr-defined]
        sign_verified, lambda a, r: f"{_role(a[0].signed.type)}: canonical JSON")
    split.patch(CryptoSigner, "sign", lambda a, r: f"{getattr(local, 'role', 'other')}: Ed25519")
    split.patch(Metadata, "from_bytes", lambda a, r: f"{_role(r.signed.type)}: parse previous"
                if r is not None and r.signed.type == Snapshot.type else
                (f"{_role(r.signed.type)}: parse" if r is not None else "other"), classmethod_=True)
    split.patch(repository, "metadata_bytes", lambda a, r: f"{_role(a[0].signed.type)}: serialize")
    split.patch(repository, "_listed_targets", lambda a, r: "bins: query targets")
    split.patch(repository, "_bin_metadata", lambda a, r: "bins: build")
    split.patch(repository, "store_many", lambda a, r: "store: insert versions + heads")
    split.patch(repository, "_snapshot_and_timestamp", lambda a, r: "snapshot/timestamp: build meta + sha256")
    split.patch(repository, "head_versions", lambda a, r: "head versions")
    split.patch(repository, "load_head", lambda a, r: f"read {a[1]}")
    split.patch(repository, "apply_snapshot", lambda a, r: "apply: lock, stale check, write targets/pages, delete queue")

    original_plan = repository.__dict__["plan_snapshot"]

    def plan(session: Any, signer: Any, lifetimes: Any, **kwargs: Any) -> Any:
        kwargs["max_batch"] = worker_batch()
        return original_plan(session, signer, lifetimes, **kwargs)

    split.undo.append((repository, "plan_snapshot", original_plan))
    repository.plan_snapshot = split.wrap(  # type: ignore[assignment]
        plan, lambda a, r: "plan: queue, pages, target changes (read)")
    split.patch(service, "run_snapshot", lambda a, r: "transaction begin/commit + marker")


def fold_split(totals: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    known = {c for _, c in SPLIT_GROUPS}
    out: dict[str, dict[str, float]] = {}
    for kind, values in totals.items():
        folded: dict[str, float] = defaultdict(float)
        for name, seconds in values.items():
            folded[name if name in known else "other"] += seconds
        out[kind] = dict(folded)
    return out


# -- databases ---------------------------------------------------------------------------------------
class Backend:
    """Makes the base database of one bin count and cheap clones of it (file copy / TEMPLATE)."""

    name: str

    def url(self, db: str) -> str:
        raise NotImplementedError

    def clone(self, base: str, new: str) -> None:
        raise NotImplementedError

    def drop(self, db: str) -> None:
        raise NotImplementedError

    def table_sizes(self, bastion: Bastion) -> dict[str, int]:
        raise NotImplementedError


class SQLiteBackend(Backend):
    name = "sqlite"

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "db"
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, db: str) -> Path:
        return self.dir / f"{db}.db"

    def url(self, db: str) -> str:
        return f"sqlite:///{self.path(db)}"

    def clone(self, base: str, new: str) -> None:
        with sqlite3.connect(self.path(base)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        shutil.copyfile(self.path(base), self.path(new))

    def drop(self, db: str) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.path(db)) + suffix).unlink(missing_ok=True)

    def table_sizes(self, bastion: Bastion) -> dict[str, int]:
        """Pages in use by each table and its indexes (dbstat), plus the database file."""
        with bastion.db.engine.connect() as conn:
            owner = {name: table for name, table in conn.exec_driver_sql(
                "SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')")}
            sizes: dict[str, int] = defaultdict(int)
            for name, size in conn.exec_driver_sql("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
                sizes[owner.get(name, name)] += int(size)
        path = Path(bastion.settings.effective_database_url[len("sqlite:///"):])
        sizes["<database file>"] = path.stat().st_size
        wal = Path(str(path) + "-wal")
        sizes["<wal file>"] = wal.stat().st_size if wal.exists() else 0
        return dict(sizes)


class PostgresBackend(Backend):
    name = "postgresql"

    def __init__(self, admin_url: str, prefix: str) -> None:
        self.admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.base_url = admin_url.rsplit("/", 1)[0]
        self.prefix = prefix
        self.made: set[str] = set()

    def url(self, db: str) -> str:
        return f"{self.base_url}/{self.prefix}{db}"

    def create(self, db: str) -> None:
        self.drop(db)
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.prefix}{db}"'))
        self.made.add(db)

    def clone(self, base: str, new: str) -> None:
        self.drop(new)
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.prefix}{new}" TEMPLATE "{self.prefix}{base}"'))
        self.made.add(new)

    def drop(self, db: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.prefix}{db}" WITH (FORCE)'))
        self.made.discard(db)

    def drop_all(self) -> None:
        for db in list(self.made):
            self.drop(db)

    def table_sizes(self, bastion: Bastion) -> dict[str, int]:
        """pg_total_relation_size (heap + TOAST + indexes, dead rows included until VACUUM)."""
        sizes = {}
        with bastion.db.engine.connect() as conn:
            for table in ("tuf_metadata", "tuf_page_versions", "tuf_targets", "tuf_heads", "rendered_pages"):
                sizes[table] = int(conn.execute(text(f"SELECT pg_total_relation_size('{table}')")).scalar() or 0)
            sizes["<database>"] = int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar() or 0)
        return sizes


# -- one measured stream of uploads -------------------------------------------------------------------
@dataclass
class Cycle:
    committed: float
    """perf_counter after run_snapshot returned (the timestamp is committed and the marker written)."""
    seconds: float
    cpu: float
    """CPU time of the thread that ran it."""
    queued: int
    signatures: int
    bins: int


@dataclass
class Stream:
    mode: str
    """'batched' (the SnapshotWorker, every queued upload per run) or 'naive' (one upload per snapshot)."""
    rate: float | None
    uploads: int = 0
    started: float = 0.0
    produced_until: float = 0.0
    signed_until: float = 0.0
    due: list[float] = field(default_factory=list)
    """When each upload arrived (its slot in the schedule; with no rate, when it began)."""
    commits: list[float] = field(default_factory=list)
    upload_seconds: list[float] = field(default_factory=list)
    cycles: list[Cycle] = field(default_factory=list)
    split: dict[str, dict[str, float]] = field(default_factory=dict)
    max_queue: int = 0

    def signed_at(self) -> list[float]:
        """For each upload, when the first timestamp that includes it was committed: runs consume
        the queue in id order, and the one producer commits one queue row per upload in order."""
        out: list[float] = []
        consumed = 0
        cycles = iter(self.cycles)
        current: Cycle | None = None
        for k in range(len(self.commits)):
            while current is None or consumed <= k:
                current = next(cycles)
                consumed += current.queued
            out.append(current.committed)
        return out

    def summary(self) -> dict[str, Any]:
        signed = self.signed_at()
        lat = [s - c for s, c in zip(signed, self.commits, strict=True)]
        arrival = [s - d for s, d in zip(signed, self.due, strict=True)]
        wall = self.signed_until - self.started
        produce = self.produced_until - self.started
        busy = sum(c.seconds for c in self.cycles)
        cpu = sum(c.cpu for c in self.cycles)
        sigs = sum(c.signatures for c in self.cycles)
        return {
            "mode": self.mode, "rate": self.rate, "uploads": self.uploads,
            "wall_s": wall, "produce_s": produce,
            "achieved_rate": self.uploads / produce if produce else float("nan"),
            "signed_per_s": self.uploads / wall if wall else float("nan"),
            "latency_p50_ms": pct(lat, 0.5) * 1000, "latency_p99_ms": pct(lat, 0.99) * 1000,
            "latency_max_ms": max(lat) * 1000 if lat else float("nan"),
            "arrival_latency_p50_ms": pct(arrival, 0.5) * 1000, "arrival_latency_p99_ms": pct(arrival, 0.99) * 1000,
            "upload_txn_p50_ms": pct(self.upload_seconds, 0.5) * 1000,
            "upload_txn_p99_ms": pct(self.upload_seconds, 0.99) * 1000,
            "cycles": len(self.cycles), "mean_batch": self.uploads / len(self.cycles) if self.cycles else 0,
            "max_queue": self.max_queue,
            "cycle_p50_ms": pct([c.seconds for c in self.cycles], 0.5) * 1000,
            "cycle_cpu_p50_ms": pct([c.cpu for c in self.cycles], 0.5) * 1000,
            "cycle_max_ms": max((c.seconds for c in self.cycles), default=float("nan")) * 1000,
            "signatures": sigs, "signatures_per_wall_s": sigs / wall if wall else float("nan"),
            "signatures_per_busy_s": sigs / busy if busy else float("nan"),
            "signatures_per_cpu_s": sigs / cpu if cpu else float("nan"),
            "worker_busy_fraction": busy / wall if wall else float("nan"),
            "bins_per_cycle": statistics.mean(c.bins for c in self.cycles) if self.cycles else 0,
            "split_s": self.split,
        }


class Index:
    """One bin count on one backend: the signed base database and the uploads made against clones."""

    def __init__(self, bench: TufBench, backend: Backend, bins: int) -> None:
        self.bench = bench
        self.backend = backend
        self.bins = bins
        self.data_dir = bench.workdir / f"{backend.name}-{bins}"
        self.base = f"b{bins}_base"
        self.projects = bench.projects
        self.extra: dict[int, list[str]] = {}
        self.next_version = 0
        self.rng = random.Random(bins)
        self.clones = 0

    # -- set-up ------------------------------------------------------------------------------
    def settings(self, db: str, **overrides: Any) -> Any:
        return load_settings(self.data_dir, database_url=self.backend.url(db), tuf_bins=self.bins,
                             tuf_window="1s", **overrides)

    def build(self) -> dict[str, Any]:
        """The signed index: repository created first (as on a fresh server), then every project's
        pages stored (queued as uploads queue them), then the snapshot process drains the queue."""
        self.data_dir.mkdir(parents=True)
        if isinstance(self.backend, PostgresBackend):
            self.backend.create(self.base)
        bastion = Bastion(self.settings(self.base))
        info: dict[str, Any] = {}
        try:
            start = time.perf_counter()
            signer = service.prepare(bastion, announce=False)
            assert signer is not None
            info["initialize_s"] = time.perf_counter() - start
            start = time.perf_counter()
            files = self.bench.files_per_project
            chunk = 250
            with self.bench.progress(f"{self.label}: storing pages of {self.projects:,} projects",
                                     self.projects) as advance:
                for first in range(0, self.projects, chunk):
                    with bastion.db.write() as session:
                        pages = []
                        for i in range(first, min(first + chunk, self.projects)):
                            pages.extend(render_simple_detail(project_view(i, files, [])))
                        store_pages(session, pages, 1)
                    advance(min(chunk, self.projects - first))
            with bastion.db.write() as session:
                store_pages(session, render_simple_index_of([project_name(i) for i in range(self.projects)], 1), 1)
            info["store_pages_s"] = time.perf_counter() - start
            start = time.perf_counter()
            cycles = 0
            with self.bench.progress(f"{self.label}: signing every target from scratch", None):
                while service.run_snapshot(bastion, signer) is not None:
                    cycles += 1
            info["initial_signing_s"] = time.perf_counter() - start
            info["initial_signing_cycles"] = cycles
            with bastion.db.read() as session:
                info["targets"] = session.execute(select(func.count()).select_from(TufTarget)).scalar()
                snapshot = session.execute(select(TufMetadata.body).join(
                    TufHead, (TufHead.role == TufMetadata.role) & (TufHead.version == TufMetadata.version))
                    .where(TufHead.role == Snapshot.type)).scalar()
                info["snapshot_bytes"] = len(snapshot or b"")
            info["tables"] = self.backend.table_sizes(bastion)
        finally:
            bastion.close()
        return info

    @property
    def label(self) -> str:
        return f"{self.backend.name} {self.bins:,} bins"

    @contextmanager
    def clone(self, **overrides: Any) -> Iterator[Bastion]:
        self.clones += 1
        db = f"b{self.bins}_c{self.clones}"
        self.backend.clone(self.base, db)
        self.extra = {}
        bastion = Bastion(self.settings(db, **overrides), run_migrations=False)
        try:
            yield bastion
        finally:
            bastion.close()
            self.backend.drop(db)

    # -- uploads -----------------------------------------------------------------------------
    def upload(self, bastion: Bastion) -> tuple[float, float]:
        """One upload: a new release of a random project, its simple pages re-rendered and stored
        (queued for signing in the same transaction), then the worker woken. Returns (start, commit)."""
        i = self.rng.randrange(self.projects)
        self.next_version += 1
        extra = self.extra.setdefault(i, [])
        extra.append(f"2.0.{self.next_version}")
        start = time.perf_counter()
        pages = render_simple_detail(project_view(i, self.bench.files_per_project, extra))
        serial = len(extra) + self.bench.files_per_project
        with bastion.db.write() as session:
            store_pages(session, pages, serial)
        committed = time.perf_counter()
        bastion.notify_change(serial)
        return start, committed

    def stream(self, bastion: Bastion, mode: str, *, rate: float | None, seconds: float, title: str = "") -> Stream:
        """Uploads at ``rate`` per second (None: back to back) for ``seconds``, signed by the real
        SnapshotWorker ('batched': everything queued per run) or by the same worker taking one queue
        entry per run ('naive'); then waits until every upload is in a committed timestamp."""
        result = Stream(mode=mode, rate=rate)
        split = self.bench.split
        lock = threading.Lock()
        original_run = service.__dict__["run_snapshot"]

        def recorded(bastion_: Bastion, signer_: Any) -> Any:
            start, cpu = time.perf_counter(), time.thread_time()
            report = original_run(bastion_, signer_)
            end = time.perf_counter()
            if report is not None:
                with lock:
                    result.cycles.append(Cycle(end, end - start, time.thread_time() - cpu, report.queued,
                                               report.signatures, len(report.bins)))
            return report

        signer = service.online_signer(bastion)
        naive = mode == "naive"
        self.bench.batch = 1 if naive else repository.MAX_BATCH
        worker = None
        service.run_snapshot = recorded  # type: ignore[assignment]  # the worker calls it through the module
        saved_max = repository.MAX_BATCH
        try:
            split.reset()
            if naive:
                # One upload per snapshot: the worker's loop runs again while a run consumed
                # MAX_BATCH (1) entries, so it never waits for the next poll with work queued.
                repository.MAX_BATCH = 1
            worker = service.SnapshotWorker(bastion, signer)
            bastion.tuf_worker = worker
            worker.start()
            total = int(rate * seconds) if rate else None
            with self.bench.progress(title, total) as advance:
                result.started = start0 = time.perf_counter()
                k = 0
                while True:
                    now = time.perf_counter()
                    if now - start0 >= seconds:
                        break
                    due = start0 + k / rate if rate else now
                    if due > now:
                        time.sleep(due - now)
                    began, committed = self.upload(bastion)
                    result.due.append(due if rate else began)
                    result.commits.append(committed)
                    result.upload_seconds.append(committed - began)
                    k += 1
                    if k % 10 == 0:
                        with lock:
                            signed = sum(c.queued for c in result.cycles)
                        result.max_queue = max(result.max_queue, k - signed)
                    advance(1)
                result.produced_until = time.perf_counter()
                result.uploads = k
                deadline = time.perf_counter() + max(120.0, 4 * (result.produced_until - start0))
                while True:
                    with lock:
                        signed = sum(c.queued for c in result.cycles)
                    if signed >= k:
                        break
                    if time.perf_counter() > deadline:
                        raise RuntimeError(f"{self.label} {mode}: only {signed} of {k} uploads signed in time; "
                                           "see the bastion.tuf log above")
                    worker.wake()
                    time.sleep(0.002)
                result.signed_until = result.cycles[-1].committed if result.cycles else time.perf_counter()
        finally:
            if worker is not None:
                worker.stop()
            bastion.tuf_worker = None
            service.run_snapshot = original_run  # type: ignore[assignment]
            repository.MAX_BATCH = saved_max
            self.bench.batch = repository.MAX_BATCH
            result.split = fold_split(split.reset())
        return result

    def sync_naive(self, bastion: Bastion, seconds: float, title: str) -> Stream:
        """The naive loop without a worker: upload, then a snapshot run for that one upload, in the
        producer's thread, back to back (what a server signing inside each upload would reach)."""
        result = Stream(mode="naive", rate=None)
        signer = service.online_signer(bastion)
        self.bench.batch = 1
        self.bench.split.reset()
        try:
            with self.bench.progress(title, None) as advance:
                result.started = start0 = time.perf_counter()
                while time.perf_counter() - start0 < seconds:
                    began, committed = self.upload(bastion)
                    result.due.append(began)
                    result.commits.append(committed)
                    result.upload_seconds.append(committed - began)
                    t, cpu = time.perf_counter(), time.thread_time()
                    report = service.run_snapshot(bastion, signer)
                    end = time.perf_counter()
                    assert report is not None and report.queued == 1
                    result.cycles.append(Cycle(end, end - t, time.thread_time() - cpu, report.queued,
                                               report.signatures, len(report.bins)))
                    advance(1)
        finally:
            self.bench.batch = repository.MAX_BATCH
        result.uploads = len(result.commits)
        result.produced_until = result.signed_until = result.cycles[-1].committed
        result.split = fold_split(self.bench.split.reset())
        return result

    def grow(self, bastion: Bastion, uploads: int, batch: int, title: str) -> dict[str, Any]:
        """``uploads`` uploads signed ``batch`` at a time by run_snapshot (the worker's function)."""
        signer = service.online_signer(bastion)
        out = {"uploads": uploads, "batch": batch, "runs": 0, "sign_s": 0.0}
        start = time.perf_counter()
        with self.bench.progress(title, uploads) as advance:
            for k in range(uploads):
                self.upload(bastion)
                advance(1)
                if (k + 1) % batch and k + 1 != uploads:
                    continue
                t = time.perf_counter()
                report = service.run_snapshot(bastion, signer)
                assert report is not None
                out["runs"] += 1
                out["sign_s"] += time.perf_counter() - t
        out["wall_s"] = time.perf_counter() - start
        return out

    def collect(self, bastion: Bastion, grace: float) -> dict[str, Any]:
        """One collect_garbage (the refresh task's function) in its own transaction."""
        start = time.perf_counter()
        with bastion.db.write() as session:
            metadata, pages = repository.collect_garbage(session, timedelta(seconds=grace))
        return {"gc_s": time.perf_counter() - start, "deleted_metadata": metadata, "deleted_pages": pages,
                "gc_grace_s": grace}

    def drain(self, bastion: Bastion) -> None:
        signer = service.online_signer(bastion)
        while service.run_snapshot(bastion, signer) is not None:
            pass

    # -- what is stored, what clients download -----------------------------------------------
    def repository_size(self, bastion: Bastion) -> dict[str, Any]:
        with bastion.db.read() as session:
            meta_rows, meta_bytes = session.execute(
                select(func.count(), func.coalesce(func.sum(func.length(TufMetadata.body)), 0))).one()
            page_rows, page_bytes = session.execute(
                select(func.count(), func.coalesce(func.sum(func.length(TufPageVersion.body)), 0))).one()
            snapshot_rows = session.execute(select(func.count()).select_from(TufMetadata)
                                            .where(TufMetadata.role == Snapshot.type)).scalar()
            snapshot = repository.load_head(session, Snapshot.type)
            snapshot_bytes = len(repository.metadata_bytes(snapshot))
            targets = session.execute(select(func.count()).select_from(TufTarget)).scalar()
            queue = session.execute(select(func.count()).select_from(TufQueue)).scalar()
        tables = self.backend.table_sizes(bastion)
        return {
            "snapshot_bytes": snapshot_bytes, "snapshot_versions_stored": int(snapshot_rows or 0),
            "metadata_versions": int(meta_rows), "metadata_body_bytes": int(meta_bytes),
            "page_versions": int(page_rows), "page_version_body_bytes": int(page_bytes),
            "tables_bytes": tables,
            "repository_bytes": tables.get("tuf_metadata", 0) + tables.get("tuf_page_versions", 0),
            "targets": int(targets or 0), "queue": int(queue or 0),
        }

    def client_state(self, bastion: Bastion) -> dict[str, Any]:
        with bastion.db.read() as session:
            heads = dict(session.execute(select(TufHead.role, TufHead.version)).all())
            bodies = {}
            for role in ("root", "timestamp", "snapshot", "targets"):
                bodies[role] = session.execute(select(TufMetadata.body).where(
                    TufMetadata.role == role, TufMetadata.version == heads[role])).scalar()
            if heads["root"] != 1:
                bodies["root"] = session.execute(select(TufMetadata.body).where(
                    TufMetadata.role == "root", TufMetadata.version == 1)).scalar()
            bin_sizes = {role: (version, length) for role, version, length in session.execute(
                select(TufMetadata.role, TufMetadata.version, func.length(TufMetadata.body))
                .join(TufHead, (TufHead.role == TufMetadata.role) & (TufHead.version == TufMetadata.version))
                .where(TufHead.role.like(repository.BIN_PREFIX + "-%")))}
            succinct = Metadata.from_bytes(bodies["targets"]).signed.delegations.succinct_roles
        return {"heads": heads, "bodies": bodies, "bins": bin_sizes, "succinct": succinct}

    def bin_body(self, bastion: Bastion, role: str, version: int) -> bytes:
        with bastion.db.read() as session:
            return session.execute(select(TufMetadata.body).where(
                TufMetadata.role == role, TufMetadata.version == version)).scalar()

    def client_bytes(self, bastion: Bastion, samples: int) -> dict[str, Any]:
        """What a new client downloads to install one package, and a returning one after K uploads."""
        state0 = self.client_state(bastion)
        rng = random.Random(7)
        gz_cache: dict[tuple[str, int], int] = {}

        def gz_size(body: bytes) -> int:
            return len(gzip.compress(body, compresslevel=6, mtime=0))

        def gz(role: str, version: int) -> int:
            if (role, version) not in gz_cache:
                gz_cache[role, version] = gz_size(self.bin_body(bastion, role, version))
            return gz_cache[role, version]

        fixed_roles = ("root", "timestamp", "snapshot", "targets")
        fixed_raw = {r: len(state0["bodies"][r]) for r in fixed_roles}
        fixed_gz = {r: gz_size(state0["bodies"][r]) for r in fixed_roles}
        new_raw, new_gz, bins_raw = [], [], []
        wanted_sets: list[set[str]] = []
        for _ in range(samples):
            i = rng.randrange(self.projects)
            view = project_view(i, self.bench.files_per_project, [])
            page = simple_detail_key(view.normalized_name, "json")
            wanted = {state0["succinct"].get_role_for_target(page),
                      state0["succinct"].get_role_for_target(view.releases[-1].files[0].path)}
            wanted_sets.append(wanted)
            b_raw = sum(state0["bins"][b][1] for b in wanted)
            b_gz = sum(gz(b, state0["bins"][b][0]) for b in wanted)
            bins_raw.append(b_raw)
            new_raw.append(sum(fixed_raw.values()) + b_raw)
            new_gz.append(sum(fixed_gz.values()) + b_gz)
        out: dict[str, Any] = {
            "new_client": {
                "roles_bytes": fixed_raw, "roles_gzip_bytes": fixed_gz,
                "bins_bytes_median": median(bins_raw), "samples": samples,
                "total_bytes_median": median(new_raw), "total_gzip_bytes_median": median(new_gz),
                "note": "root v1 (shipped with the client or fetched once), timestamp, snapshot, targets, and "
                        "the bin(s) listing simple/<name>/index.json and the newest file",
            },
            "returning_client": {},
        }
        done = 0
        for k in self.bench.returning_after:
            while done < k:
                self.upload(bastion)
                done += 1
            self.drain(bastion)
            state = self.client_state(bastion)
            changed = [b for b, (v, _) in state["bins"].items() if v != state0["bins"][b][0]]
            raw = len(state["bodies"]["timestamp"]) + len(state["bodies"]["snapshot"]) + \
                sum(state["bins"][b][1] for b in changed)
            gzipped = gz_size(state["bodies"]["timestamp"]) + gz_size(state["bodies"]["snapshot"]) + \
                sum(gz(b, state["bins"][b][0]) for b in changed)
            top = len(state["bodies"]["timestamp"]) + len(state["bodies"]["snapshot"])
            top_gz = gz_size(state["bodies"]["timestamp"]) + gz_size(state["bodies"]["snapshot"])
            one_raw, one_gz = [], []
            for wanted in wanted_sets:
                fresh = [b for b in wanted if state["bins"][b][0] != state0["bins"][b][0]]
                one_raw.append(top + sum(state["bins"][b][1] for b in fresh))
                one_gz.append(top_gz + sum(gz(b, state["bins"][b][0]) for b in fresh))
            out["returning_client"][str(k)] = {
                "uploads": k, "changed_bins": len(changed), "bytes": raw, "gzip_bytes": gzipped,
                "snapshot_bytes": len(state["bodies"]["snapshot"]),
                "install_one_bytes_median": median(one_raw), "install_one_gzip_bytes_median": median(one_gz),
                "install_one_note": "timestamp + new snapshot + the bins of the same package's page and file "
                                    "when their version changed (median over the new client's samples)",
                "note": "timestamp + new snapshot + every bin whose version changed (a client that refreshes "
                        "its bins; ngclient fetches a bin only when it resolves a target in it, so this is the "
                        "most a returning client can download)",
            }
        return out


# -- the whole run --------------------------------------------------------------------------------
class TufBench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.quick
        self.targets = args.targets or (5_000 if self.quick else 100_000)
        self.uploads = args.uploads or (300 if self.quick else 10_000)
        self.bins = args.bins or [256, 16384]
        self.files_per_project = args.files_per_project
        self.projects = max(1, (self.targets - 2) // (self.files_per_project + 2))
        self.rates = args.rates or ([20.0, 100.0] if not self.quick else [50.0])
        self.rate_seconds = args.rate_seconds or (1.5 if self.quick else 6.0)
        self.repeats = args.repeats or (1 if self.quick else 3)
        self.saturation_seconds = args.saturation_seconds or (1.5 if self.quick else 8.0)
        self.naive_seconds = args.naive_seconds or (1.5 if self.quick else 5.0)
        self.gc_grace = args.gc_grace
        self.growth_batch = args.growth_batch
        self.returning_after = sorted(args.returning_after or ([10, 100] if self.quick else [10, 1000]))
        self.samples = 200
        self.workdir = Path(tempfile.mkdtemp(prefix="bastion-tufbench-"))
        self.split = Split()
        self.batch = repository.MAX_BATCH
        self.show_progress = sys.stdout.isatty() or args.progress
        self.results: dict[str, Any] = {
            "meta": {
                "started": datetime.now(UTC).isoformat(timespec="seconds"),
                "mode": "quick" if self.quick else "full", "host": platform.node(), "cpus": os.cpu_count(),
                "python": platform.python_version(), "load_average": os.getloadavg(), "code": code_state(),
                "targets_requested": self.targets, "projects": self.projects,
                "files_per_project": self.files_per_project, "bins": self.bins, "rates": self.rates,
                "rate_seconds": self.rate_seconds, "repeats": self.repeats,
                "saturation_seconds": self.saturation_seconds, "naive_seconds": self.naive_seconds,
                "growth_uploads": self.uploads, "growth_batch": self.growth_batch, "gc_grace_s": self.gc_grace,
                "returning_after": self.returning_after,
                "statistic": "p50/p99 over the uploads of one run; the median over repeated runs of each figure",
                "upload": "store_pages of one project's re-rendered simple pages (one new file) in one write "
                          "transaction + notify_change; no File rows, events or blobs",
                "metadata_compression": "none: /tuf/metadata/ is served uncompressed (simple/serve.py "
                                        "_send_metadata); gzip -6 figures show what compression would save",
            },
            "indexes": {},
        }

    @contextmanager
    def progress(self, title: str, total: int | None) -> Iterator[Callable[[int], None]]:
        if not self.show_progress or not title:
            yield lambda n: None
            return
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(title, total=total)
            yield lambda n: bar.advance(task, n)

    def measure_index(self, index: Index) -> dict[str, Any]:
        out: dict[str, Any] = {"bins": index.bins, "backend": index.backend.name}
        log(f"{index.label}: building {index.projects:,} projects x ({self.files_per_project} files + 2 pages) "
            f"+ 2 index pages")
        out["build"] = build = index.build()
        log(f"  {build['targets']:,} targets signed from scratch in {build['initial_signing_s']:.1f} s "
            f"({build['initial_signing_cycles']} run(s)); initialize {build['initialize_s']:.1f} s, "
            f"store pages {build['store_pages_s']:.1f} s; snapshot {build['snapshot_bytes']:,} bytes")

        # 1, 2, 5: back to back (the most each sustains) and at fixed rates, batched vs naive,
        # repeats interleaved on one clone so that the machine's noise falls on both alike
        sat: dict[str, list[dict]] = {"batched": [], "naive": []}
        rates: dict[str, dict[str, list[dict]]] = {format(r, "g"): {"batched": [], "naive": []} for r in self.rates}
        with index.clone() as bastion:
            for rep in range(self.repeats):
                tag = f"({rep + 1}/{self.repeats})"
                s = index.stream(bastion, "batched", rate=None, seconds=self.saturation_seconds,
                                 title=f"{index.label}: batched, back to back {tag}").summary()
                sat["batched"].append(s)
                log(f"  run {rep + 1}: batched back to back: {s['uploads']} uploads, {s['signed_per_s']:.1f}/s signed, "
                    f"{s['mean_batch']:.1f} per snapshot run (p50 {s['cycle_p50_ms']:.0f} ms); latency p50 "
                    f"{s['latency_p50_ms']:.0f} ms, p99 {s['latency_p99_ms']:.0f} ms")
                n = index.sync_naive(bastion, self.naive_seconds,
                                     f"{index.label}: naive, one snapshot per upload {tag}").summary()
                sat["naive"].append(n)
                log(f"  run {rep + 1}: naive back to back: {n['uploads']} uploads, {n['signed_per_s']:.1f}/s "
                    f"(snapshot run p50 {n['cycle_p50_ms']:.0f} ms)")
            naive_max = median([n["signed_per_s"] for n in sat["naive"]])
            for rep in range(self.repeats):
                for rate in self.rates:
                    for mode in ("batched", "naive"):
                        if mode == "naive" and rate > 0.9 * naive_max:
                            continue  # it cannot keep up: its queue (and latency) would grow for as long as it ran
                        s = index.stream(bastion, mode, rate=rate, seconds=self.rate_seconds,
                                         title=f"{index.label}: {mode} at {rate:g}/s ({rep + 1}/{self.repeats})").summary()
                        rates[format(rate, "g")][mode].append(s)
                        log(f"  run {rep + 1}: {mode:7s} at {rate:g}/s (achieved {s['achieved_rate']:.1f}/s): latency "
                            f"p50 {s['latency_p50_ms']:.0f} ms, p99 {s['latency_p99_ms']:.0f} ms (from arrival p99 "
                            f"{s['arrival_latency_p99_ms']:.0f} ms); upload p99 {s['upload_txn_p99_ms']:.0f} ms; "
                            f"{s['mean_batch']:.1f} per run")
        out["saturation"] = sat
        out["rates"] = rates
        out["naive_max_per_s"] = naive_max

        # 3: metadata bytes per install
        with index.clone() as bastion:
            log(f"  client downloads: a new client ({self.samples} random packages); a returning one after "
                f"{', '.join(map(str, self.returning_after))} uploads")
            out["client"] = index.client_bytes(bastion, self.samples)

        # 4: repository size after many uploads, without garbage collection, then after one
        # collect_garbage with the grace given (with grace 0 the same rows go as if it had run
        # after every snapshot run; only when the time is spent differs)
        with index.clone() as bastion:
            before = index.repository_size(bastion)
            g = index.grow(bastion, self.uploads, self.growth_batch,
                           f"{index.label}: {self.uploads:,} uploads, {self.growth_batch} per snapshot run")
            after = index.repository_size(bastion)
            log(f"  {self.uploads:,} uploads in {g['runs']} snapshot runs ({g['wall_s']:.0f} s): repository "
                f"{after['repository_bytes'] / 1e6:.1f} MB ({after['metadata_versions']:,} metadata + "
                f"{after['page_versions']:,} page versions), was {before['repository_bytes'] / 1e6:.1f} MB")
            gc = index.collect(bastion, self.gc_grace)
            collected = index.repository_size(bastion)
            log(f"  collect_garbage (grace {self.gc_grace:g} s): {gc['gc_s']:.1f} s, deleted {gc['deleted_metadata']:,} "
                f"metadata and {gc['deleted_pages']:,} page versions; repository {collected['repository_bytes'] / 1e6:.1f} MB")
        out["growth"] = {**g, "before": before, "no_gc": after, "gc": collected, "collect": gc}
        return out

    def run(self) -> int:
        backends: list[Backend] = []
        try:
            for name in self.args.backends:
                if name == "sqlite":
                    backends.append(SQLiteBackend(self.workdir))
                else:
                    backends.append(PostgresBackend(self.args.pg_url, f"tufbench_{os.getpid()}_"))
            log(f"TUF benchmark ({'quick' if self.quick else 'full'}): ~{self.targets:,} targets "
                f"({self.projects:,} projects), bins {self.bins}, backends {[b.name for b in backends]}, "
                f"work dir {self.workdir}")
            install_split(self.split, lambda: self.batch)
            for backend in backends:
                for bins in self.bins:
                    index = Index(self, backend, bins)
                    key = f"{backend.name}-{bins}"
                    self.results["indexes"][key] = self.measure_index(index)
        finally:
            self.split.restore()
            for backend in backends:
                if isinstance(backend, PostgresBackend):
                    backend.drop_all()
            if not self.args.keep:
                shutil.rmtree(self.workdir, ignore_errors=True)
        self.results["meta"]["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        table = report(self.results)
        self.results["table"] = table.splitlines()
        output = Path(self.args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(self.results, indent=2, default=str) + "\n")
        print()
        print(table)
        print(f"\nresults: {output}")
        return 0


# -- the table ------------------------------------------------------------------------------------
def _med(runs: list[dict], key: str) -> float:
    return median([r[key] for r in runs])


def _kb(n: float) -> str:
    return f"{n / 1000:,.1f} kB"


def _fmt(value: float, spec: str) -> str:
    return "-" if value != value else format(value, spec)


def report(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [f"Bastion TUF benchmark ({meta['mode']}; {meta['projects']:,} projects x "
             f"({meta['files_per_project']} files + 2 pages) + 2 index pages; {meta['cpus']} CPUs, load average at "
             f"start {meta['load_average'][0]:.1f}; medians of {meta['repeats']} run(s))",
             "upload = one project's simple pages re-rendered with one more file and stored (store_pages queues it), "
             "one write transaction; Bastion = the real SnapshotWorker thread in the same process; naive = one "
             "snapshot + timestamp per upload",
             ""]
    for key, idx in results["indexes"].items():
        build = idx["build"]
        lines.append(f"== {key}: {build['targets']:,} targets, snapshot {build['snapshot_bytes']:,} bytes; "
                     f"all targets signed from scratch in {build['initial_signing_s']:.1f} s "
                     f"({build['initial_signing_cycles']} run(s))")
        header = f"{'measurement':52s} {'Bastion':>13s} {'naive':>13s} {'ratio':>16s}"
        lines += ["ratio = Bastion ÷ naive for rates, naive ÷ Bastion for latencies: above 1, Bastion does better",
                  header, "-" * len(header)]

        def row(label: str, b: float, n: float, spec: str = ".1f", ratio: str = "") -> None:
            lines.append(f"{label:52s} {_fmt(b, spec):>13s} {_fmt(n, spec):>13s} {ratio:>16s}")

        sat = idx["saturation"]
        b_tp, n_tp = _med(sat["batched"], "signed_per_s"), _med(sat["naive"], "signed_per_s")
        row("max sustainable uploads/s (1 producer, back to back)", b_tp, n_tp, ratio=f"{b_tp / n_tp:.2f}x")
        row("  uploads per snapshot run", _med(sat["batched"], "mean_batch"), _med(sat["naive"], "mean_batch"))
        row("  snapshot run, wall p50 ms", _med(sat["batched"], "cycle_p50_ms"), _med(sat["naive"], "cycle_p50_ms"))
        row("  snapshot run, CPU p50 ms", _med(sat["batched"], "cycle_cpu_p50_ms"),
            _med(sat["naive"], "cycle_cpu_p50_ms"))
        row("  upload (render + transaction) p50 ms", _med(sat["batched"], "upload_txn_p50_ms"),
            _med(sat["naive"], "upload_txn_p50_ms"))
        row("  upload (render + transaction) p99 ms", _med(sat["batched"], "upload_txn_p99_ms"),
            _med(sat["naive"], "upload_txn_p99_ms"))
        row("  upload->signed p50 ms", _med(sat["batched"], "latency_p50_ms"), _med(sat["naive"], "latency_p50_ms"),
            ".0f")
        row("  upload->signed p99 ms", _med(sat["batched"], "latency_p99_ms"), _med(sat["naive"], "latency_p99_ms"),
            ".0f")
        b, n = _med(sat["batched"], "signatures_per_wall_s"), _med(sat["naive"], "signatures_per_wall_s")
        row("  signatures/s (wall)", b, n, ".0f", f"{b / n:.2f}x")
        row("  signatures per CPU-second of the signing thread", _med(sat["batched"], "signatures_per_cpu_s"),
            _med(sat["naive"], "signatures_per_cpu_s"), ".0f")
        for rate, modes in idx["rates"].items():
            bm, nm = modes["batched"], modes["naive"]
            n_or = (lambda k: _med(nm, k)) if nm else (lambda k: float("nan"))
            note = "" if nm else f"naive max {idx['naive_max_per_s']:.1f}/s"
            row(f"at {rate} uploads/s: achieved uploads/s", _med(bm, "achieved_rate"), n_or("achieved_rate"),
                ratio=note)
            for k, label in (("latency_p50_ms", "upload->signed p50 ms"), ("latency_p99_ms", "upload->signed p99 ms")):
                b, n = _med(bm, k), n_or(k)
                row(f"  {label}", b, n, ".0f", f"{n / b:.2f}x" if n == n and b else "")
            row("  arrival->signed p99 ms (incl. waiting to commit)", _med(bm, "arrival_latency_p99_ms"),
                n_or("arrival_latency_p99_ms"), ".0f")
            row("  upload (render + transaction) p99 ms", _med(bm, "upload_txn_p99_ms"), n_or("upload_txn_p99_ms"))
            row("  uploads per snapshot run", _med(bm, "mean_batch"), n_or("mean_batch"))
        lines.append("")
        lines.append("where a snapshot run spends its time, back to back (per run; wall includes waiting for the "
                     "database and the CPU; share of wall):")
        header = (f"  {'part':48s} {'Bastion wall':>12s} {'CPU':>7s} {'%':>5s}   {'naive wall':>10s} {'CPU':>7s} "
                  f"{'%':>5s}")
        lines += [header, "  " + "-" * (len(header) - 2)]
        splits = {}
        for mode in ("batched", "naive"):
            runs = sat[mode]
            wall: dict[str, float] = defaultdict(float)
            cpu: dict[str, float] = defaultdict(float)
            for r in runs:
                for name, v in r["split_s"].get("wall", {}).items():
                    wall[name] += v
                for name, v in r["split_s"].get("cpu", {}).items():
                    cpu[name] += v
            splits[mode] = (wall, cpu, max(sum(r["cycles"] for r in runs), 1))
        for group in ("bins", "snapshot", "timestamp", "DB", "other"):
            for g, cat in SPLIT_GROUPS:
                if g != group:
                    continue
                cells = []
                for mode in ("batched", "naive"):
                    wall, cpu, cycles = splits[mode]
                    whole = sum(wall.values()) or 1
                    cells.append((wall.get(cat, 0) / cycles * 1000, cpu.get(cat, 0) / cycles * 1000,
                                  wall.get(cat, 0) / whole * 100))
                if all(c[0] < 0.01 for c in cells):
                    continue
                lines.append(f"  {cat:48s} {cells[0][0]:12.2f} {cells[0][1]:7.2f} {cells[0][2]:5.1f}   "
                             f"{cells[1][0]:10.2f} {cells[1][1]:7.2f} {cells[1][2]:5.1f}")
        totals = [(sum(splits[m][0].values()) / splits[m][2] * 1000, sum(splits[m][1].values()) / splits[m][2] * 1000)
                  for m in ("batched", "naive")]
        lines.append(f"  {'total':48s} {totals[0][0]:12.2f} {totals[0][1]:7.2f} {'':5s}   "
                     f"{totals[1][0]:10.2f} {totals[1][1]:7.2f}")
        lines.append("")
        client = idx["client"]
        new = client["new_client"]
        roles = new["roles_bytes"]
        lines.append("metadata a client downloads (served uncompressed; gzip -6 in brackets, for contrast):")
        lines.append(f"  new client, to install one package (median of {new['samples']}): {_kb(new['total_bytes_median'])} "
                     f"[{_kb(new['total_gzip_bytes_median'])}] = root {_kb(roles['root'])} + timestamp "
                     f"{_kb(roles['timestamp'])} + snapshot {_kb(roles['snapshot'])} + targets {_kb(roles['targets'])} "
                     f"+ bins {_kb(new['bins_bytes_median'])}")
        for k, r in client["returning_client"].items():
            if "install_one_bytes_median" in r:
                lines.append(f"  returning client after {int(k):,} uploads, to install one package again (median): "
                             f"{_kb(r['install_one_bytes_median'])} [{_kb(r['install_one_gzip_bytes_median'])}] = "
                             f"timestamp + snapshot + its bins if changed")
            lines.append(f"  returning client after {int(k):,} uploads, every changed bin: {_kb(r['bytes'])} "
                         f"[{_kb(r['gzip_bytes'])}] = timestamp + snapshot {_kb(r['snapshot_bytes'])} + "
                         f"{r['changed_bins']:,} changed bins")
        lines.append("")
        growth = idx["growth"]
        collect = growth["collect"]
        lines.append(f"repository after {growth['uploads']:,} uploads in {growth['runs']:,} snapshot runs "
                     f"({growth['batch']} uploads each, {growth['wall_s']:.0f} s), before and after one collect_garbage "
                     f"(grace {collect['gc_grace_s']:g} s: {collect['gc_s']:.1f} s):")
        header = f"  {'':40s} {'before uploads':>16s} {'no GC':>16s} {'after GC':>16s}"
        lines += [header, "  " + "-" * (len(header) - 2)]
        rows = [
            ("snapshot size", lambda g: _kb(g["snapshot_bytes"])),
            ("metadata versions stored", lambda g: f"{g['metadata_versions']:,}"),
            ("  of which snapshots", lambda g: f"{g['snapshot_versions_stored']:,}"),
            ("page versions stored", lambda g: f"{g['page_versions']:,}"),
            ("tuf_metadata table", lambda g: _mb(g["tables_bytes"].get("tuf_metadata", 0))),
            ("tuf_page_versions table", lambda g: _mb(g["tables_bytes"].get("tuf_page_versions", 0))),
            ("repository (the two tables)", lambda g: _mb(g["repository_bytes"])),
            ("  live bodies in them", lambda g: _mb(g["metadata_body_bytes"] + g["page_version_body_bytes"])),
        ]
        for label, cell in rows:
            lines.append(f"  {label:40s} {cell(growth['before']):>16s} {cell(growth['no_gc']):>16s} "
                         f"{cell(growth['gc']):>16s}")
        per_run = (growth["no_gc"]["metadata_body_bytes"] - growth["before"]["metadata_body_bytes"]) / max(growth["runs"], 1)
        lines.append(f"  (no GC: {per_run / 1e3:,.0f} kB of metadata per snapshot run; one run per upload, as naive, "
                     f"would add about {per_run * growth['uploads'] / 1e9:,.1f} GB for {growth['uploads']:,} uploads "
                     f"(estimate, not measured))")
        if idx["backend"] == "postgresql":
            lines.append("  (PostgreSQL table sizes count deleted rows until VACUUM reuses their space)")
        lines.append("")
    lines.append("noise: 2 shared cores (other jobs ran too); latency = an upload's commit to the commit of the first "
                 "timestamp that includes it; arrival = its slot in the schedule.")
    return "\n".join(lines)


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def main() -> int:
    parser = argparse.ArgumentParser(description="Benchmark Bastion's TUF snapshot process (PEP 458).")
    parser.add_argument("--quick", action="store_true", help="5,000 targets, 300 uploads, short runs: a smoke test (about a minute)")
    parser.add_argument("--bins", type=int, nargs="+", default=None, help="bin counts (default 256 16384)")
    parser.add_argument("--targets", type=int, default=None, help="targets in the index (default 100,000)")
    parser.add_argument("--uploads", type=int, default=None,
                        help="uploads for the repository-size runs with and without GC (default 10,000)")
    parser.add_argument("--files-per-project", type=int, default=6,
                        help="files listed by each project's page (default 6; projects = targets / (files + 2))")
    parser.add_argument("--rates", type=float, nargs="+", default=None, help="upload rates for latency (default 20 100)")
    parser.add_argument("--rate-seconds", type=float, default=None, help="seconds per rate run (default 6)")
    parser.add_argument("--repeats", type=int, default=None, help="repeated runs, median reported (default 3)")
    parser.add_argument("--saturation-seconds", type=float, default=None,
                        help="seconds of back-to-back uploads per batched run (default 8)")
    parser.add_argument("--naive-seconds", type=float, default=None, help="seconds per naive run (default 5)")
    parser.add_argument("--gc-grace", type=float, default=0.0,
                        help="grace of the collect_garbage run after the repository-size uploads (default 0 s)")
    parser.add_argument("--growth-batch", type=int, default=100,
                        help="uploads per snapshot run in the repository-size runs (default 100)")
    parser.add_argument("--returning-after", type=int, nargs="+", default=None,
                        help="uploads after which a returning client refreshes (default 10 1000)")
    parser.add_argument("--backends", nargs="+", default=["sqlite"], choices=["sqlite", "postgresql"],
                        help="databases (default sqlite; postgresql uses --pg-url and makes its own databases)")
    parser.add_argument("--pg-url", default=os.environ.get("BASTION_TEST_PG_URL", PG_ADMIN_URL),
                        help="an existing PostgreSQL database to connect to for CREATE/DROP DATABASE")
    parser.add_argument("--output", default=str(HERE / "results" / "tuf-latest.json"))
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    parser.add_argument("--progress", action="store_true", help="progress bars even when stdout is not a terminal")
    parser.add_argument("--report-only", metavar="JSON", default=None, help="print the table of a results file")
    args = parser.parse_args()
    if args.report_only:
        print(report(json.loads(Path(args.report_only).read_text())))
        return 0
    return TufBench(args).run()


if __name__ == "__main__":
    sys.exit(main())
