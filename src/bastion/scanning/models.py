"""Tables of the scanning subsystem: scan results, review cases, malware reports, name rules (ban list and exceptions)."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from bastion.db import Base, UTCDateTime, utcnow


class ScanRecord(Base):
    """One scan of one file: kept for the file's lifetime and after (the record of a decision)."""

    __tablename__ = "scan_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    file_id: Mapped[int | None] = mapped_column(ForeignKey("files.id", ondelete="SET NULL"), nullable=True, index=True)
    project_name: Mapped[str] = mapped_column(String(200), index=True)
    filename: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    verdict: Mapped[str] = mapped_column(String(20))
    score: Mapped[float] = mapped_column(Float)
    findings: Mapped[list] = mapped_column(JSON)
    rules_version: Mapped[str] = mapped_column(String(64))
    trigger: Mapped[str] = mapped_column(String(20))
    """upload, rescan or manual."""
    scanned: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CaseState(enum.StrEnum):
    OPEN = "open"
    RELEASED = "released"
    """An admin found it safe: published as if just uploaded."""
    REMOVED = "removed"
    """The file (or files) were deleted."""
    PROJECT_REMOVED = "project-removed"
    """The whole project was deleted and its users frozen."""
    DISMISSED = "dismissed"
    """Nothing to do (a rescan hit or a report that did not hold up); nothing was hidden."""


class ReviewCase(Base):
    """An item in the admin review queue: a quarantined file, a quarantined or flagged project,
    a rescan hit or malware reports. Rows are never deleted: decisions stay on record."""

    __tablename__ = "review_cases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    """file or project."""
    source: Mapped[str] = mapped_column(String(20))
    """scan, rescan, report or name."""
    state: Mapped[str] = mapped_column(String(20), default=CaseState.OPEN.value, index=True)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="SET NULL"), nullable=True, index=True)
    project_name: Mapped[str] = mapped_column(String(200), index=True)
    file_id: Mapped[int | None] = mapped_column(ForeignKey("files.id", ondelete="SET NULL"), nullable=True, index=True)
    filename: Mapped[str | None] = mapped_column(String(500), nullable=True)
    scan_id: Mapped[int | None] = mapped_column(ForeignKey("scan_records.id", ondelete="SET NULL"), nullable=True)
    summary: Mapped[str] = mapped_column(Text)
    """Why the case was opened, in one line."""
    hidden: Mapped[bool] = mapped_column(default=False)
    """The case hid something (a quarantine); False for flag-only cases."""
    opened: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    decision_note: Mapped[str | None] = mapped_column(Text, nullable=True)


class MalwareReport(Base):
    """A signed-in user's report that a project is malicious."""

    __tablename__ = "malware_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="SET NULL"), nullable=True, index=True)
    project_name: Mapped[str] = mapped_column(String(200), index=True)
    reporter_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    reporter: Mapped[str] = mapped_column(String(100))
    trusted: Mapped[bool] = mapped_column(default=False)
    """The reporter held the trusted-reporter role when reporting."""
    reason: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("review_cases.id", ondelete="SET NULL"), nullable=True)


class NameRule(Base):
    """Admins' word on a name: ``ban`` (nobody may register it) or ``allow`` (an exception to the
    typosquat check, granted on request)."""

    __tablename__ = "name_rules"

    normalized_name: Mapped[str] = mapped_column(String(200), primary_key=True)
    rule: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
