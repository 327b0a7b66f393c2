"""Hostile and broken archives sent to POST /legacy/: each is refused with a message naming the
problem, and leaves nothing behind (no row, no blob, no page, no temp file)."""

from __future__ import annotations

import gzip
import io
import random
import stat
import struct
import tarfile
import warnings
import zipfile
from pathlib import Path

import pytest

from bastion.services import Bastion
from tests.conftest import make_user, post_upload
from tests.distbuilder import make_sdist, make_wheel, metadata_text, upload_form
from tests.unit.uploads import accepted, refused

WHEEL = "hello_world-1.0-py3-none-any.whl"
SDIST = "hello_world-1.0.tar.gz"
DIST_INFO = "hello_world-1.0.dist-info"
TOP = "hello_world-1.0"


def _wheel_members(tmp_path: Path, **kwargs) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    """The members of a valid wheel, in order (built by distbuilder, then read back)."""
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    path = make_wheel(scratch, "hello-world", "1.0", **kwargs)
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    path.unlink()
    return members


def write_zip(path: Path, entries: list[tuple[str | zipfile.ZipInfo, bytes]],
              compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names; that is the point
        with zipfile.ZipFile(path, "w", compression) as archive:
            for name, data in entries:
                archive.writestr(name, data)
    return path


def hostile_wheel(tmp_path: Path, *extra: tuple[str | zipfile.ZipInfo, bytes]) -> Path:
    """A valid wheel plus ``extra`` members."""
    entries: list[tuple[str | zipfile.ZipInfo, bytes]] = list(_wheel_members(tmp_path).items())
    return write_zip(tmp_path / WHEEL, entries + list(extra))


def hostile_sdist(tmp_path: Path, *extra: tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]) -> Path:
    """A valid sdist plus ``extra`` members (TarInfo for links and special files)."""

    def tweak(archive: tarfile.TarFile) -> None:
        for item in extra:
            if isinstance(item, tuple):
                info, data = item
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            else:
                archive.addfile(item)

    return make_sdist(tmp_path, "hello-world", "1.0", tweak=tweak)


def tar_info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o644
    return info


def write_tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tar_info(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _refuse(client, bastion: Bastion, path: Path, status: int, *needles: str, name: str = "hello-world",  # type: ignore[no-untyped-def]
            version: str = "1.0", **form: str):
    token = make_user(bastion, "alice")
    return refused(client, bastion, token, path, upload_form(path, name, version, **form), status, *needles)


# -- not the archive the filetype promises ---------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b"this is not a zip file at all\n" * 10, gzip.compress(b"not a tar"), b"PK\x03\x04" + b"\x00" * 60],
    ids=["text", "gzip", "truncated-zip"],
)
def test_wheel_that_is_not_a_zip_is_400(client, bastion, tmp_path, content) -> None:
    path = tmp_path / WHEEL
    path.write_bytes(content)
    _refuse(client, bastion, path, 400, f"Invalid distribution file '{WHEEL}': a wheel must be a zip archive.")


def test_sdist_sent_as_wheel_is_400(client, bastion, tmp_path) -> None:
    sdist = make_sdist(tmp_path, "hello-world", "1.0")
    path = tmp_path / WHEEL
    path.write_bytes(sdist.read_bytes())
    _refuse(client, bastion, path, 400, "a wheel must be a zip archive")


