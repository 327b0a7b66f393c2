"""Public and project pages, and the admin pages (HTTP only: the logic is in ``bastion.packaging``
and ``bastion.accounts``).

- ``/projects/``: the project list (search by name prefix), ``/projects/NAME/``: a project's page
  with its description rendered by readme_renderer (sanitized), releases, files and people.
- ``/projects/NAME/manage`` (owners, admins): roles, the 2FA opt-in, deletion; every change needs a
  recent re-authentication. ``/projects/NAME/history``: the project's audit events.
- ``/admin/`` and ``/admin/events`` (admins): the 2FA policy, users, critical projects, the audit log.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import readme_renderer.markdown
import readme_renderer.rst
import readme_renderer.txt
from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from markupsafe import Markup
from packaging.utils import canonicalize_name
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion.accounts.models import User
from bastion.accounts.policy import default_mfa_policy, mfa_policy, set_mfa_policy
from bastion.authz import Permission, decide
from bastion.errors import NotFound, ServiceError
from bastion.events import EVENTS_PER_PAGE, Event, list_events
from bastion.packaging import service
from bastion.packaging.names import is_valid_name
from bastion.scanning.service import open_cases_count
from bastion.settings import MFA_POLICIES
from bastion.simple.serve import ByteBudgetCache
from bastion.web.account import base_url, redirect, send
from bastion.web.render import render_page
from bastion.web.session import WebUser, bastion_of, context_of, csrf_form, require_reauth, signed_in

router = APIRouter(include_in_schema=False)
log = logging.getLogger("bastion.web")

USERS_PER_PAGE = 50
MFA_POLICY_CHOICES = (
    ("off", "off: only projects whose owners opted in"),
    ("critical", "critical: also the critical (most downloaded) projects"),
    ("all-uploaders", "all-uploaders: every owner and maintainer of every project"),
    ("everyone", "everyone: every account"),
)


def _number(text: str | None, default: int | None = None) -> int | None:
    """A page number or event id from the query string (junk is ignored, not a 422), clamped to the
    id columns' range."""
    text = (text or "").strip()
    if text.isascii() and text.isdigit():
        return min(int(text[:12]), 2**31 - 1)
    return default


def _query_text(value: str, limit: int) -> str:
    """A search or filter value: no control characters (PostgreSQL text cannot hold NUL), bounded."""
    return "".join(c for c in value if c >= " " and c != "\x7f").strip()[:limit]


def _not_found(request: Request, name: str) -> Response:
    return render_page(request, "message.html", status=404, title="No such project",
                       error=f"There is no project named '{name}' on this index.",
                       link=("/projects/", "Browse or search the projects"))


def _refused(request: Request, exc: ServiceError, *, name: str = "") -> Response:
    if isinstance(exc, NotFound) and name:
        return _not_found(request, name)
    title = "Not allowed" if exc.status in (401, 403) else "Refused"
    return render_page(request, "message.html", status=exc.status if exc.status < 500 else 400, title=title,
                       error=exc.message)


def _canonical(name: str) -> str | None:
    """The normalized name, or None for a string that cannot be a project name."""
    return canonicalize_name(name) if is_valid_name(name) else None


def _project_for_page(request: Request, name: str, page: str) -> str | Response:
    """The normalized name a project page (``/projects/<name>/<page>``) is for, or the answer to
    give instead: 404 for what cannot be a project name, 301 to the normalized name."""
    normalized = _canonical(name)
    if normalized is None:
        return _not_found(request, name[:200])
    if normalized != name:
        return RedirectResponse(f"/projects/{normalized}/{page}", status_code=301)
    return normalized


# ---------------------------------------------------------------------------------------------
# Descriptions: readme_renderer output only (it is sanitized); never raw user HTML
# ---------------------------------------------------------------------------------------------

# Rendered descriptions, by digest of (content type, text), bounded by their total size: rendering
# a large reStructuredText document takes docutils a while, and a page view must not redo it.
_RENDERED = ByteBudgetCache(32 * 1024 * 1024)
_RENDERED_LOCK = threading.Lock()


def render_description(text: str | None, content_type: str | None) -> Markup | None:
    """The long description as safe HTML, as pypi.org renders it: reStructuredText (the default),
    Markdown (GFM or CommonMark) or plain text, through readme_renderer, whose output is cleaned
    of scripts, event handlers and ``javascript:`` links. What fails to render is shown as text."""
    if not text or not text.strip():
        return None
    key = hashlib.sha256(f"{content_type or ''}\n{text}".encode(errors="surrogatepass")).hexdigest()
    with _RENDERED_LOCK:
        hit = _RENDERED.get(key)
    if hit is not None:
        return hit[0]  # type: ignore[no-any-return]
    html = _render_description(text, content_type)
    with _RENDERED_LOCK:
        _RENDERED.put(key, html, len(html) + len(key))
    return html


