"""The security pages in Chromium, on a populated index: several projects uploaded, advisories
imported by the importer from OSV YAML files, an owner's declarations, a registered application.
A person reaches a project's security page from its project page (the badge loads), reads each
commitment's status and evidence, follows a dependency to its own security page, and sees the
index-wide page with its table and chart. Every page renders cleanly (``Walk``: headers, no
console error, no CSP violation)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from playwright.sync_api import expect

from tests.browser.conftest import Site, Tab, Walk

NOW = datetime.now(UTC)


def seed(data_dir: Path, database_url: str) -> None:
    """Projects uploaded through the upload route, advisories imported, declarations and an application."""
    from starlette.testclient import TestClient

    from bastion.advisories.ingest import import_path
    from bastion.advisories.models import Application, ApplicationPackage
    from bastion.app import create_app
    from bastion.authz import OPERATOR
    from bastion.insights.commitments import Declaration, declare
    from bastion.services import Bastion
    from bastion.settings import load_settings
    from tests.conftest import make_user, post_upload
    from tests.distbuilder import make_wheel, metadata_text, upload_form
    from tests.unit.test_commitments import write_advisory
    from tests.unit.test_web_pages import enroll_2fa

    bastion = Bastion(load_settings(data_dir, database_url=database_url, tuf="off"), run_migrations=False)
    try:
        token = make_user(bastion, "rosa")
        make_user(bastion, "sam")
        dists = data_dir.parent / "dists"
        with TestClient(create_app(bastion=bastion), base_url="http://testserver") as client:
            for name, version, extra in (
                ("parse-lib", "1.0", ""), ("parse-lib", "1.1", ""), ("net-lib", "2.0", ""),
                ("web-shop", "3.0", "Requires-Dist: parse-lib>=1.1\nRequires-Dist: net-lib\n"
                                    "Requires-Dist: elsewhere-lib; extra == \"docs\"\n"
                                    "Project-URL: Security, https://example.org/security\n"),
            ):
                folder = dists / f"{name}-{version}"
                folder.mkdir(parents=True)
                wheel = make_wheel(folder, name, version, metadata=metadata_text(name, version, extra=extra))
                response = post_upload(client, token, wheel, upload_form(wheel, name, version))
                assert response.status_code == 200, response.text
        tree = data_dir.parent / "advisories"
        write_advisory(tree, "PYSEC-2026-100", "parse-lib", published=NOW - timedelta(days=200), fixed="1.1",
                       aliases=("CVE-2026-1000",), summary="parse-lib reads past the end")
        write_advisory(tree, "GHSA-netl-ib20-0001", "net-lib", published=NOW - timedelta(days=90),
                       severity="HIGH", aliases=("CVE-2026-2000",), summary="net-lib trusts any certificate")
        summary = import_path(bastion, tree)
        assert summary.added == 2 and summary.skipped == 0, summary.problems
        enroll_2fa(bastion, "rosa")
        with bastion.db.write() as session:
            from bastion.packaging import service

            service.add_role(session, "web-shop", "sam", "maintainer", principal=OPERATOR)
            declare(session, "web-shop", [Declaration("confirm-roles"), Declaration("codehost-2fa")],
                    principal=OPERATOR)
            app = Application(name="checkout", source_format="requirements")
            session.add(app)
            session.flush()
            session.add(ApplicationPackage(application_id=app.id, normalized_name="web-shop", version="3.0"))
            session.add(ApplicationPackage(application_id=app.id, normalized_name="net-lib", version="2.0",
                                           direct=False))
    finally:
        bastion.close()


def status_of(tab: Tab, key: str) -> str:
    return str(tab.page.locator(f"#commitment-{key}").get_attribute("data-status"))


def test_security_pages_in_the_browser(make_site: Callable[..., Site], new_tab: Callable[[Site], Tab]) -> None:
    site = make_site(seed=seed)
    tab = new_tab(site)
    walk = Walk(tab)
    page = tab.page

    # From the project page: the badge loads (an image the browser decoded) and links to the page.
    walk.goto("project", "/projects/web-shop/")
    badge = page.locator("#security-link img.security-badge")
    expect(badge).to_be_visible()
    assert badge.evaluate("img => img.complete && img.naturalWidth > 0")
    walk.submit("security", "#security-link")
    tab.at("/projects/web-shop/security")
    assert tab.text("h1") == "Security of web-shop 3.0"

    # What a person reads: each commitment's status and its evidence.
    assert status_of(tab, "vulnerability-fixes") == "pass"
    assert status_of(tab, "disclosure") == "pass"
    assert "Project-URL 'Security': https://example.org/security" in tab.text("#commitment-disclosure")
    assert status_of(tab, "dependencies") == "fail"  # net-lib's only release has an open advisory
    assert "net-lib: every release satisfying any version has an open advisory (2.0)" in tab.text(
        "#commitment-dependencies")
    assert status_of(tab, "release-managers") == "pass"
    assert "confirmed by operator (cli) on " in tab.text("#commitment-release-managers")
    assert status_of(tab, "index-2fa") == "fail"
    assert "sam: no 2FA" in tab.text("#commitment-index-2fa")
    assert status_of(tab, "codehost-2fa") == "pass"
    assert "self-reported by operator (cli)" in tab.text("#commitment-codehost-2fa")
    assert status_of(tab, "maintenance") == "pass"
    for key in ("vulnerability-fixes", "dependencies", "maintenance"):  # each says what it checks
        assert tab.text(f"#commitment-{key} .definition").strip()
    dependencies = page.locator("#dependencies tbody tr")
    assert dependencies.count() == 3
    assert page.locator("#dependencies tr[data-name='elsewhere-lib']").get_attribute("data-status") == "unknown"
    assert 'extra == "docs"' in tab.text("#dependencies tr[data-name='elsewhere-lib']")
    assert tab.text("#apps-direct") == "1" and tab.text("#apps-transitive") == "0"
    assert "rosa" in tab.text("#people") and "sam" in tab.text("#people")

    # Following a dependency leads to its own security page, with its vulnerable release marked.
    walk.submit("dependency", page.locator("#dependencies a.dependency", has_text="parse-lib"))
    tab.at("/projects/parse-lib/security")
    assert status_of(tab, "vulnerability-fixes") == "pass"
    assert "vulnerable (1)" in tab.text("#releases-panel tr[data-version='1.0']")
    assert "latest" in tab.text("#releases-panel tr[data-version='1.1']")
    row = tab.text("#vulnerabilities tr[data-id='PYSEC-2026-100']")
    assert "CVE-2026-1000" in row and "parse-lib reads past the end" in row and "1.1" in row
    assert "web-shop" in tab.text("#reverse-dependencies")
    walk.submit("dependency-back", page.locator("#reverse-dependencies a", has_text="web-shop"))
    tab.at("/projects/web-shop/security")

    # The index-wide page: the vulnerable latest release, the totals, the chart.
    walk.goto("security-index", "/security")
    rows = page.locator("#vulnerable-projects tbody tr")
    assert rows.count() == 1
    assert rows.first.get_attribute("data-name") == "net-lib"
    assert "HIGH" in rows.first.inner_text() and "90 days" in rows.first.inner_text()
    assert tab.text("#total-projects") == "3" and tab.text("#total-releases") == "4"
    assert tab.text("#total-vulnerable") == "1" and tab.text("#total-advisories") == "2"
    chart = page.locator("svg#fix-chart")
    expect(chart).to_be_visible()
    box = chart.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 150
    assert page.locator("svg#fix-chart g.bar").count() == 6
    assert "over a year: 0" in str(page.locator("#fix-chart-desc").text_content())
    walk.submit("security-index-project", rows.first.locator("a"))
    tab.at("/projects/net-lib/security")
    assert status_of(tab, "vulnerability-fixes") == "fail"
    assert "GHSA-netl-ib20-0001 (CVE-2026-2000) open since" in tab.text("#commitment-vulnerability-fixes")
