"""``bastion verify-proxy``: a loopback simple index that answers only with TUF-verified bytes.

pip and uv point ``--index-url`` at it. Every simple page and file it serves is a target python-tuf
verified against the index's signed metadata; a PEP 658 ``<file>.metadata`` (not a TUF target) is
served only when its sha256 matches the one the verified simple page of its project announced.
Anything python-tuf refuses becomes an HTTP 502 whose reason phrase and body say
``TUF verification failed: <reason>`` (pip prints the reason phrase), and the reason is logged.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import sys
import threading
from collections.abc import Iterable
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any, TextIO
from urllib.parse import parse_qs, quote, unquote, urlsplit

from packaging.utils import canonicalize_name

from bastion.simple.accept import HTML_V1, OFFERED, SIMPLE_JSON, TEXT_HTML, negotiate
from bastion.packaging.names import is_valid_name
from bastion.tuf.client import VerificationError, VerifiedIndex, one_line

CONTENT_TYPES = {TEXT_HTML: "text/html; charset=utf-8", HTML_V1: HTML_V1, SIMPLE_JSON: SIMPLE_JSON}
FILE_TYPES = {".whl": "application/zip", ".zip": "application/zip", ".tar.gz": "application/gzip",
              ".metadata": "text/plain; charset=utf-8"}
FAILED = "TUF verification failed"
MAX_CORE_METADATA = 16 * 1024 * 1024
"""The most bytes read for one ``.metadata`` file (they are a few KiB)."""


def ready_line(port: int) -> str:
    return f"verify-proxy listening on http://127.0.0.1:{port}/simple/"


class _Anchors(HTMLParser):
    """(href, data-core-metadata) of every anchor of a simple page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            found = dict(attrs)
            href = found.get("href")
            if href:
                self.links.append((href, found.get("data-core-metadata") or found.get("data-dist-info-metadata")))


def core_metadata_hashes(page: bytes, fmt: str, project: str, index_url: str) -> dict[str, str]:
    """{target path of a file: sha256 of its ``.metadata``} from a verified simple page."""
    pairs: list[tuple[str, str | None]] = []
    if fmt == "json":
        document = json.loads(page)
        for entry in document.get("files", []):
            meta = entry.get("core-metadata") or entry.get("dist-info-metadata")
            digest = meta.get("sha256") if isinstance(meta, dict) else None
            pairs.append((str(entry.get("url", "")), digest))
    else:
        parser = _Anchors()
        parser.feed(page.decode("utf-8", "replace"))
        for href, meta in parser.links:
            digest = meta[len("sha256="):] if meta and meta.startswith("sha256=") else None
            pairs.append((href, digest))
    found = {}
    for url, digest in pairs:
        path = target_path_of_link(url, project, index_url)
        if path is not None and digest:
            found[path] = digest.lower()
    return found


def target_path_of_link(url: str, project: str, index_url: str) -> str | None:
    """The target path a link of ``simple/<project>/`` points at (None: off this index)."""
    link = url.split("#", 1)[0]
    parts = urlsplit(link)
    if parts.scheme or parts.netloc:
        if not link.startswith(index_url):
            return None
        return unquote(link[len(index_url):])
    resolved = posixpath.normpath(posixpath.join(f"simple/{project}/", unquote(parts.path)))
    return None if resolved.startswith("../") or resolved == ".." else resolved


