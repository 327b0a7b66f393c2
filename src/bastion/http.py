"""HTTP plumbing shared by the routers: authentication from headers, error responses, reasons."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from bastion.accounts.service import HOW_TO_GET_A_TOKEN, authenticate_basic, authenticate_token
from bastion.authz import Principal
from bastion.errors import Forbidden, ServiceError
from bastion.events import RequestContext
from bastion.services import Bastion

# The response header our uvicorn protocol turns into the HTTP reason phrase (see server.py):
# twine prints the reason phrase, so that is where PyPI, and Bastion, put the message.
REASON_HEADER = "x-bastion-reason"
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
_SCHEME = re.compile(r"^[A-Za-z-]{1,20}$")


def reason_phrase(message: str) -> str:
    return _UNPRINTABLE.sub("?", " ".join(message.split()))[:1000]


def error_response(exc: ServiceError, *, json: bool = False) -> Response:
    headers = {REASON_HEADER: reason_phrase(exc.message)}
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="Bastion"'
    if json:
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)
    return PlainTextResponse(exc.message + "\n", status_code=exc.status, headers=headers)


async def read_capped(request: Request, limit: int, too_large: Callable[[int | None], ServiceError]) -> bytes:
    """The request body, refused as soon as it is over ``limit`` bytes: by its declared
    Content-Length before reading, else while streaming (a chunked body is never read whole).
    ``too_large(declared length or None)`` makes the caller's error."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_large(int(length))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large(None)
    return bytes(body)


def bastion_of(request: Request) -> Bastion:
    return request.app.state.bastion


def request_context(request: Request) -> RequestContext:
    client = request.client.host if request.client else None
    return RequestContext(ip=client, user_agent=request.headers.get("user-agent"))


def authenticate(request: Request) -> tuple[Principal, Any] | None:
    """Principal from ``Authorization`` (Basic __token__:TOKEN, or Bearer TOKEN); None if absent."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    bastion = bastion_of(request)
    with bastion.db.read() as session:
        if scheme.lower() == "bearer":
            return authenticate_token(session, bastion.secret, value)
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise Forbidden("Malformed Basic authorization header.", status=401) from None
            username, sep, password = decoded.partition(":")
            if not sep:
                raise Forbidden("Malformed Basic authorization header.", status=401)
            return authenticate_basic(session, bastion.secret, username, password)
    # Echo the scheme only if it looks like one: a token pasted without "Bearer" must not be
    # repeated into a status line that clients and proxies log.
    shown = f" '{scheme}'" if _SCHEME.match(scheme) else ""
    raise Forbidden(f"Unsupported authorization scheme{shown}. {HOW_TO_GET_A_TOKEN}", status=401)
