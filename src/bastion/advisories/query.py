"""Reading advisories and stored matches: what every consumer (JSON API, OSV API, audit,
security page, applications) asks, in one place.

Alias merging: a PYSEC and a GHSA record of the same CVE are two advisories that list each other
(or a shared CVE) in ``aliases``. :func:`merge_aliases` groups advisories whose ids and aliases
overlap and shows each group once, under one id (PYSEC first, as PyPI's own source, then GHSA,
then the smallest id), listing every other id as an alias.

Withdrawn advisories keep their matches (the JSON API lists them with ``withdrawn`` set, as PyPI
does); every "is it vulnerable" question leaves them out (``include_withdrawn=False``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from packaging.utils import canonicalize_name
from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from bastion.advisories.match import Matcher, parse_version
from bastion.advisories.models import Advisory, AdvisoryPackage, VulnerabilityMatch
from bastion.packaging.models import Release

OSV_LINK = "https://osv.dev/vulnerability/{id}"
T = TypeVar("T")


@dataclass
class AdvisoryView:
    """One advisory (or one alias group) as consumers show it."""

    id: str
    aliases: list[str]
    """Every other id of the group and every alias (CVE-..., GHSA-...), sorted."""
    summary: str | None
    details: str
    published: datetime | None
    modified: datetime
    withdrawn: datetime | None
    fixed_in: list[str]
    """``fixed`` versions for the package asked about, ascending."""
    link: str
    members: list[str] = field(default_factory=list)
    """The advisory ids merged into this view (the shown id first)."""
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)
    """The members' whole OSV records (for the OSV API)."""

    def pypi_json(self) -> dict[str, Any]:
        """PyPI's JSON API entry: exactly its eight keys."""
        return {
            "aliases": self.aliases,
            "details": self.details,
            "fixed_in": self.fixed_in,
            "id": self.id,
            "link": self.link,
            "source": "osv",
            "summary": self.summary,
            "withdrawn": _iso(self.withdrawn),
        }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def _rank(ident: str) -> tuple[int, str]:
    prefix = ident.split("-", 1)[0]
    return ({"PYSEC": 0, "GHSA": 1}.get(prefix, 2), ident)