def _plain_tar(tmp_path: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        data = metadata_text("hello-world", "1.0").encode()
        info = tar_info(f"{TOP}/PKG-INFO")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _bz2_tar(tmp_path: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:bz2") as archive:
        data = metadata_text("hello-world", "1.0").encode()
        info = tar_info(f"{TOP}/PKG-INFO")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize(
    "make_content",
    [
        _plain_tar,
        _bz2_tar,
        lambda tmp_path: gzip.compress(b"gzip, but no tar inside" * 40),
        lambda tmp_path: make_wheel(tmp_path, "hello-world", "1.0").read_bytes(),
        lambda tmp_path: b"",
    ],
    ids=["uncompressed-tar", "bzip2-tar", "gzip-not-tar", "zip", "empty"],
)
def test_sdist_that_is_not_a_gzip_tar_is_400(client, bastion, tmp_path, make_content) -> None:
    content = make_content(tmp_path)
    path = tmp_path / SDIST
    path.write_bytes(content)
    if content:
        _refuse(client, bastion, path, 400,
                f"Invalid distribution file '{SDIST}': a .tar.gz sdist must be a gzip-compressed tar archive.")
    else:
        _refuse(client, bastion, path, 400, f"Invalid distribution file '{SDIST}': the file is empty.")


def test_empty_wheel_is_400(client, bastion, tmp_path) -> None:
    path = tmp_path / WHEEL
    path.write_bytes(b"")
    _refuse(client, bastion, path, 400, f"Invalid distribution file '{WHEEL}': the file is empty.")


def test_truncated_gzip_tar_is_400(client, bastion, tmp_path) -> None:
    path = make_sdist(tmp_path, "hello-world", "1.0", files={"data.bin": random.randbytes(64 * 1024)})
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _refuse(client, bastion, path, 400, f"Invalid distribution file '{SDIST}': not a valid .tar.gz archive")


def test_zip_with_corrupt_metadata_stream_is_400(client, bastion, tmp_path) -> None:
    members = _wheel_members(tmp_path)
    path = write_zip(tmp_path / WHEEL, list(members.items()))
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{DIST_INFO}/METADATA")
    raw = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode())
    raw[start:start + info.compress_size] = b"\xff" * info.compress_size  # not deflate data
    path.write_bytes(bytes(raw))
    _refuse(client, bastion, path, 400, f"Invalid wheel '{WHEEL}': corrupt zip member")


# -- zip members -----------------------------------------------------------------------------------


def test_duplicate_zip_member_names_are_400(client, bastion, tmp_path) -> None:
    path = hostile_wheel(tmp_path, (f"{DIST_INFO}/METADATA", metadata_text("evil-project", "6.6.6").encode()))
    _refuse(client, bastion, path, 400, f"Invalid distribution file '{WHEEL}': duplicate member names in zip.")


@pytest.mark.parametrize(
    ("member", "problem"),
    [
        ("/etc/cron.d/evil", "an absolute path '/etc/cron.d/evil'"),
        ("hello_world/../../evil.py", "a '..' path component in 'hello_world/../../evil.py'"),
        ("../evil.py", "a '..' path component in '../evil.py'"),
        ("C:/Windows/evil.dll", "an absolute path 'C:/Windows/evil.dll'"),
        ("hello_world\\..\\..\\evil.py", "a backslash in member name 'hello_world\\..\\..\\evil.py'"),
    ],
    ids=["absolute", "dotdot-inside", "dotdot-top", "drive", "backslash"],
)
def test_zip_member_path_escaping_is_400(client, bastion, tmp_path, member, problem) -> None:
    path = hostile_wheel(tmp_path, (member, b"pwned = True\n"))
    _refuse(client, bastion, path, 400, f"Invalid distribution file '{WHEEL}': {problem}.")


def test_zip_symlink_is_400(client, bastion, tmp_path) -> None:
    link = zipfile.ZipInfo("hello_world/passwd")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    path = hostile_wheel(tmp_path, (link, b"/etc/passwd"))
    _refuse(client, bastion, path, 400, f"Invalid distribution file '{WHEEL}': symlink 'hello_world/passwd' in zip.")


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA], ids=["bzip2", "lzma"])
def test_unsupported_zip_compression_is_400(client, bastion, tmp_path, method) -> None:
    path = tmp_path / WHEEL
    members = _wheel_members(tmp_path)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data, compress_type=method if name.endswith("__init__.py") else zipfile.ZIP_DEFLATED)
    _refuse(client, bastion, path, 400, "member 'hello_world/__init__.py' uses an unsupported compression method",
            "only stored and deflated are allowed")


def _central_record(raw: bytes, name: str) -> int:
    offset = raw.index(b"PK\x01\x02")
    while raw[offset + 46:offset + 46 + len(name.encode())] != name.encode():
        offset = raw.index(b"PK\x01\x02", offset + 4)
    return offset


