"""The security page of a project and the index-wide security page: seven commitments, each
pass / warn / fail / unknown with the evidence a reader can check, and the panels beside them
(releases, vulnerabilities, dependencies, usage, time to fix), computed from index data.

Where the data comes from, and when it is computed:

- Vulnerabilities come from the stored matches (``vulnerability_matches``, read through
  :mod:`bastion.advisories.query`): nothing is re-matched per request.
- Commitments 1 and 3 (vulnerability fixes, dependencies monitored) are computed at request time
  from the stored matches, so they follow every advisory import and every upload at once (the
  import stores the matches; reading them is a few keyed queries).
- Reverse dependencies and the index-wide list need every project's latest release; they are
  computed once per change of the index (:class:`IndexSnapshot`, cached by the newest journal
  entry, the newest advisory import and the number of stored matches) and shared by every
  request until the next change. When computing it took long (a large index), the next change is
  computed in a background thread while the previous snapshot is served, dated.
- Quarantined projects and releases whose every file is held are invisible here as everywhere:
  a quarantined project's report says so and holds nothing else.

Owner declarations (security contact, roles confirmed, maintenance reaffirmed, 2FA on the code
host) are stored in ``project_security``; each records an audit event.
"""

from __future__ import annotations

import functools
import logging
import statistics
import string
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version
from sqlalchemy import Engine, case, func, select
from sqlalchemy.orm import Session

from bastion.accounts.models import User
from bastion.accounts.service import EMAIL_RE
from bastion.advisories.models import (
    Advisory,
    AdvisoryImport,
    ApplicationPackage,
    ProjectSecurity,
    VulnerabilityMatch,
)
from bastion.advisories.query import AdvisoryView, group_overlapping, merge_aliases, stored_matches
from bastion.authz import Permission, Principal
from bastion.db import utcnow
from bastion.errors import ServiceError
from bastion.events import CLI_CONTEXT, Event, RequestContext, record_event
from bastion.packaging import service as packaging
from bastion.packaging.models import File, JournalEntry, Project, Release, Role
from bastion.simple.render import latest_of, version_sort_key

log = logging.getLogger("bastion.insights")

PASS, WARN, FAIL, UNKNOWN = "pass", "warn", "fail", "unknown"
STATUSES = (PASS, WARN, FAIL, UNKNOWN)

FRESH_ADVISORY_DAYS = 30
"""An advisory open on the latest release for less than this many days makes commitment 1 warn."""
ROLE_REVIEW_DAYS = 365
"""How long an owner's confirmation of the role list counts (commitment 4)."""
CODEHOST_2FA_DAYS = 365
"""How long a self-report of 2FA on the code host counts before it should be renewed (commitment 6)."""
MAINTAINED_MONTHS, STALE_MONTHS = 12, 24
"""Commitment 7: a release or a reaffirmation within 12 months passes, within 24 warns."""
MAX_CONTACT_LENGTH = 500  # project_security.security_contact's size

SEVERITY_RANK = {"CRITICAL": 4, "HIGH": 3, "MODERATE": 2, "MEDIUM": 2, "LOW": 1}
"""GitHub's severity labels (``database_specific.severity`` of GHSA records, as osv.dev exports
them). CVSS vectors are shown as given, not scored: the index has no CVSS calculator."""

DEFINITIONS = {
    "vulnerability-fixes": (
        1, "Vulnerability fixes for the latest release",
        "No open advisory on the newest non-yanked final release; warn when every open one is under "
        f"{FRESH_ADVISORY_DAYS} days old."),
    "disclosure": (
        2, "A secure disclosure process",
        "A security contact or policy URL is set on the project, or its latest release has a Project-URL "
        "labelled Security."),
    "dependencies": (
        3, "Dependencies monitored",
        "Every Requires-Dist of the latest release is satisfied by a non-yanked release in this index that has "
        "no open advisory; a dependency not in this index cannot be checked (warn)."),
    "release-managers": (
        4, "Release managers reviewed",
        f"An owner confirmed the list of people with upload rights within {ROLE_REVIEW_DAYS} days, and it has "
        "not changed since."),
    "index-2fa": (
        5, "2FA in the package index",
        "Every owner and maintainer signs in to this index with a second factor."),
    "codehost-2fa": (
        6, "2FA on the code host",
        "An owner reported that the code host requires 2FA of every committer (self-reported: the index "
        f"cannot observe it; renew within {CODEHOST_2FA_DAYS} days)."),
    "maintenance": (
        7, "Continued maintenance",
        f"A release or an owner's reaffirmation within {MAINTAINED_MONTHS} months (warn up to {STALE_MONTHS}); "
        "fail beyond, or when the project is archived."),
}


# ---------------------------------------------------------------------------------------------
# What the page shows
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Commitment:
    """One of the seven commitments, judged."""

    key: str
    """Stable identifier (``vulnerability-fixes``, ``disclosure``, ...)."""
    number: int
    """1 to 7, in the issue's order."""
    title: str
    """What is committed to."""
    definition: str
    """One line a reader can check the status against."""
    status: str
    """pass, warn, fail or unknown."""
    evidence: list[str]
    """What the status rests on, one fact a line."""


@dataclass(frozen=True)
class ReleaseRow:
    """A release in the releases panel."""

    version: str
    """Normalized PEP 440 version."""
    created: datetime
    """When it was first uploaded."""
    yanked: bool
    """PEP 592 yanked."""
    yanked_reason: str | None
    """Why, if the owner said."""
    prerelease: bool
    """A pre- or development release (pip skips it unless asked)."""
    latest: bool
    """The release pip installs by default (PyPI's choice)."""
    advisories: list[str]
    """Ids of the open advisories that affect it (alias-merged)."""


