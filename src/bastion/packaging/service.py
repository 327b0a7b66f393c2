"""Project logic: lookup and creation, roles, yanking, the change journal (no HTTP here)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from packaging.utils import canonicalize_name, canonicalize_version
from packaging.version import InvalidVersion, Version
from sqlalchemy import Table, bindparam, case, delete, func, insert, select
from sqlalchemy.orm import Session

from bastion.accounts import notifications
from bastion.accounts.models import User
from bastion.accounts.service import get_user
from bastion.accounts.policy import STORED_MFA_POLICY, mfa_policy, policy_in_force, project_requires_mfa
from bastion.authz import Permission, Principal, decide, role_grant_refusal
from bastion.errors import Conflict, Forbidden, NotFound, ServiceError
from bastion.events import CLI_CONTEXT, EVENTS_PER_PAGE, Event, RequestContext, list_events, record_event
from bastion.insights.models import CriticalProject, DownloadCount
from bastion.mail import Message
from bastion.packaging import names
from bastion.packaging.models import (
    DeletedFilename, File, JournalEntry, Project, ProjectStatus, Release, Role, RoleName,
)
from bastion.tuf.repository import enqueue_changed
from bastion.simple.render import (
    ProjectView,
    ReleaseView,
    delete_json_pages,
    latest_release,
    refresh_project_pages,
    render_simple_index,
    store_pages,
    version_sort_key,
)

if TYPE_CHECKING:
    from bastion.services import Bastion

log = logging.getLogger("bastion.packaging")


@dataclass(frozen=True)
class RoleView:
    """One person's role on a project."""

    username: str
    """The user."""
    role: str
    """owner or maintainer."""


def journal(session: Session, project: Project, action: str, *, version: str | None = None,
            actor_id: int | None = None, details: dict | None = None) -> int:
    """Append to the change journal; the entry's id becomes the project's and the index's serial."""
    serial = journal_entry(session, project.normalized_name, action, version=version, actor_id=actor_id,
                           details=details)
    project.last_serial = serial
    return serial


def journal_entry(session: Session, normalized_name: str, action: str, *, version: str | None = None,
                  actor_id: int | None = None, details: dict | None = None) -> int:
    """The journal row alone (one INSERT ... RETURNING): the caller sets the project's last_serial."""
    return session.execute(_NEW_JOURNAL_ENTRY, {"name": normalized_name, "version": version, "action": action,
                                                 "actor_id": actor_id, "details": details}).scalar_one()


_journal = cast(Table, JournalEntry.__table__)
_NEW_JOURNAL_ENTRY = insert(_journal).returning(_journal.c.id)


def find_project(session: Session, name: str) -> Project | None:
    return session.execute(
        select(Project).where(Project.normalized_name == canonicalize_name(name))
    ).scalar_one_or_none()


def get_project(session: Session, name: str) -> Project:
    project = find_project(session, name)
    if project is None:
        raise NotFound(f"no project named '{name}'")
    return project


@dataclass(frozen=True)
class ProjectAccess:
    """What authorization needs to know about a project and one user, and what an upload needs
    besides (the project's row, read in the same query)."""

    name: str
    """Normalized project name."""
    role: str | None
    """The user's role on it, or None."""
    mfa_required: bool
    """The 2FA mandate applies to acting on it."""
    id: int
    display_name: str
    """The name as its creator wrote it."""
    status: str
    total_size: int


_projects = cast(Table, Project.__table__)
_roles = cast(Table, Role.__table__)
_critical = cast(Table, CriticalProject.__table__)
_PROJECT_ACCESS = (
    select(_projects.c.normalized_name, _roles.c.role, _projects.c.mfa_required, _critical.c.project_id,
           _projects.c.id, _projects.c.name, _projects.c.status, _projects.c.total_size, STORED_MFA_POLICY)
    .select_from(_projects)
    .outerjoin(_roles, (_roles.c.project_id == _projects.c.id) & (_roles.c.user_id == bindparam("user_id")))
    .outerjoin(_critical, _critical.c.project_id == _projects.c.id)
    .where(_projects.c.normalized_name == bindparam("name"))
)


