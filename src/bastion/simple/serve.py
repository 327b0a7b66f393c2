"""The read hot path: simple pages, JSON API and files served as stored bytes.

A raw ASGI layer in front of the application: a GET is a parse of the path, a dictionary lookup
(falling back to one keyed database lookup on a miss) and a send. Every process watches the data
dir's change marker with one ``stat`` per request and drops its cache when another process (the
CLI, another worker) committed a change.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from packaging.utils import canonicalize_name, canonicalize_version
from packaging.version import InvalidVersion
from sqlalchemy import func, select

from bastion.changes import ChangeMarker
from bastion.packaging.models import File, JournalEntry, Project, Release
from bastion.packaging.names import is_valid_name
from bastion.services import Bastion
from bastion.simple.accept import HTML_V1, TEXT_HTML, negotiate
from bastion.simple.models import RenderedPage
from bastion.tuf.models import TufHead, TufMetadata, TufPageVersion
from bastion.simple.render import (
    BASE_PLACEHOLDER,
    SIMPLE_JSON,
    etag_for,
    json_project_key,
    json_release_key,
    simple_detail_key,
    render_simple_index_of,
    simple_index_key,
)

Scope = dict[str, Any]

RESPONSE_TYPES = {
    TEXT_HTML: ("html", b"text/html; charset=utf-8"),
    HTML_V1: ("html", HTML_V1.encode()),
    SIMPLE_JSON: ("json", SIMPLE_JSON.encode()),
}
NOT_ACCEPTABLE = (
    b"Not Acceptable: this index serves application/vnd.pypi.simple.v1+json, "
    b"application/vnd.pypi.simple.v1+html and text/html (PEP 691). Adjust the Accept header or ?format=.\n"
)
SIMPLE_CACHE_CONTROL = b"max-age=60, public"
# JSON API pages whose URLs were built from the request's Host header must not be shared by
# caches (a forged Host would otherwise poison them for everyone); set public_url to share them.
PRIVATE_CACHE_CONTROL = b"max-age=60, private"
FILE_CACHE_CONTROL = b"max-age=31536000, public, immutable"
FILE_TYPES = {
    ".whl": b"application/zip",
    ".zip": b"application/zip",
    ".tar.gz": b"application/gzip",
    ".metadata": b"text/plain; charset=utf-8",
}
TUF_PREFIX = "/tuf/metadata/"
TUF_CACHE_CONTROL = b"max-age=31536000, public, immutable"  # versioned names never change
TUF_HEAD_CACHE_CONTROL = b"no-cache"  # timestamp.json and root.json: always the newest
_TUF_NAME = re.compile(r"^(?:([1-9][0-9]{0,9})\.)?([a-z][a-z0-9-]{0,39})\.json$")
_PAGE_NAME = re.compile(r"^(?:([0-9a-f]{64})\.)?index\.(html|json)$")
_HASHED_NAME = re.compile(r"^([0-9a-f]{64})\.(.+)$")
PAGE_TYPES = {"html": b"text/html; charset=utf-8", "json": SIMPLE_JSON.encode()}
_HOST_OK = re.compile(r"^[A-Za-z0-9.\-:\[\]]{1,255}$")
_SEND_CHUNK = 4 * 1024 * 1024
GZIP_MIN_BYTES = 1024
JOURNAL_WINDOW = 100
MAX_VERSION_LENGTH = 100
MAX_TARGETED_EVICTIONS = 1000


@dataclass
class CachedPage:
    body: bytes
    etag: bytes
    content_type: str
    serial: int


@dataclass
class CachedFile:
    fs_path: str
    size: int
    etag: bytes
    content_type: bytes
    path: str
    """The file's own path (a consistent-snapshot name ``<sha256>.<filename>`` maps back to it)."""


