"""Running the app under uvicorn, with the HTTP reason phrase carrying Bastion's message.

twine prints an upload error as ``HTTPError: 400 Bad Request ... <reason phrase>``, so PyPI puts
the message in the reason phrase. ASGI has no field for it; routes set the ``x-bastion-reason``
header (bastion.http.REASON_HEADER) and this protocol moves it into the status line of that one
response head. Only the first write of each response cycle (the head) is examined.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_MARK = b"\r\nx-bastion-reason: "


class _HeadRewritingTransport:
    """Wraps the transport for one response: rewrites the head, then steps aside."""

    def __init__(self, transport: Any, cycle: Any) -> None:
        self._transport = transport
        self._cycle = cycle

    def write(self, data: bytes) -> None:
        if data.startswith(b"HTTP/1.1 100 "):
            self._transport.write(data)  # an interim "100 Continue"; the real head comes later
            return
        self._cycle.transport = self._transport
        start = data.find(_MARK)
        head_end = data.find(b"\r\n\r\n")
        if start != -1 and (head_end == -1 or start < head_end):
            end = data.index(b"\r\n", start + 2)
            reason = data[start + len(_MARK):end]
            data = data[:start] + data[end:]
            first = data.index(b"\r\n")
            status = data[:first].split(b" ", 2)
            data = b" ".join(status[:2]) + b" " + reason + data[first:]
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class ReasonPhraseProtocol(HttpToolsProtocol):
    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and not isinstance(cycle.transport, _HeadRewritingTransport):
            # It forwards every call to the real transport; only the head write is rewritten.
            cycle.transport = _HeadRewritingTransport(cycle.transport, cycle)  # type: ignore[assignment]
