"""POST /osv/v1/query and /osv/v1/querybatch (bastion.advisories.osv_api), on both backends.

One index per backend for the module: a handful of advisories written as PyPA-layout YAML files
and imported, then every test asks the API (no release needs to exist: the API evaluates the
advisory data).
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from bastion.advisories.osv_api import MAX_BATCH_QUERIES, OsvQuery, affecting_many
from bastion.advisories.query import advisories_affecting
from bastion.app import create_app
from bastion.services import Bastion
from bastion.settings import load_settings
from tests.conftest import BACKENDS, fresh_database, require_backend
from tests.unit.world import db_rows

# PYSEC-2099-1 and GHSA-2099-aaaa-bbbb are the same CVE (aliases overlap); PYSEC-2099-2 lists
# one version and has a last_affected range, under a non-normalized name; PYSEC-2099-3 is
# withdrawn; GHSA-2099-cccc-dddd names another project.
ADVISORIES = {
    "demo-lib/PYSEC-2099-1.yaml": """
        id: PYSEC-2099-1
        modified: 2099-01-02T03:04:05Z
        published: 2099-01-01T00:00:00Z
        summary: Remote code execution in demo-lib
        details: A crafted input runs code.
        aliases:
        - CVE-2099-0001
        - GHSA-2099-aaaa-bbbb
        affected:
        - package:
            name: demo-lib
            ecosystem: PyPI
          ranges:
          - type: ECOSYSTEM
            events:
            - fixed: 1.2
            - introduced: 0
    """,
    "demo-lib/GHSA-2099-aaaa-bbbb.yaml": """
        id: GHSA-2099-aaaa-bbbb
        modified: 2099-01-03T00:00:00Z
        details: The GitHub record of CVE-2099-0001.
        aliases:
        - CVE-2099-0001
        affected:
        - package:
            name: demo-lib
            ecosystem: PyPI
          ranges:
          - type: ECOSYSTEM
            events:
            - introduced: 1.0
            - fixed: 1.2.1
    """,
    "demo-lib/PYSEC-2099-2.yaml": """
        id: PYSEC-2099-2
        modified: 2099-02-01T00:00:00Z
        details: Old versions leak memory.
        affected:
        - package:
            name: Demo_Lib
            ecosystem: PyPI
          versions:
          - 0.9
          ranges:
          - type: ECOSYSTEM
            events:
            - introduced: 0
            - last_affected: 0.5
    """,
    "demo-lib/PYSEC-2099-3.yaml": """
        id: PYSEC-2099-3
        modified: 2099-03-01T00:00:00Z
        withdrawn: 2099-03-01T00:00:00Z
        details: Not a vulnerability after all.
        affected:
        - package:
            name: demo-lib
            ecosystem: PyPI
          ranges:
          - type: ECOSYSTEM
            events:
            - introduced: 0
    """,
    "other-lib/GHSA-2099-cccc-dddd.yaml": """
        id: GHSA-2099-cccc-dddd
        modified: 2099-04-01T00:00:00.123456Z
        summary: Path traversal in other-lib
        details: Paths escape.
        affected:
        - package:
            name: other-lib
            ecosystem: PyPI
          ranges:
          - type: ECOSYSTEM
            events:
            - introduced: 2.0
            - fixed: 2.5
    """,
}


def write_advisories(root: Path, advisories: dict[str, str]) -> Path:
    """PyPA layout: ``root/vulns/<project>/<ID>.yaml``; the tree's root."""
    for relative, text in advisories.items():
        path = root / "vulns" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


def import_advisories(bastion: Bastion, root: Path) -> None:
    from bastion.advisories.ingest import import_path

    summary = import_path(bastion, root)
    assert summary.counts()["skipped"] == 0, summary.line()


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return require_backend(str(request.param))


@pytest.fixture(scope="module")
def osv(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Bastion, TestClient]]:
    root = tmp_path_factory.mktemp("osv-api")
    with fresh_database(backend, root / "data", tmp_path_factory) as url:
        instance = Bastion(load_settings(root / "data", database_url=url, tuf="off"), run_migrations=False)
        try:
            import_advisories(instance, write_advisories(root / "advisories", ADVISORIES))
            with TestClient(create_app(bastion=instance), base_url="http://testserver") as client:
                yield instance, client
        finally:
            instance.close()


