"""The web session layer: who is signed in, CSRF checks, re-authentication, security headers.

``WebSessionMiddleware`` runs only on the web UI's paths (the package API and the read hot path
never see it). It loads the browser session named by the cookie, puts the signed-in user on
``request.state``, makes sure a CSRF cookie exists before sign-in, and adds the security headers
to every response (redirects and errors included). Routes then ask for what they need:
``signed_in(request)``, ``await checked_form(request)`` (CSRF), ``require_reauth(request)``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from fastapi import Request
from bastion.accounts.models import BrowserSession, User
from bastion.accounts.policy import account_requires_mfa, mfa_policy
from bastion.accounts.sessions import (
    ACTIVE,
    COOKIE_NAME,
    CSRF_COOKIE_NAME,
    csrf_token,
    csrf_valid,
    load_session,
    principal_of,
    recently_reauthenticated,
)
from bastion.authz import Principal
from bastion.errors import ServiceError
from bastion.events import RequestContext, record_event
from bastion.web.render import security_headers

WEB_PREFIXES = ("/account", "/projects", "/admin", "/stats", "/security", "/static")
# Pages a user without 2FA may still reach when the index requires 2FA of everyone.
MFA_ENROLLMENT_PATHS = ("/account/2fa", "/account/logout", "/account/reauth", "/account/verify-email")


@dataclass(frozen=True)
class WebUser:
    """The signed-in user of this request."""

    id: int
    """User id."""
    username: str
    """Display name."""
    is_admin: bool
    """Index admin."""
    has_2fa: bool
    """A second factor is enrolled."""
    email: str
    """The account's address."""
    email_verified: bool
    """The address was confirmed."""
    session_state: str
    """``active`` or ``pending-2fa``."""
    reauth_at: datetime | None
    """Last re-authentication."""
    cookie: str
    """The session cookie (to end this session)."""

    @property
    def principal(self) -> Principal:
        return Principal(user_id=self.id, username=self.username, is_admin=self.is_admin, has_2fa=self.has_2fa)


class WebRedirect(Exception):
    """Send the browser elsewhere (sign-in, re-authentication, 2FA enrollment)."""

    def __init__(self, location: str, flash: str | None = None) -> None:
        super().__init__(location)
        self.location = location
        self.flash = flash


class CsrfRefused(Exception):
    """A form without a valid CSRF token."""


def _cookies(scope: dict[str, Any]) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # noqa: BLE001  (a malformed cookie header is ignored, not a 500)
                continue
    return {key: morsel.value for key, morsel in jar.items()}


def _is_https(scope: Any, bastion: Any) -> bool:
    mode = bastion.settings.cookie_secure
    if mode in ("always", "never"):
        return mode == "always"
    return scope.get("scheme") == "https" or bastion.settings.public_url.startswith("https://")


def cookie_header(name: str, value: str, *, https: bool, max_age: int | None) -> str:
    parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Lax"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if https:
        parts.append("Secure")
    return "; ".join(parts)


