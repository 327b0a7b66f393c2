"""Account pages: register, verify email, sign in (with 2FA), sign out, reset and change the
password, second factors, API tokens, the account's history (HTTP only: the logic is in
``bastion.accounts``)."""

from __future__ import annotations

import hmac
import json
import secrets
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy import or_, select

from bastion.accounts import mfa, notifications, service
from bastion.accounts.models import ApiToken, User
from bastion.accounts.ratelimit import AttemptLimiter
from bastion.accounts.sessions import (
    ACTIVE,
    create_session,
    SecondFactor,
    SignInError,
    complete_sign_in,
    end_session,
    load_session,
    reauthenticate,
    sign_in_password,
)
from bastion.errors import ServiceError
from bastion.events import EVENTS_PER_PAGE, events_of_user, record_event
from bastion.settings import SettingsError, parse_duration
from bastion.web.render import render_page
from bastion.web.session import (
    WebRedirect,
    bastion_of,
    check_csrf_header,
    context_of,
    csrf_form,
    csrf_json,
    form_values,
    load_user,
    pending_user,
    require_reauth,
    safe_next,
    set_session_cookie,
    signed_in,
    webauthn_origin,
)

router = APIRouter(prefix="/account", include_in_schema=False)

TOKEN_EXPIRY_CHOICES = (("1d", "1 day"), ("7d", "7 days"), ("30d", "30 days"), ("90d", "90 days"),
                        ("365d", "1 year"), ("never", "never"))


def limiter_of(request: Request) -> AttemptLimiter:
    return bastion_of(request).limiter  # type: ignore[no-any-return]


def encryption_key(request: Request) -> bytes:
    return bastion_of(request).encryption_key  # type: ignore[no-any-return]


def redirect(location: str, *, flash: str | None = None) -> RedirectResponse:
    response = RedirectResponse(location, status_code=303)
    if flash:
        # One-shot notice for the next page, signed by nothing: it is only ever displayed escaped.
        response.set_cookie("bastion_flash", quote(flash[:300]), max_age=60, httponly=True, samesite="lax", path="/")
    return response


def base_url(request: Request) -> str:
    public = bastion_of(request).settings.public_url
    return public.rstrip("/") if public else str(request.base_url).rstrip("/")


def send(request: Request, messages: list[Any]) -> None:
    bastion = bastion_of(request)
    if messages:
        bastion.send_mail(messages)


def _refusal(request: Request, template: str, exc: ServiceError, **context: Any) -> Response:
    return render_page(request, template, status=exc.status if exc.status < 500 else 400, error=exc.message,
                       **context)


# ---------------------------------------------------------------------------------------------
# Register and verify
# ---------------------------------------------------------------------------------------------

@router.get("/register")
def register_page(request: Request) -> Response:
    return render_page(request, "register.html", form={})


@router.post("/register")
def register(request: Request, form: dict[str, str] = Depends(csrf_form)) -> Response:
    bastion = bastion_of(request)
    name, email = form.get("username", "").strip(), form.get("email", "").strip()
    password, confirm = form.get("password", ""), form.get("password_confirm", "")
    if password != confirm:
        return render_page(request, "register.html", status=400, form={"username": name, "email": email},
                           error="the two passwords differ: type the same password twice")
    address = context_of(request).ip or "-"
    lock = limiter_of(request).locked("signup", address, None)
    if lock is not None:
        return render_page(request, "register.html", status=429, form={"username": name, "email": email},
                           error=f"too many new accounts from your network address: try again in "
                                 f"{max(1, lock.retry_after // 60)} minutes")
    try:
        with bastion.db.write() as session:
            user = service.register_user(session, name, email, password, context=context_of(request),
                                         secret=bastion.secret)
            link = f"{base_url(request)}/account/verify-email?token={service.email_verification_token(bastion.secret, user)}"
            message = notifications.verify_email(user, link)
            # Signed in at once, without hashing the password a second time.
            cookie = create_session(session, user, state=ACTIVE, context=context_of(request),
                                    lifetime=bastion.settings.duration("session_lifetime"), secret=bastion.secret,
                                    reauthenticated=True)
            record_event(session, "login.succeeded", actor_id=user.id, actor=user.username,
                         subject=f"user:{user.username}", context=context_of(request), secret=bastion.secret,
                         details={"second_factor": "none", "via": "registration"})
    except ServiceError as exc:
        return _refusal(request, "register.html", exc, form={"username": name, "email": email})
    limiter_of(request).failed("signup", address, None)  # counts registrations per address
    send(request, message)
    response = redirect("/account/", flash=f"Welcome, {name}. We sent a link to {email}: "
                                          "follow it to verify your address.")
    set_session_cookie(response, request, cookie)
    return response


