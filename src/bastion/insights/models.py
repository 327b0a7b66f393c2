"""Insight tables: daily download counts, critical projects, daily 2FA snapshots."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import JSON, BigInteger, Date, ForeignKey
from sqlalchemy.orm import Mapped, mapped_column

from bastion.db import Base, UTCDateTime, utcnow


class DownloadCount(Base):
    """Downloads of one file on one UTC day (added to by the buffered flush, never per request)."""

    __tablename__ = "download_counts"

    file_id: Mapped[int] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True, index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)


class CriticalProject(Base):
    """A project that reached the top downloads percentile; sticky (never removed by the task)."""

    __tablename__ = "critical_projects"

    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    since: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    downloads: Mapped[int] = mapped_column(BigInteger, default=0)
    """Downloads in the window when it became critical."""


class MfaSnapshot(Base):
    """The 2FA dashboard's numbers of one day, for the chart over time."""

    __tablename__ = "mfa_snapshots"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    data: Mapped[dict] = mapped_column(JSON)
    taken: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
