"""The upload pipeline (twine's legacy API): checks, then one transaction, then the change notice.

A refused or failed upload leaves nothing behind: the temporary copy is removed, the blobs
written for it are deleted, and the transaction (rows, journal, events, rendered pages) rolls back.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from datetime import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from packaging.metadata import Metadata
from packaging.utils import canonicalize_version
from sqlalchemy import CursorResult, Table, bindparam, insert, null, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.accounts.models import ApiToken, User
from bastion.authz import Permission, Principal, decide
from bastion.db import advisory_lock, utcnow
from bastion.events import RequestContext, record_event
from bastion.packaging import archives, checks
from bastion.packaging.names import normalize
from bastion.packaging.errors import UploadRejected
from bastion.packaging.models import DeletedFilename, File, Project, ProjectStatus, Release
from bastion.accounts.notifications import held_for_review
from bastion.scanning.result import ScanResult, Verdict
from bastion.scanning.review import flag_name
from bastion.scanning.service import (
    banned_names,
    check_new_name,
    hold_file,
    known_malicious,
    reasons_of,
    scan_upload,
    store_scan,
)
from bastion.accounts.policy import mfa_policy, new_project_requires_mfa
from bastion.packaging.service import (
    ProjectAccess, authorize_access, create_project, journal_entry, project_access,
)
from bastion.services import Bastion
from bastion.advisories.alerts import Alerts, collect_alerts
from bastion.advisories.ingest import match_release
from bastion.simple.render import refresh_project_pages

if TYPE_CHECKING:
    from bastion.scanning.names import Resemblance

log = logging.getLogger("bastion.upload")
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class IncomingFile:
    """The file part of an upload form."""

    filename: str
    """As sent by the client."""
    content_type: str | None
    """The part's Content-Type."""
    stream: BinaryIO
    """The bytes."""


@dataclass(frozen=True)
class UploadOutcome:
    """What an accepted upload did."""

    created: bool
    """False when the identical file was already stored (twine --skip-existing, or a retry)."""
    project: str
    """Normalized project name."""
    version: str
    """Release version."""
    filename: str
    """Stored filename."""
    serial: int
    """Journal serial after the upload (0 when nothing changed)."""
    held: list[str] | None = None
    """Set when the scanner quarantined the file: the reasons (the maintainers are told)."""
    project_id: int = 0
    alerts: Alerts | None = None
    """Advisories that match the new release: who to tell, after commit (advisories.alerts.deliver)."""


@dataclass(frozen=True)
class CheckedFile:
    """An uploaded file that passed every check that needs no database."""

    path: Path
    filename: str
    filetype: str
    size: int
    digests: dict[str, str]
    metadata: Metadata
    metadata_raw: dict
    metadata_bytes: bytes
    python_version: str
    notes: tuple[str, ...] = ()
    """Lenient mode: metadata fields the index left out of what it interprets, and why."""

    @property
    def requires_python(self) -> str | None:
        """Requires-Python as the author wrote it (validated by packaging, served verbatim)."""
        if self.metadata.requires_python is None:  # absent, or left out as malformed (lenient)
            return None
        value = self.metadata_raw.get("requires_python")
        return value.strip() if isinstance(value, str) and value.strip() else None


def blob_path(blake2_256: str, filename: str) -> str:
    """Content-addressed path, as PyPI lays out files."""
    return f"packages/{blake2_256[:2]}/{blake2_256[2:4]}/{blake2_256[4:]}/{filename}"


def blob_paths(checked: CheckedFile) -> tuple[str, ...]:
    """The blobs an accepted file is stored as: the file, and a wheel's metadata beside it (PEP 658)."""
    path = blob_path(checked.digests["blake2_256_digest"], checked.filename)
    return (path, path + ".metadata") if checked.filetype == "bdist_wheel" else (path,)