def test_encrypted_zip_member_is_400(client, bastion, tmp_path) -> None:
    path = write_zip(tmp_path / WHEEL, list(_wheel_members(tmp_path).items()))
    name = f"{DIST_INFO}/METADATA"
    with zipfile.ZipFile(path) as archive:
        local = archive.getinfo(name).header_offset
    raw = bytearray(path.read_bytes())
    # Set the "encrypted" flag bit in the member's local header and central directory record.
    raw[local + 6] |= 0x1
    raw[_central_record(bytes(raw), name) + 8] |= 0x1
    path.write_bytes(bytes(raw))
    with zipfile.ZipFile(path) as archive:
        assert archive.getinfo(name).flag_bits & 0x1
    _refuse(client, bastion, path, 400, f"Invalid distribution file '{WHEEL}': member '{name}' is encrypted.")


def test_zip_with_data_descriptors_is_400(client, bastion, tmp_path) -> None:
    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self.buffer = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, data) -> int:  # type: ignore[no-untyped-def]
            self.buffer += data
            return len(data)

    sink = Unseekable()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as archive:  # streamed: sizes after the data
        for name, data in _wheel_members(tmp_path).items():
            with archive.open(name, "w") as handle:
                handle.write(data)
    path = tmp_path / WHEEL
    path.write_bytes(bytes(sink.buffer))
    _refuse(client, bastion, path, 400, "uses a data descriptor; rebuild the wheel with a current build tool")


# -- ZIP confusion: what the central directory says vs what the local headers hold ---------------


def test_zip_with_data_prepended_is_400(client, bastion, tmp_path) -> None:
    wheel = make_wheel(tmp_path, "hello-world", "1.0")
    wheel.write_bytes(b"#!/bin/sh\necho surprise\nexit 0\n" + wheel.read_bytes())
    _refuse(client, bastion, wheel, 400, "Invalid distribution file: data precedes the zip archive.")


def test_zip_with_data_hidden_between_entries_is_400(client, bastion, tmp_path) -> None:
    path = tmp_path / WHEEL
    members = list(_wheel_members(tmp_path).items())
    with open(path, "wb") as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
        for index, (name, data) in enumerate(members):
            archive.writestr(name, data)
            if index == 0:  # smuggle bytes after the first entry, outside every member
                handle.write(b"HIDDEN PAYLOAD " * 8)
                archive.start_dir = handle.tell()
    with zipfile.ZipFile(path) as archive:  # still a valid zip to zipfile's eyes
        assert archive.testzip() is None
    _refuse(client, bastion, path, 400, f"Invalid distribution file '{WHEEL}': zip entries are not contiguous",
            "hidden data between entries")


def test_zip_local_header_name_differing_from_central_directory_is_400(client, bastion, tmp_path) -> None:
    path = write_zip(tmp_path / WHEEL, list(_wheel_members(tmp_path).items()))
    raw = path.read_bytes()
    central = raw.index(b"PK\x01\x02")
    local = raw.index(b"hello_world/__init__.py")
    assert local < central
    # The local header names a different file than the central directory does.
    patched = raw[:local] + b"hello_world/__evil__.py" + raw[local + len(b"hello_world/__init__.py"):]
    path.write_bytes(patched)
    _refuse(client, bastion, path, 400,
            "zip local header name does not match the central directory for 'hello_world/__init__.py' (ZIP confusion)")


def test_zip_with_overlapping_entries_is_400(client, bastion, tmp_path) -> None:
    """Two central-directory records pointing at the same local entry (the overlapping zip bomb)."""
    path = write_zip(tmp_path / WHEEL, list(_wheel_members(tmp_path).items()))
    raw = bytearray(path.read_bytes())
    central = raw.index(b"PK\x01\x02")
    second = raw.index(b"PK\x01\x02", central + 4)
    first_offset = struct.unpack_from("<L", raw, central + 42)[0]
    struct.pack_into("<L", raw, second + 42, first_offset)
    path.write_bytes(bytes(raw))
    _refuse(client, bastion, path, 400, f"Invalid distribution file '{WHEEL}': zip entries are not contiguous")


# -- wheel contents ----------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["METADATA", "WHEEL", "RECORD"])
def test_wheel_missing_required_dist_info_file_is_400(client, bastion, tmp_path, missing) -> None:
    path = make_wheel(tmp_path, "hello-world", "1.0", omit=(missing,))
    _refuse(client, bastion, path, 400, f"Invalid wheel '{WHEEL}': {DIST_INFO}/{missing} is missing.")