class ByteBudgetCache:
    """An LRU dictionary bounded by the total size of the values' bodies."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self.items: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any) -> Any:
        value = self.items.get(key)
        if value is not None:
            self.items.move_to_end(key)
        return value

    def put(self, key: Any, value: Any, size: int) -> None:
        old = self.items.pop(key, None)
        if old is not None:
            self.used -= old[1]
        self.items[key] = (value, size)
        self.used += size
        while self.used > self.budget and self.items:
            _, (_, dropped) = self.items.popitem(last=False)
            self.used -= dropped

    def pop(self, key: Any) -> None:
        old = self.items.pop(key, None)
        if old is not None:
            self.used -= old[1]

    def clear(self) -> None:
        self.items.clear()
        self.used = 0


_MISSING = object()

# A file is downloadable unless it, or its whole project, is held for review (PEP 792 quarantine).
_downloadable = (
    select(File.size, File.sha256_digest, File.metadata_sha256)
    .join(Project, Project.id == File.project_id)
    .where(File.quarantined.is_(False), Project.status != "quarantined")
)


class ReadAPI:
    """ASGI middleware answering GET/HEAD on /simple/, /packages/ and /pypi/; the rest goes to ``app``."""

    def __init__(self, bastion: Bastion, app: Any) -> None:
        self.bastion = bastion
        self.app = app
        self.pages = ByteBudgetCache(bastion.settings.page_cache_bytes)
        self.files: dict[str, CachedFile] = {}
        self.accept_memo: dict[str | None, str | None] = {}
        self.marker = ChangeMarker(bastion.settings.changes_path)
        self.keys_by_name: dict[str, set[Any]] = {}
        self.empty_index = {
            rendered.key.rsplit(".", 1)[1]: CachedPage(
                body=rendered.body, etag=etag_for(rendered.body)[1].encode(), content_type=rendered.content_type,
                serial=0)
            for rendered in render_simple_index_of([], 0)
        }
        self.journal_seen = 0
        self.journal_ids: set[int] = set()
        self._reset()
        self.public_url = bastion.settings.public_url.rstrip("/")
        self.tuf_on = bastion.settings.tuf == "on"
        self.tuf_marker = ChangeMarker(bastion.settings.tuf_changes_path)
        self.tuf_heads: dict[str, tuple[bytes, bytes]] = {}

    # -- cache coherence -------------------------------------------------------------------
    def _check_marker(self) -> None:
        """Drop cached pages of projects that changed since the last look, in any process (one
        ``stat`` per request; see ChangeMarker)."""
        if self.marker.changed():
            serial = self.marker.content
            if serial.isdigit() and int(serial) < self.journal_seen:
                self._reset()  # the serial went back (a restored database): trust nothing cached
            else:
                self._evict_changed()

    def _reset(self) -> None:
        self.pages.clear()
        self.files.clear()
        self.keys_by_name.clear()
        with self.bastion.db.engine.connect() as conn:
            self.journal_seen = conn.execute(select(func.coalesce(func.max(JournalEntry.id), 0))).scalar() or 0
            self.journal_ids = set(conn.execute(
                select(JournalEntry.id).where(JournalEntry.id > self.journal_seen - JOURNAL_WINDOW)
            ).scalars())

    def _evict_changed(self) -> None:
        """Evict the pages of every project named in the journal since the last eviction.

        The query reaches back ``JOURNAL_WINDOW`` ids, because on PostgreSQL concurrent writers may
        commit journal ids out of order; ids already handled in an earlier look are skipped.
        """
        since = max(self.journal_seen - JOURNAL_WINDOW, 0)
        with self.bastion.db.engine.connect() as conn:
            rows = conn.execute(
                select(JournalEntry.id, JournalEntry.name).where(JournalEntry.id > since)
            ).all()
        self.files.clear()
        for key in (simple_index_key("html"), simple_index_key("json")):
            self.pages.pop(key)
        names = {row.name for row in rows if row.id not in self.journal_ids}
        self.journal_ids = {row.id for row in rows}
        if rows:
            self.journal_seen = max(self.journal_seen, max(row.id for row in rows))
        if len(names) > MAX_TARGETED_EVICTIONS:
            self._reset()
            return
        for name in names:
            for key in self.keys_by_name.pop(name, ()):
                self.pages.pop(key)

    def _page(self, key: str) -> CachedPage | None:
        hit = self.pages.get(key)
        if hit is not None:
            return hit[0]
        with self.bastion.db.engine.connect() as conn:
            row = conn.execute(
                select(RenderedPage.body, RenderedPage.etag, RenderedPage.content_type, RenderedPage.serial)
                .where(RenderedPage.key == key)
            ).first()
        if row is None:
            return None  # misses are not cached: hostile names must not fill memory
        page = CachedPage(body=row.body, etag=row.etag.encode(), content_type=row.content_type, serial=row.serial)
        self.pages.put(key, page, len(page.body) + len(key) + 200)
        parts = key.split("/")
        if len(parts) > 2:  # a project's page (simple/<name>/..., pypi/<name>/...), not the index
            self.keys_by_name.setdefault(parts[1], set()).add(key)
        return page

    # -- ASGI ------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            path: str = scope["path"]
            if path.startswith("/simple"):
                self._check_marker()
                return await self._simple(scope, send, path)
            if path.startswith("/packages/"):
                self._check_marker()
                return await self._file(scope, send, path)
            if path.startswith("/pypi/"):
                self._check_marker()
                return await self._json_api(scope, send, path)
            if path.startswith(TUF_PREFIX):
                return await self._tuf(scope, send, path)
        await self.app(scope, receive, send)

    async def _simple(self, scope: Scope, send: Any, path: str) -> None:
        if path == "/simple":
            return await _redirect(send, "/simple/", scope)
        rest = path[len("/simple/"):]
        if path[len("/simple")] != "/":
            return await _plain(send, 404, b"Not Found\n")
        parts = rest.split("/")
        if (len(parts) == 1 and _PAGE_NAME.match(rest)) or (len(parts) == 2 and _PAGE_NAME.match(parts[1])):
            return await self._named_page(scope, send, parts)
        if rest == "":
            key_base = None
        else:
            name = rest[:-1] if rest.endswith("/") else rest
            if "/" in name or not is_valid_name(name):  # also keeps CR/LF out of Location
                return await _plain(send, 404, b"Not Found\n")
            normalized = canonicalize_name(name)
            if normalized != name or not rest.endswith("/"):
                return await _redirect(send, f"/simple/{normalized}/", scope)
            key_base = normalized
        headers = _headers(scope)
        accept = headers.get(b"accept")
        query = scope.get("query_string", b"")
        if query:
            fmt = parse_qs(query.decode("latin-1")).get("format")
            if fmt:
                # "+" in an unencoded query decodes to a space; media types hold no spaces.
                accept = fmt[0].replace(" ", "+").encode("latin-1", "replace")
        accept_text = accept.decode("latin-1") if accept is not None else None
        chosen = self.accept_memo.get(accept_text, _MISSING)
        if chosen is _MISSING:
            chosen = negotiate(accept_text)
            if len(self.accept_memo) < 512:
                self.accept_memo[accept_text] = chosen
        if chosen is None:
            return await _plain(send, 406, NOT_ACCEPTABLE, vary=True)
        fmt_name, content_type = RESPONSE_TYPES[chosen]  # type: ignore[index]
        key = simple_index_key(fmt_name) if key_base is None else simple_detail_key(key_base, fmt_name)
        page = self._page(key)
        if page is None and key_base is None:
            page = self.empty_index[fmt_name]  # no project was ever created: an empty list, not a 404
        if page is None:
            return await _plain(send, 404, b"Not Found: no project of that name on this index\n", vary=True)
        body, etag, encoding = self._encoded(key, page.body, page.etag, headers)
        await _send_page(scope, send, headers, body, etag, content_type, page.serial, vary=True, encoding=encoding)

    async def _named_page(self, scope: Scope, send: Any, parts: list[str]) -> None:
        """A simple page by its TUF target name (``simple/<name>/index.html``) or its
        consistent-snapshot name (``simple/<name>/<sha256>.index.html``): exact bytes, no negotiation."""
        if len(parts) == 2 and (not is_valid_name(parts[0]) or canonicalize_name(parts[0]) != parts[0]):
            return await _plain(send, 404, b"Not Found: page names use the normalized project name\n")
        match = _PAGE_NAME.match(parts[-1])
        assert match is not None
        digest, fmt = match.groups()
        key = simple_index_key(fmt) if len(parts) == 1 else simple_detail_key(parts[0], fmt)
        headers = _headers(scope)
        if digest is None:
            page = self._page(key)
            if page is None and len(parts) == 1:
                page = self.empty_index[fmt]
            if page is None:
                return await _plain(send, 404, b"Not Found: no project of that name on this index\n")
            body, etag, encoding = self._encoded(key, page.body, page.etag, headers)
            return await _send_page(scope, send, headers, body, etag, PAGE_TYPES[fmt], page.serial, vary=False,
                                    encoding=encoding)
        cache_key = ("page-version", key, digest)
        hit = self.pages.get(cache_key)
        if hit is None:
            with self.bastion.db.engine.connect() as conn:
                row = conn.execute(select(TufPageVersion.body).where(
                    TufPageVersion.path == key, TufPageVersion.sha256 == digest)).first()
                # A quarantined project's older signed pages still list its files: only the page
                # rendered now (which lists none) is served until the review ends.
                if row is not None and len(parts) == 2 and conn.execute(
                    select(Project.status).where(Project.normalized_name == parts[0])
                ).scalar() == "quarantined" and conn.execute(
                    select(RenderedPage.sha256).where(RenderedPage.key == key)
                ).scalar() != digest:
                    row = None
            if row is None:
                return await _plain(send, 404, b"Not Found: no signed version of that page has this hash\n")
            found = row.body
            self.pages.put(cache_key, found, len(found) + 200)
            if len(parts) == 2:  # evicted with the project's other pages when it changes
                self.keys_by_name.setdefault(parts[0], set()).add(cache_key)
            body = found
        else:
            body = hit[0]
        etag = b'"' + digest[:32].encode() + b'"'
        body, etag, encoding = self._encoded(cache_key, body, etag, headers)
        await _send_page(scope, send, headers, body, etag, PAGE_TYPES[fmt], 0, vary=False, encoding=encoding,
                         cache_control=FILE_CACHE_CONTROL)

    async def _tuf(self, scope: Scope, send: Any, path: str) -> None:
        """TUF metadata: ``timestamp.json`` (and ``root.json``) as the newest version, every other
        role at ``<version>.<role>.json`` (consistent snapshots)."""
        if not self.tuf_on:
            return await _plain(send, 404, b"Not Found: this index serves no TUF metadata (BASTION_TUF=off)\n")
        match = _TUF_NAME.match(path[len(TUF_PREFIX):])
        if match is None:
            return await _plain(send, 404, b"Not Found: TUF metadata is timestamp.json or <version>.<role>.json\n")
        version_text, role = match.groups()
        if version_text is None:
            if role not in ("timestamp", "root"):
                return await _plain(send, 404, b"Not Found: consistent snapshots: ask for <version>." +
                                    role.encode() + b".json\n")
            self._check_tuf_marker()
            found = self.tuf_heads.get(role)
            if found is None:
                with self.bastion.db.engine.connect() as conn:
                    body = conn.execute(
                        select(TufMetadata.body).join(TufHead, (TufHead.role == TufMetadata.role)
                                                      & (TufHead.version == TufMetadata.version))
                        .where(TufHead.role == role)).scalar()
                if body is None:
                    return await _plain(send, 404, b"Not Found: the TUF repository is not initialised yet\n")
                found = (body, etag_for(body)[1].encode())
                self.tuf_heads[role] = found
            return await _send_page(scope, send, _headers(scope), found[0], found[1], b"application/json", None,
                                    vary=None, cache_control=TUF_HEAD_CACHE_CONTROL)
        if role == "timestamp":
            return await _plain(send, 404, b"Not Found: timestamp metadata is served only as timestamp.json\n")
        cache_key = ("tuf", role, int(version_text))
        hit = self.pages.get(cache_key)
        if hit is None:
            with self.bastion.db.engine.connect() as conn:
                body = conn.execute(select(TufMetadata.body).where(
                    TufMetadata.role == role, TufMetadata.version == int(version_text))).scalar()
            if body is None:
                return await _plain(send, 404, b"Not Found: no such TUF metadata version\n")
            found = (body, etag_for(body)[1].encode())
            self.pages.put(cache_key, found, len(body) + 200)
        else:
            found = hit[0]
        await _send_page(scope, send, _headers(scope), found[0], found[1], b"application/json", None, vary=None,
                         cache_control=TUF_CACHE_CONTROL)

    def _check_tuf_marker(self) -> None:
        """Drop the cached timestamp.json and root.json when the snapshot worker of any process
        stored a new one."""
        if self.tuf_marker.changed():
            self.tuf_heads.clear()

    async def _json_api(self, scope: Scope, send: Any, path: str) -> None:
        parts = path[len("/pypi/"):].rstrip("/").split("/")
        if len(parts) not in (2, 3) or parts[-1] != "json":
            return await _plain(send, 404, b"Not Found\n")
        name = parts[0]
        if not is_valid_name(name) or (len(parts) == 3 and len(parts[1]) > MAX_VERSION_LENGTH):
            return await _plain(send, 404, b"Not Found\n")
        normalized = canonicalize_name(name)
        if normalized != name:
            return await _redirect(send, "/pypi/" + "/".join([normalized, *parts[1:]]), scope)
        if len(parts) == 2:
            key = json_project_key(normalized)
        else:
            version = self._resolve_version(normalized, parts[1])
            if version is None:
                return await _plain(send, 404, b"Not Found: no such release\n")
            key = json_release_key(normalized, version)
        headers = _headers(scope)
        base = self._base_url(scope, headers)
        page = self._page(key)
        if page is None:
            return await _plain(send, 404, b"Not Found\n")
        cache_key = ("abs", key, base)
        hit = self.pages.get(cache_key)
        if hit is None or hit[0][0] != page.etag:
            body = page.body.replace(BASE_PLACEHOLDER.encode(), base.encode())
            etag = b'"' + page.etag.strip(b'"') + b"-" + format(zlib.crc32(base.encode()), "08x").encode() + b'"'
            self.pages.put(cache_key, (page.etag, body, etag), len(body) + 200)
        else:
            _, body, etag = hit[0]
        body, etag, encoding = self._encoded(cache_key, body, etag, headers)
        await _send_page(scope, send, headers, body, etag, b"application/json", page.serial, vary=False,
                         encoding=encoding,
                         cache_control=SIMPLE_CACHE_CONTROL if self.public_url else PRIVATE_CACHE_CONTROL)

    def _encoded(self, key: Any, body: bytes, etag: bytes, headers: dict[bytes, bytes]) -> tuple[bytes, bytes, bool]:
        """The gzip variant of a page for clients that accept it (pip and uv do), compressed once."""
        if len(body) < GZIP_MIN_BYTES or b"gzip" not in headers.get(b"accept-encoding", b""):
            return body, etag, False
        gz_key = ("gzip", key)
        hit = self.pages.get(gz_key)
        if hit is None or hit[0][0] != etag:
            compressed = gzip.compress(body, compresslevel=6, mtime=0)
            gz_etag = etag[:-1] + b'-gz"'
            self.pages.put(gz_key, (etag, compressed, gz_etag), len(compressed) + 200)
            return compressed, gz_etag, True
        _, compressed, gz_etag = hit[0]
        return compressed, gz_etag, True

    def _resolve_version(self, name: str, version: str) -> str | None:
        key = ("version", name, version)
        hit = self.pages.get(key)
        if hit is not None:
            return hit[0]
        try:
            canonical = canonicalize_version(version)
        except (InvalidVersion, ValueError):  # ValueError: more digits than int() converts
            return None
        with self.bastion.db.engine.connect() as conn:  # a column query: no ORM session needed
            found = conn.execute(
                select(Release.version).join(Project, Project.id == Release.project_id)
                .where(Project.normalized_name == name, Release.canonical_version == canonical)
            ).scalar()
        if found is not None:
            self.pages.put(key, found, 100)
        return found

    def _base_url(self, scope: Scope, headers: dict[bytes, bytes]) -> str:
        if self.public_url:
            return self.public_url
        host = headers.get(b"host", b"").decode("latin-1")
        if not _HOST_OK.match(host):
            server = scope.get("server") or ("127.0.0.1", 80)
            host = f"{server[0]}:{server[1]}"
        return f"{scope.get('scheme', 'http')}://{host}"

    def _lookup_file(self, rel: str) -> CachedFile | None:
        requested = rel
        hit = self.files.get(rel)
        if hit is not None:
            return hit
        if len(rel) > 800:  # longer than any stored path (700) plus ".metadata"
            return None
        is_metadata = rel.endswith(".metadata")
        file_path = rel[: -len(".metadata")] if is_metadata else rel
        with self.bastion.db.engine.connect() as conn:
            row = conn.execute(_downloadable.where(File.path == file_path)).first()
            directory, _, basename = rel.rpartition("/")
            hashed = _HASHED_NAME.match(basename) if row is None and not is_metadata else None
            if hashed is not None:  # a TUF consistent-snapshot name: <sha256>.<filename>
                file_path = f"{directory}/{hashed.group(2)}"
                row = conn.execute(
                    _downloadable.where(File.path == file_path, File.sha256_digest == hashed.group(1))
                ).first()
                rel = file_path
        entry = None
        if row is not None and (not is_metadata or row.metadata_sha256):
            fs_path = self.bastion.blobs.local_path(rel)
            if fs_path is not None and fs_path.is_file():
                size = fs_path.stat().st_size if is_metadata else row.size
                digest = row.metadata_sha256 if is_metadata else row.sha256_digest
                suffix = ".metadata" if is_metadata else next(
                    (ext for ext in (".whl", ".tar.gz", ".zip") if rel.endswith(ext)), ""
                )
                entry = CachedFile(
                    fs_path=str(fs_path), size=size, etag=f'"{digest}"'.encode(),
                    content_type=FILE_TYPES.get(suffix, b"application/octet-stream"), path=rel,
                )
        if entry is None:
            return None  # misses are not cached (hostile paths must not fill memory)
        if len(self.files) > 100_000:
            self.files.clear()
        self.files[requested] = entry
        return entry

    async def _file(self, scope: Scope, send: Any, path: str) -> None:
        rel = path[1:]
        entry = self._lookup_file(rel)
        if entry is None:
            return await _plain(send, 404, b"Not Found\n")
        headers = _headers(scope)
        base_headers = [
            (b"content-type", entry.content_type),
            (b"etag", entry.etag),
            (b"cache-control", FILE_CACHE_CONTROL),
        ]
        if headers.get(b"if-none-match") == entry.etag:
            await send({"type": "http.response.start", "status": 304, "headers": base_headers})
            return await send({"type": "http.response.body", "body": b""})
        try:
            handle = open(entry.fs_path, "rb")
        except FileNotFoundError:
            self.files.pop(path[1:], None)
            return await _plain(send, 404, b"Not Found\n")
        with handle:
            await send({
                "type": "http.response.start", "status": 200,
                "headers": [*base_headers, (b"content-length", str(entry.size).encode())],
            })
            if scope["method"] == "HEAD":
                return await send({"type": "http.response.body", "body": b""})
            remaining = entry.size
            while remaining > 0:
                chunk = handle.read(min(_SEND_CHUNK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": remaining > 0})
            if remaining > 0:  # the blob shrank under us: end the response rather than hang
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            elif not rel.endswith(".metadata"):  # a whole distribution file was sent: a download
                self.bastion.downloads.count(entry.path)


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return dict(scope["headers"])


async def _send_page(scope: Scope, send: Any, headers: dict[bytes, bytes], body: bytes, etag: bytes,
                     content_type: bytes, serial: int | None, *, vary: bool | None, encoding: bool = False,
                     cache_control: bytes = SIMPLE_CACHE_CONTROL) -> None:
    """A stored body with its ETag (304 on a match); ``serial`` None sends no X-PyPI-Last-Serial
    and ``vary`` None no Vary (TUF metadata: one representation, never compressed)."""
    out = [
        (b"content-type", content_type),
        (b"etag", etag),
        (b"cache-control", cache_control),
    ]
    if serial is not None:
        out.append((b"x-pypi-last-serial", str(serial).encode()))
    if encoding:
        out.append((b"content-encoding", b"gzip"))
    if vary is not None:
        out.append((b"vary", b"Accept, Accept-Encoding" if vary else b"Accept-Encoding"))
    inm = headers.get(b"if-none-match")
    if inm is not None and etag in [t.strip() for t in inm.split(b",")]:
        await send({"type": "http.response.start", "status": 304, "headers": out})
        return await send({"type": "http.response.body", "body": b""})
    out.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": out})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


async def _plain(send: Any, status: int, body: bytes, *, vary: bool = False) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    if vary:
        headers.append((b"vary", b"Accept"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _redirect(send: Any, location: str, scope: Scope) -> None:
    query = scope.get("query_string", b"")
    target = location.encode() + (b"?" + query if query else b"")
    await send({
        "type": "http.response.start", "status": 301,
        "headers": [(b"location", target), (b"content-length", b"0")],
    })
    await send({"type": "http.response.body", "body": b""})