class _Digests:
    """The three digests PyPI records for a file (MD5, SHA-256, BLAKE2b-256), fed chunk by chunk."""

    def __init__(self) -> None:
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha256 = hashlib.sha256()
        self.blake2 = hashlib.blake2b(digest_size=32)

    def update(self, chunk: bytes) -> None:
        self.md5.update(chunk)
        self.sha256.update(chunk)
        self.blake2.update(chunk)

    def hexdigests(self) -> dict[str, str]:
        return {"md5_digest": self.md5.hexdigest(), "sha256_digest": self.sha256.hexdigest(),
                "blake2_256_digest": self.blake2.hexdigest()}


def file_digests(path: Path) -> tuple[int, dict[str, str]]:
    """A stored file's size and the digests an upload's ``spool`` computes (imports)."""
    digests = _Digests()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            size += len(chunk)
            digests.update(chunk)
    return size, digests.hexdigests()


def spool(stream: BinaryIO, directory: Path, limit: int, filename: str) -> tuple[Path, int, dict[str, str]]:
    """Copy the upload to a private temporary file while hashing it and enforcing the size limit."""
    digests = _Digests()
    size = 0
    fd, name = tempfile.mkstemp(dir=directory, prefix="upload-")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    checks.check_file_size(size, limit, filename)
                digests.update(chunk)
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, size, digests.hexdigests()


def check_file(bastion: Bastion, form: Mapping[str, str] | None, incoming: IncomingFile, path: Path,
               size: int, digests: dict[str, str], filetype: str, *, strictness: str | None = None,
               lists: Mapping[str, Sequence[str]] | None = None, name_from_filename: bool = False) -> CheckedFile:
    """Every check on the artifact itself: size, digests, archive, metadata, filename, README.

    ``form`` is the client's upload form, compared with the file; None for a file with no client
    (an import: ``digests`` are the index's own). ``strictness`` is ``pypi`` or ``lenient``
    (checks.PYPI / LENIENT); None means the setting. ``name_from_filename`` (imports, lenient only):
    the name the filename gives stands in for a metadata Name that is missing, ``UNKNOWN`` or not
    valid, and an sdist without PKG-INFO gets Metadata-Version 1.0 metadata with the filename's
    name and version."""
    settings = bastion.settings
    strictness = strictness or settings.upload_strictness
    filename = incoming.filename
    named = checks.name_version_from_filename(filename) if name_from_filename and strictness == checks.LENIENT else None
    checks.check_file_size(size, settings.max_file_size, filename)
    if form is not None:
        checks.check_digests_match(form, digests)
    kind = archives.detect_kind(path)
    limits = archives.ArchiveLimits(
        max_uncompressed=settings.max_uncompressed_size, max_ratio=settings.max_compression_ratio,
        bomb_floor=settings.bomb_floor, max_members=settings.max_archive_members,
    )
    if filetype == "bdist_wheel":
        if kind != "zip":
            raise UploadRejected(f"Invalid distribution file '{filename}': a wheel must be a zip archive.")
        metadata_bytes, _ = archives.inspect_wheel(path, filename, limits)
    else:
        zipped = filename.endswith(".zip")
        if kind != ("zip" if zipped else "tar"):
            raise UploadRejected(
                f"Invalid distribution file '{filename}': a .zip sdist must be a zip archive." if zipped else
                f"Invalid distribution file '{filename}': a .tar.gz sdist must be a gzip-compressed tar archive."
            )
        try:
            if zipped:
                metadata_bytes, _ = archives.inspect_zip_sdist(path, filename, limits,
                                                               root_pkg_info=strictness == checks.LENIENT)
            else:
                metadata_bytes, _ = archives.inspect_sdist(path, filename, limits)
        except archives.MissingPkgInfo as exc:
            if not (name_from_filename and strictness == checks.LENIENT):
                raise
            if named is None:
                raise UploadRejected(f"{exc} Its filename does not give a name and a PEP 440 version either.") from None
            metadata_bytes = f"Metadata-Version: 1.0\nName: {named[0]}\nVersion: {named[1]}\n".encode()
    core = checks.read_core_metadata(metadata_bytes, filename, strictness,
                                     fallback_name=named[0] if named else None)
    metadata = core.metadata
    checks.check_metadata_rules(metadata, strictness)
    if form is not None:
        checks.check_form_agrees(form, metadata, lists, core.left_out | core.misread)
    if filetype == "bdist_wheel":
        parsed = checks.check_wheel_filename(filename, metadata, strictness)
    else:
        parsed = checks.check_sdist_filename(filename, metadata, strictness)
    checks.check_readme(metadata, strictness)
    return CheckedFile(
        path=path, filename=filename, filetype=filetype, size=size, digests=digests, metadata=metadata,
        metadata_raw=core.raw, metadata_bytes=metadata_bytes, python_version=parsed.python_version,
        notes=core.notes,
    )


