"""Scanning on the upload path: the name check at project creation and the scan of every file.

``Bastion.scanner`` and ``Bastion.name_guard`` are built on first use (one per process). The
upload pipeline calls ``check_new_name`` before it spools the file and ``scan_upload`` after the
archive checks and before its transaction; ``store_scan`` records the verdict inside that
transaction. A file is visible only if its verdict allows it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.orm import Session

from bastion.events import RequestContext, record_event
from bastion.packaging.errors import UploadRejected
from bastion.packaging.models import File, Project, Role
from bastion.packaging.names import normalize
from bastion.scanning.models import CaseState, NameRule, ReviewCase, ScanRecord
from bastion.scanning.result import Finding, ScanContext, ScanPolicy, ScanResult, Verdict

if TYPE_CHECKING:
    from bastion.scanning.names import NameIndex, Resemblance
    from bastion.scanning.scanner import Scanner
    from bastion.services import Bastion
    from bastion.settings import Settings

log = logging.getLogger("bastion.scanning")

MAX_REASONS = 5


def make_scanner(settings: Settings) -> Scanner:
    from bastion.scanning.scanner import Scanner

    return Scanner(ScanPolicy(quarantine_at=settings.scan_quarantine_score, reject_at=settings.scan_reject_score))


_POPULAR: dict[str, NameIndex] = {}
_POPULAR_LOCK = threading.Lock()


def popular_index(path: Path | None) -> NameIndex:
    """The index of the popular names, built once per process and list (read-only once built)."""
    from bastion.scanning.names import NameIndex, load_popular

    key = str(path)
    with _POPULAR_LOCK:
        if key not in _POPULAR:
            _POPULAR[key] = NameIndex.build(load_popular(path))
        return _POPULAR[key]


class NameGuard:
    """The typosquat check against popular names and this index's own projects.

    The popular names are indexed once per process (``popular_index``); this index's projects go
    into a second, small index, and projects created since the last check (in any process) are
    added before each check with one query on the primary key. Deleted projects stay in it: a name
    imitating a deleted project is still suspect.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._existing: NameIndex | None = None
        self._seen_id = 0
        self._lock = threading.Lock()

    def _current(self, session: Session) -> NameIndex:
        from bastion.scanning.names import NameIndex

        if self._existing is None:
            # An index's own projects come in numbered families (plugin-1, plugin-2, api-v2):
            # a digit that differs from one of them is not a typo.
            self._existing = NameIndex.build((), edit_skip_digits=True)
        rows = session.execute(
            select(Project.id, Project.name).where(Project.id > self._seen_id).order_by(Project.id)
        ).all()
        for row in rows:
            self._existing.add_existing(row.name)
            self._seen_id = row.id
        return self._existing

    def check(self, session: Session, name: str, user_id: int | None = None) -> Resemblance | None:
        """What ``name`` imitates, or None (also None when an admin allowed the name, and when the
        name resembles a project of this index on which ``user_id`` has a role: their own family)."""
        if name_rule(session, name) == "allow":
            return None
        popular = popular_index(self.settings.popular_names)
        if popular.is_known(name):
            return None  # a popular name is never a squat of another (the combined index's rule)
        found = popular.check(name)
        if found is not None:
            return found
        with self._lock:
            found = self._current(session).check(name)
        if found is not None and user_id is not None and session.execute(
            select(Role.id).join(Project, Project.id == Role.project_id)
            .where(Project.normalized_name == normalize(found.name), Role.user_id == user_id)
        ).first():
            return None
        return found


def name_rule(session: Session, name: str) -> str | None:
    """``ban`` or ``allow`` if an admin listed the name, else None."""
    return session.execute(select(NameRule.rule).where(NameRule.normalized_name == normalize(name))).scalar()


def banned_names(session: Session, name: str | None = None) -> frozenset[str]:
    """The banned names (a ban also refuses their confusable spellings). None apply to ``name``
    when an admin allowed that very name: an allow rule lifts a ban's reach over a look-alike."""
    if name is not None and name_rule(session, name) == "allow":
        return frozenset()
    return frozenset(session.execute(select(NameRule.normalized_name).where(NameRule.rule == "ban")).scalars())


def check_new_name(bastion: Bastion, session: Session, name: str, user_id: int | None = None) -> Resemblance | None:
    """For a name nobody registered yet: refuse a typosquat under the ``block`` policy (400 naming
    the project it resembles); under ``review``, return the resemblance for the caller to flag."""
    from bastion.packaging.names import is_valid_name
    from bastion.packaging.service import new_project_refusal

    if not is_valid_name(name):
        return None  # the metadata check refuses it with packaging's own message
    # The plain rules first (stdlib, reserved, banned, confusable with an existing project): their
    # message is the more exact one; the transaction that creates the project checks them again.
    refusal = new_project_refusal(session, name, frozenset(bastion.settings.prohibited_names) | banned_names(session, name))
    if refusal:
        raise UploadRejected(refusal)
    if bastion.settings.scan == "off":
        return None
    resemblance = bastion.name_guard.check(session, name, user_id)
    if resemblance is not None and bastion.settings.name_policy == "block":
        raise UploadRejected(resemblance.message(name))
    return resemblance


