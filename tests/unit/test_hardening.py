"""Hostile requests found in review: each is refused cleanly, holds no memory, leaks nothing."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from tests.conftest import basic_auth, make_user, post_upload, snapshot_state
from tests.distbuilder import make_wheel, metadata_text, upload_form, wheel_filename
from tests.unit.uploads import accepted, check_refusal, refused


def test_misses_on_the_read_path_are_not_cached(client) -> None:
    read_api = client.app
    for index in range(50):
        assert client.get(f"/simple/no-such-project-{index}/").status_code == 404
        assert client.get(f"/packages/aa/bb/{'c' * 60}/missing-{index}.whl").status_code == 404
        assert client.get(f"/pypi/no-such-project-{index}/json").status_code == 404
    assert read_api.pages.items == {}
    assert read_api.keys_by_name == {}
    assert read_api.files == {}


def test_names_that_cannot_be_projects_are_404_without_redirect(client) -> None:
    for path in ("/simple/A%0d%0aX:1/", f"/simple/{'a' * 300}/", "/simple/-bad-/", "/pypi/A%0d%0aX/json"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 404, path
        assert "location" not in response.headers


def test_hostile_versions_and_formats_are_refused_not_crashed(client, bastion, tmp_path: Path) -> None:
    token = make_user(bastion, "alice")
    accepted(client, token, make_wheel(tmp_path, "demo", "1.0"), "demo", "1.0")
    assert client.get(f"/pypi/demo/{'9' * 5000}/json").status_code == 404
    assert client.get("/pypi/demo/not.a.version!/json").status_code == 404
    assert client.get("/simple/?format=%E2%82%AC").status_code == 406
    response = client.post(f"/api/v1/projects/demo/releases/{'9' * 5000}/yank", json={},
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 400
    assert "invalid version" in response.json()["error"]


def test_upload_without_content_length_is_411(client, bastion, tmp_path: Path) -> None:
    token = make_user(bastion, "alice")
    wheel = make_wheel(tmp_path, "demo", "1.0")
    before = snapshot_state(bastion)
    boundary = "bastionboundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in upload_form(wheel, "demo", "1.0").items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="content"; filename="{wheel.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode() + wheel.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    )

    def chunked():  # a generator body: httpx sends it with Transfer-Encoding: chunked
        yield from parts

    response = client.post(
        "/legacy/", content=chunked(),
        headers={**basic_auth(token), "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    check_refusal(response, 411, "Content-Length")
    assert snapshot_state(bastion) == before


def test_an_empty_project_list_does_not_make_an_unlimited_token(client, bastion) -> None:
    token = make_user(bastion, "alice")
    before = snapshot_state(bastion)
    response = client.post("/api/v1/users/alice/tokens", json={"projects": []},
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 400
    assert "empty project list" in response.json()["error"]
    assert snapshot_state(bastion) == before


def test_token_pasted_without_scheme_is_not_echoed(client, bastion) -> None:
    token = make_user(bastion, "alice")
    response = client.get("/api/v1/users/alice/tokens", headers={"Authorization": token})
    assert response.status_code == 401
    assert token not in response.text
    assert token not in response.headers.get("x-bastion-reason", "")
    assert "Unsupported authorization scheme" in response.text


def test_unknown_and_foreign_users_look_the_same_to_non_admins(client, bastion) -> None:
    token = make_user(bastion, "alice")
    make_user(bastion, "bob")
    auth = {"Authorization": f"Bearer {token}"}
    foreign = client.get("/api/v1/users/bob/tokens", headers=auth)
    unknown = client.get("/api/v1/users/nobody/tokens", headers=auth)
    assert foreign.status_code == unknown.status_code == 403
    assert foreign.json() == unknown.json()
    assert client.get("/api/v1/users/nobody/tokens").status_code == 401


def test_json_api_built_from_the_host_header_is_not_shared_by_caches(client, bastion, bastion_with,
                                                                     tmp_path: Path) -> None:
    token = make_user(bastion, "alice")
    accepted(client, token, make_wheel(tmp_path, "demo", "1.0"), "demo", "1.0")
    forged = client.get("/pypi/demo/json", headers={"Host": "evil.example"})
    assert forged.headers["cache-control"] == "max-age=60, private"
    _, configured = bastion_with(public_url="https://pypi.internal.example")
    shared = configured.get("/pypi/demo/json", headers={"Host": "evil.example"})
    assert shared.headers["cache-control"] == "max-age=60, public"
    assert shared.json()["urls"][0]["url"].startswith("https://pypi.internal.example/packages/")


def test_corrupt_sdist_data_is_400(client, bastion, tmp_path: Path) -> None:
    token = make_user(bastion, "alice")
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:gz") as archive:
        for member, data in (("demo-1.0/PKG-INFO", metadata_text("demo", "1.0").encode()),
                             ("demo-1.0/big.bin", bytes(range(256)) * 4000)):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    raw = bytearray(payload.getvalue())
    for offset in range(len(raw) // 2, len(raw) // 2 + 64):  # damage the deflate stream mid-way
        raw[offset] ^= 0xFF
    path = tmp_path / "demo-1.0.tar.gz"
    path.write_bytes(bytes(raw))
    refused(client, bastion, token, path, upload_form(path, "demo", "1.0"), 400, "demo-1.0.tar.gz")


def test_versions_and_tags_longer_than_stored_are_400(client, bastion, tmp_path: Path) -> None:
    token = make_user(bastion, "alice")
    long_version = "1." + ".".join(["1"] * 60)
    wheel = make_wheel(tmp_path, "demo", long_version, metadata=metadata_text("demo", long_version))
    refused(client, bastion, token, wheel, upload_form(wheel, "demo", long_version), 400, "longer than 100")
    tags = ".".join(f"cp3{i}" for i in range(20)) + "-none-any"
    many = make_wheel(tmp_path, "demo", "1.0", tag=tags)
    assert many.name == wheel_filename("demo", "1.0", tags)
    refused(client, bastion, token, many, upload_form(many, "demo", "1.0"), 400, "too many Python tags")
    assert post_upload(client, token, make_wheel(tmp_path, "demo", "1.0"),
                       upload_form(make_wheel(tmp_path, "demo", "1.0"), "demo", "1.0")).status_code == 200


def test_a_role_refused_by_the_2fa_mandate_through_the_api_stays_on_record(client, bastion, tmp_path: Path) -> None:
    from sqlalchemy import select

    from bastion.accounts.models import User
    from bastion.events import Event
    from bastion.packaging.models import Project, Role

    token = make_user(bastion, "owen")
    make_user(bastion, "nina")
    accepted(client, token, make_wheel(tmp_path, "guarded", "1.0"), "guarded", "1.0")
    with bastion.db.write() as session:
        session.execute(select(Project).where(Project.normalized_name == "guarded")).scalar_one().mfa_required = True
        session.execute(select(User).where(User.username == "owen")).scalar_one().mfa_enabled = \
            session.execute(select(Project.created)).scalar()
    before = snapshot_state(bastion)
    response = client.post("/api/v1/projects/guarded/roles", json={"user": "nina", "role": "maintainer"},
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert "has not enabled it" in response.json()["error"] and "/account/2fa" in response.json()["error"]
    with bastion.db.read() as session:
        last = session.execute(select(Event).order_by(Event.id.desc()).limit(1)).scalar_one()
        assert (last.action, last.details["user"], last.details["reason"]) == ("role.refused", "nina", "2fa-required")
        assert session.execute(select(Role).join(User).where(User.username == "nina")).first() is None
    after = snapshot_state(bastion)
    before_counts = dict(before["counts"])  # type: ignore[call-overload]
    after_counts = dict(after["counts"])  # type: ignore[call-overload]
    assert after_counts.pop("events") == before_counts.pop("events") + 1  # only the refusal's event
    assert after_counts == before_counts and after["pages"] == before["pages"] and after["blobs"] == before["blobs"]


def test_control_characters_in_api_account_fields_are_refused_not_crashed(client, bastion) -> None:
    token = make_user(bastion, "root", admin=True)
    headers = {"Authorization": f"Bearer {token}"}
    before = snapshot_state(bastion)
    response = client.post("/api/v1/users", json={"name": "eve", "email": "eve\x00@example.org",
                                                  "password": "a-long-password"}, headers=headers)
    assert response.status_code == 400 and "invalid email address" in response.json()["error"]
    response = client.post("/api/v1/users/root/tokens", json={"description": "ci\x00"}, headers=headers)
    assert response.status_code == 400 and "control characters" in response.json()["error"]
    assert snapshot_state(bastion) == before
