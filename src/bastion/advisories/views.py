"""Advisories as consumers show them, and alias merging, without the database layer (the
``bastion audit`` client imports this and not SQLAlchemy).

Alias merging: a PYSEC and a GHSA record of the same CVE are two advisories that list each other
(or a shared CVE) in ``aliases``. :func:`merge_aliases` groups advisories whose ids and aliases
overlap and shows each group once, under one id (PYSEC first, as PyPI's own source, then GHSA,
then the smallest id), listing every other id as an alias.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from bastion.advisories.match import parse_version


class AdvisoryLike(Protocol):
    """What merging reads of an advisory: a stored row (models.Advisory) or :class:`AdvisoryFacts`."""

    id: str
    aliases: list[str]
    summary: str | None
    details: str
    published: datetime | None
    modified: datetime
    withdrawn: datetime | None
    record: dict[str, Any]


@dataclass
class AdvisoryFacts:
    """An advisory read from an OSV record rather than the database (the audit client)."""

    id: str
    aliases: list[str]
    summary: str | None
    details: str
    published: datetime | None
    modified: datetime
    withdrawn: datetime | None
    record: dict[str, Any]


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


def merge_aliases(advisories: Sequence[tuple[AdvisoryLike, list[str]]], *, with_records: bool = True) -> list[AdvisoryView]:
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