def _render_description(text: str, content_type: str | None) -> Markup:
    mime, _, params = (content_type or "text/x-rst").partition(";")
    mime = mime.strip().lower()
    html: str | None = None
    try:
        if mime == "text/markdown":
            variant = "GFM"
            for param in params.split(";"):
                key, _, value = param.partition("=")
                if key.strip().lower() == "variant" and value.strip() in ("GFM", "CommonMark"):
                    variant = value.strip()
            html = readme_renderer.markdown.render(text, variant=variant)
        elif mime != "text/plain":
            html = readme_renderer.rst.render(text, stream=io.StringIO())  # warnings are not ours to print
        if html is None:
            html = readme_renderer.txt.render(text)
    except Exception:  # noqa: BLE001  (a renderer bug must not take the project page down)
        log.exception("description rendering failed")
        html = None
    if html is None:
        return Markup("<pre>{}</pre>").format(text)  # escaped by Markup.format
    return Markup(html)  # noqa: S704  (readme_renderer's output, sanitized by nh3)


# ---------------------------------------------------------------------------------------------
# Public pages
# ---------------------------------------------------------------------------------------------

@router.get("/projects/")
def projects_page(request: Request, q: str = "", page: str = "1") -> Response:
    q = _query_text(q, service.MAX_SEARCH_LENGTH)
    with bastion_of(request).db.read() as session:
        listing = service.list_projects(session, prefix=q, page=_number(page, 1) or 1)
    return render_page(request, "projects.html", listing=listing, q=q)


@router.get("/projects/{name}/")
def project_page(request: Request, name: str) -> Response:
    normalized = _project_for_page(request, name, "")
    if isinstance(normalized, Response):
        return normalized
    try:
        with bastion_of(request).db.read() as session:
            project = service.project_details(session, normalized)
    except NotFound:
        return _not_found(request, name)
    me = getattr(request.state, "username", None)
    is_owner = any(p.role == "owner" and p.username == me for p in project.people)
    return render_page(request, "project.html", project=project, base=base_url(request),
                       description=render_description(project.description, project.description_content_type),
                       can_manage=bool(me) and (is_owner or bool(getattr(request.state, "is_admin", False))))


# ---------------------------------------------------------------------------------------------
# Owners: roles, the 2FA opt-in, deletion, history
# ---------------------------------------------------------------------------------------------

def _management(request: Request, user: WebUser, name: str) -> service.ProjectManagement:
    with bastion_of(request).db.read() as session:
        return service.project_management(session, name, principal=user.principal)


def _manage_page(request: Request, user: WebUser, name: str, *, status: int = 200, error: str | None = None,
                 form: dict[str, str] | None = None) -> Response:
    try:
        project = _management(request, user, name)
    except ServiceError as exc:
        return _refused(request, exc, name=name)
    return render_page(request, "project_manage.html", status=status, error=error, project=project,
                       form=form or {})


@router.get("/projects/{name}/manage")
def manage_page(request: Request, name: str) -> Response:
    user = signed_in(request)
    normalized = _project_for_page(request, name, "manage")
    if isinstance(normalized, Response):
        return normalized
    return _manage_page(request, user, normalized)


@dataclass(frozen=True)
class _Done:
    flash: str
    serial: int | None
    messages: list[Any]


def _add_role(request: Request, user: WebUser, name: str, form: dict[str, str]) -> _Done:
    bastion = bastion_of(request)
    username, role = form.get("username", "").strip(), form.get("role", "")
    if not username:
        raise ServiceError("type the username of the person to give a role to")
    with bastion.db.write() as session:
        try:
            serial = service.add_role(session, name, username, role, principal=user.principal,
                                      context=context_of(request), secret=bastion.secret)
        except ServiceError as exc:
            if exc.status == 403:
                session.commit()  # the refusal's audit event stays
            raise
        messages = service.role_notifications(session, name, user.username, username, role, granted=True)
    return _Done(f"{username} is now {role} of {name}.", serial, messages)


