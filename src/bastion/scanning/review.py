"""The review queue: cases opened by the scanner, rescans, reports and the name check, and the
admins' decisions on them. Every decision is an audit event, and cases are never deleted.

Functions that change state run inside the caller's write transaction and return an ``Outcome``
(journal serial, blobs to delete, mail to send); ``finish`` applies it after commit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from bastion.accounts import notifications
from bastion.accounts.models import ApiToken, BrowserSession, User
from bastion.authz import Permission, Principal, decide
from bastion.db import utcnow
from bastion.errors import Conflict, Forbidden, NotFound, ServiceError
from bastion.events import CLI_CONTEXT, RequestContext, record_event
from bastion.mail import Message
from bastion.packaging.models import File, Project, ProjectStatus, Release, Role
from bastion.packaging.names import normalize
from bastion.scanning.models import CaseState, MalwareReport, NameRule, ReviewCase, ScanRecord
from bastion.scanning.result import Finding, Verdict

if TYPE_CHECKING:
    from bastion.scanning.names import Resemblance
    from bastion.services import Bastion

MAX_REASON = 2000
ACTIONS = ("release", "remove", "remove-project", "dismiss")


@dataclass
class Outcome:
    """What to do after the decision's transaction committed."""

    serial: int = 0
    blob_paths: list[str] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    summary: str = ""


def finish(bastion: Bastion, outcome: Outcome,
           send: Callable[[list[Message]], None] | None = None) -> None:
    """Delete blobs, tell the readers, send the mail (``send``, default the server's background
    ``send_mail``; the CLI, which runs no worker, sends at once): after commit."""
    from bastion.packaging.service import delete_blobs

    delete_blobs(bastion, outcome.blob_paths)
    if outcome.serial:
        bastion.notify_change(outcome.serial)
    (send or bastion.send_mail)(outcome.messages)


def require_reviewer(principal: Principal | None) -> Principal:
    decision = decide(principal, Permission.REVIEW_MALWARE)
    if not decision:
        raise Forbidden(decision.reason, status=401 if principal is None else 403)
    assert principal is not None
    return principal


def _event(session: Session, bastion: Bastion, action: str, principal: Principal | None, subject: str,
           context: RequestContext, **details: object) -> None:
    record_event(session, action, actor_id=principal.user_id if principal else None,
                 actor=principal.username if principal else None, subject=subject, context=context,
                 secret=bastion.secret, details=details)


# -- opening cases ----------------------------------------------------------------------------

def flag_name(session: Session, bastion: Bastion, project: Project, resemblance: Resemblance,
              context: RequestContext) -> ReviewCase:
    """``name_policy = review``: the new project stays visible; an admin looks at its name."""
    case = ReviewCase(kind="project", source="name", project_id=project.id, project_name=project.normalized_name,
                      hidden=False,
                      summary=f"name resembles the {resemblance.source} project '{resemblance.name}' ({resemblance.how})")
    session.add(case)
    session.flush()
    _event(session, bastion, "project.name-flagged", None, f"project:{project.normalized_name}", context,
           resembles=resemblance.name, how=resemblance.how, case_id=case.id)
    return case


def quarantine_project(session: Session, bastion: Bastion, project: Project, *, source: str, summary: str,
                       principal: Principal | None, context: RequestContext,
                       case: ReviewCase | None = None) -> Outcome:
    """Hide a whole project (PEP 792 ``quarantined``): its pages offer no file, it leaves the project
    list and the JSON API, its files are not downloadable, and uploads to it are refused."""
    from bastion.packaging.service import journal
    from bastion.simple.render import refresh_project_pages

    if project.status == ProjectStatus.QUARANTINED:
        raise Conflict(f"project '{project.name}' is quarantined already")
    project.status = ProjectStatus.QUARANTINED.value
    project.status_reason = "Held for review by the index administrators (suspected malware)."
    if case is None:
        case = ReviewCase(kind="project", source=source, project_id=project.id, project_name=project.normalized_name,
                          summary=summary)
        session.add(case)
    case.kind, case.hidden = "project", True
    session.flush()
    serial = journal(session, project, "quarantine project", actor_id=principal.user_id if principal else None)
    refresh_project_pages(session, project.id, index=True)
    _event(session, bastion, "project.quarantined", principal, f"project:{project.normalized_name}", context,
           source=source, case_id=case.id, summary=summary)
    messages = notifications.held_for_review(session, project.id, "The whole project", [summary])
    return Outcome(serial=serial, messages=messages, summary=f"project {project.name} quarantined (case #{case.id})")


