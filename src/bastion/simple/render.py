"""Render the read API's pages once per change: simple pages (HTML and JSON) and the JSON API.

Simple pages link files relative to themselves (``../../packages/...``), so their bytes do not
depend on the host that serves them; the same bytes can be TUF targets. JSON API pages carry
absolute URLs in PyPI's shape, written with the placeholder ``BASE_PLACEHOLDER`` that the server
replaces with its public base URL.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from typing import Any, Protocol, TypeVar, cast

from packaging.version import InvalidVersion, Version
from sqlalchemy import ColumnElement, Table, bindparam, delete, select
from sqlalchemy.orm import Session

from bastion.db import upsert, utcnow
from bastion.simple.accept import SIMPLE_JSON
from bastion.advisories.models import VulnerabilityMatch
from bastion.packaging.models import File, Project, Release
from bastion.simple.models import RenderedPage

API_VERSION = "1.4"  # 1.1 (PEP 700) plus PEP 792 project status markers
HTML_TYPE = "text/html; charset=utf-8"
JSON_TYPE = "application/json"
BASE_PLACEHOLDER = "@@BASTION_BASE_URL@@"


@dataclass(frozen=True)
class Page:
    """A rendered page ready to store."""

    key: str
    """Storage key, e.g. ``simple/foo/index.html``."""
    content_type: str
    """Media type the stored bytes are."""
    body: bytes
    """The bytes served."""


@dataclass
class FileView:
    """The columns of a file that pages show."""

    filename: str
    path: str
    packagetype: str
    python_version: str
    size: int
    md5_digest: str
    sha256_digest: str
    blake2_256_digest: str
    requires_python: str | None
    metadata_sha256: str | None
    upload_time: datetime
    yanked: bool
    yanked_reason: str | None


@dataclass
class ReleaseView:
    """The columns of a release that pages show, with its files."""

    id: int
    version: str
    yanked: bool
    yanked_reason: str | None
    requires_python: str | None
    core_metadata: dict[str, Any] | None = None
    files: list[FileView] = field(default_factory=list)
    vulnerabilities: list[dict[str, Any]] = field(default_factory=list)
    """PyPI's JSON API entries of the advisories stored as matching this release (loaded for the
    releases whose JSON pages are rendered)."""


@dataclass
class ProjectView:
    """A project as its pages need it: plain rows read with column queries, not ORM objects."""

    id: int
    name: str
    normalized_name: str
    last_serial: int
    releases: list[ReleaseView] = field(default_factory=list)
    status: str = "active"
    """PEP 792 status: active, archived, deprecated or quarantined (no files offered)."""
    status_reason: str | None = None

    @property
    def quarantined(self) -> bool:
        return self.status == "quarantined"


def simple_index_key(fmt: str) -> str:
    return f"simple/index.{fmt}"


def simple_detail_key(name: str, fmt: str) -> str:
    return f"simple/{name}/index.{fmt}"


def json_project_key(name: str) -> str:
    return f"pypi/{name}/json"


def json_release_key(name: str, version: str) -> str:
    return f"pypi/{name}/{version}/json"


def version_sort_key(text: str) -> tuple[int, Version | str]:
    try:
        return (1, Version(text))
    except InvalidVersion:
        return (0, text)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _file_yank(file: FileView, release: ReleaseView) -> tuple[bool, str | None]:
    if release.yanked:
        return True, release.yanked_reason
    if file.yanked:
        return True, file.yanked_reason
    return False, None


def _ordered_files(project: ProjectView) -> list[tuple[ReleaseView, FileView]]:
    pairs = [(release, file) for release in project.releases for file in release.files]
    pairs.sort(key=lambda pair: (version_sort_key(pair[0].version), pair[1].filename))
    return pairs


def _dumps(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def render_simple_detail(project: ProjectView) -> list[Page]:
    """PEP 503 HTML and PEP 691 JSON for one project (PEP 592, 658/714, 700)."""
    pairs = _ordered_files(project)
    versions = sorted({release.version for release in project.releases}, key=version_sort_key)
    links = []
    files_json = []
    for release, file in pairs:
        url = f"../../{file.path}"
        yanked, reason = _file_yank(file, release)
        attrs = [f'href="{escape(url)}#sha256={file.sha256_digest}"']
        if file.requires_python:
            attrs.append(f'data-requires-python="{escape(file.requires_python)}"')
        if file.metadata_sha256:
            attrs.append(f'data-dist-info-metadata="sha256={file.metadata_sha256}"')
            attrs.append(f'data-core-metadata="sha256={file.metadata_sha256}"')
        if yanked:
            attrs.append(f'data-yanked="{escape(reason or "")}"')
        links.append(f"    <a {' '.join(attrs)}>{escape(file.filename)}</a><br />\n")
        entry: dict[str, Any] = {
            "filename": file.filename,
            "url": url,
            "hashes": {"sha256": file.sha256_digest},
            "requires-python": file.requires_python,
            "core-metadata": {"sha256": file.metadata_sha256} if file.metadata_sha256 else False,
            "dist-info-metadata": {"sha256": file.metadata_sha256} if file.metadata_sha256 else False,
            "yanked": (reason or True) if yanked else False,
            "size": file.size,
            "upload-time": _iso(file.upload_time),
        }
        files_json.append(entry)
    name = escape(project.normalized_name)
    status_meta = ""
    if project.status != "active":  # PEP 792
        status_meta = f'    <meta name="pypi:project-status" content="{escape(project.status)}">\n'
        if project.status_reason:
            status_meta += f'    <meta name="pypi:project-status-reason" content="{escape(project.status_reason)}">\n'
    html = (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        f'    <meta name="pypi:repository-version" content="{API_VERSION}">\n' + status_meta +
        f"    <title>Links for {name}</title>\n  </head>\n  <body>\n"
        f"    <h1>Links for {name}</h1>\n" + "".join(links) + "  </body>\n</html>\n"
    )
    document: dict[str, Any] = {
        "meta": {"api-version": API_VERSION, "_last-serial": project.last_serial},
        "name": project.normalized_name,
        "versions": versions,
        "files": files_json,
    }
    if project.status != "active":
        document["project-status"] = {"status": project.status}
        if project.status_reason:
            document["project-status"]["reason"] = project.status_reason
    return [
        Page(simple_detail_key(project.normalized_name, "html"), HTML_TYPE, html.encode()),
        Page(simple_detail_key(project.normalized_name, "json"), SIMPLE_JSON, _dumps(document)),
    ]


def render_simple_index(session: Session, serial: int) -> list[Page]:
    """The project list: quarantined projects are left out (their own page says why)."""
    names = list(session.execute(
        select(Project.normalized_name).where(Project.status != "quarantined").order_by(Project.normalized_name)
    ).scalars())
    return render_simple_index_of(names, serial)


def render_simple_index_of(names: list[str], serial: int) -> list[Page]:
    """The project list pages (HTML and JSON) for ``names``."""
    anchors = "".join(f'    <a href="{escape(n)}/">{escape(n)}</a>\n' for n in names)
    html = (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        f'    <meta name="pypi:repository-version" content="{API_VERSION}">\n'
        "    <title>Simple index</title>\n  </head>\n  <body>\n" + anchors + "  </body>\n</html>\n"
    )
    document = {
        "meta": {"api-version": API_VERSION, "_last-serial": serial},
        "projects": [{"name": n} for n in names],
    }
    return [
        Page(simple_index_key("html"), HTML_TYPE, html.encode()),
        Page(simple_index_key("json"), SIMPLE_JSON, _dumps(document)),
    ]


def _json_file(file: FileView, release: ReleaseView) -> dict[str, Any]:
    yanked, reason = _file_yank(file, release)
    return {
        "comment_text": "",
        "digests": {
            "blake2b_256": file.blake2_256_digest,
            "md5": file.md5_digest,
            "sha256": file.sha256_digest,
        },
        "downloads": -1,
        "filename": file.filename,
        "has_sig": False,
        "md5_digest": file.md5_digest,
        "packagetype": file.packagetype,
        "python_version": file.python_version,
        "requires_python": file.requires_python,
        "size": file.size,
        "upload_time": file.upload_time.strftime("%Y-%m-%dT%H:%M:%S"),
        "upload_time_iso_8601": _iso(file.upload_time),
        "url": f"{BASE_PLACEHOLDER}/{file.path}",
        "yanked": yanked,
        "yanked_reason": reason,
    }


def _joined(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):
        return ", ".join(value) if value else None
    return str(value)


def _info(project: ProjectView, release: ReleaseView) -> dict[str, Any]:
    meta = release.core_metadata or {}
    base = f"{BASE_PLACEHOLDER}/project/{project.normalized_name}"
    return {
        "author": meta.get("author"),
        "author_email": meta.get("author_email"),
        "bugtrack_url": None,
        "classifiers": meta.get("classifiers", []),
        "description": meta.get("description"),
        "description_content_type": meta.get("description_content_type"),
        "docs_url": None,
        "download_url": meta.get("download_url"),
        "downloads": {"last_day": -1, "last_month": -1, "last_week": -1},
        "dynamic": meta.get("dynamic"),
        "home_page": meta.get("home_page"),
        "keywords": _joined(meta.get("keywords")),
        "license": meta.get("license"),
        "license_expression": meta.get("license_expression"),
        "license_files": meta.get("license_files"),
        "maintainer": meta.get("maintainer"),
        "maintainer_email": meta.get("maintainer_email"),
        "name": project.name,
        "package_url": f"{base}/",
        "platform": _joined(meta.get("platforms")),
        "project_url": f"{base}/",
        "project_urls": meta.get("project_urls"),
        "provides_extra": meta.get("provides_extra"),
        "release_url": f"{base}/{release.version}/",
        "requires_dist": meta.get("requires_dist"),
        "requires_python": release.requires_python,
        "summary": meta.get("summary"),
        "version": release.version,
        "yanked": release.yanked,
        "yanked_reason": release.yanked_reason,
    }


class _Versioned(Protocol):
    version: str
    yanked: bool


_R = TypeVar("_R", bound=_Versioned)


def latest_release(project: ProjectView) -> ReleaseView | None:
    """PyPI's choice: the newest final non-yanked release, else the newest non-yanked, else the newest."""
    return latest_of(project.releases)