def _remove_role(request: Request, user: WebUser, name: str, form: dict[str, str]) -> _Done:
    bastion = bastion_of(request)
    username = form.get("username", "").strip()
    with bastion.db.write() as session:
        role = service.role_of_user(session, name, username)
        serial = service.remove_role(session, name, username, principal=user.principal,
                                     context=context_of(request), secret=bastion.secret)
        messages = service.role_notifications(session, name, user.username, username, role or "",
                                              granted=False)
    return _Done(f"{username} no longer has the role {role} on {name}.", serial, messages)


def _set_mfa(request: Request, user: WebUser, name: str, form: dict[str, str]) -> _Done:
    bastion = bastion_of(request)
    required = form.get("required") == "on"
    with bastion.db.write() as session:
        blocked = service.set_project_mfa_required(session, name, required, principal=user.principal,
                                                   context=context_of(request), secret=bastion.secret)
    if not required:
        return _Done(f"{name} no longer requires 2FA of its owners and maintainers (unless the index "
                     "policy or its being critical does).", None, [])
    flash = f"{name} now requires two-factor authentication of every owner and maintainer."
    if blocked:
        flash += f" Until they enable it, these cannot act on it: {', '.join(blocked)}."
    return _Done(flash, None, [])


MANAGE_ACTIONS = {"add_role": _add_role, "remove_role": _remove_role, "set_mfa": _set_mfa}


@router.post("/projects/{name}/manage")
def manage(request: Request, name: str, form: dict[str, str] = Depends(csrf_form)) -> Response:
    user = signed_in(request)
    normalized = _canonical(name)
    if normalized is None:
        return _not_found(request, name[:200])
    try:  # who may not manage the project is told so before being asked to re-authenticate
        _management(request, user, normalized)
    except ServiceError as exc:
        return _refused(request, exc, name=normalized)
    require_reauth(request, user)
    action = MANAGE_ACTIONS.get(form.get("action", ""))
    try:
        if action is None:
            raise ServiceError("unknown action: use the buttons of this page")
        done = action(request, user, normalized, form)
    except ServiceError as exc:
        return _manage_page(request, user, normalized, status=exc.status, error=exc.message, form=form)
    if done.serial:
        bastion_of(request).notify_change(done.serial)
    send(request, done.messages)
    return redirect(f"/projects/{normalized}/manage", flash=done.flash)


@router.post("/projects/{name}/delete")
def delete_project(request: Request, name: str, form: dict[str, str] = Depends(csrf_form)) -> Response:
    user = signed_in(request)
    normalized = _canonical(name)
    if normalized is None:
        return _not_found(request, name[:200])
    try:
        project = _management(request, user, normalized)
    except ServiceError as exc:
        return _refused(request, exc, name=normalized)
    require_reauth(request, user)
    typed = form.get("confirm", "").strip()
    if typed not in (project.name, project.normalized_name):
        return _manage_page(request, user, normalized, status=400,
                            error=f"the project was not deleted: type its name, {project.name}, in the "
                                  "confirmation field to delete it")
    bastion = bastion_of(request)
    try:
        with bastion.db.write() as session:
            deletion = service.delete_project(session, bastion, normalized, principal=user.principal,
                                              context=context_of(request))
    except ServiceError as exc:
        return _manage_page(request, user, normalized, status=exc.status, error=exc.message)
    service.delete_blobs(bastion, deletion.blob_paths)  # after commit: a rollback keeps the files
    bastion.notify_change(deletion.serial)
    return redirect("/projects/", flash=f"The project {project.name} was deleted, with its "
                                        f"{len(deletion.releases)} releases and {len(deletion.filenames)} files.")


@router.get("/projects/{name}/history")
def project_history(request: Request, name: str, before: str = "") -> Response:
    user = signed_in(request)
    normalized = _project_for_page(request, name, "history")
    if isinstance(normalized, Response):
        return normalized
    try:
        with bastion_of(request).db.read() as session:
            events = service.project_history(session, normalized, principal=user.principal,
                                             before=_number(before), limit=EVENTS_PER_PAGE)
    except ServiceError as exc:
        return _refused(request, exc, name=normalized)
    older = events[-1].id if len(events) == EVENTS_PER_PAGE else None
    return render_page(request, "history.html", title=f"History of {normalized}", events=events, older=older,
                       base=f"/projects/{normalized}/history")


# ---------------------------------------------------------------------------------------------
# Admin pages. The two read queries below belong with accounts and the audit log (accounts/service.py,
# events.py); they live here until those modules grow listing functions.
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class UserRow:
    """A user, as the admin page lists them."""

    username: str
    """The user."""
    email: str
    """The account's address."""
    email_verified: bool
    """The address was confirmed."""
    is_admin: bool
    """Index admin."""
    is_active: bool
    """May sign in."""
    mfa_since: datetime | None
    """When the user first had a second factor; None: no 2FA."""
    created: datetime
    """When the account was made."""
    trusted_reporter: bool = False
    """Holds the trusted-reporter role (malware reports)."""


