"""The account web UI's security rules (issue 3): cookies, CSRF, sessions (sign-out, password
change, pending 2FA), re-authentication, open redirects, security headers, and bad input on every
form refused with a clear message and nothing changed.

The helpers at the top are shared with test_mfa.py, test_ratelimit.py and test_audit_verify.py.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import timedelta
from typing import Any

import pyotp
import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from bastion.accounts import mfa
from bastion.accounts.models import ApiToken, BrowserSession, User, WebAuthnCredential
from bastion.accounts.sessions import ACTIVE, PENDING, create_session
from bastion.app import create_app
from bastion.db import utcnow
from bastion.events import Event, RequestContext
from bastion.services import Bastion
from bastion.web.session import safe_next
from tests.conftest import PASSWORD, make_user, snapshot_state
from tests.unit.world import db_rows

CSRF_REFUSED = "CSRF check failed"
# For rules of the HTTP layer alone (cookie flags, headers, CSRF, redirects), which read or write
# nothing a database could treat differently: one backend is enough. Everything that stores or
# looks up what a request sent runs on both.
HTTP_ONLY = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


# ---------------------------------------------------------------------------------------------
# Helpers (shared with the other account test modules)
# ---------------------------------------------------------------------------------------------

def csrf_of(html: str) -> str:
    """The CSRF token of the first form of a page."""
    found = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', html)
    assert found, f"no CSRF token on the page: {html[:500]}"
    return found.group(1)


def page(client: TestClient, path: str) -> str:
    response = client.get(path, follow_redirects=False)
    assert response.status_code == 200, (path, response.status_code, response.headers.get("location"))
    return response.text


def sign_in(client: TestClient, name: str, password: str = PASSWORD, *, next: str | None = None) -> Any:
    """POST the sign-in form as a browser does (the form's CSRF token first); the 303 answer."""
    token = csrf_of(page(client, "/account/login"))
    data = {"csrf_token": token, "username": name, "password": password}
    if next is not None:
        data["next"] = next
    response = client.post("/account/login", data=data, follow_redirects=False)
    assert response.status_code == 303, (response.status_code, response.text[:2000])
    return response


def open_session(bastion: Bastion, client: TestClient, name: str, *, state: str = ACTIVE,
                 reauthenticated: bool = True) -> str:
    """A browser session for ``name`` made in the database (no password hashing), set as the
    client's cookie; the cookie."""
    with bastion.db.write() as session:
        user = session.execute(select(User).where(User.username == name)).scalar_one()
        cookie = create_session(session, user, state=state, lifetime=timedelta(hours=1),
                                context=RequestContext(ip="testclient"), secret=bastion.secret,
                                reauthenticated=reauthenticated)
    client.cookies.set("bastion_session", cookie)
    return cookie


def set_reauth_age(bastion: Bastion, cookie: str, age: timedelta) -> None:
    """Pretend the session's last re-authentication was ``age`` ago."""
    with bastion.db.write() as session:
        session.execute(update(BrowserSession).where(BrowserSession.id == hashlib.sha256(cookie.encode()).hexdigest())
                        .values(reauth_at=utcnow() - age))


def enroll_totp(bastion: Bastion, name: str) -> tuple[str, list[str]]:
    """Create ``name`` with TOTP enrolled ten minutes ago (so that the codes of now are unused);
    (base32 secret, recovery codes)."""
    make_user(bastion, name)
    secret = mfa.new_totp_secret()
    when = utcnow() - timedelta(minutes=10)
    with bastion.db.write() as session:
        user = session.execute(select(User).where(User.username == name)).scalar_one()
        codes = mfa.enable_totp(session, user, secret, pyotp.TOTP(secret).at(when), key=bastion.encryption_key,
                                secret=bastion.secret, now=when)
    return secret, codes or []


def verify_email(bastion: Bastion, name: str) -> None:
    with bastion.db.write() as session:
        session.execute(update(User).where(User.username == name).values(email_verified=True))


def code_now(secret: str, ahead: int = 0) -> str:
    totp = pyotp.TOTP(secret)
    return totp.generate_otp(totp.timecode(utcnow()) + ahead)


def events_since(bastion: Bastion, after: int = 0) -> list[Event]:
    with bastion.db.read() as session:
        return list(session.execute(select(Event).where(Event.id > after).order_by(Event.id)).scalars())


def last_event_id(bastion: Bastion) -> int:
    with bastion.db.read() as session:
        return session.execute(select(Event.id).order_by(Event.id.desc()).limit(1)).scalar() or 0


def rows_but_events(bastion: Bastion) -> dict[str, list[tuple]]:
    rows = db_rows(bastion)
    rows.pop("events")
    return rows


def set_cookies(response: Any) -> dict[str, str]:
    """{cookie name: the whole Set-Cookie header} of a response."""
    return {header.split("=", 1)[0]: header for header in response.headers.get_list("set-cookie")}


def cookie_flags(header: str) -> set[str]:
    return {part.strip().split("=", 1)[0].lower() for part in header.split(";")[1:]}


# ---------------------------------------------------------------------------------------------
# Cookies
# ---------------------------------------------------------------------------------------------

@HTTP_ONLY
def test_cookies_are_httponly_and_samesite_and_not_secure_over_plain_http(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    make_user(bastion, "alice")
    first = client.get("/account/login")
    csrf_cookie = set_cookies(first)["bastion_csrf"]
    assert {"httponly", "samesite", "path"} <= cookie_flags(csrf_cookie) and "SameSite=Lax" in csrf_cookie
    assert "secure" not in cookie_flags(csrf_cookie)
    assert "strict-transport-security" not in first.headers
    signed = sign_in(client, "alice")
    session_cookie = set_cookies(signed)["bastion_session"]
    assert {"httponly", "samesite", "path", "max-age"} <= cookie_flags(session_cookie)
    assert "SameSite=Lax" in session_cookie and "Max-Age=43200" in session_cookie  # session_lifetime 12h
    assert "secure" not in cookie_flags(session_cookie)
    # the database keeps only the cookie's SHA-256
    cookie = session_cookie.split(";")[0].split("=", 1)[1]
    with bastion.db.read() as session:
        ids = session.execute(select(BrowserSession.id)).scalars().all()
    assert ids == [hashlib.sha256(cookie.encode()).hexdigest()]
    assert cookie not in repr(db_rows(bastion))


@pytest.mark.parametrize("settings", [{"cookie_secure": "always"}, {"public_url": "https://pypi.example.org"}],
                         ids=["cookie_secure=always", "https public_url"])
@HTTP_ONLY
def test_cookies_are_secure_and_hsts_is_sent_behind_tls(bastion_with, settings: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    _, client = bastion_with(**settings)
    response = client.get("/account/login")
    assert "secure" in cookie_flags(set_cookies(response)["bastion_csrf"])
    assert response.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"


@HTTP_ONLY
def test_over_https_the_session_cookie_is_secure(bastion: Bastion) -> None:
    make_user(bastion, "alice")
    with TestClient(create_app(bastion=bastion), base_url="https://testserver") as client:
        signed = sign_in(client, "alice")
        assert "secure" in cookie_flags(set_cookies(signed)["bastion_session"])
        assert "strict-transport-security" in signed.headers
        assert client.get("/account/", follow_redirects=False).status_code == 200


@HTTP_ONLY
def test_cookie_secure_never_turns_secure_and_hsts_off(bastion_with) -> None:  # type: ignore[no-untyped-def]
    instance, _ = bastion_with(cookie_secure="never", public_url="https://pypi.example.org")
    with TestClient(create_app(bastion=instance), base_url="https://testserver") as client:
        response = client.get("/account/login")
    assert "secure" not in cookie_flags(set_cookies(response)["bastion_csrf"])
    assert "strict-transport-security" not in response.headers


# ---------------------------------------------------------------------------------------------
# Security headers on every page
# ---------------------------------------------------------------------------------------------

SIGNED_OUT_PAGES = ["/", "/account/login", "/account/register", "/account/reset-password",
                    "/account/reset-password?token=x", "/account/verify-email?token=x", "/stats/2fa",
                    "/static/style.css", "/static/webauthn.js", "/account/no-such-page", "/projects/", "/admin/",
                    "/account/", "/account/login/2fa"]
SIGNED_IN_PAGES = ["/account/", "/account/2fa", "/account/tokens", "/account/history", "/account/reauth",
                   "/account/login", "/account/2fa/recovery-codes/new"]


def csp_directives(value: str) -> dict[str, list[str]]:
    directives = {}
    for part in value.split(";"):
        words = part.split()
        if words:
            directives[words[0].lower()] = words[1:]
    return directives


def check_security_headers(response: Any, *, https: bool = False) -> None:
    where = f"{response.request.method} {response.request.url.path} ({response.status_code})"
    headers = response.headers
    csp = csp_directives(headers.get("content-security-policy", ""))
    script_src = csp.get("script-src", csp.get("default-src"))
    assert script_src is not None, where
    assert not {"'unsafe-inline'", "'unsafe-eval'", "*", "data:", "http:", "https:"} & set(script_src), where
    assert csp.get("frame-ancestors") == ["'none'"], where
    assert csp.get("object-src") == ["'none'"], where
    assert headers.get("referrer-policy") in ("same-origin", "no-referrer", "strict-origin-when-cross-origin"), where
    assert headers.get("x-frame-options") == "DENY", where
    assert headers.get("x-content-type-options") == "nosniff", where
    assert ("strict-transport-security" in headers) is https, where


def no_inline_script(html: str, where: str) -> None:
    """The pages keep to the CSP: no inline script, no event-handler attributes."""
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html, re.I), where
    assert not re.search(r"\son[a-z]+\s*=", html, re.I), where
    assert "javascript:" not in html.lower(), where


@HTTP_ONLY
def test_every_web_page_carries_the_security_headers(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    enroll_totp(bastion, "alice")
    for path in SIGNED_OUT_PAGES:
        response = client.get(path, follow_redirects=False, headers={"accept": "text/html"})
        assert response.status_code < 500, (path, response.status_code)
        check_security_headers(response)
        if response.headers.get("content-type", "").startswith("text/html"):
            no_inline_script(response.text, path)
    # a pending sign-in's page, every signed-in page, a refusal and a redirect
    open_session(bastion, client, "alice", state=PENDING)
    check_security_headers(client.get("/account/login/2fa"))
    open_session(bastion, client, "alice")
    for path in SIGNED_IN_PAGES:
        response = client.get(path, follow_redirects=False)
        check_security_headers(response)
        if response.status_code == 200:
            no_inline_script(response.text, path)
    check_security_headers(client.post("/account/tokens", data={}))  # 403: CSRF refused
    check_security_headers(client.post("/account/login/webauthn/options"))  # JSON refusal
    begun = client.post("/account/2fa/totp/begin", data={"csrf_token": csrf_of(page(client, "/account/2fa"))},
                        follow_redirects=False)
    check_security_headers(begun)  # the QR code page (a secret on it: not to be framed)
    assert begun.headers.get("cache-control") == "no-store"


@HTTP_ONLY
def test_hsts_is_sent_only_behind_tls(bastion: Bastion) -> None:
    with TestClient(create_app(bastion=bastion), base_url="https://testserver") as client:
        for path in ("/account/login", "/stats/2fa", "/static/style.css", "/account/"):
            check_security_headers(client.get(path, follow_redirects=False), https=True)


# ---------------------------------------------------------------------------------------------
# CSRF
# ---------------------------------------------------------------------------------------------

@HTTP_ONLY
@pytest.mark.parametrize("kind", ["missing", "forged", "another user's", "from before sign-in", "in the header only"])
def test_a_form_without_this_sessions_csrf_token_is_refused(bastion: Bastion, client, kind: str) -> None:  # type: ignore[no-untyped-def]
    make_user(bastion, "alice")
    make_user(bastion, "bob")
    verify_email(bastion, "alice")
    before_login = csrf_of(page(client, "/account/login"))
    other = TestClient(create_app(bastion=bastion))  # bob's browser (no lifespan: one task runner)
    open_session(bastion, other, "bob")
    bobs = csrf_of(page(other, "/account/"))
    open_session(bastion, client, "alice")
    alices = csrf_of(page(client, "/account/"))
    assert len({before_login, bobs, alices}) == 3
    token = {"missing": None, "forged": "0" * 64, "another user's": bobs, "from before sign-in": before_login,
             "in the header only": None}[kind]
    data = {"description": "ci", "scope": "all", "expires": "30d"}
    if token is not None:
        data["csrf_token"] = token
    headers = {"x-csrf-token": bobs} if kind == "in the header only" else {}
    before, rows, first = snapshot_state(bastion), rows_but_events(bastion), last_event_id(bastion)
    response = client.post("/account/tokens", data=data, headers=headers, follow_redirects=False)
    assert response.status_code == 403
    assert CSRF_REFUSED in response.text and "reload the page and submit it again" in response.text
    assert rows_but_events(bastion) == rows
    (event,) = events_since(bastion, first)
    assert (event.action, event.actor, event.subject, event.details) == (
        "csrf.refused", "alice", "user:alice", {"path": "/account/tokens"})
    after = snapshot_state(bastion)
    assert after["counts"]["events"] == before["counts"]["events"] + 1  # type: ignore[index]
    # with the right token the same form works
    data["csrf_token"] = alices
    assert client.post("/account/tokens", data=data).status_code == 200
    with bastion.db.read() as session:
        assert session.execute(select(ApiToken.description).where(ApiToken.description != "")).scalars().all() \
            == ["ci"]


def account_post_routes() -> list[str]:
    from bastion.web.account import router

    paths = []
    for route in router.routes:
        if "POST" in getattr(route, "methods", ()):
            paths.append(route.path.replace("{credential_id}", "1").replace("{token_id}", "abc"))  # type: ignore[attr-defined]
    return sorted(paths)


def test_every_post_of_the_account_pages_checks_the_csrf_token(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    enroll_totp(bastion, "alice")
    cookie = open_session(bastion, client, "alice")
    paths = account_post_routes()
    assert len(paths) >= 20 and "/account/logout" in paths and "/account/2fa/webauthn/register" in paths
    rows, first = rows_but_events(bastion), last_event_id(bastion)
    for path in paths:
        response = client.post(path, data={"password": PASSWORD, "code": "123456"}, follow_redirects=False)
        assert response.status_code == 403, (path, response.status_code)
        assert CSRF_REFUSED in response.text, path
        json_body = client.post(path, json={"credential": {}}, headers={"x-csrf-token": "f" * 64},
                                follow_redirects=False)
        assert json_body.status_code == 403, (path, json_body.status_code)
    assert rows_but_events(bastion) == rows  # the session (logout) and everything else untouched
    refused = events_since(bastion, first)
    assert [(e.action, e.details["path"]) for e in refused] == [
        ("csrf.refused", path) for path in paths for _ in range(2)]
    assert {e.actor for e in refused} == {"alice"}
    assert client.cookies.get("bastion_session") == cookie


# ---------------------------------------------------------------------------------------------
# Sessions
# ---------------------------------------------------------------------------------------------

def test_sign_out_ends_the_session_for_good(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    make_user(bastion, "alice")
    cookie = open_session(bastion, client, "alice")
    first = last_event_id(bastion)
    out = client.post("/account/logout", data={"csrf_token": csrf_of(page(client, "/account/"))},
                      follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/"
    assert "Max-Age=0" in set_cookies(out)["bastion_session"]
    with bastion.db.read() as session:
        assert session.execute(select(BrowserSession)).scalars().all() == []
    assert [(e.action, e.actor) for e in events_since(bastion, first)] == [("logout", "alice")]
    client.cookies.set("bastion_session", cookie)  # a copy of the old cookie
    again = client.get("/account/", follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"].startswith("/account/login?next=")


def test_a_password_change_ends_every_session_of_the_user(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    make_user(bastion, "alice")
    make_user(bastion, "bob")
    # alice on two browsers, bob on a third
    laptop, bobs = TestClient(create_app(bastion=bastion)), TestClient(create_app(bastion=bastion))
    open_session(bastion, laptop, "alice")
    open_session(bastion, bobs, "bob")
    open_session(bastion, client, "alice")
    token, first = csrf_of(page(client, "/account/")), last_event_id(bastion)
    changed = client.post("/account/password", data={
        "csrf_token": token, "current_password": PASSWORD, "new_password": "a-new-long-password",
        "new_password_confirm": "a-new-long-password"}, follow_redirects=False)
    assert changed.status_code == 303 and changed.headers["location"] == "/account/login"
    for browser in (client, laptop):
        response = browser.get("/account/", follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/account/login")
    assert bobs.get("/account/", follow_redirects=False).status_code == 200
    with bastion.db.read() as session:
        owners = session.execute(select(User.username).join(BrowserSession, BrowserSession.user_id == User.id))
        assert owners.scalars().all() == ["bob"]
    assert [e.action for e in events_since(bastion, first)] == ["user.password_changed"]
    bastion.tasks.drain()
    mails = [p.read_text() for p in bastion.settings.outbox_dir.glob("*.eml")]
    assert len(mails) == 1 and "Your password was changed" in mails[0]
    # the old password no longer signs in, the new one does
    refused = client.post("/account/login", data={"csrf_token": csrf_of(page(client, "/account/login")),
                                                  "username": "alice", "password": PASSWORD})
    assert refused.status_code == 403 and "wrong username or password" in refused.text
    assert sign_in(client, "alice", "a-new-long-password").headers["location"] == "/account/"


@HTTP_ONLY
def test_an_unknown_cookie_is_not_a_session(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    make_user(bastion, "alice")
    open_session(bastion, TestClient(create_app(bastion=bastion)), "alice")  # a real session exists
    for cookie in ("", "x", "0" * 43, "y" * 201, "a;b", "\"quoted\"", "%00"):
        response = client.get("/account/", headers={"cookie": f"bastion_session={cookie}"}, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/account/login"), cookie


def test_an_expired_session_or_a_disabled_user_is_signed_out(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    make_user(bastion, "alice")
    cookie = open_session(bastion, client, "alice")
    assert client.get("/account/", follow_redirects=False).status_code == 200
    with bastion.db.write() as session:
        session.execute(update(BrowserSession).values(expires=utcnow() - timedelta(seconds=1)))
    assert client.get("/account/", follow_redirects=False).status_code == 303
    open_session(bastion, client, "alice")
    with bastion.db.write() as session:
        session.execute(update(User).values(is_active=False))
    assert client.get("/account/", follow_redirects=False).status_code == 303
    client.cookies.set("bastion_session", cookie)
    assert client.get("/account/", follow_redirects=False).status_code == 303


def test_a_pending_sign_in_cannot_reach_the_account_pages(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    secret, _ = enroll_totp(bastion, "alice")
    verify_email(bastion, "alice")
    pending = sign_in(client, "alice", next="/account/tokens")
    assert pending.headers["location"] == "/account/login/2fa?next=/account/tokens"
    for path in ("/account/", "/account/2fa", "/account/tokens", "/account/history", "/account/reauth",
                 "/account/2fa/recovery-codes/new"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/account/login?next="), path
    token = csrf_of(page(client, "/account/login/2fa"))
    rows = rows_but_events(bastion)
    for path, data in [("/account/tokens", {"scope": "all", "expires": "30d"}), ("/account/2fa/totp/begin", {}),
                       ("/account/2fa/totp/remove", {}), ("/account/2fa/recovery-codes", {}),
                       ("/account/password", {"current_password": PASSWORD, "new_password": "x" * 12,
                                              "new_password_confirm": "x" * 12})]:
        response = client.post(path, data={"csrf_token": token, **data}, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/account/login"), path
    assert rows_but_events(bastion) == rows
    # the second factor turns it into a new session (a new cookie: no session fixation)
    old = client.cookies.get("bastion_session")
    done = client.post("/account/login/2fa", data={"csrf_token": token, "code": code_now(secret),
                                                   "next": "/account/tokens"}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/account/tokens"
    new = client.cookies.get("bastion_session")
    assert new and new != old
    assert client.get("/account/tokens", follow_redirects=False).status_code == 200
    client.cookies.set("bastion_session", old)  # type: ignore[arg-type]
    assert client.get("/account/tokens", follow_redirects=False).status_code == 303


# ---------------------------------------------------------------------------------------------
# Re-authentication before sensitive actions
# ---------------------------------------------------------------------------------------------

def _with_security_key(bastion: Bastion, name: str) -> int:
    with bastion.db.write() as session:
        user = session.execute(select(User).where(User.username == name)).scalar_one()
        row = WebAuthnCredential(user_id=user.id, credential_id="Y3JlZGVudGlhbA", public_key=b"\xa5",
                                 sign_count=0, name="YubiKey")
        session.add(row)
        session.flush()
        return row.id


SENSITIVE = {
    "create a token": ("/account/tokens", {"scope": "all", "expires": "30d", "description": "ci"}),
    "remove the authenticator app": ("/account/2fa/totp/remove", {}),
    "remove a security key": ("/account/2fa/webauthn/{key}/remove", {}),
    "make new recovery codes": ("/account/2fa/recovery-codes", {}),
}


@pytest.mark.parametrize("action", SENSITIVE)
def test_sensitive_actions_need_a_recent_reauthentication(bastion: Bastion, client, action: str) -> None:  # type: ignore[no-untyped-def]
    enroll_totp(bastion, "alice")
    verify_email(bastion, "alice")
    key = _with_security_key(bastion, "alice")
    cookie = open_session(bastion, client, "alice")
    set_reauth_age(bastion, cookie, timedelta(minutes=16))  # reauth_window is 15m
    path, data = SENSITIVE[action]
    path = path.format(key=key)
    rows = rows_but_events(bastion)
    token = csrf_of(page(client, "/account/2fa"))
    response = client.post(path, data={"csrf_token": token, **data}, follow_redirects=False,
                           headers={"referer": "http://testserver/account/2fa"})
    assert response.status_code == 303
    assert response.headers["location"] == "/account/reauth?next=/account/2fa"
    assert rows_but_events(bastion) == rows
    assert "Confirm it is you" in page(client, "/account/reauth?next=/account/2fa")
    set_reauth_age(bastion, cookie, timedelta(minutes=14))
    done = client.post(path, data={"csrf_token": token, **data}, follow_redirects=False)
    assert done.status_code in (200, 303) and done.headers.get("location", "") != "/account/reauth?next=/account/2fa"
    assert rows_but_events(bastion) != rows


def test_reauthentication_needs_the_password_and_the_second_factor(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    secret, _ = enroll_totp(bastion, "alice")
    verify_email(bastion, "alice")
    cookie = open_session(bastion, client, "alice")
    set_reauth_age(bastion, cookie, timedelta(hours=2))
    token = csrf_of(page(client, "/account/reauth"))
    first = last_event_id(bastion)
    for data, message in [({"password": "wrong-password", "code": code_now(secret)}, "wrong username or password"),
                          ({"password": PASSWORD, "code": ""}, "invalid or expired code"),
                          ({"password": PASSWORD, "code": "000000x"}, "invalid or expired code")]:
        refused = client.post("/account/reauth", data={"csrf_token": token, "next": "/account/tokens", **data},
                              follow_redirects=False)
        assert refused.status_code == 403 and message in refused.text
    with bastion.db.read() as session:
        assert session.execute(select(BrowserSession.reauth_at)).scalar_one() < utcnow() - timedelta(hours=1)
    ok = client.post("/account/reauth", data={"csrf_token": token, "next": "/account/tokens", "password": PASSWORD,
                                              "code": code_now(secret)}, follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/account/tokens"
    assert [e.action for e in events_since(bastion, first)] == [
        "login.failed", "mfa.failed", "mfa.failed", "mfa.used", "login.reauthenticated"]
    made = client.post("/account/tokens", data={"csrf_token": token, "scope": "all", "expires": "7d"})
    assert made.status_code == 200 and 'id="new-token">bastion-' in made.text


def test_tokens_on_the_web_need_a_verified_email(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    make_user(bastion, "alice")
    open_session(bastion, client, "alice")
    refused = client.post("/account/tokens", data={"csrf_token": csrf_of(page(client, "/account/tokens")),
                                                   "scope": "all", "expires": "7d"})
    assert refused.status_code == 403 and "verify your email address before creating API tokens" in refused.text


# ---------------------------------------------------------------------------------------------
# Open redirects
# ---------------------------------------------------------------------------------------------

HOSTILE_NEXT = ["//evil.example", "//evil.example/account/", "https://evil.example/", "/\\evil.example",
                "\\\\evil.example", "/\t/evil.example", "///evil.example", " //evil.example", "evil.example",
                "javascript:alert(1)", "http:/evil.example", "/%0a/evil.example".replace("%0a", "\n")]


@pytest.mark.parametrize("target", HOSTILE_NEXT)
def test_safe_next_keeps_only_same_site_paths(target: str) -> None:
    assert safe_next(target) == "/account/"


def test_safe_next_keeps_paths_of_this_site() -> None:
    for target in ("/account/tokens", "/projects/x/?page=2", "/account/2fa#keys"):
        assert safe_next(target) == target


@HTTP_ONLY
def test_sign_in_never_sends_the_browser_to_another_site(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    secret, _ = enroll_totp(bastion, "alice")
    make_user(bastion, "bob")
    login_page = client.get("/account/login", params={"next": "//evil.example"})
    assert 'name="next" value="/account/"' in login_page.text and "evil" not in login_page.text
    for target in ("//evil.example", "https://evil.example/", "/\\evil.example"):
        signed = sign_in(client, "bob", next=target)
        assert signed.headers["location"] == "/account/", target
    # through the second step too
    pending = sign_in(client, "alice", next="//evil.example")
    assert pending.headers["location"] == "/account/login/2fa?next=/account/"
    done = client.post("/account/login/2fa", data={"csrf_token": csrf_of(page(client, "/account/login/2fa")),
                                                   "code": code_now(secret), "next": "//evil.example"},
                       follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/account/"
    reauth = client.get("/account/reauth", params={"next": "https://evil.example/"})
    assert 'name="next" value="/account/"' in reauth.text
    ok = sign_in(client, "bob", next="/account/history")
    assert ok.headers["location"] == "/account/history"


# ---------------------------------------------------------------------------------------------
# Bad input on every form: a clear message, nothing changed
# ---------------------------------------------------------------------------------------------

LONG = "x" * 10_000

# (path, fields, status, message); the signed-out forms
SIGNED_OUT_BAD_INPUT: dict[str, tuple[str, dict[str, str], int, str]] = {
    "register, empty": ("/account/register", {}, 400, "invalid username &#39;&#39;"),
    "register, long username": ("/account/register", {"username": "a" * 51, "email": "a@example.org",
                                                     "password": PASSWORD, "password_confirm": PASSWORD},
                                400, "invalid username"),
    "register, huge username": ("/account/register", {"username": LONG, "email": "a@example.org",
                                                     "password": PASSWORD, "password_confirm": PASSWORD},
                                400, "use 1-50 letters, digits"),
    "register, reserved name": ("/account/register", {"username": "__token__", "email": "a@example.org",
                                                     "password": PASSWORD, "password_confirm": PASSWORD},
                                400, "invalid username &#39;__token__&#39;"),
    "register, taken name": ("/account/register", {"username": "ALICE", "email": "a@example.org",
                                                  "password": PASSWORD, "password_confirm": PASSWORD},
                             409, "a user named &#39;ALICE&#39; already exists"),
    "register, empty email": ("/account/register", {"username": "carol", "email": "", "password": PASSWORD,
                                                   "password_confirm": PASSWORD}, 400, "invalid email address"),
    "register, long email": ("/account/register", {"username": "carol", "email": "a" * 250 + "@example.org",
                                                  "password": PASSWORD, "password_confirm": PASSWORD},
                             400, "use at most 254 characters"),
    "register, passwords differ": ("/account/register", {"username": "carol", "email": "c@example.org",
                                                        "password": PASSWORD, "password_confirm": PASSWORD + "x"},
                                   400, "the two passwords differ"),
    "register, short password": ("/account/register", {"username": "carol", "email": "c@example.org",
                                                       "password": "short", "password_confirm": "short"},
                                 400, "password too short: use at least 10 characters"),
    "register, huge password": ("/account/register", {"username": "carol", "email": "c@example.org",
                                                     "password": LONG, "password_confirm": LONG},
                                400, "password too long: use at most 4096 characters"),
    "reset, no token": ("/account/reset-password", {"password": PASSWORD, "password_confirm": PASSWORD},
                        400, "this password-reset link is not valid"),
    "reset, forged token": ("/account/reset-password", {"token": LONG, "password": PASSWORD,
                                                        "password_confirm": PASSWORD},
                            400, "this password-reset link is not valid"),
    "reset, passwords differ": ("/account/reset-password", {"token": "x", "password": PASSWORD,
                                                            "password_confirm": ""}, 400, "the two passwords differ"),
    "sign-in step 2 without step 1": ("/account/login/2fa", {"code": "123456"}, 303, ""),
}


def test_bad_input_on_the_signed_out_forms_changes_nothing(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    make_user(bastion, "alice")
    token = csrf_of(page(client, "/account/register"))
    before, rows = snapshot_state(bastion), db_rows(bastion)
    for case, (path, fields, status, message) in SIGNED_OUT_BAD_INPUT.items():
        response = client.post(path, data={"csrf_token": token, **fields}, follow_redirects=False)
        assert response.status_code == status, (case, response.text[:1000])
        assert message in response.text, case
        if status != 303:
            assert 'role="alert"' in response.text, case  # shown as the page's error
        assert snapshot_state(bastion) == before, case
        assert db_rows(bastion) == rows, case
    bastion.tasks.drain()
    assert not list(bastion.settings.outbox_dir.glob("*.eml"))


def test_a_valid_reset_link_with_a_bad_password_changes_nothing(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    from bastion.accounts import service

    make_user(bastion, "alice")
    with bastion.db.read() as session:
        link = service.password_reset_token(bastion.secret, session.execute(select(User)).scalar_one())
    token = csrf_of(page(client, "/account/reset-password?token=" + link))
    rows = db_rows(bastion)
    for password, message in [("short", "password too short"), (LONG, "password too long"), ("", "password too short")]:
        response = client.post("/account/reset-password", data={"csrf_token": token, "token": link,
                                                                 "password": password, "password_confirm": password})
        assert response.status_code == 400 and message in response.text
    assert db_rows(bastion) == rows


def test_a_reset_request_answers_the_same_for_anyone(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    make_user(bastion, "alice")
    token = csrf_of(page(client, "/account/reset-password"))
    answers = set()
    rows = db_rows(bastion)
    for who in ("", LONG, "nobody", "nobody@example.org"):
        response = client.post("/account/reset-password/request", data={"csrf_token": token, "username": who})
        assert response.status_code == 200
        answers.add(re.sub(r'value="[0-9a-f]{64}"', "", response.text))
    assert len(answers) == 1 and "If an account matches" in answers.pop()
    assert db_rows(bastion) == rows
    bastion.tasks.drain()
    assert not list(bastion.settings.outbox_dir.glob("*.eml"))


def test_a_bad_verification_link_is_refused(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    make_user(bastion, "alice")
    rows = db_rows(bastion)
    for token in ("", "x", LONG):
        response = client.get("/account/verify-email", params={"token": token})
        assert response.status_code == 400 and "this verification link is not valid" in response.text
    assert db_rows(bastion) == rows


@pytest.mark.parametrize("fields", [{}, {"username": "", "password": ""}, {"username": LONG, "password": LONG},
                                    {"username": "alice", "password": ""}],
                         ids=["nothing", "empty", "huge", "no password"])
def test_bad_input_on_the_sign_in_form_is_a_failed_sign_in(bastion: Bastion, client, fields: dict) -> None:  # type: ignore[no-untyped-def]
    make_user(bastion, "alice")
    token = csrf_of(page(client, "/account/login"))
    rows, first = rows_but_events(bastion), last_event_id(bastion)
    response = client.post("/account/login", data={"csrf_token": token, **fields}, follow_redirects=False)
    assert response.status_code == 403 and "wrong username or password" in response.text
    assert rows_but_events(bastion) == rows
    (event,) = events_since(bastion, first)
    assert event.action == "login.failed"
    if fields.get("username") == "alice":
        assert event.details["username"] == "alice" and event.subject == "user:alice"
    else:  # what was typed names no account: not kept (it may be a password typed into the wrong box)
        assert event.details["username"] is None and event.details["unknown_account"] is True
    assert "bastion_session" not in set_cookies(response)


NUL_FORMS = [("/account/login", {"username": "alice\x00", "password": PASSWORD}),
             ("/account/register", {"username": "carol", "email": "c\x00@example.org", "password": PASSWORD,
                                    "password_confirm": PASSWORD}),
             ("/account/reset-password/request", {"username": "alice\x00"}),
             ("/account/tokens", {"scope": "all", "expires": "7d", "description": "ci\x00"}),
             ("/account/tokens", {"scope": "projects", "projects": ["a", "b\x00"], "expires": "7d"}),
             ("/account/2fa/webauthn/1/rename", {"name": "key\x00"})]


def test_a_nul_character_in_any_form_is_refused_clearly(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL cannot store NUL in text: the forms refuse it before any query."""
    token, _ = _signed_in_alice(bastion, client)
    rows = db_rows(bastion)
    for path, fields in NUL_FORMS:
        response = client.post(path, data={"csrf_token": token, **fields}, follow_redirects=False)
        assert response.status_code == 400, (path, response.status_code)
        assert "a form field contains a NUL character" in response.text, path
    assert db_rows(bastion) == rows


def _signed_in_alice(bastion: Bastion, client) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    """alice (TOTP, a security key, a verified address) signed in and re-authenticated; bob with a
    key and a token; (alice's CSRF token, bob's key id)."""
    enroll_totp(bastion, "alice")
    verify_email(bastion, "alice")
    _with_security_key(bastion, "alice")
    make_user(bastion, "bob")
    with bastion.db.write() as session:
        bob = session.execute(select(User).where(User.username == "bob")).scalar_one()
        key = WebAuthnCredential(user_id=bob.id, credential_id="Ym9icw", public_key=b"\xa5", sign_count=0,
                                 name="bob's")
        session.add(key)
        session.flush()
        bob_key = key.id
    open_session(bastion, client, "alice")
    return csrf_of(page(client, "/account/")), bob_key


SIGNED_IN_BAD_INPUT: dict[str, tuple[str, dict[str, str], int, str]] = {
    "password, differ": ("/account/password", {"current_password": PASSWORD, "new_password": "a-new-long-password",
                                               "new_password_confirm": "another-new-one"},
                         400, "the two new passwords differ"),
    "password, too short": ("/account/password", {"current_password": PASSWORD, "new_password": "short",
                                                  "new_password_confirm": "short"}, 400, "password too short"),
    "password, too long": ("/account/password", {"current_password": PASSWORD, "new_password": LONG,
                                                 "new_password_confirm": LONG}, 400, "password too long"),
    "totp confirm, nothing begun": ("/account/2fa/totp/confirm", {"code": "123456"}, 400,
                                    "no enrollment is in progress"),
    "key rename, empty": ("/account/2fa/webauthn/{alice_key}/rename", {"name": "  "}, 400,
                          "name the security key with 1 to 64 characters"),
    "key rename, too long": ("/account/2fa/webauthn/{alice_key}/rename", {"name": "k" * 65}, 400,
                             "name the security key with 1 to 64 characters"),
    "key rename, huge": ("/account/2fa/webauthn/{alice_key}/rename", {"name": LONG}, 400,
                         "name the security key with 1 to 64 characters"),
    "key rename, someone else's": ("/account/2fa/webauthn/{bob_key}/rename", {"name": "mine"}, 404,
                                   "no such security key on your account"),
    "key rename, no such key": ("/account/2fa/webauthn/999999/rename", {"name": "mine"}, 404,
                                "no such security key on your account"),
    "key rename, id out of range": ("/account/2fa/webauthn/" + "9" * 30 + "/rename", {"name": "mine"}, 404,
                                    "no such security key on your account"),
    "key remove, someone else's": ("/account/2fa/webauthn/{bob_key}/remove", {}, 404,
                                   "no such security key on your account"),
    "key remove, id out of range": ("/account/2fa/webauthn/-" + "9" * 30 + "/remove", {}, 404,
                                    "no such security key on your account"),
    "key rename, not a number": ("/account/2fa/webauthn/abc/rename", {"name": "mine"}, 422,
                                 "Input should be a valid integer"),
    "token, no project chosen": ("/account/tokens", {"scope": "projects", "expires": "30d"}, 400,
                                 "choose at least one project"),
    "token, bad expiry": ("/account/tokens", {"scope": "all", "expires": "soon"}, 400, "invalid expiry"),
    "token, endless expiry": ("/account/tokens", {"scope": "all", "expires": "99999d"}, 400,
                              "it must be at most 36500d"),
    "token, never expires": ("/account/tokens", {"scope": "all", "expires": "never"}, 400,
                             "tokens without expiry are not allowed on this index"),
    "token, huge description": ("/account/tokens", {"scope": "all", "expires": "30d", "description": LONG}, 400,
                                "token description too long: use at most 200 characters"),
    "revoke, no such token": ("/account/tokens/abc/revoke", {}, 404, "no API token with id"),
    "revoke, huge id": ("/account/tokens/" + "a" * 5000 + "/revoke", {}, 404, "no API token with id"),
    "revoke, someone else's": ("/account/tokens/{bob_token}/revoke", {}, 403,
                               "you can manage only your own API tokens"),
}


def test_bad_input_on_the_signed_in_forms_changes_nothing(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    token, bob_key = _signed_in_alice(bastion, client)
    with bastion.db.read() as session:
        alice_key = session.execute(select(WebAuthnCredential.id).where(WebAuthnCredential.name == "YubiKey")).scalar()
        bob_token = session.execute(select(ApiToken.id).join(User, User.id == ApiToken.user_id)
                                    .where(User.username == "bob")).scalar()
    before, rows = snapshot_state(bastion), db_rows(bastion)
    for case, (path, fields, status, message) in SIGNED_IN_BAD_INPUT.items():
        path = path.format(alice_key=alice_key, bob_key=bob_key, bob_token=bob_token)
        response = client.post(path, data={"csrf_token": token, **fields}, follow_redirects=False)
        assert response.status_code == status, (case, response.text[:1000])
        assert message in response.text, (case, response.text[:3000])
        assert snapshot_state(bastion) == before, case
        assert db_rows(bastion) == rows, case


def test_a_wrong_current_password_changes_nothing_but_is_recorded(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    token, _ = _signed_in_alice(bastion, client)
    rows, first = rows_but_events(bastion), last_event_id(bastion)
    for current in ("", "wrong-password", LONG):
        response = client.post("/account/password", data={
            "csrf_token": token, "current_password": current, "new_password": "a-new-long-password",
            "new_password_confirm": "a-new-long-password"})
        assert response.status_code == 403 and "the current password is wrong" in response.text
    assert rows_but_events(bastion) == rows
    # The current password is checked through the sign-in rate limit: each wrong one is also a
    # failed sign-in attempt, counted against the account's budget.
    assert [e.action for e in events_since(bastion, first)] == ["login.failed", "user.password_change_failed"] * 3


def test_the_history_page_takes_only_an_event_id(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    make_user(bastion, "alice")
    open_session(bastion, client, "alice")
    for before in ("abc", "1.5", ""):
        response = client.get("/account/history", params={"before": before})
        assert response.status_code == 422 and "query.before" in response.json()["error"], before
    for before in ("9" * 30, "-" + "9" * 30, "0", str(2**31), str(2**63)):  # any number: a page, maybe empty
        response = client.get("/account/history", params={"before": before})
        assert response.status_code == 200 and "Your account" in response.text, before


JSON_ENDPOINTS = ["/account/2fa/webauthn/register", "/account/login/webauthn/verify", "/account/reauth/webauthn/verify"]
BAD_JSON = {
    "not json": b"{not json",
    "not an object": b"[1, 2]",
    "a string": b'"credential"',
    "not utf-8": b"\xff\xfe\x00",
    "empty": b"",
    "credential a string": b'{"credential": "garbage", "name": "k"}',
    "credential null": b'{"credential": null, "name": "k"}',
    "credential a number, name a list": b'{"credential": 5, "name": ["a"]}',
    "no rawId": b'{"credential": {"id": "Y3JlZGVudGlhbA"}, "name": "k"}',
    "no response": b'{"credential": {"id": "Y3JlZGVudGlhbA", "rawId": "Y3JlZGVudGlhbA", "type": "public-key"},'
                   b' "name": "k"}',
    "empty response": b'{"credential": {"id": "Y3JlZGVudGlhbA", "rawId": "Y3JlZGVudGlhbA", "type": "public-key",'
                      b' "response": {}}, "name": "k", "fields": [1]}',
    "garbage response": b'{"credential": {"id": "Y3JlZGVudGlhbA", "rawId": "Y3JlZGVudGlhbA", "type": "public-key",'
                        b' "response": {"clientDataJSON": "e30", "attestationObject": "oA", "authenticatorData": "AA",'
                        b' "signature": "AA"}}, "name": "k", "next": {"a": 1}}',
    "wrong types": b'{"credential": {"id": ["x"], "rawId": {"a": 1}, "response": 7}, "name": 5}',
}


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
def test_malformed_json_to_the_webauthn_endpoints_is_refused_clearly(bastion_with, path: str) -> None:  # type: ignore[no-untyped-def]
    # budgets large enough for every case (the limits have their own tests)
    bastion, client = bastion_with(mfa_attempts="100 per 5 minutes", login_attempts="100 per 5 minutes")
    enroll_totp(bastion, "alice")
    _with_security_key(bastion, "alice")
    state = PENDING if "/login/" in path else ACTIVE
    open_session(bastion, client, "alice", state=state)
    token = csrf_of(page(client, "/account/login/2fa" if state == PENDING else "/account/2fa"))
    headers = {"x-csrf-token": token, "content-type": "application/json"}
    options = path.rsplit("/", 1)[0] + "/options"
    results = {}
    # re-authentication checks the password (argon2, slow) first: there, the cases that reach the key
    cases = {k: v for k, v in BAD_JSON.items() if not path.startswith("/account/reauth/") or k in (
        "not json", "not an object", "credential a string", "no rawId", "empty response", "garbage response")}
    for name, body in cases.items():
        # every attempt with a fresh challenge, as the page's script does
        assert client.post(options, headers=headers).status_code == 200, name
        if path.startswith("/account/reauth/"):
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):  # the password travels beside the key's answer
                body = json.dumps({**parsed, "fields": {"password": PASSWORD}}).encode()
        rows = rows_but_events(bastion)
        response = client.post(path, content=body, headers=headers, follow_redirects=False)
        results[name] = (response.status_code, response.json().get("error", ""))
        assert 400 <= response.status_code < 500, (name, response.status_code, response.text)
        assert response.json()["error"], name
        rows_after = rows_but_events(bastion)
        # nothing changed but the pending challenge (a failed verification keeps it)
        for table in ("sessions",):
            rows.pop(table), rows_after.pop(table)
        assert rows_after == rows, name
    assert results["not json"] == (400, "expected a JSON object")
    assert results["not an object"] == (400, "expected a JSON object")
    for name in ("credential a string", "no rawId", "empty response", "garbage response"):
        assert "could not be verified" in results[name][1] or "not registered" in results[name][1], (name, results)
    with bastion.db.read() as session:
        assert session.execute(select(WebAuthnCredential)).scalars().all()[0].name == "YubiKey"
        assert len(session.execute(select(WebAuthnCredential)).scalars().all()) == 1


def test_webauthn_without_a_challenge_or_a_key_is_refused(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    enroll_totp(bastion, "alice")  # TOTP, no security key
    open_session(bastion, client, "alice", state=PENDING)
    headers = {"x-csrf-token": csrf_of(page(client, "/account/login/2fa"))}
    no_key = client.post("/account/login/webauthn/options", headers=headers)
    assert no_key.status_code == 404 and no_key.json() == {"error": "no security key is registered on this account"}
    no_challenge = client.post("/account/login/webauthn/verify", headers=headers,
                               json={"credential": {"id": "x", "rawId": "x"}})
    assert no_challenge.status_code == 400 and "no security-key challenge is pending" in no_challenge.json()["error"]
    client.cookies.clear()
    signed_out = client.post("/account/login/webauthn/options",
                             headers={"x-csrf-token": csrf_of(page(client, "/account/login"))})
    assert signed_out.status_code == 403 and signed_out.json() == {"error": "sign in with your password first"}


@HTTP_ONLY
def test_a_file_or_too_many_fields_in_a_form_is_refused(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    token, _ = _signed_in_alice(bastion, client)
    rows = db_rows(bastion)
    with_file = client.post("/account/tokens", data={"csrf_token": token, "scope": "all", "expires": "7d"},
                            files={"description": ("d.txt", b"a file", "text/plain")})
    assert with_file.status_code == 400 and "Too many files" in json.dumps(with_file.json())
    many = client.post("/account/tokens", data={"csrf_token": token, **{f"f{i}": "x" for i in range(200)}})
    assert many.status_code == 400 and "Too many fields" in json.dumps(many.json())
    assert db_rows(bastion) == rows