def latest_of(rows: Iterable[_R]) -> _R | None:
    """PyPI's choice among any rows with ``version`` and ``yanked`` (see :func:`latest_release`)."""
    releases = sorted(rows, key=lambda r: version_sort_key(r.version))
    for candidates in (
        [r for r in releases if not r.yanked and not Version(r.version).is_prerelease],
        [r for r in releases if not r.yanked],
        releases,
    ):
        if candidates:
            return candidates[-1]
    return None


def render_json_project(project: ProjectView) -> Page | None:
    latest = latest_release(project)
    if latest is None or project.quarantined:
        return None
    releases = {
        release.version: [_json_file(f, release) for f in release.files]
        for release in sorted(project.releases, key=lambda r: version_sort_key(r.version))
    }
    document = {
        "info": _info(project, latest),
        "last_serial": project.last_serial,
        "releases": releases,
        "urls": [_json_file(f, latest) for f in latest.files],
        "vulnerabilities": latest.vulnerabilities,
    }
    return Page(json_project_key(project.normalized_name), JSON_TYPE, _dumps(document))


def render_json_release(project: ProjectView, release: ReleaseView) -> Page:
    document = {
        "info": _info(project, release),
        "last_serial": project.last_serial,
        "urls": [_json_file(f, release) for f in release.files],
        "vulnerabilities": release.vulnerabilities,
    }
    return Page(json_release_key(project.normalized_name, release.version), JSON_TYPE, _dumps(document))