@pytest.mark.parametrize(
    ("files", "found"),
    [
        ({"evil_project-6.6.dist-info/METADATA": metadata_text("evil-project", "6.6").encode()}, 2),
        ({"evil_project-6.6.dist-info/RECORD": b""}, 2),
    ],
    ids=["second-metadata", "second-dist-info"],
)
def test_wheel_with_two_dist_info_directories_is_400(client, bastion, tmp_path, files, found) -> None:
    path = make_wheel(tmp_path, "hello-world", "1.0", files=files)
    _refuse(client, bastion, path, 400,
            f"Invalid wheel '{WHEEL}': expected exactly one top-level .dist-info directory, found {found}.")


def test_wheel_without_dist_info_is_400(client, bastion, tmp_path) -> None:
    path = write_zip(tmp_path / WHEEL, [("hello_world/__init__.py", b"")])
    _refuse(client, bastion, path, 400, "expected exactly one top-level .dist-info directory, found 0.")


def test_wheel_with_oversized_metadata_is_400(client, bastion, tmp_path) -> None:
    metadata = metadata_text("hello-world", "1.0", description="x" * (4 * 1024 * 1024 + 1))
    path = make_wheel(tmp_path, "hello-world", "1.0", metadata=metadata)
    _refuse(client, bastion, path, 400, f"Invalid wheel '{WHEEL}': {DIST_INFO}/METADATA is larger than 4194304 bytes.")


def test_sdist_with_oversized_pkg_info_is_400(client, bastion, tmp_path) -> None:
    metadata = metadata_text("hello-world", "1.0", description="x" * (4 * 1024 * 1024 + 1))
    path = make_sdist(tmp_path, "hello-world", "1.0", metadata=metadata)
    _refuse(client, bastion, path, 400, f"Invalid sdist '{SDIST}': PKG-INFO is too large.")


@pytest.mark.parametrize("wheel_version", ["2.0", "0.9", ""])
def test_wheel_with_unsupported_wheel_version_is_400(client, bastion, tmp_path, wheel_version) -> None:
    path = make_wheel(tmp_path, "hello-world", "1.0", wheel_version=wheel_version)
    _refuse(client, bastion, path, 400,
            f"Invalid wheel '{WHEEL}': unsupported Wheel-Version '{wheel_version}' in WHEEL (expected 1.x).")


@pytest.mark.parametrize(
    "entry_points",
    [
        "console_scripts\nhello = hello_world:main\n",
        "hello = hello_world:main\n[console_scripts]\n",
        "[console_scripts\nhello = hello_world:main\n",
        "[console_scripts]\nhello = hello_world:main\n[console_scripts]\nbye = hello_world:bye\n",
        "[console_scripts]\nhello = a:b\nhello = c:d\n",
        b"[console_scripts]\nhello = hello_world:m\xe9\xff\n",
    ],
    ids=["no-section", "entry-before-section", "unclosed-section", "duplicate-section", "duplicate-key",
         "not-utf8"],
)
def test_wheel_with_unparseable_entry_points_is_400(client, bastion, tmp_path, entry_points) -> None:
    raw = entry_points if isinstance(entry_points, bytes) else entry_points.encode()
    path = make_wheel(tmp_path, "hello-world", "1.0", files={f"{DIST_INFO}/entry_points.txt": raw})
    _refuse(client, bastion, path, 400, f"Invalid wheel '{WHEEL}': entry_points.txt does not parse")


def test_wheel_with_valid_entry_points_is_accepted(client, bastion, tmp_path) -> None:
    token = make_user(bastion, "alice")
    path = make_wheel(tmp_path, "hello-world", "1.0",
                      entry_points="[console_scripts]\nhello = hello_world:main\n\n[hello.plugins]\nx=y:z\n")
    accepted(client, token, path, "hello-world", "1.0")


