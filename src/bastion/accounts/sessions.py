"""Browser sign-in: sessions, CSRF tokens, password and second-factor checks with rate limits.

A session cookie holds 32 random bytes; the database keeps only their SHA-256, so a leaked
database row cannot be replayed as a cookie. Sign-in with 2FA is two steps: the password makes a
short ``pending-2fa`` session, the second factor replaces it by a new ``active`` one (a new cookie:
no session fixation). Re-authentication (password and second factor again) unlocks sensitive
actions for ``reauth_window``. A password change ends every session of the user.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from bastion.accounts import mfa, passwords
from bastion.accounts.models import BrowserSession, User
from bastion.accounts.ratelimit import AttemptLimiter
from bastion.authz import Principal
from bastion.db import utcnow
from bastion.errors import ServiceError
from bastion.events import RequestContext, hash_ip, record_event

COOKIE_NAME = "bastion_session"
CSRF_COOKIE_NAME = "bastion_csrf"
PENDING = "pending-2fa"
ACTIVE = "active"
PENDING_LIFETIME = timedelta(minutes=10)
# Verified against when the username is unknown, so that a wrong name costs the same time as a
# wrong password (no username probing by timing).
_DUMMY_HASH = passwords.hash_password(secrets.token_hex(16))


class SignInError(ServiceError):
    """A sign-in step was refused; ``message`` is what the person is shown."""


def _digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


@dataclass(frozen=True)
class SignedIn:
    """The outcome of a sign-in step."""

    cookie: str
    """The new session cookie's value."""
    state: str
    """``active``, or ``pending-2fa`` when a second factor is still needed."""
    user: User
    """Who signed in."""


def create_session(session: Session, user: User, *, state: str, lifetime: timedelta, context: RequestContext,
                   secret: bytes, reauthenticated: bool = False) -> str:
    cookie = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(BrowserSession(
        id=_digest(cookie), user_id=user.id, state=state, created=now,
        expires=now + (PENDING_LIFETIME if state == PENDING else lifetime),
        reauth_at=now if reauthenticated else None,
        ip_hash=hash_ip(context.ip, secret), user_agent=(context.user_agent or "")[:500] or None,
    ))
    session.flush()
    return cookie


def load_session(session: Session, cookie: str | None) -> BrowserSession | None:
    """The live session of this cookie, or None (unknown, expired or malformed)."""
    if not cookie or len(cookie) > 200:
        return None
    row = session.get(BrowserSession, _digest(cookie))
    if row is None or row.expires <= utcnow():
        return None
    return row


def end_session(session: Session, cookie: str | None) -> None:
    if cookie:
        session.execute(delete(BrowserSession).where(BrowserSession.id == _digest(cookie)))


def end_all_sessions(session: Session, user_id: int, *, keep: str | None = None) -> None:
    """End every session of the user (a password change), except ``keep`` (a cookie)."""
    query = delete(BrowserSession).where(BrowserSession.user_id == user_id)
    if keep:
        query = query.where(BrowserSession.id != _digest(keep))
    session.execute(query)


def principal_of(user: User) -> Principal:
    return Principal(user_id=user.id, username=user.username, is_admin=user.is_admin,
                     has_2fa=user.mfa_enabled is not None)


# ---------------------------------------------------------------------------------------------
# CSRF: a synchronizer token bound to the session (or, before sign-in, to a random cookie)
# ---------------------------------------------------------------------------------------------

def csrf_token(secret: bytes, seed: str) -> str:
    return hmac.new(secret, b"bastion-csrf-v1:" + seed.encode(), hashlib.sha256).hexdigest()


def csrf_valid(secret: bytes, seed: str | None, token: str | None) -> bool:
    if not seed or not token:
        return False
    return hmac.compare_digest(csrf_token(secret, seed).encode(), token.encode("utf-8", "replace"))


# ---------------------------------------------------------------------------------------------
# Sign-in steps
# ---------------------------------------------------------------------------------------------

def _find_user(session: Session, username: str) -> User | None:
    return session.execute(select(User).where(User.username_key == username.strip().lower())).scalar_one_or_none()


def _refuse(session: Session, action: str, user: User | None, username: str, context: RequestContext,
            secret: bytes, message: str, **details: object) -> SignInError:
    # What was typed as a username is kept only when it names an account: otherwise it may well be
    # a password typed into the wrong box.
    typed = {"username": user.username} if user else {"username": None, "unknown_account": True}
    record_event(session, action, actor_id=user.id if user else None, actor=user.username if user else None,
                 subject=f"user:{user.username}" if user else None, context=context, secret=secret,
                 details={**typed, **details})
    return SignInError(message, status=429 if "too many" in message else 403)


def check_password(session: Session, username: str, password: str, *, limiter: AttemptLimiter,
                   context: RequestContext, secret: bytes) -> User:
    """The user whose password this is; SignInError (with an event) when wrong or locked out.
    The caller commits even on refusal, so that the event stays."""
    user = _find_user(session, username)
    lock = limiter.locked("password", username.strip(), context.ip)
    if lock is not None:
        if limiter.may_record(context.ip):
            raise _refuse(session, "login.locked", user, username, context, secret, lock.message, scope=lock.scope)
        raise SignInError(lock.message, status=429)
    ok = passwords.verify_password(user.password_hash if user else _DUMMY_HASH, password)
    if not ok or user is None or not user.is_active:
        lock = limiter.failed("password", username.strip(), context.ip)
        if user is not None and not user.is_active and ok:
            refusal = _refuse(session, "login.failed", user, username, context, secret,
                              "this account is disabled: contact the index's administrators", reason="disabled")
        else:
            message = lock.message if lock else "wrong username or password"
            refusal = _refuse(session, "login.failed", user, username, context, secret, message, reason="password")
        if lock is not None:  # this failure spent the budget: the lockout starts now, and is recorded
            _refuse(session, "login.locked", user, username, context, secret, lock.message, scope=lock.scope)
        raise refusal
    limiter.succeeded("password", username.strip())
    return user