@router.get("/verify-email")
def verify_email(request: Request, token: str = "") -> Response:
    bastion = bastion_of(request)
    try:
        with bastion.db.write() as session:
            user = service.verify_email(session, token, context=context_of(request), secret=bastion.secret)
            email = user.email
    except ServiceError as exc:
        return render_page(request, "message.html", status=400, title="Email not verified", error=exc.message)
    return render_page(request, "message.html", title="Email verified",
                       message=f"Thank you: {email} is verified.", link=("/account/", "Go to your account"))


@router.post("/verify-email/resend")
def resend_verification(request: Request, _form: dict[str, str] = Depends(csrf_form)) -> Response:
    user = signed_in(request)
    bastion = bastion_of(request)
    with bastion.db.read() as session:
        row = load_user(session, user)
        link = f"{base_url(request)}/account/verify-email?token={service.email_verification_token(bastion.secret, row)}"
        message = notifications.verify_email(row, link)
    send(request, message)
    return redirect("/account/", flash=f"We sent a new verification link to {user.email}.")


# ---------------------------------------------------------------------------------------------
# Sign in, second step, sign out
# ---------------------------------------------------------------------------------------------

@router.get("/login")
def login_page(request: Request, next: str = "") -> Response:
    return render_page(request, "login.html", next=safe_next(next), username="")


@router.post("/login")
def login(request: Request, form: dict[str, str] = Depends(csrf_form)) -> Response:
    bastion = bastion_of(request)
    target = safe_next(form.get("next"))
    username = form.get("username", "")
    try:
        with bastion.db.write() as session:
            try:
                signed = sign_in_password(session, username, form.get("password", ""), limiter=limiter_of(request),
                                          lifetime=bastion.settings.duration("session_lifetime"),
                                          context=context_of(request), secret=bastion.secret)
            except SignInError:
                session.commit()  # the failure's event stays
                raise
    except ServiceError as exc:
        return render_page(request, "login.html", status=exc.status, error=exc.message, next=target,
                           username=username)
    if signed.state == ACTIVE:
        response = redirect(target)
    else:
        response = redirect(f"/account/login/2fa?next={quote(target)}")
    set_session_cookie(response, request, signed.cookie)
    return response


def _factors_of_pending(request: Request) -> tuple[Any, mfa.Factors]:
    pending = pending_user(request)
    if pending is None:
        raise WebRedirect("/account/login", "Sign in with your password first.")
    with bastion_of(request).db.read() as session:
        row = load_user(session, pending)
        return pending, mfa.factors(session, row)


@router.get("/login/2fa")
def second_factor_page(request: Request, next: str = "") -> Response:
    _, factors = _factors_of_pending(request)
    return render_page(request, "login_2fa.html", next=safe_next(next), factors=factors)


def _offered(form: dict[str, str]) -> SecondFactor:
    if form.get("recovery_code", "").strip():
        return SecondFactor(recovery_code=form["recovery_code"])
    return SecondFactor(totp=form.get("code", ""))


@router.post("/login/2fa")
def second_factor(request: Request, form: dict[str, str] = Depends(csrf_form)) -> Response:
    return _finish_second_factor(request, _offered(form), safe_next(form.get("next")))


