"""Account logic: users, admins, API tokens and authentication (no HTTP here)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.accounts import passwords
from bastion.accounts.models import ApiToken, User
from bastion.accounts.ratelimit import AttemptLimiter
from bastion.accounts.tokens import (
    InvalidToken,
    issue_token,
    make_caveats,
    parse_token_id,
    verify_token,
)
from bastion.authz import Permission, Principal, decide
from bastion.db import utcnow
from bastion.errors import Conflict, Forbidden, NotFound, ServiceError
from bastion.events import CLI_CONTEXT, RequestContext, record_event

USERNAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,48}[A-Za-z0-9])?$")
EMAIL_RE = re.compile(r"^[^@\s\x00-\x1f\x7f]{1,64}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+$")

HOW_TO_GET_A_TOKEN = (
    "Create an API token (`bastion token create --user NAME`, or POST /api/v1/users/NAME/tokens) "
    "and upload with username __token__ and the token as password."
)


@dataclass(frozen=True)
class NewToken:
    """A freshly made token: the secret is shown once and never stored."""

    token: str
    """The serialized token, ``bastion-...``."""
    token_id: str
    """Public id, used to list and revoke it."""
    expires: datetime | None
    """When it stops working; None: never."""
    projects: tuple[str, ...] | None
    """Projects it is limited to; None: every project of the user."""


def require(decision_args: dict, principal: Principal | None, permission: Permission,
            session: Session | None = None) -> None:
    """Raise Forbidden unless ``decide`` allows; with ``session``, the 2FA policy applies to the
    account action (``everyone`` holds every account action to 2FA)."""
    if session is not None and "mfa_required" not in decision_args:
        from bastion.accounts.policy import account_requires_mfa, mfa_policy

        decision_args = {**decision_args, "mfa_required": account_requires_mfa(mfa_policy(session))}
    decision = decide(principal, permission, **decision_args)
    if not decision:
        raise Forbidden(decision.reason, status=401 if principal is None else 403)


def get_user(session: Session, name: str) -> User:
    user = session.execute(select(User).where(User.username_key == name.lower())).scalar_one_or_none()
    if user is None:
        raise NotFound(f"no user named '{name}': create it with `bastion user create {name} --email ...`")
    return user


def create_user(
    session: Session,
    name: str,
    email: str,
    password: str,
    *,
    principal: Principal,
    context: RequestContext = CLI_CONTEXT,
    secret: bytes = b"",
    registered_by_self: bool = False,
) -> User:
    """Create an account: by an admin, or (``registered_by_self``) the person registering on the
    web, who is then the event's actor."""
    require({}, principal, Permission.CREATE_USER, session)
    if not USERNAME_RE.match(name):
        raise ServiceError(
            f"invalid username '{name}': use 1-50 letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
    if name.lower() == "__token__":
        raise ServiceError("the username '__token__' is reserved for API token authentication")
    if len(email) > 254:  # the column's size, and RFC 5321's limit
        raise ServiceError("invalid email address: use at most 254 characters")
    if not EMAIL_RE.match(email):
        raise ServiceError(f"invalid email address '{email}': use the form name@example.org")
    try:
        passwords.check_password_policy(password)
    except passwords.PasswordPolicyError as exc:
        raise ServiceError(str(exc)) from None
    existing = session.execute(select(User.id).where(User.username_key == name.lower())).scalar()
    if existing is not None:
        raise Conflict(f"a user named '{name}' already exists")
    user = User(
        username=name,
        username_key=name.lower(),
        email=email,
        password_hash=passwords.hash_password(password),
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"a user named '{name}' already exists") from None
    record_event(
        session, "user.registered" if registered_by_self else "user.created",
        actor_id=user.id if registered_by_self else principal.user_id,
        actor=user.username if registered_by_self else principal.username,
        subject=f"user:{user.username}", context=context, details={"email": email}, secret=secret,
    )
    return user


def set_admin(
    session: Session, name: str, *, principal: Principal, context: RequestContext = CLI_CONTEXT,
    secret: bytes = b"", admin: bool = True,
) -> User:
    require({}, principal, Permission.SET_ADMIN, session)
    user = get_user(session, name)
    user.is_admin = admin
    record_event(
        session, "user.admin_set" if admin else "user.admin_removed", actor_id=principal.user_id,
        actor=principal.username, subject=f"user:{user.username}", context=context, secret=secret,
    )
    return user


def _token_owner(session: Session, user_name: str, principal: Principal | None) -> User:
    """The user whose tokens are managed; to anyone but an admin an unknown user looks like
    another user's account (no probing for usernames). The 2FA policy is applied where tokens are
    made (``_check_token_mandate``, with its own event), not to listing them."""
    if principal is None:
        require({"target_user_id": None}, principal, Permission.MANAGE_TOKENS)  # 401
    try:
        user = get_user(session, user_name)
    except NotFound:
        if principal is not None and not principal.is_admin:
            require({"target_user_id": None}, principal, Permission.MANAGE_TOKENS)
        raise
    require({"target_user_id": user.id}, principal, Permission.MANAGE_TOKENS)
    return user


def create_token(
    session: Session,
    secret: bytes,
    user_name: str,
    *,
    projects: list[str] | None,
    expires_in: timedelta | None,
    description: str = "",
    principal: Principal,
    context: RequestContext = CLI_CONTEXT,
) -> NewToken:
    from packaging.utils import canonicalize_name

    user = _token_owner(session, user_name, principal)
    if not user.is_active:
        raise Forbidden(f"user '{user.username}' is disabled")
    if projects is not None and not projects:
        raise ServiceError(
            "an empty project list would make a token for nothing: name at least one project, "
            "or leave the list out for a token covering every project of the user"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in description):
        raise ServiceError("token description may not contain control characters: use plain text")
    if len(description) > 200:  # the column's size: refused, not cut short
        raise ServiceError("token description too long: use at most 200 characters")
    normalized = sorted({canonicalize_name(p) for p in projects}) if projects is not None else None
    _check_token_mandate(session, user, normalized, principal=principal, context=context, secret=secret)
    if principal.token_projects is not None and (
        normalized is None or not set(normalized) <= principal.token_projects
    ):
        raise Forbidden("a project-scoped token cannot create wider tokens")
    now = utcnow()
    expires = now + expires_in if expires_in is not None else None
    token_id = secrets.token_hex(16)
    caveats = make_caveats(
        user_id=user.id,
        projects=normalized,
        not_after=int(expires.timestamp()) if expires else None,
        not_before=int(now.timestamp()) - 5,
    )
    row = ApiToken(
        id=token_id, user_id=user.id, description=description, caveats=caveats,
        projects=normalized, created=now, expires=expires,
    )
    session.add(row)
    record_event(
        session, "token.created", actor_id=principal.user_id, actor=principal.username,
        subject=f"user:{user.username}", context=context, secret=secret,
        details={"token_id": token_id, "projects": normalized,
                 "expires": expires.isoformat() if expires else None},
    )
    return NewToken(
        token=issue_token(secret, token_id, caveats), token_id=token_id, expires=expires,
        projects=tuple(normalized) if normalized else None,
    )


def _check_token_mandate(session: Session, user: User, projects: Sequence[str] | None, *, principal: Principal,
                         context: RequestContext, secret: bytes) -> None:
    """Refuse a token for a user without 2FA where the mandate applies: for a project that
    requires 2FA, or for anything under the ``all-uploaders`` and ``everyone`` policies."""
    from bastion.accounts.policy import mfa_policy, new_project_requires_mfa
    from bastion.authz import HOW_TO_ENABLE_2FA
    from bastion.packaging.service import find_project, requires_mfa

    policy = mfa_policy(session)

    def blocked_for(covered: Sequence[str] | None) -> list[str]:
        if new_project_requires_mfa(policy):
            return list(covered) if covered else ["any project"]
        found = []
        for name in covered or ():
            project = find_project(session, name)
            if project is not None and requires_mfa(session, project):
                found.append(name)
        return found

    blocked: list[str] = []
    who = user.username
    if user.mfa_enabled is None:
        # The token's user has no 2FA: tokens for projects that require it are refused (an
        # all-projects token is allowed; decide() refuses it there at every use).
        blocked = blocked_for(projects)
    elif principal.user_id is not None and principal.user_id != user.id and not principal.has_2fa:
        # An admin without 2FA minting a token for someone who has it would act through them
        # where the mandate holds: judged as if the token were the admin's own, and an
        # all-projects token covers every project of its user.
        from bastion.packaging.models import Project, Role

        covered = list(projects) if projects else list(session.execute(
            select(Project.normalized_name).join(Role, Role.project_id == Project.id).where(Role.user_id == user.id)
        ).scalars())
        blocked = blocked_for(covered) if (projects or covered or new_project_requires_mfa(policy)) else []
        who = principal.username
    if blocked:
        record_event(session, "token.refused", actor_id=principal.user_id, actor=principal.username,
                     subject=f"user:{user.username}", context=context, secret=secret,
                     details={"projects": blocked, "reason": "2fa-required"})
        session.commit()  # the refusal's event stays, though the request fails
        raise Forbidden(
            f"cannot create an API token for {', '.join(blocked)}: two-factor authentication is required "
            f"of user '{who}' there (index 2FA policy: {policy}); " + HOW_TO_ENABLE_2FA
        )


def list_tokens(session: Session, user_name: str, *, principal: Principal) -> list[ApiToken]:
    user = _token_owner(session, user_name, principal)
    return list(
        session.execute(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.created))
        .scalars()
    )


