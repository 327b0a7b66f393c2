"""HTTP routes for packages: twine's legacy upload and the project API (parse, call, render)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from bastion.db import utcnow
from bastion.errors import ServiceError
from bastion.http import authenticate, bastion_of, error_response, request_context
from bastion.mail import Message
from bastion.packaging import service
from bastion.packaging.checks import limit_text
from bastion.packaging.errors import UploadRejected
from bastion.packaging.upload import IncomingFile, UploadOutcome, upload
from bastion.services import Bastion

router = APIRouter()
log = logging.getLogger("bastion.upload")

# Form fields larger than this are refused (the description is the largest one twine sends).
MAX_FIELD_BYTES = 4 * 1024 * 1024
# twine and uv send one field per Requires-Dist and Provides-Extra: boto3-stubs 1.44.1, on PyPI,
# makes more than 1,000 (starlette's default cap). The body's size is capped besides.
MAX_FIELDS = 20_000
# Form fields that twine and uv repeat, once per value; compared with the file as sets.
REPEATED_FIELDS = frozenset({"classifiers", "requires_dist", "keywords"})
# Upload notices are collected: one message per person for the files that arrive together (a
# release's wheels, a twine run), sent once no file came for NOTICE_QUIET seconds, and never later
# than NOTICE_AT_MOST seconds after the first.
NOTICE_QUIET = 2.0
NOTICE_AT_MOST = 30.0


@router.post(
    "/legacy/",
    summary="Upload a distribution file (twine's legacy API)",
    response_class=PlainTextResponse,
    responses={400: {"description": "refused; the reason phrase says why"}, 403: {"description": "not allowed"}},
)
async def legacy_upload(request: Request) -> Response:
    """Multipart form as twine sends it; authenticate with username ``__token__`` and an API token."""
    bastion = bastion_of(request)
    try:
        auth = await run_in_threadpool(authenticate, request)
        if auth is None:
            raise UploadRejected(
                "Invalid or non-existent authentication information. Upload with username __token__ "
                "and an API token as password (create one with `bastion token create --user NAME`).",
                status=401,
            )
        principal = auth[0]
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            # Without a declared length the body could be endless (chunked encoding); twine and
            # every upload client send Content-Length.
            raise UploadRejected("Length Required: send the upload with a Content-Length header.", status=411)
        if int(length) > bastion.settings.max_file_size + MAX_FIELD_BYTES:
            raise UploadRejected(
                f"File too large. Limit for this index is {limit_text(bastion.settings.max_file_size)}.",
                status=413,
            )
        try:
            form = await request.form(max_files=1, max_fields=MAX_FIELDS, max_part_size=MAX_FIELD_BYTES)
        except Exception as exc:  # malformed multipart bodies
            raise UploadRejected(f"Invalid upload form: {exc}. Upload with twine.") from None
        try:
            content = form.get("content")
            if not isinstance(content, UploadFile) or not content.filename:
                raise UploadRejected("Upload payload does not have a file: include the 'content' file part.")
            fields: dict[str, str] = {}
            lists: dict[str, list[str]] = {}
            for key, value in form.multi_items():
                if isinstance(value, str):
                    fields.setdefault(key, value)
                    if key in REPEATED_FIELDS:
                        lists.setdefault(key, []).append(value)
            incoming = IncomingFile(filename=content.filename, content_type=content.content_type,
                                    stream=content.file)
            outcome = await run_in_threadpool(
                upload, bastion, principal, fields, incoming, request_context(request), lists
            )
        finally:
            await form.close()
    except ServiceError as exc:
        return error_response(exc)
    if outcome.created:  # after commit, in the background: the answer does not wait for the notices
        notice = _Notice(bastion, outcome, principal.username, utcnow())
        bastion.tasks.collect("upload_notices", _notify_uploads, notice, quiet=NOTICE_QUIET, at_most=NOTICE_AT_MOST)
    text = "OK\n" if outcome.created else "OK (identical file already stored)\n"
    return PlainTextResponse(text)


@dataclass(frozen=True)
class _Notice:
    bastion: Bastion
    outcome: UploadOutcome
    actor: str
    at: datetime


def _notify_uploads(notices: list[_Notice]) -> None:
    """Tell the owners and maintainers (after commit): one message per person, project and
    uploader for the files collected together. The uploads succeeded whatever happens here."""
    groups: dict[tuple[int, int, str, str], list[_Notice]] = {}
    for notice in notices:
        key = (id(notice.bastion), notice.outcome.project_id, notice.outcome.project, notice.actor)
        groups.setdefault(key, []).append(notice)
    for group in groups.values():
        bastion, project_id, actor = group[0].bastion, group[0].outcome.project_id, group[0].actor
        try:
            with bastion.db.read() as session:
                files = [(n.outcome.filename, n.outcome.version, n.at) for n in group]
                messages = service.upload_notifications(session, project_id, group[0].outcome.project, files, actor)
            bastion.send_mail(messages)
        except Exception:  # noqa: BLE001  (the files are stored: a notice that failed is logged, not a 500)
            log.exception("upload notices for %s not sent", ", ".join(n.outcome.filename for n in group))
        for notice in group:
            if notice.outcome.alerts is None:
                continue
            try:
                from bastion.advisories.alerts import deliver

                deliver(bastion, notice.outcome.alerts)
            except Exception:  # noqa: BLE001
                log.exception("advisory alerts for %s not sent", notice.outcome.filename)


class YankRequest(BaseModel):
    reason: str | None = Field(default=None, max_length=1000, description="Why the release is yanked")


class RoleRequest(BaseModel):
    user: str = Field(description="Username to grant the role to")
    role: str = Field(description="owner or maintainer")


class RoleOut(BaseModel):
    username: str
    role: str


class SerialOut(BaseModel):
    serial: int


def _principal(request: Request):  # type: ignore[no-untyped-def]
    auth = authenticate(request)
    return auth[0] if auth else None


def _write(request: Request, action):  # type: ignore[no-untyped-def]
    bastion = bastion_of(request)
    principal = _principal(request)
    with bastion.db.write() as session:
        result = action(session, principal, bastion)
    if isinstance(result, int):
        bastion.notify_change(result)
    return result


@router.post("/api/v1/projects/{project}/releases/{version}/yank", response_model=SerialOut,
             summary="Yank a release (owner)")
def yank(project: str, version: str, body: YankRequest, request: Request):  # type: ignore[no-untyped-def]
    try:
        serial = _write(request, lambda s, p, b: service.set_yanked(
            s, project, version, yanked=True, reason=body.reason, principal=p,
            context=request_context(request), secret=b.secret))
    except ServiceError as exc:
        return error_response(exc, json=True)
    return SerialOut(serial=serial)


@router.post("/api/v1/projects/{project}/releases/{version}/unyank", response_model=SerialOut,
             summary="Un-yank a release (owner)")
def unyank(project: str, version: str, request: Request):  # type: ignore[no-untyped-def]
    try:
        serial = _write(request, lambda s, p, b: service.set_yanked(
            s, project, version, yanked=False, reason=None, principal=p,
            context=request_context(request), secret=b.secret))
    except ServiceError as exc:
        return error_response(exc, json=True)
    return SerialOut(serial=serial)


@router.get("/api/v1/projects/{project}/roles", response_model=list[RoleOut],
            summary="List a project's roles (anyone with a role, or an admin)")
def get_roles(project: str, request: Request):  # type: ignore[no-untyped-def]
    try:
        principal = _principal(request)
        with bastion_of(request).db.read() as session:
            roles = service.list_roles(session, project, principal=principal)
    except ServiceError as exc:
        return error_response(exc, json=True)
    return [RoleOut(username=r.username, role=r.role) for r in roles]


@router.post("/api/v1/projects/{project}/roles", response_model=SerialOut, summary="Grant a role (owner)")
def post_role(project: str, body: RoleRequest, request: Request):  # type: ignore[no-untyped-def]
    messages: list[Message] = []

    def grant(s, p, b):  # type: ignore[no-untyped-def]
        serial = service.add_role(s, project, body.user, body.role, principal=p, context=request_context(request),
                                  secret=b.secret)
        messages.extend(service.role_notifications(s, project, p.username, body.user, body.role, granted=True))
        return serial

    try:
        serial = _write(request, grant)
    except ServiceError as exc:
        return error_response(exc, json=True)
    bastion_of(request).send_mail(messages)  # after commit
    return SerialOut(serial=serial)


@router.delete("/api/v1/projects/{project}/roles/{user}", response_model=SerialOut, summary="Remove a role (owner)")
def delete_role(project: str, user: str, request: Request):  # type: ignore[no-untyped-def]
    messages: list[Message] = []

    def remove(s, p, b):  # type: ignore[no-untyped-def]
        role = service.role_of_user(s, project, user)
        serial = service.remove_role(s, project, user, principal=p, context=request_context(request),
                                     secret=b.secret)
        messages.extend(service.role_notifications(s, project, p.username, user, role or "", granted=False))
        return serial

    try:
        serial = _write(request, remove)
    except ServiceError as exc:
        return error_response(exc, json=True)
    bastion_of(request).send_mail(messages)  # after commit
    return SerialOut(serial=serial)