def file_exists_message(filename: str, blake2: str) -> str:
    # "File already exists" is load-bearing: twine --skip-existing looks for "already exist".
    return (
        f"File already exists ('{filename}', with blake2_256 hash '{blake2}'). "
        "Each filename can be uploaded once; upload a new version instead."
    )


# The hot path's statements, built once on the tables (no ORM compile step, no statement
# construction per upload): each upload only binds its values.
_files = cast(Table, File.__table__)
_releases = cast(Table, Release.__table__)
_projects = cast(Table, Project.__table__)
_registry = cast(Table, DeletedFilename.__table__)
_tokens = cast(Table, ApiToken.__table__)
_TAKEN = (
    # Files with the same name or content, and the registry of every filename ever stored (the
    # row with no version): the name of a deleted file stays used.
    select(_files.c.filename, _files.c.blake2_256_digest, _releases.c.version)
    .join(_releases, _releases.c.id == _files.c.release_id)
    .where((_files.c.filename == bindparam("filename")) | (_files.c.blake2_256_digest == bindparam("blake2"))
           | (_files.c.sha256_digest == bindparam("sha256")))
    .union_all(select(_registry.c.filename, null(), null()).where(_registry.c.filename == bindparam("filename")))
)
_RELEASE = select(
    _releases.c.id, _releases.c.version,
    select(_files.c.id).where(_files.c.release_id == _releases.c.id, _files.c.packagetype == "sdist").exists(),
    select(_files.c.id).where(_files.c.release_id == _releases.c.id, _files.c.quarantined.is_(False)).exists(),
).where(_releases.c.project_id == bindparam("project_id"), _releases.c.canonical_version == bindparam("canonical"))
_NEW_RELEASE = insert(_releases).returning(_releases.c.id)
_RELEASE_METADATA = update(_releases).where(_releases.c.id == bindparam("release_id"))
_NEW_FILE = insert(_files).returning(_files.c.id)
_REGISTER = insert(_registry)
_PROJECT_GREW = update(_projects).where(_projects.c.id == bindparam("project_id")).values(
    total_size=_projects.c.total_size + bindparam("size"), last_serial=bindparam("serial"))
_TOKEN_USED = update(_tokens).where(_tokens.c.id == bindparam("token_id"), _tokens.c.revoked.is_(None))


def _existing_file(session: Session, checked: CheckedFile) -> str | None:
    """The version of the identical file if already stored; refuses a different file under a
    taken name or hash, and a filename used before."""
    blake2 = checked.digests["blake2_256_digest"]
    rows = session.execute(_TAKEN, {"filename": checked.filename, "blake2": blake2,
                                    "sha256": checked.digests["sha256_digest"]}).all()
    stored = [row for row in rows if row[2] is not None]
    for filename, digest, version in stored:
        if filename == checked.filename and digest == blake2:
            return version
    if stored:
        raise UploadRejected(file_exists_message(checked.filename, blake2))
    if rows:
        raise UploadRejected(
            f"This filename has already been used, use a different version ('{checked.filename}' was "
            "uploaded and deleted before; filenames cannot be reused)."
        )
    return None