def revoke_token(
    session: Session, token_id: str, *, principal: Principal, context: RequestContext = CLI_CONTEXT,
    secret: bytes = b"",
) -> ApiToken:
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFound(f"no API token with id '{token_id}'")
    require({"target_user_id": row.user_id}, principal, Permission.MANAGE_TOKENS)
    if row.revoked is None:
        row.revoked = utcnow()
        record_event(
            session, "token.revoked", actor_id=principal.user_id, actor=principal.username,
            subject=f"token:{token_id}", context=context, secret=secret,
        )
    return row


_tokens = cast(Table, ApiToken.__table__)
_users = cast(Table, User.__table__)
_TOKEN_AND_USER = (
    select(*_tokens.c, _users.c.username.label("user_username"), _users.c.is_active.label("user_is_active"),
           _users.c.is_admin.label("user_is_admin"), _users.c.mfa_enabled.label("user_mfa_enabled"))
    .select_from(_tokens).outerjoin(_users, _users.c.id == _tokens.c.user_id)
    .where(_tokens.c.id == bindparam("token_id"))
)


def authenticate_token(session: Session, secret: bytes, raw: str) -> tuple[Principal, Any]:
    """Verify an API token (microseconds: HMACs and one keyed lookup, no password hash). Returns
    the principal and the token's row (``api_tokens``' columns as attributes: id, expires, ...)."""
    try:
        token_id, macaroon = parse_token_id(raw.strip())
        row = session.execute(_TOKEN_AND_USER, {"token_id": token_id}).first()  # every request: one statement
        if row is None:
            raise InvalidToken("unknown API token: it may have been deleted; create a new one")
        if row.revoked is not None:
            raise InvalidToken("this API token has been revoked: create a new one")
        if row.user_username is None or not row.user_is_active:
            raise InvalidToken("the API token's user is disabled")
        claims = verify_token(
            secret, macaroon, token_id=token_id, user_id=row.user_id, stored_caveats=row.caveats
        )
    except InvalidToken as exc:
        raise Forbidden(f"Invalid API token: {exc}") from None
    principal = Principal(
        user_id=row.user_id, username=row.user_username, is_admin=row.user_is_admin,
        token_projects=claims.projects, token_id=token_id, has_2fa=row.user_mfa_enabled is not None,
    )
    return principal, row