def query(client: TestClient, body: Any) -> Any:
    response = client.post("/osv/v1/query", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def ids(answer: dict[str, Any]) -> set[str]:
    return {v["id"] for v in answer.get("vulns", [])}


def pkg(name: str, version: str | None = None, ecosystem: str = "PyPI") -> dict[str, Any]:
    body: dict[str, Any] = {"package": {"name": name, "ecosystem": ecosystem}}
    if version is not None:
        body["version"] = version
    return body


def test_query_answers_whole_records_of_each_advisory(osv: tuple[Bastion, TestClient]) -> None:
    _, client = osv
    answer = query(client, pkg("demo-lib", "1.1"))
    assert ids(answer) == {"PYSEC-2099-1", "GHSA-2099-aaaa-bbbb"}  # both records of the CVE, as osv.dev
    record = next(v for v in answer["vulns"] if v["id"] == "PYSEC-2099-1")
    # The whole record as written, JSON-typed: timestamps and versions stay text.
    assert record["modified"] == "2099-01-02T03:04:05Z"
    assert record["summary"] == "Remote code execution in demo-lib"
    assert record["aliases"] == ["CVE-2099-0001", "GHSA-2099-aaaa-bbbb"]
    assert record["affected"][0]["ranges"][0]["events"] == [{"fixed": "1.2"}, {"introduced": "0"}]


def test_fixed_is_exclusive_and_clean_versions_answer_an_empty_object(osv: tuple[Bastion, TestClient]) -> None:
    _, client = osv
    assert ids(query(client, pkg("demo-lib", "1.2"))) == {"GHSA-2099-aaaa-bbbb"}
    assert ids(query(client, pkg("demo-lib", "1.2.1"))) == set()
    # osv.dev answers {} for a clean version; pip-audit reads exactly that as "no vulnerabilities".
    assert query(client, pkg("demo-lib", "1.3")) == {}
    assert query(client, pkg("never-heard-of", "1.0")) == {}


def test_listed_versions_last_affected_and_non_normalized_names(osv: tuple[Bastion, TestClient]) -> None:
    _, client = osv
    assert ids(query(client, pkg("Demo_Lib", "0.9"))) == {"PYSEC-2099-1", "PYSEC-2099-2"}
    assert ids(query(client, pkg("DEMO.lib", "0.5"))) == {"PYSEC-2099-1", "PYSEC-2099-2"}  # inclusive
    assert ids(query(client, pkg("demo-lib", "0.6"))) == {"PYSEC-2099-1"}


def test_withdrawn_advisories_are_left_out(osv: tuple[Bastion, TestClient]) -> None:
    _, client = osv
    # PYSEC-2099-3 affects every version but is withdrawn.
    assert "PYSEC-2099-3" not in ids(query(client, pkg("demo-lib", "5.0")))
    assert "PYSEC-2099-3" not in ids(query(client, pkg("demo-lib")))


def test_without_a_version_every_advisory_naming_the_package(osv: tuple[Bastion, TestClient]) -> None:
    _, client = osv
    assert ids(query(client, pkg("demo-lib"))) == {"PYSEC-2099-1", "GHSA-2099-aaaa-bbbb", "PYSEC-2099-2"}


def test_purl_and_other_ecosystems(osv: tuple[Bastion, TestClient]) -> None:
    _, client = osv
    assert ids(query(client, {"package": {"purl": "pkg:pypi/demo-lib@1.1"}})) == {"PYSEC-2099-1",
                                                                                "GHSA-2099-aaaa-bbbb"}
    assert ids(query(client, {"package": {"purl": "pkg:pypi/other_lib"}, "version": "2.1"})) == {
        "GHSA-2099-cccc-dddd"}
    assert query(client, {"package": {"purl": "pkg:npm/demo-lib@1.1"}}) == {}
    assert query(client, pkg("demo-lib", "1.1", ecosystem="npm")) == {}
    # An ecosystem with a suffix is still PyPI (OSV's "Ecosystem:suffix" form).
    assert ids(query(client, pkg("other-lib", "2.0", ecosystem="PyPI:extra"))) == {"GHSA-2099-cccc-dddd"}


def test_querybatch_answers_ids_and_modified_in_query_order(osv: tuple[Bastion, TestClient]) -> None:
    _, client = osv
    queries = [pkg("other-lib", "2.1"), pkg("demo-lib", "9.0"), pkg("demo-lib", "1.1"),
               {"package": {"purl": "pkg:pypi/demo-lib@0.9"}}, pkg("demo-lib", "1.1", ecosystem="Go")]
    response = client.post("/osv/v1/querybatch", json={"queries": queries})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results == [
        {"vulns": [{"id": "GHSA-2099-cccc-dddd", "modified": "2099-04-01T00:00:00.123456Z"}]},
        {},
        {"vulns": [{"id": "GHSA-2099-aaaa-bbbb", "modified": "2099-01-03T00:00:00Z"},
                   {"id": "PYSEC-2099-1", "modified": "2099-01-02T03:04:05Z"}]},
        {"vulns": [{"id": "PYSEC-2099-1", "modified": "2099-01-02T03:04:05Z"},
                   {"id": "PYSEC-2099-2", "modified": "2099-02-01T00:00:00Z"}]},
        {},
    ]
    assert client.post("/osv/v1/querybatch", json={"queries": []}).json() == {"results": []}


def test_the_batch_agrees_with_advisories_affecting(osv: tuple[Bastion, TestClient]) -> None:
    """The batched lookup gives, for every query, the members of query.advisories_affecting."""
    instance, _ = osv
    asks = [(name, version) for name in ("demo-lib", "Other.Lib", "nothing")
            for version in ("0", "0.5", "0.9", "1.0", "1.1", "1.2", "1.2.1", "2.0", "2.4.9", "2.5", "not-pep-440")]
    with instance.db.read() as session:
        batched = affecting_many(session, [OsvQuery(name=n.lower().replace(".", "-"), version=v) for n, v in asks])
        for (name, version), found in zip(asks, batched, strict=True):
            expected = {m for view in advisories_affecting(session, name, version) for m in view.members}
            assert {a.id for a in found} == expected, (name, version)
    assert sum(bool(found) for found in batched) >= 8  # the sample does hit advisories


BAD_QUERIES = [
    (b"{not json", 400, "not valid JSON"),
    (b"", 400, "body is empty"),
    (b"[]", 400, "must be a JSON object"),
    (b'{"version": "1.0"}', 400, "package is missing"),
    (b'{"package": "demo-lib", "version": "1.0"}', 400, "package must be an object"),
    (b'{"package": {"ecosystem": "PyPI"}, "version": "1.0"}', 400, "package.name is missing"),
    (b'{"package": {"name": 7, "ecosystem": "PyPI"}}', 400, "package.name must be a string, not a number"),
    (b'{"package": {"name": "demo-lib", "ecosystem": "PyPI"}, "version": 1.1}', 400,
     "version must be a string, not a number"),
    (b'{"package": {"name": "demo-lib", "ecosystem": "PyPI"}, "version": ""}', 400, "version is empty"),
    (b'{"commit": "6879efc2c1596d11a6a6ad296f80063b558d5e0f"}', 400, "queries by commit are not supported"),
    (b'{"package": {"purl": "pypi/demo-lib"}}', 400, "not a package URL"),
    (b'{"package": {"purl": "pkg:pypi/demo-lib@1.0"}, "version": "1.0"}', 400, "version is given twice"),
    (b'{"package": {"purl": "pkg:pypi/demo-lib", "name": "demo-lib"}}', 400, "cannot be combined"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD_QUERIES, ids=[m for _, _, m in BAD_QUERIES])
def test_malformed_queries_are_refused_with_the_field_named(osv: tuple[Bastion, TestClient], body: bytes,
                                                            status: int, message: str) -> None:
    _, client = osv
    response = client.post("/osv/v1/query", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert message in response.json()["message"], response.json()
    assert message in response.headers["x-bastion-reason"]


def test_malformed_batches_name_the_query_and_the_limit(osv: tuple[Bastion, TestClient]) -> None:
    instance, client = osv
    before = db_rows(instance)
    response = client.post("/osv/v1/querybatch", json={"queries": [pkg("demo-lib", "1.0"), {"package": {"name": []}}]})
    assert response.status_code == 400
    assert response.json()["message"] == "queries[1].package.name must be a string, not a list."
    response = client.post("/osv/v1/querybatch", json={"queries": {"package": {}}})
    assert response.status_code == 400 and "queries must be a list, not an object" in response.json()["message"]
    response = client.post("/osv/v1/querybatch", json={"query": []})
    assert response.status_code == 400 and "queries is missing" in response.json()["message"]
    too_many = {"queries": [pkg("demo-lib", "1.0")] * (MAX_BATCH_QUERIES + 1)}
    response = client.post("/osv/v1/querybatch", json=too_many)
    assert response.status_code == 400
    assert f"a batch holds at most {MAX_BATCH_QUERIES}" in response.json()["message"]
    # Exactly the limit is fine.
    response = client.post("/osv/v1/querybatch", json={"queries": [pkg("demo-lib", "1.0")] * MAX_BATCH_QUERIES})
    assert response.status_code == 200 and len(response.json()["results"]) == MAX_BATCH_QUERIES
    assert db_rows(instance) == before  # refusals (and answers) store nothing


def test_oversized_bodies_are_refused(osv: tuple[Bastion, TestClient]) -> None:
    _, client = osv
    padding = "x" * (70 * 1024)
    response = client.post("/osv/v1/query", content=json.dumps({**pkg("demo-lib", "1.0"), "pad": padding}),
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "limit is 65536 bytes" in response.json()["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the stream is cut at the limit
        yield b'{"queries": ['
        for _ in range(3 * 1024):
            yield b'{"package": {"name": "' + b"a" * 1000 + b'"}},'
        yield b"{}]}"

    response = client.post("/osv/v1/querybatch", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "over 2097152 bytes" in response.json()["message"]


def test_the_api_needs_no_authentication_and_is_in_the_openapi_schema(osv: tuple[Bastion, TestClient]) -> None:
    _, client = osv
    response = client.post("/osv/v1/query", json=pkg("other-lib", "2.0"), headers={"Authorization": ""})
    assert response.status_code == 200 and ids(response.json()) == {"GHSA-2099-cccc-dddd"}
    paths = client.get("/openapi.json").json()["paths"]
    assert "post" in paths["/osv/v1/query"] and "post" in paths["/osv/v1/querybatch"]
