"""Uploads racing each other on a live server: one project, every file, no 500.

The requests are twine's own (its PackageFile and form encoding), pre-encoded, and released at the
same moment from threads by a barrier.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from requests_toolbelt import MultipartEncoder
from twine.package import PackageFile
from twine.repository import Repository

from tests.integration.conftest import RACE_PROJECTS, Dists, LiveServer, html_anchors, sha256_of


@dataclass(frozen=True)
class Upload:
    path: Path
    body: bytes
    content_type: str


def twine_request(path: Path) -> Upload:
    """The multipart body twine sends for ``path`` (see twine.repository.Repository._upload)."""
    package = PackageFile.from_filename(str(path), None)
    fields = Repository._convert_metadata_to_list_of_tuples(package.metadata_dictionary())
    fields += [(":action", "file_upload"), ("protocol_version", "1")]
    fields.append(("content", (package.basefilename, path.read_bytes(), "application/octet-stream")))
    encoder = MultipartEncoder(fields)
    return Upload(path=path, body=encoder.to_string(), content_type=encoder.content_type)


def send(server: LiveServer, upload: Upload) -> httpx.Response:
    with server.http() as client:
        return client.post("/legacy/", content=upload.body, auth=("__token__", server.token),
                           headers={"Content-Type": upload.content_type})


def race(server: LiveServer, uploads: list[Upload]) -> list[httpx.Response]:
    """Send every upload at the same moment, each from its own thread and connection."""
    barrier = threading.Barrier(len(uploads))
    results: list[httpx.Response | BaseException | None] = [None] * len(uploads)

    def worker(i: int) -> None:
        try:
            with server.http() as client:
                client.get("/health")  # connect first, so that only the POSTs race
                barrier.wait(timeout=30)
                results[i] = client.post("/legacy/", content=uploads[i].body, auth=("__token__", server.token),
                                         headers={"Content-Type": uploads[i].content_type})
        except BaseException as exc:  # noqa: BLE001
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(uploads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    responses = []
    for upload, result in zip(uploads, results):
        assert isinstance(result, httpx.Response), f"upload of {upload.path.name} did not complete: {result!r}"
        responses.append(result)
    return responses


def settle(server: LiveServer, uploads: list[Upload], responses: list[httpx.Response]) -> None:
    """Every response is a success or a clean refusal to retry; a refused upload succeeds on retry."""
    for upload, response in zip(uploads, responses):
        assert response.status_code < 500, (upload.path.name, response.status_code, response.text)
        if response.status_code == 200:
            continue
        assert response.status_code in (400, 409), (upload.path.name, response.status_code, response.text)
        assert response.reason_phrase.strip() and response.text.strip()
        assert "retry" in response.text.lower() or "already exists" in response.text, response.text
        retry = send(server, upload)
        assert retry.status_code == 200, (upload.path.name, retry.status_code, retry.text)


def assert_served(server: LiveServer, project: str, paths: list[Path]) -> None:
    """The project is listed once and serves exactly ``paths``, byte for byte, on every page."""
    with server.http() as client:
        index = client.get("/simple/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}).json()
        assert [p["name"] for p in index["projects"]].count(project) == 1, index
        html_index = client.get("/simple/").text
        assert html_index.count(f">{project}<") == 1, html_index
        page = server.simple_json(project)
        expected = {p.name: sha256_of(p) for p in paths}
        assert {f["filename"]: f["hashes"]["sha256"] for f in page["files"]} == expected, page
        anchors = html_anchors(server, project)
        assert {name: attrs["href"].partition("#sha256=")[2] for name, attrs in anchors.items()} == expected
        for entry in page["files"]:
            response = client.get(f"/simple/{project}/{entry['url']}")
            assert response.status_code == 200, entry
            assert hashlib.sha256(response.content).hexdigest() == entry["hashes"]["sha256"]
        released = client.get(f"/pypi/{project}/json").json()["releases"]
        assert sorted(f["filename"] for files in released.values() for f in files) == sorted(expected)


@pytest.fixture(scope="module")
def server(module_server: LiveServer, dists: Dists) -> Iterator[LiveServer]:
    module_server.twine_ok([dists.wheel("demo-pkg-1.0.0")])
    yield module_server


@pytest.mark.parametrize("project", RACE_PROJECTS[:3])
def test_two_files_of_a_new_project_uploaded_at_once(server: LiveServer, dists: Dists, project: str) -> None:
    paths = [dists.wheel(project), dists.sdist(project)]
    uploads = [twine_request(p) for p in paths]
    responses = race(server, uploads)
    settle(server, uploads, responses)
    assert_served(server, project, paths)
    # The uploader owns the project created by the race, whoever won it.
    with server.http() as client:
        roles = client.get(f"/api/v1/projects/{project}/roles", headers={"Authorization": f"Bearer {server.token}"})
    assert roles.status_code == 200 and roles.json() == [{"username": "alice", "role": "owner"}], roles.text


def test_same_file_uploaded_twice_at_once(server: LiveServer, dists: Dists) -> None:
    project = RACE_PROJECTS[3]
    wheel = dists.wheel(project)
    upload = twine_request(wheel)
    responses = race(server, [upload, upload])
    settle(server, [upload, upload], responses)
    # One copy stored, and its blob survived the loser's clean-up.
    assert_served(server, project, [wheel])


def test_three_files_of_an_existing_project_uploaded_at_once(server: LiveServer, dists: Dists) -> None:
    paths = [dists.sdist("demo-pkg-1.0.0"), dists.wheel("demo-pkg-1.1.0"), dists.sdist("demo-pkg-1.1.0")]
    uploads = [twine_request(p) for p in paths]
    responses = race(server, uploads)
    settle(server, uploads, responses)
    assert_served(server, "demo-pkg", [dists.wheel("demo-pkg-1.0.0"), *paths])
