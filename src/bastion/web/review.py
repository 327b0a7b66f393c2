"""The malware review pages (HTTP only: the logic is in ``bastion.scanning.review``).

- ``/admin/review/`` (admins): the queue of open cases, oldest first, and the record of decided
  ones; ``/admin/review/ID``: a case's findings, reports and people, and the decision forms.
- ``/admin/names`` (admins): the name ban list and its exceptions, and the trusted reporters.
- ``/projects/NAME/report`` (anyone signed in): report a project as malicious.

Every form is CSRF-checked; every decision is an audit event (recorded by the service layer).
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.accounts.models import User
from bastion.authz import Permission
from bastion.db import utcnow
from bastion.errors import NotFound, ServiceError
from bastion.packaging import service as packaging
from bastion.scanning import review
from bastion.scanning.models import ReviewCase, ScanRecord
from bastion.scanning.result import Finding
from bastion.web.account import redirect
from bastion.web.pages import _admin, _canonical, _not_found, _number, _project_for_page, _refused
from bastion.web.render import render_page
from bastion.web.session import WebUser, bastion_of, context_of, csrf_form, require_reauth, signed_in

router = APIRouter(include_in_schema=False)

SOURCES = {
    "scan": "upload scan",
    "rescan": "rescan",
    "report": "user report",
    "name": "name check",
    "admin": "admin",
}
ACTION_LABELS = {
    "release": "Release",
    "remove": "Remove",
    "remove-project": "Remove the project and freeze its users",
    "dismiss": "Dismiss",
}
MAX_NOTE = review.MAX_REASON


def age(when: datetime | None, now: datetime | None = None) -> str:
    """How long ago, in the largest whole unit: ``5 min``, ``3 h``, ``2 d``."""
    if when is None:
        return ""
    seconds = max(0, int(((now or utcnow()) - when).total_seconds()))
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def _reviewer(request: Request) -> WebUser | Response:
    """The signed-in admin (anonymous: sent to sign in; others: the 403 page)."""
    return _admin(request, Permission.REVIEW_MALWARE)


# ---------------------------------------------------------------------------------------------
# The queue and the record
# ---------------------------------------------------------------------------------------------

@router.get("/admin/review/")
def queue_page(request: Request, state: str = "open") -> Response:
    user = _reviewer(request)
    if isinstance(user, Response):
        return user
    state = state if state in ("open", "decided") else "open"
    with bastion_of(request).db.read() as session:
        cases = review.list_cases(session, user.principal, state=state)
        top = _top_findings(session, [c.id for c in cases])
    return render_page(request, "review_queue.html", cases=cases, state=state, sources=SOURCES, age=age,
                       now=utcnow(), top=top)


def _top_findings(session: Session, case_ids: list[int]) -> dict[int, Finding]:
    """The strongest finding of each case's scan (what the queue shows beside the summary)."""
    if not case_ids:
        return {}
    rows = session.execute(
        select(ReviewCase.id, ScanRecord.findings).join(ScanRecord, ScanRecord.id == ReviewCase.scan_id)
        .where(ReviewCase.id.in_(case_ids))
    ).all()
    top = {}
    for case_id, findings in rows:
        parsed = [Finding.from_json(f) for f in findings or []]
        if parsed:
            top[case_id] = max(parsed, key=lambda f: f.severity)
    return top


def _case_page(request: Request, user: WebUser, case_id: int, *, status: int = 200, error: str | None = None,
               note: str = "") -> Response:
    try:
        with bastion_of(request).db.read() as session:
            details = review.case_details(session, user.principal, case_id)
            held = session.execute(
                select(ReviewCase.kind, ReviewCase.file_id, ReviewCase.project_id).where(ReviewCase.id == case_id)
            ).one()
    except ServiceError as exc:
        return _refused(request, exc)
    gone = (held.file_id if held.kind == "file" else held.project_id) is None
    return render_page(request, "review_case.html", status=status, error=error, details=details,
                       case=details.case, sources=SOURCES, labels=ACTION_LABELS, age=age, now=utcnow(),
                       note=note, max_note=MAX_NOTE, gone=gone)


def _case_id(request: Request, text: str) -> int | Response:
    number = _number(text)
    if number is None:
        return render_page(request, "message.html", status=404, title="No such case",
                           error=f"There is no review case '{text[:50]}'.", link=("/admin/review/", "The review queue"))
    return number


@router.get("/admin/review/{case_id}")
def case_page(request: Request, case_id: str) -> Response:
    user = _reviewer(request)
    if isinstance(user, Response):
        return user
    number = _case_id(request, case_id)
    if isinstance(number, Response):
        return number
    return _case_page(request, user, number)