def project_access(session: Session, name: str, user_id: int | None) -> ProjectAccess | None:
    """The project's row, the user's role and whether 2FA is required, in one query (the policy
    row too); None when no such project. Every upload asks twice: a prepared Core statement."""
    row = session.execute(_PROJECT_ACCESS, {"name": canonicalize_name(name), "user_id": user_id}).first()
    if row is None:
        return None
    required = project_requires_mfa(policy_in_force(session, row[8]), critical=row[3] is not None,
                                    opted_in=bool(row[2]))
    return ProjectAccess(name=row[0], role=row[1], mfa_required=required, id=row[4], display_name=row[5],
                         status=row[6], total_size=row[7])


def authorize_access(principal: Principal, permission: Permission, access: ProjectAccess) -> None:
    """``authorize`` for a project read with :func:`project_access` (the upload path)."""
    decision = decide(principal, permission, project=access.name, role=access.role,
                      mfa_required=access.mfa_required)
    if not decision:
        raise Forbidden(decision.reason)


def requires_mfa(session: Session, project: Project) -> bool:
    """Whether the 2FA mandate applies to owners and maintainers acting on ``project``."""
    critical = session.execute(
        select(CriticalProject.project_id).where(CriticalProject.project_id == project.id)
    ).scalar() is not None
    return project_requires_mfa(mfa_policy(session), critical=critical, opted_in=project.mfa_required)


def role_of(session: Session, project: Project, user_id: int | None) -> str | None:
    if user_id is None:
        return None
    return session.execute(
        select(Role.role).where(Role.project_id == project.id, Role.user_id == user_id)
    ).scalar()


def authorize(session: Session, principal: Principal | None, permission: Permission, project: Project) -> None:
    role = role_of(session, project, principal.user_id if principal else None)
    decision = decide(principal, permission, project=project.normalized_name, role=role,
                      mfa_required=requires_mfa(session, project))
    if not decision:
        raise Forbidden(decision.reason, status=401 if principal is None else 403)


def refuse_while_quarantined(project: Project, principal: Principal | None) -> None:
    """A quarantined project is frozen for its owners until the review ends (PEP 792): deleting it
    would destroy the files under review and free the name, and a role change would change whom a
    remove-project decision freezes. Index admins (the reviewers) may still act."""
    if project.status == ProjectStatus.QUARANTINED and not (principal is not None and principal.is_admin):
        raise Forbidden(f"Project '{project.name}' is quarantined pending review by the index administrators: "
                        "it cannot be changed until the review ends.")


def new_project_refusal(session: Session, name: str, prohibited: frozenset[str], *,
                        stdlib: bool = True) -> str | None:
    """Why a new project may not take ``name``, or None (``stdlib``: see ``names.name_refusal``)."""
    refusal = names.name_refusal(name, prohibited, stdlib=stdlib)
    if refusal:
        return refusal
    folded = names.ultranormalize(name)
    row = session.execute(
        select(Project.name, Project.normalized_name).where(Project.ultranormalized_name == folded)
    ).first()
    if row is not None and row.normalized_name == names.normalize(name):
        # The same project, committed by a concurrent upload since this transaction looked it up
        # (PostgreSQL's READ COMMITTED): the insert's unique constraint fails and the upload
        # retries, finding the project, instead of refusing the name as "too similar" to itself.
        return None
    clash = row.name if row is not None else None
    if clash is not None:
        return (
            f"The name '{name}' is too similar to an existing project '{clash}' "
            "(names that differ only in separators, l/i/1 or o/0 are refused). Choose a different name."
        )
    return None


def create_project(session: Session, name: str, owner: User | None, *, prohibited: frozenset[str],
                   context: RequestContext, secret: bytes, stdlib: bool = True) -> Project:
    refusal = new_project_refusal(session, name, prohibited, stdlib=stdlib)
    if refusal:
        raise ServiceError(refusal)
    project = Project(name=name, normalized_name=names.normalize(name),
                      ultranormalized_name=names.ultranormalize(name))
    session.add(project)
    session.flush()
    if owner is not None:
        session.add(Role(project_id=project.id, user_id=owner.id, role=RoleName.OWNER.value))
    journal(session, project, "create", actor_id=owner.id if owner else None)
    record_event(session, "project.created", actor_id=owner.id if owner else None,
                 actor=owner.username if owner else None, subject=f"project:{project.normalized_name}",
                 context=context, secret=secret)
    return project


