"""The TUF client's input checks and page reading, in process (tests/integration/test_tuf_client.py
runs the same code against a live index): what a bad --root, --index or NAME==VERSION is told,
which simple-page type a client gets, which .metadata digests a verified page announces, and
which file `bastion download` picks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from packaging.tags import sys_tags
from packaging.version import Version
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, Timestamp

from bastion.simple.render import FileView, ProjectView, ReleaseView, render_simple_detail
from bastion.tuf.client import (
    ClientError,
    VerifiedIndex,
    describe_failure,
    load_trusted_root,
    normalize_index_url,
    one_line,
)
from bastion.tuf.client.download import NotFound, choose_file, parse_spec
from bastion.tuf.client.proxy import SIMPLE_JSON, TEXT_HTML, core_metadata_hashes, negotiate, target_path_of_link

INDEX = "https://pypi.example.org/"


# -- the trusted root ------------------------------------------------------------------------------
def _root(tmp_path: Path) -> tuple[Path, Metadata[Root], CryptoSigner]:
    """A real root (python-tuf Metadata API) signed by its one root key."""
    signer = CryptoSigner.generate_ed25519()
    root = Root(expires=datetime.now(UTC).replace(microsecond=0) + timedelta(days=30), consistent_snapshot=True)
    for role in (Root.type, "targets", Snapshot.type, Timestamp.type):
        root.add_key(signer.public_key, role)
    md = Metadata(root)
    md.sign(signer)
    path = tmp_path / "1.root.json"
    md.to_file(str(path))
    return path, md, signer


def test_a_real_root_is_accepted(tmp_path: Path) -> None:
    path, _, _ = _root(tmp_path)
    assert load_trusted_root(path) == path.read_bytes()
    index = VerifiedIndex(INDEX, path.read_bytes(), tmp_path / "cache")  # python-tuf loads it: no network
    assert index.metadata_url == INDEX + "tuf/metadata/"
    assert (tmp_path / "cache" / "metadata" / "root_history" / "1.root.json").read_bytes() == path.read_bytes()


def test_other_metadata_is_not_a_root(tmp_path: Path) -> None:
    _, _, signer = _root(tmp_path)
    timestamp = Metadata(Timestamp(expires=datetime.now(UTC) + timedelta(days=1), snapshot_meta=MetaFile(1)))
    timestamp.sign(signer)
    path = tmp_path / "timestamp.json"
    timestamp.to_file(str(path))
    with pytest.raises(ClientError) as caught:
        load_trusted_root(path)
    assert str(caught.value).startswith(f"--root {path} is TUF timestamp metadata, not root metadata: ")


@pytest.mark.parametrize(("content", "says"), [
    (b'{"projects": []}', "is not TUF metadata (JSON without 'signed' and 'signatures')"),
    (b"[1, 2]", "is not TUF metadata (JSON without 'signed' and 'signatures')"),
    (b"<html></html>", "is not TUF metadata (not JSON)"),
    (b"\xff\xfe", "is not TUF metadata (not JSON)"),
    (b'{"signed": {"_type": "root"}, "signatures": []}', "is not valid TUF metadata (Failed to deserialize"),
])
def test_what_is_not_tuf_metadata_is_named(tmp_path: Path, content: bytes, says: str) -> None:
    path = tmp_path / "root.json"
    path.write_bytes(content)
    with pytest.raises(ClientError) as caught:
        load_trusted_root(path)
    message = str(caught.value)
    assert message.startswith(f"--root {path} {says}"), message
    assert "1.root.json" in message and "\n" not in message


def test_missing_and_unreadable_roots(tmp_path: Path) -> None:
    with pytest.raises(ClientError, match=r"does not exist: give the index's root metadata"):
        load_trusted_root(tmp_path / "nope.json")
    with pytest.raises(ClientError, match=r"is a directory, not a file"):
        load_trusted_root(tmp_path)
    locked = tmp_path / "locked.json"
    locked.write_text("{}")
    locked.chmod(0)
    try:
        if locked.stat().st_mode & 0o777 == 0 and not _can_read(locked):
            with pytest.raises(ClientError, match=r"cannot be read \(Permission denied\): check its permissions"):
                load_trusted_root(locked)
        else:  # running as root: the file is readable whatever its mode, and it is not metadata
            with pytest.raises(ClientError, match=r"is not TUF metadata"):
                load_trusted_root(locked)
    finally:
        locked.chmod(0o600)


def _can_read(path: Path) -> bool:
    try:
        path.read_bytes()
        return True
    except PermissionError:
        return False


def test_a_root_not_signed_by_its_own_keys_is_refused(tmp_path: Path) -> None:
    path, md, _ = _root(tmp_path)
    document = json.loads(path.read_bytes())
    document["signed"]["expires"] = "2099-01-01T00:00:00Z"  # the signature no longer covers it
    with pytest.raises(ClientError) as caught:
        VerifiedIndex(INDEX, json.dumps(document).encode(), tmp_path / "cache", root_label=f"--root {path}")
    assert str(caught.value) == (f"--root {path} cannot be trusted (root was signed by 0/1 keys): give the index's "
                                 "root metadata as published (1.root.json), unmodified")


# -- the index URL ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("given", "expected"), [
    ("https://pypi.example.org", INDEX),
    ("https://pypi.example.org/", INDEX),
    ("https://pypi.example.org/simple/", INDEX),
    ("https://pypi.example.org/simple", INDEX),
    ("http://127.0.0.1:8080/mirror/simple/", "http://127.0.0.1:8080/mirror/"),
    ("  http://127.0.0.1:8080  ", "http://127.0.0.1:8080/"),
    ("https://pypi.example.org/simplex/", "https://pypi.example.org/simplex/"),
])
def test_index_urls_are_cut_back_to_the_base(given: str, expected: str) -> None:
    assert normalize_index_url(given) == expected


@pytest.mark.parametrize("given", ["ftp://pypi.example.org/", "pypi.example.org", "/simple/", "https://",
                                   "https://pypi.example.org/?x=1", "https://pypi.example.org/#simple"])
def test_index_urls_that_are_not_a_base_url(given: str) -> None:
    with pytest.raises(ClientError) as caught:
        normalize_index_url(given)
    assert str(caught.value).startswith(f"--index {given.strip()!r} ")
    assert "give the index's base URL" in str(caught.value)


def test_failures_are_described_with_their_causes_on_one_line() -> None:
    try:
        try:
            raise ConnectionRefusedError("[Errno 111] Connection\nrefused")
        except ConnectionRefusedError as inner:
            raise RuntimeError("Failed to download http://x/timestamp.json") from inner
    except RuntimeError as outer:
        assert describe_failure(outer) == ("Failed to download http://x/timestamp.json ([Errno 111] Connection "
                                           "refused)")
    assert one_line("a\r\nb\tc\x00d" + "x" * 700).startswith("a b c d")
    assert len(one_line("x" * 700)) == 600


# -- NAME==VERSION -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "name", "version"), [
    ("demo-pkg==1.0.0", "demo-pkg", "1.0.0"),
    ("Demo_Pkg == 1.0", "demo-pkg", "1.0"),
    ("zope.interface==6.0.post1", "zope-interface", "6.0.post1"),
])
def test_specs_that_pin_one_version(spec: str, name: str, version: str) -> None:
    assert parse_spec(spec) == (name, Version(version))


@pytest.mark.parametrize(("spec", "says"), [
    ("demo-pkg", "'demo-pkg' is not NAME==VERSION"),
    ("demo-pkg>=1.0", "'demo-pkg>=1.0' is not NAME==VERSION"),
    ("demo-pkg==", "'demo-pkg==' is not NAME==VERSION"),
    ("-pkg==1.0", "'-pkg==1.0' is not NAME==VERSION"),
    ("demo-==1.0", "'demo-==1.0' is not NAME==VERSION"),
    ("demo-pkg==one", "'one' in 'demo-pkg==one' is not a valid version (PEP 440)"),
])
def test_specs_that_do_not(spec: str, says: str) -> None:
    with pytest.raises(ClientError) as caught:
        parse_spec(spec)
    assert str(caught.value).startswith(says) and "bastion download demo-pkg==1.0.0" in str(caught.value)


# -- content negotiation -----------------------------------------------------------------------------
@pytest.mark.parametrize(("accept", "chosen"), [
    ("application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01",
     SIMPLE_JSON),  # pip
    ("application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01",
     SIMPLE_JSON),  # uv
    ("application/vnd.pypi.simple.latest+json", SIMPLE_JSON),
    (None, TEXT_HTML),
    ("", TEXT_HTML),
    ("*/*", TEXT_HTML),
    ("text/html", TEXT_HTML),
    ("application/vnd.pypi.simple.v1+html", "application/vnd.pypi.simple.v1+html"),
    ("application/*", "application/vnd.pypi.simple.v1+html"),
    ("application/vnd.pypi.simple.v1+json;q=0.5, text/html;q=0.6", TEXT_HTML),
    ("image/png", None),
    ("text/html;q=0, application/vnd.pypi.simple.v1+json;q=0", None),
])
def test_negotiation(accept: str | None, chosen: str | None) -> None:
    assert negotiate(accept) == chosen


# -- reading verified pages --------------------------------------------------------------------------
def _pages() -> dict[str, bytes]:
    """Both formats of a project page, rendered by the index's own renderer."""
    moment = datetime(2026, 1, 1, tzinfo=UTC)

    def file(filename: str, path: str, metadata: str | None) -> FileView:
        return FileView(filename=filename, path=path, packagetype="bdist_wheel", python_version="py3", size=10,
                        md5_digest="0" * 32, sha256_digest="a" * 64, blake2_256_digest="b" * 64,
                        requires_python=None, metadata_sha256=metadata, upload_time=moment, yanked=False,
                        yanked_reason=None)

    release = ReleaseView(id=1, version="1.0", yanked=False, yanked_reason=None, requires_python=None, files=[
        file("demo_pkg-1.0-py3-none-any.whl", "packages/aa/bb/cc/demo_pkg-1.0-py3-none-any.whl", "c" * 64),
        file("demo_pkg-1.0.tar.gz", "packages/dd/ee/ff/demo_pkg-1.0.tar.gz", None),
    ])
    project = ProjectView(id=1, name="Demo_Pkg", normalized_name="demo-pkg", last_serial=1, releases=[release])
    return {page.key.rsplit(".", 1)[1]: page.body for page in render_simple_detail(project)}


