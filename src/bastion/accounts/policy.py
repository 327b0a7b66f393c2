"""The index's 2FA policy: the default comes from settings, an admin can change it at run time.

Policies: ``off`` (only projects whose owners opted in require 2FA), ``critical`` (also critical
projects, the top downloads percentile), ``all-uploaders`` (every project permission: upload,
yank, roles, project creation) and ``everyone`` (every action beyond reading and enrolling 2FA).
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from bastion.accounts.models import IndexPolicy
from bastion.authz import Permission, Principal, decide
from bastion.db import utcnow
from bastion.errors import Forbidden, ServiceError
from bastion.events import CLI_CONTEXT, RequestContext, record_event
from bastion.settings import MFA_POLICIES

MFA_POLICY_KEY = "mfa_policy"


def default_mfa_policy(session: Session) -> str:
    """The configured default (``BASTION_MFA_POLICY``), carried by every session of the index."""
    settings = session.info.get("settings")
    return settings.mfa_policy if settings is not None else "critical"


_policies = cast(Table, IndexPolicy.__table__)
STORED_MFA_POLICY = select(_policies.c.value).where(_policies.c.key == MFA_POLICY_KEY).scalar_subquery()
"""The admin's choice, for a query that reads it with other columns (:func:`policy_in_force`)."""


def mfa_policy(session: Session) -> str:
    """The policy in force: an admin's choice if one was made, else the configured default."""
    return policy_in_force(session, session.execute(select(STORED_MFA_POLICY)).scalar())


def policy_in_force(session: Session, stored: str | None) -> str:
    """The policy in force given the stored choice (``STORED_MFA_POLICY``'s value)."""
    return stored if stored in MFA_POLICIES else default_mfa_policy(session)


def set_mfa_policy(session: Session, value: str | None, *, principal: Principal,
                   context: RequestContext = CLI_CONTEXT, secret: bytes = b"") -> str:
    """Set the policy (None: back to the configured default); the policy now in force."""
    before = mfa_policy(session)
    # Loosening the mandate must not be the way around it: an admin without 2FA may change the
    # policy only while it is off (the local operator, who holds the data dir, always may).
    decision = decide(principal, Permission.SET_POLICY, mfa_required=before != "off")
    if not decision:
        raise Forbidden(decision.reason)
    if value is not None and value not in MFA_POLICIES:
        raise ServiceError(f"unknown 2FA policy '{value}': use one of {', '.join(MFA_POLICIES)}")
    row = session.get(IndexPolicy, MFA_POLICY_KEY)
    if value is None:
        if row is not None:
            session.delete(row)
    elif row is None:
        session.add(IndexPolicy(key=MFA_POLICY_KEY, value=value, changed_by=principal.username))
    else:
        row.value, row.changed, row.changed_by = value, utcnow(), principal.username
    session.flush()
    after = mfa_policy(session)
    record_event(session, "policy.changed", actor_id=principal.user_id, actor=principal.username,
                 subject="policy:mfa", context=context, secret=secret,
                 details={"from": before, "to": after, "explicit": value is not None})
    return after


def project_requires_mfa(policy: str, *, critical: bool, opted_in: bool) -> bool:
    """Whether owners and maintainers of a project must use 2FA to act on it."""
    if policy in ("all-uploaders", "everyone"):
        return True
    if policy == "critical":
        return critical or opted_in
    return opted_in


def account_requires_mfa(policy: str) -> bool:
    """Whether account actions (tokens, settings) need 2FA for everyone."""
    return policy == "everyone"


def new_project_requires_mfa(policy: str) -> bool:
    return policy in ("all-uploaders", "everyone")
