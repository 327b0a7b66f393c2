"""Tables of the advisories subsystem.

- ``advisories``: one OSV record per id, as last imported (its whole record kept for the OSV API).
- ``advisory_packages``: one row per ``affected`` entry naming a PyPI project (PEP 503 name).
- ``vulnerability_matches``: which release each advisory affects, computed on import and on
  upload and stored (never computed per request).
- ``advisory_imports``: one row per import run, with its summary.
- ``applications`` / ``application_packages`` / ``application_alerts``: dependency lists that an
  organization registered, and the advisories it was already told about.
- ``project_security``: what a project's owners declared (security contact, role review,
  reaffirmed maintenance, 2FA on the code host) for the security page.
- ``advisory_notices``: advisories the maintainers of a project were already mailed about.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bastion.db import Base, UTCDateTime, utcnow


class Advisory(Base):
    __tablename__ = "advisories"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    """The OSV id (PYSEC-2021-1, GHSA-xxxx-xxxx-xxxx, ...)."""
    modified: Mapped[datetime] = mapped_column(UTCDateTime)
    """The record's ``modified``: a re-import replaces the row only when this is newer."""
    published: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    withdrawn: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """Set: the advisory no longer applies (no matches are kept; the JSON API marks it)."""
    summary: Mapped[str | None] = mapped_column(Text, nullable=True)
    details: Mapped[str] = mapped_column(Text, default="")
    aliases: Mapped[list] = mapped_column(JSON)
    """The record's aliases (CVE-..., GHSA-...), as listed."""
    record: Mapped[dict] = mapped_column(JSON)
    """The whole OSV record, normalized to JSON types (datetimes as RFC 3339 strings)."""
    origin: Mapped[str] = mapped_column(String(1000), default="")
    """Where it was read: the file's path relative to the imported root (or a zip member)."""
    imported: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    """When this version of the record was stored."""


class AdvisoryPackage(Base):
    """One ``affected`` entry for a PyPI package (GIT ranges kept, ignored for matching)."""

    __tablename__ = "advisory_packages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    advisory_id: Mapped[str] = mapped_column(ForeignKey("advisories.id", ondelete="CASCADE"), index=True)
    normalized_name: Mapped[str] = mapped_column(String(200), index=True)
    ranges: Mapped[list] = mapped_column(JSON)
    """The entry's ranges as in the record: [{"type": ..., "events": [...], "repo": ...}]."""
    versions: Mapped[list] = mapped_column(JSON)
    """The entry's explicit ``versions`` list (strings, possibly not PEP 440)."""


class VulnerabilityMatch(Base):
    """Advisory ``advisory_id`` affects release ``release_id``."""

    __tablename__ = "vulnerability_matches"

    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id", ondelete="CASCADE"), primary_key=True)
    advisory_id: Mapped[str] = mapped_column(ForeignKey("advisories.id", ondelete="CASCADE"), primary_key=True,
                                             index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    matched: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    """When the match was first stored (kept across re-imports that still match)."""


class AdvisoryImport(Base):
    """One run of ``bastion advisories import`` or of the scheduled re-import."""

    __tablename__ = "advisory_imports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(1000))
    started: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    summary: Mapped[dict] = mapped_column(JSON, default=dict)
    """Counts: added, updated, unchanged, withdrawn, skipped, matches_added, matches_removed."""
    problems: Mapped[list] = mapped_column(JSON, default=list)
    """Skipped records: [{"path": ..., "reason": ...}] (first 1,000)."""


class Application(Base):
    """An application whose dependency list an organization registered."""

    __tablename__ = "applications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True,
                                                 index=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    source_format: Mapped[str] = mapped_column(String(20))
    """requirements, pylock or cyclonedx."""
    contact_email: Mapped[str | None] = mapped_column(String(254), nullable=True)
    """Where alerts go (the owner's address when empty)."""
    webhook_url: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    webhook_secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    """HMAC-SHA256 key of the webhook signature, encrypted with the index's encryption key."""


class ApplicationPackage(Base):
    """One dependency of an application: a pinned version, or a specifier resolved in the index."""

    __tablename__ = "application_packages"
    __table_args__ = (UniqueConstraint("application_id", "normalized_name", name="uq_application_packages_app_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    application_id: Mapped[int] = mapped_column(ForeignKey("applications.id", ondelete="CASCADE"), index=True)
    normalized_name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[str | None] = mapped_column(String(100), nullable=True)
    """The version used (pinned, or the newest in the index satisfying ``specifier``)."""
    specifier: Mapped[str] = mapped_column(String(500), default="")
    direct: Mapped[bool] = mapped_column(Boolean, default=True)
    """Listed in the file (True) or reached through another package's Requires-Dist (False)."""


class ApplicationAlert(Base):
    """Application ``application_id`` was told about ``advisory_id`` (mail and webhook), once."""

    __tablename__ = "application_alerts"

    application_id: Mapped[int] = mapped_column(ForeignKey("applications.id", ondelete="CASCADE"), primary_key=True)
    advisory_id: Mapped[str] = mapped_column(ForeignKey("advisories.id", ondelete="CASCADE"), primary_key=True)
    sent: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    webhook_status: Mapped[str | None] = mapped_column(String(200), nullable=True)
    """The webhook's answer (``200``) or the error; None when the application has no webhook."""


class AdvisoryNotice(Base):
    """The owners and maintainers of ``project_id`` were mailed about ``advisory_id``, once."""

    __tablename__ = "advisory_notices"

    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    advisory_id: Mapped[str] = mapped_column(ForeignKey("advisories.id", ondelete="CASCADE"), primary_key=True)
    sent: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ProjectSecurity(Base):
    """What a project's owners declared for its security page (each with who and when)."""

    __tablename__ = "project_security"

    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    security_contact: Mapped[str | None] = mapped_column(String(500), nullable=True)
    """An email address or an https URL of the disclosure policy."""
    roles_confirmed: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    roles_confirmed_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    reaffirmed: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """An owner declared the project maintained."""
    reaffirmed_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    codehost_2fa: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """An owner declared that 2FA is required on the code host (self-reported: not observable)."""
    codehost_2fa_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