class VerifyProxy:
    """The proxy's state: the verified index, and the ``.metadata`` digests its pages announced."""

    def __init__(self, index: VerifiedIndex, log: TextIO = sys.stderr) -> None:
        self.index = index
        self.log_stream = log
        self._log_lock = threading.Lock()
        self._meta_lock = threading.Lock()
        self.metadata_sha256: dict[str, str] = {}

    def log(self, line: str) -> None:
        with self._log_lock:
            self.log_stream.write(f"verify-proxy: {line}\n")
            self.log_stream.flush()

    def remember(self, hashes: dict[str, str]) -> None:
        with self._meta_lock:
            self.metadata_sha256.update(hashes)

    def announced(self, file_path: str) -> str | None:
        with self._meta_lock:
            return self.metadata_sha256.get(file_path)

    def make_server(self, port: int) -> ThreadingHTTPServer:
        proxy = self

        class Handler(_Handler):
            state = proxy

        server = _Server(("127.0.0.1", port), Handler)
        server.daemon_threads = True
        return server


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (pip resets its connection after a refused file) is no error of
        the proxy's: no traceback for it. Anything else is reported as the stdlib does."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "bastion-verify-proxy"
    sys_version = ""
    timeout = 300
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stall
    state: VerifyProxy
    _started = False
    """Whether this response's status line was sent (an error after it cannot become a 502)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass  # every request is logged once, with its outcome, by _answer

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    # -- dispatch -------------------------------------------------------------------------------
    def _answer(self, *, head: bool) -> None:
        self._started = False
        split = urlsplit(self.path)
        path = split.path
        try:
            if path == "/simple":
                return self._redirect("/simple/")
            if path.startswith("/simple/"):
                return self._simple(path[len("/simple/"):], split.query, head)
            if path.startswith("/packages/"):
                return self._package(unquote(path[1:]), head)
            return self._plain(404, "Not Found", "Not Found: this proxy serves /simple/ and /packages/ only\n")
        except (BrokenPipeError, ConnectionResetError):
            return None
        except Exception as exc:
            if self._started:  # the status line is out: end the connection rather than the body
                self.close_connection = True
                self.state.log(f"{self.command} {self.path} -> cut short: {one_line(str(exc))}")
                return None
            if isinstance(exc, VerificationError):
                reason = one_line(f"{FAILED}: {exc}")
                self.state.log(f"{self.command} {self.path} -> 502 {reason}")
                return self._plain(502, reason, reason + "\n", logged=True)
            # Fail closed: never an unverified answer.
            reason = one_line(f"verify-proxy error: {type(exc).__name__}: {exc}")
            self.state.log(f"{self.command} {self.path} -> 500 {reason}")
            return self._plain(500, "verify-proxy error", reason + "\n", logged=True)

    def _simple(self, rest: str, query: str, head: bool) -> None:
        accept = self.headers.get("Accept")
        if query:
            fmt_param = parse_qs(query).get("format")
            if fmt_param:
                accept = fmt_param[0].replace(" ", "+")
        chosen = negotiate(accept)
        if chosen is None:
            return self._plain(406, "Not Acceptable", f"Not Acceptable: this proxy serves {', '.join(OFFERED)}\n")
        fmt = "json" if chosen == SIMPLE_JSON else "html"
        if rest == "":
            project = None
            target = f"simple/index.{fmt}"
        else:
            name = rest[:-1] if rest.endswith("/") else rest
            if "/" in name or not is_valid_name(name):
                return self._plain(404, "Not Found", "Not Found: not a project name\n")
            project = canonicalize_name(name)
            if project != name or not rest.endswith("/"):
                return self._redirect(f"/simple/{project}/")
            target = f"simple/{project}/index.{fmt}"
        found = self.state.index.read_target(target)
        if found is None:
            return self._plain(404, "Not Found", "Not Found: no project of that name in the index's signed TUF "
                                                  "metadata\n")
        _, body = found
        if project is not None:
            self.state.remember(core_metadata_hashes(body, fmt, project, self.state.index.index_url))
        self._send(200, "OK", CONTENT_TYPES[chosen], len(body), [body], head, note=f"{target} verified",
                   extra={"Vary": "Accept", "Cache-Control": "no-cache"})

    def _package(self, target: str, head: bool) -> None:
        if target.endswith(".metadata"):
            return self._core_metadata(target, head)
        found = self.state.index.open_target(target)
        if found is None:
            return self._plain(404, "Not Found", "Not Found: not a file in the index's signed TUF metadata\n")
        verified, handle = found
        with handle:
            self._send(200, "OK", _file_type(target), verified.info.length, _chunks(handle), head,
                       note=f"{target} verified")

    def _core_metadata(self, target: str, head: bool) -> None:
        file_path = target[: -len(".metadata")]
        expected = self.state.announced(file_path)
        if expected is None:
            return self._plain(404, "Not Found", "Not Found: no verified simple page served by this proxy announced "
                                                  "this .metadata file\n")
        body = self.state.index.fetch_unsigned(quote(target), MAX_CORE_METADATA)
        actual = hashlib.sha256(body).hexdigest()
        if actual != expected:
            raise VerificationError(f"{target}: sha256 {actual} is not the {expected} that the verified simple "
                                    "page announced")
        self._send(200, "OK", FILE_TYPES[".metadata"], len(body), [body], head,
                   note=f"{target} matches its verified simple page")

    # -- responses ------------------------------------------------------------------------------
    def _send(self, status: int, reason: str, content_type: str, length: int, body: Iterable[bytes], head: bool,
              *, note: str = "", extra: dict[str, str] | None = None, logged: bool = False) -> None:
        self.send_response(status, reason)
        self._started = True
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not logged:
            self.state.log(f"{self.command} {self.path} -> {status}" + (f" ({note})" if note else ""))
        if head:
            return
        for chunk in body:
            self.wfile.write(chunk)

    def _plain(self, status: int, reason: str, text: str, *, logged: bool = False) -> None:
        data = text.encode("utf-8")
        self._send(status, reason, "text/plain; charset=utf-8", len(data), [data], self.command == "HEAD",
                   logged=logged)

    def _redirect(self, location: str) -> None:
        self.send_response(301, "Moved Permanently")
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.state.log(f"{self.command} {self.path} -> 301 {location}")

    def send_response(self, code: int, message: str | None = None) -> None:
        # The reason phrase goes on the status line: latin-1, one line (pip prints it).
        safe = None if message is None else one_line(message).encode("latin-1", "replace").decode("latin-1")
        super().send_response(code, safe)


def _file_type(path: str) -> str:
    return next((kind for suffix, kind in FILE_TYPES.items() if path.endswith(suffix)), "application/octet-stream")


def _chunks(handle: IO[bytes], size: int = 1024 * 1024) -> Iterable[bytes]:
    while chunk := handle.read(size):
        yield chunk


def serve(proxy: VerifyProxy, server: ThreadingHTTPServer) -> None:
    """Announce readiness (the line tests and scripts wait for) and serve until interrupted."""
    port = server.server_address[1]
    sys.stderr.write(ready_line(int(port)) + "\n")
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()