def group_overlapping(items: Sequence[T], keys: Callable[[T], Iterable[str]]) -> list[list[T]]:
    """Group items that share a key, directly or through others (union-find over the keys);
    ``keys(item)`` yields the item's own id first. Groups and their items keep the input order."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    firsts = []
    for item in items:
        own, *others = list(keys(item))
        firsts.append(own)
        for other in others:
            parent[find(other)] = find(own)
        find(own)
    groups: dict[str, list[T]] = {}
    for item, own in zip(items, firsts, strict=True):
        groups.setdefault(find(own), []).append(item)
    return list(groups.values())


def merge_aliases(advisories: Sequence[tuple[Advisory, list[str]]], *, with_records: bool = True) -> list[AdvisoryView]:
    """Group (advisory, its fixed versions for the package) pairs whose ids/aliases overlap.
    ``with_records=False`` leaves ``records`` empty (for rows loaded without their record)."""
    groups = group_overlapping(advisories, lambda pair: [pair[0].id, *(pair[0].aliases or [])])
    views = []
    for members in groups:
        members.sort(key=lambda pair: _rank(pair[0].id))
        head = members[0][0]
        ids = {a.id for a, _ in members}
        aliases = sorted({x for a, _ in members for x in (a.aliases or [])} | ids - {head.id}, key=_rank)
        fixed = sorted({v for _, f in members for v in f}, key=lambda t: (parse_version(t) is None, parse_version(t) or t))
        withdrawn_all = all(a.withdrawn for a, _ in members)
        views.append(AdvisoryView(
            id=head.id, aliases=aliases,
            summary=next((a.summary for a, _ in members if a.summary), None),
            details=next((a.details for a, _ in members if a.details), ""),
            published=min((a.published for a, _ in members if a.published), default=None),
            modified=max(a.modified for a, _ in members),
            withdrawn=max(a.withdrawn for a, _ in members) if withdrawn_all else None,  # type: ignore[type-var]
            fixed_in=fixed, link=OSV_LINK.format(id=head.id),
            members=[a.id for a, _ in members], records=[a.record for a, _ in members] if with_records else [],
        ))
    views.sort(key=lambda v: _rank(v.id))
    return views


def entries_for(session: Session, name: str) -> list[tuple[Advisory, AdvisoryPackage]]:
    """Every advisory naming the project (any version), with its affected entry."""
    normalized = canonicalize_name(name)
    return list(session.execute(
        select(Advisory, AdvisoryPackage).join(AdvisoryPackage, AdvisoryPackage.advisory_id == Advisory.id)
        .where(AdvisoryPackage.normalized_name == normalized)
    ).all())


def advisories_affecting(session: Session, name: str, version: str, *,
                         include_withdrawn: bool = False) -> list[AdvisoryView]:
    """The advisories that affect ``name`` at ``version``, evaluated against the advisory data
    (the version need not be in this index: the OSV API and audits ask about any version)."""
    found: dict[str, tuple[Advisory, list[str]]] = {}
    for advisory, entry in entries_for(session, name):
        if advisory.withdrawn and not include_withdrawn:
            continue
        matcher = Matcher(entry.ranges, entry.versions)
        if matcher.affects(version):
            fixed = found.get(advisory.id, (advisory, []))[1] + matcher.fixed_in()
            found[advisory.id] = (advisory, fixed)
    return merge_aliases(list(found.values()))


def stored_matches(session: Session, release_ids: Iterable[int], *, include_withdrawn: bool = False,
                   with_records: bool = True) -> dict[int, list[AdvisoryView]]:
    """The stored matches of each release (alias-merged), by release id; releases without any are
    absent. ``with_records=False`` skips loading the whole OSV records (the JSON API needs none)."""
    ids = list(release_ids)
    if not ids:
        return {}
    query = select(VulnerabilityMatch.release_id, Release.project_id, Advisory)
    if not with_records:
        query = query.options(defer(Advisory.record))
    rows = session.execute(
        query.join(Advisory, Advisory.id == VulnerabilityMatch.advisory_id)
        .join(Release, Release.id == VulnerabilityMatch.release_id)
        .where(VulnerabilityMatch.release_id.in_(ids))
    ).all()
    if not include_withdrawn:
        rows = [row for row in rows if row[2].withdrawn is None]
    if not rows:
        return {}
    # fixed_in needs the entry for this project: one query for every advisory involved.
    advisory_ids = {row[2].id for row in rows}
    project_names = _project_names(session, {row[1] for row in rows})
    entries: dict[tuple[str, str], list[AdvisoryPackage]] = defaultdict(list)
    for entry in session.execute(
        select(AdvisoryPackage).where(AdvisoryPackage.advisory_id.in_(advisory_ids),
                                      AdvisoryPackage.normalized_name.in_(set(project_names.values())))
    ).scalars():
        entries[(entry.advisory_id, entry.normalized_name)].append(entry)
    by_release: dict[int, list[tuple[Advisory, list[str]]]] = defaultdict(list)
    for release_id, project_id, advisory in rows:
        fixed: list[str] = []
        for entry in entries.get((advisory.id, project_names[project_id]), []):
            fixed += Matcher(entry.ranges, entry.versions).fixed_in()
        by_release[release_id].append((advisory, fixed))
    return {release_id: merge_aliases(pairs, with_records=with_records) for release_id, pairs in by_release.items()}


def _project_names(session: Session, project_ids: set[int]) -> dict[int, str]:
    from bastion.packaging.models import Project

    return dict(session.execute(
        select(Project.id, Project.normalized_name).where(Project.id.in_(project_ids))
    ).all())


def project_matches(session: Session, project_id: int, *, include_withdrawn: bool = False) -> dict[int, list[AdvisoryView]]:
    """Stored matches of every release of a project, by release id."""
    release_ids = session.execute(select(Release.id).where(Release.project_id == project_id)).scalars().all()
    return stored_matches(session, release_ids, include_withdrawn=include_withdrawn)
