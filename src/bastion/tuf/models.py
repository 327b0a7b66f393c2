"""The TUF repository's state: signed metadata of every role and version, the current target
list, the signed versions of simple pages, and the queue of projects waiting for a snapshot.

All of it lives in the index's database, so that one snapshot (new bins, snapshot, timestamp and
the queue entries it consumed) commits or rolls back as one transaction: a crash never leaves a
half-written set of metadata behind.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from bastion.db import Base, UTCDateTime, utcnow


class TufRepository(Base):
    """One row: how the repository was created."""

    __tablename__ = "tuf_repository"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bins: Mapped[int] = mapped_column(Integer)
    """Number of succinct hash bins; fixed for the repository's life (TAP 15)."""
    development_keys: Mapped[bool] = mapped_column(Boolean, default=False)
    """True when ``bastion serve`` made the keys itself and the root key is online."""
    suspended: Mapped[bool] = mapped_column(Boolean, default=False)
    """True after a server ran with ``tuf = off`` (changes were not queued): the next start with
    TUF on queues every project again."""
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TufMetadata(Base):
    """One signed version of one role, as served at ``/tuf/metadata/<version>.<role>.json``."""

    __tablename__ = "tuf_metadata"

    role: Mapped[str] = mapped_column(String(40), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    expires: Mapped[datetime] = mapped_column(UTCDateTime)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    superseded: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    """When a newer version replaced it; garbage-collected a grace period later (never for root)."""


class TufHead(Base):
    """The current version of each role, and when it expires."""

    __tablename__ = "tuf_heads"

    role: Mapped[str] = mapped_column(String(40), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    expires: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class TufTarget(Base):
    """A target listed in the current bins: a distribution file or a simple page."""

    __tablename__ = "tuf_targets"

    path: Mapped[str] = mapped_column(String(900), primary_key=True)
    """Target path as the index serves it: ``packages/...`` or ``simple/<name>/index.html``."""
    sha256: Mapped[str] = mapped_column(String(64))
    length: Mapped[int] = mapped_column(BigInteger)
    bin: Mapped[str] = mapped_column(String(40), index=True)
    """The bin-n role that lists it (by the SHA-256 of its path)."""
    project: Mapped[str] = mapped_column(String(200), index=True)
    """Normalized name of the project whose page lists it ('' for the project list)."""


class TufPageVersion(Base):
    """A signed version of a simple page, served at its consistent-snapshot name
    ``simple/<name>/<sha256>.index.html`` for as long as some retained bin lists it."""

    __tablename__ = "tuf_page_versions"

    path: Mapped[str] = mapped_column(String(400), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    superseded: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)


class TufQueue(Base):
    """A project whose simple pages changed and wait for the next snapshot ('' = the project list)."""

    __tablename__ = "tuf_queue"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    enqueued: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
