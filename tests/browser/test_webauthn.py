"""Security keys in the browser: Chromium's virtual WebAuthn authenticator (DevTools protocol)
stands in for a USB key. Register one, sign in with it, and remove it, which asks to confirm it
is you first."""

from __future__ import annotations

import re

from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import Site, Tab, register, sign_in_password, sign_out


def virtual_authenticator(tab: Tab) -> tuple[Any, str]:
    """A CTAP2 USB key that consents to everything, attached to the tab; (CDP session, its id)."""
    cdp = tab.context.new_cdp_session(tab.page)
    cdp.send("WebAuthn.enable")
    added = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "usb", "hasResidentKey": False, "hasUserVerification": False,
        "isUserConsenting": True, "automaticPresenceSimulation": True,
    }})
    return cdp, added["authenticatorId"]


def credentials(cdp: Any, authenticator: str) -> list[dict[str, Any]]:
    return list(cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"])


def test_security_key_registration_sign_in_and_removal(site: Site, tab: Tab) -> None:
    page = tab.page
    cdp, authenticator = virtual_authenticator(tab)
    register(tab, "keyholder", "keyholder@example.org")

    # Register the key: the first second factor, so the recovery codes follow.
    tab.goto("/account/2fa")
    assert tab.text("#mfa-status") == "not enabled"
    page.click("#webauthn-register")  # no name yet: the script asks for one
    expect(page.locator("#webauthn-error")).to_have_text("Give the key a name first, e.g. 'YubiKey (office)'.")
    page.fill("#webauthn-name", "Virtual key (desk)")
    page.click("#webauthn-register")
    page.wait_for_url(re.compile(r".*/account/2fa/recovery-codes/new\?n=[\w-]{16,}$"))  # with its one-time nonce
    shown_at = page.url
    assert "Your security key is registered." in tab.text("p.flash")
    assert len(tab.text("#recovery-codes").split()) >= 8
    (stored,) = credentials(cdp, authenticator)
    assert stored["rpId"] == "localhost"
    page.get_by_role("link", name="I saved them").click()
    tab.at("/account/2fa")
    assert tab.text("#mfa-status") == "enabled"
    keys = page.locator("tr.security-key")
    assert keys.count() == 1
    assert keys.locator("input[name=name]").input_value() == "Virtual key (desk)"
    assert "never" in keys.inner_text()  # not used yet
    tab.screenshot("key-registered")

    # The recovery codes page was shown once: going back to it leads to the 2FA page.
    page.goto(shown_at)
    tab.at("/account/2fa")

    # Sign out, then in with the password and the key.
    sign_out(tab)
    sign_in_password(tab, "keyholder")
    tab.at("/account/login/2fa?next=/account/")
    assert page.locator("#webauthn-login").is_visible()
    page.click("#webauthn-login")
    tab.at("/account/")
    assert tab.text("h1") == "keyholder"
    assert "1 security key" in tab.text("section:has(#mfa-status)")
    (used,) = credentials(cdp, authenticator)
    assert used["signCount"] > stored["signCount"]

    # Removing the key is sensitive: once the sign-in's confirmation is older than the
    # re-authentication window (15 minutes; the database is set as if that time had passed),
    # the removal asks for the password and the key again.
    site.sql("UPDATE sessions SET reauth_at = NULL")
    tab.goto("/account/2fa")
    page.locator("tr.security-key").get_by_role("button", name="Remove").click()
    tab.at("/account/reauth?next=/account/2fa")
    assert "Confirm it is you" in tab.text("p.flash")
    assert site.sql("SELECT count(*) FROM webauthn_credentials") == [(1,)]
    tab.screenshot("reauth")
    page.click("#webauthn-reauth")  # no password yet
    expect(page.locator("#webauthn-error")).to_have_text("Enter your password first.")
    page.get_by_label("Password").fill("correct horse battery staple")
    page.click("#webauthn-reauth")
    tab.at("/account/2fa")
    with page.expect_navigation():
        page.locator("tr.security-key").get_by_role("button", name="Remove").click()
    assert page.url == f"{site.url}/account/2fa"
    assert "Security key removed." in tab.text("p.flash")
    assert page.locator("tr.security-key").count() == 0
    assert tab.text("#mfa-status") == "not enabled"
    assert site.sql("SELECT count(*) FROM webauthn_credentials") == [(0,)]

    # Without a second factor, the password alone signs in again.
    sign_out(tab)
    sign_in_password(tab, "keyholder")
    tab.at("/account/")