class WebSessionMiddleware:
    def __init__(self, app: Any, bastion: Any) -> None:
        self.app = app
        self.bastion = bastion

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == "/" or path.startswith(WEB_PREFIXES)):
            return await self.app(scope, receive, send)
        from starlette.concurrency import run_in_threadpool

        cookies = _cookies(scope)
        https = _is_https(scope, self.bastion)
        user = await run_in_threadpool(self._load, cookies.get(COOKIE_NAME))
        new_csrf = None
        csrf_seed = cookies.get(CSRF_COOKIE_NAME)
        if user is not None and user.session_state == ACTIVE:
            csrf_seed = "session:" + user.cookie
        elif not csrf_seed or len(csrf_seed) > 100:
            csrf_seed = new_csrf = secrets.token_urlsafe(24)
        state = scope.setdefault("state", {})
        state["web_user"] = user
        state["csrf_seed"] = csrf_seed
        state["csrf_token"] = csrf_token(self.bastion.secret, csrf_seed)
        active = user is not None and user.session_state == ACTIVE
        state["username"] = user.username if user is not None and active else None
        state["is_admin"] = bool(user and active and user.is_admin)
        extra = [(k.lower().encode(), v.encode()) for k, v in security_headers(https=https).items()]
        if new_csrf:
            extra.append((b"set-cookie", cookie_header(CSRF_COOKIE_NAME, new_csrf, https=https, max_age=None).encode()))
        extra.append((b"cache-control", b"no-store"))
        flash = cookies.get("bastion_flash")
        if flash:
            state["flash"] = unquote(flash)[:300]


        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                headers = list(message.get("headers", []))
                sets_flash = any(n.lower() == b"set-cookie" and v.startswith(b"bastion_flash=") for n, v in headers)
                if flash and not sets_flash:  # shown once: cleared by the response that showed it
                    headers.append((b"set-cookie", cookie_header("bastion_flash", "", https=https, max_age=0).encode()))
                for name, value in extra:
                    if name == b"set-cookie" or name not in present:
                        headers.append((name, value))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _load(self, cookie: str | None) -> WebUser | None:
        if not cookie:
            return None
        with self.bastion.db.read() as session:
            browser = load_session(session, cookie)
            if browser is None:
                return None
            user = session.get(User, browser.user_id)
            if user is None or not user.is_active:
                return None
            return WebUser(id=user.id, username=user.username, is_admin=user.is_admin,
                           has_2fa=user.mfa_enabled is not None, email=user.email,
                           email_verified=user.email_verified, session_state=browser.state,
                           reauth_at=browser.reauth_at, cookie=cookie)


# ---------------------------------------------------------------------------------------------
# What routes ask for
# ---------------------------------------------------------------------------------------------

def bastion_of(request: Request) -> Any:
    return request.app.state.bastion


def context_of(request: Request) -> RequestContext:
    client = request.client.host if request.client else None
    return RequestContext(ip=client, user_agent=request.headers.get("user-agent"))


