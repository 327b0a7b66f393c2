"""An OSV-compatible query API (https://google.github.io/osv.dev/post-v1-query/), so that
``pip-audit -s osv --osv-url <index>/osv/v1/query`` and other OSV clients audit against this index.

- ``POST /osv/v1/query``: ``{"package": {"name": ..., "ecosystem": "PyPI"}, "version": ...}`` (or
  ``"package": {"purl": "pkg:pypi/name@version"}``) answers ``{"vulns": [whole OSV records]}``,
  or ``{}`` when nothing affects the version (osv.dev's answer, which pip-audit reads as clean).
  Without ``version``: every advisory naming the package.
- ``POST /osv/v1/querybatch``: ``{"queries": [...]}`` answers ``{"results": [{"vulns": [{"id",
  "modified"}]}, ...]}`` in query order (an empty ``{}`` for a clean query, as osv.dev does).

Each record is served as imported (osv.dev does not merge aliases either: a PYSEC and a GHSA
record of one CVE are two entries; pip-audit merges them). Withdrawn advisories are left out. The
advisory data is evaluated directly (the same :class:`~bastion.advisories.match.Matcher` as the
stored matches), so versions this index does not hold are answered too.

What osv.dev has and this API refuses: ``commit`` queries (400: this index matches PyPI versions,
not git history). Pagination: never needed (every answer is whole), so no ``next_page_token`` is
sent and a ``page_token`` is ignored. Public data: no authentication, like osv.dev; bodies are
capped (64 KiB per query, 2 MiB per batch, at most 1,000 queries, osv.dev's own batch limit).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from packageurl import PackageURL
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from packaging.utils import canonicalize_name
from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.advisories.match import Matcher
from bastion.advisories.models import Advisory, AdvisoryPackage
from bastion.advisories.osv import ECOSYSTEM
from bastion.errors import ServiceError
from bastion.http import REASON_HEADER, bastion_of, read_capped, reason_phrase

router = APIRouter()

MAX_BATCH_QUERIES = 1000
"""osv.dev's own limit on a querybatch."""
MAX_QUERY_BYTES = 64 * 1024
MAX_BATCH_BYTES = 2 * 1024 * 1024
MAX_NAME_LENGTH = 200
MAX_VERSION_LENGTH = 200
_IN_CHUNK = 500  # names per IN (...) clause: far below every backend's parameter limit


class QueryError(ServiceError):
    """A malformed OSV query; the message names the field and how to fix it."""

    status = 400


@dataclass(frozen=True)
class OsvQuery:
    """One parsed query."""

    name: str | None
    """PEP 503 normalized; None: a package of another ecosystem (answered empty)."""
    version: str | None
    """None: every advisory naming the package."""


def _field_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _text_field(container: dict[str, Any], key: str, where: str, limit: int) -> str | None:
    value = container.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise QueryError(f"{where}{key} must be a string, not {_field_type(value)}.")
    if len(value) > limit:
        raise QueryError(f"{where}{key} is longer than {limit} characters.")
    return value


def _parse_purl(purl: str, where: str) -> tuple[str | None, str | None]:
    """(name, version) of a ``pkg:pypi/name@version`` package URL (read with packageurl-python);
    name None for another type."""
    try:
        parsed = PackageURL.from_string(purl.strip())
    except ValueError as exc:
        raise QueryError(f"{where}package.purl is not a package URL: {purl!r} ({exc}; "
                         "expected pkg:pypi/NAME or pkg:pypi/NAME@VERSION).") from None
    if parsed.type != "pypi":
        return None, None
    return parsed.name, parsed.version


