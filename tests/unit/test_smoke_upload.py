"""The upload path end to end in-process: accepted, served, and refused without traces."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import make_user, post_upload, snapshot_state
from tests.distbuilder import make_wheel, upload_form


def test_wheel_upload_is_served_on_simple_pages(client, bastion, tmp_path: Path) -> None:
    token = make_user(bastion, "alice")
    wheel = make_wheel(tmp_path, "hello-world", "1.0")
    response = post_upload(client, token, wheel, upload_form(wheel, "hello-world", "1.0"))
    assert response.status_code == 200, response.text
    page = client.get("/simple/hello-world/")
    assert page.status_code == 200
    assert wheel.name in page.text
    assert 'data-core-metadata="sha256=' in page.text


def test_wrong_digest_changes_nothing(client, bastion, tmp_path: Path) -> None:
    token = make_user(bastion, "alice")
    before = snapshot_state(bastion)
    wheel = make_wheel(tmp_path, "hello-world", "1.0")
    form = upload_form(wheel, "hello-world", "1.0", sha256_digest="0" * 64)
    response = post_upload(client, token, wheel, form)
    assert response.status_code == 400
    assert "digest supplied does not match" in response.text
    assert snapshot_state(bastion) == before
