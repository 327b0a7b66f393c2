"""Import OSV advisories and keep the stored matches true.

Sources (:func:`iter_sources`):

- a directory in the PyPA advisory-database layout (``vulns/<project>/<ID>.yaml``), including a
  git checkout of it (``.git`` is skipped; the commit is named in the summary);
- a directory of OSV JSON files (osv.dev's export layout: ``<ID>.json``), at any depth;
- a zip of OSV JSON (osv.dev's ``PyPI/all.zip``) or of YAML files;
- a single ``.yaml``/``.yml``/``.json`` file.

Re-import is incremental: a record whose ``id`` is stored with the same or a newer ``modified``
is left alone (no writes, no re-match). Withdrawn records are stored with their ``withdrawn``
date: their matches stay (the JSON API lists them as withdrawn, as PyPI does) and every
"is it vulnerable" question leaves them out.

Records are written in batches of :data:`BATCH` per transaction, each with the matches of its
advisories and the re-rendered JSON pages of the projects they touch. A record is stored only
whole, and storing the same record twice changes nothing, so an interrupted import leaves the
previous data of every record not yet reached intact and can simply be run again.

A malformed record (bad YAML or JSON, schema violation, unknown range type) is reported with its
file and reason and skipped; the import goes on.
"""

from __future__ import annotations

import logging
import subprocess
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select, tuple_
from sqlalchemy.orm import Session

from bastion.advisories.alerts import Alerts, NewMatch, collect_alerts, deliver
from bastion.advisories.match import Matcher
from bastion.advisories.models import Advisory, AdvisoryImport, AdvisoryPackage, VulnerabilityMatch
from bastion.advisories.osv import OsvRecord, RecordError, load_json, load_yaml, parse_record
from bastion.db import advisory_lock, utcnow
from bastion.events import RequestContext, record_event
from bastion.packaging.models import Project, Release

if TYPE_CHECKING:
    from bastion.services import Bastion

log = logging.getLogger("bastion.advisories")

BATCH = 250
"""Records per write transaction."""
MAX_PROBLEMS_KEPT = 1000
MAX_RECORD_BYTES = 5 * 1024 * 1024
"""A larger file is refused as a record (the biggest in osv.dev's PyPI export is ~300 KB)."""
MAX_ZIP_MEMBERS = 200_000
"""Records a zip may hold (osv.dev's PyPI export holds some tens of thousands)."""
MAX_ZIP_BYTES = 2 * 1024 ** 3
"""What a zip's records may add up to uncompressed: a zip bomb is refused before anything is read."""
TASK_CONTEXT = RequestContext(ip=None, user_agent="bastion-advisories")
SUFFIXES = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}


class ImportError_(ValueError):
    """The source cannot be read at all (nothing was imported)."""


@dataclass(frozen=True)
class Problem:
    path: str
    reason: str


@dataclass
class ImportSummary:
    source: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    withdrawn: int = 0
    """Records stored (added or updated) that are withdrawn."""
    skipped: int = 0
    matches_added: int = 0
    matches_removed: int = 0
    problems: list[Problem] = field(default_factory=list)
    projects: set[str] = field(default_factory=set)
    """Projects of this index whose vulnerability data changed (their pages were re-rendered)."""
    seconds: float = 0.0
    import_id: int | None = None
    serial: int = 0
    """The journal serial of the last page change (0: none)."""

    def counts(self) -> dict[str, int]:
        return {"added": self.added, "updated": self.updated, "unchanged": self.unchanged,
                "withdrawn": self.withdrawn, "skipped": self.skipped,
                "matches_added": self.matches_added, "matches_removed": self.matches_removed,
                "projects_changed": len(self.projects)}

    def line(self) -> str:
        """The one-line summary the CLI prints."""
        return (f"{self.added} added, {self.updated} updated, {self.withdrawn} withdrawn, "
                f"{self.unchanged} unchanged, {self.skipped} skipped; matches: +{self.matches_added} "
                f"-{self.matches_removed} across {len(self.projects)} project(s) in {self.seconds:.1f} s")


# -- reading sources --------------------------------------------------------------------------------

@dataclass(frozen=True)
class RawRecord:
    origin: str
    """The path relative to the source root (or the zip member)."""
    fmt: str
    """yaml or json."""
    data: bytes


def _git_commit(root: Path) -> str | None:
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and len(commit) == 40 else None


def describe_source(path: Path) -> str:
    """The source as the summary names it (a git checkout with its commit)."""
    commit = _git_commit(path) if path.is_dir() else None
    return f"{path} (git {commit[:12]})" if commit else str(path)


