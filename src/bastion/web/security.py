"""The security pages (HTTP only: the logic is in ``bastion.insights.commitments``).

- ``/projects/NAME/security`` (public): the seven commitments and the panels; its JSON twin
  ``/projects/NAME/security.json``; a summary badge ``/projects/NAME/security/badge.svg`` (the
  project page shows it). Owners (and admins) see the declaration forms on the page and post them
  to ``/projects/NAME/security`` (CSRF, recent re-authentication, MANAGE_PROJECT).
- ``/security`` (public): the projects with open advisories on their latest release, index
  totals and a chart of the time from advisory to fixed release; its JSON twin ``/security.json``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from packaging.utils import canonicalize_name

from bastion.db import utcnow
from bastion.errors import NotFound, ServiceError
from bastion.insights import commitments
from bastion.packaging import service
from bastion.packaging.names import is_valid_name
from bastion.web.account import redirect
from bastion.web.render import ENV, render_page
from bastion.web.session import bastion_of, context_of, csrf_form, require_reauth, signed_in

router = APIRouter()

# Time from advisory to fixed release, in the chart's buckets: (label, upper bound in days).
FIX_BUCKETS = (("fix first", 0), ("1-7 days", 7), ("8-30 days", 30), ("31-90 days", 90),
               ("91-365 days", 365), ("over a year", None))
BADGE_COLOURS = {"pass": "#1a7f37", "warn": "#9a6700", "fail": "#cf222e", "unknown": "#6e7781"}
BADGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'"


def _normalized(request: Request, name: str, suffix: str) -> str | Response:
    """The PEP 503 name the page is for, or the answer instead: 404 for what cannot be a name,
    301 to the normalized spelling."""
    if not is_valid_name(name):
        return _missing(request, name[:200])
    normalized = canonicalize_name(name)
    if normalized != name:
        return RedirectResponse(f"/projects/{normalized}/{suffix}", status_code=301)
    return normalized


def _missing(request: Request, name: str) -> Response:
    return render_page(request, "message.html", status=404, title="No such project",
                       error=f"There is no project named '{name}' on this index.",
                       link=("/projects/", "Browse or search the projects"))


def _report(request: Request, normalized: str) -> commitments.ProjectReport | None:
    try:
        with bastion_of(request).db.read() as session:
            return commitments.project_report(session, normalized)
    except NotFound:
        return None


def safe_link(url: str | None) -> str | None:
    """``url`` when it is an http(s) or mailto link a page may point at (never ``javascript:``)."""
    if not url:
        return None
    if "@" in url and "://" not in url and not url.lower().startswith("mailto:"):
        return f"mailto:{url}"
    scheme = urlsplit(url).scheme.lower()
    return url if scheme in ("http", "https", "mailto") else None


def _can_manage(request: Request, report: commitments.ProjectReport) -> bool:
    """Whether to show the owners' forms (the POST decides for itself, through authz)."""
    me = getattr(request.state, "username", None)
    if not me:
        return False
    return bool(getattr(request.state, "is_admin", False)) or any(
        p.username == me and p.role == "owner" for p in report.people)


def _security_page(request: Request, report: commitments.ProjectReport, *, status: int = 200,
                   error: str | None = None, form: dict[str, str] | None = None) -> Response:
    return render_page(request, "security_project.html", status=status, error=error, report=report,
                       counts=report.counts(), can_manage=_can_manage(request, report), safe_link=safe_link,
                       form=form or {}, now=report.computed)


@router.get("/projects/{name}/security", include_in_schema=False)
def project_security_page(request: Request, name: str) -> Response:
    normalized = _normalized(request, name, "security")
    if isinstance(normalized, Response):
        return normalized
    report = _report(request, normalized)
    if report is None:
        return _missing(request, name)
    return _security_page(request, report)


@router.get("/projects/{name}/security.json", summary="A project's security commitments and panels")
def project_security_json(request: Request, name: str) -> Response:
    """The same verdicts as the security page: the seven commitments (status, definition, evidence),
    releases, vulnerabilities, dependencies, people, usage and the median time to fix."""
    if not is_valid_name(name):
        return JSONResponse({"message": f"'{name[:200]}' is not a valid project name"}, status_code=404)
    report = _report(request, canonicalize_name(name))
    if report is None:
        return JSONResponse({"message": f"no project named '{name}': see /projects/ for the projects of this index"},
                            status_code=404)
    return JSONResponse(report.as_json(), headers={"Cache-Control": "no-store"})


