"""Rendered pages: the bytes the read API serves, stored with their hash and ETag."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from bastion.db import Base, UTCDateTime, utcnow


class RenderedPage(Base):
    __tablename__ = "rendered_pages"

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    """Request path plus format, e.g. ``simple/foo/index.html``, ``simple/foo/index.json``, ``pypi/foo/json``."""
    content_type: Mapped[str] = mapped_column(String(100))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64))
    etag: Mapped[str] = mapped_column(String(80))
    serial: Mapped[int] = mapped_column(BigInteger, default=0)
    updated: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