# -- reports ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReportOutcome:
    case_id: int
    quarantined: bool
    """The report put the project in quarantine at once (a trusted reporter's rule)."""


def report_project(session: Session, bastion: Bastion, project_name: str, principal: Principal | None,
                   reason: str, context: RequestContext) -> tuple[ReportOutcome, Outcome]:
    """A signed-in user reports a project as malicious. It quarantines the project at once, as
    PyPI does, when a trusted reporter reports a project younger than ``report_quarantine_age``, or
    when two different people, one of them trusted, reported it; otherwise it queues a case."""
    decision = decide(principal, Permission.REPORT_MALWARE)
    if not decision or principal is None or principal.user_id is None:
        raise Forbidden(decision.reason or "sign in to report a project", status=401 if principal is None else 403)
    reason = " ".join(reason.split())
    if not reason:
        raise ServiceError("Say why you think the project is malicious (what file, what it does).")
    if len(reason) > MAX_REASON:
        raise ServiceError(f"The reason is too long: at most {MAX_REASON} characters.")
    project = session.execute(
        select(Project).where(Project.normalized_name == normalize(project_name))
    ).scalar_one_or_none()
    if project is None:
        raise NotFound(f"no project named '{project_name}' on this index")
    user = session.get(User, principal.user_id)
    assert user is not None
    case = session.execute(
        select(ReviewCase).where(ReviewCase.project_id == project.id, ReviewCase.state == CaseState.OPEN.value,
                                 ReviewCase.kind == "project", ReviewCase.source.in_(("report", "name")))
        .order_by(ReviewCase.id)
    ).scalars().first()
    if case is not None and session.execute(
        select(MalwareReport.id).where(MalwareReport.case_id == case.id, MalwareReport.reporter_id == user.id)
    ).first():
        raise Conflict(f"You have already reported '{project.name}'; the administrators are reviewing it.")
    if case is None:
        case = ReviewCase(kind="project", source="report", project_id=project.id,
                          project_name=project.normalized_name, summary=f"reported as malicious: {reason[:200]}")
        session.add(case)
        session.flush()
    session.add(MalwareReport(project_id=project.id, project_name=project.normalized_name, reporter_id=user.id,
                              reporter=user.username, trusted=user.trusted_reporter, reason=reason, case_id=case.id))
    session.flush()
    _event(session, bastion, "project.reported", principal, f"project:{project.normalized_name}", context,
           case_id=case.id, trusted=user.trusted_reporter)
    reports = session.execute(
        select(MalwareReport.reporter_id, MalwareReport.trusted).where(MalwareReport.case_id == case.id)
    ).all()
    reporters = {r.reporter_id for r in reports}
    any_trusted = any(r.trusted for r in reports)
    young = project.created > utcnow() - bastion.settings.duration("report_quarantine_age")
    outcome = Outcome()
    quarantined = False
    if project.status != ProjectStatus.QUARANTINED and any_trusted and (
        (user.trusted_reporter and young) or len(reporters) >= 2
    ):
        why = ("a trusted reporter reported a project less than "
               f"{bastion.settings.report_quarantine_age} old" if user.trusted_reporter and young
               else f"{len(reporters)} people reported it, one of them a trusted reporter")
        outcome = quarantine_project(session, bastion, project, source="report", principal=principal,
                                     context=context, case=case, summary=f"reported as malicious ({why})")
        quarantined = True
    return ReportOutcome(case_id=case.id, quarantined=quarantined), outcome


# -- reading the queue ------------------------------------------------------------------------

@dataclass(frozen=True)
class CaseView:
    id: int
    kind: str
    source: str
    state: str
    hidden: bool
    project_name: str
    filename: str | None
    summary: str
    opened: datetime
    decided: datetime | None
    decided_by: str | None
    decision_note: str | None
    score: float | None
    reports: int


@dataclass(frozen=True)
class ReportView:
    reporter: str
    trusted: bool
    reason: str
    created: datetime


