"""Rate limits and lockout of password and second-factor attempts (issue 3), with in-memory
counters and with real Redis (``rate_limit_storage="redis://127.0.0.1:6379"``).

Redis is shared by every test run on the machine: each test uses its own user names and client
addresses (random), and clears its counters afterwards. A test needing Redis fails, not skips,
when no Redis answers (CI runs one).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pyotp
import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from bastion.accounts import sessions
from bastion.accounts.models import User
from bastion.accounts.ratelimit import AttemptLimiter
from bastion.app import create_app
from bastion.db import utcnow
from bastion.events import Event, RequestContext
from bastion.services import Bastion
from bastion.settings import SettingsError
from tests.conftest import PASSWORD, make_user
from tests.unit.test_web_account import code_now, csrf_of, enroll_totp, page, sign_in

REDIS = "redis://127.0.0.1:6379"
STORAGES = ["memory://", REDIS]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def unique_ip() -> str:
    raw = uuid.uuid4().bytes
    return f"2001:db8:{raw[0]:x}{raw[1]:02x}:{raw[2]:x}{raw[3]:02x}::{raw[4]:x}{raw[5]:02x}"


def require_redis() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS, socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"Redis is required at {REDIS} (CI runs one) but does not answer: {exc}", pytrace=False)


class Limiters:
    """Makes limiters and remembers the (kind, account, address) they counted, to clear them."""

    def __init__(self) -> None:
        self.made: list[AttemptLimiter] = []
        self.used: list[tuple[str, str, str | None]] = []

    def __call__(self, storage: str, *, password: str = "3 per 15 minutes", mfa: str = "3 per 5 minutes"
                 ) -> AttemptLimiter:
        if storage.startswith("redis"):
            require_redis()
        limiter = AttemptLimiter(storage, {"password": password, "mfa": mfa})
        self.made.append(limiter)
        return limiter

    def clear(self) -> None:
        for limiter in self.made:
            for kind, account, address in self.used:
                if kind in limiter.per_account:
                    limiter.window.clear(limiter.per_account[kind], kind, account.lower())
                    if address:
                        limiter.window.clear(limiter.per_address[kind], kind, address)


@pytest.fixture
def limiters() -> Iterator[Limiters]:
    made = Limiters()
    yield made
    made.clear()


@pytest.fixture(params=STORAGES, ids=["memory", "redis"])
def storage(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# ---------------------------------------------------------------------------------------------
# The limiter itself
# ---------------------------------------------------------------------------------------------

def test_an_accounts_budget_is_spent_by_failures_and_cleared_by_a_success(limiters: Limiters, storage: str) -> None:
    limiter = limiters(storage)
    alice, ip = unique("alice"), unique_ip()
    limiters.used.append(("password", alice, ip))
    assert limiter.failed("password", alice, ip) is None
    assert limiter.failed("password", alice, ip) is None
    lock = limiter.failed("password", alice.upper(), ip)  # the account, whatever its case
    assert lock is not None and lock.scope == "account" and 880 <= lock.retry_after <= 901
    assert lock.message == ("too many failed attempts for this account: try again in 15 minutes "
                            "(or reset your password if you forgot it)")
    still = limiter.locked("password", alice, ip)  # right or wrong, no attempt is made now
    assert still is not None and still.scope == "account"
    assert limiter.locked("mfa", alice, ip) is None  # each kind has its own budget
    limiter.succeeded("password", alice)
    assert limiter.locked("password", alice, ip) is None


def test_an_address_has_ten_times_an_accounts_budget(limiters: Limiters, storage: str) -> None:
    limiter = limiters(storage, mfa="1 per 5 minutes")
    ip = unique_ip()
    names = [unique(f"user{i}") for i in range(11)]
    limiters.used.extend(("mfa", name, ip) for name in names)
    for name in names[:9]:
        lock = limiter.failed("mfa", name, ip)
        assert lock is not None and lock.scope == "account"
    lock = limiter.failed("mfa", names[9], ip)
    assert lock is not None and lock.scope == "account"  # the account's budget is checked first
    locked = limiter.locked("mfa", names[10], ip)
    assert locked is not None and locked.scope == "address"
    assert "too many failed attempts for your network address: try again in 5 minutes" in locked.message
    other_ip = unique_ip()
    limiters.used.append(("mfa", names[10], other_ip))
    assert limiter.locked("mfa", names[10], other_ip) is None


def test_redis_counters_are_shared_by_every_worker(limiters: Limiters) -> None:
    one, two = limiters(REDIS), limiters(REDIS)
    alice, ip = unique("alice"), unique_ip()
    limiters.used.append(("password", alice, ip))
    one.failed("password", alice, ip)
    two.failed("password", alice, ip)
    assert one.failed("password", alice, ip) is not None
    assert two.locked("password", alice, ip) is not None
    # memory:// counts per process: another worker knows nothing of them
    mem_one, mem_two = limiters("memory://"), limiters("memory://")
    for _ in range(3):
        mem_one.failed("password", alice, ip)
    assert mem_one.locked("password", alice, ip) is not None and mem_two.locked("password", alice, ip) is None


def test_a_storage_that_cannot_be_used_is_a_clear_settings_error() -> None:
    with pytest.raises(SettingsError, match="cannot use BASTION_RATE_LIMIT_STORAGE='nosuch://x'"):
        AttemptLimiter("nosuch://x", {"password": "3 per minute", "mfa": "3 per minute"})


# ---------------------------------------------------------------------------------------------
# Password and second-factor checks (service layer, both databases)
# ---------------------------------------------------------------------------------------------

def _actions(bastion: Bastion, after: int) -> list[tuple[str, dict]]:
    with bastion.db.read() as session:
        return [(e.action, e.details) for e in session.execute(
            select(Event).where(Event.id > after).order_by(Event.id)).scalars()]


def _last(bastion: Bastion) -> int:
    with bastion.db.read() as session:
        return session.execute(select(Event.id).order_by(Event.id.desc()).limit(1)).scalar() or 0


def _password(bastion: Bastion, limiter: AttemptLimiter, name: str, password: str, ip: str) -> int | str:
    """check_password as the sign-in route runs it (the refusal's event committed): 200 or the
    refusal's (status, message)."""
    with bastion.db.write() as session:
        try:
            sessions.check_password(session, name, password, limiter=limiter, context=RequestContext(ip=ip),
                                    secret=bastion.secret)
        except sessions.SignInError as exc:
            session.commit()
            return f"{exc.status} {exc.message}"
    return 200


@pytest.mark.parametrize("storage_uri", STORAGES, ids=["memory", "redis"])
def test_password_brute_force_locks_the_account(bastion: Bastion, limiters: Limiters, storage_uri: str) -> None:
    limiter = limiters(storage_uri)
    name, ip = unique("alice"), unique_ip()
    limiters.used.append(("password", name, ip))
    make_user(bastion, name)
    first = _last(bastion)
    answers = [_password(bastion, limiter, name, f"guess-number-{i}", ip) for i in range(3)]
    answers.append(_password(bastion, limiter, name, PASSWORD, ip))  # the right one, too late
    locked = ("429 too many failed attempts for this account: try again in 15 minutes "
              "(or reset your password if you forgot it)")
    assert answers == ["403 wrong username or password"] * 2 + [locked, locked]
    got = _actions(bastion, first)
    assert [a for a, _ in got] == ["login.failed", "login.failed", "login.failed", "login.locked", "login.locked"]
    assert got[3][1] == {"username": name, "scope": "account"}
    # another address does not unlock the account
    other = unique_ip()
    limiters.used.append(("password", name, other))
    assert _password(bastion, limiter, name, PASSWORD, other) == locked


# Ten password checks (argon2, slow) per run: the address's budget is the limiter's, whatever the
# database; the second-factor test below runs the same on both databases.
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("storage_uri", STORAGES, ids=["memory", "redis"])
def test_password_guessing_from_one_address_locks_the_address(bastion: Bastion, limiters: Limiters,
                                                              storage_uri: str) -> None:
    limiter = limiters(storage_uri, password="1 per 15 minutes")
    ip = unique_ip()
    names = [unique(f"nobody{i}") for i in range(11)]
    limiters.used.extend(("password", name, ip) for name in names)
    make_user(bastion, names[10])
    for name in names[:10]:  # unknown users: each guess costs a password check all the same
        assert str(_password(bastion, limiter, name, "guess-guess", ip)).startswith("429 too many failed attempts "
                                                                                    "for this account")
    refused = _password(bastion, limiter, names[10], PASSWORD, ip)
    assert refused == ("429 too many failed attempts for your network address: try again in 15 minutes "
                       "(or reset your password if you forgot it)")
    elsewhere = unique_ip()
    limiters.used.append(("password", names[10], elsewhere))
    assert _password(bastion, limiter, names[10], PASSWORD, elsewhere) == 200


def _second(bastion: Bastion, limiter: AttemptLimiter, name: str, code: str, ip: str) -> int | str:
    with bastion.db.write() as session:
        user = session.execute(select(User).where(User.username == name)).scalar_one()
        try:
            sessions.check_second_factor(session, user, sessions.SecondFactor(totp=code), limiter=limiter,
                                         key=bastion.encryption_key, context=RequestContext(ip=ip),
                                         secret=bastion.secret)
        except sessions.SignInError as exc:
            session.commit()
            return f"{exc.status} {exc.message}"
    return 200


@pytest.mark.parametrize("storage_uri", STORAGES, ids=["memory", "redis"])
def test_second_factor_brute_force_locks_the_account(bastion: Bastion, limiters: Limiters, storage_uri: str) -> None:
    limiter = limiters(storage_uri)
    name, ip = unique("alice"), unique_ip()
    limiters.used.append(("mfa", name, ip))
    secret, _ = enroll_totp(bastion, name)
    first = _last(bastion)
    answers = [_second(bastion, limiter, name, code, ip) for code in ("000000x", "", "12345")]
    answers.append(_second(bastion, limiter, name, code_now(secret), ip))
    locked = ("429 too many failed attempts for this account: try again in 5 minutes "
              "(or reset your password if you forgot it)")
    assert answers == ["403 invalid or expired code: enter the current 6-digit code from your authenticator app"] * 2 \
        + [locked, locked]
    got = [a for a, _ in _actions(bastion, first)]
    assert got == ["mfa.failed", "mfa.failed", "mfa.failed", "mfa.locked", "mfa.locked"]
    with bastion.db.read() as session:  # the right code was not consumed by the refused attempt
        user = session.execute(select(User).where(User.username == name)).scalar_one()
        assert user.totp_last_step < pyotp.TOTP(secret).timecode(utcnow()) - 5


@pytest.mark.parametrize("storage_uri", STORAGES, ids=["memory", "redis"])
def test_second_factor_guessing_from_one_address_locks_the_address(bastion: Bastion, limiters: Limiters,
                                                                   storage_uri: str) -> None:
    limiter = limiters(storage_uri, mfa="1 per 5 minutes")
    ip = unique_ip()
    names = [unique(f"user{i}") for i in range(11)]
    limiters.used.extend(("mfa", name, ip) for name in names)
    secrets = {}
    for name in names:
        secrets[name], _ = enroll_totp(bastion, name)
    for name in names[:10]:
        assert str(_second(bastion, limiter, name, "000000x", ip)).startswith("429 too many failed attempts")
    refused = _second(bastion, limiter, names[10], code_now(secrets[names[10]]), ip)
    assert str(refused).startswith("429 too many failed attempts for your network address: try again in 5 minutes")
    elsewhere = unique_ip()
    limiters.used.append(("mfa", names[10], elsewhere))
    assert _second(bastion, limiter, names[10], code_now(secrets[names[10]]), elsewhere) == 200


# ---------------------------------------------------------------------------------------------
# Through the sign-in pages, with the index's settings
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # the service tests above run on both
def test_the_sign_in_pages_lock_out_a_brute_force(bastion_with, storage: str) -> None:  # type: ignore[no-untyped-def]
    if storage.startswith("redis"):
        require_redis()
    bastion, _ = bastion_with(rate_limit_storage=storage, login_attempts="3 per 15 minutes",
                              mfa_attempts="2 per 5 minutes")
    ip = unique_ip()
    client = TestClient(create_app(bastion=bastion), client=(ip, 50000))
    name, other = unique("alice"), unique("bob")
    secret, _ = enroll_totp(bastion, name)
    make_user(bastion, other)
    try:
        # the password form
        token = csrf_of(page(client, "/account/login"))
        statuses = []
        for password in ("wrong-one-1", "wrong-one-2", "wrong-one-3", PASSWORD):
            response = client.post("/account/login", data={"csrf_token": token, "username": other,
                                                           "password": password}, follow_redirects=False)
            statuses.append(response.status_code)
        assert statuses == [403, 403, 429, 429]
        assert "too many failed attempts for this account: try again in 15 minutes" in response.text
        assert "bastion_session" not in response.headers.get("set-cookie", "")
        # the second-factor form
        sign_in(client, name)
        token = csrf_of(page(client, "/account/login/2fa"))
        statuses = []
        for code in ("000000x", "111111x", code_now(secret)):
            response = client.post("/account/login/2fa", data={"csrf_token": token, "code": code},
                                   follow_redirects=False)
            statuses.append(response.status_code)
        assert statuses == [403, 429, 429]
        assert "too many failed attempts for this account: try again in 5 minutes" in response.text
        assert client.get("/account/", follow_redirects=False).status_code == 303  # still not signed in
        with bastion.db.read() as session:
            actions = [a for a in session.execute(select(Event.action).order_by(Event.id)).scalars()
                       if a in ("login.failed", "login.locked", "login.password_ok", "mfa.failed", "mfa.locked")]
        assert actions == ["login.failed", "login.failed", "login.failed", "login.locked", "login.locked",
                           "login.password_ok", "mfa.failed", "mfa.failed", "mfa.locked", "mfa.locked"]
    finally:
        limiter = bastion.limiter
        for kind in ("password", "mfa"):
            for account in (name, other):
                limiter.window.clear(limiter.per_account[kind], kind, account.lower())
            limiter.window.clear(limiter.per_address[kind], kind, ip)


def test_redis_being_required_fails_loudly_when_it_is_missing() -> None:
    """What a missing Redis looks like to the index: a refused connection, not a silent fallback."""
    limiter = AttemptLimiter("redis://127.0.0.1:1", {"password": "3 per minute", "mfa": "3 per minute"})
    with pytest.raises(Exception) as caught:
        limiter.locked("password", "alice", "192.0.2.1")
    assert "connect" in str(caught.value).lower() or "refused" in str(caught.value).lower()
