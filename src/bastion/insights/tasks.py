"""Periodic insight tasks (plain functions; the task runner calls them).

- ``flush_downloads`` every ``download_flush_interval``, in every server process (each buffers
  its own downloads).
- ``daily_insights`` at least daily. It is idempotent, so running it more often (hourly, say: a
  restart resets the runner's clock) or in several workers at once only redoes the same work.
"""

from __future__ import annotations

from datetime import UTC, datetime

from bastion.db import utcnow
from bastion.insights.critical import recompute_critical
from bastion.insights.mfa_stats import take_snapshot
from bastion.services import Bastion


def flush_downloads(bastion: Bastion) -> int:
    """Write this process's buffered download counts; the number of downloads written."""
    return bastion.downloads.flush(bastion.db)


def daily_insights(bastion: Bastion, *, now: datetime | None = None) -> list[str]:
    """Mark newly critical projects (``critical_percent`` over ``critical_window``), then store
    today's 2FA snapshot (replacing an earlier one of the same UTC day); the names newly marked."""
    now = now or utcnow()
    flush_downloads(bastion)  # rank on every download this process has seen
    with bastion.db.write() as session:
        marked = recompute_critical(
            session,
            percent=bastion.settings.critical_percent,
            window=bastion.settings.duration("critical_window"),
            now=now,
            secret=bastion.secret,
        )
    with bastion.db.write() as session:
        take_snapshot(session, now.astimezone(UTC).date())
    return marked
