"""PEP 691 content negotiation of simple pages: which representation an Accept header gets.

Shared by the index (``simple/serve.py``) and ``bastion verify-proxy``, so both answer a client
the same way.
"""

from __future__ import annotations

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
TEXT_HTML = "text/html"
# Offered types in the order ties are broken (PyPI answers */* with HTML).
OFFERED = (TEXT_HTML, HTML_V1, SIMPLE_JSON)
ALIASES = {
    "application/vnd.pypi.simple.latest+json": SIMPLE_JSON,
    "application/vnd.pypi.simple.latest+html": HTML_V1,
}


def _parse_accept(header: str) -> list[tuple[str, float]]:
    entries = []
    for part in header.split(","):
        media, *params = [p.strip() for p in part.split(";")]
        if not media:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = max(0.0, min(1.0, float(value)))
                except ValueError:
                    q = 0.0
        entries.append((ALIASES.get(media.lower(), media.lower()), q))
    return entries


def negotiate(header: str | None) -> str | None:
    """The offered type to answer with (q-values and specificity honoured), or None for 406."""
    if not header or not header.strip():
        return TEXT_HTML
    entries = _parse_accept(header)
    best: tuple[float, int] | None = None
    chosen = None
    for rank, offered in enumerate(OFFERED):
        major = offered.split("/")[0]
        quality = None
        specificity = -1
        for media, q in entries:
            if media == offered:
                spec = 2
            elif media == f"{major}/*":
                spec = 1
            elif media == "*/*":
                spec = 0
            else:
                continue
            if spec > specificity:
                specificity, quality = spec, q
        if quality is None or quality <= 0:
            continue
        key = (quality, -rank)
        if best is None or key > best:
            best, chosen = key, offered
    return chosen
