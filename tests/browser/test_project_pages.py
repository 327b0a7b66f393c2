"""The project pages (the list, a project's page, its management and history) and the admin
pages, in Chromium, with a project published by twine: each renders cleanly (conftest.py's
``Walk``: headers, no console error or CSP violation) and is photographed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.browser.conftest import Site, Tab, Walk, enroll_totp, register, verification_link
from tests.distbuilder import make_sdist, make_wheel, metadata_text
from tests.integration.conftest import describe


def test_project_and_admin_pages_render_cleanly(site: Site, new_tab: Callable[[Site], Tab], tmp_path: Path) -> None:
    """The project pages (public, and the owner's), and the admin pages, with a project published
    by twine, its Markdown description rendered."""
    owner = new_tab(site)
    walk = Walk(owner)
    page = owner.page
    register(owner, "olga", "olga@example.org")
    page.goto(verification_link(site, "olga@example.org"))
    enroll_totp(owner)
    owner.goto("/account/tokens")
    page.click("#create-token")
    token = owner.text("#new-token").strip()
    dist = tmp_path / "dist"
    dist.mkdir()
    description = "# Olga's demo\n\nA *small* project, with `code` and a [link](https://example.org/).\n"
    metadata = metadata_text("olga-demo", "1.0.0", description=description, content_type="text/markdown")
    files = [make_wheel(dist, "olga-demo", "1.0.0", metadata=metadata),
             make_sdist(dist, "olga-demo", "1.0.0", metadata=metadata)]
    upload = site.twine_upload(files, token)
    assert upload.returncode == 0, describe(upload)

    # Signed out: the list, a search, the project, its non-normalized name, a project that does not exist.
    visitor = Walk(new_tab(site))
    visitor.goto("projects", "/projects/")
    assert "olga-demo" in visitor.tab.text("#projects")
    visitor.goto("projects-search", "/projects/?q=olg")
    assert "olga-demo" in visitor.tab.text("#projects")
    visitor.goto("project", "/projects/olga-demo/")
    assert visitor.tab.text("#description h1") == "Olga's demo"
    assert visitor.tab.page.locator("#description em", has_text="small").count() == 1
    assert "olga_demo-1.0.0-py3-none-any.whl" in visitor.tab.text("#files")
    assert "olga" in visitor.tab.text("#people")
    visitor.goto("project-redirected", "/projects/Olga_Demo/")
    assert visitor.tab.page.url == f"{site.url}/projects/olga-demo/"
    visitor.goto("project-missing", "/projects/no-such-project/", status=404)

    # The owner's pages.
    walk.goto("project-as-owner", "/projects/olga-demo/")
    walk.goto("project-manage", "/projects/olga-demo/manage")
    assert "olga" in owner.text("#roles")
    walk.goto("project-history", "/projects/olga-demo/history")
    walk.goto("admin-refused", "/admin/", status=403)

    # The admin pages, once olga is an index admin.
    made = site.cli("user", "set-admin", "olga")
    assert made.returncode == 0, describe(made)
    walk.goto("admin", "/admin/")
    assert "olga" in owner.text("#users")
    walk.goto("admin-events", "/admin/events")
    walk.goto("admin-events-filtered", "/admin/events?action=login.succeeded")