# -- tar members ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("member", "problem"),
    [
        ("/etc/cron.d/evil", "an absolute path '/etc/cron.d/evil'"),
        (f"{TOP}/../../evil.py", f"a '..' path component in '{TOP}/../../evil.py'"),
        ("../evil.py", "a '..' path component in '../evil.py'"),
        (f"{TOP}\\..\\evil.py", f"a backslash in member name '{TOP}\\..\\evil.py'"),
    ],
    ids=["absolute", "dotdot-inside", "dotdot-top", "backslash"],
)
def test_tar_member_path_escaping_is_400(client, bastion, tmp_path, member, problem) -> None:
    path = hostile_sdist(tmp_path, (tar_info(member), b"pwned = True\n"))
    _refuse(client, bastion, path, 400, f"Invalid distribution file '{SDIST}': {problem}.")


@pytest.mark.parametrize(
    ("kind", "name", "target"),
    [
        (tarfile.SYMTYPE, f"{TOP}/passwd", "/etc/passwd"),
        (tarfile.SYMTYPE, f"{TOP}/up", "../../etc/passwd"),
        (tarfile.SYMTYPE, f"{TOP}/sibling", "../other-1.0/setup.py"),
        (tarfile.SYMTYPE, f"{TOP}/deep/link", "../../../x"),
        (tarfile.LNKTYPE, f"{TOP}/passwd", "/etc/passwd"),
        (tarfile.LNKTYPE, f"{TOP}/up", "../etc/passwd"),
        (tarfile.LNKTYPE, f"{TOP}/other", "other-1.0/setup.py"),
    ],
    ids=["sym-absolute", "sym-dotdot", "sym-sibling", "sym-deep", "hard-absolute", "hard-dotdot", "hard-other-top"],
)
def test_tar_link_escaping_the_archive_is_400(client, bastion, tmp_path, kind, name, target) -> None:
    path = hostile_sdist(tmp_path, tar_info(name, kind, target))
    _refuse(client, bastion, path, 400, f"Invalid sdist '{SDIST}': link '{name}' points outside the archive.")


def test_tar_links_inside_the_archive_are_accepted(client, bastion, tmp_path) -> None:
    token = make_user(bastion, "alice")
    path = hostile_sdist(
        tmp_path,
        tar_info(f"{TOP}/docs/pyproject.toml", tarfile.SYMTYPE, "../pyproject.toml"),
        tar_info(f"{TOP}/copy.toml", tarfile.LNKTYPE, f"{TOP}/pyproject.toml"),
    )
    accepted(client, token, path, "hello-world", "1.0")


@pytest.mark.parametrize(
    ("kind", "label"),
    [(tarfile.CHRTYPE, "chr"), (tarfile.BLKTYPE, "blk"), (tarfile.FIFOTYPE, "fifo")],
    ids=["char-device", "block-device", "fifo"],
)
def test_tar_device_or_fifo_member_is_400(client, bastion, tmp_path, kind, label) -> None:
    info = tar_info(f"{TOP}/{label}", kind)
    info.devmajor, info.devminor = 1, 3
    path = hostile_sdist(tmp_path, info)
    _refuse(client, bastion, path, 400, f"Invalid sdist '{SDIST}': device or fifo member '{TOP}/{label}'.")


@pytest.mark.parametrize("other", ["evil-1.0/setup.py", "setup.py"], ids=["second-dir", "top-level-file"])
def test_sdist_with_two_top_level_entries_is_400(client, bastion, tmp_path, other) -> None:
    path = hostile_sdist(tmp_path, (tar_info(other), b"import os\n"))
    _refuse(client, bastion, path, 400, f"Invalid sdist '{SDIST}': all members must be inside one top-level directory.")


@pytest.mark.parametrize(
    "members",
    [
        {f"{TOP}/pyproject.toml": b"[build-system]\n"},
        {f"{TOP}/pyproject.toml": b"", f"{TOP}/src/PKG-INFO": metadata_text("hello-world", "1.0").encode()},
    ],
    ids=["none", "only-nested"],
)
def test_sdist_without_pkg_info_is_400(client, bastion, tmp_path, members) -> None:
    path = write_tar_gz(tmp_path / SDIST, members)
    _refuse(client, bastion, path, 400, f"Invalid sdist '{SDIST}': {TOP}/PKG-INFO is missing.")


def test_sdist_with_no_members_is_400(client, bastion, tmp_path) -> None:
    path = write_tar_gz(tmp_path / SDIST, {})
    _refuse(client, bastion, path, 400, f"Invalid sdist '{SDIST}': the archive is empty.")