def _role_change_target(session: Session, project_name: str, user_name: str,
                        principal: Principal) -> tuple[Project, User, Role | None]:
    """The project (after the MANAGE_ROLES check), the user, and the user's current role row."""
    project = get_project(session, project_name)
    authorize(session, principal, Permission.MANAGE_ROLES, project)
    refuse_while_quarantined(project, principal)
    user = get_user(session, user_name)
    existing = session.execute(
        select(Role).where(Role.project_id == project.id, Role.user_id == user.id)
    ).scalar_one_or_none()
    return project, user, existing


def add_role(session: Session, project_name: str, user_name: str, role: str, *, principal: Principal,
             context: RequestContext = CLI_CONTEXT, secret: bytes = b"") -> int:
    if role not in (RoleName.OWNER.value, RoleName.MAINTAINER.value):
        raise ServiceError(f"unknown role '{role}': use owner or maintainer")
    project, user, existing = _role_change_target(session, project_name, user_name, principal)
    if existing is not None and existing.role == role:
        raise Conflict(f"user '{user.username}' is already {role} of '{project.name}'")
    refusal = role_grant_refusal(mfa_required=requires_mfa(session, project), target_has_2fa=user.mfa_enabled is not None,
                                 username=user.username, project=project.name)
    if refusal:
        record_event(session, "role.refused", actor_id=principal.user_id, actor=principal.username,
                     subject=f"project:{project.normalized_name}", context=context, secret=secret,
                     details={"user": user.username, "role": role, "reason": "2fa-required"})
        session.commit()  # the refusal's event stays though the request fails (nothing else was changed)
        raise Forbidden(refusal)
    if existing is not None:
        existing.role = role
    else:
        session.add(Role(project_id=project.id, user_id=user.id, role=role))
    serial = journal(session, project, f"add {role} {user.username}", actor_id=principal.user_id)
    record_event(session, "role.granted", actor_id=principal.user_id, actor=principal.username,
                 subject=f"project:{project.normalized_name}", context=context, secret=secret,
                 details={"user": user.username, "role": role})
    return serial


def remove_role(session: Session, project_name: str, user_name: str, *, principal: Principal,
                context: RequestContext = CLI_CONTEXT, secret: bytes = b"") -> int:
    project, user, existing = _role_change_target(session, project_name, user_name, principal)
    if existing is None:
        raise NotFound(f"user '{user.username}' has no role on '{project.name}'")
    owners = session.execute(
        select(Role.id).where(Role.project_id == project.id, Role.role == RoleName.OWNER.value)
    ).all()
    if existing.role == RoleName.OWNER.value and len(owners) == 1:
        raise Conflict(f"'{user.username}' is the last owner of '{project.name}': add another owner first")
    session.delete(existing)
    serial = journal(session, project, f"remove {existing.role} {user.username}", actor_id=principal.user_id)
    record_event(session, "role.removed", actor_id=principal.user_id, actor=principal.username,
                 subject=f"project:{project.normalized_name}", context=context, secret=secret,
                 details={"user": user.username, "role": existing.role})
    return serial


def list_roles(session: Session, project_name: str, *, principal: Principal) -> list[RoleView]:
    project = get_project(session, project_name)
    authorize(session, principal, Permission.VIEW_ROLES, project)
    rows = session.execute(
        select(User.username, Role.role).join(Role, Role.user_id == User.id)
        .where(Role.project_id == project.id).order_by(Role.role, User.username)
    ).all()
    return [RoleView(username=u, role=r) for u, r in rows]


def find_release(session: Session, project: Project, version: str) -> Release:
    try:
        canonical = canonicalize_version(Version(version))
    except (InvalidVersion, ValueError):  # ValueError: more digits than int() converts
        raise ServiceError(f"invalid version '{version}': see PEP 440") from None
    release = session.execute(
        select(Release).where(Release.project_id == project.id, Release.canonical_version == canonical)
    ).scalar_one_or_none()
    if release is None:
        raise NotFound(f"project '{project.name}' has no release {version}")
    return release