def _release_for(session: Session, project: ProjectAccess, checked: CheckedFile, *, held: bool) -> tuple[int, str]:
    """The id and version of the release the file belongs to, created with the file's metadata.
    A release whose every file is held for review takes the metadata of the first file that is
    not held: the held file's own (its summary, description, URLs) must not be published with it."""
    version = str(checked.metadata.version)
    canonical = canonicalize_version(version)
    row = session.execute(_RELEASE, {"project_id": project.id, "canonical": canonical}).first()
    if row is None:
        release_id = session.execute(_NEW_RELEASE, {
            "project_id": project.id, "version": version, "canonical_version": canonical,
            "requires_python": checked.requires_python, "core_metadata": checked.metadata_raw,
        }).scalar_one()
        return release_id, version
    release_id, version, sdist_stored, any_shown = row
    if checked.filetype == "sdist" and sdist_stored:
        raise UploadRejected(
            f"Only one sdist may be uploaded per release: {project.display_name} {version} has one already."
        )
    if not held and not any_shown:
        session.execute(_RELEASE_METADATA, {"release_id": release_id, "core_metadata": checked.metadata_raw,
                                            "requires_python": checked.requires_python})
    return release_id, version


def _project_for(session: Session, bastion: Bastion, principal: Principal, checked: CheckedFile,
                 context: RequestContext, resemblance: Resemblance | None,
                 stdlib_names: bool = False) -> tuple[ProjectAccess, bool]:
    """The project the file goes to, authorized inside the transaction (a role may have been
    removed since the early check), or created; and whether it was created."""
    access = project_access(session, checked.metadata.name, principal.user_id)
    if access is not None:
        if access.status == ProjectStatus.QUARANTINED:
            raise UploadRejected(
                f"Project '{access.display_name}' is quarantined pending review by the index administrators: "
                "no uploads are accepted until the review ends.", status=403,
            )
        # Forbidden is a ServiceError: the route answers it with its status and message.
        authorize_access(principal, Permission.UPLOAD, access)
        return access, False
    decision = decide(principal, Permission.CREATE_PROJECT, project=normalize(checked.metadata.name),
                      mfa_required=new_project_requires_mfa(mfa_policy(session)))
    if not decision:
        raise UploadRejected(decision.reason, status=403)
    # A concurrent creation of the same name fails at flush with IntegrityError; the caller
    # then retries the whole transaction once, and the retry finds the project.
    user = session.get(User, principal.user_id) if principal.user_id is not None else None
    project = create_project(
        session, checked.metadata.name, user,
        prohibited=frozenset(bastion.settings.prohibited_names) | banned_names(session, checked.metadata.name),
        context=context,
        secret=bastion.secret,
        stdlib=not stdlib_names,
    )
    session.flush()  # the project's journal serial: the Core UPDATE of last_serial below must come after it
    if resemblance is not None:  # name_policy = review: created, and queued for an admin
        flag_name(session, bastion, project, resemblance, context)
    created = project_access(session, project.normalized_name, principal.user_id)
    assert created is not None
    return created, True