# -- limits: decompression bombs, member count, file and project size ---------------------------


BOMB_LIMITS = dict(max_uncompressed_size=2 * 1024 * 1024, bomb_floor=256 * 1024, max_compression_ratio=20)


def test_zip_bomb_over_the_size_limit_is_400(bastion_with, tmp_path) -> None:
    bastion, client = bastion_with(**BOMB_LIMITS)
    path = make_wheel(tmp_path, "hello-world", "1.0", files={"hello_world/zeros.bin": bytes(3 * 1024 * 1024)})
    assert path.stat().st_size < 64 * 1024
    _refuse(client, bastion, path, 400,
            f"Invalid distribution file '{WHEEL}': it unpacks to more than 2097152 bytes (decompression bomb limit).")


def test_zip_bomb_over_the_ratio_limit_is_400(bastion_with, tmp_path) -> None:
    bastion, client = bastion_with(**BOMB_LIMITS)
    path = make_wheel(tmp_path, "hello-world", "1.0", files={"hello_world/zeros.bin": bytes(1024 * 1024)})
    _refuse(client, bastion, path, 400,
            f"Invalid distribution file '{WHEEL}': its compression ratio exceeds 20:1 (decompression bomb limit).")


def test_highly_compressible_archive_under_the_floor_is_accepted(bastion_with, tmp_path) -> None:
    bastion, client = bastion_with(**BOMB_LIMITS)
    token = make_user(bastion, "alice")
    path = make_wheel(tmp_path, "hello-world", "1.0", files={"hello_world/zeros.bin": bytes(200 * 1024)})
    accepted(client, token, path, "hello-world", "1.0")


def test_tar_bomb_over_the_size_limit_is_400(bastion_with, tmp_path) -> None:
    bastion, client = bastion_with(**BOMB_LIMITS)
    path = make_sdist(tmp_path, "hello-world", "1.0", files={"zeros.bin": bytes(3 * 1024 * 1024)})
    _refuse(client, bastion, path, 400,
            f"Invalid distribution file '{SDIST}': it unpacks to more than 2097152 bytes (decompression bomb limit).")


def test_tar_bomb_over_the_ratio_limit_is_400(bastion_with, tmp_path) -> None:
    bastion, client = bastion_with(**BOMB_LIMITS)
    path = make_sdist(tmp_path, "hello-world", "1.0", files={"zeros.bin": bytes(1024 * 1024)})
    _refuse(client, bastion, path, 400,
            f"Invalid distribution file '{SDIST}': its compression ratio exceeds 20:1 (decompression bomb limit).")