def _finish_second_factor(request: Request, offered: SecondFactor, target: str, *, as_json: bool = False) -> Response:
    pending, factors = _factors_of_pending(request)
    bastion = bastion_of(request)
    messages: list[Any] = []
    try:
        with bastion.db.write() as session:
            browser = load_session(session, pending.cookie)
            if browser is None:
                raise SignInError("this sign-in has expired: sign in again")
            try:
                signed = complete_sign_in(session, browser, offered, limiter=limiter_of(request),
                                          lifetime=bastion.settings.duration("session_lifetime"),
                                          key=encryption_key(request), context=context_of(request),
                                          secret=bastion.secret)
            except SignInError:
                session.commit()  # the failure's event stays
                raise
            if offered.recovery_code is not None:
                messages.extend(notifications.recovery_code_used(signed.user))
    except ServiceError as exc:
        if as_json:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        return render_page(request, "login_2fa.html", status=exc.status, error=exc.message, next=target,
                           factors=factors)
    send(request, messages)
    response: Response = JSONResponse({"redirect": target}) if as_json else redirect(target)
    set_session_cookie(response, request, signed.cookie)
    return response


@router.post("/login/webauthn/options")
def login_webauthn_options(request: Request) -> Response:
    check_csrf_header(request)
    pending = pending_user(request)
    if pending is None:
        return JSONResponse({"error": "sign in with your password first"}, status_code=403)
    return _webauthn_options(request, pending)


def _webauthn_options(request: Request, who: Any) -> Response:
    bastion = bastion_of(request)
    rp_id, _ = webauthn_origin(request)
    try:
        with bastion.db.write() as session:
            browser = load_session(session, who.cookie)
            if browser is None:
                raise ServiceError("your session has expired: sign in again", status=403)
            options, challenge = mfa.webauthn_authentication_options(session, load_user(session, who), rp_id=rp_id)
            browser.challenge = "auth:" + challenge
    except ServiceError as exc:
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    return Response(options, media_type="application/json")


NOT_JSON = JSONResponse({"error": "expected a JSON object"}, status_code=400)


def _challenge_of(request: Request, who: Any, purpose: str) -> str:
    """The pending WebAuthn challenge of this session, if it was issued for ``purpose``
    (``auth`` or ``reg``): a challenge issued to sign in cannot register a key, nor the reverse."""
    with bastion_of(request).db.read() as session:
        browser = load_session(session, who.cookie)
        pending = browser.challenge if browser is not None else None
        if not pending or not pending.startswith(purpose + ":"):
            raise ServiceError("no security-key challenge is pending: press the button again", status=400)
        return pending[len(purpose) + 1:]


@router.post("/login/webauthn/verify")
def login_webauthn_verify(request: Request, body: dict[str, Any] | None = Depends(csrf_json)) -> Response:
    pending = pending_user(request)
    if pending is None:
        return JSONResponse({"error": "sign in with your password first"}, status_code=403)
    if body is None:
        return NOT_JSON
    try:
        challenge = _challenge_of(request, pending, "auth")
    except ServiceError as exc:
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    rp_id, origin = webauthn_origin(request)
    offered = SecondFactor(webauthn=json.dumps(body.get("credential")), challenge=challenge, rp_id=rp_id,
                           origin=origin)
    return _finish_second_factor(request, offered, safe_next(str(body.get("next") or "")), as_json=True)


@router.post("/logout")
def logout(request: Request, _form: dict[str, str] = Depends(csrf_form)) -> Response:
    bastion = bastion_of(request)
    user = getattr(request.state, "web_user", None)
    if user is not None:
        with bastion.db.write() as session:
            end_session(session, user.cookie)
            from bastion.events import record_event

            record_event(session, "logout", actor_id=user.id, actor=user.username, subject=f"user:{user.username}",
                         context=context_of(request), secret=bastion.secret)
    response = redirect("/", flash="You are signed out.")
    set_session_cookie(response, request, None)
    return response