@dataclass(frozen=True)
class CaseDetails:
    case: CaseView
    findings: list[Finding]
    reports: list[ReportView]
    people: list[tuple[str, str, bool]]
    """(username, role, account active) of the project's owners and maintainers."""
    project_created: datetime | None
    project_status: str | None
    file_sha256: str | None
    rules_version: str | None
    other_cases: list[CaseView]


def _views(session: Session, query) -> list[CaseView]:  # type: ignore[no-untyped-def]
    cases = session.execute(query).scalars().all()
    if not cases:
        return []
    scores = dict(session.execute(
        select(ScanRecord.id, ScanRecord.score).where(ScanRecord.id.in_([c.scan_id for c in cases if c.scan_id]))
    ).all())
    counts = dict(session.execute(
        select(MalwareReport.case_id, func.count()).where(MalwareReport.case_id.in_([c.id for c in cases]))
        .group_by(MalwareReport.case_id)
    ).all())
    return [CaseView(id=c.id, kind=c.kind, source=c.source, state=c.state, hidden=c.hidden,
                     project_name=c.project_name, filename=c.filename, summary=c.summary, opened=c.opened,
                     decided=c.decided, decided_by=c.decided_by, decision_note=c.decision_note,
                     score=scores.get(c.scan_id), reports=counts.get(c.id, 0)) for c in cases]


def list_cases(session: Session, principal: Principal | None, *, state: str = "open",
               limit: int = 200) -> list[CaseView]:
    """Open cases oldest first (the queue), or decided ones newest first (the record)."""
    require_reviewer(principal)
    query = select(ReviewCase)
    if state == "open":
        query = query.where(ReviewCase.state == CaseState.OPEN.value).order_by(ReviewCase.id)
    elif state == "decided":
        query = query.where(ReviewCase.state != CaseState.OPEN.value).order_by(ReviewCase.decided.desc())
    elif state != "all":
        raise ServiceError(f"unknown case state filter '{state}': use open, decided or all")
    else:
        query = query.order_by(ReviewCase.id.desc())
    return _views(session, query.limit(limit))


def case_details(session: Session, principal: Principal | None, case_id: int) -> CaseDetails:
    require_reviewer(principal)
    case = session.get(ReviewCase, case_id)
    if case is None:
        raise NotFound(f"no review case #{case_id}")
    view = _views(session, select(ReviewCase).where(ReviewCase.id == case_id))[0]
    scan = session.get(ScanRecord, case.scan_id) if case.scan_id else None
    findings = [Finding.from_json(f) for f in scan.findings] if scan else []
    reports = [ReportView(reporter=r.reporter, trusted=r.trusted, reason=r.reason, created=r.created)
               for r in session.execute(
                   select(MalwareReport).where(MalwareReport.case_id == case.id).order_by(MalwareReport.id)
               ).scalars()]
    project = session.get(Project, case.project_id) if case.project_id else None
    people = [(u, r, a) for u, r, a in session.execute(
        select(User.username, Role.role, User.is_active).join(Role, Role.user_id == User.id)
        .where(Role.project_id == case.project_id).order_by(User.username_key)
    ).all()] if project else []
    others = _views(session, select(ReviewCase).where(
        ReviewCase.project_name == case.project_name, ReviewCase.id != case.id).order_by(ReviewCase.id.desc()).limit(20))
    return CaseDetails(case=view, findings=sorted(findings, key=lambda f: -f.severity), reports=reports,
                       people=people, project_created=project.created if project else None,
                       project_status=project.status if project else None,
                       file_sha256=scan.sha256 if scan else None, rules_version=scan.rules_version if scan else None,
                       other_cases=others)


# -- decisions ---------------------------------------------------------------------------------