def _pax_bomb(path: Path, sizes: list[int], *, first: bool) -> Path:
    """A valid sdist whose members are tiny, plus members carrying huge pax headers (first or last)."""
    bombs = []
    for index, size in enumerate(sizes):
        info = tar_info(f"{TOP}/padding{index}")
        info.pax_headers = {"comment": "x" * size}
        bombs.append(info)
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as archive:
        if first:
            for info in bombs:
                archive.addfile(info, io.BytesIO(b""))
        for name, data in {f"{TOP}/PKG-INFO": metadata_text("hello-world", "1.0").encode()}.items():
            info = tar_info(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        if not first:
            for info in bombs:
                archive.addfile(info, io.BytesIO(b""))
    assert path.stat().st_size < 64 * 1024
    return path


@pytest.mark.parametrize(
    ("sizes", "first"),
    [([8 * 1024 * 1024], True), ([8 * 1024 * 1024], False), ([1024 * 1024] * 4, False)],
    ids=["one-huge-header-first", "one-huge-header-last", "many-large-headers"],
)
def test_tar_bomb_hidden_in_pax_headers_is_400(bastion_with, tmp_path, sizes, first) -> None:
    """Member sizes stay tiny; the decompressed stream does not."""
    bastion, client = bastion_with(**BOMB_LIMITS, max_archive_members=100)
    path = _pax_bomb(tmp_path / SDIST, sizes, first=first)
    _refuse(client, bastion, path, 400, "Invalid distribution file", "decompression bomb limit")


def test_sdist_with_ordinary_pax_headers_is_accepted(bastion_with, tmp_path) -> None:
    bastion, client = bastion_with(**BOMB_LIMITS, max_archive_members=100)
    token = make_user(bastion, "alice")
    path = _pax_bomb(tmp_path / SDIST, [300, 5000], first=True)
    accepted(client, token, path, "hello-world", "1.0")


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_archive_with_too_many_members_is_400(bastion_with, tmp_path, kind) -> None:
    bastion, client = bastion_with(max_archive_members=20)
    files = {f"hello_world/m{i}.py": b"" for i in range(25)}
    if kind == "wheel":
        path = make_wheel(tmp_path, "hello-world", "1.0", files=files)
    else:
        path = make_sdist(tmp_path, "hello-world", "1.0", files=files)
    _refuse(client, bastion, path, 400, f"Invalid distribution file '{path.name}': it has more than 20 members.")


def test_file_over_max_file_size_is_413(bastion_with, tmp_path) -> None:
    bastion, client = bastion_with(max_file_size=2048)
    path = make_wheel(tmp_path, "hello-world", "1.0", files={"hello_world/data.bin": random.randbytes(4096)})
    assert path.stat().st_size > 2048
    _refuse(client, bastion, path, 413, "File too large. Limit for this index is 2048 bytes;",
            f"'{WHEEL}' is larger.", "Ask an index admin to raise max_file_size.")


def test_file_over_max_file_size_message_states_only_what_is_known(bastion_with, tmp_path) -> None:
    """The upload is refused while it streams in: the message must not claim a size it never saw."""
    bastion, client = bastion_with(max_file_size=1024 * 1024)
    path = make_wheel(tmp_path, "hello-world", "1.0", files={"hello_world/data.bin": random.randbytes(3 * 1024 * 1024)})
    response = _refuse(client, bastion, path, 413, "File too large. Limit for this index is 1 MiB;",
                       f"'{WHEEL}' is larger.")
    assert "2097152" not in response.text


def test_body_far_over_max_file_size_is_413_before_reading_it(bastion_with, tmp_path) -> None:
    bastion, client = bastion_with(max_file_size=1024)
    path = tmp_path / WHEEL
    path.write_bytes(bytes(4 * 1024 * 1024 + 2048))  # over max_file_size + the form-field allowance
    _refuse(client, bastion, path, 413, "File too large. Limit for this index is 1024 bytes.")


def test_project_over_max_project_size_is_413(bastion_with, tmp_path) -> None:
    first = make_wheel(tmp_path, "hello-world", "1.0")
    second = make_wheel(tmp_path, "hello-world", "1.1")
    bastion, client = bastion_with(max_project_size=first.stat().st_size + second.stat().st_size - 1)
    token = make_user(bastion, "alice")
    accepted(client, token, first, "hello-world", "1.0")
    response = refused(client, bastion, token, second, upload_form(second, "hello-world", "1.1"), 413,
                       "Project size too large. Limit for project 'hello-world' total size is "
                       f"{first.stat().st_size + second.stat().st_size - 1} bytes.",
                       "Delete old files or ask an index admin to raise max_project_size.")
    assert "Project size too large" in response.headers["x-bastion-reason"]
    # Exactly at the limit is fine.
    _, client2 = bastion_with(max_project_size=first.stat().st_size + second.stat().st_size)
    accepted(client2, token, second, "hello-world", "1.1")


def test_first_file_over_max_project_size_is_413(bastion_with, tmp_path) -> None:
    path = make_wheel(tmp_path, "hello-world", "1.0")
    bastion, client = bastion_with(max_project_size=path.stat().st_size - 1)
    _refuse(client, bastion, path, 413, "Project size too large. Limit for project 'hello-world'")


def test_archive_refusals_leave_no_temporary_file(client, bastion, tmp_path) -> None:
    """The spooled copy goes away whatever happens (checked by snapshot_state in every test too)."""
    token = make_user(bastion, "alice")
    path = hostile_sdist(tmp_path, tar_info(f"{TOP}/fifo", tarfile.FIFOTYPE))
    response = post_upload(client, token, path, upload_form(path, "hello-world", "1.0"))
    assert response.status_code == 400
    assert list(bastion.tmp_dir.iterdir()) == []