def next_of(request: Request) -> str:
    """The path (and query) of this request, to come back to after signing in."""
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def safe_next(target: str | None, default: str = "/account/") -> str:
    """Only same-site paths: an open redirect would make phishing links look like ours."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target


def pending_user(request: Request) -> WebUser | None:
    user = getattr(request.state, "web_user", None)
    return user if user is not None and user.session_state != ACTIVE else None


def signed_in(request: Request, *, enforce_mfa_policy: bool = True) -> WebUser:
    """The signed-in user, or a redirect to the sign-in page (coming back here afterwards). Under
    the ``everyone`` policy, a user without 2FA is sent to enroll first."""
    user = getattr(request.state, "web_user", None)
    if user is None or user.session_state != ACTIVE:
        raise WebRedirect(f"/account/login?next={quote(next_of(request))}")
    if enforce_mfa_policy and not user.has_2fa and not request.url.path.startswith(MFA_ENROLLMENT_PATHS):
        with bastion_of(request).db.read() as session:
            policy = mfa_policy(session)
        if account_requires_mfa(policy):
            raise WebRedirect("/account/2fa", "This index requires two-factor authentication of every account: "
                                              "enable it to continue.")
    return user


def require_reauth(request: Request, user: WebUser) -> None:
    """Sensitive actions need a recent re-authentication (password and second factor)."""
    window = bastion_of(request).settings.duration("reauth_window")
    browser = BrowserSession(reauth_at=user.reauth_at)
    if not recently_reauthenticated(browser, window):
        referer = request.headers.get("referer") or ""
        back = urlsplit(referer).path if referer else ""
        target = back if request.method == "POST" and back else next_of(request)
        raise WebRedirect(f"/account/reauth?next={quote(safe_next(target))}",
                          "Confirm it is you: enter your password (and your second factor) again.")


async def checked_form(request: Request) -> dict[str, str]:
    """The submitted form, after its CSRF token was checked (CsrfRefused, with an event, if not)."""
    form = await request.form(max_files=0, max_fields=100, max_part_size=64 * 1024)
    token = form.get("csrf_token")
    if not isinstance(token, str):
        token = request.headers.get("x-csrf-token")
    if not csrf_valid(bastion_of(request).secret, getattr(request.state, "csrf_seed", None), token):
        from starlette.concurrency import run_in_threadpool

        await run_in_threadpool(_refuse_csrf, request)  # records the event, raises CsrfRefused
    request.state.raw_form = form
    if any("\x00" in key or (isinstance(value, str) and "\x00" in value) for key, value in form.multi_items()):
        # PostgreSQL text cannot hold NUL: refused here rather than failing deep in a query.
        raise ServiceError("a form field contains a NUL character: remove it and submit the form again")
    return {key: value for key, value in form.items() if isinstance(value, str)}


async def csrf_form(request: Request) -> dict[str, str]:
    """Dependency of every form route: the CSRF-checked form. The route itself is then a plain
    ``def``, which FastAPI runs in the thread pool: password hashing and database work never block
    the event loop that also serves /simple/ and the files."""
    return await checked_form(request)


async def csrf_json(request: Request) -> dict[str, Any] | None:
    """Dependency of the WebAuthn script's JSON routes: CSRF from ``X-CSRF-Token``, then the body
    (None when it is not a JSON object)."""
    from starlette.concurrency import run_in_threadpool

    if not csrf_valid(bastion_of(request).secret, getattr(request.state, "csrf_seed", None),
                      request.headers.get("x-csrf-token")):
        await run_in_threadpool(_refuse_csrf, request)
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def form_values(request: Request, key: str) -> list[str]:
    """Every value of a repeated form field (checkboxes), from the form ``csrf_form`` read."""
    raw = getattr(request.state, "raw_form", None)
    return [v for v in raw.getlist(key) if isinstance(v, str)] if raw is not None else []


def check_csrf_header(request: Request) -> None:
    """For the JSON requests of the WebAuthn script: the token travels in ``X-CSRF-Token``."""
    if not csrf_valid(bastion_of(request).secret, getattr(request.state, "csrf_seed", None),
                      request.headers.get("x-csrf-token")):
        _refuse_csrf(request)


def _refuse_csrf(request: Request) -> None:
    bastion = bastion_of(request)
    user = getattr(request.state, "web_user", None)
    if user is None and not bastion.limiter.may_record(context_of(request).ip):
        raise CsrfRefused()  # an anonymous flood: refused, but no longer written down
    with bastion.db.write() as session:
        record_event(session, "csrf.refused", actor_id=user.id if user else None,
                     actor=user.username if user else None, subject=f"user:{user.username}" if user else None,
                     context=context_of(request), secret=bastion.secret, details={"path": request.url.path})
    raise CsrfRefused()


def set_session_cookie(response: Any, request: Request, cookie: str | None) -> None:
    bastion = bastion_of(request)
    https = _is_https(request.scope, bastion)
    if cookie is None:
        response.headers.append("set-cookie", cookie_header(COOKIE_NAME, "", https=https, max_age=0))
        return
    lifetime = int(bastion.settings.duration("session_lifetime").total_seconds())
    response.headers.append("set-cookie", cookie_header(COOKIE_NAME, cookie, https=https, max_age=lifetime))


def webauthn_origin(request: Request) -> tuple[str, str]:
    """(rp_id, origin) for WebAuthn: the public URL's host if configured, else this request's."""
    public = bastion_of(request).settings.public_url
    if public:
        parts = urlsplit(public)
        return parts.hostname or "localhost", f"{parts.scheme}://{parts.netloc}"
    host = request.headers.get("host", "localhost")
    return urlsplit(f"//{host}").hostname or "localhost", f"{request.url.scheme}://{host}"


def load_user(session: Any, user: WebUser) -> User:
    row = session.get(User, user.id)
    assert row is not None
    return row


def load_browser(session: Any, user: WebUser) -> BrowserSession | None:
    return load_session(session, user.cookie)


def principal_for(session: Any, user: WebUser) -> Principal:
    return principal_of(load_user(session, user))

