"""HTTP routes for registered applications (parse, call the service, render JSON).

``PUT /api/applications/{name}`` takes either the dependency list itself as the body (any content
type but JSON, or a CycloneDX JSON SBOM; ``?format=``, ``?webhook_url=``, ``?contact_email=``
optional) or a JSON object ``{"format", "content", "webhook_url", "contact_email",
"rotate_secret", "owner"}``. Authenticated with an API token (``Authorization: Basic
__token__:TOKEN`` or ``Bearer TOKEN``); project-scoped tokens are refused.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from bastion.advisories import applications as service
from bastion.errors import ServiceError
from bastion.http import authenticate, bastion_of, error_response, read_capped, request_context

router = APIRouter(prefix="/api/applications", tags=["applications"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "the list or a field is invalid; `error` says where and how to fix it"},
    401: {"description": "no or invalid API token"},
    403: {"description": "not the application's owner or an admin, or a project-scoped token"},
}
_PUT_BODY = {
    "requestBody": {
        "content": {
            "application/json": {"schema": {"type": "object", "properties": {
                "format": {"type": "string", "enum": list(service.FORMATS)},
                "content": {"type": "string", "description": "the dependency list's text"},
                "webhook_url": {"type": "string", "description": "https URL ('' removes the webhook)"},
                "contact_email": {"type": "string", "description": "where alerts go ('' means the owner)"},
                "rotate_secret": {"type": "boolean"},
                "owner": {"type": "string", "description": "user name (admins only)"},
            }, "required": ["content"]}},
            "text/plain": {"schema": {"type": "string", "description": "requirements.txt or pylock.toml"}},
        },
    },
}


def _principal(request: Request):  # type: ignore[no-untyped-def]
    auth = authenticate(request)
    return auth[0] if auth else None


def _text(value: Any, field: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ServiceError(f"'{field}' must be a string")


async def _read_put(request: Request) -> dict[str, Any]:
    """The registration's fields from the body (the list, or the JSON wrapper) and the query."""
    body = await read_capped(request, service.MAX_LIST_BYTES + 65536, lambda _declared: ServiceError(
        f"the body is larger than {service.MAX_LIST_BYTES} bytes: register a smaller list", status=413))
    query = request.query_params
    fields: dict[str, Any] = {"fmt": query.get("format"), "webhook_url": query.get("webhook_url"),
                              "contact_email": query.get("contact_email"),
                              "rotate_secret": query.get("rotate_secret", "").lower() in ("1", "true", "yes"),
                              "owner": query.get("owner"), "content": body}
    if request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json":
        try:
            document = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ServiceError(f"the body is not valid JSON ({exc}): send {{\"format\": ..., \"content\": ...}}, "
                               "or the list itself with another Content-Type") from None
        except RecursionError:
            raise ServiceError("the body is JSON nested too deeply: send {\"format\": ..., \"content\": ...}, "
                               "or the list itself with another Content-Type") from None
        if isinstance(document, dict) and "bomFormat" in document:
            fields["fmt"] = fields["fmt"] or "cyclonedx"  # the SBOM itself
            return fields
        if not isinstance(document, dict) or not isinstance(document.get("content"), str):
            raise ServiceError("a JSON body must be {\"format\": ..., \"content\": \"<the list's text>\", "
                               "\"webhook_url\": ..., \"contact_email\": ...}: 'content' (a string) is missing")
        unknown = set(document) - {"format", "content", "webhook_url", "contact_email", "rotate_secret", "owner"}
        if unknown:
            raise ServiceError(f"unknown field(s) {', '.join(sorted(unknown))}: use format, content, webhook_url, "
                               "contact_email, rotate_secret, owner")
        rotate = document.get("rotate_secret", False)
        if not isinstance(rotate, bool):
            raise ServiceError("'rotate_secret' must be true or false")
        fields.update(fmt=_text(document.get("format"), "format") or fields["fmt"], content=document["content"],
                      rotate_secret=rotate)
        for key in ("webhook_url", "contact_email", "owner"):
            if key in document:
                fields[key] = _text(document[key], key)
    return fields


@router.put("/{name}", summary="Register or replace an application's dependency list", status_code=200,
            responses={201: {"description": "registered (the webhook secret is in the answer, once)"}, **_ERRORS},
            openapi_extra=_PUT_BODY)
async def put_application(name: str, request: Request) -> Response:
    bastion = bastion_of(request)
    try:
        fields = await _read_put(request)

        def work() -> service.ApplicationDetail:
            principal = _principal(request)
            with bastion.db.write() as session:
                return service.register(session, bastion, name, fields.pop("content"), principal=principal,
                                        filename=f"{name} ({fields['fmt'] or 'body'})",
                                        context=request_context(request), **fields)

        detail = await run_in_threadpool(work)
    except ServiceError as exc:
        return error_response(exc, json=True)
    return JSONResponse(detail.as_json(), status_code=201 if detail.created else 200)


@router.get("", summary="List my applications (every application for admins)", responses=_ERRORS)
def list_applications(request: Request) -> Response:
    bastion = bastion_of(request)
    try:
        principal = _principal(request)
        with bastion.db.read() as session:
            rows = service.list_applications(session, principal=principal)
    except ServiceError as exc:
        return error_response(exc, json=True)
    return JSONResponse([row.as_json() for row in rows])


@router.get("/{name}", summary="An application's packages and the advisories affecting them",
            responses={404: {"description": "no such application"}, **_ERRORS})
def get_application(name: str, request: Request) -> Response:
    bastion = bastion_of(request)
    try:
        principal = _principal(request)
        with bastion.db.read() as session:
            detail = service.show(session, name, principal=principal)
    except ServiceError as exc:
        return error_response(exc, json=True)
    return JSONResponse(detail.as_json())


@router.delete("/{name}", summary="Remove an application (its list, alerts and webhook secret)",
               responses={404: {"description": "no such application"}, **_ERRORS})
def delete_application(name: str, request: Request) -> Response:
    bastion = bastion_of(request)
    try:
        principal = _principal(request)
        with bastion.db.write() as session:
            service.remove(session, bastion, name, principal=principal, context=request_context(request))
    except ServiceError as exc:
        return error_response(exc, json=True)
    return JSONResponse({"removed": name})
