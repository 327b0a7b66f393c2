"""The client path of PEP 458 against a live server: python-tuf's ngclient verifies every target the
index lists; pip and uv install through ``bastion verify-proxy``; ``bastion download`` saves a
verified file; bad input gives one line and a non-zero exit; a tampered file is refused.

Every client is the real thing in a subprocess (pip, uv, the ``bastion`` CLI); the only stand-ins
are loopback HTTP proxies: one that records what the verify-proxy fetched, and the
man-in-the-middle of mitm.py playing a tampering mirror.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata
from tuf.ngclient import Updater

from tests.conftest import fresh_database
from tests.distbuilder import make_wheel
from tests.integration.conftest import (
    BASTION,
    PROJECTS as FIXTURE_PROJECTS,
    PYTHON,
    UV,
    Dists,
    LiveServer,
    RecordingProxy,
    _free_port,
    _shutdown,
    clean_env,
    describe,
    installed,
    run,
    start_server,
    wheel_metadata,
)
from tests.integration.mitm import Mitm
from tests.integration.tufclient import SIMPLE_JSON, fetch_root, pip_install, tuf_updater, verify_proxy

SIGNING_TIMEOUT = 60.0


# ---------------------------------------------------------------------------------------------
# Helpers: waiting for the snapshot worker, the CLI (the clients themselves are in tufclient.py)
# ---------------------------------------------------------------------------------------------

def plain(server: LiveServer, path: str) -> bytes:
    """The bytes the index serves at ``path`` without TUF."""
    with server.http() as client:
        response = client.get(path)
    assert response.status_code == 200, (path, response.status_code, response.text)
    return response.content


def updater_for(server: LiveServer, root: Path, metadata_dir: Path) -> Updater:
    """An ngclient on the live server, bootstrapped with ``root``, refreshed."""
    updater = tuf_updater(server.url, metadata_dir, root.read_bytes())
    updater.refresh()
    return updater


def wait_until_signed(server: LiveServer, root: Path, projects: list[str], workdir: Path) -> None:
    """Until the signed metadata lists the current simple pages of ``projects`` and the project list."""
    pages = ["simple/index.json", *(f"simple/{p}/index.json" for p in projects)]
    deadline = time.monotonic() + SIGNING_TIMEOUT
    missing: list[str] = []
    while time.monotonic() < deadline:
        updater = updater_for(server, root, workdir)
        missing = []
        for page in pages:
            info = updater.get_targetinfo(page)
            if info is None or info.hashes["sha256"] != hashlib.sha256(plain(server, "/" + page)).hexdigest():
                missing.append(page)
        if not missing:
            return
        time.sleep(0.2)
    pytest.fail(f"the snapshot worker did not sign {missing} within {SIGNING_TIMEOUT}s", pytrace=False)


def bastion(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run([BASTION, *args], env=env, cwd=cwd, timeout=120)


def flip_last_byte(body: bytes) -> bytes:
    return body[:-1] + bytes([body[-1] ^ 0x01])


# ---------------------------------------------------------------------------------------------
# The module's index: several projects and versions, wheels and sdists, on SQLite
# ---------------------------------------------------------------------------------------------

PROJECTS = ["demo-dep", "demo-pkg", "demo-sdist-only"]


@dataclass
class SignedIndex:
    server: LiveServer
    root: Path


@pytest.fixture(scope="module")
def signed(dists: Dists, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SignedIndex]:
    """A server holding demo-pkg 1.0.0 and 1.1.0, demo-dep 0.1.0 (wheels and sdists) and the
    sdist-only project, with every page signed."""
    base = tmp_path_factory.mktemp("tuf-client")
    with fresh_database("sqlite", base / "data", tmp_path_factory):
        server = start_server("sqlite", base / "data", None, base / "home")
        try:
            server.twine_ok([*dists.demo, dists.sdist("demo-sdist-only-0.1.0")])
            root = fetch_root(server, base / "trust")
            wait_until_signed(server, root, PROJECTS, base / "wait")
            yield SignedIndex(server, root)
        finally:
            _shutdown(server)


# ---------------------------------------------------------------------------------------------
# python-tuf's ngclient, directly
# ---------------------------------------------------------------------------------------------

def test_ngclient_verifies_and_downloads_every_target_the_index_lists(signed: SignedIndex, tmp_path: Path) -> None:
    server = signed.server
    updater = updater_for(server, signed.root, tmp_path / "ngclient")
    # Every target, derived from what the index serves: both formats of the project list and of
    # every project page, and every file every page links.
    expected: set[str] = {"simple/index.html", "simple/index.json"}
    listed = sorted(p["name"] for p in json.loads(plain(server, "/simple/index.json"))["projects"])
    assert set(PROJECTS) <= set(listed), listed  # (a later test of this module adds one)
    files = 0
    for project in listed:
        expected |= {f"simple/{project}/index.html", f"simple/{project}/index.json"}
        page = json.loads(plain(server, f"/simple/{project}/index.json"))
        for entry in page["files"]:
            assert entry["url"].startswith("../../packages/"), entry
            expected.add(entry["url"][len("../../"):])
            files += 1
    if listed == PROJECTS:
        assert files == 7  # demo-pkg 2 x (wheel, sdist), demo-dep (wheel, sdist), demo-sdist-only (sdist)
    assert len(expected) == 2 + 2 * len(listed) + files

    for path in sorted(expected):
        info = updater.get_targetinfo(path)
        assert info is not None, f"{path} is served but not signed"
        assert set(info.hashes) == {"sha256"}
        saved = updater.download_target(info, str(tmp_path / "downloads" / hashlib.sha256(path.encode()).hexdigest()))
        data = Path(saved).read_bytes()
        assert data == plain(server, "/" + path), f"{path}: the verified bytes differ from the plain index's"
        assert hashlib.sha256(data).hexdigest() == info.hashes["sha256"] and len(data) == info.length
        assert updater.find_cached_target(info, saved) == saved

    # What pip and uv get by content negotiation is byte for byte the signed page.
    for project in listed:
        with server.http() as client:
            as_json = client.get(f"/simple/{project}/", headers={"Accept": SIMPLE_JSON})
            as_html = client.get(f"/simple/{project}/", headers={"Accept": "text/html"})
        assert as_json.content == plain(server, f"/simple/{project}/index.json")
        assert as_html.content == plain(server, f"/simple/{project}/index.html")

    # ... and the signed metadata lists nothing else: the union of every bin (from the snapshot
    # python-tuf verified and persisted) is exactly that set.
    snapshot = Metadata.from_file(str(tmp_path / "ngclient" / "snapshot.json")).signed
    in_bins: set[str] = set()
    bins = [name for name in snapshot.meta if name.startswith("bins-")]
    assert len(bins) == 256
    for name in bins:
        version = snapshot.meta[name].version
        in_bins |= set(Metadata.from_bytes(plain(server, f"/tuf/metadata/{version}.{name}")).signed.targets)
    assert in_bins == expected


def test_ngclient_refuses_a_target_that_is_not_signed(signed: SignedIndex, tmp_path: Path) -> None:
    updater = updater_for(signed.server, signed.root, tmp_path / "ngclient")
    assert updater.get_targetinfo("simple/no-such-project/index.html") is None
    assert updater.get_targetinfo("packages/00/00/0000/evil-1.0-py3-none-any.whl") is None


# ---------------------------------------------------------------------------------------------
# pip and uv through bastion verify-proxy
# ---------------------------------------------------------------------------------------------

def test_pip_installs_through_verify_proxy(live_server: LiveServer, dists: Dists, tmp_path: Path) -> None:
    """On SQLite and PostgreSQL: a fresh index, pip through the proxy, and the proxy through a
    recording proxy, which shows it read TUF metadata and consistent-snapshot names only."""
    live_server.twine_ok(dists.demo)
    root = fetch_root(live_server, tmp_path / "trust")
    wait_until_signed(live_server, root, ["demo-dep", "demo-pkg"], tmp_path / "wait")
    with RecordingProxy(live_server.url) as upstream, \
            verify_proxy(upstream.url + "/", root, tmp_path / "proxy", live_server.client_env) as proxy:
        result = pip_install(proxy.index_url, tmp_path / "target", live_server.client_env, "demo-pkg")
        assert result.returncode == 0, describe(result) + proxy.log()
        assert installed(tmp_path / "target") == {"demo-pkg": "1.1.0", "demo-dep": "0.1.0"}, describe(result)
        # pip got everything from the proxy ...
        assert f"{proxy.url}/packages/" in result.stdout, describe(result)
        log = proxy.log()
        for line in ("GET /simple/demo-pkg/ -> 200 (simple/demo-pkg/index.json verified)",
                     "GET /simple/demo-dep/ -> 200 (simple/demo-dep/index.json verified)"):
            assert line in log, log
        for wheel in ("demo_pkg-1.1.0-py3-none-any.whl", "demo_dep-0.1.0-py3-none-any.whl"):
            assert re.search(rf"GET /packages/\S+/{re.escape(wheel)} -> 200 \(packages/\S+ verified\)", log), log
            assert re.search(rf"GET /packages/\S+/{re.escape(wheel)}\.metadata -> 200 \(\S+ matches its verified "
                             r"simple page\)", log), log
        assert " -> 502 " not in log and " -> 500 " not in log, log
        # ... and the proxy got it from the index the TUF way: metadata, then pages and files
        # under their consistent-snapshot names <sha256>.<name>, never the mutable URLs pip uses.
        paths = upstream.paths()
    assert "/tuf/metadata/timestamp.json" in paths, paths
    assert any(re.fullmatch(r"/tuf/metadata/\d+\.snapshot\.json", p) for p in paths), paths
    assert any(re.fullmatch(r"/tuf/metadata/\d+\.bins-[0-9a-f]{2}\.json", p) for p in paths), paths
    assert any(re.fullmatch(r"/simple/demo-pkg/[0-9a-f]{64}\.index\.json", p) for p in paths), paths
    wheel = dists.wheel("demo-pkg-1.1.0")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert any(p.endswith(f"/{digest}.{wheel.name}") for p in paths), paths
    assert not any(p.startswith("/simple/") and not p.endswith(".json") and not p.endswith(".html")
                   for p in paths), paths
    assert all(s.status == 200 for s in upstream.seen if not re.fullmatch(r"/tuf/metadata/\d+\.root\.json", s.path)), \
        upstream.seen


def test_uv_installs_through_verify_proxy(signed: SignedIndex, dists: Dists, tmp_path: Path) -> None:
    server = signed.server
    with verify_proxy(server.url, signed.root, tmp_path / "proxy", server.client_env) as proxy:
        result = run([UV, "pip", "install", "--no-config", "--no-cache", "--target", str(tmp_path / "target"),
                      "--python", PYTHON, "--index-url", proxy.index_url, "demo-pkg==1.0.0"], env=server.client_env)
        assert result.returncode == 0, describe(result) + proxy.log()
        assert installed(tmp_path / "target") == {"demo-pkg": "1.0.0"}, describe(result)
        log = proxy.log()
    assert "GET /simple/demo-pkg/ -> 200 (simple/demo-pkg/index.json verified)" in log, log
    assert re.search(r"GET /packages/\S+/demo_pkg-1\.0\.0-py3-none-any\.whl -> 200", log), log
    source = FIXTURE_PROJECTS / "demo-pkg-1.0.0" / "src" / "demo_pkg" / "__init__.py"
    assert (tmp_path / "target" / "demo_pkg" / "__init__.py").read_text() == source.read_text()


def test_pip_builds_an_sdist_fetched_through_verify_proxy(signed: SignedIndex, tmp_path: Path) -> None:
    server = signed.server
    with verify_proxy(server.url + "/simple/", signed.root, tmp_path / "proxy", server.client_env) as proxy:
        result = pip_install(proxy.index_url, tmp_path / "target", server.client_env,
                             "--no-build-isolation", "demo-sdist-only")
        assert result.returncode == 0, describe(result) + proxy.log()
        log = proxy.log()
    assert installed(tmp_path / "target") == {"demo-sdist-only": "0.1.0"}
    assert re.search(r"GET /packages/\S+/demo_sdist_only-0\.1\.0\.tar\.gz -> 200", log), log


def test_verify_proxy_serves_the_signed_bytes_of_both_formats(signed: SignedIndex, dists: Dists,
                                                               tmp_path: Path) -> None:
    server = signed.server
    with verify_proxy(server.url, signed.root, tmp_path / "proxy", server.client_env) as proxy, proxy.http() as client:
        # Nothing announced a .metadata file yet: it is not served (it is not a TUF target).
        entry = next(f for f in server.simple_json("demo-dep")["files"] if f["filename"].endswith(".whl"))
        metadata_url = "/" + entry["url"][len("../../"):] + ".metadata"
        assert client.get(metadata_url).status_code == 404

        html = client.get("/simple/demo-dep/", headers={"Accept": "text/html"})
        assert html.status_code == 200
        assert html.headers["content-type"].startswith("text/html")
        assert html.content == plain(server, "/simple/demo-dep/index.html")
        # The HTML page announced the .metadata digest: now it is served, checked against it.
        metadata = client.get(metadata_url)
        assert metadata.status_code == 200
        assert metadata.content == wheel_metadata(dists.wheel("demo-dep-0.1.0"))

        as_json = client.get("/simple/demo-pkg/", headers={"Accept": SIMPLE_JSON})
        assert as_json.status_code == 200
        assert as_json.headers["content-type"] == SIMPLE_JSON
        assert as_json.content == plain(server, "/simple/demo-pkg/index.json")
        pip_accept = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"
        assert client.get("/simple/demo-pkg/", headers={"Accept": pip_accept}).content == as_json.content

        index = client.get("/simple/", headers={"Accept": SIMPLE_JSON})
        assert index.status_code == 200 and index.content == plain(server, "/simple/index.json")
        assert client.get("/simple/").content == plain(server, "/simple/index.html")

        redirect = client.get("/simple/Demo_Pkg")
        assert redirect.status_code == 301 and redirect.headers["location"] == "/simple/demo-pkg/"
        assert client.get("/simple/no-such-project/").status_code == 404
        assert client.get("/packages/00/00/0000/evil-1.0-py3-none-any.whl").status_code == 404
        assert client.get("/simple/demo-pkg/", headers={"Accept": "image/png"}).status_code == 406
        head = client.head(metadata_url)
        assert head.status_code == 200 and head.headers["content-length"] == str(len(metadata.content))
        sdist = dists.sdist("demo-pkg-1.0.0")
        (link,) = [f["url"] for f in server.simple_json("demo-pkg")["files"] if f["filename"] == sdist.name]
        assert client.get("/" + link[len("../../"):]).content == sdist.read_bytes()
    log = proxy.log()
    assert "GET /simple/demo-dep/ -> 200 (simple/demo-dep/index.html verified)" in log, log
    assert "GET /simple/ -> 200 (simple/index.html verified)" in log, log


# ---------------------------------------------------------------------------------------------
# bastion download
# ---------------------------------------------------------------------------------------------

def test_download_saves_a_verified_wheel_then_an_sdist_on_request(signed: SignedIndex, dists: Dists,
                                                                  tmp_path: Path) -> None:
    server = signed.server
    env = server.client_env
    common = ["--index", server.url, "--root", str(signed.root), "--cache-dir", str(tmp_path / "cache")]
    result = bastion("download", "Demo_Pkg==1.0.0", *common, "--dest", str(tmp_path / "out"), env=env)
    assert result.returncode == 0, describe(result)
    wheel = dists.wheel("demo-pkg-1.0.0")
    saved = tmp_path / "out" / wheel.name
    assert saved.read_bytes() == wheel.read_bytes()
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert result.stdout.split() == [str(saved), "sha256", digest], describe(result)

    sdist = dists.sdist("demo-pkg-1.0.0")
    result = bastion("download", "demo-pkg==1.0", *common, "--file", sdist.name, env=env, cwd=tmp_path)
    assert result.returncode == 0, describe(result)
    assert (tmp_path / sdist.name).read_bytes() == sdist.read_bytes()  # --dest defaults to .
    assert hashlib.sha256(sdist.read_bytes()).hexdigest() in result.stdout

    only = dists.sdist("demo-sdist-only-0.1.0")
    result = bastion("download", "demo-sdist-only==0.1.0", *common, "--dest", str(tmp_path / "out"), env=env)
    assert result.returncode == 0, describe(result)
    assert (tmp_path / "out" / only.name).read_bytes() == only.read_bytes()


@pytest.mark.parametrize(("spec", "extra", "message"), [
    ("demo-pkg==9.9", [], "demo-pkg==9.9: no file of version 9.9"),
    ("no-such-project==1.0", [], "no-such-project==1.0: no-such-project is not a project in the signed TUF metadata"),
    ("demo-pkg==1.0.0", ["--file", "demo_pkg-9.whl"], "no file named demo_pkg-9.whl (files of version 1.0.0: "
                                                       "demo_pkg-1.0.0-py3-none-any.whl, demo_pkg-1.0.0.tar.gz)"),
], ids=["no-such-version", "no-such-project", "no-such-file"])
def test_download_of_something_not_signed_exits_1(signed: SignedIndex, tmp_path: Path, spec: str, extra: list[str],
                                                  message: str) -> None:
    server = signed.server
    result = bastion("download", spec, "--index", server.url, "--root", str(signed.root), "--dest",
                     str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), *extra, env=server.client_env)
    assert result.returncode == 1, describe(result)
    assert result.stderr.strip().startswith("error: ") and message in result.stderr, describe(result)
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr, describe(result)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ---------------------------------------------------------------------------------------------
# Bad input: one line naming the file or URL, non-zero exit, no traceback
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tuf_off_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """An index running with BASTION_TUF=off (set in its bastion.toml): no /tuf/metadata/."""
    base = tmp_path_factory.mktemp("tuf-off")
    with fresh_database("sqlite", base / "data", tmp_path_factory):
        (base / "data" / "bastion.toml").write_text('tuf = "off"\n')
        server = start_server("sqlite", base / "data", None, base / "home")
        try:
            yield server
        finally:
            _shutdown(server)


BAD_INPUTS = ["root-missing", "root-is-a-directory", "root-is-timestamp", "root-is-other-json", "root-not-json",
              "root-tampered", "index-refuses-connections", "index-has-tuf-off", "index-url-not-http"]


def _bad_input(case: str, signed: SignedIndex, tuf_off: LiveServer, tmp_path: Path) -> tuple[list[str], list[str]]:
    """(--index/--root arguments, fragments the one-line error must contain) for ``case``."""
    server = signed.server
    root = str(signed.root)
    bad = tmp_path / "bad.json"
    if case == "root-missing":
        return ["--index", server.url, "--root", str(tmp_path / "nope.json")], [f"--root {tmp_path / 'nope.json'} "
                                                                                "does not exist", "1.root.json"]
    if case == "root-is-a-directory":
        return ["--index", server.url, "--root", str(tmp_path)], [f"--root {tmp_path} is a directory"]
    if case == "root-is-timestamp":
        bad.write_bytes(plain(server, "/tuf/metadata/timestamp.json"))
        return ["--index", server.url, "--root", str(bad)], [f"--root {bad} is TUF timestamp metadata, not root"]
    if case == "root-is-other-json":
        bad.write_text('{"projects": []}')
        return ["--index", server.url, "--root", str(bad)], [f"--root {bad} is not TUF metadata"]
    if case == "root-not-json":
        bad.write_text("<html>not json</html>")
        return ["--index", server.url, "--root", str(bad)], [f"--root {bad} is not TUF metadata (not JSON)"]
    if case == "root-tampered":
        document = json.loads(signed.root.read_bytes())
        document["signed"]["expires"] = "2099-01-01T00:00:00Z"
        bad.write_text(json.dumps(document))
        return ["--index", server.url, "--root", str(bad)], [f"--root {bad} cannot be trusted", "signed by 0/"]
    if case == "index-refuses-connections":
        url = f"http://127.0.0.1:{_free_port()}/"
        return ["--index", url, "--root", root], [f"cannot reach {url}", "Connection refused"]
    if case == "index-has-tuf-off":
        return (["--index", tuf_off.index_url, "--root", root],
                [f"{tuf_off.url}/ serves no TUF metadata", f"GET {tuf_off.url}/tuf/metadata/timestamp.json answered "
                 "HTTP 404", "BASTION_TUF=on"])
    assert case == "index-url-not-http"
    return ["--index", "ftp://example.org/", "--root", root], ["--index 'ftp://example.org/' is not an http(s) URL"]


@pytest.mark.parametrize("command", ["verify-proxy", "download"])
@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_and_exit_2(signed: SignedIndex, tuf_off_server: LiveServer, tmp_path: Path,
                                          command: str, case: str) -> None:
    arguments, fragments = _bad_input(case, signed, tuf_off_server, tmp_path)
    head = ["download", "demo-pkg==1.0.0"] if command == "download" else ["verify-proxy", "--port", "0"]
    result = bastion(*head, *arguments, "--cache-dir", str(tmp_path / "cache"), env=clean_env(tmp_path / "home"),
                     cwd=tmp_path)
    assert result.returncode == 2, describe(result)
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("error: "), describe(result)
    for fragment in fragments:
        assert fragment in line, (fragment, describe(result))
    assert "listening" not in result.stderr and result.stdout == "", describe(result)
    assert not list(tmp_path.glob("*.whl")), "nothing downloaded"


@pytest.mark.parametrize("spec", ["demo-pkg", "demo-pkg>=1.0", "demo-pkg==", "==1.0", "demo pkg==1.0",
                                  "demo-pkg==not-a-version"])
def test_download_refuses_a_spec_that_is_not_name_equals_version(tmp_path: Path, spec: str) -> None:
    # No index is contacted: the spec is checked first.
    result = bastion("download", spec, "--index", "http://127.0.0.1:9/", "--root", str(tmp_path / "r.json"),
                     env=clean_env(tmp_path / "home"))
    assert result.returncode == 2, describe(result)
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("error: "), describe(result)
    assert "is not NAME==VERSION" in line or "is not a valid version (PEP 440)" in line, describe(result)
    assert repr(spec) in line or repr(spec.split("==")[-1]) in line, describe(result)


# ---------------------------------------------------------------------------------------------
# Verification failures: a tampered mirror between the proxy and the index
# ---------------------------------------------------------------------------------------------

def test_pip_through_verify_proxy_refuses_a_tampered_wheel(signed: SignedIndex, tmp_path: Path) -> None:
    server = signed.server
    with Mitm(server.url) as mirror:
        mirror.rewrite(r".*-py3-none-any\.whl", flip_last_byte, name="tampered wheel")
        with verify_proxy(mirror.url, signed.root, tmp_path / "proxy", server.client_env) as proxy:
            result = pip_install(proxy.index_url, tmp_path / "target", server.client_env, "demo-dep")
            log = proxy.log()
            assert result.returncode != 0, describe(result)
            assert mirror.altered(), "the mirror never served the wheel"
    assert installed(tmp_path / "target") == {}
    assert not (tmp_path / "target" / "demo_dep").exists()
    # pip shows the reason phrase; the proxy logged the reason.
    assert "502" in result.stderr and "TUF verification failed: packages/" in result.stderr, describe(result)
    assert re.search(r"GET /packages/\S+/demo_dep-0\.1\.0-py3-none-any\.whl -> 502 TUF verification failed: "
                     r"packages/\S+: Observed hash [0-9a-f]{64} does not match expected hash [0-9a-f]{64}", log), log


def test_verify_proxy_refuses_a_tampered_page_and_metadata_file(signed: SignedIndex, tmp_path: Path) -> None:
    server = signed.server
    with Mitm(server.url) as mirror:
        mirror.rewrite(r"/simple/demo-pkg/[0-9a-f]{64}\.index\.json",
                       lambda body: body.replace(b"demo_pkg-1.1.0", b"demo_pkg-6.6.6"), name="tampered page")
        mirror.rewrite(r".*\.whl\.metadata", lambda body: body + b"Requires-Dist: evil\n", name="tampered .metadata")
        with verify_proxy(mirror.url, signed.root, tmp_path / "proxy", server.client_env) as proxy, \
                proxy.http() as client:
            page = client.get("/simple/demo-pkg/", headers={"Accept": SIMPLE_JSON})
            assert page.status_code == 502
            assert page.reason_phrase.startswith("TUF verification failed: simple/demo-pkg/index.json: ")
            assert page.text.startswith("TUF verification failed: simple/demo-pkg/index.json: ")
            assert b"6.6.6" not in page.content
            # The HTML page is untouched: served, and its .metadata links remembered ...
            html = client.get("/simple/demo-pkg/", headers={"Accept": "text/html"})
            assert html.status_code == 200 and html.content == plain(server, "/simple/demo-pkg/index.html")
            entry = next(f for f in server.simple_json("demo-pkg")["files"] if f["filename"].endswith(".whl"))
            metadata = client.get("/" + entry["url"][len("../../"):] + ".metadata")
            # ... but a .metadata file that does not match the digest the verified page announced is not.
            assert metadata.status_code == 502, metadata.text
            assert metadata.reason_phrase.startswith("TUF verification failed: packages/")
            assert "is not the" in metadata.reason_phrase and "that the verified simple page announced" in metadata.text
            assert b"evil" not in metadata.content
            assert len(mirror.altered()) >= 2
    log = proxy.log()
    assert "GET /simple/demo-pkg/ -> 502 TUF verification failed: simple/demo-pkg/index.json" in log, log
    assert ".whl.metadata -> 502 TUF verification failed:" in log, log


def test_download_refuses_a_tampered_file(signed: SignedIndex, tmp_path: Path) -> None:
    server = signed.server
    with Mitm(server.url) as mirror:
        mirror.rewrite(r".*\.tar\.gz", flip_last_byte, name="tampered sdist")
        result = bastion("download", "demo-sdist-only==0.1.0", "--index", mirror.url, "--root", str(signed.root),
                         "--dest", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
                         env=server.client_env)
    assert result.returncode == 1, describe(result)
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("error: TUF verification failed: packages/"), describe(result)
    assert "does not match expected hash" in line, describe(result)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir()), "nothing saved"


def test_verify_proxy_starts_on_refused_metadata_and_answers_only_502(signed: SignedIndex, tmp_path: Path) -> None:
    """A mirror whose timestamp.json no longer carries a valid signature: the proxy still comes up
    (so that the failure is visible to pip, request by request) and serves nothing."""
    server = signed.server

    def tamper(body: bytes) -> bytes:
        document = json.loads(body)
        document["signed"]["version"] += 1000
        return json.dumps(document).encode()

    with Mitm(server.url) as mirror:
        mirror.rewrite("/tuf/metadata/timestamp.json", tamper, name="tampered timestamp")
        with verify_proxy(mirror.url, signed.root, tmp_path / "proxy", server.client_env) as proxy:
            result = pip_install(proxy.index_url, tmp_path / "target", server.client_env, "demo-dep")
            with proxy.http() as client:
                response = client.get("/simple/demo-dep/")
            log = proxy.log()
            assert mirror.altered()
    assert result.returncode != 0 and installed(tmp_path / "target") == {}, describe(result)
    assert response.status_code == 502
    assert response.reason_phrase.startswith("TUF verification failed: refreshing metadata from ")
    assert "timestamp was signed by 0/1 keys" in response.reason_phrase, response.reason_phrase
    assert "verify-proxy: warning: TUF verification failed: refreshing metadata from " in log, log
    assert log.index("warning: TUF verification failed") < log.index("verify-proxy listening on"), log
    assert "GET /simple/demo-dep/ -> 502 TUF verification failed:" in log, log
    assert " -> 200" not in log, log


def test_verify_proxy_sees_a_new_upload_within_seconds(signed: SignedIndex, tmp_path: Path) -> None:
    """A new Updater per request (at most one a second): no stale view of the index."""
    server = signed.server
    wheel = make_wheel(tmp_path, "late-pkg", "1.0")
    with verify_proxy(server.url, signed.root, tmp_path / "proxy", server.client_env) as proxy, \
            proxy.http() as client:
        assert client.get("/simple/late-pkg/").status_code == 404
        server.twine_ok([wheel])
        deadline = time.monotonic() + SIGNING_TIMEOUT
        while (status := client.get("/simple/late-pkg/").status_code) == 404 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status == 200
        result = pip_install(proxy.index_url, tmp_path / "target", server.client_env, "late-pkg")
        assert result.returncode == 0, describe(result) + proxy.log()
        assert installed(tmp_path / "target") == {"late-pkg": "1.0"}
        log = proxy.log()
    assert "GET /simple/late-pkg/ -> 404" in log and "GET /simple/late-pkg/ -> 200" in log, log