def set_yanked(session: Session, project_name: str, version: str, *, yanked: bool, reason: str | None,
               principal: Principal, context: RequestContext = CLI_CONTEXT, secret: bytes = b"") -> int:
    """PEP 592: yank (or un-yank) a release; its files stay downloadable by exact pin."""
    project = get_project(session, project_name)
    authorize(session, principal, Permission.YANK, project)
    refuse_while_quarantined(project, principal)
    release = find_release(session, project, version)
    if reason is not None and len(reason) > 1000:
        raise ServiceError("yank reason too long: use at most 1000 characters")
    if release.yanked == yanked and (not yanked or release.yanked_reason == (reason or None)):
        raise Conflict(f"{project.name} {release.version} is already {'yanked' if yanked else 'not yanked'}")
    release.yanked = yanked
    release.yanked_reason = (reason or None) if yanked else None
    serial = journal(session, project, "yank release" if yanked else "unyank release",
                     version=release.version, actor_id=principal.user_id, details={"reason": reason})
    record_event(session, "release.yanked" if yanked else "release.unyanked", actor_id=principal.user_id,
                 actor=principal.username, subject=f"project:{project.normalized_name}", context=context,
                 secret=secret, details={"version": release.version, "reason": reason})
    refresh_project_pages(session, project.id, versions=[release.version])
    return serial


# ---------------------------------------------------------------------------------------------
# Reading projects for the web pages
# ---------------------------------------------------------------------------------------------

PROJECTS_PER_PAGE = 50
MAX_SEARCH_LENGTH = 200


@dataclass(frozen=True)
class ProjectSummary:
    """One line of the project list."""

    name: str
    """Display name."""
    normalized_name: str
    """PEP 503 name (the page's address)."""
    latest_version: str | None
    """The release pip would pick by default (newest final, non-yanked); None: no release."""
    summary: str | None
    """The latest release's one-line summary."""


@dataclass(frozen=True)
class ProjectListing:
    """One page of the project list."""

    projects: list[ProjectSummary]
    """The projects of this page, by normalized name."""
    total: int
    """Projects matching the search, on every page."""
    page: int
    """This page's number, from 1."""
    pages: int
    """How many pages there are (at least 1)."""


def _latest_of(rows: Iterable[tuple[int, int, str, bool]]) -> dict[int, ReleaseView]:
    """(project id, release id, version, yanked) rows -> each project's latest release (PyPI's choice)."""
    by_project: dict[int, ProjectView] = {}
    for project_id, release_id, version, yanked in rows:
        view = by_project.setdefault(project_id, ProjectView(id=project_id, name="", normalized_name="", last_serial=0))
        view.releases.append(ReleaseView(id=release_id, version=version, yanked=yanked, yanked_reason=None,
                                         requires_python=None))
    latest = {project_id: latest_release(view) for project_id, view in by_project.items()}
    return {project_id: release for project_id, release in latest.items() if release is not None}


def _summary_of(metadata: dict | None) -> str | None:
    value = (metadata or {}).get("summary")
    if not value:
        return None
    return " ".join(str(value).split()) or None


def held_releases(session: Session, project_ids: list[int]) -> set[int]:
    """Releases whose every file is quarantined: not shown anywhere until one file is released."""
    if not project_ids:
        return set()
    return set(session.execute(
        select(File.release_id).where(File.project_id.in_(project_ids)).group_by(File.release_id)
        .having(func.sum(case((File.quarantined.is_(False), 1), else_=0)) == 0)
    ).scalars())


