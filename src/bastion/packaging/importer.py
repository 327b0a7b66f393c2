"""Import distribution files from another index: a pypiserver directory, a devpi export, any tree.

Every file goes through what an upload goes through, in lenient mode (``upload.check_file`` with
``checks.LENIENT``, then ``scanning.service.scan_upload``), and is stored by
``upload.store_checked`` in a transaction of its own, so that an import killed at any moment
leaves whole files only and a re-run completes it: a file already stored with the same hash is
skipped as present, a different file under a stored filename is refused ("File already exists").

The stages:

1. **discover** the sources: a directory holding ``dataindex.json`` is a devpi export (its
   release files, with their upload times and, where the export has them, yanks); any other
   directory is walked as a tree of distribution files (pypiserver's flat or nested layout);
   files that pip does not install (.egg, .exe, signatures, checksums...) are counted and skipped;
2. **check and scan** each file in ``workers`` processes (no database writes). A file the
   scanner would refuse on upload is held for review instead, as a quarantined one is: the
   source index served it already, so a false positive must not lose it, and a true positive is
   hidden all the same;
3. **store** each file in the calling thread, in order, with ``render=False``;
4. **render** each project's pages once (one write transaction per batch of projects), apply the
   export's yanks, queue the projects for TUF and call ``notify_change`` once; the TUF queue is
   signed at once when this process can sign (:func:`sign_queued`), else by the server.

Names: a new project is created with ``owner`` as its owner. The rules that refuse a name on
upload (reserved names, the admin ban list, a confusable fold of an existing project) refuse it
here too; a standard library module's name (PyPI still serves ``readline``, ``argparse`` and
``asyncio``, registered before its rule) is imported and flagged for review. The typosquat check
never blocks an import, whatever ``name_policy`` says:
the names were in use on the source index already, and refusing them would break every install
that names them. A resemblance to a popular project or to another user's project on this index
flags the project for review instead (``name_policy = review``); names resembling each other
within the import do not, since the owner owns all of them (the check's "own family" rule).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from bastion.accounts.models import User
from bastion.authz import Permission, Principal, decide
from bastion.errors import Conflict, ServiceError
from bastion.events import RequestContext, record_event
from bastion.packaging import archives, checks, upload
from bastion.packaging.models import File, Project, Release
from bastion.packaging.names import normalize
from bastion.scanning.result import ScanResult

if TYPE_CHECKING:
    from bastion.scanning.names import Resemblance
    from bastion.services import Bastion
    from bastion.settings import Settings

log = logging.getLogger("bastion.import")

IMPORT_CONTEXT = RequestContext(ip=None, user_agent="bastion-import")
NOT_A_DISTRIBUTION = "not a distribution pip installs"
ALREADY_PRESENT = "already present"
RENDER_BATCH = 50
"""Projects rendered per write transaction (short transactions: a server keeps serving uploads)."""
CHUNK_FILES = 8
"""Files handed to a worker process at a time (one round trip each)."""


class ImportUsageError(Exception):
    """The import cannot start: an unknown owner, a missing path, an unreadable export."""


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """One distribution file found in the import's paths."""

    path: Path
    """The file on disk (read in place, never changed)."""
    shown: str
    """The path as reported: relative to the import path it was found under."""
    filetype: str
    """``bdist_wheel`` or ``sdist``."""
    upload_time: datetime | None = None
    """When the source index received it (devpi's log; a directory's file modification time)."""
    expected_sha256: str | None = None
    """The digest the source index recorded (devpi), checked before anything else."""
    yanked: str | None = None
    """Set when the source index yanked the file's release: the reason ("" when none was given)."""

    @property
    def filename(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class Skipped:
    """A file that is no distribution (counted, not imported)."""

    shown: str
    reason: str


@dataclass
class Discovery:
    """What the import's paths hold."""

    sources: list[Source] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    """For each path: ``devpi-export``, ``directory`` or ``file``."""


def filetype_of(filename: str) -> str | None:
    """The upload filetype of a distribution file pip installs, or None for anything else."""
    lower = filename.lower()
    if lower.endswith(".whl"):
        return "bdist_wheel"
    if lower.endswith((".tar.gz", ".zip")):
        return "sdist"
    return None


def discover(paths: Iterable[Path]) -> Discovery:
    """Every file under ``paths``, in a stable order (sorted by path within each argument)."""
    found = Discovery()
    for root in paths:
        if not root.exists():
            raise ImportUsageError(f"path not found: {root}")
        if root.is_file():
            found.kinds.append("file")
            _add_file(found, root, root.name, None)
        elif (root / "dataindex.json").is_file():
            found.kinds.append("devpi-export")
            _discover_devpi(found, root)
        else:
            found.kinds.append("directory")
            for path in sorted(_walk(root)):
                _add_file(found, path, str(path.relative_to(root)), None)
    return found


def _walk(root: Path) -> Iterator[Path]:
    for directory, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            yield Path(directory) / name


def _add_file(found: Discovery, path: Path, shown: str, extra: dict[str, Any] | None) -> None:
    filetype = filetype_of(path.name)
    if filetype is None:
        found.skipped.append(Skipped(shown, NOT_A_DISTRIBUTION))
        return
    extra = dict(extra or {})
    if "upload_time" not in extra:
        try:
            extra["upload_time"] = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        except OSError:
            extra["upload_time"] = None
    found.sources.append(Source(path=path, shown=shown, filetype=filetype, **extra))


def _discover_devpi(found: Discovery, root: Path) -> None:
    """The release files of every index of a ``devpi-export`` directory (dump version 1 and 2).

    Each file keeps its upload time (the ``upload`` entry of its log, else its ``last_modified``)
    and the sha256 the export recorded. devpi-server 6 has no yanks on its own (stage) indexes
    (PEP 592 only on mirrors); a version whose data says ``yanked`` is yanked here too."""
    try:
        index = json.loads((root / "dataindex.json").read_text())
        indexes = index["indexes"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ImportUsageError(f"{root / 'dataindex.json'} is not a devpi export's index ({exc})") from None
    listed: set[Path] = {root / "dataindex.json"}
    for stage, meta in sorted(indexes.items()):
        if not isinstance(meta, dict):
            continue
        projects = meta.get("projects") or {}
        for entry in meta.get("files") or []:
            relpath = str(entry.get("relpath", ""))
            path = root / relpath
            listed.add(path)
            if entry.get("type") != "releasefile" or not path.is_file():
                if entry.get("type") == "releasefile":
                    raise ImportUsageError(f"the devpi export lists {relpath}, which is missing: export again")
                found.skipped.append(Skipped(relpath, f"{NOT_A_DISTRIBUTION} ({entry.get('type')})"))
                continue
            mapping = entry.get("entrymapping") or {}
            version = str(entry.get("version") or mapping.get("version") or "")
            project = str(entry.get("projectname") or mapping.get("project") or "")
            versiondata = (projects.get(normalize(project)) or projects.get(project) or {}).get(version) or {}
            _add_file(found, path, relpath, {
                "upload_time": _devpi_time(entry),
                "expected_sha256": (mapping.get("hashes") or {}).get("sha256")
                or _hash_spec_sha256(mapping.get("hash_spec")),
                "yanked": _devpi_yank(versiondata),
            })
    for path in sorted(_walk(root)):
        if path not in listed:
            found.skipped.append(Skipped(str(path.relative_to(root)), f"{NOT_A_DISTRIBUTION} (not listed in dataindex.json)"))


def _hash_spec_sha256(spec: object) -> str | None:
    if isinstance(spec, str) and spec.startswith("sha256="):
        return spec.removeprefix("sha256=")
    return None


def _devpi_time(entry: dict[str, Any]) -> datetime | None:
    for item in entry.get("log") or []:
        when = item.get("when") if isinstance(item, dict) else None
        if item.get("what") == "upload" and isinstance(when, list) and len(when) >= 6:
            try:
                year, month, day, hour, minute, second = (int(v) for v in when[:6])
                return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
            except (TypeError, ValueError):
                break
    modified = (entry.get("entrymapping") or {}).get("last_modified")
    if isinstance(modified, str):
        try:
            return parsedate_to_datetime(modified).astimezone(UTC)
        except (TypeError, ValueError):
            return None
    return None


def _devpi_yank(versiondata: dict[str, Any]) -> str | None:
    yanked = versiondata.get("yanked")
    if not yanked:
        return None
    return yanked if isinstance(yanked, str) else ""


# ---------------------------------------------------------------------------------------------
# Checking one file (in a worker thread)
# ---------------------------------------------------------------------------------------------

@dataclass
class Checked:
    """A file that passed every check and the scan, ready to store."""

    source: Source
    checked: upload.CheckedFile
    scan: ScanResult | None
    resemblance: Resemblance | None
    prewritten: bool = False
    """The worker wrote the file's blobs already (``upload.store_checked(prewritten=True)``)."""


@dataclass
class Refused:
    source: Source
    reason: str


@dataclass
class Present:
    source: Source


class Checker:
    """Checks and scans files (thread-safe); one per import."""

    def __init__(self, bastion: Bastion, owner: Principal, *, project_from_filename: bool,
                 existing_projects: set[str], prewrite: bool = False) -> None:
        self.bastion = bastion
        self.prewrite = prewrite
        self.owner = owner
        self.project_from_filename = project_from_filename
        self.existing_projects = existing_projects
        self._names: dict[str, tuple[Resemblance | None, str | None]] = {}
        self._malicious: frozenset[str] | None = None
        self._lock = threading.Lock()

    def check(self, source: Source) -> Checked | Refused:
        try:
            return self._check(source)
        except ServiceError as exc:
            return Refused(source, exc.message)
        except Exception as exc:  # noqa: BLE001  (one bad file must not end the import)
            log.exception("import: checking %s failed", source.path)
            return Refused(source, f"the file could not be checked ({type(exc).__name__}: {str(exc)[:200]})")

    def _check(self, source: Source) -> Checked:
        filename = source.filename
        checks.check_filename_text(filename)
        checks.check_extension(filename, source.filetype, checks.LENIENT)
        size, digests = upload.file_digests(source.path)
        if source.expected_sha256 and source.expected_sha256 != digests["sha256_digest"]:
            raise ServiceError(_damaged(source))
        incoming = upload.IncomingFile(filename=filename, content_type=None, stream=io.BytesIO(b""))
        # No client form: the file is the only source of its metadata.
        try:
            checked = upload.check_file(self.bastion, None, incoming, source.path, size, digests, source.filetype,
                                        strictness=checks.LENIENT, name_from_filename=self.project_from_filename)
        except archives.MissingPkgInfo as exc:
            raise ServiceError(f"{exc.message} Re-run with --project-from-filename to import it with the name "
                               "and version its filename gives.") from None
        project_name = checked.metadata.name
        resemblance, refusal = self._name_check(project_name)
        if refusal:
            raise ServiceError(refusal)
        from bastion.scanning.service import scan_upload

        scan = scan_upload(self.bastion, source.path, filename, project_name,
                           new_project=normalize(project_name) not in self.existing_projects,
                           resembles=resemblance.name if resemblance else None, context=IMPORT_CONTEXT,
                           malicious=self._known_malicious(), hold_rejects=True)
        if self.prewrite:
            # The blob write (with its fsync) is most of a store's wall time: done here, in
            # parallel, it leaves the storing thread the rows (store_checked(prewritten=True)).
            path, *metadata = upload.blob_paths(checked)
            self.bastion.blobs.put_file(path, source.path)
            if metadata:
                self.bastion.blobs.put_bytes(metadata[0], checked.metadata_bytes)
        return Checked(source, checked, scan, resemblance, self.prewrite)

    def _known_malicious(self) -> frozenset[str] | None:
        """Projects removed as malware, read once per import (no review decision is made meanwhile
        by this import; one made elsewhere shows at the next import, as at the next upload)."""
        if self.bastion.settings.scan == "off":
            return None
        with self._lock:
            if self._malicious is None:
                from bastion.scanning.service import known_malicious

                with self.bastion.db.read() as session:
                    self._malicious = known_malicious(session)
            return self._malicious

    def _name_check(self, name: str) -> tuple[Resemblance | None, str | None]:
        """For a project new to this index: (resemblance to flag, refusal). Never blocks on a
        resemblance (see the module's docstring); the plain name rules refuse as on upload."""
        key = normalize(name)
        if key in self.existing_projects:
            return None, None
        with self._lock:
            if key in self._names:
                return self._names[key]
        from bastion.packaging.names import is_stdlib_name
        from bastion.packaging.service import new_project_refusal
        from bastion.scanning.names import Resemblance
        from bastion.scanning.service import banned_names

        bastion = self.bastion
        with bastion.db.read() as session:
            refusal = new_project_refusal(session, name, frozenset(bastion.settings.prohibited_names)
                                          | banned_names(session, name), stdlib=False)
            resemblance = None
            if refusal is None and is_stdlib_name(name):
                # Taken before PyPI's rule (readline, argparse, asyncio are still served there):
                # imported, and flagged for review as a typosquat resemblance would be.
                resemblance = Resemblance(name=normalize(name).split(".")[0], source="standard library",
                                          how="the name of a Python standard library module")
            elif refusal is None and bastion.settings.scan != "off":
                resemblance = bastion.name_guard.check(session, name, self.owner.user_id)
        with self._lock:
            self._names[key] = (resemblance, refusal)
        return resemblance, refusal


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FileResult:
    path: str
    filename: str
    outcome: str
    """``accepted``, ``held``, ``refused``, ``present`` or ``skipped``."""
    reason: str = ""
    project: str = ""
    version: str = ""


def reason_key(message: str) -> str:
    """A refusal message without the file's particulars, to count refusals by reason."""
    text = re.sub(r"\s*\([^)]*'[^)]*\)", "", message)  # "('x', with blake2_256 hash 'y')"
    text = re.sub(r"\s*'[^']*'", "", text)
    return text.split(":")[0].strip(" .")[:100] or message[:100]


@dataclass
class ImportReport:
    """What an import did, file by file, with the totals the CLI prints."""

    owner: str
    paths: list[str]
    kinds: list[str]
    files: list[FileResult] = field(default_factory=list)
    projects: set[str] = field(default_factory=set)
    """Projects that received a file (created or not)."""
    created_projects: set[str] = field(default_factory=set)
    rendered_projects: int = 0
    yanked: list[str] = field(default_factory=list)
    bytes_stored: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    """CPU time of this process (the storing thread and the rest; not the worker processes)."""
    serial: int = 0
    tuf: str = ""
    """What happened to the TUF queue: signed here, left for the server, or TUF off."""

    def count(self, outcome: str) -> int:
        return sum(1 for f in self.files if f.outcome == outcome)

    def refusals_by_reason(self) -> dict[str, int]:
        return dict(Counter(reason_key(f.reason) for f in self.files if f.outcome == "refused").most_common())

    def skipped_by_reason(self) -> dict[str, int]:
        return dict(Counter(f.reason for f in self.files if f.outcome == "skipped").most_common())

    @property
    def refused(self) -> int:
        return self.count("refused")

    def counts(self) -> dict[str, int]:
        return {"accepted": self.count("accepted"), "held_for_review": self.count("held"),
                "refused": self.refused, "skipped_already_present": self.count("present"),
                "skipped_not_a_distribution": self.count("skipped")}

    def to_json(self) -> dict[str, Any]:
        imported = self.count("accepted") + self.count("held")
        return {
            "owner": self.owner, "paths": self.paths, "sources": self.kinds, **self.counts(),
            "refused_by_reason": self.refusals_by_reason(), "skipped_by_reason": self.skipped_by_reason(),
            "projects": len(self.projects), "projects_created": len(self.created_projects),
            "yanked": self.yanked, "bytes_stored": self.bytes_stored, "seconds": round(self.seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "files_per_second": round(imported / self.seconds, 1) if self.seconds else None,
            "serial": self.serial, "tuf": self.tuf,
            "files": [{k: v for k, v in vars(f).items() if v != ""} for f in self.files],
        }


@dataclass
class Progress:
    """What the caller's progress display gets after each file."""

    done: int
    total: int
    bytes_done: int
    refused: int
    held: int


# ---------------------------------------------------------------------------------------------
# The import
# ---------------------------------------------------------------------------------------------

def owner_principal(bastion: Bastion, owner: str) -> Principal:
    """The owner acting through the CLI (their own roles, admin flag and 2FA); refuses an unknown
    or disabled user, and one the 2FA mandate would stop from creating projects."""
    from bastion.accounts.policy import mfa_policy, new_project_requires_mfa
    from bastion.accounts.sessions import principal_of

    with bastion.db.read() as session:
        user = session.execute(select(User).where(User.username_key == owner.lower())).scalar_one_or_none()
        if user is None:
            raise ImportUsageError(f"no user named '{owner}': create it first with "
                                   f"`bastion user create {owner} --email ...`")
        if not user.is_active:
            raise ImportUsageError(f"the user '{owner}' is disabled: imported projects need an active owner")
        principal = principal_of(user)
        mfa_required = new_project_requires_mfa(mfa_policy(session))
    decision = decide(principal, Permission.CREATE_PROJECT, project="import", mfa_required=mfa_required)
    if not decision:
        raise ImportUsageError(f"'{owner}' may not create projects: {decision.reason}")
    return principal


def import_paths(bastion: Bastion, paths: list[Path], owner: str, *, workers: int = 2,
                 project_from_filename: bool = False, sign: bool = True,
                 progress: Callable[[Progress], None] | None = None,
                 on_discovered: Callable[[int, int], None] | None = None) -> ImportReport:
    """Import every distribution file under ``paths`` with ``owner`` as the owner of new projects.

    ``on_discovered(files, total_bytes)`` is called once the sources are known; ``progress`` after
    every file. Raises ImportUsageError before anything is written when the import cannot start."""
    started, cpu_started = time.perf_counter(), time.process_time()
    principal = owner_principal(bastion, owner)
    found = discover(paths)
    report = ImportReport(owner=principal.username, paths=[str(p) for p in paths], kinds=found.kinds)
    report.files.extend(FileResult(s.shown, Path(s.shown).name, "skipped", s.reason) for s in found.skipped)
    total_bytes = sum(_size(s.path) for s in found.sources)
    if on_discovered is not None:
        on_discovered(len(found.sources), total_bytes)
    import_id = uuid.uuid4().hex[:16]
    with bastion.db.write() as session:
        record_event(session, "import.started", actor_id=principal.user_id, actor=principal.username,
                     subject=f"import:{import_id}", context=IMPORT_CONTEXT, secret=bastion.secret,
                     details={"paths": report.paths, "sources": found.kinds, "files": len(found.sources),
                              "skipped_not_a_distribution": len(found.skipped)})
    with bastion.db.read() as session:
        existing_files = {row.filename: (row.sha256_digest, row.project_id)
                          for row in session.execute(select(File.filename, File.sha256_digest, File.project_id))}
        existing_projects = set(session.execute(select(Project.normalized_name)).scalars())
        project_names = dict(session.execute(select(Project.id, Project.normalized_name)).all())
    checker = Checker(bastion, principal, project_from_filename=project_from_filename,
                      existing_projects=existing_projects)
    touched: dict[int, set[str]] = {}
    yanks: dict[tuple[int, str], str] = {}
    state = Progress(done=0, total=len(found.sources), bytes_done=0, refused=0, held=0)

    def finish(source: Source, result: FileResult) -> None:
        report.files.append(result)
        state.done += 1
        state.bytes_done += _size(source.path)
        state.refused += result.outcome == "refused"
        state.held += result.outcome == "held"
        if progress is not None:
            progress(state)

    def early(source: Source) -> Present | Refused | None:
        """Decided without opening the file's archive: already present, or a taken filename."""
        known = existing_files.get(source.filename)
        if known is None:
            return None
        sha256 = _sha256(source.path)
        if source.expected_sha256 and source.expected_sha256 != sha256:
            return Refused(source, _damaged(source))
        if sha256 == known[0]:
            touched.setdefault(known[1], set())  # its pages are checked, not re-rendered
            return Present(source)
        blake2 = upload.file_digests(source.path)[1]["blake2_256_digest"]
        return Refused(source, upload.file_exists_message(source.filename, blake2))

    def store(item: Checked | Present | Refused) -> None:
        source = item.source
        if isinstance(item, Present):
            finish(source, FileResult(source.shown, source.filename, "present", ALREADY_PRESENT))
            return
        if isinstance(item, Refused):
            finish(source, FileResult(source.shown, source.filename, "refused", item.reason))
            return
        try:
            # A refusal here removes the blobs the worker wrote (unless a stored file owns them).
            outcome = upload.store_checked(bastion, principal, item.checked, IMPORT_CONTEXT, item.scan,
                                           item.resemblance, render=False, upload_time=source.upload_time,
                                           prewritten=item.prewritten, stdlib_names=True)
        except ServiceError as exc:
            finish(source, FileResult(source.shown, source.filename, "refused", exc.message))
            return
        name = outcome.project
        report.projects.add(name)
        if not outcome.created:
            finish(source, FileResult(source.shown, source.filename, "present", ALREADY_PRESENT, name,
                                      outcome.version))
            return
        existing_files[source.filename] = (item.checked.digests["sha256_digest"], outcome.project_id)
        project_names[outcome.project_id] = name
        if name not in existing_projects:
            report.created_projects.add(name)
            existing_projects.add(name)
        touched.setdefault(outcome.project_id, set()).add(outcome.version)
        if source.yanked is not None:
            yanks[(outcome.project_id, outcome.version)] = source.yanked
        report.serial = max(report.serial, outcome.serial)
        report.bytes_stored += item.checked.size
        held = bool(outcome.held)
        finish(source, FileResult(source.shown, source.filename, "held" if held else "accepted",
                                  "; ".join(outcome.held or []), name, outcome.version))

    pending: list[Source] = []
    for source in found.sources:
        decided = early(source)
        if decided is not None:
            store(decided)
        else:
            pending.append(source)
    for item in _checked_in_order(checker, pending, workers):
        store(item)
    for source in found.sources:  # yanks of releases imported by an earlier run
        if source.yanked is not None and source.filename in existing_files:
            yanks.setdefault((existing_files[source.filename][1], _release_version(bastion, source.filename)),
                             source.yanked)
    _render(bastion, principal, report, touched, yanks, project_names)
    if report.serial:
        bastion.notify_change(report.serial)
    report.tuf = sign_queued(bastion) if sign else "queued for the server's TUF snapshot process"
    report.seconds = time.perf_counter() - started
    report.cpu_seconds = time.process_time() - cpu_started
    with bastion.db.write() as session:
        record_event(session, "import.finished", actor_id=principal.user_id, actor=principal.username,
                     subject=f"import:{import_id}", context=IMPORT_CONTEXT, secret=bastion.secret,
                     details={**report.counts(), "refused_by_reason": report.refusals_by_reason(),
                              "projects": len(report.projects), "projects_created": len(report.created_projects),
                              "seconds": round(report.seconds, 3)})
    return report


def _damaged(source: Source) -> str:
    return (f"The file '{source.filename}' does not match the sha256 its source index recorded "
            f"({source.expected_sha256}): it changed or was damaged since the export.")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _release_version(bastion: Bastion, filename: str) -> str:
    with bastion.db.read() as session:
        return str(session.execute(
            select(Release.version).join(File, File.release_id == Release.id).where(File.filename == filename)
        ).scalar_one())


def _checked_in_order(checker: Checker, sources: list[Source], workers: int) -> Iterator[Checked | Refused]:
    """Check ``sources`` in ``workers`` processes (the checks and the scanner are CPU-bound Python:
    threads would take turns on one core and slow the storing thread down), yielding results in
    the sources' order, a bounded window ahead so that memory stays flat on a large tree. Each
    process opens its own services on the same settings (a read connection for the name check
    and the scanner's list of removed projects)."""
    if workers <= 1 or len(sources) < 2:
        for source in sources:
            yield checker.check(source)
        return
    import multiprocessing

    chunks = [sources[i:i + CHUNK_FILES] for i in range(0, len(sources), CHUNK_FILES)]
    window = workers * 4  # chunks in flight
    context = multiprocessing.get_context("spawn")  # no inherited database connections or threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_worker,
                             initargs=(checker.bastion.settings, checker.owner, checker.project_from_filename,
                                       checker.existing_projects)) as pool:
        queue: deque[Future[list[Checked | Refused]]] = deque()
        it = iter(chunks)
        for chunk in it:
            queue.append(pool.submit(_check_in_worker, chunk))
            if len(queue) >= window:
                break
        while queue:
            results = queue.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                queue.append(pool.submit(_check_in_worker, nxt))
            yield from results


_WORKER: Checker | None = None


def _start_worker(settings: Settings, owner: Principal, project_from_filename: bool,
                  existing_projects: set[str]) -> None:
    global _WORKER
    from bastion.services import Bastion

    bastion = Bastion(settings, run_migrations=False)
    _WORKER = Checker(bastion, owner, project_from_filename=project_from_filename,
                      existing_projects=existing_projects, prewrite=True)


def _check_in_worker(sources: list[Source]) -> list[Checked | Refused]:
    assert _WORKER is not None, "the worker process was not started with _start_worker"
    return [_WORKER.check(source) for source in sources]


def _render(bastion: Bastion, principal: Principal, report: ImportReport, touched: dict[int, set[str]],
            yanks: dict[tuple[int, str], str], project_names: dict[int, str]) -> None:
    """Apply the source's yanks, then render each project that changed (or whose pages are older
    than its last change: an import killed before this step) once, in batches of projects; the
    project list last."""
    from bastion.packaging.service import set_yanked
    from bastion.simple.models import RenderedPage
    from bastion.simple.render import refresh_project_pages, render_simple_index, simple_detail_key, store_pages

    with bastion.db.read() as session:
        ids = sorted(touched)
        stale: set[int] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            serials = dict(session.execute(select(Project.id, Project.last_serial).where(Project.id.in_(chunk))).all())
            keys = {simple_detail_key(project_names[i], "html"): i for i in chunk if i in project_names}
            rendered = dict(session.execute(
                select(RenderedPage.key, RenderedPage.serial).where(RenderedPage.key.in_(list(keys)))
            ).all())
            for key, project_id in keys.items():
                if rendered.get(key) is None or rendered[key] < serials.get(project_id, 0):
                    stale.add(project_id)
                    touched[project_id] |= {v for v in _versions(session, project_id)}
    by_project: dict[int, list[tuple[str, str]]] = {}
    for (project_id, version), reason in yanks.items():
        by_project.setdefault(project_id, []).append((version, reason))
    work = sorted({i for i, versions in touched.items() if versions} | stale | set(by_project))
    for start in range(0, len(work), RENDER_BATCH):
        batch = work[start:start + RENDER_BATCH]
        with bastion.db.write() as session:
            for project_id in batch:
                for version, reason in by_project.get(project_id, []):
                    try:
                        serial = set_yanked(session, project_names[project_id], version, yanked=True,
                                            reason=reason or None, principal=principal, context=IMPORT_CONTEXT,
                                            secret=bastion.secret)
                        report.serial = max(report.serial, serial)
                        report.yanked.append(f"{project_names[project_id]} {version}")
                    except Conflict:
                        pass  # yanked already (a re-run)
                refresh_project_pages(session, project_id, versions=sorted(touched.get(project_id, ())))
                report.rendered_projects += 1
    if work:
        with bastion.db.write() as session:
            last = max(report.serial, session.execute(select(Project.last_serial).order_by(
                Project.last_serial.desc()).limit(1)).scalar() or 0)
            store_pages(session, render_simple_index(session, last), last)


def _versions(session: Any, project_id: int) -> list[str]:
    return list(session.execute(select(Release.version).where(Release.project_id == project_id)).scalars())


def sign_queued(bastion: Bastion) -> str:
    """Sign the projects queued for TUF now when this process can (the repository exists and its
    online key is here), as ``bastion tuf refresh`` does; otherwise the server's snapshot process
    signs them (at its next poll, or when it starts)."""
    if bastion.settings.tuf == "off":
        return "TUF is off"
    from bastion.tuf import repository
    from bastion.tuf.keys import TufError
    from bastion.tuf.service import online_signer, run_snapshot

    with bastion.db.read() as session:
        row = repository.repository_row(session)
        depth, _ = repository.queue_depth(session)
    if depth == 0:
        return "nothing to sign"
    if row is None or row.suspended:
        return f"{depth} projects queued: `bastion serve` signs them when it starts"
    try:
        signer = online_signer(bastion)
        runs = 0
        while run_snapshot(bastion, signer) is not None:
            runs += 1
    except (TufError, OSError) as exc:
        log.warning("import: TUF signing left to the server (%s)", exc)
        return f"{depth} projects queued for the server's TUF snapshot process ({exc})"
    return f"signed ({runs} snapshot runs)"