# ---------------------------------------------------------------------------------------------
# Re-authentication for sensitive actions
# ---------------------------------------------------------------------------------------------

@router.get("/reauth")
def reauth_page(request: Request, next: str = "") -> Response:
    user = signed_in(request, enforce_mfa_policy=False)
    with bastion_of(request).db.read() as session:
        factors = mfa.factors(session, load_user(session, user))
    return render_page(request, "reauth.html", next=safe_next(next), factors=factors)


@router.post("/reauth")
def reauth(request: Request, form: dict[str, str] = Depends(csrf_form)) -> Response:
    return _reauth(request, form, None)


@router.post("/reauth/webauthn/options")
def reauth_webauthn_options(request: Request) -> Response:
    check_csrf_header(request)
    return _webauthn_options(request, signed_in(request, enforce_mfa_policy=False))


@router.post("/reauth/webauthn/verify")
def reauth_webauthn_verify(request: Request, body: dict[str, Any] | None = Depends(csrf_json)) -> Response:
    user = signed_in(request, enforce_mfa_policy=False)
    if body is None:
        return NOT_JSON
    try:
        challenge = _challenge_of(request, user, "auth")
    except ServiceError as exc:
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    rp_id, origin = webauthn_origin(request)
    raw_fields = body.get("fields")
    fields: dict[str, Any] = raw_fields if isinstance(raw_fields, dict) else {}
    offered = SecondFactor(webauthn=json.dumps(body.get("credential")), challenge=challenge, rp_id=rp_id,
                           origin=origin)
    return _reauth(request, {k: str(v) for k, v in fields.items()}, offered, as_json=True)


def _reauth(request: Request, form: dict[str, str], offered: SecondFactor | None, *, as_json: bool = False) -> Response:
    user = signed_in(request, enforce_mfa_policy=False)
    bastion = bastion_of(request)
    target = safe_next(form.get("next"))
    if offered is None and user.has_2fa:
        offered = _offered(form)
    messages: list[Any] = []
    try:
        with bastion.db.write() as session:
            browser = load_session(session, user.cookie)
            if browser is None:
                raise SignInError("your session has expired: sign in again")
            row = load_user(session, user)
            if offered is not None and offered.webauthn is not None:
                browser.challenge = None  # one assertion per challenge, right or wrong
            try:
                reauthenticate(session, browser, row, form.get("password", ""), offered,
                               limiter=limiter_of(request), key=encryption_key(request), context=context_of(request),
                               secret=bastion.secret)
            except SignInError:
                session.commit()
                raise
            if offered is not None and offered.recovery_code is not None and row.mfa_enabled is not None:
                messages.extend(notifications.recovery_code_used(row))  # as at sign-in: the user is told
    except ServiceError as exc:
        if as_json:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        with bastion.db.read() as session:
            factors = mfa.factors(session, load_user(session, user))
        return render_page(request, "reauth.html", status=exc.status, error=exc.message, next=target,
                           factors=factors)
    send(request, messages)
    return JSONResponse({"redirect": target}) if as_json else redirect(target)


# ---------------------------------------------------------------------------------------------
# Password reset (signed out) and change (signed in)
# ---------------------------------------------------------------------------------------------

@router.get("/reset-password")
def reset_request_page(request: Request, token: str = "") -> Response:
    if token:
        return render_page(request, "reset_password.html", token=token)
    return render_page(request, "reset_request.html")