@dataclass(frozen=True)
class VulnerabilityRow:
    """An advisory (alias group) affecting some release of the project."""

    id: str
    """The shown id (PYSEC first, then GHSA)."""
    aliases: list[str]
    """Every other id (CVE, GHSA, ...)."""
    summary: str | None
    """One line, when the advisory has one."""
    link: str
    """Where to read it (osv.dev)."""
    published: datetime | None
    """When the advisory was published."""
    severity: str | None
    """GitHub's label (CRITICAL, HIGH, MODERATE, LOW) or a CVSS vector, when the record gives one."""
    affected: list[str]
    """The releases of this project in the index it affects, ascending."""
    fixed_in: list[str]
    """The versions the advisory says fix it."""
    first_fixed: str | None
    """The first release in the index after an affected one that it no longer affects."""
    first_fixed_date: datetime | None
    """When that release was uploaded."""
    days_to_fix: int | None
    """Days from the advisory's publication to that release (0 when the fix came first)."""
    open_on_latest: bool
    """It affects the latest release."""


@dataclass(frozen=True)
class DependencyRow:
    """One Requires-Dist of the latest release."""

    requirement: str
    """As written in the metadata."""
    name: str
    """PEP 503 name ('' when the line does not parse)."""
    specifier: str
    """The version specifier ('' for any version)."""
    marker: str | None
    """The environment marker, shown, not evaluated: it counts in every environment."""
    in_index: bool
    """A project of that name is on this index (and not quarantined)."""
    status: str
    """pass: a non-yanked release satisfies it and has no open advisory; fail: none does; unknown:
    not on this index (or the line does not parse)."""
    evidence: str
    """Why, in one line."""
    latest_version: str | None
    """The dependency's own latest release in the index."""
    latest_vulnerable: bool
    """Its latest release has an open advisory."""


@dataclass(frozen=True)
class PersonRow:
    """Someone with upload rights."""

    username: str
    """The user."""
    role: str
    """owner or maintainer."""
    has_2fa: bool
    """Signs in to the index with a second factor."""
    last_upload: datetime | None
    """Their last file on this project (shown files only); None: never uploaded one."""


@dataclass(frozen=True)
class Usage:
    """Who uses the project inside this index."""

    reverse_dependencies: list[str]
    """Projects whose latest release requires it (PEP 503 names)."""
    applications_direct: int
    """Registered applications listing it in their dependency file."""
    applications_transitive: int
    """Registered applications reaching it through another package."""


@dataclass(frozen=True)
class Declarations:
    """What the owners declared (``project_security``)."""

    security_contact: str | None
    roles_confirmed: datetime | None
    roles_confirmed_by: str | None
    reaffirmed: datetime | None
    reaffirmed_by: str | None
    codehost_2fa: datetime | None
    codehost_2fa_by: str | None


@dataclass(frozen=True)
class ProjectReport:
    """The security page of one project."""

    name: str
    """Display name."""
    normalized_name: str
    """PEP 503 name."""
    status: str
    """PEP 792 status; ``quarantined``: nothing else is filled in."""
    computed: datetime
    """When this report was computed."""
    latest_version: str | None = None
    """The release pip installs by default; None when there is none."""
    commitments: list[Commitment] = field(default_factory=list)
    releases: list[ReleaseRow] = field(default_factory=list)
    """Newest first."""
    vulnerabilities: list[VulnerabilityRow] = field(default_factory=list)
    """Open on the latest release first, then by id."""
    dependencies: list[DependencyRow] = field(default_factory=list)
    people: list[PersonRow] = field(default_factory=list)
    usage: Usage | None = None
    median_days_to_fix: float | None = None
    """Median of ``days_to_fix`` over the advisories that have a fixed release in the index."""
    fixes_measured: int = 0
    """How many advisories that median is over."""
    declarations: Declarations | None = None

    @property
    def quarantined(self) -> bool:
        return self.status == "quarantined"

    def counts(self) -> dict[str, int]:
        """How many commitments have each status."""
        return {status: sum(1 for c in self.commitments if c.status == status) for status in STATUSES}

    def as_json(self) -> dict[str, Any]:
        """The JSON twin of the page (dates as ISO 8601 strings)."""
        return _jsonable(asdict(self)) | {"counts": self.counts() if not self.quarantined else None,
                                          "quarantined": self.quarantined}


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


def _months_before(moment: datetime, months: int) -> datetime:
    """The same day ``months`` calendar months earlier (the month's last day when it has fewer)."""
    month_index = moment.year * 12 + moment.month - 1 - months
    year, month = divmod(month_index, 12)
    day = moment.day
    while True:
        try:
            return moment.replace(year=year, month=month + 1, day=day)
        except ValueError:
            day -= 1


def _commitment(key: str, status: str, evidence: list[str]) -> Commitment:
    number, title, definition = DEFINITIONS[key]
    return Commitment(key=key, number=number, title=title, definition=definition, status=status, evidence=evidence)


def _parse(version: str) -> Version | None:
    try:
        return Version(version)
    except InvalidVersion:
        return None


# ---------------------------------------------------------------------------------------------
# Facts read from the database
# ---------------------------------------------------------------------------------------------

@dataclass
class _Release:
    id: int
    version: str
    created: datetime
    yanked: bool
    yanked_reason: str | None


def visible_releases(session: Session, project_ids: Sequence[int]) -> dict[int, list[_Release]]:
    """The releases that pages show, by project: not those whose every file is held for review
    (two queries, whatever the number of projects)."""
    found: dict[int, list[_Release]] = {pid: [] for pid in project_ids}
    if not found:
        return found
    held = packaging.held_releases(session, list(found))
    for r in session.execute(
        select(Release.id, Release.project_id, Release.version, Release.created, Release.yanked,
               Release.yanked_reason).where(Release.project_id.in_(list(found)))
    ).all():
        if r.id not in held:
            found[r.project_id].append(_Release(id=r.id, version=r.version, created=r.created, yanked=r.yanked,
                                                yanked_reason=r.yanked_reason))
    return found


def _severity(views: Iterable[AdvisoryView]) -> str | None:
    """The most severe label among the records of ``views`` (GHSA's), else the first CVSS vector."""
    return severity_of_records(record for view in views for record in view.records)


def severity_of_records(records: Iterable[dict[str, Any]]) -> str | None:
    """The most severe GitHub label among OSV ``records``, else the first CVSS vector, else None."""
    labels, vectors = [], []
    for record in records:
        label = str((record.get("database_specific") or {}).get("severity") or "").upper()
        if label in SEVERITY_RANK:
            labels.append(label)
        for entry in record.get("severity") or []:
            if isinstance(entry, dict) and entry.get("score"):
                vectors.append(str(entry["score"]))
    if labels:
        return max(labels, key=lambda label: SEVERITY_RANK[label])
    return vectors[0] if vectors else None


