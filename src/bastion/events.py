"""The append-only, hash-chained audit log.

Each event stores the hash of its predecessor; the chain is extended inside the same transaction
as the action it records, so an action and its event commit or fail together.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import JSON, ForeignKey, Integer, String, Table, Text, insert, select
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


_events = cast(Table, Event.__table__)
_LAST_HASH = select(_events.c.hash).order_by(_events.c.id.desc()).limit(1)
_NEW_EVENT = insert(_events)


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
) -> None:
    """Append one event to the chain inside the caller's transaction (an INSERT, no ORM flush)."""
    if context.user_agent is not None and len(context.user_agent) > 500:
        context = RequestContext(ip=context.ip, user_agent=context.user_agent[:500])  # bounded rows
    advisory_lock(session, "bastion:audit-chain")  # one writer extends the chain at a time
    last = session.execute(_LAST_HASH).scalar()
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
    session.execute(_NEW_EVENT, {
        "time": now, "action": action, "actor_id": actor_id, "actor": actor, "subject": subject,
        "ip_hash": fields["ip_hash"], "user_agent": context.user_agent, "details": details or {},
        "prev_hash": prev_hash, "hash": _event_digest(prev_hash, fields),
    })


EVENTS_PER_PAGE = 100


def list_events(session: Session, *where: Any, before: int | None = None,
                limit: int = EVENTS_PER_PAGE) -> list[Event]:
    """One page of events matching every ``where`` clause, newest first; ``before`` (the last id
    seen, clamped to the id column's range: any number is a valid page) gives the next page."""
    query = select(Event)
    for clause in where:
        query = query.where(clause)
    if before is not None:
        query = query.where(Event.id < min(max(before, 0), 2**31 - 1))
    return list(session.execute(query.order_by(Event.id.desc()).limit(limit)).scalars())


def events_of_user(session: Session, user_id: int, username: str, *, before: int | None = None) -> list[Event]:
    """What a user did, and what was done to their account."""
    from sqlalchemy import or_

    return list_events(session, or_(Event.actor_id == user_id, Event.subject == f"user:{username}"), before=before)


@dataclass(frozen=True)
class ChainReport:
    """The result of re-computing the audit chain."""

    checked: int
    """Events read."""
    head_id: int | None
    """Id of the newest event."""
    head_hash: str | None
    """Hash of the newest event: write it down elsewhere to catch a removal of the newest events."""
    first_problem_id: int | None
    """The first event found altered, or the first event whose predecessor was removed or altered."""
    problem: str | None
    """What is wrong there, in a sentence; None when the chain verifies."""

    @property
    def ok(self) -> bool:
        return self.problem is None


def _fields_of(event: Event) -> dict[str, Any]:
    return {
        "time": event.time.isoformat(),
        "action": event.action,
        "actor_id": event.actor_id,
        "actor": event.actor,
        "subject": event.subject,
        "ip_hash": event.ip_hash,
        "user_agent": event.user_agent,
        "details": event.details or {},
    }


def verify_chain(session: Session, *, anchor: tuple[int, str] | None = None, batch: int = 5000) -> ChainReport:
    """Recompute every event's hash from its own fields and its link to the event before it.

    An altered event fails its own hash; an altered event whose hash was recomputed, or a removed
    event, breaks the link of the event after it. The newest events can only be checked against
    an ``anchor`` (id, hash) noted earlier (``bastion events head``): a removal there leaves no link.
    """
    previous_hash = GENESIS_HASH
    previous_id: int | None = None
    checked = 0
    last_id = 0
    anchor_seen = anchor is None
    while True:
        rows = session.execute(
            select(Event).where(Event.id > last_id).order_by(Event.id).limit(batch)
        ).scalars().all()
        if not rows:
            break
        for event in rows:
            checked += 1
            if event.prev_hash != previous_hash:
                where = f"event {previous_id}" if previous_id is not None else "the start of the log"
                return ChainReport(checked, event.id, event.hash, event.id,
                                   f"event {event.id} ({event.action}) does not link to {where}: an event "
                                   f"between them was removed, or {where} was altered")
            if _event_digest(event.prev_hash, _fields_of(event)) != event.hash:
                return ChainReport(checked, event.id, event.hash, event.id,
                                   f"event {event.id} ({event.action}, {event.time.isoformat()}) was altered: "
                                   "its contents no longer match its hash")
            if anchor is not None and event.id == anchor[0]:
                if event.hash != anchor[1]:
                    return ChainReport(checked, event.id, event.hash, event.id,
                                       f"event {event.id} does not have the anchored hash: the log was rewritten")
                anchor_seen = True
            previous_hash, previous_id = event.hash, event.id
        last_id = rows[-1].id
        session.expunge_all()
    if not anchor_seen and anchor is not None:
        return ChainReport(checked, previous_id, previous_hash, anchor[0],
                           f"the anchored event {anchor[0]} is missing: the newest events were removed")
    return ChainReport(checked, previous_id, previous_hash if previous_id else None, None, None)
