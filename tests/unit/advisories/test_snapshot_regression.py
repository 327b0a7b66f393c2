"""Regression over the whole shared snapshot of the PyPA advisory database (2,661 advisories).

- Every version listed in every advisory is affected, by the matcher and by the stored matches.
- A sample of versions outside every range (each range's ``fixed`` version, and versions below
  its first ``introduced``) is not affected, judged against an independent oracle: the ranges
  rewritten as explicit [start, end) intervals.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from packaging.version import InvalidVersion, Version
from sqlalchemy import select

from bastion.advisories.ingest import import_path
from bastion.advisories.match import Matcher
from bastion.advisories.models import VulnerabilityMatch
from bastion.advisories.osv import OsvRecord, load_yaml, parse_record
from bastion.db import utcnow
from bastion.packaging.models import Project, Release
from bastion.services import Bastion

# The shared snapshot lives beside the project on this machine (and in CI, which runs here), not in the repository.
SNAPSHOT = Path(os.environ.get("BASTION_ADVISORY_DB", "/work/shared/data/advisory-database"))


@pytest.fixture(scope="module")
def records() -> list[OsvRecord]:
    files = sorted((SNAPSHOT / "vulns").rglob("*.yaml"))
    assert len(files) == 2661, f"the shared snapshot changed: {len(files)} files"
    return [parse_record(load_yaml(path.read_bytes())) for path in files]


def _v(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _intervals(events: list[dict[str, str]]) -> list[tuple[Version | None, Version | None, bool]]:
    """The oracle: (start, end, end_inclusive) for each introduced and the next end event after it."""
    parsed = []
    for event in events:
        ((kind, text),) = event.items()
        at = None if (kind == "introduced" and text == "0") else _v(text)
        if at is None and not (kind == "introduced" and text == "0"):
            continue
        parsed.append((kind, at))
    parsed.sort(key=lambda e: (e[1] is not None, e[1] or Version("0"), ["introduced", "last_affected", "fixed"].index(e[0])))
    spans = []
    start: Version | None = None
    open_ = False
    for kind, at in parsed:
        if kind == "introduced" and not open_:
            start, open_ = at, True
        elif kind in ("fixed", "last_affected") and open_:
            spans.append((start, at, kind == "last_affected"))
            open_ = False
    if open_:
        spans.append((start, None, False))
    return spans


def _inside(version: Version, spans: list[tuple[Version | None, Version | None, bool]]) -> bool:
    for start, end, inclusive in spans:
        if start is not None and version < start:
            continue
        if end is None or version < end or (inclusive and version == end):
            return True
    return False


def test_every_listed_version_of_every_advisory_is_affected(records: list[OsvRecord]) -> None:
    checked = 0
    for record in records:
        for entry in record.affected:
            matcher = Matcher(entry.ranges, entry.versions)
            missed = [v for v in entry.versions if not matcher.affects(v)]
            assert not missed, f"{record.id}: listed versions not affected: {missed[:5]}"
            checked += len(entry.versions)
    assert checked > 140_000


def test_versions_outside_every_range_are_not_affected(records: list[OsvRecord]) -> None:
    rng = random.Random(6)
    outside: list[tuple[str, Matcher, str]] = []
    for record in records:
        for entry in record.affected:
            ranges = [r for r in entry.ranges if r["type"] == "ECOSYSTEM"]
            spans = [s for r in ranges for s in _intervals(r["events"])]
            listed = {v for v in (_v(t) for t in entry.versions) if v is not None}
            candidates = set()
            for r in ranges:
                for event in r["events"]:
                    ((kind, text),) = event.items()
                    at = _v(text)
                    if at is None:
                        continue
                    if kind == "fixed":
                        candidates.add(at)
                    elif kind == "introduced":
                        candidates.add(Version(f"{at.base_version}.dev0") if not at.is_devrelease else at)
                        if at.release[0] > 0:
                            candidates.add(Version(f"{at.release[0] - 1}!0") if at.epoch else Version("0.0.0.dev0"))
            for candidate in candidates:
                if candidate in listed or _inside(candidate, spans):
                    continue
                outside.append((record.id, Matcher(entry.ranges, entry.versions), str(candidate)))
    assert len(outside) > 1500
    sample = rng.sample(outside, 1500)
    wrong = [(ident, version) for ident, matcher, version in sample if matcher.affects(version)]
    assert not wrong, f"affected though outside every range: {wrong[:10]}"


def test_stored_matches_for_real_projects_equal_the_matcher(bastion: Bastion, records: list[OsvRecord],
                                                            tmp_path: Path) -> None:
    """Releases of 40 real advisory projects (each listed version and each fixed version), then
    the whole snapshot imported: the stored matches are exactly what the matcher says."""
    rng = random.Random(40)
    by_name: dict[str, list[OsvRecord]] = {}
    for record in records:
        for entry in record.affected:
            by_name.setdefault(entry.name, []).append(record)
    names = rng.sample(sorted(by_name), 40)
    expected: set[tuple[str, str, str]] = set()
    with bastion.db.write() as session:
        for name in names:
            versions: set[str] = set()
            for record in by_name[name]:
                for entry in record.affected:
                    if entry.name != name:
                        continue
                    versions |= {str(v) for v in (_v(t) for t in entry.versions) if v is not None}
                    versions |= {t for r in entry.ranges for e in r["events"] for k, t in e.items()
                                 if k == "fixed" and _v(t) is not None}
            project = Project(name=name, normalized_name=name, ultranormalized_name=f"u-{name}", created=utcnow())
            session.add(project)
            session.flush()
            canonical = {}
            for version in sorted(versions, key=Version):
                key = str(Version(version))
                if key in canonical:
                    continue
                canonical[key] = version
                session.add(Release(project_id=project.id, version=key, canonical_version=key, core_metadata={}))
            for record in by_name[name]:
                if record.withdrawn:
                    continue
                for entry in record.affected:
                    if entry.name == name:
                        matcher = Matcher(entry.ranges, entry.versions)
                        expected |= {(name, v, record.id) for v in canonical if matcher.affects(v)}
    summary = import_path(bastion, SNAPSHOT)
    assert (summary.added, summary.skipped, summary.withdrawn) == (2661, 0, 10)
    with bastion.db.read() as session:
        stored = set(session.execute(
            select(Project.normalized_name, Release.version, VulnerabilityMatch.advisory_id)
            .select_from(VulnerabilityMatch)
            .join(Release, Release.id == VulnerabilityMatch.release_id)
            .join(Project, Project.id == Release.project_id)
        ).all())
    withdrawn = {r.id for r in records if r.withdrawn}
    assert {row for row in stored if row[2] not in withdrawn} == expected
    assert len(expected) > 200
