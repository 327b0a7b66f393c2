"""twine upload against a live server: success, --skip-existing, taken filenames, passwords."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Dists, LiveServer, describe, output, sha256_of


@pytest.fixture(scope="module")
def first_upload(module_server: LiveServer, dists: Dists) -> Iterator[subprocess.CompletedProcess[str]]:
    """The first twine upload of every demo distribution (its result is asserted by the first test)."""
    yield module_server.twine_upload(dists.demo)


def test_twine_upload_succeeds_and_files_are_served(module_server: LiveServer, dists: Dists,
                                                     first_upload: subprocess.CompletedProcess[str]) -> None:
    assert first_upload.returncode == 0, describe(first_upload)
    for path in dists.demo:
        assert f"Uploading {path.name}" in first_upload.stdout, describe(first_upload)
    assert module_server.filenames("demo-pkg") == {p.name for p in dists.demo if p.name.startswith("demo_pkg")}
    assert module_server.filenames("demo-dep") == {p.name for p in dists.files("demo-dep-0.1.0")}
    # The stored bytes are the uploaded bytes.
    page = module_server.simple_json("demo-pkg")
    served = {f["filename"]: f["hashes"]["sha256"] for f in page["files"]}
    for path in dists.files("demo-pkg-1.0.0") + dists.files("demo-pkg-1.1.0"):
        assert served[path.name] == sha256_of(path)


def test_rerun_with_skip_existing_succeeds_and_changes_nothing(module_server: LiveServer, dists: Dists,
                                                               first_upload: subprocess.CompletedProcess[str]) -> None:
    assert first_upload.returncode == 0, describe(first_upload)
    with module_server.http() as client:
        before = client.get("/pypi/demo-pkg/json").json()["last_serial"]
    result = module_server.twine_upload(dists.demo, extra=["--skip-existing"])
    assert result.returncode == 0, describe(result)
    with module_server.http() as client:
        assert client.get("/pypi/demo-pkg/json").json()["last_serial"] == before
    assert len(module_server.simple_json("demo-pkg")["files"]) == 4


def test_different_file_under_taken_filename_is_refused(module_server: LiveServer, dists: Dists,
                                                        first_upload: subprocess.CompletedProcess[str]) -> None:
    assert first_upload.returncode == 0, describe(first_upload)
    altered = dists.conflicting_wheel
    original = dists.wheel("demo-pkg-1.0.0")
    assert altered.name == original.name and sha256_of(altered) != sha256_of(original)
    result = module_server.twine_upload([altered])
    assert result.returncode != 0, describe(result)
    text = output(result)
    assert "400" in text and "File already exists" in text, describe(result)
    assert original.name in text, describe(result)
    # The same when the refusal follows an accepted upload on the same kept-alive connection.
    fresh = dists.wheel("race-pkg-4")  # twine sends wheels first, in the order given
    result = module_server.twine_upload([fresh, altered])
    assert result.returncode != 0, describe(result)
    assert "400" in output(result) and "File already exists" in output(result), describe(result)
    assert module_server.filenames("race-pkg-4") == {fresh.name}
    # What is served under that name is still the original file, byte for byte.
    page = module_server.simple_json("demo-pkg")
    (entry,) = [f for f in page["files"] if f["filename"] == original.name]
    assert entry["hashes"]["sha256"] == sha256_of(original)
    with module_server.http() as client:
        response = client.get(f"/simple/demo-pkg/{entry['url']}")
    assert response.status_code == 200
    assert hashlib.sha256(response.content).hexdigest() == sha256_of(original)


def test_password_upload_is_refused_with_how_to_create_a_token(module_server: LiveServer, dists: Dists) -> None:
    sdist = dists.sdist("demo-sdist-only-0.1.0")
    result = module_server.twine_upload([sdist], user="alice", password="secret")
    assert result.returncode != 0, describe(result)
    text = output(result)
    assert "403" in text, describe(result)
    assert "Username/Password authentication is not supported" in text, describe(result)
    assert "bastion token create --user NAME" in text, describe(result)
    assert "username __token__" in text, describe(result)
    # Even alice's real password does not authenticate an upload.
    result = module_server.twine_upload([sdist], user="alice", password="a-long-password")
    assert result.returncode != 0, describe(result)
    assert "Username/Password authentication is not supported" in output(result), describe(result)
    assert module_server.filenames("demo-sdist-only") == set()


def test_invalid_token_is_refused(module_server: LiveServer, dists: Dists, tmp_path: Path) -> None:
    sdist = dists.sdist("demo-sdist-only-0.1.0")
    forged = module_server.token[:-6] + ("AAAAAA" if not module_server.token.endswith("AAAAAA") else "BBBBBB")
    for bad in ("bastion-not-a-token", forged):
        result = module_server.twine_upload([sdist], password=bad)
        assert result.returncode != 0, describe(result)
        text = output(result)
        assert "403" in text and "Invalid API token" in text, describe(result)
    assert module_server.filenames("demo-sdist-only") == set()