def iter_sources(path: Path) -> tuple[int, Iterator[RawRecord]]:
    """(number of records, the records) of a source; ImportError_ when it cannot be read."""
    if not path.exists():
        raise ImportError_(f"{path} does not exist: give a directory in the PyPA advisory-database layout "
                           "(vulns/<project>/<ID>.yaml), a directory or zip of OSV JSON, or one record file")
    if path.is_file():
        if zipfile.is_zipfile(path):
            return _zip_records(path)
        fmt = SUFFIXES.get(path.suffix.lower())
        if fmt is None:
            raise ImportError_(f"{path} is neither a zip nor a .yaml/.yml/.json OSV record")
        return 1, iter([_read_file(path, path.name, fmt)])
    root = path / "vulns" if (path / "vulns").is_dir() else path
    files = sorted(
        p for p in root.rglob("*")
        if p.suffix.lower() in SUFFIXES and p.is_file() and ".git" not in p.relative_to(root).parts
    )
    if not files:
        raise ImportError_(f"{path} holds no .yaml, .yml or .json files: is it the right directory?")
    return len(files), (_read_file(p, str(p.relative_to(path)), SUFFIXES[p.suffix.lower()]) for p in files)


def _read_file(path: Path, origin: str, fmt: str) -> RawRecord:
    size = path.stat().st_size
    if size > MAX_RECORD_BYTES:
        return RawRecord(origin, "too-big", str(size).encode())
    return RawRecord(origin, fmt, path.read_bytes())


def _zip_records(path: Path) -> tuple[int, Iterator[RawRecord]]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ImportError_(f"{path} is not a readable zip: {exc}") from None
    members = [m for m in archive.infolist()
               if not m.is_dir() and Path(m.filename).suffix.lower() in SUFFIXES]
    if not members:
        archive.close()
        raise ImportError_(f"{path} holds no .json or .yaml members: is it an OSV export?")
    total = sum(m.file_size for m in members)
    if len(members) > MAX_ZIP_MEMBERS or total > MAX_ZIP_BYTES:
        archive.close()
        raise ImportError_(f"{path} holds {len(members):,} records of {total:,} bytes uncompressed; a zip may hold "
                           f"at most {MAX_ZIP_MEMBERS:,} records and {MAX_ZIP_BYTES:,} bytes: split it, or unpack "
                           "it and import the directory")

    def records() -> Iterator[RawRecord]:
        with archive:
            for member in sorted(members, key=lambda m: m.filename):
                fmt = SUFFIXES[Path(member.filename).suffix.lower()]
                if member.file_size > MAX_RECORD_BYTES:
                    yield RawRecord(f"{path.name}:{member.filename}", "too-big", str(member.file_size).encode())
                    continue
                yield RawRecord(f"{path.name}:{member.filename}", fmt, archive.read(member))

    return len(members), records()


def read_record(raw: RawRecord) -> OsvRecord:
    """Parse and validate one raw record; RecordError says why it cannot be used."""
    if raw.fmt == "too-big":
        raise RecordError(f"the file is {int(raw.data)} bytes, over the {MAX_RECORD_BYTES}-byte limit for one record")
    data = load_yaml(raw.data) if raw.fmt == "yaml" else load_json(raw.data)
    return parse_record(data)


# -- matching -----------------------------------------------------------------------------------------

def _project_releases(session: Session, names: Iterable[str]) -> dict[str, tuple[int, list[tuple[int, str]]]]:
    """normalized name -> (project id, [(release id, version)]) for the names that are projects here."""
    names = set(names)
    if not names:
        return {}
    found: dict[str, tuple[int, list[tuple[int, str]]]] = {}
    ids = dict(session.execute(
        select(Project.normalized_name, Project.id).where(Project.normalized_name.in_(names))
    ).all())
    for name, project_id in ids.items():
        found[name] = (project_id, [])
    by_id = {project_id: name for name, project_id in ids.items()}
    if by_id:
        for release_id, project_id, version in session.execute(
            select(Release.id, Release.project_id, Release.version).where(Release.project_id.in_(list(by_id)))
        ):
            found[by_id[project_id]][1].append((release_id, version))
    return found