def parse_query(data: Any, where: str = "") -> OsvQuery:
    """Validate one query object (``where``: its place in a batch, for the messages)."""
    if not isinstance(data, dict):
        raise QueryError(f"{where or 'the body'} must be a JSON object like "
                         '{"package": {"name": "NAME", "ecosystem": "PyPI"}, "version": "1.0"}, '
                         f"not {_field_type(data)}.")
    if data.get("commit") is not None:
        raise QueryError(f"{where}commit: queries by commit are not supported: this index matches PyPI versions, "
                         'not git history. Query by package and version: {"package": {"name": "NAME", '
                         '"ecosystem": "PyPI"}, "version": "1.0"}.')
    version = _text_field(data, "version", where, MAX_VERSION_LENGTH)
    _text_field(data, "page_token", where, 10_000)  # never issued; accepted and ignored
    package = data.get("package")
    if package is None:
        raise QueryError(f'{where}package is missing: send {{"package": {{"name": "NAME", "ecosystem": "PyPI"}}, '
                         '"version": "1.0"}.')
    if not isinstance(package, dict):
        raise QueryError(f"{where}package must be an object with name and ecosystem (or purl), "
                         f"not {_field_type(package)}.")
    inner = f"{where}package."
    name = _text_field(package, "name", inner, MAX_NAME_LENGTH)
    ecosystem = _text_field(package, "ecosystem", inner, 100)
    purl = _text_field(package, "purl", inner, MAX_NAME_LENGTH + MAX_VERSION_LENGTH + 100)
    if purl is not None:
        if name is not None or ecosystem is not None:
            raise QueryError(f"{inner}purl cannot be combined with {inner}name or {inner}ecosystem: send one or the other.")
        name, purl_version = _parse_purl(purl, where)
        if purl_version is not None:
            if version is not None:
                raise QueryError(f"{where}version is given twice: in version and in package.purl; send it once.")
            version = purl_version
        if name is None:
            return OsvQuery(name=None, version=version)
    elif name is None or not name.strip():
        raise QueryError(f"{inner}name is missing: name the package (and set ecosystem to \"PyPI\"), "
                         "or send package.purl (pkg:pypi/NAME@VERSION).")
    elif ecosystem is not None and ecosystem.split(":", 1)[0] != ECOSYSTEM:
        return OsvQuery(name=None, version=version)  # another ecosystem: this index holds none of it
    if version is not None and not version.strip():
        raise QueryError(f"{where}version is empty: give the version, or leave the field out for every advisory "
                         "naming the package.")
    return OsvQuery(name=canonicalize_name(name.strip()), version=version.strip() if version else None)


def parse_batch(data: Any) -> list[OsvQuery]:
    if not isinstance(data, dict):
        raise QueryError(f'The body must be a JSON object {{"queries": [...]}}, not {_field_type(data)}.')
    queries = data.get("queries")
    if queries is None:
        raise QueryError('queries is missing: send {"queries": [{"package": {"name": "NAME", '
                         '"ecosystem": "PyPI"}, "version": "1.0"}, ...]}.')
    if not isinstance(queries, list):
        raise QueryError(f"queries must be a list, not {_field_type(queries)}.")
    if len(queries) > MAX_BATCH_QUERIES:
        raise QueryError(f"Too many queries: {len(queries)}; a batch holds at most {MAX_BATCH_QUERIES}. "
                         "Split it into several requests.")
    return [parse_query(item, f"queries[{i}].") for i, item in enumerate(queries)]


def affecting_many(session: Session, queries: Sequence[OsvQuery]) -> list[list[Advisory]]:
    """For each query, the non-withdrawn advisories affecting it (by id), in one read of the
    advisory data for all the names asked about."""
    names = sorted({q.name for q in queries if q.name is not None})
    entries: dict[str, list[tuple[Advisory, Matcher]]] = {}
    for start in range(0, len(names), _IN_CHUNK):
        rows = session.execute(
            select(Advisory, AdvisoryPackage).join(AdvisoryPackage, AdvisoryPackage.advisory_id == Advisory.id)
            .where(AdvisoryPackage.normalized_name.in_(names[start:start + _IN_CHUNK]),
                   Advisory.withdrawn.is_(None))
        ).all()
        for advisory, entry in rows:
            entries.setdefault(entry.normalized_name, []).append((advisory, Matcher(entry.ranges, entry.versions)))
    answers = []
    for query in queries:
        found: dict[str, Advisory] = {}
        for advisory, matcher in entries.get(query.name or "", []) if query.name else []:
            if query.version is None or matcher.affects(query.version):
                found[advisory.id] = advisory
        answers.append(sorted(found.values(), key=lambda a: a.id))
    return answers