@router.post("/reset-password/request")
def reset_request(request: Request, form: dict[str, str] = Depends(csrf_form)) -> Response:
    bastion = bastion_of(request)
    wanted = form.get("username", "").strip().lower()
    messages = []
    if limiter_of(request).locked("reset", wanted, context_of(request).ip) is not None:
        wanted = ""  # the same answer, but no more mail to that inbox for now
    with bastion.db.read() as session:
        user = session.execute(
            select(User).where(or_(User.username_key == wanted, User.email == form.get("username", "").strip()))
        ).scalars().first() if wanted else None
        if user is not None and user.is_active:
            link = f"{base_url(request)}/account/reset-password?token={service.password_reset_token(bastion.secret, user)}"
            messages.extend(notifications.password_reset(user, link))
    if wanted:
        limiter_of(request).failed("reset", wanted, context_of(request).ip)
    send(request, messages)
    # The same answer whether or not the account exists: no probing for usernames or addresses.
    return render_page(request, "message.html", title="Check your email",
                       message="If an account matches, we sent it a link to choose a new password. "
                               "The link works for one hour.")


@router.post("/reset-password")
def reset_password(request: Request, form: dict[str, str] = Depends(csrf_form)) -> Response:
    bastion = bastion_of(request)
    token = form.get("token", "")
    if form.get("password", "") != form.get("password_confirm", ""):
        return render_page(request, "reset_password.html", status=400, token=token,
                           error="the two passwords differ: type the same password twice")
    try:
        with bastion.db.write() as session:
            user = service.reset_password(session, token, form.get("password", ""), context=context_of(request),
                                          secret=bastion.secret)
            message = notifications.password_changed(user)
    except ServiceError as exc:
        return render_page(request, "reset_password.html", status=400, token=token, error=exc.message)
    send(request, message)
    response = redirect("/account/login", flash="Your password was changed. Sign in with the new one.")
    set_session_cookie(response, request, None)
    return response


@router.get("/")
def account_page(request: Request) -> Response:
    user = signed_in(request)
    with bastion_of(request).db.read() as session:
        factors = mfa.factors(session, load_user(session, user))
    return render_page(request, "account.html", user=user, factors=factors)


@router.post("/password")
def change_password(request: Request, form: dict[str, str] = Depends(csrf_form)) -> Response:
    user = signed_in(request)
    bastion = bastion_of(request)
    if form.get("new_password", "") != form.get("new_password_confirm", ""):
        return _account_error(request, user, "the two new passwords differ: type the same password twice")
    try:
        with bastion.db.write() as session:
            row = load_user(session, user)
            try:
                service.change_password(session, row, form.get("current_password", ""), form.get("new_password", ""),
                                        context=context_of(request), secret=bastion.secret,
                                        limiter=limiter_of(request))
            except ServiceError:
                session.commit()
                raise
            message = notifications.password_changed(row)
    except ServiceError as exc:
        return _account_error(request, user, exc.message, status=exc.status)
    send(request, message)
    response = redirect("/account/login", flash="Your password was changed and every session ended: sign in again.")
    set_session_cookie(response, request, None)
    return response


def _account_error(request: Request, user: Any, message: str, *, status: int = 400) -> Response:
    with bastion_of(request).db.read() as session:
        factors = mfa.factors(session, load_user(session, user))
    return render_page(request, "account.html", status=status, user=user, factors=factors, error=message)


# ---------------------------------------------------------------------------------------------
# Second factors
# ---------------------------------------------------------------------------------------------

def _mfa_page(request: Request, user: Any, *, status: int = 200, error: str | None = None,
              **extra: Any) -> Response:
    with bastion_of(request).db.read() as session:
        row = load_user(session, user)
        factors = mfa.factors(session, row)
        keys = mfa.list_webauthn(session, row)
    return render_page(request, "mfa.html", status=status, error=error, factors=factors, keys=keys, user=user,
                       **extra)


@router.get("/2fa")
def mfa_page(request: Request) -> Response:
    return _mfa_page(request, signed_in(request))


@router.post("/2fa/totp/begin")
def totp_begin(request: Request, _form: dict[str, str] = Depends(csrf_form)) -> Response:
    user = signed_in(request)
    require_reauth(request, user)  # even the first factor: a stolen cookie must not enroll one
    bastion = bastion_of(request)
    secret_b32 = mfa.new_totp_secret()
    with bastion.db.write() as session:
        browser = load_session(session, user.cookie)
        assert browser is not None
        # The candidate secret waits in the session (encrypted) until the user confirms a code.
        browser.challenge = "totp:" + mfa.encrypt_secret(encryption_key(request), secret_b32)
    return _totp_enroll_page(request, user, secret_b32)