def rematch_advisories(session: Session, advisory_ids: Iterable[str]) -> tuple[list[NewMatch], int, set[int]]:
    """Recompute the stored matches of ``advisory_ids`` against every release of the projects they
    name. Returns (the matches added, how many were removed, the ids of the projects matched
    before or after: their pages must be re-rendered)."""
    ids = set(advisory_ids)
    if not ids:
        return [], 0, set()
    entries = session.execute(
        select(AdvisoryPackage.advisory_id, AdvisoryPackage.normalized_name, AdvisoryPackage.ranges,
               AdvisoryPackage.versions).where(AdvisoryPackage.advisory_id.in_(ids))
    ).all()
    releases = _project_releases(session, {e.normalized_name for e in entries})
    wanted: dict[tuple[int, str], int] = {}  # (release id, advisory id) -> project id
    for entry in entries:
        target = releases.get(entry.normalized_name)
        if target is None:
            continue
        project_id, project_releases = target
        matcher = Matcher(entry.ranges, entry.versions)
        for release_id, version in project_releases:
            if matcher.affects(version):
                wanted[(release_id, entry.advisory_id)] = project_id
    existing = {
        (row.release_id, row.advisory_id): row.project_id
        for row in session.execute(
            select(VulnerabilityMatch.release_id, VulnerabilityMatch.advisory_id, VulnerabilityMatch.project_id)
            .where(VulnerabilityMatch.advisory_id.in_(ids))
        )
    }
    gone = [key for key in existing if key not in wanted]
    if gone:
        session.execute(delete(VulnerabilityMatch).where(
            tuple_(VulnerabilityMatch.release_id, VulnerabilityMatch.advisory_id).in_(gone)))
    now = utcnow()
    added = [NewMatch(project_id=project_id, release_id=key[0], advisory_id=key[1])
             for key, project_id in wanted.items() if key not in existing]
    if added:
        session.execute(insert(VulnerabilityMatch), [
            {"release_id": m.release_id, "advisory_id": m.advisory_id, "project_id": m.project_id, "matched": now}
            for m in added
        ])
    # Every project the advisories touch, before or after: its pages show their text (summary,
    # withdrawn date, fixed versions), which an update may change without changing a match.
    touched = set(existing.values()) | set(wanted.values())
    return added, len(gone), touched


def match_release(session: Session, release_id: int, *, known: tuple[int, str, str] | None = None) -> list[NewMatch]:
    """Match one release (a new upload) against the stored advisories of its project; store and
    return the matches that were not there yet. ``known``: (project id, normalized name, version)
    when the caller has them (the upload path), saving a query. One indexed query when nothing
    names the project."""
    if known is None:
        found = session.execute(
            select(Release.project_id, Project.normalized_name, Release.version)
            .join(Project, Project.id == Release.project_id).where(Release.id == release_id)
        ).one()
        known = (found[0], found[1], found[2])
    project_id, normalized_name, version = known
    entries = session.execute(
        select(AdvisoryPackage.advisory_id, AdvisoryPackage.ranges, AdvisoryPackage.versions)
        .where(AdvisoryPackage.normalized_name == normalized_name)
    ).all()
    if not entries:
        return []
    hits = {e.advisory_id for e in entries if Matcher(e.ranges, e.versions).affects(version)}
    if not hits:
        return []
    existing = set(session.execute(
        select(VulnerabilityMatch.advisory_id).where(VulnerabilityMatch.release_id == release_id)
    ).scalars())
    added = [NewMatch(project_id=project_id, release_id=release_id, advisory_id=a) for a in sorted(hits - existing)]
    if added:
        now = utcnow()
        session.execute(insert(VulnerabilityMatch), [
            {"release_id": m.release_id, "advisory_id": m.advisory_id, "project_id": m.project_id, "matched": now}
            for m in added
        ])
    return added


def rematch_all(session: Session, *, progress: Callable[[int, int], None] | None = None) -> tuple[int, int, set[int]]:
    """Recompute every stored match (``bastion advisories rematch``: after a matcher change, or to
    check the stored data): returns (added, removed, the ids of the projects touched). Does not
    re-render pages: see :func:`refresh_projects`."""
    ids = list(session.execute(select(Advisory.id).order_by(Advisory.id)).scalars())
    added = removed = 0
    touched: set[int] = set()
    for start in range(0, len(ids), BATCH):
        new, gone, projects = rematch_advisories(session, ids[start:start + BATCH])
        added += len(new)
        removed += gone
        touched |= projects
        if progress:
            progress(min(start + BATCH, len(ids)), len(ids))
    return added, removed, touched


def refresh_projects(session: Session, project_ids: Iterable[int], reason: str) -> int:
    """Re-render the pages of projects whose matches changed (the JSON API's ``vulnerabilities``)
    with a journal entry each, so that every serving process drops its cached copies. Returns
    the newest serial (0 when nothing changed)."""
    from bastion.packaging.service import journal
    from bastion.simple.render import refresh_project_pages

    serial = 0
    for project_id in sorted(set(project_ids)):
        project = session.get(Project, project_id)
        if project is None:
            continue
        serial = journal(session, project, reason)
        versions = list(session.execute(select(Release.version).where(Release.project_id == project_id)).scalars())
        refresh_project_pages(session, project_id, versions=versions)
    return serial


# -- storing ---------------------------------------------------------------------------------------

