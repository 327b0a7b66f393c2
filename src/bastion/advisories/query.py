"""Reading advisories and stored matches: what every consumer (JSON API, OSV API, audit,
security page, applications) asks, in one place. Alias merging and the view consumers show are in
``views.py`` (re-exported here).

Withdrawn advisories keep their matches (the JSON API lists them with ``withdrawn`` set, as PyPI
does); every "is it vulnerable" question leaves them out (``include_withdrawn=False``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from packaging.utils import canonicalize_name
from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from bastion.advisories.match import Matcher
from bastion.advisories.models import Advisory, AdvisoryPackage, VulnerabilityMatch
from bastion.advisories.views import OSV_LINK, AdvisoryView, group_overlapping, merge_aliases
from bastion.packaging.models import Release

__all__ = ["OSV_LINK", "AdvisoryView", "advisories_affecting", "entries_for", "group_overlapping", "merge_aliases",
           "project_matches", "stored_matches"]


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
