"""HTTP routes for accounts: users, admins and API tokens (parse, call, render)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from bastion.accounts import service
from bastion.errors import ServiceError
from bastion.http import authenticate, bastion_of, error_response, request_context
from bastion.mail import Message
from bastion.settings import SettingsError, parse_duration

router = APIRouter(prefix="/api/v1")


class UserRequest(BaseModel):
    name: str
    email: str
    password: str = Field(description="At least 10 characters")


class UserOut(BaseModel):
    name: str
    email: str
    is_admin: bool


class TokenRequest(BaseModel):
    projects: list[str] | None = Field(default=None, description="Limit the token to these projects")
    expires: str | None = Field(default=None, description="Lifetime such as 30d, 12h; default from settings")
    description: str = ""


class TokenOut(BaseModel):
    token: str | None = Field(default=None, description="Shown once, at creation")
    id: str
    projects: list[str] | None
    expires: datetime | None
    created: datetime | None = None
    last_used: datetime | None = None
    revoked: datetime | None = None


def _principal(request: Request):  # type: ignore[no-untyped-def]
    auth = authenticate(request)
    return auth[0] if auth else None


@router.post("/users", response_model=UserOut, status_code=201, summary="Create a user (admin)")
def create_user(body: UserRequest, request: Request):  # type: ignore[no-untyped-def]
    bastion = bastion_of(request)
    try:
        principal = _principal(request)
        with bastion.db.write() as session:
            user = service.create_user(session, body.name, body.email, body.password, principal=principal,
                                       context=request_context(request), secret=bastion.secret)
            out = UserOut(name=user.username, email=user.email, is_admin=user.is_admin)
    except ServiceError as exc:
        return error_response(exc, json=True)
    return out


@router.post("/users/{name}/admin", response_model=UserOut, summary="Make a user an index admin (admin)")
def set_admin(name: str, request: Request):  # type: ignore[no-untyped-def]
    bastion = bastion_of(request)
    try:
        principal = _principal(request)
        with bastion.db.write() as session:
            user = service.set_admin(session, name, principal=principal, context=request_context(request),
                                     secret=bastion.secret)
            out = UserOut(name=user.username, email=user.email, is_admin=user.is_admin)
    except ServiceError as exc:
        return error_response(exc, json=True)
    return out


@router.post("/users/{name}/tokens", response_model=TokenOut, status_code=201,
             summary="Create an API token (the user themself, or an admin)")
def create_token(name: str, body: TokenRequest, request: Request):  # type: ignore[no-untyped-def]
    bastion = bastion_of(request)
    try:
        principal = _principal(request)
        try:
            expires_in = bastion.settings.token_expiry if body.expires is None else (
                None if body.expires == "never" else parse_duration(body.expires, what="expires"))
        except SettingsError as exc:
            raise ServiceError(str(exc)) from None
        with bastion.db.write() as session:
            new = service.create_token(session, bastion.secret, name, projects=body.projects,
                                       expires_in=expires_in, description=body.description,
                                       principal=principal, context=request_context(request))
            messages = _token_notifications(session, new, name, body.description)
    except ServiceError as exc:
        return error_response(exc, json=True)
    bastion.send_mail(messages)  # after commit
    return TokenOut(token=new.token, id=new.token_id, projects=list(new.projects) if new.projects else None,
                    expires=new.expires)


def _token_notifications(session: Session, new: service.NewToken, user_name: str, description: str) -> list[Message]:
    """A token that can upload to named projects is announced to their owners and maintainers
    (a token for all of a user's projects is not: it reaches no project the user could not already)."""
    if not new.projects:
        return []
    from bastion.accounts import notifications
    from bastion.packaging.service import project_ids

    owner = service.get_user(session, user_name).username  # the account the token uploads as
    return notifications.token_created_for_project(session, project_ids(session, new.projects), owner, description)


@router.get("/users/{name}/tokens", response_model=list[TokenOut], summary="List a user's API tokens")
def list_tokens(name: str, request: Request):  # type: ignore[no-untyped-def]
    bastion = bastion_of(request)
    try:
        principal = _principal(request)
        with bastion.db.read() as session:
            rows = service.list_tokens(session, name, principal=principal)
    except ServiceError as exc:
        return error_response(exc, json=True)
    return [TokenOut(id=r.id, projects=r.projects, expires=r.expires, created=r.created,
                     last_used=r.last_used, revoked=r.revoked) for r in rows]


@router.delete("/tokens/{token_id}", response_model=TokenOut, summary="Revoke an API token")
def revoke_token(token_id: str, request: Request):  # type: ignore[no-untyped-def]
    bastion = bastion_of(request)
    try:
        principal = _principal(request)
        with bastion.db.write() as session:
            row = service.revoke_token(session, token_id, principal=principal, context=request_context(request),
                                       secret=bastion.secret)
            out = TokenOut(id=row.id, projects=row.projects, expires=row.expires, created=row.created,
                           last_used=row.last_used, revoked=row.revoked)
    except ServiceError as exc:
        return error_response(exc, json=True)
    return out
