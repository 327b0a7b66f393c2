"""The public 2FA dashboard in the browser: its figures are those of /stats/2fa.json, and its
chart (inline SVG, no script) draws the JSON's history."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.browser.conftest import Site, Tab


def seed(data_dir: Path, database_url: str) -> None:
    """Four users (two with an authenticator app, one with a security key), three projects (one
    critical) and three daily snapshots of the past."""
    from sqlalchemy import select

    from bastion.accounts import mfa
    from bastion.accounts.models import User, WebAuthnCredential
    from bastion.db import utcnow
    from bastion.insights.models import CriticalProject, MfaSnapshot
    from bastion.packaging.models import Project, Role
    from bastion.services import Bastion
    from bastion.settings import load_settings
    from tests.conftest import make_user

    bastion = Bastion(load_settings(data_dir, database_url=database_url), run_migrations=False)
    try:
        for name in ("ann", "bob", "cid", "dee"):
            make_user(bastion, name)
        with bastion.db.write() as session:
            users = {u.username: u for u in session.execute(select(User)).scalars()}
            for name in ("ann", "bob"):
                users[name].totp_secret = mfa.encrypt_secret(bastion.encryption_key, mfa.new_totp_secret())
                users[name].mfa_enabled = utcnow()
            session.add(WebAuthnCredential(user_id=users["bob"].id, credential_id="AAAA", public_key=b"\x00",
                                           name="key"))
            projects = {}
            for name in ("p-one", "p-two", "p-three"):
                projects[name] = Project(name=name, normalized_name=name, ultranormalized_name=name.replace("-", ""))
                session.add(projects[name])
            session.flush()
            for project, user, role in (("p-one", "ann", "owner"), ("p-two", "ann", "owner"),
                                        ("p-two", "cid", "maintainer"), ("p-three", "bob", "owner")):
                session.add(Role(project_id=projects[project].id, user_id=users[user].id, role=role))
            session.add(CriticalProject(project_id=projects["p-two"].id, downloads=1000))
            today = datetime.now(UTC).date()
            for days_ago, share in ((30, 0.0), (20, 0.25), (10, 0.5)):
                session.add(MfaSnapshot(day=today - timedelta(days=days_ago), data={
                    "users_any_2fa_share": share, "critical_maintainers_2fa_share": share / 2,
                    "projects_all_2fa_share": share + 0.2,
                }))
    finally:
        bastion.close()


def percent(share: float) -> str:
    return f"{share * 100:.1f}\u00a0%"


def test_dashboard_shows_the_figures_of_the_json_and_a_chart(make_site: Callable[..., Site],
                                                             new_tab: Callable[[Site], Tab]) -> None:
    site = make_site(seed=seed)
    tab = new_tab(site)
    page = tab.page
    response = page.request.get(tab.url("/stats/2fa.json"))
    assert response.status == 200
    figures = json.loads(response.text())
    # The seed, as the JSON reports it.
    assert (figures["users"], figures["users_any_2fa"], figures["users_totp"], figures["users_webauthn"]) == (4, 2, 2, 1)
    assert (figures["critical_projects"], figures["critical_maintainers"], figures["critical_maintainers_2fa"]) == (1, 2, 1)
    assert (figures["projects"], figures["projects_all_2fa"]) == (3, 2)
    history = figures["history"]
    assert [row["users_any_2fa_share"] for row in history[:3]] == [0.0, 0.25, 0.5]

    tab.goto("/stats/2fa")
    assert tab.text("h1") == "Two-factor authentication"

    # The four cards.
    cards = page.locator("section.cards .card")
    assert cards.count() == 4
    expected_cards = [
        (percent(figures["users_any_2fa_share"]), f"{figures['users_any_2fa']} of {figures['users']}"),
        (percent(figures["critical_maintainers_2fa_share"]),
         f"{figures['critical_maintainers_2fa']} of {figures['critical_maintainers']}"),
        (percent(figures["projects_all_2fa_share"]), f"{figures['projects_all_2fa']} of {figures['projects']}"),
        (str(figures["critical_projects"]), None),
    ]
    for index, (figure, count) in enumerate(expected_cards):
        card = cards.nth(index)
        assert card.locator(".figure").inner_text() == figure, index
        if count is not None:
            assert card.locator(".muted").inner_text() == count, index
    assert percent(0.5) == cards.nth(0).locator(".figure").inner_text()  # 2 of 4

    # The table: every row's counts and share.
    rows = {
        row.locator("th").inner_text(): [cell.inner_text() for cell in row.locator("td").all()]
        for row in page.locator("table.stats tbody tr").all()
    }
    pairs = {
        "Users, any second factor": ("users_any_2fa", "users"),
        "Users with an authenticator app (TOTP)": ("users_totp", "users"),
        "Users with a security key (WebAuthn)": ("users_webauthn", "users"),
        f"Owners and maintainers of the {figures['critical_projects']} critical projects":
            ("critical_maintainers_2fa", "critical_maintainers"),
        "Projects whose every owner and maintainer has 2FA": ("projects_all_2fa", "projects"),
    }
    assert set(rows) == set(pairs)
    for label, (part, whole) in pairs.items():
        assert rows[label] == [str(figures[part]), str(figures[whole]), percent(figures[f"{part}_share"])], label

    # The chart: an inline SVG, one line per series and one point per snapshot of the JSON.
    chart = page.locator("figure.chart svg")
    assert chart.is_visible()
    box = chart.bounding_box()
    assert box is not None and box["width"] >= 600 and box["height"] >= 250, box
    series = chart.locator("g.series")
    assert series.count() == 3
    for index, (field, label) in enumerate((
        ("users_any_2fa_share", "Users with 2FA"),
        ("critical_maintainers_2fa_share", "Maintainers of critical projects with 2FA"),
        ("projects_all_2fa_share", "Projects fully on 2FA"),
    )):
        points = [row for row in history if isinstance(row.get(field), (int, float))]
        titles = series.nth(index).locator("circle title").all_text_contents()
        assert titles == [f"{label}: {row[field] * 100:.1f} % on {row['day']}" for row in points]
        assert series.nth(index).locator("polyline").count() == 1
    assert chart.locator("g.legend text").all_text_contents() == [
        "Users with 2FA", "Maintainers of critical projects with 2FA", "Projects fully on 2FA",
    ]
    assert f"({len(history)} in the last year)" in tab.text("figcaption")
    tab.screenshot("stats-2fa")
