"""Second factors (issue 3): TOTP codes (the +-1 step window, single use, clear refusals with an
event each, secrets encrypted at rest) and recovery codes (eight on the first enrollment, shown
once, stored hashed, each usable once, a notice by mail when one is used).

Rate limits of second-factor attempts are in test_ratelimit.py; the web session rules in
test_web_account.py, whose helpers the web tests here use.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select, text

from bastion.accounts import mfa
from bastion.accounts.models import BrowserSession, RecoveryCode, User
from bastion.db import utcnow
from bastion.errors import Conflict, ServiceError
from bastion.events import Event, RequestContext
from bastion.services import Bastion
from tests.conftest import PASSWORD, make_user
from tests.mailbox import Mailbox
from tests.unit.test_web_account import (
    csrf_of,
    enroll_totp,
    open_session,
    page,
    set_reauth_age,
    sign_in,
)
from tests.unit.world import db_rows

# A fixed instant 15 s into a 30 s step: +-30 s is exactly one step away.
T0 = datetime(2031, 3, 4, 5, 6, 15, tzinfo=UTC)
STEP0 = int(T0.timestamp()) // 30
CONTEXT = RequestContext(ip="192.0.2.7", user_agent="pytest")


def user_row(session, name: str) -> User:  # type: ignore[no-untyped-def]
    return session.execute(select(User).where(User.username == name)).scalar_one()


def actions(bastion: Bastion, after: int = 0) -> list[tuple[str, dict]]:
    """(action, details) of the events newer than id ``after``."""
    with bastion.db.read() as session:
        rows = session.execute(select(Event).where(Event.id > after).order_by(Event.id)).scalars().all()
        return [(e.action, dict(e.details or {})) for e in rows]


def last_event_id(bastion: Bastion) -> int:
    with bastion.db.read() as session:
        return session.execute(select(Event.id).order_by(Event.id.desc()).limit(1)).scalar() or 0


def enrolled_at_t0(bastion: Bastion, name: str) -> str:
    """``name`` with TOTP enrolled an hour before T0; the base32 secret."""
    make_user(bastion, name)
    secret = mfa.new_totp_secret()
    enrolled = T0 - timedelta(hours=1)
    with bastion.db.write() as session:
        mfa.enable_totp(session, user_row(session, name), secret, pyotp.TOTP(secret).at(enrolled),
                        key=bastion.encryption_key, secret=bastion.secret, now=enrolled)
    return secret


def check(bastion: Bastion, name: str, code: str, *, now: datetime = T0) -> None:
    """check_totp in a transaction that is committed even when the code is refused (as the web
    routes do, so that the refusal's event stays)."""
    with bastion.db.write() as session:
        try:
            mfa.check_totp(session, user_row(session, name), code, key=bastion.encryption_key,
                           secret=bastion.secret, context=CONTEXT, now=now)
        except mfa.MfaError:
            session.commit()
            raise


def code_at(secret: str, step: int) -> str:
    return pyotp.TOTP(secret).generate_otp(step)


# ---------------------------------------------------------------------------------------------
# TOTP
# ---------------------------------------------------------------------------------------------

def set_last_step(bastion: Bastion, name: str, step: int) -> None:
    with bastion.db.write() as session:
        user_row(session, name).totp_last_step = step


def test_a_code_of_the_previous_current_or_next_step_is_accepted(bastion: Bastion) -> None:
    secret = enrolled_at_t0(bastion, "alice")
    for offset in (-1, 0, 1):
        set_last_step(bastion, "alice", STEP0 - 120)  # as enrolled: no code of now used yet
        before = last_event_id(bastion)
        check(bastion, "alice", code_at(secret, STEP0 + offset))
        assert actions(bastion, before) == [("mfa.used", {"method": "totp"})], offset
        with bastion.db.read() as session:
            assert user_row(session, "alice").totp_last_step == STEP0 + offset


def test_a_code_two_or_more_steps_away_is_refused_as_expired(bastion: Bastion) -> None:
    secret = enrolled_at_t0(bastion, "alice")
    for offset in (-3, -2, 2, 3):
        before = last_event_id(bastion)
        with pytest.raises(mfa.MfaError, match=r"^invalid or expired code: enter the current 6-digit code"):
            check(bastion, "alice", code_at(secret, STEP0 + offset))
        assert actions(bastion, before) == [
            ("mfa.failed", {"method": "totp", "reason": "wrong or expired code"})], offset
    # the step window moves with time: the same code is right at its own time
    check(bastion, "alice", code_at(secret, STEP0 + 2), now=T0 + timedelta(seconds=60))


WRONG_CODES = ["", "abcdef", "one digit short", "1234567", "12 34 5x", "0" * 10_000, "１２３４５６"]


def test_a_wrong_or_malformed_code_is_refused_with_an_event(bastion: Bastion) -> None:
    secret = enrolled_at_t0(bastion, "alice")
    for code in WRONG_CODES:
        if code == "one digit short":
            code = code_at(secret, STEP0)[:5]  # the right code, one digit short
        before = last_event_id(bastion)
        with pytest.raises(mfa.MfaError, match="invalid or expired code"):
            check(bastion, "alice", code)
        assert actions(bastion, before) == [("mfa.failed", {"method": "totp", "reason": "wrong or expired code"})]
        with bastion.db.read() as session:
            assert user_row(session, "alice").totp_last_step == STEP0 - 120  # unchanged: the enrollment's step


def test_spaces_and_a_dash_in_a_code_are_ignored(bastion: Bastion) -> None:
    secret = enrolled_at_t0(bastion, "alice")
    code = code_at(secret, STEP0)
    check(bastion, "alice", f" {code[:3]} -{code[3:]} ")


def test_a_code_is_accepted_once_and_older_codes_are_refused_after_it(bastion: Bastion) -> None:
    secret = enrolled_at_t0(bastion, "alice")
    check(bastion, "alice", code_at(secret, STEP0))
    before = last_event_id(bastion)
    with pytest.raises(mfa.MfaError, match="^this code was used already: wait for your authenticator app"):
        check(bastion, "alice", code_at(secret, STEP0))
    # a code of the previous step, still inside the window, is older than the one used: refused too
    with pytest.raises(mfa.MfaError, match="used already"):
        check(bastion, "alice", code_at(secret, STEP0 - 1))
    assert actions(bastion, before) == [("mfa.failed", {"method": "totp", "reason": "code reused"})] * 2
    check(bastion, "alice", code_at(secret, STEP0 + 1))  # the next code works


def test_without_an_authenticator_app_a_code_is_refused(bastion: Bastion) -> None:
    make_user(bastion, "alice")
    with pytest.raises(mfa.MfaError, match="no authenticator app is enrolled"):
        check(bastion, "alice", "123456")


def test_enrollment_needs_a_matching_code_and_leaves_an_event_either_way(bastion: Bastion) -> None:
    make_user(bastion, "alice")
    secret = mfa.new_totp_secret()
    wrong = f"{(int(code_at(secret, STEP0)) + 1) % 1_000_000:06d}"
    before = last_event_id(bastion)
    with bastion.db.write() as session:
        with pytest.raises(mfa.MfaError, match="that code does not match: check the time on your device"):
            mfa.enable_totp(session, user_row(session, "alice"), secret, wrong, key=bastion.encryption_key,
                            secret=bastion.secret, now=T0)
        assert user_row(session, "alice").totp_secret is None
        assert user_row(session, "alice").mfa_enabled is None
    with bastion.db.write() as session:
        codes = mfa.enable_totp(session, user_row(session, "alice"), secret, code_at(secret, STEP0),
                                key=bastion.encryption_key, secret=bastion.secret, now=T0)
        with pytest.raises(Conflict, match="already enrolled: remove it first"):
            mfa.enable_totp(session, user_row(session, "alice"), secret, code_at(secret, STEP0 + 1),
                            key=bastion.encryption_key, secret=bastion.secret, now=T0)
    assert codes is not None and len(codes) == 8
    assert [a for a, _ in actions(bastion, before)] == [
        "mfa.totp_enroll_failed", "mfa.totp_added", "mfa.recovery_codes_generated"]
    # the enrollment code is spent: it cannot sign in
    with pytest.raises(mfa.MfaError, match="used already"):
        check(bastion, "alice", code_at(secret, STEP0))


def test_the_totp_secret_is_stored_encrypted(bastion: Bastion) -> None:
    secret = enrolled_at_t0(bastion, "alice")
    with bastion.db.read() as session:
        stored = session.execute(text("SELECT totp_secret FROM users WHERE username = 'alice'")).scalar_one()
    assert secret not in stored and secret.lower() not in stored.lower()
    assert Fernet(bastion.encryption_key).decrypt(stored.encode()).decode() == secret
    everything = repr(db_rows(bastion))
    assert secret not in everything and secret.lower() not in everything.lower()


def test_a_wrong_encryption_key_is_a_clear_error(bastion_with, bastion: Bastion) -> None:  # type: ignore[no-untyped-def]
    secret = enrolled_at_t0(bastion, "alice")
    other, _ = bastion_with(encryption_key=Fernet.generate_key().decode())
    before = last_event_id(bastion)
    with pytest.raises(ServiceError, match="cannot be decrypted with this index's encryption key: restore the "
                                           "original BASTION_ENCRYPTION_KEY") as caught:
        check(other, "alice", code_at(secret, STEP0))
    assert caught.value.status == 500
    assert actions(bastion, before) == []  # not counted as the user's failure
    check(bastion, "alice", code_at(secret, STEP0))  # the right key still works


def test_removing_the_last_factor_turns_2fa_off_and_drops_the_recovery_codes(bastion: Bastion) -> None:
    enrolled_at_t0(bastion, "alice")
    before = last_event_id(bastion)
    with bastion.db.write() as session:
        mfa.remove_totp(session, user_row(session, "alice"), secret=bastion.secret, context=CONTEXT)
    with bastion.db.read() as session:
        alice = user_row(session, "alice")
        assert alice.totp_secret is None and alice.totp_last_step is None and alice.mfa_enabled is None
        assert session.execute(select(RecoveryCode)).scalars().all() == []
    assert [a for a, _ in actions(bastion, before)] == ["mfa.totp_removed"]
    with bastion.db.write() as session, pytest.raises(ServiceError, match="no authenticator app is enrolled"):
        mfa.remove_totp(session, user_row(session, "alice"), secret=bastion.secret)


# ---------------------------------------------------------------------------------------------
# Recovery codes
# ---------------------------------------------------------------------------------------------

CODE_FORMAT = re.compile(r"^[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}$")


def enroll_with_codes(bastion: Bastion, name: str) -> list[str]:
    make_user(bastion, name)
    secret = mfa.new_totp_secret()
    with bastion.db.write() as session:
        codes = mfa.enable_totp(session, user_row(session, name), secret, code_at(secret, STEP0),
                                key=bastion.encryption_key, secret=bastion.secret, now=T0)
    assert codes is not None
    return codes


def use_code(bastion: Bastion, name: str, code: str) -> int:
    with bastion.db.write() as session:
        try:
            return mfa.use_recovery_code(session, user_row(session, name), code, secret=bastion.secret,
                                         context=CONTEXT)
        except mfa.MfaError:
            session.commit()
            raise


def test_the_first_enrollment_makes_eight_codes_stored_only_as_hashes(bastion: Bastion) -> None:
    codes = enroll_with_codes(bastion, "alice")
    assert len(codes) == 8 == len(set(codes))
    assert all(CODE_FORMAT.match(code) for code in codes), codes
    with bastion.db.read() as session:
        hashes = session.execute(select(RecoveryCode.code_hash)).scalars().all()
    assert len(hashes) == 8
    everything = repr(db_rows(bastion))
    for code in codes:
        for form in (code, code.replace("-", ""), code.upper()):
            assert form not in everything
    event = [d for a, d in actions(bastion) if a == "mfa.recovery_codes_generated"]
    assert event == [{"count": 8}]


def test_a_second_factor_added_later_makes_no_new_codes(bastion: Bastion) -> None:
    codes = enroll_with_codes(bastion, "alice")
    with bastion.db.write() as session:
        alice = user_row(session, "alice")
        mfa.remove_totp(session, alice, secret=bastion.secret)
        assert mfa.factors(session, alice).recovery_codes_left == 0  # no factor: codes dropped
        secret = mfa.new_totp_secret()
        again = mfa.enable_totp(session, alice, secret, code_at(secret, STEP0), key=bastion.encryption_key,
                                secret=bastion.secret, now=T0)
    assert again is not None and len(again) == 8 and not set(again) & set(codes)
    with bastion.db.write() as session:
        # A new set replaces the old one; the user's factors are unchanged.
        newest = mfa.generate_recovery_codes(session, user_row(session, "alice"), secret=bastion.secret,
                                             context=CONTEXT)
    with pytest.raises(mfa.MfaError, match="wrong recovery code"):
        use_code(bastion, "alice", again[0])
    assert use_code(bastion, "alice", newest[0]) == 7


def test_each_recovery_code_works_once(bastion: Bastion) -> None:
    codes = enroll_with_codes(bastion, "alice")
    before = last_event_id(bastion)
    assert use_code(bastion, "alice", codes[3]) == 7
    # as typed by a person: capitals, spaces, no dashes
    assert use_code(bastion, "alice", " " + codes[5].replace("-", " ").upper()) == 6
    with pytest.raises(mfa.MfaError, match=r"^recovery code already used: each code works once"):
        use_code(bastion, "alice", codes[3])
    with pytest.raises(mfa.MfaError, match=r"^wrong recovery code: each code works once"):
        use_code(bastion, "alice", "0000-0000-0000-0000")
    with pytest.raises(mfa.MfaError, match="wrong recovery code"):
        use_code(bastion, "alice", "")
    assert actions(bastion, before) == [
        ("mfa.recovery_code_used", {"codes_left": 7}),
        ("mfa.recovery_code_used", {"codes_left": 6}),
        ("mfa.failed", {"method": "recovery_code", "reason": "recovery code already used"}),
        ("mfa.failed", {"method": "recovery_code", "reason": "wrong recovery code"}),
        ("mfa.failed", {"method": "recovery_code", "reason": "wrong recovery code"}),
    ]


def test_codes_of_one_user_do_not_work_for_another(bastion: Bastion) -> None:
    alice = enroll_with_codes(bastion, "alice")
    enroll_with_codes(bastion, "bob")
    with pytest.raises(mfa.MfaError, match="wrong recovery code"):
        use_code(bastion, "bob", alice[0])
    assert use_code(bastion, "alice", alice[0]) == 7


# ---------------------------------------------------------------------------------------------
# Through the web: enrollment shows the codes once; using a code mails the user
# ---------------------------------------------------------------------------------------------

def test_totp_enrollment_through_the_web(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    make_user(bastion, "alice")
    open_session(bastion, client, "alice")
    first = last_event_id(bastion)
    begun = client.post("/account/2fa/totp/begin", data={"csrf_token": csrf_of(page(client, "/account/2fa"))})
    assert begun.status_code == 200, begun.text
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', begun.text).group(1)  # type: ignore[union-attr]
    assert "<svg" in begun.text and "TOTP QR code" in begun.text  # the QR code, inline
    with bastion.db.read() as session:
        pending = session.execute(select(BrowserSession.challenge)).scalars().all()
    # the candidate secret waits in the session row, encrypted
    assert len(pending) == 1 and pending[0].startswith("totp:") and secret not in pending[0]
    token = csrf_of(begun.text)

    wrong = client.post("/account/2fa/totp/confirm", data={"csrf_token": token, "code": "000000"})
    if wrong.status_code == 200:  # the one-in-a-million chance that 000000 is right: not this test's point
        pytest.skip("000000 happened to be the current code")
    assert wrong.status_code == 400
    assert "that code does not match: check the time on your device" in wrong.text
    assert secret in wrong.text  # the same enrollment goes on
    with bastion.db.read() as session:
        assert user_row(session, "alice").totp_secret is None

    done = client.post("/account/2fa/totp/confirm",
                       data={"csrf_token": token, "code": pyotp.TOTP(secret).now()})
    assert done.status_code == 200, done.text
    shown = re.search(r'id="recovery-codes">(.*?)</pre>', done.text, re.S).group(1).split()  # type: ignore[union-attr]
    assert len(shown) == 8 and all(CODE_FORMAT.match(c) for c in shown)
    assert "shown only once" in done.text
    with bastion.db.read() as session:
        alice = user_row(session, "alice")
        assert alice.mfa_enabled is not None and alice.totp_secret and secret not in alice.totp_secret
        assert session.execute(select(BrowserSession.challenge)).scalar_one() is None
    # afterwards no page shows them again
    for path in ("/account/2fa", "/account/", "/account/history"):
        text_ = page(client, path)
        assert not any(code in text_ for code in shown), path
    assert "8 unused recovery codes" in page(client, "/account/2fa")
    assert [a for a, _ in actions(bastion, first)] == [
        "mfa.totp_enroll_failed", "mfa.totp_added", "mfa.recovery_codes_generated"]
    # and they work
    assert use_code(bastion, "alice", shown[0]) == 7


def test_codes_for_a_security_key_are_shown_once(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    """After a first security key, the script navigates to a page that shows the codes once."""
    make_user(bastion, "alice")
    cookie = open_session(bastion, client, "alice")
    codes = ["aaaa-bbbb-cccc-dddd", "1111-2222-3333-4444"]
    from bastion.accounts.sessions import load_session

    with bastion.db.write() as session:
        load_session(session, cookie).challenge = (  # type: ignore[union-attr]
            "codes:n0nce:" + mfa.encrypt_secret(bastion.encryption_key, '["aaaa-bbbb-cccc-dddd", "1111-2222-3333-4444"]'))
    # A link without the nonce the script was given (say, from another site) shows nothing and
    # does not spend the one display.
    for forged in ("/account/2fa/recovery-codes/new", "/account/2fa/recovery-codes/new?n=guess"):
        response = client.get(forged, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/account/2fa"
    first = client.get("/account/2fa/recovery-codes/new?n=n0nce", follow_redirects=False)
    assert first.status_code == 200 and all(code in first.text for code in codes)
    second = client.get("/account/2fa/recovery-codes/new?n=n0nce", follow_redirects=False)
    assert second.status_code == 303 and second.headers["location"] == "/account/2fa"


def test_new_codes_need_a_recent_reauthentication(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    secret, codes = enroll_totp(bastion, "alice")
    cookie = open_session(bastion, client, "alice")
    set_reauth_age(bastion, cookie, timedelta(hours=1))
    refused = client.post("/account/2fa/recovery-codes", data={"csrf_token": csrf_of(page(client, "/account/2fa"))},
                          follow_redirects=False)
    assert refused.status_code == 303 and refused.headers["location"].startswith("/account/reauth?next=")
    assert use_code(bastion, "alice", codes[0]) == 7  # the old codes still work
    set_reauth_age(bastion, cookie, timedelta(minutes=1))
    made = client.post("/account/2fa/recovery-codes", data={"csrf_token": csrf_of(page(client, "/account/2fa"))})
    assert made.status_code == 200
    fresh = re.search(r'id="recovery-codes">(.*?)</pre>', made.text, re.S).group(1).split()  # type: ignore[union-attr]
    assert len(fresh) == 8 and not set(fresh) & set(codes)
    with pytest.raises(mfa.MfaError, match="wrong recovery code"):
        use_code(bastion, "alice", codes[1])


def _outbox(bastion: Bastion) -> list[str]:
    bastion.tasks.drain()
    return sorted(p.read_text() for p in bastion.settings.outbox_dir.glob("*.eml"))


def test_signing_in_with_a_recovery_code_mails_the_user(bastion_with, smtp_server: Mailbox) -> None:  # type: ignore[no-untyped-def]
    bastion, client = bastion_with(smtp_host=smtp_server.host, smtp_port=smtp_server.port)
    _, codes = enroll_totp(bastion, "alice")
    pending = sign_in(client, "alice")
    assert pending.headers["location"].startswith("/account/login/2fa")
    second = client.post("/account/login/2fa", data={"csrf_token": csrf_of(page(client, "/account/login/2fa")),
                                                     "recovery_code": codes[2], "next": "/account/tokens"},
                         follow_redirects=False)
    assert second.status_code == 303 and second.headers["location"] == "/account/tokens"
    message = smtp_server.wait_for("alice@example.org", "A recovery code was used to sign in")
    assert "A recovery code was used to sign in to your account" in message.get_content()
    assert codes[2] not in message.get_content()
    assert ("mfa.recovery_code_used", {"codes_left": 7}) in actions(bastion)
    assert ("login.succeeded", {"second_factor": "recovery_code"}) in actions(bastion)
    # the same code cannot sign in again
    client.cookies.clear()
    sign_in(client, "alice")
    again = client.post("/account/login/2fa", data={"csrf_token": csrf_of(page(client, "/account/login/2fa")),
                                                    "recovery_code": codes[2]}, follow_redirects=False)
    assert again.status_code == 403 and "recovery code already used" in again.text
    assert len(smtp_server.messages) == 1


def test_reauthenticating_with_a_recovery_code_mails_the_user(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    _, codes = enroll_totp(bastion, "alice")
    cookie = open_session(bastion, client, "alice")
    set_reauth_age(bastion, cookie, timedelta(hours=1))
    done = client.post("/account/reauth", data={"csrf_token": csrf_of(page(client, "/account/reauth")),
                                                "password": PASSWORD, "recovery_code": codes[0],
                                                "next": "/account/tokens"}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/account/tokens"
    mails = _outbox(bastion)
    assert len(mails) == 1 and "A recovery code was used to sign in" in mails[0]
    assert "To: alice@example.org" in mails[0]


def test_a_wrong_code_at_sign_in_is_refused_on_the_page(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    secret, _ = enroll_totp(bastion, "alice")
    sign_in(client, "alice")
    now_step = int(utcnow().timestamp()) // 30
    for code, message in [(code_at(secret, now_step - 4), "invalid or expired code"),
                          ("12ab56", "invalid or expired code"),
                          ("", "invalid or expired code")]:
        refused = client.post("/account/login/2fa",
                              data={"csrf_token": csrf_of(page(client, "/account/login/2fa")), "code": code},
                              follow_redirects=False)
        assert refused.status_code == 403 and message in refused.text, refused.text
    ok = client.post("/account/login/2fa", data={"csrf_token": csrf_of(page(client, "/account/login/2fa")),
                                                 "code": code_at(secret, now_step + 1)}, follow_redirects=False)
    assert ok.status_code == 303
    reused = [d for a, d in actions(bastion) if a == "mfa.failed"]
    assert reused == [{"method": "totp", "reason": "wrong or expired code"}] * 3


def test_sign_in_with_a_wrong_encryption_key_says_so(bastion_with, bastion: Bastion) -> None:  # type: ignore[no-untyped-def]
    secret, _ = enroll_totp(bastion, "alice")
    other, client = bastion_with(encryption_key=Fernet.generate_key().decode())
    sign_in(client, "alice")
    response = client.post("/account/login/2fa", data={"csrf_token": csrf_of(page(client, "/account/login/2fa")),
                                                       "code": pyotp.TOTP(secret).now()}, follow_redirects=False)
    assert response.status_code == 500
    assert "cannot be decrypted with this index&#39;s encryption key" in response.text
    assert "BASTION_ENCRYPTION_KEY" in response.text
    assert client.get("/account/", follow_redirects=False).status_code == 303  # not signed in