def severity_rank(severity: str | None) -> int:
    """For sorting: GitHub's labels by rank, a bare CVSS vector above nothing."""
    if severity is None:
        return 0
    return SEVERITY_RANK.get(severity, 1)


def _first_words(text: str, limit: int = 200) -> str | None:
    """A summary for a record without one (PYSEC records have only ``details``): its first
    sentence, cut at ``limit`` characters on a word."""
    text = " ".join(text.split())
    if not text:
        return None
    sentence = text.split(". ", 1)[0]
    if len(sentence) <= limit:
        return sentence.rstrip(".") + "."
    return sentence[:limit].rsplit(" ", 1)[0] + "…"


def _merge_views(views: Iterable[AdvisoryView]) -> list[list[AdvisoryView]]:
    """Group the per-release views of one project that share an advisory id (one group per
    advisory, however its aliases were merged release by release)."""
    return group_overlapping(list(views), lambda view: [view.id, *(view.members or [])])


def vulnerability_rows(releases: Sequence[_Release], matches: dict[int, list[AdvisoryView]],
                       latest_id: int | None) -> list[VulnerabilityRow]:
    """One row per advisory affecting some release: affected versions, fixes, first fixed release."""
    by_version = sorted(releases, key=lambda r: version_sort_key(r.version))
    release_of = {r.id: r for r in releases}
    entries: list[tuple[AdvisoryView, int]] = [(view, rid) for rid, views in matches.items()
                                                 if rid in release_of for view in views]
    releases_of_member: dict[str, set[int]] = defaultdict(set)
    for view, rid in entries:
        for member in view.members or [view.id]:
            releases_of_member[member].add(rid)
    rows = []
    for group in _merge_views(view for view, _ in entries):
        ids = {member for view in group for member in (view.members or [view.id])}
        affected_ids = set().union(*(releases_of_member[member] for member in ids))
        head = min(group, key=lambda v: _id_rank(v.id))
        affected = [r for r in by_version if r.id in affected_ids]
        fixed = sorted({v for view in group for v in view.fixed_in}, key=version_sort_key)
        first_fixed = _first_fixed(by_version, affected_ids)
        published = min((v.published for v in group if v.published), default=None)
        days = None
        if first_fixed is not None and published is not None:
            days = max(0, (first_fixed.created - published).days)
        rows.append(VulnerabilityRow(
            id=head.id, aliases=sorted(set(head.aliases) | {a for v in group for a in v.aliases} - {head.id}),
            summary=head.summary or next((v.summary for v in group if v.summary), None)
            or _first_words(next((v.details for v in group if v.details), "")), link=head.link,
            published=published, severity=_severity(group), affected=[r.version for r in affected],
            fixed_in=fixed, first_fixed=first_fixed.version if first_fixed else None,
            first_fixed_date=first_fixed.created if first_fixed else None, days_to_fix=days,
            open_on_latest=latest_id in affected_ids,
        ))
    rows.sort(key=lambda row: (not row.open_on_latest, -severity_rank(row.severity), row.id))
    return rows


def _id_rank(ident: str) -> tuple[int, str]:
    """The id a group is shown under: PYSEC (PyPI's own source), then GHSA, then the smallest."""
    return ({"PYSEC": 0, "GHSA": 1}.get(ident.split("-", 1)[0], 2), ident)


def _first_fixed(by_version: Sequence[_Release], affected_ids: set[int]) -> _Release | None:
    """The lowest release above the lowest affected one that the advisory does not affect."""
    seen_affected = False
    for release in by_version:
        if release.id in affected_ids:
            seen_affected = True
        elif seen_affected and _parse(release.version) is not None:
            return release
    return None


# ---------------------------------------------------------------------------------------------
# The seven commitments (pure functions of the facts: the unit tests drive them with ``now``)
# ---------------------------------------------------------------------------------------------

def judge_vulnerability_fixes(latest: _Release | None, open_views: Sequence[AdvisoryView],
                              open_since: dict[str, datetime], now: datetime) -> Commitment:
    key = "vulnerability-fixes"
    if latest is None:
        return _commitment(key, UNKNOWN, ["the project has no release"])
    if not open_views:
        return _commitment(key, PASS, [f"no open advisory on {latest.version}"])
    evidence = []
    fresh = True
    for view in open_views:
        since = open_since.get(view.id) or view.published or now
        age = (now - since).days
        fresh = fresh and now - since < timedelta(days=FRESH_ADVISORY_DAYS)
        cve = next((a for a in view.aliases if a.startswith("CVE-")), None)
        label = f"{view.id} ({cve})" if cve else view.id
        evidence.append(f"{label} open since {_day(since)} on {latest.version} ({age} days)")
    return _commitment(key, WARN if fresh else FAIL, evidence)


def security_project_urls(project_urls: Any) -> list[tuple[str, str]]:
    """(label, URL) of the Project-URLs labelled Security (PEP 753 label normalization: no
    punctuation or whitespace, lower case; ``Security``, ``Security Policy``, ``security-policy``)."""
    found = []
    items: list[tuple[Any, Any]] = []
    if isinstance(project_urls, dict):
        items = list(project_urls.items())
    elif isinstance(project_urls, list):  # "Label, URL" lines
        for line in project_urls:
            label, comma, url = str(line).partition(",")
            if comma:
                items.append((label.strip(), url.strip()))
    for label, url in items:
        normalized = "".join(c for c in str(label) if c not in string.punctuation and not c.isspace()).lower()
        if normalized.startswith("security"):
            found.append((str(label), str(url)))
    return found


def judge_disclosure(contact: str | None, security_urls: Sequence[tuple[str, str]]) -> Commitment:
    key = "disclosure"
    evidence = []
    if contact:
        evidence.append(f"security contact set by the owners: {contact}")
    evidence += [f"Project-URL '{label}': {url}" for label, url in security_urls]
    if evidence:
        return _commitment(key, PASS, evidence)
    return _commitment(key, FAIL, ["no security contact is set and the latest release has no Project-URL "
                                   "labelled Security"])


