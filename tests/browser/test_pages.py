"""Every page of the web UI, in Chromium: it renders (a title, a heading, the security headers)
without a console error, an uncaught exception or a CSP violation, and is photographed into the
pytest tmp dir (``screenshots/<test name>/``) for a person to look at."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.conftest import (
    PASSWORD,
    Site,
    Tab,
    TotpApp,
    Walk,
    enroll_totp,
    register,
    sign_in_password,
    sign_out,
    verification_link,
)


def test_every_page_renders_cleanly(site: Site, tab: Tab) -> None:
    page = tab.page
    walk = Walk(tab)

    # Signed out.
    walk.goto("home", "/")
    walk.goto("register", "/account/register")
    page.get_by_label("Username").fill("pat")
    page.get_by_label("Email").fill("pat@example.org")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD + "!")
    walk.submit("register-error", "#register", status=400)
    assert "the two passwords differ" in tab.text("p.error")
    assert page.get_by_label("Username").input_value() == "pat"  # kept for the next try
    walk.goto("sign-in", "/account/login")
    page.get_by_label("Username").fill("nobody")
    page.get_by_label("Password").fill(PASSWORD)
    walk.submit("sign-in-error", "#sign-in", status=403)
    assert tab.text("p.error") == "wrong username or password"
    walk.goto("verify-email-bad-link", "/account/verify-email?token=not-a-token", status=400)
    assert "not valid" in tab.text("p.error")
    walk.goto("stats-2fa", "/stats/2fa")

    # An account, its email verified from the message the SMTP server received.
    register(tab, "pat", "pat@example.org")
    walk.look("account-unverified")
    page.goto(verification_link(site, "pat@example.org"))
    walk.look("email-verified")
    walk.goto("account", "/account/")
    walk.goto("history", "/account/history")
    assert page.locator("#events tbody tr").count() >= 2  # registered, signed in, verified
    walk.goto("2fa-none", "/account/2fa")
    walk.submit("totp-enroll", "#totp-add")
    page.get_by_label("Code").fill(TotpApp(tab.text("#totp-secret")).wrong_code())
    walk.submit("totp-enroll-wrong-code", "#totp-confirm", status=400)
    assert "that code does not match" in tab.text("p.error")
    app, recovery_codes = enroll_totp(tab)  # starts again, with a new key
    walk.look("recovery-codes")
    walk.goto("2fa-totp", "/account/2fa")
    walk.goto("account-2fa", "/account/")
    walk.goto("tokens-none", "/account/tokens")
    page.get_by_label("Description").fill("pages test")
    walk.submit("token-created", "#create-token")
    walk.goto("tokens", "/account/tokens")
    walk.goto("reauth", "/account/reauth?next=/account/tokens")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_text("Use a recovery code instead").click()
    page.get_by_label("Recovery code").fill(recovery_codes[0])
    walk.submit("reauth-done", "#confirm")
    assert page.url == f"{site.url}/account/tokens"

    # Signing in again: the second step.
    sign_out(tab)
    walk.look("signed-out")
    sign_in_password(tab, "pat")
    walk.look("sign-in-2fa")
    page.get_by_label("Code from your authenticator app").fill(app.wrong_code())
    walk.submit("sign-in-2fa-error", "#verify", status=403)
    page.get_by_label("Code from your authenticator app").fill(app.code())
    walk.submit("signed-in", "#verify")
    assert page.url == f"{site.url}/account/"

    # Password reset, with the link from the email.
    sign_out(tab)
    walk.goto("reset-request", "/account/reset-password")
    page.get_by_label("Username or email").fill("pat")
    walk.submit("reset-sent", page.get_by_role("button", name="Send me a link"))
    message = site.mailbox.wait_for(to="pat@example.org", subject_contains="Reset your password", timeout=15)
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    link = next(word for word in body.get_content().split() if "/account/reset-password?token=" in word)
    page.goto(link)
    walk.look("reset-choose-password")

    # A form whose CSRF token no longer matches (its cookie is gone) is refused with a page.
    walk.goto("sign-in-again", "/account/login")
    tab.context.clear_cookies()
    page.get_by_label("Username").fill("pat")
    page.get_by_label("Password").fill(PASSWORD)
    walk.submit("csrf-refused", "#sign-in", status=403)
    assert "CSRF check failed" in tab.text("p.error")

    assert len(walk.seen) == len(set(walk.seen))


def test_the_console_watch_sees_csp_violations(site: Site, tab: Tab) -> None:
    """The watch above is not blind: an inline style and an inline script put into a page are
    refused by the CSP, and reported."""
    tab.goto("/account/login")
    tab.assert_clean()
    tab.page.evaluate("""() => {
        document.body.insertAdjacentHTML("beforeend", '<p style="color: red">styled</p>');
        const script = document.createElement("script");
        script.textContent = "window.inlineRan = true";
        document.body.appendChild(script);
    }""")
    expect(tab.page.locator("p", has_text="styled")).to_be_visible()
    assert tab.page.evaluate("() => window.inlineRan === undefined")  # blocked
    tab.page.wait_for_timeout(200)  # the reports are asynchronous
    problems = tab.problems()
    tab.console.clear()
    assert any("style-src" in p and "Content Security Policy" in p for p in problems), problems
    assert any("script-src" in p and "Content Security Policy" in p for p in problems), problems
    assert any(p.startswith("CSP violation: style-src") for p in problems), problems
    assert any(p.startswith("CSP violation: script-src") for p in problems), problems