def _store(session: Session, record: OsvRecord, origin: str, stored: Advisory | None) -> None:
    values: dict[str, Any] = {
        "modified": record.modified, "published": record.published, "withdrawn": record.withdrawn,
        "summary": record.summary, "details": record.details, "aliases": record.aliases,
        "record": record.record, "origin": origin, "imported": utcnow(),
    }
    if stored is None:
        session.add(Advisory(id=record.id, **values))
    else:
        for key, value in values.items():
            setattr(stored, key, value)
        session.execute(delete(AdvisoryPackage).where(AdvisoryPackage.advisory_id == record.id))
    session.flush()
    rows = [{"advisory_id": record.id, "normalized_name": entry.name, "ranges": entry.ranges,
             "versions": entry.versions} for entry in record.affected]
    if rows:
        session.execute(insert(AdvisoryPackage), rows)


def _write_batch(bastion: Bastion, batch: list[tuple[OsvRecord, str]], summary: ImportSummary) -> Alerts:
    """Store one batch of parsed records (newest per id) in one transaction; returns the alerts to deliver."""
    with bastion.db.write() as session:
        advisory_lock(session, "bastion:advisories-import")
        ids = [record.id for record, _ in batch]
        stored = {a.id: a for a in session.execute(select(Advisory).where(Advisory.id.in_(ids))).scalars()}
        changed: list[str] = []
        for record, origin in batch:
            current = stored.get(record.id)
            if current is not None and current.modified >= record.modified:
                summary.unchanged += 1
                continue
            _store(session, record, origin, current)
            changed.append(record.id)
            if current is None:
                summary.added += 1
            else:
                summary.updated += 1
            if record.withdrawn is not None:
                summary.withdrawn += 1
        new_matches, removed, projects = rematch_advisories(session, changed)
        summary.matches_added += len(new_matches)
        summary.matches_removed += removed
        if projects:
            summary.projects.update(session.execute(
                select(Project.normalized_name).where(Project.id.in_(projects))).scalars())
            summary.serial = refresh_projects(session, projects, "advisories matched")
        # Every changed advisory, not only new matches here: an application may use a version this
        # index does not hold (a pylock or SBOM from elsewhere).
        alerts = collect_alerts(session, bastion, new_matches, advisory_ids=changed) \
            if new_matches or changed else Alerts()
    return alerts


def import_path(bastion: Bastion, path: Path | str, *, progress: Callable[[int, int], None] | None = None,
                actor: str = "operator (cli)") -> ImportSummary:
    """Import every record under ``path`` (see the module docstring); ImportError_ when the
    source cannot be read at all. ``progress(done, total)`` is called as records are read."""
    started = time.monotonic()
    source = Path(path)
    total, records = iter_sources(source)
    summary = ImportSummary(source=describe_source(source))
    with bastion.db.write() as session:
        run = AdvisoryImport(source=summary.source[:1000], started=utcnow(), summary={}, problems=[])
        session.add(run)
        session.flush()
        summary.import_id = run.id
    newest: dict[str, tuple[OsvRecord, str]] = {}
    pending: list[tuple[OsvRecord, str]] = []
    alerts: list[Alerts] = []
    done = 0
    for raw in records:
        done += 1
        try:
            record = read_record(raw)
        except RecordError as exc:
            summary.skipped += 1
            summary.problems.append(Problem(raw.origin, str(exc)))
            log.warning("advisory %s skipped: %s", raw.origin, exc)
        else:
            seen = newest.get(record.id)
            if seen is not None:  # the same id twice in one source: the newer wins
                summary.unchanged += 1
                if seen[0].modified >= record.modified:
                    continue
                pending = [p for p in pending if p[0].id != record.id]
            newest[record.id] = (record, raw.origin)
            pending.append((record, raw.origin))
        if len(pending) >= BATCH:
            alerts.append(_write_batch(bastion, pending, summary))
            pending = []
        if progress:
            progress(done, total)
    if pending:
        alerts.append(_write_batch(bastion, pending, summary))
    summary.seconds = time.monotonic() - started
    with bastion.db.write() as session:
        finished = session.get(AdvisoryImport, summary.import_id)
        assert finished is not None
        run = finished
        run.finished = utcnow()
        run.summary = summary.counts()
        run.problems = [{"path": p.path, "reason": p.reason} for p in summary.problems[:MAX_PROBLEMS_KEPT]]
        record_event(session, "advisories.imported", actor=actor, subject=f"advisories:{summary.import_id}",
                     context=TASK_CONTEXT, secret=bastion.secret,
                     details={"source": summary.source[:300], **summary.counts()})
    if summary.serial:
        bastion.notify_change(summary.serial)
    for batch_alerts in alerts:
        deliver(bastion, batch_alerts)
    return summary


def scheduled_import(bastion: Bastion) -> ImportSummary | None:
    """The periodic task: re-import from ``advisories_source`` when it is set."""
    source = bastion.settings.advisories_source
    if not source:
        return None
    summary = import_path(bastion, source, actor="bastion (scheduled)")
    log.info("advisories re-imported from %s: %s", source, summary.line())
    return summary
