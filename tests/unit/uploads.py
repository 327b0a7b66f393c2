"""Helpers for the POST /legacy/ tests (test_upload_checks.py, test_archives.py, test_names.py):
an upload that must be accepted, one that must be refused and leave nothing behind, and the JSON
simple page of a project; and a stored file put on hold as the scanner would (the review tests).

Users and tokens come from ``tests.conftest.make_user`` / ``make_token``.
"""

from __future__ import annotations

import json
from pathlib import Path

from bastion.http import reason_phrase
from bastion.scanning.result import Finding, ScanResult, Verdict
from bastion.services import Bastion
from tests.conftest import post_upload, snapshot_state
from tests.distbuilder import upload_form

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"


def check_refusal(response, status: int, *needles: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    for needle in needles:
        assert needle in response.text, f"{needle!r} not in {response.text!r}"
    # twine prints the reason phrase, which carries the same message.
    assert response.headers["x-bastion-reason"] == reason_phrase(response.text)


def refused(client, bastion: Bastion, token: str | None, path: Path, form: dict[str, str],  # type: ignore[no-untyped-def]
            status: int, *needles: str, **kwargs):
    """Upload ``path``; assert the refusal (status, message) and that nothing changed."""
    before = snapshot_state(bastion)
    response = post_upload(client, token, path, form, **kwargs)
    check_refusal(response, status, *needles)
    assert snapshot_state(bastion) == before
    return response


def accepted(client, token: str, path: Path, name: str, version: str, **overrides: str) -> None:  # type: ignore[no-untyped-def]
    response = post_upload(client, token, path, upload_form(path, name, version, **overrides))
    assert response.status_code == 200, response.text
    assert response.text == "OK\n"


def simple_json(client, name: str) -> dict:  # type: ignore[no-untyped-def]
    response = client.get(f"/simple/{name}/", headers={"Accept": SIMPLE_JSON})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(SIMPLE_JSON)
    return json.loads(response.content)


FINDING = Finding(rule="install.exec-decoded", file="evil/__init__.py", line=3,
                  excerpt="exec(base64.b64decode(PAYLOAD))", why="runs a decoded payload at import",
                  severity=9.0, category="execution")


def hold_stored(bastion: Bastion, filename: str, findings: tuple[Finding, ...] = (FINDING,), *,
                score: float = 9.0, rules_version: str = "test") -> int:
    """Put a stored file on hold as the upload path does for a quarantine verdict (the case, a
    journal entry, the pages re-rendered, the readers told); the case id."""
    from sqlalchemy import select

    from bastion.events import CLI_CONTEXT
    from bastion.packaging.models import File, Project
    from bastion.packaging.service import journal
    from bastion.scanning.service import hold_file
    from bastion.simple.render import refresh_project_pages

    with bastion.db.write() as session:
        file = session.execute(select(File).where(File.filename == filename)).scalar_one()
        project = session.get(Project, file.project_id)
        assert project is not None
        result = ScanResult(filename=filename, sha256=file.sha256_digest, verdict=Verdict.QUARANTINE, score=score,
                            findings=findings, rules_version=rules_version)
        case = hold_file(session, bastion, file, project, result, CLI_CONTEXT)
        version = file.release.version
        serial = journal(session, project, f"hold {filename}", version=version)
        refresh_project_pages(session, project.id, versions=[version])
        case_id = case.id
    bastion.notify_change(serial)
    return case_id