def _totp_enroll_page(request: Request, user: Any, secret_b32: str, *, error: str | None = None,
                      status: int = 200) -> Response:
    uri = mfa.totp_uri(secret_b32, user.username)
    return render_page(request, "totp_enroll.html", status=status, error=error, qr=mfa.qr_svg(uri),
                       secret=secret_b32, uri=uri)


@router.post("/2fa/totp/confirm")
def totp_confirm(request: Request, form: dict[str, str] = Depends(csrf_form)) -> Response:
    user = signed_in(request)
    bastion = bastion_of(request)
    key = encryption_key(request)
    with bastion.db.read() as session:
        browser = load_session(session, user.cookie)
        pending = browser.challenge if browser is not None else None
    if not pending or not pending.startswith("totp:"):
        return _mfa_page(request, user, status=400, error="no enrollment is in progress: press 'Add an authenticator app' again")
    secret_b32 = mfa.decrypt_secret(key, pending[5:])
    try:
        with bastion.db.write() as session:
            row = load_user(session, user)
            try:
                codes = mfa.enable_totp(session, row, secret_b32, form.get("code", ""), key=key, secret=bastion.secret,
                                        context=context_of(request))
            except ServiceError:
                session.commit()
                raise
            browser = load_session(session, user.cookie)
            if browser is not None:
                browser.challenge = None
    except ServiceError as exc:
        return _totp_enroll_page(request, user, secret_b32, error=exc.message, status=exc.status)
    if codes:
        return render_page(request, "recovery_codes.html", codes=codes,
                           flash="Your authenticator app is enrolled.")
    return redirect("/account/2fa", flash="Your authenticator app is enrolled.")


@router.post("/2fa/totp/remove")
def totp_remove(request: Request, _form: dict[str, str] = Depends(csrf_form)) -> Response:
    user = signed_in(request)
    require_reauth(request, user)
    bastion = bastion_of(request)
    try:
        with bastion.db.write() as session:
            row = load_user(session, user)
            mfa.remove_totp(session, row, secret=bastion.secret, context=context_of(request))
            messages = notifications.maintainer_disabled_2fa(session, row.id) if row.mfa_enabled is None else []
    except ServiceError as exc:
        return _mfa_page(request, user, status=exc.status, error=exc.message)
    send(request, messages)
    return redirect("/account/2fa", flash="The authenticator app was removed.")


@router.post("/2fa/recovery-codes")
def recovery_codes(request: Request, _form: dict[str, str] = Depends(csrf_form)) -> Response:
    user = signed_in(request)
    if not user.has_2fa:
        return _mfa_page(request, user, status=400, error="recovery codes come with a second factor: enroll one first")
    require_reauth(request, user)
    bastion = bastion_of(request)
    with bastion.db.write() as session:
        codes = mfa.generate_recovery_codes(session, load_user(session, user), secret=bastion.secret,
                                            context=context_of(request))
    return render_page(request, "recovery_codes.html", codes=codes, flash="New recovery codes: the old ones no longer work.")


@router.post("/2fa/webauthn/options")
def webauthn_register_options(request: Request) -> Response:
    check_csrf_header(request)
    user = signed_in(request)
    require_reauth(request, user)  # even the first factor: a stolen cookie must not enroll one
    bastion = bastion_of(request)
    rp_id, _ = webauthn_origin(request)
    try:
        with bastion.db.write() as session:
            options, challenge = mfa.webauthn_registration_options(session, load_user(session, user), rp_id=rp_id)
            browser = load_session(session, user.cookie)
            assert browser is not None
            browser.challenge = "reg:" + challenge
    except ServiceError as exc:
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    return Response(options, media_type="application/json")