@router.post("/admin/review/{case_id}")
def decide(request: Request, case_id: str, form: dict[str, str] = Depends(csrf_form)) -> Response:
    user = _reviewer(request)
    if isinstance(user, Response):
        return user
    number = _case_id(request, case_id)
    if isinstance(number, Response):
        return number
    action, note = form.get("action", ""), form.get("note", "")
    if action not in review.ACTIONS:
        return _case_page(request, user, number, status=400, note=note,
                          error=f"unknown decision '{action[:30]}': use the buttons of this page")
    if len(note) > MAX_NOTE:
        return _case_page(request, user, number, status=400, note=note[:MAX_NOTE],
                          error=f"the note is too long: at most {MAX_NOTE} characters")
    bastion = bastion_of(request)
    if action == "remove-project":
        with bastion.db.read() as session:
            try:
                project_name = review.case_details(session, user.principal, number).case.project_name
            except ServiceError as exc:
                return _refused(request, exc)
        typed = form.get("confirm", "").strip()
        if _canonical(typed) != project_name:
            return _case_page(request, user, number, status=400, note=note,
                              error=f"nothing was removed: type the project's name, {project_name}, in the "
                                    "confirmation field to remove the project and freeze its users")
        require_reauth(request, user)  # deletes a project and disables accounts
    try:
        with bastion.db.write() as session:
            outcome = review.decide_case(session, bastion, number, action, user.principal, note,
                                         context_of(request))
    except NotFound as exc:
        return _refused(request, exc)
    except ServiceError as exc:
        return _case_page(request, user, number, status=exc.status, error=exc.message, note=note)
    review.finish(bastion, outcome)
    summary = outcome.summary or f"case #{number} decided"
    return redirect(f"/admin/review/{number}", flash=summary[:1].upper() + summary[1:] + ".")


# ---------------------------------------------------------------------------------------------
# Name rules and trusted reporters
# ---------------------------------------------------------------------------------------------

def _names_page(request: Request, *, status: int = 200, error: str | None = None,
                form: dict[str, str] | None = None) -> Response:
    with bastion_of(request).db.read() as session:
        rules = review.list_name_rules(session)
        reporters = list(session.execute(
            select(User.username, User.is_active).where(User.trusted_reporter.is_(True)).order_by(User.username_key)
        ).all())
    return render_page(request, "admin_names.html", status=status, error=error, rules=rules, reporters=reporters,
                       form=form or {})


@router.get("/admin/names")
def names_page(request: Request) -> Response:
    user = _reviewer(request)
    if isinstance(user, Response):
        return user
    return _names_page(request)


@router.post("/admin/names")
def names_change(request: Request, form: dict[str, str] = Depends(csrf_form)) -> Response:
    user = _reviewer(request)
    if isinstance(user, Response):
        return user
    bastion = bastion_of(request)
    action = form.get("action", "")
    name = form.get("name", "").strip()[:200]
    reason = " ".join(form.get("reason", "").split())
    username = form.get("username", "").strip()[:100]
    try:
        if len(reason) > review.MAX_REASON:
            raise ServiceError(f"the reason is too long: at most {review.MAX_REASON} characters")
        with bastion.db.write() as session:
            if action in ("ban", "allow"):
                if not name:
                    raise ServiceError("type the project name the rule is for")
                review.set_name_rule(session, bastion, name, action, user.principal, reason, context_of(request))
                flash = (f"The name {name} is now banned." if action == "ban"
                         else f"The name {name} is now allowed despite the typosquat check.")
            elif action == "remove":
                review.set_name_rule(session, bastion, name, None, user.principal, context=context_of(request))
                flash = f"The rule for {name} was removed."
            elif action in ("trust", "untrust"):
                if not username:
                    raise ServiceError("type the username of the reporter")
                review.set_trusted_reporter(session, bastion, username, action == "trust", user.principal,
                                            context_of(request))
                flash = (f"{username} is now a trusted reporter." if action == "trust"
                         else f"{username} is no longer a trusted reporter.")
            else:
                raise ServiceError("unknown action: use the buttons of this page")
    except ServiceError as exc:
        return _names_page(request, status=exc.status, error=exc.message, form=form)
    return redirect("/admin/names", flash=flash)


# ---------------------------------------------------------------------------------------------
# Reports (anyone signed in)
# ---------------------------------------------------------------------------------------------

def _report_page(request: Request, name: str, *, status: int = 200, error: str | None = None,
                 reason: str = "") -> Response:
    try:
        with bastion_of(request).db.read() as session:
            project = packaging.get_project(session, name)
            display, status_now = project.name, project.status
    except NotFound:
        return _not_found(request, name)
    return render_page(request, "report.html", status=status, error=error, name=display, normalized_name=name,
                       project_status=status_now, reason=reason, max_reason=review.MAX_REASON)


@router.get("/projects/{name}/report")
def report_page(request: Request, name: str) -> Response:
    signed_in(request)
    normalized = _project_for_page(request, name, "report")
    if isinstance(normalized, Response):
        return normalized
    return _report_page(request, normalized)


@router.post("/projects/{name}/report")
def report(request: Request, name: str, form: dict[str, str] = Depends(csrf_form)) -> Response:
    user = signed_in(request)
    normalized = _canonical(name)
    if normalized is None:
        return _not_found(request, name[:200])
    reason = form.get("reason", "")
    bastion = bastion_of(request)
    try:
        with bastion.db.write() as session:
            reported, outcome = review.report_project(session, bastion, normalized, user.principal, reason,
                                                      context_of(request))
    except NotFound:
        return _not_found(request, normalized)
    except ServiceError as exc:
        return _report_page(request, normalized, status=exc.status, error=exc.message, reason=reason[:5000])
    review.finish(bastion, outcome)
    if reported.quarantined:
        flash = (f"Thank you: as a trusted reporter, your report quarantined {normalized} at once; "
                 "the index administrators will review it.")
    else:
        flash = f"Thank you: your report on {normalized} is queued for review by the index administrators."
    return redirect(f"/projects/{normalized}/", flash=flash)