def test_core_metadata_digests_are_read_from_either_format() -> None:
    pages = _pages()
    expected = {"packages/aa/bb/cc/demo_pkg-1.0-py3-none-any.whl": "c" * 64}
    assert core_metadata_hashes(pages["json"], "json", "demo-pkg", INDEX) == expected
    assert core_metadata_hashes(pages["html"], "html", "demo-pkg", INDEX) == expected


@pytest.mark.parametrize(("link", "target"), [
    ("../../packages/aa/x-1.0.whl#sha256=00", "packages/aa/x-1.0.whl"),
    ("../../packages/aa/x%2B1-1.0.whl", "packages/aa/x+1-1.0.whl"),
    (INDEX + "packages/aa/x-1.0.whl", "packages/aa/x-1.0.whl"),
    ("https://elsewhere.example.org/packages/aa/x-1.0.whl", None),
    ("../../../../etc/passwd", None),
])
def test_links_resolve_to_target_paths_on_the_index_only(link: str, target: str | None) -> None:
    assert target_path_of_link(link, "x", INDEX) == target


# -- choosing a file ---------------------------------------------------------------------------------
def _entries(*names: str) -> list[dict[str, object]]:
    return [{"filename": name, "url": f"../../packages/{name}"} for name in names]


def test_the_wheel_this_interpreter_prefers_then_the_sdist() -> None:
    best = next(iter(sys_tags()))
    native = f"demo_pkg-1.0-{best.interpreter}-{best.abi}-{best.platform}.whl"
    files = _entries("demo_pkg-1.0.tar.gz", "demo_pkg-1.0-py3-none-any.whl", native, "demo_pkg-1.0-cp27-cp27m-win32.whl",
                     "demo_pkg-2.0-py3-none-any.whl")
    assert choose_file(files, Version("1.0"), None)["filename"] == native
    assert choose_file(files[:2], Version("1.0"), None)["filename"] == "demo_pkg-1.0-py3-none-any.whl"
    assert choose_file(files[:1] + files[3:4], Version("1.0.0"), None)["filename"] == "demo_pkg-1.0.tar.gz"
    assert choose_file(files, Version("1.0"), "demo_pkg-1.0-cp27-cp27m-win32.whl")["filename"] == \
        "demo_pkg-1.0-cp27-cp27m-win32.whl"


def test_nothing_to_choose() -> None:
    files = _entries("demo_pkg-1.0-cp27-cp27m-win32.whl", "demo_pkg-2.0.tar.gz")
    with pytest.raises(NotFound, match=r"^no wheel of version 1.0 fits this interpreter and there is no sdist "
                                       r"\(files: demo_pkg-1.0-cp27-cp27m-win32.whl\); pass --file FILENAME"):
        choose_file(files, Version("1.0"), None)
    with pytest.raises(NotFound, match=r"^no file of version 3.0$"):
        choose_file(files, Version("3.0"), None)
    with pytest.raises(NotFound, match=r"^no file named x.whl \(files of version 2.0: demo_pkg-2.0.tar.gz\)$"):
        choose_file(files, Version("2.0"), "x.whl")
