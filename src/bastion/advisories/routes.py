"""``POST /api/v1/advisories``: an admin pushes OSV records over HTTP (advisories for private
packages, or a mirror's export), imported exactly as ``bastion advisories import`` does."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from bastion.accounts.policy import account_requires_mfa, mfa_policy
from bastion.advisories.ingest import ImportError_, import_path
from bastion.authz import Permission, decide
from bastion.errors import Forbidden, ServiceError
from bastion.http import authenticate, bastion_of, error_response, read_capped

router = APIRouter(prefix="/api/v1")

MAX_BODY = 64 * 1024 * 1024
"""osv.dev's whole PyPI export is about 25 MB zipped."""
HOW = ("send one OSV record or a JSON list of records (Content-Type: application/json), or a zip of "
       "OSV JSON/YAML files (Content-Type: application/zip)")


@router.post("/advisories", summary="Import OSV advisories (admin)",
             description="Body: one OSV record or a JSON list of records (application/json), or a zip of "
                         "OSV JSON/YAML files (application/zip). Answers the import summary; 422 when no "
                         "record could be imported.")
async def post_advisories(request: Request) -> Any:
    bastion = bastion_of(request)
    try:
        auth = authenticate(request)
        with bastion.db.read() as session:  # the 2FA mandate: 'everyone' holds every action beyond reading
            mfa_required = account_requires_mfa(mfa_policy(session))
        decision = decide(auth[0] if auth else None, Permission.IMPORT_ADVISORIES, mfa_required=mfa_required)
        if not decision:
            raise Forbidden(decision.reason, status=401 if auth is None else 403)
        assert auth is not None
        principal = auth[0]
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media not in ("application/json", "application/zip"):
            raise ServiceError(f"Unsupported Content-Type {media or '(none)'!r}: {HOW}.", status=415)
        body = await read_capped(request, MAX_BODY, lambda _declared: ServiceError(
            f"The body is over the {MAX_BODY // (1024 * 1024)} MB limit: split the import.", status=413))
        folder = Path(tempfile.mkdtemp(prefix="advisories-", dir=bastion.tmp_dir))
        try:
            source = _write_source(folder, media, body)
            summary = await run_in_threadpool(import_path, bastion, source, actor=principal.username)
        except ImportError_ as exc:
            raise ServiceError(f"Nothing imported: {exc}", status=400) from None
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    except ServiceError as exc:
        return error_response(exc, json=True)
    document = {
        **summary.counts(),
        "problems": [{"path": p.path, "reason": p.reason} for p in summary.problems],
        "import_id": summary.import_id,
    }
    stored = summary.added + summary.updated + summary.unchanged
    return JSONResponse(document, status_code=422 if stored == 0 and summary.skipped else 200)


def _write_source(folder: Path, media: str, body: bytes) -> Path:
    if media == "application/zip":
        path = folder / "upload.zip"
        path.write_bytes(body)
        return path
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise ServiceError(f"The body is not valid JSON ({exc}): {HOW}.", status=400) from None
    except RecursionError:
        raise ServiceError(f"The body is JSON nested too deeply: {HOW}.", status=400) from None
    records = document if isinstance(document, list) else [document]
    if not records:
        raise ServiceError(f"The list of records is empty: {HOW}.", status=400)
    for position, record in enumerate(records):
        try:
            text = json.dumps(record)
        except RecursionError:  # each record is checked again (depth, size) when it is read
            raise ServiceError(f"Record {position} is nested too deeply: {HOW}.", status=400) from None
        (folder / f"record-{position}.json").write_text(text)
    return folder