def decide_case(session: Session, bastion: Bastion, case_id: int, action: str, principal: Principal | None,
                note: str = "", context: RequestContext = CLI_CONTEXT) -> Outcome:
    """Apply an admin's decision: ``release`` (published as if just uploaded), ``remove`` (the
    file, or the project of a project case), ``remove-project`` (the project, and its owners and
    maintainers frozen), or ``dismiss`` (a flag that needs nothing done)."""
    principal = require_reviewer(principal)
    if action not in ACTIONS:
        raise ServiceError(f"unknown decision '{action}': use one of {', '.join(ACTIONS)}")
    # Locked: of two admins deciding at once, the second waits and then sees the case decided.
    case = session.get(ReviewCase, case_id, with_for_update=True)
    if case is None:
        raise NotFound(f"no review case #{case_id}")
    if case.state != CaseState.OPEN.value:
        raise Conflict(f"case #{case_id} was decided already ({case.state} by {case.decided_by})")
    note = " ".join(note.split())[:MAX_REASON]
    case.decision_note = note or None
    if action == "release":
        outcome, state = _release(session, bastion, case, principal), CaseState.RELEASED
    elif action == "dismiss":
        if case.hidden and not _held_thing_gone(case):
            raise ServiceError(f"case #{case_id} hides something: release it or remove it, not dismiss it")
        outcome, state = Outcome(summary=f"case #{case.id} dismissed"), CaseState.DISMISSED
    elif action == "remove" and case.kind == "file":
        outcome, state = _remove_file(session, bastion, case, principal), CaseState.REMOVED
    else:
        outcome = _remove_project(session, bastion, case, principal, freeze=action == "remove-project", context=context)
        state = CaseState.PROJECT_REMOVED if action == "remove-project" else CaseState.REMOVED
    case.state = state.value
    case.decided = utcnow()
    case.decided_by_id = principal.user_id
    case.decided_by = principal.username
    case.decision_note = note or None
    _event(session, bastion, f"review.{action}", principal, f"project:{case.project_name}", context,
           case_id=case.id, kind=case.kind, filename=case.filename, note=note or None)
    return outcome


def _held_thing_gone(case: ReviewCase) -> bool:
    """The file (or project) a hidden case held was deleted since (its owner deleted the project):
    nothing is hidden any more, and dismissing is the only way left to close the case."""
    return case.file_id is None if case.kind == "file" else case.project_id is None


def _release(session: Session, bastion: Bastion, case: ReviewCase, principal: Principal) -> Outcome:
    from bastion.packaging.service import journal
    from bastion.simple.render import refresh_project_pages

    project = session.get(Project, case.project_id) if case.project_id else None
    if project is None:
        raise Conflict(f"the project of case #{case.id} no longer exists; dismiss is all that is left")
    if not case.hidden:
        return Outcome(summary=f"case #{case.id} cleared")
    if case.kind == "file":
        file = session.get(File, case.file_id) if case.file_id else None
        if file is None:
            raise Conflict(f"the file of case #{case.id} no longer exists")
        release = session.get(Release, file.release_id)
        assert release is not None
        if session.execute(select(File.id).where(File.release_id == release.id, File.id != file.id,
                                                 File.quarantined.is_(False)).limit(1)).first() is None:
            _take_metadata_of(bastion, release, file)
        file.quarantined = False
        file.upload_time = utcnow()  # published as if just uploaded
        serial = journal(session, project, f"release quarantined file {file.filename}", version=release.version,
                         actor_id=principal.user_id)
        refresh_project_pages(session, project.id, versions=[release.version], index=False)
        what = f"The file {file.filename}"
    else:
        project.status = ProjectStatus.ACTIVE.value
        project.status_reason = None
        serial = journal(session, project, "release quarantined project", actor_id=principal.user_id)
        versions = list(session.execute(select(Release.version).where(Release.project_id == project.id)).scalars())
        refresh_project_pages(session, project.id, versions=versions, index=True)
        what = "The whole project"
    messages = notifications.review_decided(session, project.id, what.lower(), "released (published)", case.decision_note)
    return Outcome(serial=serial, messages=messages, summary=f"{what} released (case #{case.id})")


def _take_metadata_of(bastion: Bastion, release: Release, file: File) -> None:
    """A release with no published file carries the metadata of whichever file created it, maybe
    one still held or removed: the file released first gives it its own (read from the stored
    artifact; left as it is if that cannot be read)."""
    from packaging.metadata import parse_email

    from bastion.packaging import archives

    settings = bastion.settings
    try:
        if file.metadata_sha256:
            local = bastion.blobs.local_path(file.path + ".metadata")
            data = local.read_bytes() if local is not None else None
        else:
            local = bastion.blobs.local_path(file.path)
            limits = archives.ArchiveLimits(
                max_uncompressed=settings.max_uncompressed_size, max_ratio=settings.max_compression_ratio,
                bomb_floor=settings.bomb_floor, max_members=settings.max_archive_members)
            data = archives.inspect_sdist(local, file.filename, limits)[0] if local is not None else None
    except (OSError, ServiceError, ValueError):
        return
    if data is None:
        return
    raw, _ = parse_email(data)
    release.core_metadata = dict(raw)
    release.requires_python = file.requires_python