def authenticate_basic(session: Session, secret: bytes, username: str, password: str) -> tuple[Principal, Any]:
    """HTTP Basic credentials: only ``__token__`` with an API token is accepted."""
    if hmac.compare_digest(username.encode(), b"__token__"):
        return authenticate_token(session, secret, password)
    # Passwords never authenticate uploads or API calls; nothing is checked, nothing leaks.
    raise Forbidden(
        "Username/Password authentication is not supported for uploads or API calls. " + HOW_TO_GET_A_TOKEN
    )


# ---------------------------------------------------------------------------------------------
# Self-service: registration, email verification, password change and reset
# ---------------------------------------------------------------------------------------------

EMAIL_LINK_MAX_AGE = 2 * 86400  # seconds a verification link stays valid
RESET_LINK_MAX_AGE = 3600  # seconds a password-reset link stays valid


def _serializer(secret: bytes, purpose: str):  # type: ignore[no-untyped-def]
    from itsdangerous import URLSafeTimedSerializer

    return URLSafeTimedSerializer(secret, salt=f"bastion-{purpose}-v1")


def _load_link(secret: bytes, purpose: str, token: str, *, max_age: int, what: str, again: str) -> dict:
    """The payload of a signed, timed link token; a ServiceError saying what to do when it is not valid."""
    from itsdangerous import BadSignature, SignatureExpired

    try:
        data = _serializer(secret, purpose).loads(token, max_age=max_age)
    except SignatureExpired:
        raise ServiceError(f"this {what} has expired: {again}") from None
    except BadSignature:
        raise ServiceError(f"this {what} is not valid: copy the whole link from the email") from None
    if not isinstance(data, dict):
        raise ServiceError(f"this {what} is not valid: copy the whole link from the email")
    return data