def list_projects(session: Session, *, prefix: str = "", page: int = 1,
                  per_page: int = PROJECTS_PER_PAGE) -> ProjectListing:
    """Projects whose normalized name starts with ``prefix`` (normalized too), by name, paginated;
    quarantined projects are not listed."""
    visible = Project.status != "quarantined"
    query = select(Project.id, Project.name, Project.normalized_name).where(visible)
    counter = select(func.count()).select_from(Project).where(visible)
    wanted = canonicalize_name(prefix.strip()[:MAX_SEARCH_LENGTH]) if prefix.strip() else ""
    if wanted:
        condition = Project.normalized_name.startswith(wanted, autoescape=True)
        query, counter = query.where(condition), counter.where(condition)
    total = session.execute(counter).scalar_one()
    pages = max(1, -(-total // per_page))
    page = min(max(page, 1), pages)
    rows = session.execute(
        query.order_by(Project.normalized_name).offset((page - 1) * per_page).limit(per_page)
    ).all()
    ids = [row.id for row in rows]
    held = held_releases(session, ids)
    latest = _latest_of(row for row in session.execute(
        select(Release.project_id, Release.id, Release.version, Release.yanked).where(Release.project_id.in_(ids))
    ).all() if row[1] not in held) if ids else {}
    metadata: dict[int, dict] = dict(session.execute(
        select(Release.id, Release.core_metadata).where(Release.id.in_([r.id for r in latest.values()]))
    ).all()) if latest else {}
    projects = [
        ProjectSummary(
            name=row.name, normalized_name=row.normalized_name,
            latest_version=latest[row.id].version if row.id in latest else None,
            summary=_summary_of(metadata.get(latest[row.id].id)) if row.id in latest else None,
        )
        for row in rows
    ]
    return ProjectListing(projects=projects, total=total, page=page, pages=pages)


@dataclass(frozen=True)
class PersonView:
    """An owner or maintainer, as project pages show them."""

    username: str
    """The user."""
    role: str
    """owner or maintainer."""
    has_2fa: bool
    """The user has a second factor enrolled."""


@dataclass(frozen=True)
class ReleaseInfo:
    """A release in the project page's list."""

    version: str
    """Normalized PEP 440 version."""
    created: datetime
    """When its first file was uploaded."""
    yanked: bool
    """PEP 592 yanked."""
    yanked_reason: str | None
    """Why, if the owner said."""


@dataclass(frozen=True)
class FileInfo:
    """A file of the latest release."""

    filename: str
    """The distribution's filename."""
    path: str
    """Blob path, served at ``/<path>``."""
    packagetype: str
    """``bdist_wheel`` or ``sdist``."""
    python_version: str
    """The wheel's Python tag, or ``source``."""
    size: int
    """Bytes."""
    sha256: str
    """Hex SHA-256 of the file."""
    upload_time: datetime
    """When it was uploaded."""
    requires_python: str | None
    """Requires-Python of the file."""
    yanked: bool
    """The file (or its release) is yanked."""


@dataclass(frozen=True)
class ProjectDetails:
    """Everything the public project page shows."""

    name: str
    """Display name."""
    normalized_name: str
    """PEP 503 name."""
    created: datetime
    """When the project was registered."""
    status: str
    """PEP 792 status (active, archived, quarantined, deprecated)."""
    latest: ReleaseInfo | None
    """The release pip would install by default; None when there is none."""
    summary: str | None
    """The latest release's summary."""
    description: str | None
    """The latest release's long description, as uploaded (render it; never trust it)."""
    description_content_type: str | None
    """Its Description-Content-Type (text/x-rst when absent)."""
    requires_python: str | None
    """The latest release's Requires-Python."""
    releases: list[ReleaseInfo]
    """Every release, newest first."""
    files: list[FileInfo]
    """The latest release's files."""
    people: list[PersonView]
    """Owners, then maintainers, by name."""
    critical: bool
    """Among the most downloaded projects (the 2FA mandate may cover it)."""
    mfa_required: bool
    """Owners and maintainers must use 2FA to act on it (opt-in, critical or policy)."""
    mfa_opted_in: bool
    """An owner opted the project in to requiring 2FA."""


def _people(session: Session, project_id: int) -> list[PersonView]:
    rows = session.execute(
        select(User.username, Role.role, User.mfa_enabled).join(Role, Role.user_id == User.id)
        .where(Role.project_id == project_id).order_by(Role.role.desc(), User.username_key)
    ).all()
    # "owner" > "maintainer": descending puts owners first.
    return [PersonView(username=u, role=r, has_2fa=m is not None) for u, r, m in rows]


def project_details(session: Session, name: str) -> ProjectDetails:
    """The public page's facts about project ``name`` (NotFound if there is none)."""
    project = get_project(session, name)
    held = held_releases(session, [project.id])
    releases = [] if project.status == "quarantined" else [r for r in session.execute(
        select(Release.id, Release.version, Release.created, Release.yanked, Release.yanked_reason)
        .where(Release.project_id == project.id)
    ).all() if r.id not in held]
    ordered = sorted(releases, key=lambda r: version_sort_key(r.version), reverse=True)
    latest_view = _latest_of((project.id, r.id, r.version, r.yanked) for r in releases).get(project.id)
    latest = next((r for r in ordered if latest_view is not None and r.id == latest_view.id), None)
    metadata: dict[str, Any] = {}
    files: list[FileInfo] = []
    requires_python = None
    if latest is not None:
        row = session.execute(
            select(Release.core_metadata, Release.requires_python).where(Release.id == latest.id)
        ).one()
        metadata, requires_python = row.core_metadata or {}, row.requires_python
        files = [
            FileInfo(filename=f.filename, path=f.path, packagetype=f.packagetype, python_version=f.python_version,
                     size=f.size, sha256=f.sha256_digest, upload_time=f.upload_time,
                     requires_python=f.requires_python, yanked=f.yanked or latest.yanked)
            for f in session.execute(
                select(File).where(File.release_id == latest.id, File.quarantined.is_(False)).order_by(File.filename)
            ).scalars()
        ]
    description = metadata.get("description")
    content_type = metadata.get("description_content_type")
    return ProjectDetails(
        name=project.name, normalized_name=project.normalized_name, created=project.created, status=project.status,
        latest=_release_info(latest) if latest is not None else None,
        summary=_summary_of(metadata), description=str(description) if description else None,
        description_content_type=str(content_type) if content_type else None, requires_python=requires_python,
        releases=[_release_info(r) for r in ordered], files=files, people=_people(session, project.id),
        critical=session.get(CriticalProject, project.id) is not None,
        mfa_required=requires_mfa(session, project), mfa_opted_in=project.mfa_required,
    )


def _release_info(row: Any) -> ReleaseInfo:
    return ReleaseInfo(version=row.version, created=row.created, yanked=row.yanked, yanked_reason=row.yanked_reason)


# ---------------------------------------------------------------------------------------------
# Managing a project (owners and admins)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProjectManagement:
    """What the owners' page shows."""

    name: str
    """Display name."""
    normalized_name: str
    """PEP 503 name."""
    people: list[PersonView]
    """Owners, then maintainers."""
    mfa_opted_in: bool
    """The owners' opt-in: every owner and maintainer must use 2FA."""
    mfa_required: bool
    """2FA is required now, by the opt-in, the project being critical or the index policy."""
    critical: bool
    """The project is critical."""
    policy: str
    """The index's 2FA policy in force."""

    @property
    def without_2fa(self) -> list[str]:
        """Owners and maintainers who have no second factor: refused when 2FA is required."""
        return [person.username for person in self.people if not person.has_2fa]


def project_management(session: Session, name: str, *, principal: Principal | None) -> ProjectManagement:
    """The owners' view of a project (MANAGE_PROJECT: owners and admins)."""
    project = get_project(session, name)
    authorize(session, principal, Permission.MANAGE_PROJECT, project)
    return ProjectManagement(
        name=project.name, normalized_name=project.normalized_name, people=_people(session, project.id),
        mfa_opted_in=project.mfa_required, mfa_required=requires_mfa(session, project),
        critical=session.get(CriticalProject, project.id) is not None, policy=mfa_policy(session),
    )


def set_project_mfa_required(session: Session, name: str, required: bool, *, principal: Principal,
                             context: RequestContext = CLI_CONTEXT, secret: bytes = b"") -> list[str]:
    """Opt the project in to (or out of) requiring 2FA of every owner and maintainer.

    Turning it on is allowed while some of them have no 2FA: they are then refused every project
    action until they enable it. Returns their usernames (empty when turning it off). An owner
    without 2FA cannot turn it off once it applies (the mandate covers MANAGE_PROJECT)."""
    project = get_project(session, name)
    authorize(session, principal, Permission.MANAGE_PROJECT, project)
    refuse_while_quarantined(project, principal)
    if project.mfa_required == required:
        state = "already requires" if required else "does not require"
        raise Conflict(f"'{project.name}' {state} two-factor authentication of its owners and maintainers")
    project.mfa_required = required
    blocked = [p.username for p in _people(session, project.id) if not p.has_2fa] if required else []
    record_event(session, "project.mfa_required_set", actor_id=principal.user_id, actor=principal.username,
                 subject=f"project:{project.normalized_name}", context=context, secret=secret,
                 details={"required": required, "without_2fa": blocked})
    session.flush()
    return blocked


def project_history(session: Session, name: str, *, principal: Principal | None, before: int | None = None,
                    limit: int = EVENTS_PER_PAGE) -> list[Event]:
    """The project's audit events, newest first (VIEW_PROJECT_HISTORY: owners and admins); pass the
    last id seen as ``before`` for the next page."""
    project = get_project(session, name)
    authorize(session, principal, Permission.VIEW_PROJECT_HISTORY, project)
    return list_events(session, Event.subject == f"project:{project.normalized_name}", before=before, limit=limit)


@dataclass(frozen=True)
class CriticalProjectView:
    """A critical project, for the admin page."""

    name: str
    """Display name."""
    normalized_name: str
    """PEP 503 name."""
    since: datetime
    """When it became critical."""
    downloads: int
    """Its downloads in the window when it became critical."""


def list_critical_projects(session: Session) -> list[CriticalProjectView]:
    """Every critical project, most recently marked first."""
    rows = session.execute(
        select(Project.name, Project.normalized_name, CriticalProject.since, CriticalProject.downloads)
        .join(CriticalProject, CriticalProject.project_id == Project.id)
        .order_by(CriticalProject.since.desc(), Project.normalized_name)
    ).all()
    return [CriticalProjectView(name=r[0], normalized_name=r[1], since=r[2], downloads=r[3]) for r in rows]


# ---------------------------------------------------------------------------------------------
# Deleting a project
# ---------------------------------------------------------------------------------------------

MAX_FILENAMES_IN_EVENT = 1000


@dataclass(frozen=True)
class ProjectDeletion:
    """What ``delete_project`` removed; the caller deletes ``blob_paths`` after commit."""

    name: str
    """The deleted project's normalized name."""
    serial: int
    """The journal serial of the deletion (for ``Bastion.notify_change``)."""
    releases: list[str]
    """Versions removed."""
    filenames: list[str]
    """Files removed (their names stay in the filename registry: never reusable)."""
    blob_paths: list[str]
    """Blobs to delete once the transaction committed (files and wheel metadata files)."""


def delete_project(session: Session, bastion: Bastion, name: str, *, principal: Principal | None,
                   context: RequestContext = CLI_CONTEXT) -> ProjectDeletion:
    """Delete a project (MANAGE_PROJECT: owners and admins): its releases, files, roles, download
    counts, critical mark and rendered pages; the simple index drops it. Filenames stay registered,
    the journal and the audit log record it. Blobs are not touched here: delete ``blob_paths``
    after commit (``delete_blobs``), then call ``bastion.notify_change(serial)``.

    The name itself becomes free again, as on PyPI: anyone may register it anew, but none of the
    deleted filenames can be uploaded again."""
    project = get_project(session, name)
    authorize(session, principal, Permission.MANAGE_PROJECT, project)
    refuse_while_quarantined(project, principal)
    normalized = project.normalized_name
    files = session.execute(
        select(File.filename, File.path, File.metadata_sha256).where(File.project_id == project.id)
        .order_by(File.filename)
    ).all()
    versions = sorted(
        session.execute(select(Release.version).where(Release.project_id == project.id)).scalars(),
        key=version_sort_key,
    )
    filenames = [f.filename for f in files]
    blob_paths = [f.path for f in files] + [f"{f.path}.metadata" for f in files if f.metadata_sha256]
    # Every stored filename is registered at upload; make sure of it before the rows go.
    registered = set(session.execute(
        select(DeletedFilename.filename).where(DeletedFilename.filename.in_(filenames))
    ).scalars()) if filenames else set()
    missing = [{"filename": f} for f in filenames if f not in registered]
    if missing:
        session.execute(insert(DeletedFilename), missing)
    session.execute(delete(DownloadCount).where(DownloadCount.project_id == project.id))
    session.execute(delete(File).where(File.project_id == project.id))
    session.execute(delete(Release).where(Release.project_id == project.id))
    session.execute(delete(Role).where(Role.project_id == project.id))
    session.execute(delete(CriticalProject).where(CriticalProject.project_id == project.id))
    delete_json_pages(session, normalized, simple=True)
    enqueue_changed(session, [normalized])  # the next TUF snapshot drops its pages and files
    session.expunge(project)
    session.execute(delete(Project).where(Project.id == project.id))
    entry = JournalEntry(name=normalized, action="remove project", actor_id=principal.user_id if principal else None,
                         details={"releases": len(versions), "files": len(filenames)})
    session.add(entry)
    session.flush()
    record_event(session, "project.deleted", actor_id=principal.user_id if principal else None,
                 actor=principal.username if principal else None, subject=f"project:{normalized}",
                 context=context, secret=bastion.secret,
                 details={"name": project.name, "releases": versions, "files": len(filenames),
                          "filenames": filenames[:MAX_FILENAMES_IN_EVENT]})
    store_pages(session, render_simple_index(session, entry.id), entry.id)
    return ProjectDeletion(name=normalized, serial=entry.id, releases=versions, filenames=filenames,
                           blob_paths=blob_paths)


def delete_file(session: Session, file_id: int, *, actor_id: int | None, reason: str) -> tuple[int, list[str]]:
    """Delete one file (its release too, when it was the last file); the filename stays registered.
    Returns (journal serial, blob paths to delete after commit). Authorization is the caller's."""
    file = session.get(File, file_id)
    if file is None:
        raise NotFound(f"no file #{file_id}: it was deleted already")
    project = session.get(Project, file.project_id)
    release = session.get(Release, file.release_id)
    assert project is not None and release is not None
    blob_paths = [file.path] + ([f"{file.path}.metadata"] if file.metadata_sha256 else [])
    if session.get(DeletedFilename, file.filename) is None:
        session.add(DeletedFilename(filename=file.filename))
    project.total_size = max(0, project.total_size - file.size)
    version, filename = release.version, file.filename
    session.delete(file)
    session.flush()
    last = session.execute(select(File.id).where(File.release_id == release.id).limit(1)).first() is None
    if last:
        session.delete(release)
    serial = journal(session, project, f"remove file {filename} ({reason})", version=version, actor_id=actor_id)
    refresh_project_pages(session, project.id, versions=[version], index=False)
    return serial, blob_paths


def delete_blobs(bastion: Bastion, paths: Iterable[str]) -> list[str]:
    """Delete the blobs of a committed deletion; the paths that could not be deleted (logged)."""
    failed = []
    for path in paths:
        try:
            bastion.blobs.delete(path)
        except OSError:
            log.exception("could not delete blob %s of a deleted project", path)
            failed.append(path)
    return failed


# ---------------------------------------------------------------------------------------------
# Notifications (built here, sent by the caller after commit)
# ---------------------------------------------------------------------------------------------

def project_ids(session: Session, project_names: Iterable[str]) -> list[int]:
    """The ids of the projects named (any spelling); unknown names are left out."""
    wanted = sorted({canonicalize_name(n) for n in project_names})
    if not wanted:
        return []
    return list(session.execute(select(Project.id).where(Project.normalized_name.in_(wanted))).scalars())


def upload_notifications(session: Session, project_id: int, project_name: str,
                         files: Sequence[tuple[str, str, datetime]], actor: str) -> list[Message]:
    """The messages telling the project's owners and maintainers that ``actor`` uploaded ``files``
    ((filename, version, when) each), one message per person; none when the project
    ``project_name`` no longer has the id ``project_id`` (deleted since the upload: SQLite gives
    the newest deleted row's id to the next project, whose people must not hear of these files)."""
    current = session.execute(select(Project.normalized_name).where(Project.id == project_id)).scalar()
    if current != canonicalize_name(project_name):
        return []
    return notifications.release_files_uploaded(session, project_id, files, actor)


def role_of_user(session: Session, project_name: str, user_name: str) -> str | None:
    """The role ``user_name`` has on ``project_name``, or None (no authorization: for notices)."""
    return session.execute(
        select(Role.role).join(Project, Project.id == Role.project_id).join(User, User.id == Role.user_id)
        .where(Project.normalized_name == canonicalize_name(project_name), User.username_key == user_name.lower())
    ).scalar()


def role_notifications(session: Session, project_name: str, actor: str, user_name: str, role: str, *,
                       granted: bool) -> list[Message]:
    """The messages about a role change (to the owners and maintainers, and the user concerned);
    build them after the change, in its transaction or a later one, and send them after commit."""
    project = find_project(session, project_name)
    if project is None:
        return []
    session.flush()
    user = session.execute(select(User.username).where(User.username_key == user_name.lower())).scalar()
    return notifications.role_changed(session, project.id, actor, user or user_name, role, granted)
