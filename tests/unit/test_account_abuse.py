"""Abuse found in the security review of the account pages, each closed and pinned here: a stolen
cookie planting a second factor or guessing the password, an admin without 2FA acting around the
mandate, floods of sign-ups, reset mails and audit events, and malformed tokens."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from bastion.accounts.models import BrowserSession, User
from bastion.accounts.policy import set_mfa_policy
from bastion.accounts.ratelimit import network_of
from bastion.authz import OPERATOR
from bastion.events import Event, RequestContext, record_event
from bastion.insights.models import CriticalProject
from bastion.packaging.models import Project, Role
from bastion.services import Bastion
from tests.conftest import PASSWORD, make_user
from tests.unit.test_web_account import (
    csrf_of,
    enroll_totp,
    events_since,
    last_event_id,
    open_session,
    page,
    rows_but_events,
    set_reauth_age,
)


def _give_totp(bastion: Bastion, name: str) -> None:
    """Enroll an authenticator app for the existing user ``name``."""
    import pyotp

    from bastion.accounts import mfa

    with bastion.db.write() as session:
        user = session.execute(select(User).where(User.username == name)).scalar_one()
        secret = mfa.new_totp_secret()
        mfa.enable_totp(session, user, secret, pyotp.TOTP(secret).now(), key=bastion.encryption_key,
                        secret=bastion.secret)


def _set_challenge(bastion: Bastion, cookie: str, value: str) -> None:
    from bastion.accounts.sessions import load_session

    with bastion.db.write() as session:
        browser = load_session(session, cookie)
        assert browser is not None
        browser.challenge = value


def test_registering_a_security_key_needs_a_recent_reauthentication(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    enroll_totp(bastion, "alice")
    cookie = open_session(bastion, client, "alice")
    token = csrf_of(page(client, "/account/2fa"))
    set_reauth_age(bastion, cookie, timedelta(hours=1))
    rows = rows_but_events(bastion)
    for path in ("/account/2fa/webauthn/options", "/account/2fa/webauthn/register"):
        response = client.post(path, json={"name": "k", "credential": {}}, headers={"X-CSRF-Token": token},
                               follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/account/reauth?next="), path
    assert rows_but_events(bastion) == rows


def test_a_sign_in_challenge_cannot_register_a_key(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    make_user(bastion, "alice")
    cookie = open_session(bastion, client, "alice")
    token = csrf_of(page(client, "/account/2fa"))
    _set_challenge(bastion, cookie, "auth:AAAA")  # what /account/reauth/webauthn/options leaves
    rows = rows_but_events(bastion)
    response = client.post("/account/2fa/webauthn/register", json={"name": "k", "credential": {}},
                           headers={"X-CSRF-Token": token})
    assert response.status_code == 400
    assert "no security-key challenge is pending" in response.json()["error"]
    assert rows_but_events(bastion) == rows


def test_enrolling_a_first_authenticator_app_needs_a_recent_reauthentication(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    make_user(bastion, "alice")
    cookie = open_session(bastion, client, "alice")
    token = csrf_of(page(client, "/account/2fa"))
    set_reauth_age(bastion, cookie, timedelta(hours=1))
    response = client.post("/account/2fa/totp/begin", data={"csrf_token": token}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/account/reauth?next=")
    with bastion.db.read() as session:
        assert session.execute(select(BrowserSession.challenge)).scalar_one() is None


def test_the_current_password_check_is_rate_limited(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    make_user(bastion, "alice")
    open_session(bastion, client, "alice")
    budget = bastion.limiter.per_account["password"].amount
    codes = []
    for _ in range(budget + 1):
        token = csrf_of(page(client, "/account/"))
        response = client.post("/account/password", data={
            "csrf_token": token, "current_password": "wrong-password", "new_password": "another-long-password",
            "new_password_confirm": "another-long-password"}, follow_redirects=False)
        codes.append(response.status_code)
    assert codes[:budget - 1] == [403] * (budget - 1) and codes[-1] == 429
    # Locked: even the right password is refused now, and the password is unchanged.
    token = csrf_of(page(client, "/account/"))
    response = client.post("/account/password", data={
        "csrf_token": token, "current_password": PASSWORD, "new_password": "another-long-password",
        "new_password_confirm": "another-long-password"}, follow_redirects=False)
    assert response.status_code == 429 and "too many failed attempts" in response.text
    from bastion.accounts.passwords import verify_password

    with bastion.db.read() as session:
        assert verify_password(session.execute(select(User.password_hash)).scalar_one(), PASSWORD)


def test_an_admin_without_2fa_cannot_mint_a_token_for_someone_with_it(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    root = make_user(bastion, "root", admin=True)
    enroll_totp(bastion, "bob")
    with bastion.db.write() as session:
        bob = session.execute(select(User).where(User.username == "bob")).scalar_one()
        project = Project(name="crit", normalized_name="crit", ultranormalized_name="cr1t")
        session.add(project)
        session.flush()
        session.add(Role(project_id=project.id, user_id=bob.id, role="owner"))
        session.add(CriticalProject(project_id=project.id, downloads=1000))
    headers = {"Authorization": f"Bearer {root}"}
    rows = rows_but_events(bastion)
    for body in ({"projects": ["crit"]}, {}):  # named, or every project of bob's (crit among them)
        response = client.post("/api/v1/users/bob/tokens", json=body, headers=headers)
        assert response.status_code == 403, body
        assert "two-factor authentication is required of user 'root'" in response.json()["error"]
    assert rows_but_events(bastion) == rows
    # Once root has 2FA itself, it can.
    _give_totp(bastion, "root")
    assert client.post("/api/v1/users/bob/tokens", json={}, headers=headers).status_code == 201


def test_under_policy_everyone_admins_without_2fa_manage_no_accounts(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    root = make_user(bastion, "root", admin=True)
    make_user(bastion, "mallory")
    with bastion.db.write() as session:
        set_mfa_policy(session, "everyone", principal=OPERATOR)
    headers = {"Authorization": f"Bearer {root}"}
    rows = rows_but_events(bastion)
    made = client.post("/api/v1/users", json={"name": "eve", "email": "eve@example.org",
                                              "password": "a-long-password"}, headers=headers)
    promoted = client.post("/api/v1/users/mallory/admin", headers=headers)
    for response in (made, promoted):
        assert response.status_code == 403 and "two-factor authentication is required" in response.json()["error"]
    assert rows_but_events(bastion) == rows
    assert client.get("/api/v1/users/root/tokens", headers=headers).status_code == 200  # reading stays allowed


def test_sign_ups_are_limited_per_address(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    budget = bastion.limiter.per_account["signup"].amount
    for _ in range(budget):  # as many registrations as allowed, counted the way the route counts them
        bastion.limiter.failed("signup", "testclient", None)
    rows = rows_but_events(bastion)
    token = csrf_of(page(client, "/account/register"))
    response = client.post("/account/register", data={
        "csrf_token": token, "username": "newbie", "email": "n@example.org", "password": "a-long-password",
        "password_confirm": "a-long-password"})
    assert response.status_code == 429 and "too many new accounts from your network address" in response.text
    assert rows_but_events(bastion) == rows


def test_reset_mails_to_one_account_are_limited(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    make_user(bastion, "alice")
    budget = bastion.limiter.per_account["reset"].amount
    outbox = bastion.settings.outbox_dir
    for _ in range(budget + 3):
        token = csrf_of(page(client, "/account/reset-password"))
        response = client.post("/account/reset-password/request", data={"csrf_token": token, "username": "alice"})
        assert response.status_code == 200 and "If an account matches" in response.text  # the same answer
    assert bastion.tasks.drain(timeout=10)
    assert len(list(outbox.glob("*.eml"))) == budget


def test_a_non_ascii_csrf_token_is_a_refusal_not_a_crash(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    page(client, "/account/login")
    response = client.post("/account/login", data={"csrf_token": "é" * 64, "username": "x", "password": "y"})
    assert response.status_code == 403 and "CSRF check failed" in response.text


def test_anonymous_refusals_stop_filling_the_audit_log(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    first = last_event_id(bastion)
    page(client, "/account/login")
    statuses = {client.post("/account/logout", data={"csrf_token": "forged"}).status_code for _ in range(45)}
    assert statuses == {403}  # every one refused
    recorded = [e.action for e in events_since(bastion, first)]
    assert recorded == ["csrf.refused"] * bastion.limiter.noise.amount  # but only so many written down


def test_a_huge_user_agent_is_stored_cut_to_500_characters(bastion: Bastion) -> None:
    with bastion.db.write() as session:
        record_event(session, "test.event", context=RequestContext(ip="1.2.3.4", user_agent="A" * 9000),
                     secret=bastion.secret)
    with bastion.db.read() as session:
        assert session.execute(select(func.length(Event.user_agent))).scalar_one() == 500
    from bastion.events import verify_chain

    with bastion.db.read() as session:
        assert verify_chain(session).ok


@pytest.mark.parametrize(("address", "key"), [
    ("203.0.113.7", "203.0.113.7"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
    ("testclient", "testclient"),
    (None, None),
])
def test_ipv6_clients_are_counted_by_their_64(address: str | None, key: str | None) -> None:
    assert network_of(address) == key


def test_the_json_routes_refuse_a_body_that_is_not_an_object(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    make_user(bastion, "alice")
    open_session(bastion, client, "alice")
    token = csrf_of(page(client, "/account/2fa"))
    response = client.post("/account/2fa/webauthn/register", content=json.dumps([1, 2]),
                           headers={"X-CSRF-Token": token, "Content-Type": "application/json"})
    assert response.status_code == 400 and response.json() == {"error": "expected a JSON object"}
