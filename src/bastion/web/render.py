"""Rendering pages: one Jinja2 environment (autoescaped), the security headers every page carries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

ENV = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(("html", "xml", "svg")),
    trim_blocks=True,
    lstrip_blocks=True,
)

# No inline scripts anywhere: every script is a file under /static/ (WebAuthn), so the policy
# can forbid inline and eval outright. Inline SVG (QR codes, charts) needs no script.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def security_headers(*, https: bool) -> dict[str, str]:
    """Headers for every HTML page (and the static files beside them)."""
    headers = {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    }
    if https:
        headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
    return headers


def is_https(request: Request) -> bool:
    """Whether this request reached us over TLS (directly, or through the public URL's scheme)."""
    bastion = request.app.state.bastion
    mode = bastion.settings.cookie_secure
    if mode == "always":
        return True
    if mode == "never":
        return False
    return request.url.scheme == "https" or bastion.settings.public_url.startswith("https://")


def render_page(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    """Render ``template`` with ``context`` plus ``request``, ``me`` (the signed-in user's name or
    None) and ``csrf_token`` (for forms), with the security headers."""
    base = {
        "request": request,
        "me": getattr(request.state, "username", None),
        "is_admin": getattr(request.state, "is_admin", False),
        "csrf_token": getattr(request.state, "csrf_token", ""),
        "flash": getattr(request.state, "flash", None),
    }
    base.update(context)
    body = ENV.get_template(template).render(**base)
    return HTMLResponse(body, status_code=status, headers=security_headers(https=is_https(request)))