def _remove_file(session: Session, bastion: Bastion, case: ReviewCase, principal: Principal) -> Outcome:
    from bastion.packaging.service import delete_file

    if case.file_id is None:
        raise Conflict(f"the file of case #{case.id} no longer exists")
    project_id = case.project_id
    messages = notifications.review_decided(session, project_id, f"the file {case.filename}", "removed",
                                            None) if project_id else []
    serial, paths = delete_file(session, case.file_id, actor_id=principal.user_id, reason="removed after review")
    return Outcome(serial=serial, blob_paths=paths, messages=messages, summary=f"file {case.filename} removed")


def _remove_project(session: Session, bastion: Bastion, case: ReviewCase, principal: Principal, *, freeze: bool,
                    context: RequestContext) -> Outcome:
    from bastion.packaging.service import delete_project

    project = session.get(Project, case.project_id) if case.project_id else None
    if project is None:
        raise Conflict(f"the project of case #{case.id} no longer exists")
    user_ids = list(session.execute(select(Role.user_id).where(Role.project_id == project.id)).scalars())
    messages = notifications.review_decided(session, project.id, "the whole project", "removed", None)
    frozen = [freeze_user(session, bastion, uid, principal, context, reason=f"removed project {project.name}")
              for uid in user_ids] if freeze else []
    name = project.name
    deletion = delete_project(session, bastion, name, principal=principal, context=context)
    # The project's other open cases end with it.
    session.execute(update(ReviewCase).where(ReviewCase.project_name == deletion.name, ReviewCase.id != case.id,
                                             ReviewCase.state == CaseState.OPEN.value)
                    .values(state=CaseState.PROJECT_REMOVED.value if freeze else CaseState.REMOVED.value,
                            decided=utcnow(), decided_by=principal.username, decided_by_id=principal.user_id,
                            decision_note=f"closed with case #{case.id}"))
    rule = session.get(NameRule, deletion.name) if freeze else None
    if freeze and (rule is None or rule.rule != "ban"):
        # Removed as malware: the name must not be free for another account to register and serve
        # a new version to everyone who installs it by name (an admin may lift the ban).
        if rule is None:
            rule = NameRule(normalized_name=deletion.name)
            session.add(rule)
        rule.rule, rule.reason, rule.created_by = "ban", f"removed as malware (case #{case.id})", principal.username
        _event(session, bastion, "name.ban", principal, f"name:{deletion.name}", context,
               reason=f"removed as malware (case #{case.id})")
    summary = f"project {name} removed" + (f"; frozen: {', '.join(frozen)}" if frozen else "")
    return Outcome(serial=deletion.serial, blob_paths=deletion.blob_paths, messages=messages, summary=summary)


def freeze_user(session: Session, bastion: Bastion, user_id: int, principal: Principal | None,
                context: RequestContext, *, reason: str) -> str:
    """Disable an account: no sign-in, every API token revoked, every session ended."""
    user = session.get(User, user_id)
    if user is None:
        return f"#{user_id}"
    user.is_active = False
    now = utcnow()
    session.execute(update(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked.is_(None)).values(revoked=now))
    session.execute(delete(BrowserSession).where(BrowserSession.user_id == user_id))
    _event(session, bastion, "user.frozen", principal, f"user:{user.username}", context, reason=reason)
    return user.username


# -- name rules and reporter role ----------------------------------------------------------