@router.post("/2fa/webauthn/register")
def webauthn_register(request: Request, body: dict[str, Any] | None = Depends(csrf_json)) -> Response:
    user = signed_in(request)
    require_reauth(request, user)  # a stolen cookie must not be able to plant a lasting second factor
    bastion = bastion_of(request)
    rp_id, origin = webauthn_origin(request)
    if body is None:
        return NOT_JSON
    try:
        challenge = _challenge_of(request, user, "reg")
        with bastion.db.write() as session:
            row = load_user(session, user)
            try:
                _, codes = mfa.add_webauthn(session, row, json.dumps(body.get("credential")), challenge=challenge,
                                            rp_id=rp_id, origin=origin, name=str(body.get("name") or ""),
                                            secret=bastion.secret, context=context_of(request))
            except ServiceError:
                session.commit()
                raise
            browser = load_session(session, user.cookie)
            if browser is not None:
                browser.challenge = None
    except ServiceError as exc:
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    if codes:
        # Shown once, on the page the script navigates to; the nonce keeps a cross-site link from
        # spending that one display.
        nonce = secrets.token_urlsafe(16)
        with bastion.db.write() as session:
            browser = load_session(session, user.cookie)
            if browser is not None:
                browser.challenge = f"codes:{nonce}:" + mfa.encrypt_secret(encryption_key(request), json.dumps(codes))
        return JSONResponse({"redirect": f"/account/2fa/recovery-codes/new?n={nonce}"})
    return JSONResponse({"redirect": "/account/2fa"})


@router.get("/2fa/recovery-codes/new")
def new_recovery_codes(request: Request, n: str = "") -> Response:
    user = signed_in(request)
    bastion = bastion_of(request)
    with bastion.db.write() as session:
        browser = load_session(session, user.cookie)
        pending = browser.challenge if browser is not None else None
        _, nonce, sealed = (pending or "").split(":", 2) if (pending or "").count(":") >= 2 else ("", "", "")
        if browser is not None and pending and pending.startswith("codes:") and n and \
                hmac.compare_digest(nonce.encode(), n.encode()):
            browser.challenge = None  # shown once
        else:
            sealed = ""
    if not sealed:
        raise WebRedirect("/account/2fa")
    codes = json.loads(mfa.decrypt_secret(encryption_key(request), sealed))
    return render_page(request, "recovery_codes.html", codes=codes, flash="Your security key is registered.")


@router.post("/2fa/webauthn/{credential_id}/rename")
def webauthn_rename(request: Request, credential_id: int, form: dict[str, str] = Depends(csrf_form)) -> Response:
    user = signed_in(request)
    bastion = bastion_of(request)
    try:
        with bastion.db.write() as session:
            mfa.rename_webauthn(session, load_user(session, user), credential_id, form.get("name", ""),
                                secret=bastion.secret, context=context_of(request))
    except ServiceError as exc:
        return _mfa_page(request, user, status=exc.status, error=exc.message)
    return redirect("/account/2fa", flash="Security key renamed.")


@router.post("/2fa/webauthn/{credential_id}/remove")
def webauthn_remove(request: Request, credential_id: int, _form: dict[str, str] = Depends(csrf_form)) -> Response:
    user = signed_in(request)
    require_reauth(request, user)
    bastion = bastion_of(request)
    try:
        with bastion.db.write() as session:
            row = load_user(session, user)
            mfa.remove_webauthn(session, row, credential_id, secret=bastion.secret, context=context_of(request))
            messages = notifications.maintainer_disabled_2fa(session, row.id) if row.mfa_enabled is None else []
    except ServiceError as exc:
        return _mfa_page(request, user, status=exc.status, error=exc.message)
    send(request, messages)
    return redirect("/account/2fa", flash="Security key removed.")


# ---------------------------------------------------------------------------------------------
# API tokens
# ---------------------------------------------------------------------------------------------

