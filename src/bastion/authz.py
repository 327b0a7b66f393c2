"""Authorization: the one place that decides allow or deny.

Every route and CLI command asks ``decide``; nothing else compares roles. Deny unless a rule below
allows. A token limited to some projects can act only on those projects and never on accounts.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Permission(enum.StrEnum):
    READ = "read"
    """Read public pages and files."""
    CREATE_PROJECT = "create_project"
    """Upload the first file of a name nobody has registered."""
    UPLOAD = "upload"
    """Upload a file to an existing project."""
    YANK = "yank"
    """Yank or un-yank a release."""
    MANAGE_ROLES = "manage_roles"
    """Grant or remove owner and maintainer roles on a project."""
    VIEW_ROLES = "view_roles"
    """List a project's roles."""
    MANAGE_TOKENS = "manage_tokens"
    """Create, list and revoke API tokens of a user."""
    CREATE_USER = "create_user"
    """Create accounts."""
    SET_ADMIN = "set_admin"
    """Make a user an index admin."""
    SET_POLICY = "set_policy"
    """Change index-wide policy (the 2FA mandate)."""
    MANAGE_PROJECT = "manage_project"
    """Change a project's settings (require 2FA of its maintainers)."""
    VIEW_PROJECT_HISTORY = "view_project_history"
    """Read a project's audit events."""
    VIEW_ALL_EVENTS = "view_all_events"
    """Read the whole audit log."""
    REVIEW_MALWARE = "review_malware"
    """Work the review queue: release, remove or remove the project of held uploads; keep the name
    ban list; grant the trusted-reporter role; rescan."""
    REPORT_MALWARE = "report_malware"
    """Report a project as malicious (anyone signed in)."""
    MANAGE_APPLICATION = "manage_application"
    """Register an application's dependency list, read, change or remove it (its owner, or an
    admin); ``target_user_id`` is the application's owner, None for a new application."""
    IMPORT_ADVISORIES = "import_advisories"
    """Import vulnerability advisories (admins)."""


PROJECT_PERMISSIONS = frozenset(
    {Permission.CREATE_PROJECT, Permission.UPLOAD, Permission.YANK, Permission.MANAGE_ROLES, Permission.VIEW_ROLES,
     Permission.MANAGE_PROJECT, Permission.VIEW_PROJECT_HISTORY}
)
OWNER_ONLY = frozenset({Permission.YANK, Permission.MANAGE_ROLES, Permission.MANAGE_PROJECT,
                        Permission.VIEW_PROJECT_HISTORY})
# Reading is never held back by the 2FA mandate: only acting is.
MFA_EXEMPT = frozenset({Permission.READ, Permission.VIEW_ROLES, Permission.VIEW_PROJECT_HISTORY,
                        Permission.REPORT_MALWARE})

HOW_TO_ENABLE_2FA = (
    "enable two-factor authentication (an authenticator app or a security key) on your account "
    "page, /account/2fa, then retry"
)
UPLOADER_ROLES = frozenset({"owner", "maintainer"})


@dataclass(frozen=True)
class Principal:
    """Who is acting."""

    user_id: int | None
    """The acting user; None for the local operator (CLI with access to the data dir)."""
    username: str
    """For messages and the audit log."""
    is_admin: bool
    """Index admin (or the local operator)."""
    token_projects: frozenset[str] | None = None
    """Projects an API token is limited to; None: not limited."""
    token_id: str | None = None
    """The API token used, if any."""
    has_2fa: bool = False
    """The user has a second factor (TOTP or a security key) enrolled."""


# Whoever runs the CLI can read the data dir and the server secret: they are the operator.
OPERATOR = Principal(user_id=None, username="operator (cli)", is_admin=True, has_2fa=True)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    """Why not, said so that the user knows what to do; empty when allowed."""

    def __bool__(self) -> bool:
        return self.allowed


ALLOW = Decision(True, "")