def modified_text(advisory: Advisory) -> str:
    """The record's ``modified`` as written (RFC 3339)."""
    written = advisory.record.get("modified") if isinstance(advisory.record, dict) else None
    if isinstance(written, str):
        return written
    return advisory.modified.isoformat().replace("+00:00", "Z")


def answer_query(session: Session, query: OsvQuery) -> dict[str, Any]:
    (found,) = affecting_many(session, [query])
    return {"vulns": [a.record for a in found]} if found else {}


def answer_batch(session: Session, queries: Sequence[OsvQuery]) -> dict[str, Any]:
    results = [{"vulns": [{"id": a.id, "modified": modified_text(a)} for a in found]} if found else {}
               for found in affecting_many(session, queries)]
    return {"results": results}


async def _json_body(request: Request, limit: int) -> Any:
    def too_large(declared: int | None) -> QueryError:
        size = f"{declared} bytes; the limit is {limit} bytes" if declared is not None else f"over {limit} bytes"
        return QueryError(f"Request body too large: {size}. Split the queries into several requests.", status=413)

    body = await read_capped(request, limit, too_large)
    if not body.strip():
        raise QueryError("The request body is empty: send a JSON object (see https://google.github.io/osv.dev/"
                         "post-v1-query/).")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise QueryError(f"The request body is not valid JSON: {exc}.") from None
    except RecursionError:
        raise QueryError("The request body is nested too deeply: a query is a JSON object a few levels deep "
                         "(see https://google.github.io/osv.dev/post-v1-query/).") from None


def _error(exc: ServiceError) -> Response:
    # osv.dev answers errors as {"code": ..., "message": ...}; "error" is this index's own key.
    body = {"code": 3 if exc.status == 400 else exc.status, "message": exc.message, "error": exc.message}
    return JSONResponse(body, status_code=exc.status, headers={REASON_HEADER: reason_phrase(exc.message)})


@router.post("/osv/v1/query", summary="OSV query: the advisories affecting one package version",
             responses={400: {"description": "malformed query; the message names the field"},
                        413: {"description": "body over 64 KiB"}})
async def osv_query(request: Request) -> Response:
    """osv.dev's ``/v1/query`` for the PyPI ecosystem: ``{"vulns": [OSV records]}``, ``{}`` if none."""
    bastion = bastion_of(request)
    try:
        query = parse_query(await _json_body(request, MAX_QUERY_BYTES))
    except ServiceError as exc:
        return _error(exc)

    def run() -> dict[str, Any]:
        with bastion.db.read() as session:
            return answer_query(session, query)

    return JSONResponse(await run_in_threadpool(run))


@router.post("/osv/v1/querybatch", summary="OSV batch query: advisory ids for up to 1,000 package versions",
             responses={400: {"description": "malformed query or over 1,000 queries"},
                        413: {"description": "body over 2 MiB"}})
async def osv_querybatch(request: Request) -> Response:
    """osv.dev's ``/v1/querybatch``: ``{"results": [{"vulns": [{"id", "modified"}]}]}`` in query order."""
    bastion = bastion_of(request)
    try:
        queries = parse_batch(await _json_body(request, MAX_BATCH_BYTES))
    except ServiceError as exc:
        return _error(exc)

    def run() -> dict[str, Any]:
        with bastion.db.read() as session:
            return answer_batch(session, queries)

    return JSONResponse(await run_in_threadpool(run))