def _tokens_page(request: Request, user: Any, *, status: int = 200, error: str | None = None,
                 form: dict[str, str] | None = None) -> Response:
    from bastion.packaging.models import Project, Role

    bastion = bastion_of(request)
    with bastion.db.read() as session:
        tokens = session.execute(
            select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.created.desc())
        ).scalars().all()
        projects = session.execute(
            select(Project.name, Project.normalized_name).join(Role, Role.project_id == Project.id)
            .where(Role.user_id == user.id).order_by(Project.normalized_name)
        ).all()
    from bastion.db import utcnow

    return render_page(request, "tokens.html", status=status, error=error, tokens=tokens, projects=projects,
                       expiry_choices=TOKEN_EXPIRY_CHOICES, now=utcnow(), form=form or {},
                       default_expiry=bastion.settings.token_default_expiry)


@router.get("/tokens")
def tokens_page(request: Request) -> Response:
    return _tokens_page(request, signed_in(request))


@router.post("/tokens")
def create_token(request: Request, form: dict[str, str] = Depends(csrf_form)) -> Response:
    user = signed_in(request)
    require_reauth(request, user)
    if not user.email_verified:
        return _tokens_page(request, user, status=403, form=form,
                            error="verify your email address before creating API tokens (see your account page)")
    bastion = bastion_of(request)
    projects = [p for p in form_values(request, "projects") if p]
    scope = form.get("scope", "all")
    expires = form.get("expires", bastion.settings.token_default_expiry)
    try:
        if scope == "projects" and not projects:
            raise ServiceError("choose at least one project, or make the token cover all your projects")
        try:
            expires_in = None if expires == "never" else parse_duration(expires, what="expiry")
        except SettingsError as exc:
            raise ServiceError(str(exc)) from None
        if expires == "never" and bastion.settings.token_default_expiry.strip().lower() != "never":
            # An admin allows endless tokens by making them the default; otherwise they are refused.
            raise ServiceError("tokens without expiry are not allowed on this index: choose a lifetime")
        with bastion.db.write() as session:
            row = load_user(session, user)
            new = service.create_token(
                session, bastion.secret, row.username, projects=projects if scope == "projects" else None,
                expires_in=expires_in, description=form.get("description", ""), principal=user.principal,
                context=context_of(request),
            )
            messages = []
            if new.projects:
                messages = notifications.token_created_for_project(
                    session, _project_ids(session, new.projects), user.username, form.get("description", ""))
    except ServiceError as exc:
        return _tokens_page(request, user, status=exc.status, error=exc.message, form=form)
    send(request, messages)
    return render_page(request, "token_created.html", token=new.token, token_id=new.token_id,
                       projects=new.projects, expires=new.expires, base=base_url(request))


def _project_ids(session: Any, names: tuple[str, ...]) -> list[int]:
    from bastion.packaging.models import Project

    return list(session.execute(select(Project.id).where(Project.normalized_name.in_(names))).scalars())


@router.post("/tokens/{token_id}/revoke")
def revoke_token(request: Request, token_id: str, _form: dict[str, str] = Depends(csrf_form)) -> Response:
    user = signed_in(request)
    bastion = bastion_of(request)
    try:
        with bastion.db.write() as session:
            service.revoke_token(session, token_id, principal=user.principal, context=context_of(request),
                                 secret=bastion.secret)
    except ServiceError as exc:
        return _tokens_page(request, user, status=exc.status, error=exc.message)
    return redirect("/account/tokens", flash="The token is revoked: it stopped working at once.")


# ---------------------------------------------------------------------------------------------
# The account's own history
# ---------------------------------------------------------------------------------------------

@router.get("/history")
def history(request: Request, before: int | None = None) -> Response:
    user = signed_in(request)
    with bastion_of(request).db.read() as session:
        events = events_of_user(session, user.id, user.username, before=before)
    older = events[-1].id if len(events) == EVENTS_PER_PAGE else None
    return render_page(request, "history.html", title="Your account's history", events=events, older=older,
                       base="/account/history")
