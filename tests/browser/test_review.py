"""The malware review pages in Chromium, against a live ``bastion serve``: an admin works the
queue (a file held with a scanner finding), releases the file and finds the decision on record;
a signed-in user reports a project through the form. Every page renders cleanly (conftest.py's
``Walk``: headers, no console error or CSP violation) and is photographed.

The file is put on hold as the upload path does on a ``quarantine`` verdict (tests/unit/
test_web_review.py's ``hold``); the server runs with ``scan = off`` so that the test does not
depend on the scanner's rules (tested on their own)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import expect

from bastion.services import Bastion
from bastion.settings import load_settings
from tests.browser.conftest import Site, Tab, Walk, sign_in_password
from tests.conftest import PASSWORD, make_user
from tests.distbuilder import make_wheel, metadata_text
from tests.integration.conftest import describe
from tests.unit.test_web_review import hold

FILENAME = "wicked_widgets-1.0-py3-none-any.whl"


def test_admin_releases_a_held_file_and_a_user_reports_a_project(
        make_site: Callable[..., Site], new_tab: Callable[[Site], Tab], tmp_path: Path) -> None:
    tokens: dict[str, str] = {}
    urls: dict[str, str] = {}

    def seed(data_dir: Path, database_url: str) -> None:
        (data_dir / "bastion.toml").write_text('scan = "off"\n', encoding="utf-8")
        urls["database"] = database_url
        bastion = Bastion(load_settings(data_dir, database_url=database_url), run_migrations=False)
        try:
            tokens["alice"] = make_user(bastion, "alice")
            make_user(bastion, "carol")
            make_user(bastion, "root", admin=True)
        finally:
            bastion.close()

    site = make_site(seed)
    dist = tmp_path / "dist"
    dist.mkdir()
    wheel = make_wheel(dist, "wicked-widgets", "1.0", metadata=metadata_text("wicked-widgets", "1.0"))
    published = site.twine_upload([wheel], tokens["alice"])
    assert published.returncode == 0, describe(published)
    bastion = Bastion(load_settings(site.data_dir, database_url=urls["database"]), run_migrations=False)
    try:
        case_id = hold(bastion, "wicked-widgets", "1.0")
    finally:
        bastion.close()

    # The admin: the queue, the case, the release, the record.
    admin = new_tab(site)
    walk = Walk(admin)
    page = admin.page
    sign_in_password(admin, "root", PASSWORD)
    admin.at("/account/")
    walk.goto("admin", "/admin/")
    assert admin.text("#open-cases") == "1"
    walk.submit("review-queue", "#review-link")
    assert page.url == f"{site.url}/admin/review/"
    row = page.locator("#cases tbody tr", has_text=FILENAME)
    expect(row).to_have_count(1)
    expect(row).to_contain_text("wicked-widgets")
    expect(row).to_contain_text("hidden")
    expect(row.locator("code.excerpt")).to_contain_text("exec(base64.b64decode(PAYLOAD))")
    walk.submit("review-case", row.get_by_role("link", name=f"#{case_id}"))
    assert page.url == f"{site.url}/admin/review/{case_id}"
    finding = page.locator("#findings tbody tr").first
    expect(finding).to_contain_text("install.exec-decoded")
    expect(finding.locator("code.excerpt")).to_contain_text("exec(base64.b64decode(PAYLOAD))")
    expect(page.locator("#people")).to_contain_text("alice")
    expect(page.locator("#dismiss")).to_have_count(0)  # a hidden case is released or removed
    page.locator("#decision-form").get_by_label("Note").fill("reviewed: a false positive")
    walk.submit("review-released", "#release")
    assert page.url == f"{site.url}/admin/review/{case_id}"
    expect(page.locator("p.flash")).to_contain_text("released")
    expect(page.locator("#case-state")).to_contain_text("released by root")
    expect(page.locator("#decision-form")).to_have_count(0)
    walk.submit("review-decided", "#decided-link")
    decided = page.locator("#cases tbody tr", has_text=FILENAME)
    expect(decided).to_contain_text("released")
    expect(decided).to_contain_text("root")
    expect(decided).to_contain_text("reviewed: a false positive")
    walk.goto("review-queue-empty", "/admin/review/")
    expect(page.locator("#cases")).to_contain_text("No open cases")
    walk.goto("admin-names", "/admin/names")

    # The file is published: on its page and in the simple index.
    walk.goto("project-released", "/projects/wicked-widgets/")
    expect(page.locator("#files")).to_contain_text(FILENAME)

    # A user reports the project.
    reporter = new_tab(site)
    user_walk = Walk(reporter)
    sign_in_password(reporter, "carol", PASSWORD)
    reporter.at("/account/")
    user_walk.goto("project", "/projects/wicked-widgets/")
    user_walk.submit("report-form", "#report-link")
    assert reporter.page.url == f"{site.url}/projects/wicked-widgets/report"
    reporter.page.get_by_label("Reason").fill("wicked_widgets/__init__.py sends ~/.ssh to a paste site")
    user_walk.submit("report-sent", "#send-report")
    assert reporter.page.url == f"{site.url}/projects/wicked-widgets/"
    expect(reporter.page.locator("p.flash")).to_contain_text(
        "Thank you: your report on wicked-widgets is queued for review by the index administrators.")
    expect(reporter.page.locator("#quarantine-banner")).to_have_count(0)

    # The admin sees it in the queue.
    walk.goto("review-queue-report", "/admin/review/")
    reported = page.locator("#cases tbody tr", has_text="user report")
    expect(reported).to_contain_text("wicked-widgets")
    expect(reported).to_contain_text("flag")