def judge_dependencies(latest: _Release | None, rows: Sequence[DependencyRow]) -> Commitment:
    key = "dependencies"
    if latest is None:
        return _commitment(key, UNKNOWN, ["the project has no release"])
    if not rows:
        return _commitment(key, PASS, [f"{latest.version} has no dependencies"])
    failing = [row for row in rows if row.status == FAIL]
    unknown = [row for row in rows if row.status == UNKNOWN]
    passing = [row for row in rows if row.status == PASS]
    evidence = [f"{row.requirement}: {row.evidence}" for row in failing + unknown]
    if failing:
        return _commitment(key, FAIL, evidence)
    if unknown and not passing:
        return _commitment(key, UNKNOWN, evidence)
    if unknown:
        return _commitment(key, WARN, [f"{len(passing)} of {len(rows)} dependencies monitored", *evidence])
    return _commitment(key, PASS, [f"all {len(rows)} dependencies have a release in this index with no open "
                                   "advisory"])


def judge_release_managers(people: Sequence[PersonRow], declared: Declarations,
                           changes_since: Sequence[str], now: datetime) -> Commitment:
    key = "release-managers"
    listing = [f"{p.username} ({p.role}): " + (f"last upload {_day(p.last_upload)}" if p.last_upload
                                                else "no upload") for p in people]
    if not people:
        return _commitment(key, UNKNOWN, ["nobody has upload rights on this project"])
    when, who = declared.roles_confirmed, declared.roles_confirmed_by
    if when is None:
        return _commitment(key, FAIL, ["no owner has confirmed the role list", *listing])
    line = f"confirmed by {who} on {_day(when)}"
    if now - when > timedelta(days=ROLE_REVIEW_DAYS):
        return _commitment(key, FAIL, [f"last {line}: over {ROLE_REVIEW_DAYS} days ago", *listing])
    if changes_since:
        return _commitment(key, WARN, [line, *[f"changed since: {c}" for c in changes_since], *listing])
    return _commitment(key, PASS, [line, *listing])


def judge_index_2fa(people: Sequence[PersonRow]) -> Commitment:
    key = "index-2fa"
    if not people:
        return _commitment(key, UNKNOWN, ["nobody has upload rights on this project"])
    without = [p for p in people if not p.has_2fa]
    if without:
        return _commitment(key, FAIL, [f"{p.username}: no 2FA" for p in without])
    return _commitment(key, PASS, [f"all {len(people)} owners and maintainers use 2FA"])


def judge_codehost_2fa(declared: Declarations, withdrawn: tuple[str, datetime] | None, now: datetime) -> Commitment:
    key = "codehost-2fa"
    when, who = declared.codehost_2fa, declared.codehost_2fa_by
    if when is not None:
        line = f"self-reported by {who} on {_day(when)} (not observable by the index)"
        if now - when > timedelta(days=CODEHOST_2FA_DAYS):
            return _commitment(key, WARN, [line, f"over {CODEHOST_2FA_DAYS} days ago: ask an owner to report it again"])
        return _commitment(key, PASS, [line])
    if withdrawn is not None:
        return _commitment(key, FAIL, [f"withdrawn by {withdrawn[0]} on {_day(withdrawn[1])}"])
    return _commitment(key, UNKNOWN, ["not reported by an owner (the index cannot observe the code host)"])


def judge_maintenance(status: str, releases: Sequence[_Release], declared: Declarations,
                      now: datetime) -> Commitment:
    key = "maintenance"
    if status == "archived":
        return _commitment(key, FAIL, ["the project is archived"])
    newest = max(releases, key=lambda r: r.created, default=None)
    evidence = []
    if newest is not None:
        evidence.append(f"last release {newest.version} on {_day(newest.created)}")
    if declared.reaffirmed is not None:
        evidence.append(f"reaffirmed by {declared.reaffirmed_by} on {_day(declared.reaffirmed)}")
    moments = [m for m in (newest.created if newest else None, declared.reaffirmed) if m is not None]
    if not moments:
        return _commitment(key, UNKNOWN, ["no release and no reaffirmation yet"])
    last = max(moments)
    if last >= _months_before(now, MAINTAINED_MONTHS):
        return _commitment(key, PASS, evidence)
    if last >= _months_before(now, STALE_MONTHS):
        return _commitment(key, WARN, [*evidence, f"nothing in the last {MAINTAINED_MONTHS} months"])
    return _commitment(key, FAIL, [*evidence, f"nothing in the last {STALE_MONTHS} months"])


# ---------------------------------------------------------------------------------------------
# One project's report
# ---------------------------------------------------------------------------------------------

def _declarations(row: ProjectSecurity | None) -> Declarations:
    if row is None:
        return Declarations(None, None, None, None, None, None, None)
    return Declarations(security_contact=row.security_contact, roles_confirmed=row.roles_confirmed,
                        roles_confirmed_by=row.roles_confirmed_by, reaffirmed=row.reaffirmed,
                        reaffirmed_by=row.reaffirmed_by, codehost_2fa=row.codehost_2fa,
                        codehost_2fa_by=row.codehost_2fa_by)


def _people(session: Session, project_id: int) -> list[PersonRow]:
    last_upload = (
        select(File.uploader_id, func.max(File.upload_time).label("last"))
        .where(File.project_id == project_id, File.quarantined.is_(False)).group_by(File.uploader_id).subquery()
    )
    rows = session.execute(
        select(User.username, Role.role, User.mfa_enabled, last_upload.c.last)
        .join(Role, Role.user_id == User.id)
        .outerjoin(last_upload, last_upload.c.uploader_id == User.id)
        .where(Role.project_id == project_id).order_by(Role.role.desc(), User.username_key)
    ).all()
    return [PersonRow(username=u, role=r, has_2fa=m is not None, last_upload=last) for u, r, m, last in rows]


def _role_changes_since(session: Session, normalized: str, since: datetime | None) -> list[str]:
    if since is None:
        return []
    events = session.execute(
        select(Event.action, Event.time, Event.details).where(
            Event.subject == f"project:{normalized}", Event.action.in_(("role.granted", "role.removed")),
            Event.time > since).order_by(Event.id)
    ).all()
    return [f"{(details or {}).get('user', '?')} {'given' if action == 'role.granted' else 'removed from'} the "
            f"role {(details or {}).get('role', '?')} on {_day(time)}" for action, time, details in events]


