"""Who hears about a new match: the maintainers of the project (when it lands on their latest
release) and the owners of every registered application that uses the affected release (mail and
a signed webhook call).

The importer and the upload path call :func:`collect_alerts` inside their transaction with the
matches they stored; it records what it will send (so nothing is sent twice) and returns an
:class:`Alerts`; the caller commits, then calls :func:`deliver`.

Once: a project's owners and maintainers hear of an advisory once (``advisory_notices``), an
application once (``application_alerts``), whatever re-imports follow. An alias group (a PYSEC and
a GHSA record of one CVE) is one advisory: told of one member, nobody is told of another.
Withdrawn advisories tell nobody.

The webhook: ``POST`` of a JSON body ::

    {"application": NAME, "advisory": {"id", "aliases", "summary", "link"},
     "packages": [{"name", "version", "fixed_in"}], "sent": RFC 3339 time}

with the headers ``X-Bastion-Event: advisory``, ``X-Bastion-Timestamp: <unix seconds>`` and
``X-Bastion-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>." + body, keyed with the
application's webhook secret>``. The receiver recomputes the HMAC over the timestamp header, a dot
and the exact body bytes, compares in constant time, and refuses a timestamp older than a few
minutes (a replayed call). Redirects are not followed; a call that fails (no answer, 5xx, 429) is
tried again twice; the outcome is stored in ``ApplicationAlert.webhook_status``.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bastion.advisories.match import Matcher
from bastion.advisories.models import (
    Advisory,
    AdvisoryNotice,
    AdvisoryPackage,
    Application,
    ApplicationAlert,
    ApplicationPackage,
)
from bastion.advisories.query import AdvisoryView, merge_aliases, stored_matches
from bastion.db import advisory_lock

if TYPE_CHECKING:
    from bastion.mail import Message
    from bastion.services import Bastion

log = logging.getLogger("bastion.alerts")

NOTICES_LOCK = "bastion:advisory-notices"
ALERTS_LOCK = "bastion:application-alerts"
"""Held while ``advisory_notices`` / ``application_alerts`` are read and written (import, upload,
registration), so that two deciders cannot both send; taken last in every transaction (after the
audit chain's lock), so that they cannot deadlock with it."""

SIGNATURE_HEADER = "X-Bastion-Signature"
TIMESTAMP_HEADER = "X-Bastion-Timestamp"
EVENT_HEADER = "X-Bastion-Event"
WEBHOOK_TIMEOUT = 5.0
"""Seconds one read or write of a webhook call may wait."""
WEBHOOK_DEADLINE = 10.0
"""Seconds one try of a webhook call may take in all (connect, send, the answer's headers): the
per-read timeout alone let a receiver that answers a byte at a time hold the call for hours."""
RETRY_DELAYS = (1.0, 3.0)
"""Pauses before the second and third try of a failed call."""
REPLAY_WINDOW = 300
"""Seconds a receiver should accept a timestamp for (see :func:`verify_signature`)."""


@dataclass(frozen=True)
class NewMatch:
    """A match stored by this transaction that was not there before."""

    project_id: int
    release_id: int
    advisory_id: str


@dataclass(frozen=True)
class WebhookCall:
    """One signed POST to make after commit."""

    application_id: int
    advisory_ids: tuple[str, ...]
    """The alias group's ids: their ``ApplicationAlert`` rows get the outcome."""
    body: bytes
    """The exact JSON bytes that are signed and sent."""


@dataclass
class Alerts:
    messages: list[Message] = field(default_factory=list)
    """Mails to send after commit."""
    webhooks: list[Any] = field(default_factory=list)
    """Webhook calls to make after commit (:class:`WebhookCall`, see :func:`deliver`)."""


def collect_alerts(session: Session, bastion: Bastion, new_matches: list[NewMatch],
                   advisory_ids: Iterable[str] = ()) -> Alerts:
    """Decide, inside the caller's transaction, who must hear about ``new_matches``.

    ``advisory_ids``: advisories added or changed by the caller (an import); they are checked
    against every registered application too, so that an application using a version this index
    does not hold (a pylock or SBOM from elsewhere) hears of them.
    """
    alerts = Alerts()
    _maintainer_alerts(session, new_matches, alerts)
    _application_alerts(session, {m.advisory_id for m in new_matches} | set(advisory_ids), alerts)
    return alerts


# -- maintainers ----------------------------------------------------------------------------------

def _latest_releases(session: Session, project_ids: set[int]) -> dict[int, tuple[int, str]]:
    """project id -> (release id, version) of its latest release (PyPI's choice) among those
    published: a release whose every file is held for review is installed by no one."""
    from bastion.packaging.models import Release
    from bastion.packaging.service import held_releases
    from bastion.simple.render import latest_of

    held = held_releases(session, sorted(project_ids))
    by_project: dict[int, list[Any]] = defaultdict(list)
    for row in session.execute(
        select(Release.id, Release.project_id, Release.version, Release.yanked)
        .where(Release.project_id.in_(sorted(project_ids)))
    ):
        if row.id not in held:
            by_project[row.project_id].append(row)
    latest = {}
    for project_id, rows in by_project.items():
        release = latest_of(rows)
        if release is not None:
            latest[project_id] = (release.id, release.version)
    return latest


def _told_keys(rows: Iterable[tuple[Any, str, list[str] | None]]) -> dict[Any, set[str]]:
    """owner key -> every id and alias of the advisories already told."""
    keys: dict[Any, set[str]] = defaultdict(set)
    for owner, advisory_id, aliases in rows:
        keys[owner].add(advisory_id)
        keys[owner].update(aliases or [])
    return keys


def _maintainer_alerts(session: Session, new_matches: list[NewMatch], alerts: Alerts) -> None:
    from bastion.accounts import notifications

    if not new_matches:
        return
    latest = _latest_releases(session, {m.project_id for m in new_matches})
    new_on_latest: dict[int, set[str]] = defaultdict(set)  # release id -> new advisory ids
    project_of: dict[int, int] = {}
    for match in new_matches:
        at = latest.get(match.project_id)
        if at is not None and at[0] == match.release_id:
            new_on_latest[match.release_id].add(match.advisory_id)
            project_of[match.release_id] = match.project_id
    if not new_on_latest:
        return
    projects = sorted(set(project_of.values()))
    advisory_lock(session, NOTICES_LOCK)  # an upload and an import deciding at once: one mail
    notices = session.execute(
        select(AdvisoryNotice.project_id, Advisory.id, Advisory.aliases)
        .join(Advisory, Advisory.id == AdvisoryNotice.advisory_id)
        .where(AdvisoryNotice.project_id.in_(projects))
    ).all()
    told = _told_keys(notices)
    noticed: set[tuple[int, str]] = {(row[0], row[1]) for row in notices}
    views = stored_matches(session, new_on_latest)  # open advisories only, alias groups merged
    for release_id, groups in sorted(views.items()):
        project_id = project_of[release_id]
        fresh = [g for g in groups if set(g.members) & new_on_latest[release_id]
                 and not (set(g.members) | set(g.aliases)) & told[project_id]]
        if not fresh:
            continue
        for group in fresh:
            for member in group.members:
                if (project_id, member) not in noticed:
                    session.add(AdvisoryNotice(project_id=project_id, advisory_id=member))
                    noticed.add((project_id, member))
        alerts.messages += notifications.advisory_on_latest_release(session, project_id, latest[project_id][1],
                                                                    fresh)
    session.flush()


# -- applications ---------------------------------------------------------------------------------

@dataclass
class _Hit:
    advisory: Advisory
    packages: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    """package name -> (version used, fixed versions)."""


def _chunks(items: list[Any], size: int = 500) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _application_alerts(session: Session, advisory_ids: set[str], alerts: Alerts) -> None:
    from bastion.accounts import notifications
    from bastion.accounts.models import User
    from bastion.db import utcnow

    if not advisory_ids:
        return
    entries: dict[str, list[tuple[Advisory, AdvisoryPackage]]] = defaultdict(list)
    for chunk in _chunks(sorted(advisory_ids)):
        for advisory, entry in session.execute(
            select(Advisory, AdvisoryPackage).join(AdvisoryPackage, AdvisoryPackage.advisory_id == Advisory.id)
            .where(Advisory.id.in_(chunk), Advisory.withdrawn.is_(None))
        ):
            entries[entry.normalized_name].append((advisory, entry))
    if not entries:
        return
    hits: dict[int, dict[str, _Hit]] = defaultdict(dict)  # application id -> advisory id -> hit
    for chunk in _chunks(sorted(entries)):
        for package in session.execute(
            select(ApplicationPackage).where(ApplicationPackage.normalized_name.in_(chunk),
                                             ApplicationPackage.version.is_not(None))
        ).scalars():
            assert package.version is not None
            for advisory, entry in entries[package.normalized_name]:
                matcher = Matcher(entry.ranges, entry.versions)
                if not matcher.affects(package.version):
                    continue
                hit = hits[package.application_id].setdefault(advisory.id, _Hit(advisory))
                previous = hit.packages.get(package.normalized_name, (package.version, []))[1]
                hit.packages[package.normalized_name] = (package.version, previous + matcher.fixed_in())
    if not hits:
        return
    app_ids = sorted(hits)
    advisory_lock(session, ALERTS_LOCK)  # a registration or another import deciding at once: one alert
    alerted = session.execute(
        select(ApplicationAlert.application_id, Advisory.id, Advisory.aliases)
        .join(Advisory, Advisory.id == ApplicationAlert.advisory_id)
        .where(ApplicationAlert.application_id.in_(app_ids))
    ).all()
    told = _told_keys(alerted)
    recorded: set[tuple[int, str]] = {(row[0], row[1]) for row in alerted}
    applications = {a.id: a for a in session.execute(select(Application).where(Application.id.in_(app_ids))).scalars()}
    owners = dict(session.execute(
        select(User.id, User.email).where(User.id.in_({a.owner_id for a in applications.values() if a.owner_id}),
                                          User.is_active.is_(True))
    ).all())
    sent = utcnow().isoformat().replace("+00:00", "Z")
    for app_id in app_ids:
        application = applications[app_id]
        by_id = hits[app_id]
        groups = merge_aliases([(hit.advisory, []) for hit in by_id.values()])
        fresh = []
        for group in groups:
            if (set(group.members) | set(group.aliases)) & told[app_id]:
                continue
            packages = _group_packages(group, by_id)
            fresh.append((group, packages))
            for member in group.members:
                if (app_id, member) not in recorded:
                    session.add(ApplicationAlert(application_id=app_id, advisory_id=member,
                                                 webhook_status="queued" if application.webhook_url else None))
                    recorded.add((app_id, member))
            if application.webhook_url:
                alerts.webhooks.append(WebhookCall(app_id, tuple(group.members),
                                                   webhook_body(application.name, group, packages, sent)))
        to = application.contact_email or owners.get(application.owner_id or 0) or ""
        if fresh and to.strip():  # one mail for all the advisories decided together (an import batch)
            alerts.messages += notifications.application_advisory(to, application.name, fresh)
    session.flush()


def _group_packages(group: AdvisoryView, by_id: dict[str, _Hit]) -> list[tuple[str, str, list[str]]]:
    """(name, version, fixed_in) of each package of the application the group affects."""
    from bastion.advisories.match import parse_version

    merged: dict[str, tuple[str, set[str]]] = {}
    for member in group.members:
        for name, (version, fixed) in by_id[member].packages.items():
            merged.setdefault(name, (version, set()))[1].update(fixed)
    return [(name, version, sorted(fixed, key=lambda t: (parse_version(t) is None, parse_version(t) or t)))
            for name, (version, fixed) in sorted(merged.items())]


def webhook_body(application: str, group: AdvisoryView, packages: list[tuple[str, str, list[str]]],
                 sent: str) -> bytes:
    document = {
        "application": application,
        "advisory": {"id": group.id, "aliases": group.aliases, "summary": group.summary, "link": group.link},
        "packages": [{"name": name, "version": version, "fixed_in": fixed} for name, version, fixed in packages],
        "sent": sent,
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


# -- signing --------------------------------------------------------------------------------------

def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of "<timestamp>." + body>``, the X-Bastion-Signature value."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(secret: str, timestamp: str, body: bytes, header: str, *, now: float | None = None,
                     window: int = REPLAY_WINDOW) -> bool:
    """What a receiver does (in constant time): the signature matches and the timestamp is recent."""
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return False
    return age <= window and hmac.compare_digest(signature(secret, timestamp, body), header)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect is an answer, not a new place to send the alert


class _Watchdog:
    """Shuts down the sockets of one try when it runs past its deadline (a blocked read then ends)."""

    def __init__(self, seconds: float) -> None:
        self.sockets: list[socket.socket] = []
        self.expired = False
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def watch(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self.sockets.append(sock)
            if self.expired:
                sock.close()
        return sock

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self.sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


def _watched(base: type[http.client.HTTPConnection], watchdog: _Watchdog) -> Any:
    """``base`` whose sockets (the TCP one under TLS too) the watchdog can shut down."""

    class Connection(base):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            create = self._create_connection  # type: ignore[has-type]

            def created(*a: Any, **k: Any) -> socket.socket:
                return watchdog.watch(create(*a, **k))

            self._create_connection = created

    return Connection


def _opener(watchdog: _Watchdog) -> urllib.request.OpenerDirector:
    class Http(urllib.request.HTTPHandler):
        def http_open(self, req: Any) -> Any:
            return self.do_open(_watched(http.client.HTTPConnection, watchdog), req)

    class Https(urllib.request.HTTPSHandler):
        def https_open(self, req: Any) -> Any:
            return self.do_open(_watched(http.client.HTTPSConnection, watchdog), req,
                                context=self._context)  # type: ignore[attr-defined]

    return urllib.request.build_opener(_NoRedirect, Http, Https)


def post_signed(url: str, body: bytes, secret: str, *, timeout: float = WEBHOOK_TIMEOUT,
                deadline: float = WEBHOOK_DEADLINE, delays: tuple[float, ...] | None = None) -> str:
    """POST ``body`` signed with ``secret``; the outcome ("200", or "error: ...") after the retries
    (``delays``, default :data:`RETRY_DELAYS`), each try cut off after ``deadline`` seconds."""
    from bastion import __version__

    delays = RETRY_DELAYS if delays is None else delays
    outcome = ""
    for attempt in range(len(delays) + 1):
        if attempt:
            time.sleep(delays[attempt - 1])
        timestamp = str(int(time.time()))
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": f"Bastion/{__version__}",
            EVENT_HEADER: "advisory", TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(secret, timestamp, body),
        })
        watchdog = _Watchdog(deadline)
        try:
            with watchdog, _opener(watchdog).open(request, timeout=timeout) as response:
                if not watchdog.expired:  # else the answer was cut short: not one to trust
                    return str(response.status)
            outcome = f"error: no answer within {deadline:g} s"
        except urllib.error.HTTPError as exc:
            outcome = f"error: HTTP {exc.code}" + (" (redirects are not followed)" if 300 <= exc.code < 400 else "")
            if exc.code < 500 and exc.code != 429:
                break  # the receiver refused it: trying again would not help
        except (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            outcome = f"error: {type(reason).__name__}: {reason}"
            if watchdog.expired:
                outcome = f"error: no answer within {deadline:g} s"
    tries = attempt + 1
    return f"{outcome} ({tries} tr{'y' if tries == 1 else 'ies'})"[:200]


def _gave_up(status: str) -> bool:
    """The call failed after every try (no answer, or 5xx/429 each time)."""
    return status.startswith("error:") and status.endswith("tries)")


def _origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL, for logs."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def call_webhooks(bastion: Bastion, calls: list[WebhookCall]) -> list[str]:
    """Make one application's calls, in order (a background task), storing each outcome in a short
    transaction of its own. Once a call failed after every try, the rest are not tried (marked so):
    a receiver that is down must not hold the task runner, which sends everyone's mail, for long."""
    from bastion.advisories.applications import webhook_secret

    if not calls:
        return []
    with bastion.db.read() as session:
        application = session.get(Application, calls[0].application_id)
        if application is None or not application.webhook_url:
            return []  # removed, or its webhook taken away, since the alerts were decided
        url = application.webhook_url
        secret = webhook_secret(bastion, application)
        name = application.name
    if secret is None:
        return []
    outcomes = []
    down = ""
    for call in calls:
        if down:
            status = "error: not tried: the previous call failed after every try"
        else:
            status = post_signed(url, call.body, secret)
            if not status.startswith("2"):
                # the host only: chat-style webhook URLs carry their credential in the path or query
                log.warning("webhook of application %s (%s) for %s: %s", name, _origin(url),
                            ", ".join(call.advisory_ids), status)
            if _gave_up(status):
                down = status
        with bastion.db.write() as session:
            session.execute(update(ApplicationAlert).where(
                ApplicationAlert.application_id == call.application_id,
                ApplicationAlert.advisory_id.in_(call.advisory_ids)).values(webhook_status=status))
        outcomes.append(status)
    return outcomes


def deliver(bastion: Bastion, alerts: Alerts) -> None:
    """Send the mails and make the webhook calls (after commit; in the background).

    The task runner is started if it is not yet (the CLI runs none): ``Bastion.close`` then waits
    for the queued sends before the command exits.
    """
    if not alerts.messages and not alerts.webhooks:
        return
    bastion.tasks.start()
    bastion.send_mail(alerts.messages)
    by_application: dict[int, list[WebhookCall]] = defaultdict(list)
    for call in alerts.webhooks:
        by_application[call.application_id].append(call)
    for calls in by_application.values():
        bastion.tasks.submit("webhook", call_webhooks, bastion, calls)