def etag_for(body: bytes) -> tuple[str, str]:
    digest = hashlib.sha256(body).hexdigest()
    return digest, f'"{digest[:32]}"'


def store_pages(session: Session, pages: list[Page], serial: int) -> None:
    """Insert or replace the pages in one statement (an upsert on both SQLite and PostgreSQL)."""
    if not pages:
        return
    now = utcnow()
    rows = []
    for page in pages:
        digest, etag = etag_for(page.body)
        rows.append({"key": page.key, "content_type": page.content_type, "body": page.body,
                     "sha256": digest, "etag": etag, "serial": serial, "updated": now})
    upsert(session, RenderedPage, rows, ["key"])
    _queue_for_signing(session, pages)


def _queue_for_signing(session: Session, pages: list[Page]) -> None:
    """Queue the projects whose simple pages changed for the next TUF snapshot, in this transaction."""
    from bastion.tuf.repository import INDEX_NAME, enqueue_changed

    names = set()
    for page in pages:
        parts = page.key.split("/")
        if parts[0] == "simple":
            names.add(parts[1] if len(parts) == 3 else INDEX_NAME)
    enqueue_changed(session, names)


_files = cast(Table, File.__table__)
_releases = cast(Table, Release.__table__)
_projects = cast(Table, Project.__table__)
_FILE_COLUMNS = (
    _files.c.release_id, _files.c.filename, _files.c.path, _files.c.packagetype, _files.c.python_version,
    _files.c.size, _files.c.md5_digest, _files.c.sha256_digest, _files.c.blake2_256_digest,
    _files.c.requires_python, _files.c.metadata_sha256, _files.c.upload_time, _files.c.yanked,
    _files.c.yanked_reason,
)
# Every upload renders its project: the statements are built once (Core, on the tables).
_PROJECT_ROW = select(_projects.c.id, _projects.c.name, _projects.c.normalized_name, _projects.c.last_serial,
                      _projects.c.status, _projects.c.status_reason).where(_projects.c.id == bindparam("project_id"))