def known_malicious(session: Session) -> frozenset[str]:
    """Projects removed as malware by a review decision."""
    return frozenset(session.execute(
        select(ReviewCase.project_name).where(ReviewCase.state == CaseState.PROJECT_REMOVED.value).distinct()
    ).scalars())


def scan_upload(bastion: Bastion, path: Path, filename: str, project_name: str, *, new_project: bool,
                resembles: str | None, context: RequestContext,
                malicious: frozenset[str] | None = None, hold_rejects: bool = False) -> ScanResult | None:
    """Scan an uploaded file before its transaction. A ``reject`` verdict is recorded (scan record
    and audit event, in their own transaction) and refused with the reasons; None when scanning is off.
    ``malicious``: :func:`known_malicious`, when the caller read it already. ``hold_rejects``
    (imports: the file was served by the source index already): a ``reject`` is returned, and the
    store holds the file for review as it does a ``quarantine``, so a false positive loses nothing."""
    if bastion.settings.scan == "off":
        return None
    if malicious is None:
        with bastion.db.read() as session:
            malicious = known_malicious(session)
    result = bastion.scanner.scan(path, filename=filename, context=ScanContext(
        project_name=project_name, new_project=new_project, known_malicious=malicious, resembles=resembles,
    ))
    if result.verdict is Verdict.REJECT and not hold_rejects:
        with bastion.db.write() as session:
            scan_id = store_scan(session, result, normalize(project_name), file_id=None, trigger="upload")
            record_event(session, "upload.refused-by-scanner", subject=f"project:{normalize(project_name)}",
                         context=context, secret=bastion.secret,
                         details={"filename": filename, "sha256": result.sha256, "score": result.score,
                                  "scan_id": scan_id, "rules": sorted({f.rule for f in result.findings})})
        raise UploadRejected(refusal_message(result))
    return result


def refusal_message(result: ScanResult) -> str:
    """One line for twine: what the scanner saw and what to do."""
    if result.error:
        return f"Invalid distribution file '{result.filename}': {result.error}"
    top = strongest(result.findings, 3)
    seen = "; ".join(f"{f.why} ({f.rule} in {f.file}{f':{f.line}' if f.line else ''})" for f in top)
    return (
        f"The upload of '{result.filename}' was refused by the index's malware scanner "
        f"(score {result.score}/10): {seen}. If this is a false positive, contact the index administrators."
    )


def strongest(findings: Iterable[Finding], count: int = MAX_REASONS) -> list[Finding]:
    return sorted(findings, key=lambda f: -f.severity)[:count]


def reasons_of(result: ScanResult) -> list[str]:
    """Short reasons for the maintainers' notice and the case summary."""
    return [f"{f.why} ({f.rule}, {f.file}{f':{f.line}' if f.line else ''})" for f in strongest(result.findings)]


def store_scan(session: Session, result: ScanResult, project_name: str, *, file_id: int | None,
               trigger: str) -> int:
    """Record one scan; the record's id."""
    return session.execute(_NEW_SCAN_RECORD, {
        "file_id": file_id, "project_name": project_name, "filename": result.filename, "sha256": result.sha256,
        "verdict": result.verdict.value, "score": result.score, "findings": [f.to_json() for f in result.findings],
        "rules_version": result.rules_version, "trigger": trigger,
    }).scalar_one()


_scan_records = cast(Table, ScanRecord.__table__)
_NEW_SCAN_RECORD = insert(_scan_records).returning(_scan_records.c.id)  # every upload: prepared once


def hold_file(session: Session, bastion: Bastion, file: File, project: Project, result: ScanResult,
              context: RequestContext) -> ReviewCase:
    """Quarantine a just-stored file on the scanner's word: invisible, queued, on record."""
    file.quarantined = True
    scan_id = store_scan(session, result, project.normalized_name, file_id=file.id, trigger="upload")
    case = ReviewCase(
        kind="file", source="scan", project_id=project.id, project_name=project.normalized_name, file_id=file.id,
        filename=file.filename, scan_id=scan_id, hidden=True,
        summary=f"scanner score {result.score}/10: " + "; ".join(f.rule for f in strongest(result.findings, 3)),
    )
    session.add(case)
    session.flush()
    record_event(session, "file.quarantined", subject=f"project:{project.normalized_name}", context=context,
                 secret=bastion.secret,
                 details={"filename": file.filename, "score": result.score, "case_id": case.id, "scan_id": scan_id})
    return case


def open_cases_count(session: Session) -> int:
    return session.execute(
        select(func.count()).select_from(ReviewCase).where(ReviewCase.state == CaseState.OPEN.value)
    ).scalar_one()