def sign_in_password(session: Session, username: str, password: str, *, limiter: AttemptLimiter,
                     lifetime: timedelta, context: RequestContext, secret: bytes) -> SignedIn:
    """First step: the password. Users with 2FA get a pending session awaiting the second factor."""
    user = check_password(session, username, password, limiter=limiter, context=context, secret=secret)
    if user.mfa_enabled is not None:
        cookie = create_session(session, user, state=PENDING, lifetime=lifetime, context=context, secret=secret)
        record_event(session, "login.password_ok", actor_id=user.id, actor=user.username,
                     subject=f"user:{user.username}", context=context, secret=secret,
                     details={"awaiting": "second factor"})
        return SignedIn(cookie=cookie, state=PENDING, user=user)
    cookie = create_session(session, user, state=ACTIVE, lifetime=lifetime, context=context, secret=secret,
                            reauthenticated=True)
    record_event(session, "login.succeeded", actor_id=user.id, actor=user.username, subject=f"user:{user.username}",
                 context=context, secret=secret, details={"second_factor": "none"})
    return SignedIn(cookie=cookie, state=ACTIVE, user=user)


@dataclass(frozen=True)
class SecondFactor:
    """What the person offered as a second factor: exactly one of the fields."""

    totp: str | None = None
    """A 6-digit code."""
    recovery_code: str | None = None
    """One of the recovery codes."""
    webauthn: str | None = None
    """The JSON of a WebAuthn assertion (with ``challenge``, ``rp_id`` and ``origin`` below)."""
    challenge: str | None = None
    rp_id: str | None = None
    origin: str | None = None


def check_second_factor(session: Session, user: User, offered: SecondFactor, *, limiter: AttemptLimiter,
                        key: bytes, context: RequestContext, secret: bytes, now: datetime | None = None) -> str:
    """Verify one second factor, rate limited; the method used. Raises SignInError."""
    lock = limiter.locked("mfa", user.username, context.ip)
    if lock is not None:
        raise _refuse(session, "mfa.locked", user, user.username, context, secret, lock.message, scope=lock.scope)
    try:
        if offered.totp is not None:
            mfa.check_totp(session, user, offered.totp, key=key, secret=secret, context=context, now=now)
            method = "totp"
        elif offered.recovery_code is not None:
            mfa.use_recovery_code(session, user, offered.recovery_code, secret=secret, context=context)
            method = "recovery_code"
        elif offered.webauthn is not None and offered.challenge and offered.rp_id and offered.origin:
            mfa.check_webauthn(session, user, offered.webauthn, challenge=offered.challenge, rp_id=offered.rp_id,
                               origin=offered.origin, secret=secret, context=context)
            method = "webauthn"
        else:
            raise mfa.MfaError("no second factor given: enter a code, use your security key or a recovery code")
    except mfa.MfaError as exc:
        lock = limiter.failed("mfa", user.username, context.ip)
        if lock is not None:  # this failure spent the budget: the lockout starts now, and is recorded
            raise _refuse(session, "mfa.locked", user, user.username, context, secret, lock.message,
                          scope=lock.scope) from None
        raise SignInError(exc.message, status=403) from None
    limiter.succeeded("mfa", user.username)
    return method


def complete_sign_in(session: Session, pending: BrowserSession, offered: SecondFactor, *, limiter: AttemptLimiter,
                     lifetime: timedelta, key: bytes, context: RequestContext, secret: bytes) -> SignedIn:
    """Second step: a pending session plus a valid second factor becomes a new active session."""
    user = session.get(User, pending.user_id)
    if user is None or pending.state != PENDING or not user.is_active:
        raise SignInError("this sign-in has expired: sign in again", status=403)
    method = check_second_factor(session, user, offered, limiter=limiter, key=key, context=context, secret=secret)
    session.delete(pending)
    cookie = create_session(session, user, state=ACTIVE, lifetime=lifetime, context=context, secret=secret,
                            reauthenticated=True)
    record_event(session, "login.succeeded", actor_id=user.id, actor=user.username, subject=f"user:{user.username}",
                 context=context, secret=secret, details={"second_factor": method})
    return SignedIn(cookie=cookie, state=ACTIVE, user=user)


def reauthenticate(session: Session, browser: BrowserSession, user: User, password: str, offered: SecondFactor | None,
                   *, limiter: AttemptLimiter, key: bytes, context: RequestContext, secret: bytes) -> None:
    """Password (and the second factor, when the user has one) again: unlocks sensitive actions."""
    check_password(session, user.username, password, limiter=limiter, context=context, secret=secret)
    method = None
    if user.mfa_enabled is not None:
        if offered is None:
            raise SignInError("enter a code from your authenticator app, or use a security key or a recovery code")
        method = check_second_factor(session, user, offered, limiter=limiter, key=key, context=context, secret=secret)
    browser.reauth_at = utcnow()
    record_event(session, "login.reauthenticated", actor_id=user.id, actor=user.username,
                 subject=f"user:{user.username}", context=context, secret=secret, details={"second_factor": method})


def recently_reauthenticated(browser: BrowserSession, window: timedelta) -> bool:
    return browser.reauth_at is not None and browser.reauth_at > utcnow() - window
