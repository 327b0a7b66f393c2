"""POST /api/v1/advisories: an admin pushes OSV records; everyone else is refused and nothing is stored."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from sqlalchemy import func, select

from bastion.advisories.models import Advisory, AdvisoryImport
from bastion.events import Event
from bastion.services import Bastion
from tests.conftest import basic_auth, make_user

RECORD = {
    "id": "BASTION-2099-1",
    "modified": "2024-03-01T00:00:00Z",
    "summary": "Private package leaks its signing key",
    "details": "Internal advisory for a private package.",
    "affected": [{"package": {"ecosystem": "PyPI", "name": "acme-internal"},
                  "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.0"}]}]}],
}


def _count(bastion: Bastion, model) -> int:  # type: ignore[no-untyped-def]
    with bastion.db.read() as session:
        return session.execute(select(func.count()).select_from(model)).scalar_one()


def test_an_admin_imports_records_as_json_and_as_a_zip(bastion: Bastion, client) -> None:  # type: ignore[no-untyped-def]
    admin = make_user(bastion, "root", admin=True)
    response = client.post("/api/v1/advisories", content=json.dumps(RECORD),
                           headers={**basic_auth(admin), "Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["added"] == 1 and response.json()["problems"] == []
    second = dict(RECORD, id="BASTION-2099-2")
    broken = {"id": "BASTION-2099-3"}
    response = client.post("/api/v1/advisories", content=json.dumps([RECORD, second, broken]),
                           headers={**basic_auth(admin), "Content-Type": "application/json"})
    body = response.json()
    assert response.status_code == 200, response.text
    assert (body["added"], body["unchanged"], body["skipped"]) == (1, 1, 1)
    assert body["problems"] == [{"path": "record-2.json", "reason": "'modified' is missing (it decides whether a "
                                                                    "re-import replaces the stored record)"}]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("BASTION-2099-4.json", json.dumps(dict(RECORD, id="BASTION-2099-4")))
    response = client.post("/api/v1/advisories", content=archive.getvalue(),
                           headers={**basic_auth(admin), "Content-Type": "application/zip"})
    assert response.status_code == 200 and response.json()["added"] == 1, response.text
    with bastion.db.read() as session:
        assert set(session.execute(select(Advisory.id)).scalars()) == {"BASTION-2099-1", "BASTION-2099-2",
                                                                       "BASTION-2099-4"}
        actors = set(session.execute(select(Event.actor).where(Event.action == "advisories.imported")).scalars())
        assert actors == {"root"}


@pytest.mark.parametrize(("who", "content_type", "body", "status", "message"), [
    ("anonymous", "application/json", json.dumps(RECORD), 401, "authentication required"),
    ("user", "application/json", json.dumps(RECORD), 403, "only an index admin may do this"),
    ("admin", "text/plain", "hello", 415, "Unsupported Content-Type 'text/plain'"),
    ("admin", "application/json", "{not json", 400, "The body is not valid JSON"),
    ("admin", "application/json", "[]", 400, "The list of records is empty"),
    ("admin", "application/zip", "not a zip", 400, "Nothing imported:"),
    ("admin", "application/json", json.dumps({"id": "X-1", "modified": "never"}), 422, "not an RFC 3339 timestamp"),
])
def test_refusals_say_why_and_store_nothing(bastion: Bastion, client, who: str, content_type: str,  # type: ignore[no-untyped-def]
                                            body: str, status: int, message: str) -> None:
    tokens = {"admin": make_user(bastion, "root", admin=True), "user": make_user(bastion, "alice")}
    headers = {"Content-Type": content_type, **(basic_auth(tokens[who]) if who in tokens else {})}
    response = client.post("/api/v1/advisories", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert message in response.text
    assert _count(bastion, Advisory) == 0
    if status != 422:  # a run whose every record was skipped is on record, with its problems
        assert _count(bastion, AdvisoryImport) == 0
