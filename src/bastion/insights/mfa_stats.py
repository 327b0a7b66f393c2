"""The public 2FA dashboard's figures: who uses a second factor, now and day by day.

``compute_stats`` answers in five aggregate queries, whatever the number of users: nothing is
loaded row by row into Python. ``take_snapshot`` stores a day's figures for the chart over time.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import case, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql import Subquery

from bastion.accounts.models import User, WebAuthnCredential
from bastion.db import Database, utcnow
from bastion.insights.models import CriticalProject, MfaSnapshot
from bastion.packaging.models import Project, Role, RoleName

# The roles whose holders can publish: the ones the 2FA figures of projects are about.
PUBLISHING_ROLES = (RoleName.OWNER.value, RoleName.MAINTAINER.value)


@dataclass(frozen=True)
class MfaStats:
    """The 2FA figures of the index at one moment. Shares run from 0 to 1 (0 when there is
    nothing to divide by). Stored as JSON in daily snapshots: fields are only ever added at the end."""

    users: int
    """Every user account."""
    users_any_2fa: int
    """Users with at least one second factor (TOTP or a security key)."""
    users_any_2fa_share: float
    """``users_any_2fa`` / ``users``."""
    users_totp: int
    """Users with a TOTP authenticator app."""
    users_totp_share: float
    """``users_totp`` / ``users``."""
    users_webauthn: int
    """Users with at least one security key or passkey (WebAuthn)."""
    users_webauthn_share: float
    """``users_webauthn`` / ``users``."""
    critical_projects: int
    """Projects marked critical (top downloads; sticky)."""
    critical_maintainers: int
    """Distinct owners and maintainers of critical projects."""
    critical_maintainers_2fa: int
    """Of those, the ones with a second factor."""
    critical_maintainers_2fa_share: float
    """``critical_maintainers_2fa`` / ``critical_maintainers``."""
    projects: int
    """Every project."""
    projects_all_2fa: int
    """Projects with at least one owner or maintainer, every one of whom has a second factor."""
    projects_all_2fa_share: float
    """``projects_all_2fa`` / ``projects``."""

    def as_dict(self) -> dict[str, Any]:
        """The figures as a JSON-ready dictionary (the snapshot and API format)."""
        return asdict(self)


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _user_factors() -> Subquery:
    """One row per user: ``user_id``, and 1/0 columns ``totp``, ``webauthn`` and ``any_2fa``."""
    webauthn_users = select(WebAuthnCredential.user_id).distinct().subquery("webauthn_users")
    has_totp = User.totp_secret.is_not(None)
    has_webauthn = webauthn_users.c.user_id.is_not(None)
    return (
        select(
            User.id.label("user_id"),
            case((has_totp, 1), else_=0).label("totp"),
            case((has_webauthn, 1), else_=0).label("webauthn"),
            case((or_(has_totp, has_webauthn), 1), else_=0).label("any_2fa"),
        )
        .outerjoin(webauthn_users, webauthn_users.c.user_id == User.id)
        .subquery("user_factors")
    )


def compute_stats(session: Session) -> MfaStats:
    """The current figures, in five aggregate queries."""
    factors = _user_factors()
    users, any_2fa, totp, webauthn = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(factors.c.any_2fa), 0),
            func.coalesce(func.sum(factors.c.totp), 0),
            func.coalesce(func.sum(factors.c.webauthn), 0),
        ).select_from(factors)
    ).one()

    critical = session.execute(select(func.count()).select_from(CriticalProject)).scalar_one()

    critical_people = (
        select(Role.user_id)
        .join(CriticalProject, CriticalProject.project_id == Role.project_id)
        .where(Role.role.in_(PUBLISHING_ROLES))
        .distinct()
        .subquery("critical_people")
    )
    critical_maintainers, critical_2fa = session.execute(
        select(func.count(), func.coalesce(func.sum(factors.c.any_2fa), 0))
        .select_from(critical_people)
        .join(factors, factors.c.user_id == critical_people.c.user_id)
    ).one()

    projects = session.execute(select(func.count()).select_from(Project)).scalar_one()

    # Per project with publishing roles: how many of their holders lack a second factor.
    lacking = (
        select(Role.project_id, func.sum(1 - factors.c.any_2fa).label("without_2fa"))
        .join(factors, factors.c.user_id == Role.user_id)
        .where(Role.role.in_(PUBLISHING_ROLES))
        .group_by(Role.project_id)
        .subquery("lacking")
    )
    projects_all = session.execute(
        select(func.count()).select_from(lacking).where(lacking.c.without_2fa == 0)
    ).scalar_one()

    users, any_2fa, totp, webauthn = int(users), int(any_2fa), int(totp), int(webauthn)
    critical_maintainers, critical_2fa = int(critical_maintainers), int(critical_2fa)
    return MfaStats(
        users=users,
        users_any_2fa=any_2fa,
        users_any_2fa_share=_share(any_2fa, users),
        users_totp=totp,
        users_totp_share=_share(totp, users),
        users_webauthn=webauthn,
        users_webauthn_share=_share(webauthn, users),
        critical_projects=int(critical),
        critical_maintainers=critical_maintainers,
        critical_maintainers_2fa=critical_2fa,
        critical_maintainers_2fa_share=_share(critical_2fa, critical_maintainers),
        projects=int(projects),
        projects_all_2fa=int(projects_all),
        projects_all_2fa_share=_share(int(projects_all), int(projects)),
    )


def take_snapshot(session: Session, day: date) -> None:
    """Store the current figures as the snapshot of ``day`` (replacing one taken earlier that day)."""
    data = compute_stats(session).as_dict()
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(MfaSnapshot).values(day=day, data=data, taken=utcnow())
    session.execute(statement.on_conflict_do_update(
        index_elements=[MfaSnapshot.__table__.c["day"]],
        set_={"data": statement.excluded["data"], "taken": statement.excluded["taken"]},
    ))


def history(session: Session, days: int = 365, *, today: date | None = None) -> list[tuple[date, dict[str, Any]]]:
    """The snapshots of the last ``days`` days up to ``today`` (UTC), oldest first, as stored
    (snapshots taken before a field was added lack it)."""
    today = today or datetime.now(UTC).date()
    rows = session.execute(
        select(MfaSnapshot.day, MfaSnapshot.data)
        .where(MfaSnapshot.day > today - timedelta(days=days), MfaSnapshot.day <= today)
        .order_by(MfaSnapshot.day)
    ).all()
    return [(row.day, dict(row.data)) for row in rows]


@dataclass(frozen=True)
class Dashboard:
    """What the public 2FA dashboard shows."""

    stats: MfaStats
    """The figures when ``computed``."""
    history: list[tuple[date, dict[str, Any]]]
    """The daily snapshots of the last year, oldest first."""
    computed: datetime
    """When the figures were computed (UTC)."""


DASHBOARD_MAX_AGE = 60.0
"""Seconds a computed dashboard is reused: the page is public, and its queries scan every user."""

_dashboards: weakref.WeakKeyDictionary[Database, tuple[float, Dashboard]] = weakref.WeakKeyDictionary()
_dashboards_lock = threading.Lock()


def current_dashboard(db: Database, *, max_age: float = DASHBOARD_MAX_AGE) -> Dashboard:
    """The dashboard's figures and history, computed at most once per ``max_age`` seconds per process."""
    now = time.monotonic()
    with _dashboards_lock:
        cached = _dashboards.get(db)
    if cached is not None and now - cached[0] < max_age:
        return cached[1]
    with db.read() as session:
        dashboard = Dashboard(stats=compute_stats(session), history=history(session), computed=utcnow())
    with _dashboards_lock:
        _dashboards[db] = (now, dashboard)
    return dashboard