def _codehost_withdrawal(session: Session, normalized: str) -> tuple[str, datetime] | None:
    row = session.execute(
        select(Event.actor, Event.time, Event.details).where(
            Event.subject == f"project:{normalized}", Event.action == "project.codehost-2fa")
        .order_by(Event.id.desc()).limit(1)
    ).first()
    if row is None or (row.details or {}).get("enabled", True):
        return None
    return (row.actor or "?", row.time)


def _open_since(session: Session, release_id: int, views: Sequence[AdvisoryView]) -> dict[str, datetime]:
    """When each advisory became open on the release: its publication, else when the match was stored."""
    matched = dict(session.execute(
        select(VulnerabilityMatch.advisory_id, VulnerabilityMatch.matched)
        .where(VulnerabilityMatch.release_id == release_id)
    ).all())
    since = {}
    for view in views:
        stored = [matched[m] for m in view.members if m in matched]
        since[view.id] = view.published or min(stored, default=utcnow())
    return since


def vulnerable_release_ids(session: Session, release_ids: Iterable[int]) -> set[int]:
    """Of ``release_ids``, those with a stored match of an advisory that is not withdrawn."""
    ids = list(release_ids)
    if not ids:
        return set()
    return set(session.execute(
        select(VulnerabilityMatch.release_id).join(Advisory, Advisory.id == VulnerabilityMatch.advisory_id)
        .where(VulnerabilityMatch.release_id.in_(ids), Advisory.withdrawn.is_(None)).distinct()
    ).scalars())


@functools.lru_cache(maxsize=65536)
def requirement_name(line: str) -> str | None:
    """The PEP 503 name a Requires-Dist line names (None when it does not parse), parsed by
    ``packaging`` once per distinct line."""
    try:
        return canonicalize_name(Requirement(line).name)
    except InvalidRequirement:
        return None


def dependency_rows(session: Session, requires_dist: Iterable[str], own_name: str) -> list[DependencyRow]:
    """Judge each Requires-Dist line against the releases in the index and their stored matches."""
    parsed: list[tuple[str, Requirement | None]] = []
    for line in requires_dist:
        try:
            parsed.append((str(line), Requirement(str(line))))
        except InvalidRequirement:
            parsed.append((str(line), None))
    names = {canonicalize_name(req.name) for _, req in parsed if req is not None}
    projects = dict(session.execute(
        select(Project.normalized_name, Project.id)
        .where(Project.normalized_name.in_(names), Project.status != "quarantined")
    ).all()) if names else {}
    releases = visible_releases(session, list(projects.values()))
    vulnerable = vulnerable_release_ids(session, (r.id for rs in releases.values() for r in rs))
    rows = []
    for line, req in parsed:
        if req is None:
            rows.append(DependencyRow(requirement=line, name="", specifier="", marker=None, in_index=False,
                                      status=UNKNOWN, evidence="not a valid requirement (PEP 508)",
                                      latest_version=None, latest_vulnerable=False))
            continue
        name = canonicalize_name(req.name)
        if name == own_name:  # ``pkg[extra]`` in pkg's own metadata: its extras, not a dependency
            continue
        marker = str(req.marker) if req.marker is not None else None
        spec = str(req.specifier)
        if name not in projects:
            rows.append(DependencyRow(requirement=line, name=name, specifier=spec, marker=marker, in_index=False,
                                      status=UNKNOWN, evidence="not on this index: cannot be checked here",
                                      latest_version=None, latest_vulnerable=False))
            continue
        candidates = releases[projects[name]]
        latest = latest_of(candidates)
        usable = {r.version: r for r in candidates if not r.yanked and _parse(r.version) is not None}
        satisfying = [usable[v] for v in req.specifier.filter(list(usable))]
        clean = [r for r in satisfying if r.id not in vulnerable]
        best = max(clean, key=lambda r: Version(r.version), default=None)
        wanted = spec or "any version"
        if best is not None:
            status, evidence = PASS, f"{best.version} satisfies {wanted} and has no open advisory"
        elif satisfying:
            status, evidence = FAIL, (f"every release satisfying {wanted} has an open advisory "
                                      f"({', '.join(sorted((r.version for r in satisfying), key=version_sort_key))})")
        else:
            status, evidence = FAIL, f"no non-yanked release in this index satisfies {wanted}"
        rows.append(DependencyRow(requirement=line, name=name, specifier=spec, marker=marker, in_index=True,
                                  status=status, evidence=evidence,
                                  latest_version=latest.version if latest else None,
                                  latest_vulnerable=latest is not None and latest.id in vulnerable))
    return rows


def _usage(session: Session, normalized: str) -> Usage:
    reverse = index_snapshot(session).reverse_dependencies.get(normalized, [])
    direct, transitive = session.execute(
        select(func.count(func.distinct(case((ApplicationPackage.direct.is_(True), ApplicationPackage.application_id)))),
               func.count(func.distinct(case((ApplicationPackage.direct.is_(False),
                                             ApplicationPackage.application_id)))))
        .where(ApplicationPackage.normalized_name == normalized)
    ).one()
    return Usage(reverse_dependencies=list(reverse), applications_direct=direct or 0,
                 applications_transitive=transitive or 0)


