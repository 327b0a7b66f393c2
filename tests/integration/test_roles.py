"""Who may upload: project roles and project-scoped tokens, through twine and the CLI."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from tests.integration.conftest import Dists, LiveServer, describe, output


@pytest.fixture(scope="module")
def owned(module_server: LiveServer, dists: Dists) -> Iterator[LiveServer]:
    """alice owns demo-pkg (she uploaded its first file); bob exists, with a token, and no role."""
    module_server.twine_ok([dists.wheel("demo-pkg-1.0.0")])
    module_server.create_user("bob")
    module_server.tokens["bob"] = module_server.create_token("bob")
    yield module_server


def test_user_without_role_cannot_upload_until_made_maintainer(owned: LiveServer, dists: Dists) -> None:
    sdist = dists.sdist("demo-pkg-1.0.0")
    result = owned.twine_upload([sdist], password=owned.tokens["bob"])
    assert result.returncode != 0, describe(result)
    text = output(result)
    assert "403" in text, describe(result)
    assert "user 'bob' is not allowed to upload to project 'demo-pkg'" in text, describe(result)
    assert "maintainer" in text, describe(result)
    assert sdist.name not in owned.filenames("demo-pkg")

    result = owned.cli_ok("project", "add-role", "demo-pkg", "bob", "maintainer")
    assert "bob is now maintainer of demo-pkg" in result.stdout, describe(result)

    owned.twine_ok([sdist], password=owned.tokens["bob"])
    assert {"demo_pkg-1.0.0-py3-none-any.whl", sdist.name} <= owned.filenames("demo-pkg")

    # A maintainer uploads, but only an owner yanks (the project API, with bob's token).
    with owned.http() as client:
        response = client.post("/api/v1/projects/demo-pkg/releases/1.0.0/yank", json={"reason": "test"},
                               headers={"Authorization": f"Bearer {owned.tokens['bob']}"})
    assert response.status_code == 403, response.text
    assert "only an owner of 'demo-pkg'" in response.json()["error"]


def test_project_scoped_token_cannot_upload_other_projects(owned: LiveServer, dists: Dists) -> None:
    scoped = owned.create_token("alice", "--project", "demo-dep")
    wheel = dists.wheel("demo-pkg-1.1.0")
    result = owned.twine_upload([wheel], password=scoped)
    assert result.returncode != 0, describe(result)
    text = output(result)
    assert "403" in text, describe(result)
    assert "limited to demo-dep" in text and "cannot act on 'demo-pkg'" in text, describe(result)
    assert wheel.name not in owned.filenames("demo-pkg")

    # The same token uploads to the project it names; alice's unscoped token uploads to demo-pkg.
    owned.twine_ok(dists.files("demo-dep-0.1.0"), password=scoped)
    assert owned.filenames("demo-dep") == {p.name for p in dists.files("demo-dep-0.1.0")}
    owned.twine_ok([wheel])
    assert wheel.name in owned.filenames("demo-pkg")


def test_revoked_and_expired_tokens_stop_working(owned: LiveServer, dists: Dists) -> None:
    sdist = dists.sdist("demo-sdist-only-0.1.0")
    created = owned.cli_ok("token", "create", "--user", "alice", "--description", "to revoke")
    token = created.stdout.strip()
    match = re.search(r"token ([0-9a-f]{32}) for alice", created.stderr)
    assert match, describe(created)
    result = owned.cli_ok("token", "revoke", match.group(1))
    assert f"revoked {match.group(1)}" in result.stdout, describe(result)
    result = owned.twine_upload([sdist], password=token)
    assert result.returncode != 0, describe(result)
    assert "403" in output(result) and "revoked" in output(result), describe(result)

    expiring = owned.create_token("alice", "--expires", "1s")
    time.sleep(2.1)
    result = owned.twine_upload([sdist], password=expiring)
    assert result.returncode != 0, describe(result)
    assert "403" in output(result) and "expired" in output(result), describe(result)
    assert owned.filenames("demo-sdist-only") == set()

    owned.twine_ok([sdist])  # alice's own long-lived token still works
    assert owned.filenames("demo-sdist-only") == {sdist.name}
