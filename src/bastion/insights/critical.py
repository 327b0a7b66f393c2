"""Critical projects: the most downloaded ones, which the 2FA mandate covers.

A project becomes critical when it ranks in the top ``percent`` of all projects by downloads
over a trailing window. The mark is sticky: a project that stops being downloaded stays critical
(its maintainers keep 2FA), as on PyPI; only deleting the project removes the row.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion.db import advisory_lock, utcnow
from bastion.events import RequestContext, record_event
from bastion.insights.models import CriticalProject, DownloadCount
from bastion.packaging.models import Project

# Who the audit log names for marks made by the daily task (no person, no client address).
TASK_CONTEXT = RequestContext(ip=None, user_agent="bastion-task")


def critical_slots(projects: int, percent: float) -> int:
    """How many projects the top ``percent`` of ``projects`` holds: rounded up, so that any
    index with a downloaded project has at least one critical project."""
    # round() first: 200 * 1.1 / 100 is 2.2000000000000006 in floats, which must not become 3.
    return math.ceil(round(projects * percent / 100, 9))


def recompute_critical(session: Session, *, percent: float, window: timedelta, now: datetime | None = None,
                       secret: bytes = b"") -> list[str]:
    """Mark the top ``percent`` of projects by downloads over the ``window`` before ``now`` as
    critical; the normalized names of the projects newly marked, best ranked first.

    Of the N projects that exist, the ceil(N * percent / 100) most downloaded become critical;
    only projects downloaded at least once in the window qualify (ties: the older project first).
    The window covers every UTC day it touches. Each new mark appends a ``project.critical``
    event. Safe to run concurrently and repeatedly: writers are serialized and marks only added.
    """
    now = now or utcnow()
    advisory_lock(session, "bastion:critical-projects")
    total_projects = session.execute(select(func.count()).select_from(Project)).scalar_one()
    slots = critical_slots(total_projects, percent)
    if slots == 0:
        return []
    first_day = (now - window).astimezone(UTC).date()
    downloads = func.sum(DownloadCount.count).label("downloads")
    ranked = session.execute(
        select(Project.id, Project.normalized_name, downloads)
        .join(DownloadCount, DownloadCount.project_id == Project.id)
        .where(DownloadCount.day >= first_day)
        .group_by(Project.id, Project.normalized_name)
        .having(func.sum(DownloadCount.count) > 0)
        .order_by(downloads.desc(), Project.id)
        .limit(slots)
    ).all()
    if not ranked:
        return []
    already = critical_project_ids(session)
    marked: list[str] = []
    for rank, row in enumerate(ranked, start=1):
        if row.id in already:
            continue
        session.add(CriticalProject(project_id=row.id, since=now, downloads=int(row.downloads)))
        record_event(
            session, "project.critical", actor="bastion", subject=f"project:{row.normalized_name}",
            context=TASK_CONTEXT, secret=secret,
            details={
                "downloads": int(row.downloads), "rank": rank, "projects": total_projects,
                "percent": percent, "window_days": round(window.total_seconds() / 86400, 3),
                "since_day": first_day.isoformat(),
            },
        )
        marked.append(row.normalized_name)
    session.flush()
    return marked


def is_critical(session: Session, project_id: int) -> bool:
    """Whether the project was ever marked critical."""
    found = session.execute(
        select(CriticalProject.project_id).where(CriticalProject.project_id == project_id)
    ).first()
    return found is not None


def critical_project_ids(session: Session) -> set[int]:
    """The ids of every critical project."""
    return set(session.execute(select(CriticalProject.project_id)).scalars())