def project_report(session: Session, name: str, *, now: datetime | None = None) -> ProjectReport:
    """The security page of project ``name`` (NotFound when there is none)."""
    now = now or utcnow()
    project = packaging.get_project(session, name)
    if project.status == "quarantined":
        return ProjectReport(name=project.name, normalized_name=project.normalized_name, status=project.status,
                             computed=now)
    releases = visible_releases(session, [project.id])[project.id]
    latest = latest_of(releases)
    matches = stored_matches(session, [r.id for r in releases])
    declared = _declarations(session.get(ProjectSecurity, project.id))
    metadata: dict[str, Any] = {}
    if latest is not None:  # the two members read, not the whole metadata (descriptions can be large)
        row = session.execute(select(Release.core_metadata["requires_dist"], Release.core_metadata["project_urls"])
                              .where(Release.id == latest.id)).one()
        metadata = {"requires_dist": row[0], "project_urls": row[1]}
    open_views = matches.get(latest.id, []) if latest is not None else []
    people = _people(session, project.id)
    requires = metadata.get("requires_dist")
    dependencies = dependency_rows(session, requires if isinstance(requires, list) else [], project.normalized_name)
    vulnerabilities = vulnerability_rows(releases, matches, latest.id if latest else None)
    commitments = [
        judge_vulnerability_fixes(latest, open_views, _open_since(session, latest.id, open_views) if latest else {},
                                  now),
        judge_disclosure(declared.security_contact, security_project_urls(metadata.get("project_urls"))),
        judge_dependencies(latest, dependencies),
        judge_release_managers(people, declared,
                               _role_changes_since(session, project.normalized_name, declared.roles_confirmed), now),
        judge_index_2fa(people),
        judge_codehost_2fa(declared, _codehost_withdrawal(session, project.normalized_name), now),
        judge_maintenance(project.status, releases, declared, now),
    ]
    fix_days = [row.days_to_fix for row in vulnerabilities if row.days_to_fix is not None]
    release_rows = [
        ReleaseRow(version=r.version, created=r.created, yanked=r.yanked, yanked_reason=r.yanked_reason,
                   prerelease=bool(_parse(r.version) and _parse(r.version).is_prerelease),  # type: ignore[union-attr]
                   latest=latest is not None and r.id == latest.id,
                   advisories=[v.id for v in matches.get(r.id, [])])
        for r in sorted(releases, key=lambda r: version_sort_key(r.version), reverse=True)
    ]
    return ProjectReport(
        name=project.name, normalized_name=project.normalized_name, status=project.status, computed=now,
        latest_version=latest.version if latest else None, commitments=commitments, releases=release_rows,
        vulnerabilities=vulnerabilities, dependencies=dependencies, people=people,
        usage=_usage(session, project.normalized_name),
        median_days_to_fix=float(statistics.median(fix_days)) if fix_days else None, fixes_measured=len(fix_days),
        declarations=declared,
    )


# ---------------------------------------------------------------------------------------------
# The whole index (cached per change)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VulnerableProject:
    """A project whose latest release has open advisories."""

    name: str
    normalized_name: str
    latest_version: str
    advisories: list[str]
    """Open advisory ids (alias-merged), most severe first."""
    severity: str | None
    """The most severe label or vector among them."""
    oldest: datetime
    """When the oldest of them was published (or first matched)."""


@dataclass(frozen=True)
class IndexSnapshot:
    """What the index-wide page and the usage panels need, computed once per change of the index."""

    key: tuple[Any, ...]
    """The change markers it was computed at."""
    computed: datetime
    projects: int
    """Projects shown (not quarantined)."""
    releases: int
    """Their shown releases."""
    projects_with_release: int
    """Projects that have a latest release."""
    vulnerable: list[VulnerableProject]
    """Most severe first, then oldest first, then most advisories."""
    advisories: int
    """Advisories stored (withdrawn ones included)."""
    advisories_withdrawn: int
    last_import: datetime | None
    """When the last advisory import finished (or started, if it has not finished)."""
    fix_days: list[int]
    """Days from publication to the first fixed release, one per (project, advisory) with a fix."""
    reverse_dependencies: dict[str, list[str]]
    """PEP 503 name -> the projects whose latest release requires it."""
    seconds: float = 0.0
    """How long computing it took."""

    def as_json(self, now: datetime) -> dict[str, Any]:
        return {
            "computed": _jsonable(self.computed),
            "totals": {"projects": self.projects, "releases": self.releases,
                       "vulnerable_latest_releases": len(self.vulnerable), "advisories": self.advisories,
                       "advisories_withdrawn": self.advisories_withdrawn,
                       "last_import": _jsonable(self.last_import)},
            "median_days_to_fix": statistics.median(self.fix_days) if self.fix_days else None,
            "fixes_measured": len(self.fix_days),
            "projects": [
                {"name": p.name, "normalized_name": p.normalized_name, "latest_version": p.latest_version,
                 "open_advisories": len(p.advisories), "advisories": p.advisories, "severity": p.severity,
                 "oldest": _jsonable(p.oldest), "oldest_days": (now - p.oldest).days}
                for p in self.vulnerable
            ],
        }


_SNAPSHOTS: dict[str, IndexSnapshot] = {}
_REFRESHING: set[str] = set()
_SNAPSHOT_LOCK = threading.Lock()
SYNC_RECOMPUTE_SECONDS = 0.5
"""A snapshot that took longer than this to compute is recomputed in the background."""


def _change_key(session: Session) -> tuple[Any, ...]:
    """Markers that move whenever what the snapshot shows may have changed: the newest journal
    entry (uploads, yanks, roles, quarantine, deletions) and its time (serials restart in an
    emptied database), the newest advisory import and the stored matches and withdrawals."""
    journal = session.execute(select(JournalEntry.id, JournalEntry.submitted).order_by(JournalEntry.id.desc())
                              .limit(1)).first()
    imported = session.execute(select(AdvisoryImport.id, AdvisoryImport.started, AdvisoryImport.finished)
                               .order_by(AdvisoryImport.id.desc()).limit(1)).first()
    matches = session.execute(select(func.count()).select_from(VulnerabilityMatch)).scalar_one()
    withdrawn = session.execute(select(func.count()).select_from(Advisory)
                                .where(Advisory.withdrawn.is_not(None))).scalar_one()
    projects = session.execute(select(func.count(), func.max(Project.id)).select_from(Project)).one()
    return (tuple(journal) if journal else None, tuple(imported) if imported else None, matches, withdrawn,
            tuple(projects))


