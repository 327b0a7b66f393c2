"""A newcomer, in the browser: sign up, verify the address from the email, enable an
authenticator app, sign in with it, make an API token, publish with twine and install with pip."""

from __future__ import annotations

from pathlib import Path

from tests.browser.conftest import (
    PASSWORD,
    Site,
    Tab,
    enroll_totp,
    register,
    sign_in_password,
    sign_out,
    verification_link,
)
from tests.distbuilder import make_sdist, make_wheel
from tests.integration.conftest import describe, installed, output


def test_newcomer_signs_up_secures_the_account_and_publishes(site: Site, tab: Tab, tmp_path: Path) -> None:
    page = tab.page
    email = "newcomer@example.org"

    # Sign up: signed in at once, asked to verify the address.
    register(tab, "newcomer", email)
    assert f"We sent a link to {email}" in tab.text("p.flash")
    assert tab.text("h1") == "newcomer"
    assert page.locator(".badge", has_text="not verified").is_visible()
    assert tab.text("#mfa-status") == "not enabled"
    tab.screenshot("account-new")

    # The verification email reached the SMTP server; its link works in the browser.
    link = verification_link(site, email)
    assert link.startswith(f"{site.url}/account/verify-email?token="), link
    page.goto(link)
    assert tab.text("h1") == "Email verified"
    assert f"{email} is verified" in tab.text("main")
    page.get_by_role("link", name="Go to your account").click()
    tab.at("/account/")
    assert page.locator(".badge.ok", has_text="verified").is_visible()
    assert page.locator(".badge", has_text="not verified").count() == 0

    # An authenticator app, from the QR page; the recovery codes are shown once.
    app, codes = enroll_totp(tab)
    assert "Your authenticator app is enrolled." in tab.text("p.flash")
    assert len(set(codes)) == len(codes)
    page.get_by_role("link", name="I saved them").click()
    tab.at("/account/2fa")
    assert tab.text("#mfa-status") == "enabled"
    assert page.locator("#totp-remove").is_visible()

    # Sign out, then in again: password, then a code from the app.
    sign_out(tab)
    assert page.get_by_role("link", name="Sign in").is_visible()
    sign_in_password(tab, "newcomer")
    tab.at("/account/login/2fa?next=/account/")
    page.get_by_label("Code from your authenticator app").fill(app.code())
    page.click("#verify")
    tab.at("/account/")
    assert tab.text("#mfa-status") == "enabled"
    assert "authenticator app" in tab.text("section:has(#mfa-status)")
    assert page.locator(".badge.ok", has_text="verified").is_visible()

    # An API token for all projects (there is none yet), copied from the page once.
    page.get_by_role("link", name="manage your API tokens").click()
    tab.at("/account/tokens")
    assert "You have no projects yet." in tab.text("form[action='/account/tokens']")
    page.get_by_label("Description").fill("laptop twine")
    assert page.get_by_label("All my projects (and new ones)").is_checked()
    with page.expect_navigation():
        page.click("#create-token")
    assert tab.text("h1") == "Your new API token"
    token = tab.text("#new-token").strip()
    assert token.startswith("bastion-") and " " not in token, token
    assert "Scope: all your projects." in tab.text("main")
    assert f"twine upload --repository-url {site.url}/legacy/ -u __token__" in tab.text("main")
    tab.screenshot("token-created")

    # Publish with twine and that token, install with pip from the index.
    dist = tmp_path / "dist"
    dist.mkdir()
    files = [make_wheel(dist, "newcomer-widget", "1.0.0"), make_sdist(dist, "newcomer-widget", "1.0.0")]
    upload = site.twine_upload(files, token)
    assert upload.returncode == 0, describe(upload)
    for file in files:
        assert f"Uploading {file.name}" in output(upload), describe(upload)
    target = tmp_path / "target"
    install = site.pip_install(target, "newcomer-widget==1.0.0")
    assert install.returncode == 0, describe(install)
    assert installed(target) == {"newcomer-widget": "1.0.0"}
    assert (target / "newcomer_widget" / "__init__.py").is_file()

    # The project's page: the newcomer's release, files and name.
    tab.goto("/projects/newcomer-widget/")
    assert tab.text("main h1").startswith("newcomer-widget")
    assert "newcomer_widget-1.0.0-py3-none-any.whl" in tab.text("#files")
    assert "newcomer" in tab.text("#people")
    tab.screenshot("project")

    # The token list shows the token; the project is the account's.
    tab.goto("/account/tokens")
    row = page.locator("#token-list tbody tr", has_text="laptop twine")
    assert row.count() == 1
    assert "all projects" in row.inner_text()

    # Now that the project exists, a token limited to it, for the next release.
    page.get_by_label("Description").fill("widget CI")
    page.get_by_label("Only these projects:").check()
    page.get_by_label("newcomer-widget").check()
    with page.expect_navigation():
        page.click("#create-token")
    assert tab.text("h1") == "Your new API token"
    assert "Scope: newcomer-widget." in tab.text("main")
    limited = tab.text("#new-token").strip()
    next_release = site.twine_upload([make_wheel(dist, "newcomer-widget", "1.1.0")], limited)
    assert next_release.returncode == 0, describe(next_release)
    tab.goto("/account/tokens")
    assert "newcomer-widget" in page.locator("#token-list tbody tr", has_text="widget CI").inner_text()

    # The public 2FA dashboard counts the newcomer and the project.
    tab.goto("/stats/2fa")
    assert "1 of 1" in tab.text("section.cards .card:nth-child(1)")
    assert "1 of 1" in tab.text("section.cards .card:nth-child(3)")
    tab.screenshot("dashboard")


def test_a_wrong_or_replayed_code_is_refused_with_an_explanation(site: Site, tab: Tab) -> None:
    page = tab.page
    register(tab, "carla", "carla@example.org")
    app, _ = enroll_totp(tab)
    sign_out(tab)

    sign_in_password(tab, "carla")
    tab.at("/account/login/2fa?next=/account/")
    code_field = page.get_by_label("Code from your authenticator app")
    code_field.fill(app.wrong_code())
    with page.expect_navigation() as navigation:
        page.click("#verify")
    assert navigation.value.status == 403
    assert tab.text("p.error") == "invalid or expired code: enter the current 6-digit code from your authenticator app"
    assert tab.text("h1") == "Two-factor authentication"
    assert page.get_by_role("link", name="Sign in").is_visible()  # not signed in
    tab.screenshot("wrong-code")

    good = app.code()
    page.get_by_label("Code from your authenticator app").fill(good)
    page.click("#verify")
    tab.at("/account/")
    assert tab.text("h1") == "carla"

    # The same code again (the next sign-in, within its 30 s): refused as a replay.
    sign_out(tab)
    sign_in_password(tab, "carla")
    page.get_by_label("Code from your authenticator app").fill(good)
    with page.expect_navigation() as navigation:
        page.click("#verify")
    assert navigation.value.status == 403
    assert tab.text("p.error") == "this code was used already: wait for your authenticator app to show the next code"

    # A wrong password never reaches the second step.
    sign_in_password(tab, "carla", PASSWORD + "x")
    assert tab.text("p.error") == "wrong username or password"
    assert page.url == f"{site.url}/account/login"
