"""Who hears about a new match: the maintainers of the project (when it lands on their latest
release) and the owners of every registered application that uses the affected release (mail and
a signed webhook call).

The importer and the upload path call :func:`collect_alerts` inside their transaction with the
matches they stored; it records what it will send (so nothing is sent twice) and returns an
:class:`Alerts`; the caller commits, then calls :func:`deliver`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from bastion.mail import Message
    from bastion.services import Bastion


@dataclass(frozen=True)
class NewMatch:
    """A match stored by this transaction that was not there before."""

    project_id: int
    release_id: int
    advisory_id: str


@dataclass
class Alerts:
    messages: list[Message] = field(default_factory=list)
    """Mails to send after commit."""
    webhooks: list[Any] = field(default_factory=list)
    """Webhook calls to make after commit (see :func:`deliver`)."""


def collect_alerts(session: Session, bastion: Bastion, new_matches: list[NewMatch]) -> Alerts:
    """Decide, inside the caller's transaction, who must hear about ``new_matches``."""
    return Alerts()


def deliver(bastion: Bastion, alerts: Alerts) -> None:
    """Send the mails and make the webhook calls (after commit; in the background)."""
    bastion.send_mail(alerts.messages)