def register_user(session: Session, name: str, email: str, password: str, *, context: RequestContext,
                  secret: bytes) -> User:
    """Anyone may register; the account starts with an unverified email."""
    from bastion.authz import OPERATOR

    user = create_user(session, name, email, password, principal=OPERATOR, context=context, secret=secret,
                       registered_by_self=True)
    return user


def email_verification_token(secret: bytes, user: User) -> str:
    return str(_serializer(secret, "verify-email").dumps({"u": user.id, "e": user.email}))


def verify_email(session: Session, token: str, *, context: RequestContext, secret: bytes) -> User:
    data = _load_link(secret, "verify-email", token, max_age=EMAIL_LINK_MAX_AGE, what="verification link",
                      again="sign in and ask for a new one")
    user = session.get(User, data.get("u"))
    if user is None or not hmac.compare_digest(user.email.encode(), str(data.get("e")).encode()):
        raise ServiceError("this verification link is for an address the account no longer uses: ask for a new one")
    if not user.email_verified:
        user.email_verified = True
        record_event(session, "user.email_verified", actor_id=user.id, actor=user.username,
                     subject=f"user:{user.username}", context=context, secret=secret, details={"email": user.email})
    return user


def _password_fingerprint(user: User) -> str:
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


def password_reset_token(secret: bytes, user: User) -> str:
    """A link token that stops working once the password changed (it carries a fingerprint of the
    current hash) or after an hour."""
    return str(_serializer(secret, "reset-password").dumps({"u": user.id, "p": _password_fingerprint(user)}))


def reset_password(session: Session, token: str, new_password: str, *, context: RequestContext,
                   secret: bytes) -> User:
    data = _load_link(secret, "reset-password", token, max_age=RESET_LINK_MAX_AGE, what="password-reset link",
                      again="ask for a new one")
    user = session.get(User, data.get("u"))
    if user is None or not hmac.compare_digest(_password_fingerprint(user).encode(), str(data.get("p")).encode()):
        raise ServiceError("this password-reset link was used already: ask for a new one")
    _set_password(session, user, new_password, context=context, secret=secret, action="user.password_reset")
    return user


def change_password(session: Session, user: User, current: str, new_password: str, *, context: RequestContext,
                    secret: bytes, limiter: AttemptLimiter) -> None:
    """Change the password after checking the current one through the sign-in rate limit: a
    stolen session cookie must not become an unlimited password oracle."""
    from bastion.accounts.sessions import SignInError, check_password

    try:
        check_password(session, user.username, current, limiter=limiter, context=context, secret=secret)
    except SignInError as exc:
        record_event(session, "user.password_change_failed", actor_id=user.id, actor=user.username,
                     subject=f"user:{user.username}", context=context, secret=secret)
        message = exc.message if exc.status == 429 else "the current password is wrong"
        raise Forbidden(message, status=exc.status) from None
    _set_password(session, user, new_password, context=context, secret=secret, action="user.password_changed")


def _set_password(session: Session, user: User, new_password: str, *, context: RequestContext, secret: bytes,
                  action: str) -> None:
    from bastion.accounts.sessions import end_all_sessions

    try:
        passwords.check_password_policy(new_password)
    except passwords.PasswordPolicyError as exc:
        raise ServiceError(str(exc)) from None
    user.password_hash = passwords.hash_password(new_password)
    user.password_changed = utcnow()
    end_all_sessions(session, user.id)  # every browser signed in as this user must sign in again
    record_event(session, action, actor_id=user.id, actor=user.username, subject=f"user:{user.username}",
                 context=context, secret=secret)