def index_snapshot(session: Session) -> IndexSnapshot:
    """The cached snapshot of the index, recomputed when a change marker moved: at once when the
    last computation was quick (under ``SYNC_RECOMPUTE_SECONDS``), else in a background thread
    while the previous snapshot is served (its ``computed`` says how old it is)."""
    bind = session.get_bind()
    where = bind.engine.url.render_as_string(hide_password=True)
    key = _change_key(session)
    with _SNAPSHOT_LOCK:
        cached = _SNAPSHOTS.get(where)
        if cached is not None and cached.key == key:
            return cached
        background = cached is not None and cached.seconds > SYNC_RECOMPUTE_SECONDS
        start = background and where not in _REFRESHING
        if start:
            _REFRESHING.add(where)
    if background:
        if start:
            threading.Thread(target=_refresh, args=(bind.engine, where), name="security-snapshot", daemon=True).start()
        assert cached is not None
        return _without_hidden(session, cached)
    snapshot = _compute_snapshot(session, key)
    with _SNAPSHOT_LOCK:
        _SNAPSHOTS[where] = snapshot
    return snapshot


def _without_hidden(session: Session, snapshot: IndexSnapshot) -> IndexSnapshot:
    """The previous snapshot, served while the next is computed, without what was quarantined or
    held for review since: projects now quarantined, latest releases now held, and (until the
    next snapshot says which release named them) dependents now quarantined or holding a release."""
    quarantined = set(session.execute(
        select(Project.normalized_name).where(Project.status == "quarantined")).scalars())
    held = {(name, version) for name, version in session.execute(
        select(Project.normalized_name, Release.version).join(Release, Release.project_id == Project.id)
        .join(File, File.release_id == Release.id).group_by(Release.id, Project.normalized_name, Release.version)
        .having(func.sum(case((File.quarantined.is_(False), 1), else_=0)) == 0))}
    hidden = quarantined | {name for name, _ in held}
    vulnerable = [p for p in snapshot.vulnerable
                  if p.normalized_name not in quarantined and (p.normalized_name, p.latest_version) not in held]
    reverse = {dep: [name for name in names if name not in hidden]
               for dep, names in snapshot.reverse_dependencies.items()}
    if vulnerable == snapshot.vulnerable and reverse == snapshot.reverse_dependencies:
        return snapshot  # nothing hidden since
    return replace(snapshot, vulnerable=vulnerable, reverse_dependencies=reverse)


def _refresh(engine: Engine, where: str) -> None:
    try:
        with Session(engine) as session:
            snapshot = _compute_snapshot(session, _change_key(session))
        with _SNAPSHOT_LOCK:
            _SNAPSHOTS[where] = snapshot
    except Exception:  # noqa: BLE001  (the previous snapshot stays; the next request tries again)
        log.exception("the security snapshot of the index could not be recomputed")
    finally:
        with _SNAPSHOT_LOCK:
            _REFRESHING.discard(where)


def _compute_snapshot(session: Session, key: tuple[Any, ...]) -> IndexSnapshot:
    started = time.monotonic()
    projects = {row.id: row for row in session.execute(
        select(Project.id, Project.name, Project.normalized_name).where(Project.status != "quarantined")
    ).all()}
    held = set(session.execute(
        select(File.release_id).group_by(File.release_id)
        .having(func.sum(case((File.quarantined.is_(False), 1), else_=0)) == 0)
    ).scalars())
    by_project: dict[int, list[_Release]] = defaultdict(list)
    for row in session.execute(select(Release.id, Release.project_id, Release.version, Release.created,
                                      Release.yanked)):
        if row.project_id in projects and row.id not in held:
            by_project[row.project_id].append(_Release(id=row.id, version=row.version, created=row.created,
                                                       yanked=row.yanked, yanked_reason=None))
    latest: dict[int, _Release] = {}
    for pid, rs in by_project.items():
        chosen = latest_of(rs)
        if chosen is not None:
            latest[pid] = chosen
    # Reverse dependencies: the Requires-Dist of every latest release, read once per change.
    reverse: dict[str, set[str]] = defaultdict(set)
    latest_ids = {r.id: pid for pid, r in latest.items()}
    # Only the requires_dist member is read (descriptions can be large); no IN list of every id.
    for release_id, requires in session.execute(select(Release.id, Release.core_metadata["requires_dist"])):
        if release_id not in latest_ids or not isinstance(requires, list):
            continue
        own = projects[latest_ids[release_id]].normalized_name
        for line in requires:
            dep = requirement_name(str(line))
            if dep is not None and dep != own:
                reverse[dep].add(own)
    # Vulnerabilities: the stored matches of every shown release, alias-merged release by release,
    # with the advisories' light columns (their whole records only for the latest releases' ones).
    release_project = {r.id: pid for pid, rs in by_project.items() for r in rs}
    by_release: dict[int, list[str]] = defaultdict(list)
    first_matched: dict[tuple[int, str], datetime] = {}
    for rid, aid, when in session.execute(
        select(VulnerabilityMatch.release_id, VulnerabilityMatch.advisory_id, VulnerabilityMatch.matched)
        .join(Advisory, Advisory.id == VulnerabilityMatch.advisory_id).where(Advisory.withdrawn.is_(None))
    ).all():
        if rid in release_project:
            by_release[rid].append(aid)
            first_matched[(rid, aid)] = when
    light = {row.id: Advisory(id=row.id, aliases=row.aliases or [], published=row.published, modified=row.modified,
                              withdrawn=None, summary=row.summary, details="", record={})
             for row in session.execute(select(Advisory.id, Advisory.aliases, Advisory.published, Advisory.modified,
                                               Advisory.summary).where(Advisory.withdrawn.is_(None)))}
    matches = {rid: merge_aliases([(light[aid], []) for aid in aids if aid in light])
               for rid, aids in by_release.items()}
    matched_by_project: dict[int, list[int]] = defaultdict(list)
    for rid in matches:
        matched_by_project[release_project[rid]].append(rid)
    on_latest = {aid for pid, r in latest.items() for aid in by_release.get(r.id, [])}
    records: dict[str, dict[str, Any]] = dict(session.execute(select(Advisory.id, Advisory.record).where(Advisory.id.in_(on_latest))).all()) \
        if on_latest else {}
    vulnerable, fix_days = [], []
    for pid in matched_by_project:
        rows = vulnerability_rows(by_project[pid], {rid: matches.get(rid, []) for rid in matched_by_project[pid]},
                                  latest[pid].id if pid in latest else None)
        fix_days += [row.days_to_fix for row in rows if row.days_to_fix is not None]
        release = latest.get(pid)
        views = matches.get(release.id, []) if release is not None else []
        if release is None or not views:
            continue
        severity = {v.id: severity_of_records(records[m] for m in v.members if m in records) for v in views}
        ordered = sorted(views, key=lambda v: (-severity_rank(severity[v.id]), v.id))
        oldest = min(v.published or min((first_matched[(release.id, m)] for m in v.members
                                         if (release.id, m) in first_matched), default=utcnow()) for v in views)
        vulnerable.append(VulnerableProject(
            name=projects[pid].name, normalized_name=projects[pid].normalized_name, latest_version=release.version,
            advisories=[v.id for v in ordered], severity=severity[ordered[0].id], oldest=oldest))
    vulnerable.sort(key=lambda p: (-severity_rank(p.severity), p.oldest, -len(p.advisories), p.normalized_name))
    advisories, withdrawn = session.execute(
        select(func.count(), func.count(Advisory.withdrawn)).select_from(Advisory)).one()
    last = session.execute(select(func.max(func.coalesce(AdvisoryImport.finished, AdvisoryImport.started)))).scalar()
    return IndexSnapshot(
        key=key, computed=utcnow(), projects=len(projects), releases=sum(len(rs) for rs in by_project.values()),
        projects_with_release=len(latest), vulnerable=vulnerable, advisories=advisories or 0,
        advisories_withdrawn=withdrawn or 0, last_import=_aware(last), fix_days=sorted(fix_days),
        reverse_dependencies={dep: sorted(names) for dep, names in reverse.items()},
        seconds=time.monotonic() - started,
    )