def _store(session: Session, bastion: Bastion, principal: Principal, token_id: str | None,
           checked: CheckedFile, context: RequestContext, written: list[str],
           scan: ScanResult | None = None, resemblance: Resemblance | None = None, *,
           render: bool = True, upload_time: datetime | None = None, prewritten: bool = False,
           stdlib_names: bool = False) -> UploadOutcome:
    """The upload's one transaction, in prepared Core statements (the ORM only for a new project
    and a held file): twenty statements for a new file of an existing project, render included
    (``benchmarks/upload_path.py --statements`` lists them)."""
    project, new_project = _project_for(session, bastion, principal, checked, context, resemblance, stdlib_names)
    existing = _existing_file(session, checked)
    if existing is not None:
        return UploadOutcome(created=False, project=project.name, version=existing, filename=checked.filename,
                             serial=0)
    # A reject reaches here only from an import (scan_upload(hold_rejects=True)): held the same way.
    held_by_scan = scan is not None and scan.verdict in (Verdict.QUARANTINE, Verdict.REJECT)
    release_id, version = _release_for(session, project, checked, held=held_by_scan)
    checks.check_project_size(project.total_size, checked.size, bastion.settings.max_project_size,
                              project.display_name)
    path, *metadata = blob_paths(checked)
    advisory_lock(session, path)  # held to commit: a failed twin's cleanup cannot delete it meanwhile
    # Pre-written blobs (``prewritten``) are asked for under the lock: a failed upload of the same
    # file elsewhere may have removed them since they were written, but not from now on.
    for blob in (path, *metadata):
        if blob not in written:
            written.append(blob)
        if prewritten and bastion.blobs.exists(blob):
            continue
        if blob == path:
            bastion.blobs.put_file(path, checked.path)
        else:
            bastion.blobs.put_bytes(blob, checked.metadata_bytes)
    metadata_sha256 = hashlib.sha256(checked.metadata_bytes).hexdigest() if metadata else None
    file_id = session.execute(_NEW_FILE, {
        "release_id": release_id, "project_id": project.id, "filename": checked.filename,
        "packagetype": checked.filetype, "python_version": checked.python_version, "size": checked.size,
        "md5_digest": checked.digests["md5_digest"], "sha256_digest": checked.digests["sha256_digest"],
        "blake2_256_digest": checked.digests["blake2_256_digest"], "path": path,
        "requires_python": checked.requires_python, "metadata_sha256": metadata_sha256,
        "upload_time": upload_time or utcnow(), "uploader_id": principal.user_id,
    }).scalar_one()
    held = None
    if held_by_scan:
        assert scan is not None
        hold_file(session, bastion, session.get_one(File, file_id), session.get_one(Project, project.id), scan,
                  context)
        held = reasons_of(scan)
    elif scan is not None:
        store_scan(session, scan, project.name, file_id=file_id, trigger="upload")
    session.execute(_REGISTER, {"filename": checked.filename})
    serial = journal_entry(session, project.name, f"add {checked.python_version} file {checked.filename}",
                           version=version, actor_id=principal.user_id)
    session.execute(_PROJECT_GREW, {"project_id": project.id, "size": checked.size, "serial": serial})
    if token_id is not None:
        record_event(session, "token.used", actor_id=principal.user_id, actor=principal.username,
                     subject=f"token:{token_id}", context=context, secret=bastion.secret,
                     details={"project": project.name, "filename": checked.filename})
        # The token's row after the audit chain's lock, in the order a revocation takes them (a
        # deadlock on PostgreSQL otherwise). Checked in this transaction, not by re-reading the
        # copy read at authentication: a revocation committed since then wins, and last_used is
        # written in the same statement.
        used = cast(CursorResult[Any], session.execute(_TOKEN_USED, {"token_id": token_id, "last_used": utcnow()})).rowcount
        if not used:
            raise UploadRejected("Invalid API token: this API token has been revoked: create a new one",
                                 status=403)
    record_event(session, "file.uploaded", actor_id=principal.user_id, actor=principal.username,
                 subject=f"project:{project.name}", context=context, secret=bastion.secret,
                 details={"filename": checked.filename, "version": version,
                          "sha256": checked.digests["sha256_digest"], "token_id": principal.token_id})
    # Before rendering: the JSON API lists them.
    new_matches = match_release(session, release_id, known=(project.id, project.name, version))
    if render:
        refresh_project_pages(session, project.id, versions=[version], index=new_project)
    alerts = collect_alerts(session, bastion, new_matches) if new_matches else None
    return UploadOutcome(created=True, project=project.name, version=version, filename=checked.filename,
                         serial=serial, held=held, project_id=project.id, alerts=alerts)