@router.get("/projects/{name}/security/badge.svg", include_in_schema=False)
def project_security_badge(request: Request, name: str) -> Response:
    """A small image summing up the commitments (on the project page, linking to the security page)."""
    report = _report(request, canonicalize_name(name)) if is_valid_name(name) else None
    if report is None:
        return Response("no such project", status_code=404, media_type="text/plain")
    parts, x = [], 60
    if report.quarantined:
        texts = [("fail", "quarantined")]
    else:
        texts = [(status, f"{count} {status}") for status, count in report.counts().items() if count]
    for status, text in texts:
        width = 12 + 7 * len(text)  # Verdana 11px: about 7 px a character
        parts.append({"x": x, "width": width, "colour": BADGE_COLOURS[status], "text": text})
        x += width
    label = f"security commitments of {report.name}: " + ", ".join(text for _, text in texts)
    body = ENV.get_template("_security_badge.html").render(parts=parts, width=x, label=label)
    headers = {"Content-Security-Policy": BADGE_CSP, "X-Content-Type-Options": "nosniff",
               "Cache-Control": "no-store"}
    return Response(body, media_type="image/svg+xml", headers=headers)


# ---------------------------------------------------------------------------------------------
# Owners' declarations
# ---------------------------------------------------------------------------------------------

FORM_ACTIONS = {
    "contact": "contact", "clear_contact": "clear-contact", "confirm_roles": "confirm-roles",
    "reaffirm": "reaffirm", "codehost_2fa": "codehost-2fa", "codehost_2fa_withdraw": "codehost-2fa-withdraw",
}


@router.post("/projects/{name}/security", include_in_schema=False)
def project_security_declare(request: Request, name: str, form: dict[str, str] = Depends(csrf_form)) -> Response:
    user = signed_in(request)
    if not is_valid_name(name):
        return _missing(request, name[:200])
    normalized = canonicalize_name(name)
    try:  # who may not manage the project is told so before being asked to re-authenticate
        with bastion_of(request).db.read() as session:
            service.project_management(session, normalized, principal=user.principal)
    except NotFound:
        return _missing(request, name)
    except ServiceError as exc:
        return render_page(request, "message.html", status=exc.status, title="Not allowed", error=exc.message)
    require_reauth(request, user)
    action = FORM_ACTIONS.get(form.get("action", ""))
    bastion = bastion_of(request)
    try:
        if action is None:
            raise ServiceError("unknown declaration: use the buttons of this page")
        with bastion.db.write() as session:
            done = commitments.declare(session, normalized, [commitments.Declaration(action, form.get("contact", ""))],
                                       principal=user.principal, context=context_of(request), secret=bastion.secret)
    except ServiceError as exc:
        report = _report(request, normalized)
        if report is None:
            return _missing(request, name)
        return _security_page(request, report, status=exc.status, error=exc.message, form=form)
    return redirect(f"/projects/{normalized}/security", flash="; ".join(done).capitalize() + ".")


# ---------------------------------------------------------------------------------------------
# The whole index
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Bar:
    """One bar of the time-to-fix chart, laid out."""

    label: str
    count: int
    x: float
    y: float
    width: float
    height: float


CHART_WIDTH, CHART_HEIGHT, CHART_LEFT, CHART_TOP, CHART_BOTTOM = 720, 260, 44, 30, 48


def fix_histogram(days: list[int]) -> list[Bar]:
    """Bars of the time-to-fix distribution, scaled to the chart."""
    counts = [0] * len(FIX_BUCKETS)
    for value in days:
        for index, (_, bound) in enumerate(FIX_BUCKETS):
            if bound is None or value <= bound:
                counts[index] += 1
                break
    top = max(counts, default=0) or 1
    plot_width = CHART_WIDTH - CHART_LEFT - 16
    plot_height = CHART_HEIGHT - CHART_TOP - CHART_BOTTOM
    slot = plot_width / len(FIX_BUCKETS)
    bars = []
    for index, ((label, _), count) in enumerate(zip(FIX_BUCKETS, counts)):
        height = plot_height * count / top
        bars.append(Bar(label=label, count=count, x=round(CHART_LEFT + index * slot + slot * 0.15, 1),
                        y=round(CHART_TOP + plot_height - height, 1), width=round(slot * 0.7, 1),
                        height=round(height, 1)))
    return bars


def _index(request: Request) -> commitments.IndexSnapshot:
    with bastion_of(request).db.read() as session:
        return commitments.index_snapshot(session)


@router.get("/security", include_in_schema=False)
def index_security_page(request: Request) -> Response:
    snapshot = _index(request)
    now = utcnow()
    median = statistics.median(snapshot.fix_days) if snapshot.fix_days else None
    return render_page(request, "security_index.html", snapshot=snapshot, now=now, median=median,
                       bars=fix_histogram(snapshot.fix_days),
                       chart={"width": CHART_WIDTH, "height": CHART_HEIGHT, "left": CHART_LEFT, "top": CHART_TOP,
                              "bottom": CHART_HEIGHT - CHART_BOTTOM})


@router.get("/security.json", summary="Projects with open advisories on their latest release, and index totals")
def index_security_json(request: Request) -> Response:
    """Most severe, then oldest, first; the totals the index-wide security page shows."""
    snapshot = _index(request)
    return JSONResponse(snapshot.as_json(utcnow()), headers={"Cache-Control": "no-store"})