def _users_page(session: Session, page: int) -> tuple[list[UserRow], int, int]:
    """One page of users by name; (users, page, pages)."""
    total = session.execute(select(func.count()).select_from(User)).scalar_one()
    pages = max(1, -(-total // USERS_PER_PAGE))
    page = min(max(page, 1), pages)
    rows = session.execute(
        select(User).order_by(User.username_key).offset((page - 1) * USERS_PER_PAGE).limit(USERS_PER_PAGE)
    ).scalars()
    return [UserRow(username=u.username, email=u.email, email_verified=u.email_verified, is_admin=u.is_admin,
                    is_active=u.is_active, mfa_since=u.mfa_enabled, created=u.created,
                    trusted_reporter=u.trusted_reporter) for u in rows], page, pages


def _matching(column: Any, value: str) -> Any:
    """``value`` exactly, or as a prefix when it ends with ``*``."""
    if value.endswith("*"):
        return column.startswith(value[:-1], autoescape=True)
    return column == value


def _events_page(session: Session, *, action: str, actor: str, subject: str, before: int | None) -> list[Event]:
    where = []
    if action:
        where.append(_matching(Event.action, action))
    if actor:
        where.append(_matching(func.lower(Event.actor), actor.lower()))
    if subject:
        where.append(_matching(Event.subject, subject))
    return list_events(session, *where, before=before, limit=EVENTS_PER_PAGE)


def _admin(request: Request, permission: Permission) -> WebUser | Response:
    """The signed-in admin, or the page that refuses everyone else (403)."""
    user = signed_in(request)
    decision = decide(user.principal, permission)
    if not decision:
        return render_page(request, "message.html", status=403, title="Not allowed",
                           error=f"The admin pages are for index admins: {decision.reason}.")
    return user


def _admin_page(request: Request, *, users_page: int = 1, status: int = 200, error: str | None = None) -> Response:
    with bastion_of(request).db.read() as session:
        policy, default = mfa_policy(session), default_mfa_policy(session)
        users, page, pages = _users_page(session, users_page)
        critical = service.list_critical_projects(session)
        open_cases = open_cases_count(session)
    return render_page(request, "admin.html", status=status, error=error, policy=policy, default_policy=default,
                       choices=MFA_POLICY_CHOICES, users=users, users_page=page, users_pages=pages,
                       critical=critical, open_cases=open_cases)


@router.get("/admin/")
def admin_page(request: Request, users_page: str = "1") -> Response:
    user = _admin(request, Permission.SET_POLICY)
    if isinstance(user, Response):
        return user
    return _admin_page(request, users_page=_number(users_page, 1) or 1)


@router.post("/admin/policy")
def admin_policy(request: Request, form: dict[str, str] = Depends(csrf_form)) -> Response:
    user = _admin(request, Permission.SET_POLICY)
    if isinstance(user, Response):
        return user
    require_reauth(request, user)
    value = form.get("policy", "")
    if value != "default" and value not in MFA_POLICIES:
        return _admin_page(request, status=400, error=f"unknown 2FA policy '{value[:50]}': choose one of the list")
    bastion = bastion_of(request)
    try:
        with bastion.db.write() as session:
            now = set_mfa_policy(session, None if value == "default" else value, principal=user.principal,
                                 context=context_of(request), secret=bastion.secret)
    except ServiceError as exc:
        return _admin_page(request, status=exc.status, error=exc.message)
    return redirect("/admin/", flash=f"The 2FA policy is now '{now}'.")


@router.get("/admin/events")
def admin_events(request: Request, action: str = "", actor: str = "", subject: str = "",
                 before: str = "") -> Response:
    user = _admin(request, Permission.VIEW_ALL_EVENTS)
    if isinstance(user, Response):
        return user
    action, actor, subject = _query_text(action, 60), _query_text(actor, 100), _query_text(subject, 300)
    with bastion_of(request).db.read() as session:
        events = _events_page(session, action=action, actor=actor, subject=subject, before=_number(before))
    filters = {k: v for k, v in (("action", action), ("actor", actor), ("subject", subject)) if v}
    older = None
    if len(events) == EVENTS_PER_PAGE:
        older = "/admin/events?" + urlencode({**filters, "before": events[-1].id})
    return render_page(request, "admin_events.html", events=events, filters=filters, action=action, actor=actor,
                       subject=subject, older=older)