def decide(
    principal: Principal | None,
    permission: Permission,
    *,
    project: str | None = None,
    role: str | None = None,
    target_user_id: int | None = None,
    mfa_required: bool = False,
) -> Decision:
    """Allow or deny ``permission``.

    ``project`` is the normalized project name for project permissions, ``role`` the principal's
    role on it (None when it has none), ``target_user_id`` the account acted on for account
    permissions. ``mfa_required``: the 2FA mandate applies to this action (see
    ``bastion.accounts.policy``); a principal without 2FA is then refused, admins included (the
    local operator, who holds the data dir, is not a person with an account).
    """
    if permission is Permission.READ:
        return ALLOW
    if principal is None:
        return Decision(False, "authentication required: supply an API token (username __token__)")
    decision = _decide_by_role(principal, permission, project=project, role=role, target_user_id=target_user_id)
    # The mandate is judged last: someone refused anyway is told the real reason, not to enable 2FA.
    if decision and mfa_required and permission not in MFA_EXEMPT and not principal.has_2fa \
            and principal.user_id is not None:
        where = f"project '{project}'" if project else "this index"
        return Decision(
            False,
            f"two-factor authentication is required: {where} requires 2FA of user '{principal.username}'; "
            + HOW_TO_ENABLE_2FA,
        )
    return decision


def _decide_by_role(principal: Principal, permission: Permission, *, project: str | None, role: str | None,
                    target_user_id: int | None) -> Decision:
    if permission in PROJECT_PERMISSIONS:
        if project is None:
            return Decision(False, "no project named")
        if principal.token_projects is not None and project not in principal.token_projects:
            allowed = ", ".join(sorted(principal.token_projects)) or "no project"
            return Decision(
                False,
                f"this API token is limited to {allowed} and cannot act on '{project}': "
                f"create a token for '{project}' (bastion token create --project {project})",
            )
        if principal.is_admin:
            return ALLOW
        if permission is Permission.CREATE_PROJECT:
            return ALLOW
        if permission is Permission.VIEW_ROLES and role is not None:
            return ALLOW
        if permission in OWNER_ONLY:
            if role == "owner":
                return ALLOW
            return Decision(False, f"only an owner of '{project}' may do this; ask an owner")
        if permission is Permission.UPLOAD and role in UPLOADER_ROLES:
            return ALLOW
        if permission is Permission.VIEW_ROLES:
            return Decision(False, f"only owners and maintainers of '{project}' may list its roles")
        return Decision(
            False,
            f"user '{principal.username}' is not allowed to upload to project '{project}': "
            "ask an owner to add you as a maintainer",
        )
    if principal.token_projects is not None:
        return Decision(
            False, "a project-scoped API token cannot manage accounts; use a token without --project"
        )
    if permission is Permission.REPORT_MALWARE:
        return ALLOW  # anyone signed in; the principal is known (not None) here
    if permission is Permission.MANAGE_APPLICATION:
        if principal.is_admin or target_user_id is None or target_user_id == principal.user_id:
            return ALLOW
        return Decision(False, "only the application's owner or an index admin may do this")
    if permission is Permission.MANAGE_TOKENS:
        if principal.is_admin or (target_user_id is not None and target_user_id == principal.user_id):
            return ALLOW
        return Decision(False, "you can manage only your own API tokens")
    if permission in (Permission.CREATE_USER, Permission.SET_ADMIN, Permission.SET_POLICY, Permission.VIEW_ALL_EVENTS,
                      Permission.REVIEW_MALWARE, Permission.IMPORT_ADVISORIES):
        if principal.is_admin:
            return ALLOW
        return Decision(False, "only an index admin may do this")
    return Decision(False, f"permission {permission} is not granted to anyone")


def role_grant_refusal(*, mfa_required: bool, target_has_2fa: bool, username: str, project: str) -> str | None:
    """Why ``username`` may not be given a role on ``project`` (the 2FA mandate), or None."""
    if mfa_required and not target_has_2fa:
        return (
            f"user '{username}' cannot be given a role on '{project}': the project requires two-factor "
            f"authentication and '{username}' has not enabled it; ask them to enable 2FA at /account/2fa first"
        )
    return None
