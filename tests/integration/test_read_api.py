"""The read API over the wire: PEP 503/691 negotiation, redirects, caching, files, PEP 658, JSON API."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from urllib.parse import urljoin, urlsplit

import pytest

from tests.integration.conftest import Dists, LiveServer, html_anchors, sha256_of, wheel_metadata

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
SIMPLE_HTML = "application/vnd.pypi.simple.v1+html"
# What the installers send (pip and uv prefer JSON, accept HTML).
PIP_ACCEPT = f"{SIMPLE_JSON}, {SIMPLE_HTML}; q=0.1, text/html; q=0.01"
UV_ACCEPT = f"{SIMPLE_JSON}, {SIMPLE_HTML};q=0.2, text/html;q=0.01"


@pytest.fixture(scope="module")
def index(module_server: LiveServer, dists: Dists) -> Iterator[LiveServer]:
    module_server.twine_ok([*dists.demo, dists.sdist("demo-sdist-only-0.1.0")])
    yield module_server


def get(server: LiveServer, path: str, **headers: str):  # type: ignore[no-untyped-def]
    with server.http() as client:
        return client.get(path, headers=headers)


def varies_on_accept(response) -> bool:  # type: ignore[no-untyped-def]
    """The response names Accept in Vary (caches must key the representation on it)."""
    return "accept" in [token.strip().lower() for token in response.headers.get("vary", "").split(",")]


# -- content negotiation (PEP 691) ------------------------------------------------------------

@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "text/html; charset=utf-8"),
        ("*/*", "text/html; charset=utf-8"),
        ("text/html", "text/html; charset=utf-8"),
        (SIMPLE_HTML, SIMPLE_HTML),
        (SIMPLE_JSON, SIMPLE_JSON),
        ("application/vnd.pypi.simple.latest+json", SIMPLE_JSON),
        (PIP_ACCEPT, SIMPLE_JSON),
        (UV_ACCEPT, SIMPLE_JSON),
        (f"{SIMPLE_JSON};q=0.5, text/html;q=0.9", "text/html; charset=utf-8"),
        (f"text/html;q=0.2, {SIMPLE_HTML};q=0.3, {SIMPLE_JSON};q=0.1", SIMPLE_HTML),
        ("application/*;q=0.8, text/html;q=0.5", SIMPLE_HTML),
        (f"application/xml, {SIMPLE_JSON};q=0.01", SIMPLE_JSON),
        (f"text/html;q=0, {SIMPLE_JSON}", SIMPLE_JSON),
    ],
)
def test_accept_header_selects_the_format(index: LiveServer, accept: str | None, expected: str) -> None:
    headers = {"Accept": accept} if accept is not None else {}
    with index.http() as client:
        if accept is None:
            client.headers.pop("Accept", None)
        for path in ("/simple/demo-pkg/", "/simple/"):
            response = client.get(path, headers=headers)
            assert response.status_code == 200, (path, response.text)
            assert response.headers["content-type"] == expected, path
            assert varies_on_accept(response), path
            if expected == SIMPLE_JSON:
                assert response.json()["meta"]["api-version"] == "1.4"
            else:
                assert response.text.startswith("<!DOCTYPE html>")
                assert '<meta name="pypi:repository-version" content="1.4">' in response.text


@pytest.mark.parametrize("accept", ["application/xml", "text/plain", f"text/html;q=0, {SIMPLE_JSON};q=0"])
def test_unacceptable_types_get_406(index: LiveServer, accept: str) -> None:
    response = get(index, "/simple/demo-pkg/", Accept=accept)
    assert response.status_code == 406
    assert varies_on_accept(response)
    assert SIMPLE_JSON in response.text and "text/html" in response.text


def test_format_query_parameter_overrides_accept(index: LiveServer) -> None:
    response = get(index, f"/simple/demo-pkg/?format={SIMPLE_JSON}", Accept="text/html")
    assert response.status_code == 200
    assert response.headers["content-type"] == SIMPLE_JSON
    assert response.json()["name"] == "demo-pkg"
    response = get(index, f"/simple/?format={SIMPLE_HTML}", Accept=SIMPLE_JSON)
    assert response.headers["content-type"] == SIMPLE_HTML


def test_json_and_html_pages_agree(index: LiveServer, dists: Dists) -> None:
    local = {p.name: p for p in dists.demo if p.name.startswith("demo_pkg")}
    page = get(index, "/simple/demo-pkg/", Accept=SIMPLE_JSON).json()
    assert page["name"] == "demo-pkg"
    assert page["versions"] == ["1.0.0", "1.1.0"]
    files = {f["filename"]: f for f in page["files"]}
    assert set(files) == set(local)
    anchors = html_anchors(index, "demo-pkg")
    assert set(anchors) == set(local)
    for name, path in local.items():
        entry, attrs = files[name], anchors[name]
        digest = sha256_of(path)
        assert entry["hashes"] == {"sha256": digest}
        assert entry["size"] == path.stat().st_size
        assert entry["yanked"] is False
        assert attrs["href"] == f"{entry['url']}#sha256={digest}"
        expected_python = ">=3.8" if "-1.1.0" in name else None
        assert entry["requires-python"] == expected_python
        assert attrs.get("data-requires-python") == expected_python
        if name.endswith(".whl"):
            meta_digest = hashlib.sha256(wheel_metadata(path)).hexdigest()
            assert entry["core-metadata"] == {"sha256": meta_digest}
            assert attrs["data-core-metadata"] == f"sha256={meta_digest}"
            assert attrs["data-dist-info-metadata"] == f"sha256={meta_digest}"
        else:
            assert entry["core-metadata"] is False
            assert "data-core-metadata" not in attrs
    listing = get(index, "/simple/", Accept=SIMPLE_JSON).json()
    assert [p["name"] for p in listing["projects"]] == ["demo-dep", "demo-pkg", "demo-sdist-only"]


def test_last_serial_header_matches_the_page(index: LiveServer) -> None:
    response = get(index, "/simple/demo-pkg/", Accept=SIMPLE_JSON)
    assert int(response.headers["x-pypi-last-serial"]) == response.json()["meta"]["_last-serial"]
    response = get(index, "/pypi/demo-pkg/json")
    assert int(response.headers["x-pypi-last-serial"]) == response.json()["last_serial"]


# -- redirects --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/simple/Demo_Pkg/", "/simple/demo-pkg/"),
        ("/simple/demo.pkg/", "/simple/demo-pkg/"),
        ("/simple/demo-pkg", "/simple/demo-pkg/"),
        ("/simple", "/simple/"),
        (f"/simple/DEMO-pkg/?format={SIMPLE_JSON}", f"/simple/demo-pkg/?format={SIMPLE_JSON}"),
        ("/pypi/Demo_Pkg/json", "/pypi/demo-pkg/json"),
    ],
)
def test_non_normalized_names_redirect(index: LiveServer, path: str, location: str) -> None:
    response = get(index, path)
    assert response.status_code == 301, response.text
    assert response.headers["location"] == location
    with index.http(follow_redirects=True) as client:
        followed = client.get(path)
    assert followed.status_code == 200 and followed.url.path == location.split("?")[0]


def test_unknown_project_is_404(index: LiveServer) -> None:
    assert get(index, "/simple/no-such-project/").status_code == 404
    assert get(index, "/simple/no-such-project/", Accept=SIMPLE_JSON).status_code == 404
    assert get(index, "/pypi/no-such-project/json").status_code == 404
    assert get(index, "/pypi/demo-pkg/9.9/json").status_code == 404


# -- conditional requests ---------------------------------------------------------------------

def test_conditional_get_on_simple_pages(index: LiveServer) -> None:
    with index.http() as client:
        html = client.get("/simple/demo-pkg/", headers={"Accept": "text/html"})
        json_page = client.get("/simple/demo-pkg/", headers={"Accept": SIMPLE_JSON})
        etag = html.headers["etag"]
        assert etag.startswith('"') and etag != json_page.headers["etag"]
        again = client.get("/simple/demo-pkg/", headers={"Accept": "text/html", "If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == etag and varies_on_accept(again)
        listed = client.get("/simple/demo-pkg/", headers={"Accept": "text/html", "If-None-Match": f'"x", {etag}'})
        assert listed.status_code == 304
        # The HTML page's validator does not validate the JSON representation.
        other = client.get("/simple/demo-pkg/", headers={"Accept": SIMPLE_JSON, "If-None-Match": etag})
        assert other.status_code == 200 and other.json()["name"] == "demo-pkg"
        stale = client.get("/simple/demo-pkg/", headers={"Accept": "text/html", "If-None-Match": '"stale"'})
        assert stale.status_code == 200 and stale.content == html.content
        for encoding in ("identity", "gzip"):
            full = client.get("/simple/demo-pkg/", headers={"Accept": "text/html", "Accept-Encoding": encoding})
            head = client.head("/simple/demo-pkg/", headers={"Accept": "text/html", "Accept-Encoding": encoding})
            assert head.status_code == 200 and head.content == b""
            assert head.headers["content-length"] == full.headers["content-length"]
            assert head.headers["etag"] == full.headers["etag"]


def test_compressed_and_identity_representations(index: LiveServer) -> None:
    with index.http() as client:
        plain = client.get("/simple/demo-pkg/", headers={"Accept": SIMPLE_JSON, "Accept-Encoding": "identity"})
        packed = client.get("/simple/demo-pkg/", headers={"Accept": SIMPLE_JSON, "Accept-Encoding": "gzip"})
        assert "content-encoding" not in plain.headers
        assert int(plain.headers["content-length"]) == len(plain.content)
        assert packed.content == plain.content  # httpx decoded the gzip body
        if packed.headers.get("content-encoding") == "gzip":
            assert packed.headers["etag"] != plain.headers["etag"]  # different bytes, different validator
            assert "accept-encoding" in packed.headers["vary"].lower()
            again = client.get("/simple/demo-pkg/", headers={"Accept": SIMPLE_JSON, "Accept-Encoding": "gzip",
                                                             "If-None-Match": packed.headers["etag"]})
            assert again.status_code == 304


def test_conditional_get_on_json_api(index: LiveServer) -> None:
    with index.http() as client:
        first = client.get("/pypi/demo-pkg/json")
        again = client.get("/pypi/demo-pkg/json", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


# -- files and PEP 658 metadata ---------------------------------------------------------------

def test_files_are_served_with_length_type_and_digest(index: LiveServer, dists: Dists) -> None:
    page_url = f"{index.url}/simple/demo-pkg/"
    files = {f["filename"]: f for f in get(index, "/simple/demo-pkg/", Accept=SIMPLE_JSON).json()["files"]}
    with index.http() as client:
        for path in dists.demo[:4]:
            url = urljoin(page_url, files[path.name]["url"])
            assert urlsplit(url).path.startswith("/packages/")
            response = client.get(url)
            assert response.status_code == 200, path.name
            assert response.content == path.read_bytes()
            assert int(response.headers["content-length"]) == path.stat().st_size
            assert hashlib.sha256(response.content).hexdigest() == sha256_of(path)
            expected_type = "application/zip" if path.name.endswith(".whl") else "application/gzip"
            assert response.headers["content-type"] == expected_type
            assert "immutable" in response.headers["cache-control"]
            head = client.head(url)
            assert head.status_code == 200 and head.content == b""
            assert int(head.headers["content-length"]) == path.stat().st_size
            cached = client.get(url, headers={"If-None-Match": response.headers["etag"]})
            assert cached.status_code == 304 and cached.content == b""
        missing = client.get("/packages/00/00/0000/nothing-1.0.tar.gz")
        assert missing.status_code == 404


def test_pep658_metadata_files(index: LiveServer, dists: Dists) -> None:
    page_url = f"{index.url}/simple/demo-pkg/"
    anchors = html_anchors(index, "demo-pkg")
    with index.http() as client:
        for key in ("demo-pkg-1.0.0", "demo-pkg-1.1.0"):
            wheel = dists.wheel(key)
            attrs = anchors[wheel.name]
            url = urljoin(page_url, attrs["href"].partition("#")[0]) + ".metadata"
            response = client.get(url)
            assert response.status_code == 200
            assert response.content == wheel_metadata(wheel)
            assert attrs["data-core-metadata"] == f"sha256={hashlib.sha256(response.content).hexdigest()}"
            assert int(response.headers["content-length"]) == len(response.content)
            assert response.headers["content-type"].startswith("text/plain")
        sdist_href = anchors[dists.sdist("demo-pkg-1.1.0").name]["href"].partition("#")[0]
        assert client.get(urljoin(page_url, sdist_href) + ".metadata").status_code == 404


# -- PyPI's JSON API --------------------------------------------------------------------------

def test_pypi_json_api_has_pypis_shape(index: LiveServer, dists: Dists) -> None:
    response = get(index, "/pypi/demo-pkg/json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert {"info", "last_serial", "releases", "urls", "vulnerabilities"} <= set(document)
    assert document["vulnerabilities"] == []
    info = document["info"]
    assert info["name"] == "demo-pkg" and info["version"] == "1.1.0"
    assert info["requires_python"] == ">=3.8"
    assert info["requires_dist"] == ["demo-dep>=0.1"]
    assert info["summary"] == "Fixture project demo-pkg 1.1.0 for Bastion's integration tests"
    assert info["description_content_type"] == "text/markdown"
    assert "# demo-pkg 1.1.0" in info["description"]
    assert set(document["releases"]) == {"1.0.0", "1.1.0"}
    assert isinstance(document["last_serial"], int) and document["last_serial"] > 0
    local = {p.name: p for p in dists.files("demo-pkg-1.1.0")}
    assert {u["filename"] for u in document["urls"]} == set(local)
    with index.http() as client:
        for entry in document["urls"]:
            path = local[entry["filename"]]
            assert entry["url"].startswith(f"{index.url}/packages/"), entry["url"]
            assert entry["digests"]["sha256"] == sha256_of(path)
            assert entry["size"] == path.stat().st_size
            assert entry["packagetype"] == ("bdist_wheel" if path.name.endswith(".whl") else "sdist")
            assert client.get(entry["url"]).content == path.read_bytes()
    for entry in document["releases"]["1.0.0"]:
        assert entry["url"].startswith(f"{index.url}/packages/")
        assert entry["requires_python"] is None


def test_pypi_json_urls_follow_the_requested_host(index: LiveServer) -> None:
    other = get(index, "/pypi/demo-pkg/json", Host=f"localhost:{index.port}").json()
    urls = [u["url"] for u in other["urls"]]
    assert urls and all(u.startswith(f"http://localhost:{index.port}/packages/") for u in urls)
    mine = get(index, "/pypi/demo-pkg/json").json()
    assert [u["url"].replace("127.0.0.1", "localhost") for u in mine["urls"]] == urls


def test_pypi_json_release_page(index: LiveServer, dists: Dists) -> None:
    document = get(index, "/pypi/demo-pkg/1.0.0/json").json()
    assert document["info"]["version"] == "1.0.0"
    assert document["info"]["requires_dist"] is None
    assert document["vulnerabilities"] == []
    assert "releases" not in document
    assert {u["filename"] for u in document["urls"]} == {p.name for p in dists.files("demo-pkg-1.0.0")}
    assert all(u["url"].startswith(f"{index.url}/packages/") for u in document["urls"])


# -- the rest of the app ----------------------------------------------------------------------

def test_openapi_lists_the_api_routes(index: LiveServer) -> None:
    response = get(index, "/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["info"]["title"] == "Bastion"
    paths = schema["paths"]
    for path, method in [
        ("/legacy/", "post"),
        ("/health", "get"),
        ("/api/v1/users", "post"),
        ("/api/v1/users/{name}/admin", "post"),
        ("/api/v1/users/{name}/tokens", "post"),
        ("/api/v1/users/{name}/tokens", "get"),
        ("/api/v1/tokens/{token_id}", "delete"),
        ("/api/v1/projects/{project}/releases/{version}/yank", "post"),
        ("/api/v1/projects/{project}/releases/{version}/unyank", "post"),
        ("/api/v1/projects/{project}/roles", "get"),
        ("/api/v1/projects/{project}/roles", "post"),
        ("/api/v1/projects/{project}/roles/{user}", "delete"),
    ]:
        assert method in paths.get(path, {}), f"{method.upper()} {path} missing from /openapi.json"
    docs = get(index, "/docs")
    assert docs.status_code == 200 and "openapi.json" in docs.text


def test_landing_page_names_this_server(index: LiveServer) -> None:
    response = get(index, "/")
    assert response.status_code == 200
    assert f"pip install --index-url {index.url}/simple/ NAME" in response.text
    assert f"twine upload --repository-url {index.url}/legacy/" in response.text
