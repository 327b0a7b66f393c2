"""HTTP routes of the public 2FA dashboard: an HTML page and its JSON twin (no sign-in)."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from bastion.http import bastion_of
from bastion.insights.chart import line_chart_svg
from bastion.insights.mfa_stats import Dashboard, current_dashboard
from bastion.web.render import render_page

router = APIRouter()

# The shares drawn over time: (snapshot field, label in the chart, the JSON history and the page).
HISTORY_SERIES = (
    ("users_any_2fa_share", "Users with 2FA"),
    ("critical_maintainers_2fa_share", "Maintainers of critical projects with 2FA"),
    ("projects_all_2fa_share", "Projects fully on 2FA"),
)
CACHE_CONTROL = "max-age=60, public"  # the JSON is the same for everyone


def _history_rows(dashboard: Dashboard) -> list[dict[str, Any]]:
    rows = []
    for day, data in dashboard.history:
        row: dict[str, Any] = {"day": day.isoformat()}
        for field, _ in HISTORY_SERIES:
            row[field] = data.get(field)
        rows.append(row)
    return rows


@router.get("/stats/2fa.json", summary="Two-factor authentication figures of the index, and their history")
def mfa_stats_json(request: Request, response: Response) -> dict[str, Any]:
    """The current figures (counts, and shares from 0 to 1) and one entry per daily snapshot of
    the last year, oldest first. Recomputed at most once a minute."""
    dashboard = current_dashboard(bastion_of(request).db)
    response.headers["Cache-Control"] = CACHE_CONTROL
    return {
        **dashboard.stats.as_dict(),
        "computed": dashboard.computed.isoformat(),
        "history": _history_rows(dashboard),
    }


@router.get("/stats/2fa", response_class=HTMLResponse, include_in_schema=False)
def mfa_stats_page(request: Request) -> HTMLResponse:
    dashboard = current_dashboard(bastion_of(request).db)
    series: dict[str, list[tuple[date, float]]] = {
        label: [(day, float(data[field])) for day, data in dashboard.history
                if isinstance(data.get(field), (int, float))]
        for field, label in HISTORY_SERIES
    }
    chart = Markup(line_chart_svg(series, title="Share of accounts and projects with 2FA"))  # escaped inside
    # No public caching here: the page's header names the signed-in user.
    return render_page(request, "stats_2fa.html", stats=dashboard.stats, computed=dashboard.computed,
                       chart=chart, snapshots=len(dashboard.history))
