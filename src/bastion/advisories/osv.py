"""Read OSV records (https://ossf.github.io/osv-schema/) as the PyPA advisory database and
osv.dev's exports write them, and validate what the index relies on.

A record that cannot be used raises :class:`RecordError` with a reason a person can act on; the
importer reports it with its file and goes on.

YAML traps handled here: the PyPA files leave timestamps and some versions unquoted, and a
standard YAML loader turns ``modified: 2023-11-07T20:24:23Z`` into a datetime and ``- 1.10`` into
the float 1.1. The loader below resolves no timestamps, integers or floats: every scalar stays the
text that was written (null and booleans aside).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import yaml
from packaging.utils import canonicalize_name

ECOSYSTEM = "PyPI"
RANGE_TYPES = frozenset({"ECOSYSTEM", "SEMVER", "GIT"})
"""Range types of the OSV schema; ECOSYSTEM and SEMVER are matched with PEP 440, GIT is kept only."""
EVENT_KINDS = frozenset({"introduced", "fixed", "last_affected", "limit"})


class RecordError(ValueError):
    """This record cannot be imported; the message says why."""


class _TextLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """SafeLoader (libyaml's parser when present: ten times faster) without the int, float and
    timestamp resolvers: such scalars stay strings."""


_TextLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()
}


MAX_DEPTH = 64
"""Levels of nesting a record may have (osv.dev's records have under ten)."""
MAX_NODES = 1_000_000
"""Values (mappings, lists, scalars) a record may expand to: YAML anchors and aliases can make a
few hundred bytes expand exponentially (a "billion laughs")."""
TOO_DEEP = f"nested too deeply (over {MAX_DEPTH} levels): an OSV record is a few levels deep"


def check_shape(value: Any) -> Any:
    """``value`` when it is at most MAX_DEPTH levels deep and MAX_NODES values large (counted
    without recursion, shared YAML aliases counted each time they are used); RecordError if not."""
    stack = [(value, 1)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise RecordError(f"the record expands to more than {MAX_NODES:,} values (YAML anchors and aliases "
                              "repeated?): an OSV record is far smaller; fix or drop the file")
        if isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                raise RecordError(TOO_DEEP)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return value


def load_yaml(text: str | bytes) -> Any:
    """Parse YAML keeping every number and timestamp as its text; RecordError on bad YAML or a
    record too deep or too large (see :func:`check_shape`)."""
    try:
        data = yaml.load(text, Loader=_TextLoader)  # noqa: S506  (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise RecordError(f"not valid YAML: {_one_line(str(exc))}") from None
    except RecursionError:
        raise RecordError(TOO_DEEP) from None
    return check_shape(data)


def load_json(text: str | bytes) -> Any:
    """Parse JSON; RecordError on bad JSON or a record too deep or too large."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise RecordError(TOO_DEEP) from None
    return check_shape(data)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def to_json_types(value: Any) -> Any:
    """The value with datetimes and dates as RFC 3339 text and tuples as lists (JSON-storable)."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): to_json_types(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_types(v) for v in value]
    return value


def parse_timestamp(value: Any, field_name: str) -> datetime:
    """An RFC 3339 timestamp (text or an already-parsed datetime) as an aware UTC datetime."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    if not isinstance(value, str) or not value.strip():
        raise RecordError(f"'{field_name}' must be an RFC 3339 timestamp, not {value!r}")
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise RecordError(f"'{field_name}' is not an RFC 3339 timestamp: {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class AffectedEntry:
    """One ``affected`` entry of a PyPI package."""

    name: str
    """PEP 503 normalized."""
    ranges: list[dict[str, Any]]
    """As in the record, JSON-typed: [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, ...]}]."""
    versions: list[str]


@dataclass(frozen=True)
class OsvRecord:
    id: str
    modified: datetime
    published: datetime | None
    withdrawn: datetime | None
    summary: str | None
    details: str
    aliases: list[str]
    affected: list[AffectedEntry]
    """Only the PyPI entries (a record may name other ecosystems too)."""
    record: dict[str, Any] = field(repr=False)
    """The whole record, JSON-typed."""


def _text(value: Any, field_name: str, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise RecordError(f"'{field_name}' is missing")
        return None
    if isinstance(value, (datetime, date)):
        return to_json_types(value)
    if not isinstance(value, str):
        raise RecordError(f"'{field_name}' must be text, not {type(value).__name__}")
    return value


def _version_text(value: Any, where: str) -> str:
    if isinstance(value, (datetime, date)):  # an unquoted date loaded by another YAML reader
        return to_json_types(value)
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        raise RecordError(f"{where}: a version must be text, not {value!r}")
    return str(value)


def _ranges(raw: Any, where: str) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise RecordError(f"{where}.ranges must be a list")
    ranges = []
    for i, item in enumerate(raw):
        here = f"{where}.ranges[{i}]"
        if not isinstance(item, dict):
            raise RecordError(f"{here} must be a mapping")
        kind = item.get("type")
        if kind not in RANGE_TYPES:
            raise RecordError(f"{here}: unknown range type {kind!r} (the OSV schema has ECOSYSTEM, SEMVER and GIT)")
        events = item.get("events")
        if not isinstance(events, list) or not events:
            raise RecordError(f"{here}.events must be a non-empty list")
        clean_events = []
        for j, event in enumerate(events):
            if not isinstance(event, dict) or len(event) != 1:
                raise RecordError(f"{here}.events[{j}] must be a mapping with exactly one of "
                                  f"{', '.join(sorted(EVENT_KINDS))}")
            ((key, value),) = event.items()
            if key not in EVENT_KINDS:
                raise RecordError(f"{here}.events[{j}]: unknown event {key!r} "
                                  f"(expected one of {', '.join(sorted(EVENT_KINDS))})")
            clean_events.append({key: _version_text(value, f"{here}.events[{j}]")})
        if not any("introduced" in e for e in clean_events):
            raise RecordError(f"{here}: a range needs an 'introduced' event")
        clean = {k: to_json_types(v) for k, v in item.items() if k != "events"}
        clean["events"] = clean_events
        ranges.append(clean)
    return ranges


def parse_record(data: Any) -> OsvRecord:
    """Validate a loaded record (YAML or JSON) and return what the index keeps of it."""
    if not isinstance(data, dict):
        raise RecordError(f"an OSV record must be a mapping, not {type(data).__name__}")
    ident = _text(data.get("id"), "id", required=True)
    assert ident is not None
    ident = ident.strip()
    if not ident or any(c.isspace() or c == "/" or not c.isprintable() for c in ident) or len(ident) > 100:
        raise RecordError(f"'id' is not a usable advisory id: {data.get('id')!r}")
    if "modified" not in data:
        raise RecordError("'modified' is missing (it decides whether a re-import replaces the stored record)")
    modified = parse_timestamp(data["modified"], "modified")
    published = parse_timestamp(data["published"], "published") if data.get("published") is not None else None
    withdrawn = parse_timestamp(data["withdrawn"], "withdrawn") if data.get("withdrawn") is not None else None
    aliases_raw = data.get("aliases") or []
    if not isinstance(aliases_raw, list) or not all(isinstance(a, str) for a in aliases_raw):
        raise RecordError("'aliases' must be a list of ids")
    affected_raw = data.get("affected") or []
    if not isinstance(affected_raw, list):
        raise RecordError("'affected' must be a list")
    affected = []
    for i, entry in enumerate(affected_raw):
        where = f"affected[{i}]"
        if not isinstance(entry, dict):
            raise RecordError(f"{where} must be a mapping")
        package = entry.get("package")
        if package is None:
            continue  # a GIT-only entry with no package: nothing to match by name
        if not isinstance(package, dict):
            raise RecordError(f"{where}.package must be a mapping")
        ecosystem = package.get("ecosystem")
        name = package.get("name")
        if not isinstance(ecosystem, str) or not isinstance(name, str) or not name.strip():
            raise RecordError(f"{where}.package needs an 'ecosystem' and a 'name'")
        ranges = _ranges(entry.get("ranges"), where)  # validated for every ecosystem
        if ecosystem.split(":", 1)[0] != ECOSYSTEM:
            continue
        versions_raw = entry.get("versions") or []
        if not isinstance(versions_raw, list):
            raise RecordError(f"{where}.versions must be a list")
        versions = [_version_text(v, f"{where}.versions") for v in versions_raw]
        affected.append(AffectedEntry(name=canonicalize_name(name), ranges=ranges, versions=versions))
    record = to_json_types(data)
    return OsvRecord(
        id=ident, modified=modified, published=published, withdrawn=withdrawn,
        summary=_text(data.get("summary"), "summary"), details=_text(data.get("details"), "details") or "",
        aliases=list(aliases_raw), affected=affected, record=record,
    )
