"""Package tables: projects, roles, releases, files, deleted filenames and the change journal."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from bastion.db import Base, UTCDateTime, utcnow


class RoleName(enum.StrEnum):
    OWNER = "owner"
    """Manages roles, uploads, yanks."""
    MAINTAINER = "maintainer"
    """Uploads."""


class ProjectStatus(enum.StrEnum):
    """PEP 792 project status markers."""

    ACTIVE = "active"
    ARCHIVED = "archived"
    QUARANTINED = "quarantined"
    DEPRECATED = "deprecated"


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    """Display name, as first uploaded."""
    normalized_name: Mapped[str] = mapped_column(String(200), unique=True)
    """PEP 503 normalized name."""
    ultranormalized_name: Mapped[str] = mapped_column(String(200), unique=True)
    """Confusable fold (separators dropped, l/i->1, o->0): no two projects may share it."""
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status: Mapped[str] = mapped_column(String(20), default=ProjectStatus.ACTIVE.value)
    status_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_serial: Mapped[int] = mapped_column(BigInteger, default=0)
    total_size: Mapped[int] = mapped_column(BigInteger, default=0)
    mfa_required: Mapped[bool] = mapped_column(Boolean, default=False)
    """An owner opted the project in: every owner and maintainer must use 2FA."""

    releases: Mapped[list[Release]] = relationship(back_populates="project")


class Role(Base):
    __tablename__ = "roles"
    __table_args__ = (UniqueConstraint("project_id", "user_id", name="uq_roles_project_user"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(20))


class Release(Base):
    __tablename__ = "releases"
    __table_args__ = (
        UniqueConstraint("project_id", "canonical_version", name="uq_releases_project_version"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    version: Mapped[str] = mapped_column(String(100))
    """Normalized PEP 440 version string."""
    canonical_version: Mapped[str] = mapped_column(String(100))
    """packaging.utils.canonicalize_version: 1.0 and 1.0.0 are one release."""
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    yanked: Mapped[bool] = mapped_column(Boolean, default=False)
    yanked_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    requires_python: Mapped[str | None] = mapped_column(String(200), nullable=True)
    core_metadata: Mapped[dict] = mapped_column(JSON)
    """The metadata read from the first artifact of the release (packaging.metadata raw form)."""

    project: Mapped[Project] = relationship(back_populates="releases")
    files: Mapped[list[File]] = relationship(back_populates="release", order_by="File.filename")


class File(Base):
    __tablename__ = "files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(500), unique=True)
    packagetype: Mapped[str] = mapped_column(String(20))
    python_version: Mapped[str] = mapped_column(String(50))
    size: Mapped[int] = mapped_column(BigInteger)
    md5_digest: Mapped[str] = mapped_column(String(32))
    sha256_digest: Mapped[str] = mapped_column(String(64), unique=True)
    blake2_256_digest: Mapped[str] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(String(700), unique=True)
    """Content-addressed blob path: packages/<b2[0:2]>/<b2[2:4]>/<b2[4:]>/<filename>."""
    requires_python: Mapped[str | None] = mapped_column(String(200), nullable=True)
    metadata_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """sha256 of the wheel's METADATA served at <path>.metadata (PEP 658/714); None for sdists."""
    upload_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    uploader_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    yanked: Mapped[bool] = mapped_column(Boolean, default=False)
    yanked_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    quarantined: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    """Held by the scanner or an admin: on no page and not downloadable until released."""

    release: Mapped[Release] = relationship(back_populates="files")


class DeletedFilename(Base):
    """Every filename ever stored: a deleted file's name can never be reused (as on PyPI)."""

    __tablename__ = "filename_registry"

    filename: Mapped[str] = mapped_column(String(500), primary_key=True)


class JournalEntry(Base):
    """The change journal: its id is the index-wide serial (``last_serial``)."""

    __tablename__ = "journal"
    # Serials only ever grow: on SQLite too, a deleted id is never handed out again.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[str | None] = mapped_column(String(100), nullable=True)
    action: Mapped[str] = mapped_column(Text)
    submitted: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    details: Mapped[dict | None] = mapped_column(JSON, nullable=True)
