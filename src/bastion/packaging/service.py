"""Project logic: lookup and creation, roles, yanking, the change journal (no HTTP here)."""

from __future__ import annotations

from dataclasses import dataclass

from packaging.utils import canonicalize_name, canonicalize_version
from packaging.version import InvalidVersion, Version
from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.accounts.models import User
from bastion.accounts.service import get_user
from bastion.accounts.policy import mfa_policy, project_requires_mfa
from bastion.authz import Permission, Principal, decide, role_grant_refusal
from bastion.errors import Conflict, Forbidden, NotFound, ServiceError
from bastion.events import CLI_CONTEXT, RequestContext, record_event
from bastion.insights.models import CriticalProject
from bastion.packaging import names
from bastion.packaging.models import JournalEntry, Project, Release, Role, RoleName
from bastion.simple.render import refresh_project_pages


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
    entry = JournalEntry(name=project.normalized_name, version=version, action=action,
                         actor_id=actor_id, details=details)
    session.add(entry)
    session.flush()
    project.last_serial = entry.id
    return entry.id


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
    """What authorization needs to know about a project and one user."""

    name: str
    """Normalized project name."""
    role: str | None
    """The user's role on it, or None."""
    mfa_required: bool
    """The 2FA mandate applies to acting on it."""


def project_access(session: Session, name: str, user_id: int | None) -> ProjectAccess | None:
    """The project's name, the user's role and whether 2FA is required, in one query (plus the
    policy row); None when no such project."""
    row = session.execute(
        select(Project.normalized_name, Role.role, Project.mfa_required, CriticalProject.project_id)
        .outerjoin(Role, (Role.project_id == Project.id) & (Role.user_id == user_id))
        .outerjoin(CriticalProject, CriticalProject.project_id == Project.id)
        .where(Project.normalized_name == canonicalize_name(name))
    ).first()
    if row is None:
        return None
    required = project_requires_mfa(mfa_policy(session), critical=row[3] is not None, opted_in=bool(row[2]))
    return ProjectAccess(name=row[0], role=row[1], mfa_required=required)


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


def new_project_refusal(session: Session, name: str, prohibited: frozenset[str]) -> str | None:
    """Why a new project may not take ``name``, or None."""
    refusal = names.name_refusal(name, prohibited)
    if refusal:
        return refusal
    folded = names.ultranormalize(name)
    clash = session.execute(
        select(Project.name).where(Project.ultranormalized_name == folded)
    ).scalar()
    if clash is not None:
        return (
            f"The name '{name}' is too similar to an existing project '{clash}' "
            "(names that differ only in separators, l/i/1 or o/0 are refused). Choose a different name."
        )
    return None


def create_project(session: Session, name: str, owner: User | None, *, prohibited: frozenset[str],
                   context: RequestContext, secret: bytes) -> Project:
    refusal = new_project_refusal(session, name, prohibited)
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