def upload(bastion: Bastion, principal: Principal, form: Mapping[str, str],
           incoming: IncomingFile, context: RequestContext,
           lists: Mapping[str, Sequence[str]] | None = None) -> UploadOutcome:
    """Run the whole pipeline; raises UploadRejected with the message twine prints.

    ``form`` holds the first value of each form field, ``lists`` every value of the fields a
    client may repeat (classifiers, requires_dist, keywords)."""
    checks.check_protocol(form)
    filetype = checks.check_filetype(form)
    checks.check_required_fields(form)
    checks.check_digests_present(form)
    checks.check_filename_text(incoming.filename)
    checks.check_extension(incoming.filename, filetype, bastion.settings.upload_strictness)
    checks.check_content_type(incoming.content_type)
    resemblance = None
    with bastion.db.read() as session:  # refuse early, before spending work on the file
        found = project_access(session, form["name"], principal.user_id)
        if found is None:
            resemblance = check_new_name(bastion, session, form["name"], principal.user_id)  # refuses under "block"
        malicious = known_malicious(session) if bastion.settings.scan != "off" else None
    if found is not None:
        authorize_access(principal, Permission.UPLOAD, found)
    path, size, digests = spool(incoming.stream, bastion.tmp_dir, bastion.settings.max_file_size, incoming.filename)
    try:
        checked = check_file(bastion, form, incoming, path, size, digests, filetype, lists=lists)
        scan = scan_upload(bastion, path, checked.filename, checked.metadata.name, new_project=found is None,
                           resembles=resemblance.name if resemblance else None, context=context,
                           malicious=malicious)
        return store_checked(bastion, principal, checked, context, scan, resemblance)
    finally:
        path.unlink(missing_ok=True)


def store_checked(bastion: Bastion, principal: Principal, checked: CheckedFile,
                  context: RequestContext, scan: ScanResult | None, resemblance: Resemblance | None = None, *,
                  render: bool = True, upload_time: datetime | None = None,
                  prewritten: bool = False, stdlib_names: bool = False) -> UploadOutcome:
    """Store a file that passed every check, in one transaction (retried once when a concurrent
    upload created the same project), then tell the readers and, for a held file, the maintainers.

    ``render=False`` (bulk import) leaves the project's pages to the caller, who renders them once
    per project and calls ``bastion.notify_change``; ``upload_time`` keeps an imported file's time.
    ``prewritten``: the file's blobs are in the store already (an import's worker process wrote
    them, in parallel): not written again, and removed like this upload's own if it fails.
    ``stdlib_names`` (imports): a new project may take a standard library module's name (the
    caller flags it for review through ``resemblance``)."""
    token_id = principal.token_id  # an upload with an API token; None for an import
    for attempt in (1, 2):
        written: list[str] = list(blob_paths(checked)) if prewritten else []
        try:
            with bastion.db.write() as session:
                outcome = _store(session, bastion, principal, token_id, checked, context, written, scan,
                                 resemblance, render=render, upload_time=upload_time, prewritten=prewritten,
                                 stdlib_names=stdlib_names)
        except IntegrityError:
            _remove(bastion, written)
            if attempt == 2:
                raise UploadRejected(
                    "Another upload changed this project at the same moment; retry the upload.", status=409
                ) from None
            continue
        except BaseException:
            _remove(bastion, written)
            raise
        if outcome.created and render:
            bastion.notify_change(outcome.serial)
        if outcome.held:
            with bastion.db.read() as session:
                bastion.send_mail(held_for_review(session, outcome.project_id, f"The file {outcome.filename}",
                                                  outcome.held))
        return outcome
    raise AssertionError("unreachable")


def _remove(bastion: Bastion, written: list[str]) -> None:
    """Delete blobs written by a failed attempt, unless a committed file owns them (a concurrent
    upload of the identical file may have won the race and committed the same path)."""
    if not written:
        return
    bases = sorted({p.removesuffix(".metadata") for p in written})
    # Under the same lock a storing upload holds until it commits (on SQLite: the write lock),
    # so an identical upload in flight either committed already or writes after this deletes.
    try:
        _remove_unowned(bastion, written, bases)
    except Exception:  # never mask the error that made the upload fail
        log.exception("could not clean up blobs %s after a failed upload", written)


def _remove_unowned(bastion: Bastion, written: list[str], bases: list[str]) -> None:
    with bastion.db.write() as session:
        for base in bases:
            advisory_lock(session, base)
        owned = set(session.execute(select(File.path).where(File.path.in_(bases))).scalars())
        for path in written:
            if path.removesuffix(".metadata") in owned:
                continue
            try:
                bastion.blobs.delete(path)
            except OSError:
                log.exception("could not remove blob %s after a failed upload", path)
