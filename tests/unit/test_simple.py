"""Content negotiation (PEP 691), rendering (PEP 503/592/658/700) and the read path's caching."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bastion.simple.accept import HTML_V1, SIMPLE_JSON, TEXT_HTML, negotiate
from tests.conftest import make_user, post_upload
from tests.distbuilder import make_sdist, make_wheel, metadata_text, upload_form

PIP_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, TEXT_HTML),
        ("", TEXT_HTML),
        ("*/*", TEXT_HTML),
        ("text/html", TEXT_HTML),
        (PIP_ACCEPT, SIMPLE_JSON),
        ("application/vnd.pypi.simple.v1+html", HTML_V1),
        ("application/vnd.pypi.simple.latest+json", SIMPLE_JSON),
        ("application/vnd.pypi.simple.latest+html", HTML_V1),
        ("text/html;q=0.2, application/vnd.pypi.simple.v1+json;q=0.9", SIMPLE_JSON),
        ("text/html;q=0, */*;q=0.5", HTML_V1),
        ("application/*", HTML_V1),
        ("application/xml", None),
        ("application/vnd.pypi.simple.v1+json;q=0", None),
        ("text/html;q=bogus", None),
    ],
)
def test_negotiate(accept: str | None, expected: str | None) -> None:
    assert negotiate(accept) == expected


@pytest.fixture
def populated(client, bastion, tmp_path: Path):  # type: ignore[no-untyped-def]
    token = make_user(bastion, "alice")
    meta = metadata_text("Hello.World", "1.0", extra="Requires-Python: >=3.8,<4\n")
    wheel = make_wheel(tmp_path, "hello-world", "1.0", metadata=meta, filename="hello_world-1.0-py3-none-any.whl")
    sdist = make_sdist(tmp_path, "Hello.World", "1.0", metadata=meta)
    for path in (wheel, sdist):
        response = post_upload(client, token, path, upload_form(path, "Hello.World", "1.0"))
        assert response.status_code == 200, response.text
    wheel2 = make_wheel(tmp_path, "hello-world", "2.0b1", filename="hello_world-2.0b1-py3-none-any.whl",
                        metadata=metadata_text("Hello.World", "2.0b1"))
    assert post_upload(client, token, wheel2, upload_form(wheel2, "Hello.World", "2.0b1")).status_code == 200
    return {"wheel": wheel, "sdist": sdist, "wheel2": wheel2}


def test_html_detail_page(client, populated) -> None:
    response = client.get("/simple/hello-world/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["vary"] == "Accept, Accept-Encoding"
    body = response.text
    assert '<meta name="pypi:repository-version" content="1.4">' in body
    sha = hashlib.sha256(populated["wheel"].read_bytes()).hexdigest()
    assert f"#sha256={sha}" in body
    assert 'data-requires-python="&lt;4,&gt;=3.8"' in body or 'data-requires-python="&gt;=3.8,&lt;4"' in body
    assert body.count("data-core-metadata=") == 2  # the two wheels; the sdist has none
    assert body.index("hello_world-1.0-py3") < body.index("hello_world-2.0b1")


def test_json_detail_page(client, populated) -> None:
    response = client.get("/simple/hello-world/", headers={"Accept": PIP_ACCEPT})
    assert response.headers["content-type"] == SIMPLE_JSON
    document = response.json()
    assert document["meta"]["api-version"] == "1.4"
    assert document["name"] == "hello-world"
    assert document["versions"] == ["1.0", "2.0b1"]
    files = {f["filename"]: f for f in document["files"]}
    wheel = files[populated["wheel"].name]
    assert wheel["size"] == populated["wheel"].stat().st_size
    assert wheel["upload-time"].endswith("Z")
    assert wheel["yanked"] is False
    assert wheel["core-metadata"] == wheel["dist-info-metadata"]
    assert files[populated["sdist"].name]["core-metadata"] is False
    meta_url = "/simple/hello-world/" + wheel["url"] + ".metadata"
    metadata = client.get(meta_url)
    assert metadata.status_code == 200
    assert hashlib.sha256(metadata.content).hexdigest() == wheel["core-metadata"]["sha256"]


def test_format_query_overrides_accept(client, populated) -> None:
    response = client.get(f"/simple/?format={SIMPLE_JSON}", headers={"Accept": "text/html"})
    assert response.json()["projects"] == [{"name": "hello-world"}]
    assert client.get("/simple/?format=application/xml").status_code == 406


def test_redirects_to_normalized_name(client, populated) -> None:
    for path in ("/simple/Hello.World/", "/simple/hello_world/", "/simple/hello-world", "/simple"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 301, path
    assert client.get("/simple/Hello.World/", follow_redirects=False).headers["location"] == "/simple/hello-world/"
    assert client.get("/pypi/Hello.World/json", follow_redirects=False).headers["location"] == "/pypi/hello-world/json"


def test_conditional_get(client, populated) -> None:
    first = client.get("/simple/hello-world/")
    again = client.get("/simple/hello-world/", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
    other = client.get("/simple/hello-world/", headers={"If-None-Match": '"nope"'})
    assert other.status_code == 200


def test_unknown_project_and_paths_404(client, populated) -> None:
    assert client.get("/simple/nope/").status_code == 404
    assert client.get("/simple/hello-world/extra/").status_code == 404
    assert client.get("/packages/aa/bb/cc/nothing.whl").status_code == 404
    assert client.get("/pypi/nope/json").status_code == 404
    assert client.get("/pypi/hello-world/9.9/json").status_code == 404


def test_file_download(client, populated) -> None:
    document = client.get("/simple/hello-world/", headers={"Accept": SIMPLE_JSON}).json()
    entry = next(f for f in document["files"] if f["filename"].endswith(".tar.gz"))
    response = client.get("/simple/hello-world/" + entry["url"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/gzip"
    assert int(response.headers["content-length"]) == populated["sdist"].stat().st_size
    assert response.content == populated["sdist"].read_bytes()
    path = entry["url"].removeprefix("../../")
    parts = path.split("/")
    blake2 = hashlib.blake2b(populated["sdist"].read_bytes(), digest_size=32).hexdigest()
    assert parts[:4] == ["packages", blake2[:2], blake2[2:4], blake2[4:]]


def test_json_api_shape(client, populated) -> None:
    document = client.get("/pypi/hello-world/json").json()
    assert set(document) == {"info", "last_serial", "releases", "urls", "vulnerabilities"}
    assert document["vulnerabilities"] == []
    assert document["info"]["version"] == "1.0"  # the newest final release, not the beta
    assert document["info"]["name"] == "Hello.World"
    assert sorted(document["releases"]) == ["1.0", "2.0b1"]
    url = document["urls"][0]["url"]
    assert url.startswith("http://testserver/packages/")
    expected_keys = {
        "comment_text", "digests", "downloads", "filename", "has_sig", "md5_digest", "packagetype",
        "python_version", "requires_python", "size", "upload_time", "upload_time_iso_8601", "url",
        "yanked", "yanked_reason",
    }
    assert set(document["urls"][0]) == expected_keys
    release = client.get("/pypi/hello-world/2.0b1/json").json()
    assert release["info"]["version"] == "2.0b1"
    assert "releases" not in release
    assert client.get("/pypi/hello-world/1.0.0/json").json()["info"]["version"] == "1.0"


def test_yank_shows_on_pages_and_cache_is_refreshed(client, bastion, populated) -> None:
    from bastion.authz import OPERATOR
    from bastion.packaging.service import set_yanked

    before = client.get("/simple/hello-world/")
    assert "data-yanked" not in before.text
    with bastion.db.write() as session:
        serial = set_yanked(session, "hello-world", "1.0", yanked=True, reason="broken <build>",
                            principal=OPERATOR)
    bastion.notify_change(serial)
    after = client.get("/simple/hello-world/")
    assert 'data-yanked="broken &lt;build&gt;"' in after.text
    assert after.headers["etag"] != before.headers["etag"]
    files = client.get("/simple/hello-world/", headers={"Accept": SIMPLE_JSON}).json()["files"]
    assert {f["yanked"] for f in files if "1.0" in f["filename"] and "2.0" not in f["filename"]} == {"broken <build>"}
    info = client.get("/pypi/hello-world/json").json()["info"]
    assert info["version"] == "2.0b1"  # every final release is yanked: the newest non-yanked wins
    assert json.loads(client.get("/pypi/hello-world/1.0/json").content)["info"]["yanked_reason"] == "broken <build>"


def test_head_requests(client, populated) -> None:
    response = client.head("/simple/hello-world/")
    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["content-length"]) > 0


def test_gzip_for_clients_that_accept_it(client, bastion, tmp_path: Path) -> None:
    import gzip

    token = make_user(bastion, "alice")
    for index in range(12):  # enough files for a page over the compression threshold
        version = f"1.{index}"
        wheel = make_wheel(tmp_path, "big-project", version)
        assert post_upload(client, token, wheel, upload_form(wheel, "big-project", version)).status_code == 200
    plain = client.get("/simple/big-project/", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    raw = client.get("/simple/big-project/", headers={"Accept-Encoding": "gzip"})
    assert raw.headers["content-encoding"] == "gzip"
    assert raw.headers["etag"] != plain.headers["etag"]
    assert "Accept-Encoding" in raw.headers["vary"]
    # httpx decodes for us: the decoded bytes must be the stored page exactly.
    assert raw.content == plain.content
    assert len(gzip.compress(plain.content)) < len(plain.content)
    again = client.get("/simple/big-project/", headers={"Accept-Encoding": "gzip", "If-None-Match": raw.headers["etag"]})
    assert again.status_code == 304


def test_a_change_evicts_only_the_changed_projects_pages(client, bastion, tmp_path: Path) -> None:
    token = make_user(bastion, "alice")
    for name in ("alpha", "beta"):
        wheel = make_wheel(tmp_path, name, "1.0")
        assert post_upload(client, token, wheel, upload_form(wheel, name, "1.0")).status_code == 200
    read_api = client.app
    assert "beta-1.0" not in client.get("/simple/alpha/").text
    beta_before = client.get("/simple/beta/")
    assert "simple/beta/index.html" in read_api.pages.items
    wheel = make_wheel(tmp_path, "alpha", "2.0")
    assert post_upload(client, token, wheel, upload_form(wheel, "alpha", "2.0")).status_code == 200
    alpha = client.get("/simple/alpha/")
    assert "alpha-2.0-py3-none-any.whl" in alpha.text  # the changed project is fresh at once
    assert "simple/beta/index.html" in read_api.pages.items  # the other one stayed cached
    assert client.get("/simple/beta/").content == beta_before.content


def test_an_empty_index_lists_no_projects(client) -> None:
    html = client.get("/simple/")
    assert html.status_code == 200
    assert "<a " not in html.text
    document = client.get("/simple/", headers={"Accept": SIMPLE_JSON}).json()
    assert document["projects"] == []
    assert document["meta"]["api-version"] == "1.4"
    assert client.get("/simple/", headers={"If-None-Match": html.headers["etag"]}).status_code == 304
