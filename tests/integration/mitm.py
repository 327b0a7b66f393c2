"""A man-in-the-middle HTTP proxy for attack tests (a compromised mirror, or an attacker on the
network): forwards to a live server, alters on demand.

It sits on 127.0.0.1 between a TUF client (python-tuf's ngclient, ``bastion verify-proxy``)
and a live ``bastion serve``, and answers every request by forwarding it, unless a rule added by
the test matches the request path: then it rewrites the upstream body, serves bytes of its own
choosing, or streams bytes without end. Every exchange is recorded, and every rule counts its
hits, so a test can assert that the attack really reached the client.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

UPSTREAM_TIMEOUT = 30.0
_DROPPED_REQUEST_HEADERS = {"host", "accept-encoding", "connection", "keep-alive", "proxy-connection"}
_DROPPED_RESPONSE_HEADERS = {"content-length", "content-encoding", "connection", "transfer-encoding", "keep-alive"}


@dataclass(frozen=True)
class Exchange:
    """One request the proxy answered."""

    method: str
    path: str
    status: int
    rule: str | None
    """The name of the rule that answered it; None when it was forwarded unaltered."""


@dataclass
class Rule:
    """How the proxy answers the requests whose path (without the query) fully matches ``pattern``."""

    name: str
    pattern: re.Pattern[str]
    kind: str
    """``rewrite`` (upstream body through ``transform``), ``serve`` (``body``), ``endless``."""
    transform: Callable[[bytes], bytes] | None = None
    body: bytes = b""
    status: int = 200
    content_type: str = "application/octet-stream"
    hits: int = 0
    """Requests this rule answered."""
    sent: int = 0
    """Bytes an endless rule wrote before it stopped (all its hits)."""
    outcomes: list[str] = field(default_factory=list)
    """Why each endless stream stopped: ``client closed``, ``client stalled`` or ``cap``."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hangs up (a refused download, a killed pip) is no error of the proxy's."""
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class Mitm:
    """The proxy. Use it as a context manager; ``url`` is its base URL (no trailing slash)."""

    def __init__(self, upstream: str, *, endless_cap_bytes: int = 512 * 1024 * 1024,
                 endless_cap_seconds: float = 60.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.rules: list[Rule] = []
        self.seen: list[Exchange] = []
        self.endless_cap_bytes = endless_cap_bytes
        self.endless_cap_seconds = endless_cap_seconds
        self._lock = threading.Lock()
        self._client = httpx.Client(trust_env=False, timeout=UPSTREAM_TIMEOUT, follow_redirects=False)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _answer(self) -> None:
                proxy._handle(self)

            do_GET = _answer
            do_HEAD = _answer

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="mitm", daemon=True)

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> Mitm:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._client.close()

    # -- rules -----------------------------------------------------------------------------------
    def _add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def rewrite(self, pattern: str, transform: Callable[[bytes], bytes], *, name: str) -> Rule:
        """Fetch from upstream as usual, then answer ``transform(body)`` (for a 200 answer)."""
        return self._add(Rule(name, re.compile(pattern), "rewrite", transform=transform))

    def serve(self, pattern: str, body: bytes, *, name: str, status: int = 200,
              content_type: str = "application/json") -> Rule:
        """Answer ``body`` without asking upstream."""
        return self._add(Rule(name, re.compile(pattern), "serve", body=body, status=status,
                              content_type=content_type))

    def endless(self, pattern: str, *, name: str, content_type: str = "application/json") -> Rule:
        """Answer 200 and stream bytes without end (chunked), until the client stops reading."""
        return self._add(Rule(name, re.compile(pattern), "endless", content_type=content_type))

    def clear(self) -> None:
        """Forward everything again."""
        with self._lock:
            self.rules.clear()

    def hits(self, path_pattern: str) -> list[Exchange]:
        regex = re.compile(path_pattern)
        return [e for e in self.seen if regex.fullmatch(e.path)]

    def altered(self) -> list[Exchange]:
        """The requests a rule answered with other bytes than upstream's (a rewrite whose
        transform left the body as it was does not count)."""
        return [e for e in self.seen if e.rule is not None]

    # -- answering ---------------------------------------------------------------------------
    def _rule_for(self, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.pattern.fullmatch(path):
                    rule.hits += 1
                    return rule
        return None

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        rule = self._rule_for(path)
        if rule is not None and rule.kind == "endless":
            self.seen.append(Exchange(handler.command, path, 200, rule.name))
            self._stream_endless(handler, rule)
            return
        if rule is not None and rule.kind == "serve":
            self.seen.append(Exchange(handler.command, path, rule.status, rule.name))
            self._send(handler, rule.status, "", [("Content-Type", rule.content_type)], rule.body)
            return
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _DROPPED_REQUEST_HEADERS}
        try:
            response = self._client.request(handler.command, self.upstream + handler.path, headers=headers)
        except httpx.HTTPError as exc:
            self.seen.append(Exchange(handler.command, path, 599, None))
            self._send(handler, 502, "MITM: upstream unreachable", [("Content-Type", "text/plain")],
                       f"upstream error: {exc!r}\n".encode())
            return
        body = response.content
        out_headers = [(k, v) for k, v in response.headers.items() if k.lower() not in _DROPPED_RESPONSE_HEADERS]
        applied = None
        if rule is not None and rule.kind == "rewrite" and response.status_code == 200:
            assert rule.transform is not None
            altered = rule.transform(body)
            if altered != body:
                body = altered
                out_headers = [(k, v) for k, v in out_headers if k.lower() != "etag"]
                applied = rule.name
        self.seen.append(Exchange(handler.command, path, response.status_code, applied))
        head_length = response.headers.get("content-length") if handler.command == "HEAD" else None
        self._send(handler, response.status_code, response.reason_phrase, out_headers, body, head_length)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, reason: str, headers: list[tuple[str, str]],
              body: bytes, head_length: str | None = None) -> None:
        try:
            handler.send_response(status, reason or None)
            for key, value in headers:
                handler.send_header(key, value)
            handler.send_header("Content-Length", head_length if head_length is not None else str(len(body)))
            handler.end_headers()
            if handler.command != "HEAD":
                handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True

    def _stream_endless(self, handler: BaseHTTPRequestHandler, rule: Rule) -> None:
        """A valid-looking JSON start, then whitespace for ever, in HTTP chunks; stops when the
        client closes the connection, stops reading for 5 s, or a cap (time, bytes) is reached."""
        handler.close_connection = True
        handler.connection.settimeout(5)
        chunk = b" " * 65536
        frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        start = time.monotonic()
        sent = 0
        outcome = "cap"
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", rule.content_type)
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            opening = b'{"signed": {"_type": "timestamp", "padding": "'
            handler.wfile.write(f"{len(opening):x}\r\n".encode() + opening + b"\r\n")
            sent += len(opening)
            while sent < self.endless_cap_bytes and time.monotonic() - start < self.endless_cap_seconds:
                handler.wfile.write(frame)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            outcome = "client closed"
        except (TimeoutError, socket.timeout):
            outcome = "client stalled"
        finally:
            with self._lock:
                rule.sent += sent
                rule.outcomes.append(outcome)
