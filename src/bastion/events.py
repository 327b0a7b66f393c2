"""The append-only, hash-chained audit log.

Each event stores the hash of its predecessor; the chain is extended inside the same transaction
as the action it records, so an action and its event commit or fail together.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from bastion.db import Base, UTCDateTime, advisory_lock, utcnow

GENESIS_HASH = "0" * 64


class Event(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    action: Mapped[str] = mapped_column(String(60), index=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    actor: Mapped[str | None] = mapped_column(String(100), nullable=True)
    subject: Mapped[str | None] = mapped_column(String(300), nullable=True, index=True)
    ip_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(Text, nullable=True)
    details: Mapped[dict] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


@dataclass(frozen=True)
class RequestContext:
    """Who asked and from where, as recorded in events."""

    ip: str | None = None
    """Client address; stored only as a keyed hash."""
    user_agent: str | None = None
    """The client's User-Agent header."""


CLI_CONTEXT = RequestContext(ip=None, user_agent="bastion-cli")


def _event_digest(prev_hash: str, fields: dict[str, Any]) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


def hash_ip(ip: str | None, secret: bytes) -> str | None:
    if not ip:
        return None
    return hashlib.blake2b(ip.encode(), key=secret[:64], digest_size=16).hexdigest()


def record_event(
    session: Session,
    action: str,
    *,
    actor_id: int | None = None,
    actor: str | None = None,
    subject: str | None = None,
    context: RequestContext = CLI_CONTEXT,
    details: dict[str, Any] | None = None,
    secret: bytes = b"",
) -> Event:
    """Append one event to the chain inside the caller's transaction."""
    advisory_lock(session, "bastion:audit-chain")  # one writer extends the chain at a time
    last = session.execute(select(Event.hash).order_by(Event.id.desc()).limit(1)).scalar()
    prev_hash = last or GENESIS_HASH
    now = utcnow()
    fields = {
        "time": now.isoformat(),
        "action": action,
        "actor_id": actor_id,
        "actor": actor,
        "subject": subject,
        "ip_hash": hash_ip(context.ip, secret),
        "user_agent": context.user_agent,
        "details": details or {},
    }
    event = Event(
        time=now,
        action=action,
        actor_id=actor_id,
        actor=actor,
        subject=subject,
        ip_hash=fields["ip_hash"],
        user_agent=context.user_agent,
        details=details or {},
        prev_hash=prev_hash,
        hash=_event_digest(prev_hash, fields),
    )
    session.add(event)
    session.flush()
    return event