def set_name_rule(session: Session, bastion: Bastion, name: str, rule: str | None, principal: Principal | None,
                  reason: str = "", context: RequestContext = CLI_CONTEXT) -> None:
    """``ban`` a name, ``allow`` it despite the typosquat check, or (None) drop the rule."""
    principal = require_reviewer(principal)
    from bastion.packaging.names import is_valid_name

    if not is_valid_name(name):
        raise ServiceError(f"'{name}' is not a valid project name")
    normalized = normalize(name)
    existing = session.get(NameRule, normalized)
    if rule is None:
        if existing is None:
            raise NotFound(f"no rule for the name '{normalized}'")
        session.delete(existing)
    elif rule not in ("ban", "allow"):
        raise ServiceError(f"unknown rule '{rule}': use ban or allow")
    elif existing is None:
        session.add(NameRule(normalized_name=normalized, rule=rule, reason=reason, created_by=principal.username))
    else:
        existing.rule, existing.reason, existing.created_by = rule, reason, principal.username
    _event(session, bastion, f"name.{rule or 'rule-removed'}", principal, f"name:{normalized}", context,
           reason=reason or None)


def list_name_rules(session: Session) -> list[NameRule]:
    return list(session.execute(select(NameRule).order_by(NameRule.normalized_name)).scalars())


def set_trusted_reporter(session: Session, bastion: Bastion, username: str, trusted: bool,
                         principal: Principal | None, context: RequestContext = CLI_CONTEXT) -> None:
    principal = require_reviewer(principal)
    user = session.execute(select(User).where(User.username_key == username.lower())).scalar_one_or_none()
    if user is None:
        raise NotFound(f"no user named '{username}'")
    user.trusted_reporter = trusted
    _event(session, bastion, "user.trusted-reporter-" + ("granted" if trusted else "removed"), principal,
           f"user:{user.username}", context)


# -- rescans -----------------------------------------------------------------------------------

@dataclass
class RescanSummary:
    scanned: int = 0
    up_to_date: int = 0
    new_hits: int = 0
    missing: int = 0
    cases: list[int] = field(default_factory=list)


def rescan(bastion: Bastion, *, everything: bool = False,
           progress: Callable[[int, int], None] | None = None) -> RescanSummary:
    """Re-scan published files whose last scan used other rules (``everything``: all of them).
    A new hit opens a case for review; nothing is hidden or removed automatically."""
    scanner = bastion.scanner
    summary = RescanSummary()
    with bastion.db.read() as session:
        latest = select(ScanRecord.file_id, func.max(ScanRecord.id).label("last")).where(
            ScanRecord.file_id.is_not(None)).group_by(ScanRecord.file_id).subquery()
        rows = session.execute(
            select(File.id, File.path, File.filename, Project.normalized_name, ScanRecord.rules_version,
                   ScanRecord.verdict)
            .join(Project, Project.id == File.project_id)
            .outerjoin(latest, latest.c.file_id == File.id)
            .outerjoin(ScanRecord, ScanRecord.id == latest.c.last)
            .where(File.quarantined.is_(False)).order_by(File.id)
        ).all()
    total = len(rows)
    for done, row in enumerate(rows, 1):
        if progress:
            progress(done, total)
        if not everything and row.rules_version == scanner.rules_version:
            summary.up_to_date += 1
            continue
        local = bastion.blobs.local_path(row.path)
        if local is None or not local.is_file():
            summary.missing += 1
            continue
        result = scanner.scan(local, filename=row.filename)
        summary.scanned += 1
        with bastion.db.write() as session:
            from bastion.scanning.service import reasons_of, store_scan

            scan_id = store_scan(session, result, row.normalized_name, file_id=row.id, trigger="rescan")
            was_flagged = row.verdict not in (None, Verdict.ALLOW.value)
            if result.verdict is Verdict.ALLOW or was_flagged:
                continue
            if session.execute(select(ReviewCase.id).where(ReviewCase.file_id == row.id,
                                                           ReviewCase.state == CaseState.OPEN.value)).first():
                continue
            project_id = session.execute(select(File.project_id).where(File.id == row.id)).scalar()
            case = ReviewCase(kind="file", source="rescan", project_id=project_id, project_name=row.normalized_name,
                              file_id=row.id, filename=row.filename, scan_id=scan_id, hidden=False,
                              summary=f"rescan with new rules: score {result.score}/10: "
                              + "; ".join(reasons_of(result)[:2]))
            session.add(case)
            session.flush()
            record_event(session, "file.rescan-hit", subject=f"project:{row.normalized_name}", secret=bastion.secret,
                         details={"filename": row.filename, "score": result.score, "case_id": case.id})
            summary.new_hits += 1
            summary.cases.append(case.id)
    return summary
