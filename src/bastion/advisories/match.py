"""Is a version affected? OSV ranges evaluated with PEP 440 (``packaging.version``).

The rules (OSV schema, "Evaluation"):

- affected = the version is in the entry's ``versions`` list OR inside any ECOSYSTEM/SEMVER range;
- a range's events are sorted by version before they are walked (files list them out of order);
- ``introduced: "0"`` is below every version; ``fixed`` is exclusive (the fixed version is not
  affected), ``last_affected`` inclusive; ``limit`` caps the range (versions at or above it are
  outside it; ``"*"`` is no cap);
- GIT ranges need a commit graph: kept in the record, never used here.

Version strings that are not PEP 440 (``0.2.0-n653``, dates): a listed one matches only the same
text; a range event with one is ignored (see :func:`unparsed_events`), so an unparseable ``fixed``
leaves the range open: the conservative side for a security check.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from packaging.version import InvalidVersion, Version

_ORDER = {"introduced": 0, "last_affected": 1, "fixed": 2, "limit": 3}


@lru_cache(maxsize=65536)
def parse_version(text: str) -> Version | None:
    """The PEP 440 version, or None when the text is not one."""
    try:
        return Version(text)
    except InvalidVersion:
        return None


@dataclass(frozen=True)
class _Range:
    events: tuple[tuple[Version | None, int, str], ...]
    """(version, order, kind) sorted; None version: introduced "0" (below everything)."""
    limits: tuple[Version, ...]
    fixed: tuple[str, ...]
    """The ``fixed`` versions as written (PEP 440 ones), ascending."""

    def contains(self, version: Version) -> bool:
        if self.limits and not any(version < cap for cap in self.limits):
            return False
        inside = False
        for at, _order, kind in self.events:
            if kind == "introduced":
                if at is None or version >= at:
                    inside = True
            elif kind == "fixed":
                if at is not None and version >= at:
                    inside = False
            elif kind == "last_affected":
                if at is not None and version > at:
                    inside = False
        return inside


def _compile_range(events: Iterable[dict[str, str]]) -> _Range:
    walk: list[tuple[Version | None, int, str]] = []
    limits: list[Version] = []
    fixed: list[tuple[Version, str]] = []
    for event in events:
        ((kind, text),) = event.items()
        if kind == "limit":
            if text != "*" and (cap := parse_version(text)) is not None:
                limits.append(cap)
            continue
        if kind == "introduced" and text == "0":
            walk.append((None, 0, kind))
            continue
        at = parse_version(text)
        if at is None:
            continue  # not PEP 440: ignored (see the module docstring)
        walk.append((at, _ORDER[kind], kind))
        if kind == "fixed":
            fixed.append((at, text))
    walk.sort(key=lambda e: (e[0] is not None, e[0] or Version("0"), e[1]))
    return _Range(events=tuple(walk), limits=tuple(limits), fixed=tuple(t for _, t in sorted(fixed)))


class Matcher:
    """One ``affected`` entry compiled for fast, repeated checks."""

    __slots__ = ("listed_text", "listed", "ranges")

    def __init__(self, ranges: Sequence[dict[str, Any]], versions: Sequence[str]) -> None:
        self.listed_text = frozenset(versions)
        self.listed = frozenset(v for v in (parse_version(t) for t in versions) if v is not None)
        self.ranges = tuple(_compile_range(r["events"]) for r in ranges if r.get("type") in ("ECOSYSTEM", "SEMVER"))

    def affects(self, version: str | Version) -> bool:
        """Whether ``version`` (text or parsed) is affected."""
        if isinstance(version, str):
            if version in self.listed_text:
                return True
            parsed = parse_version(version)
            if parsed is None:
                return False
        else:
            parsed = version
        if parsed in self.listed:
            return True
        return any(r.contains(parsed) for r in self.ranges)

    def fixed_in(self) -> list[str]:
        """The ``fixed`` versions of every range, ascending (PyPI's ``fixed_in``)."""
        found = {text: parse_version(text) for r in self.ranges for text in r.fixed}
        return sorted(found, key=lambda t: found[t] or Version("0"))

    def first_fix_after(self, version: str) -> str | None:
        """The lowest ``fixed`` version above ``version`` that is not itself affected, if any."""
        parsed = parse_version(version)
        for text in self.fixed_in():
            at = parse_version(text)
            if at is not None and (parsed is None or at > parsed) and not self.affects(at):
                return text
        return None


def is_affected(version: str, ranges: Sequence[dict[str, Any]], versions: Sequence[str]) -> bool:
    """One-off check (compile a :class:`Matcher` to check many versions)."""
    return Matcher(ranges, versions).affects(version)


def unparsed_events(ranges: Sequence[dict[str, Any]]) -> list[str]:
    """The ECOSYSTEM/SEMVER event versions that are not PEP 440 (ignored when matching)."""
    found = []
    for r in ranges:
        if r.get("type") not in ("ECOSYSTEM", "SEMVER"):
            continue
        for event in r["events"]:
            ((kind, text),) = event.items()
            if (kind == "introduced" and text == "0") or (kind == "limit" and text == "*"):
                continue
            if parse_version(text) is None:
                found.append(f"{kind}: {text}")
    return found