_RELEASE_ROWS = select(_releases.c.id, _releases.c.version, _releases.c.yanked, _releases.c.yanked_reason,
                       _releases.c.requires_python).where(_releases.c.project_id == bindparam("project_id"))
_FILE_ROWS = (select(*_FILE_COLUMNS, _files.c.quarantined).where(_files.c.project_id == bindparam("project_id"))
              .order_by(_files.c.filename))
_CORE_METADATA = select(
    _releases.c.id, _releases.c.core_metadata,
    select(VulnerabilityMatch.release_id).where(VulnerabilityMatch.release_id == _releases.c.id).exists(),
).where(_releases.c.id.in_(bindparam("ids", expanding=True)))


def load_project_for_render(session: Session, project_id: int) -> ProjectView:
    """Everything the project's pages show, in three column queries (metadata loaded on demand)."""
    row = session.execute(_PROJECT_ROW, {"project_id": project_id}).one()
    project = ProjectView(id=row.id, name=row.name, normalized_name=row.normalized_name, last_serial=row.last_serial,
                          status=row.status, status_reason=row.status_reason)
    releases = {
        r.id: ReleaseView(id=r.id, version=r.version, yanked=r.yanked, yanked_reason=r.yanked_reason,
                          requires_python=r.requires_python)
        for r in session.execute(_RELEASE_ROWS, {"project_id": project_id})
    }
    held: set[int] = set()  # releases with a quarantined file
    if not project.quarantined:  # a quarantined project offers no files at all (PEP 792)
        for f in session.execute(_FILE_ROWS, {"project_id": project_id}):
            columns = dict(f._mapping)
            release_id = columns.pop("release_id")
            if columns.pop("quarantined"):
                held.add(release_id)
                continue
            releases[release_id].files.append(FileView(**columns))
    # A release whose every file is held for review is not shown until one is released.
    project.releases = [r for r in releases.values() if r.files or (r.id not in held and not project.quarantined)]
    return project


def _load_core_metadata(session: Session, releases: list[ReleaseView]) -> None:
    """Load what the JSON API shows beyond the columns: metadata and stored vulnerability matches
    (asked only for the releases that have any)."""
    from bastion.advisories.query import stored_matches

    missing = {r.id: r for r in releases if r.core_metadata is None}
    if missing:
        matched = []
        for release_id, metadata, has_matches in session.execute(_CORE_METADATA, {"ids": list(missing)}):
            missing[release_id].core_metadata = metadata
            if has_matches:
                matched.append(release_id)
        if matched:
            matches = stored_matches(session, matched, include_withdrawn=True, with_records=False)
            for release_id, views in matches.items():
                missing[release_id].vulnerabilities = [view.pypi_json() for view in views]


def refresh_project_pages(
    session: Session, project_id: int, *, versions: list[str] | None = None, index: bool = False
) -> None:
    """Re-render what one change touched: the project's pages, the named releases, the index."""
    session.flush()
    project = load_project_for_render(session, project_id)
    wanted = set(versions or [])
    touched = [release for release in project.releases if release.version in wanted]
    latest = latest_release(project)
    _load_core_metadata(session, touched + ([latest] if latest else []))
    pages = render_simple_detail(project)
    project_page = render_json_project(project)
    if project_page is not None:
        pages.append(project_page)
    if project.quarantined:
        delete_json_pages(session, project.normalized_name)
    else:
        if project_page is None:  # every release held for review
            delete_json_pages(session, project.normalized_name, versions=[])
        pages.extend(render_json_release(project, release) for release in touched)
        hidden = wanted - {release.version for release in project.releases}
        if hidden:
            delete_json_pages(session, project.normalized_name, versions=sorted(hidden), project_page=False)
    if index:
        pages.extend(render_simple_index(session, project.last_serial))
    store_pages(session, pages, project.last_serial)


def delete_json_pages(session: Session, normalized: str, *, versions: list[str] | None = None,
                      project_page: bool = True, simple: bool = False) -> None:
    """Remove stored JSON API pages of a project: the project page, and the pages of ``versions``
    (every release when None); with ``simple``, its simple pages too (a deleted project)."""
    keys = [json_project_key(normalized)] if project_page else []
    keys += [json_release_key(normalized, v) for v in versions or []]
    if simple:
        keys += [simple_detail_key(normalized, "html"), simple_detail_key(normalized, "json")]
    condition: ColumnElement[bool] = RenderedPage.key.in_(keys)
    if versions is None:
        condition = condition | RenderedPage.key.startswith(f"pypi/{normalized}/", autoescape=True)
    session.execute(delete(RenderedPage).where(condition))