def _aware(moment: Any) -> datetime | None:
    """func.max over a UTCDateTime column comes back untyped (a string on SQLite)."""
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    from datetime import UTC

    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# ---------------------------------------------------------------------------------------------
# Owner declarations
# ---------------------------------------------------------------------------------------------

CONTACT_HELP = ("give an email address (security@example.org) or the https:// URL of the project's "
                "security policy")


def validate_contact(value: str) -> str:
    """The security contact to store (an email address or an https URL), or ServiceError saying why not."""
    text = value.strip()
    if text.lower().startswith("mailto:"):
        text = text[len("mailto:"):]
    if not text:
        raise ServiceError(f"the security contact is empty: {CONTACT_HELP}, or clear it")
    if len(text) > MAX_CONTACT_LENGTH:
        raise ServiceError(f"the security contact is {len(text)} characters long: use at most {MAX_CONTACT_LENGTH}")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text):
        raise ServiceError(f"the security contact contains spaces or control characters: {CONTACT_HELP}")
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme.lower() != "https":
            raise ServiceError(f"'{text[:100]}' is not an https URL: {CONTACT_HELP}")
        if not parts.hostname:
            raise ServiceError(f"'{text[:100]}' names no host: {CONTACT_HELP}")
        return text
    if len(text) <= 254 and EMAIL_RE.match(text):
        return text
    raise ServiceError(f"'{text[:100]}' is neither an email address nor an https URL: {CONTACT_HELP}")


ACTIONS = ("contact", "clear-contact", "confirm-roles", "reaffirm", "codehost-2fa", "codehost-2fa-withdraw")


@dataclass(frozen=True)
class Declaration:
    """One owner declaration to apply."""

    action: str
    """One of ``ACTIONS``."""
    value: str = ""
    """The contact, for ``contact``."""


def declare(session: Session, name: str, declarations: Sequence[Declaration], *, principal: Principal,
            context: RequestContext = CLI_CONTEXT, secret: bytes = b"") -> list[str]:
    """Apply owner declarations to project ``name`` (MANAGE_PROJECT: owners and admins), each with
    its audit event, in the caller's transaction; one sentence per declaration, saying what was done.
    Every value is checked before anything is stored."""
    project = packaging.get_project(session, name)
    packaging.authorize(session, principal, Permission.MANAGE_PROJECT, project)
    packaging.refuse_while_quarantined(project, principal)
    if not declarations:
        raise ServiceError("nothing to declare: choose a security contact, confirm the roles, reaffirm "
                           "maintenance or report 2FA on the code host")
    checked: list[tuple[str, str | None]] = []
    for item in declarations:
        if item.action not in ACTIONS:
            raise ServiceError(f"unknown declaration '{item.action[:50]}': use one of {', '.join(ACTIONS)}")
        checked.append((item.action, validate_contact(item.value) if item.action == "contact" else None))
    row = session.get(ProjectSecurity, project.id)
    if row is None:
        row = ProjectSecurity(project_id=project.id)
        session.add(row)
    now = utcnow()
    who = principal.username
    subject = f"project:{project.normalized_name}"
    done = []

    def event(action: str, details: dict[str, Any]) -> None:
        record_event(session, action, actor_id=principal.user_id, actor=who, subject=subject, context=context,
                     secret=secret, details=details)

    for action, contact in checked:
        if action in ("contact", "clear-contact"):
            row.security_contact = contact
            event("project.security-contact", {"contact": contact})
            done.append(f"security contact of {project.name}: {contact}" if contact
                        else f"security contact of {project.name} cleared")
        elif action == "confirm-roles":
            roles = [{"user": p.username, "role": p.role} for p in _people(session, project.id)]
            row.roles_confirmed, row.roles_confirmed_by = now, who
            event("project.roles-confirmed", {"roles": roles})
            done.append(f"role list of {project.name} confirmed ({len(roles)} people with upload rights)")
        elif action == "reaffirm":
            row.reaffirmed, row.reaffirmed_by = now, who
            event("project.reaffirmed", {})
            done.append(f"{project.name} reaffirmed as maintained")
        elif action == "codehost-2fa":
            row.codehost_2fa, row.codehost_2fa_by = now, who
            event("project.codehost-2fa", {"enabled": True})
            done.append(f"2FA on the code host of {project.name} reported")
        else:
            row.codehost_2fa, row.codehost_2fa_by = None, None
            event("project.codehost-2fa", {"enabled": False})
            done.append(f"report of 2FA on the code host of {project.name} withdrawn")
    session.flush()
    return done

