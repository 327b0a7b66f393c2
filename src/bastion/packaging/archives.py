"""Archive sanity for uploaded distributions: wheels (zip) and sdists (tar.gz, or zip before PEP 625).

Each check refuses with an ``UploadRejected`` whose message twine shows. Nothing is extracted to
disk: members are read from the archive, and the only member read in full is the core metadata.
"""

from __future__ import annotations

import configparser
import contextlib
import gzip
import posixpath
import stat
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from email.parser import BytesParser
from pathlib import Path
from typing import IO, cast

from bastion.packaging.errors import UploadRejected

MAX_METADATA_BYTES = 4 * 1024 * 1024
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
_LOCAL_SIG = b"PK\x03\x04"


class MissingPkgInfo(UploadRejected):
    """A sound sdist archive without ``<top>/PKG-INFO`` (a source tarball made by hand or by a
    code host, which PyPI took before 2012): an import may read its name and version from the
    filename instead (``bastion import --project-from-filename``)."""


@dataclass(frozen=True)
class ArchiveLimits:
    """Decompression-bomb and size limits applied to every archive."""

    max_uncompressed: int
    """Largest total of member sizes."""
    max_ratio: int
    """Largest uncompressed/compressed ratio once over ``bomb_floor``."""
    bomb_floor: int
    """Totals below this are never judged by ratio."""
    max_members: int
    """Largest member count."""


def bad_member_path(name: str) -> str | None:
    if not name or "\x00" in name:
        return "an empty or NUL-containing member name"
    if name.startswith("/") or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
        return f"an absolute path '{name}'"
    if "\\" in name:
        return f"a backslash in member name '{name}'"
    if ".." in name.split("/"):
        return f"a '..' path component in '{name}'"
    return None


def check_bomb(total: int, compressed: int, members: int, limits: ArchiveLimits, filename: str) -> None:
    if members > limits.max_members:
        raise UploadRejected(
            f"Invalid distribution file '{filename}': it has more than {limits.max_members} members."
        )
    if total > limits.max_uncompressed:
        raise UploadRejected(
            f"Invalid distribution file '{filename}': it unpacks to more than "
            f"{limits.max_uncompressed} bytes (decompression bomb limit)."
        )
    if total > limits.bomb_floor and total > limits.max_ratio * max(compressed, 1):
        raise UploadRejected(
            f"Invalid distribution file '{filename}': its compression ratio exceeds "
            f"{limits.max_ratio}:1 (decompression bomb limit)."
        )


# Former private names, kept for callers that still use them.
_bad_member_path = bad_member_path
_check_bomb = check_bomb


class _BoundedGzip(gzip.GzipFile):
    """An sdist's decompressed stream for tarfile, capped per read and in total: tarfile reads a pax
    or GNU long-name header whole, before any member size can be checked (a header bomb)."""

    def __init__(self, path: Path, filename: str, limit: int | None) -> None:
        super().__init__(path, "rb")
        self.upload_name = filename
        self.limit = limit

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0 or size > MAX_METADATA_BYTES or (
            self.limit is not None and self.tell() + size > self.limit
        ):
            where = f" '{self.upload_name}'" if self.upload_name else ""
            raise UploadRejected(
                f"Invalid distribution file{where}: it unpacks to more than the index allows "
                "(oversized tar header or archive; decompression bomb limit)."
            )
        return super().read(size)


def detect_kind(path: Path) -> str:
    """'zip' or 'tar' by content (magic bytes), never by extension; a file that is both is refused."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    is_zip = zipfile.is_zipfile(path)
    try:
        with _BoundedGzip(path, "", None) as stream:  # only a gzip stream can be an sdist
            is_tar = tarfile.is_tarfile(cast(IO[bytes], stream))
    except UploadRejected:
        raise
    except Exception:
        is_tar = False
    if is_zip and is_tar:
        raise UploadRejected("Invalid distribution file: it is both a zip and a tar archive.")
    if is_zip and head == _LOCAL_SIG:
        return "zip"
    if is_tar and head[:2] == b"\x1f\x8b":
        return "tar"
    if is_zip:
        raise UploadRejected("Invalid distribution file: data precedes the zip archive.")
    return "unknown"


def check_zip_layout(path: Path | IO[bytes], infos: list[zipfile.ZipInfo], filename: str,
                     start_dir: int | None = None) -> None:
    """ZIP confusion: local headers must match the central directory, back to back from offset 0,
    and, given the central directory's offset (``ZipFile.start_dir``), the last one must end
    where it starts: an entry left out of the central directory is invisible to zipfile (and to
    the scanner) but unpacked by tools that read an archive from its start.

    ``path`` may also be an open binary file (e.g. an in-memory nested archive); it is not closed."""
    expected_offset = 0
    with (open(path, "rb") if isinstance(path, (str, Path)) else contextlib.nullcontext(path)) as handle:
        for info in sorted(infos, key=lambda i: i.header_offset):
            if info.header_offset != expected_offset:
                raise UploadRejected(
                    f"Invalid distribution file '{filename}': zip entries are not contiguous "
                    "(hidden data between entries)."
                )
            handle.seek(info.header_offset)
            raw = handle.read(_LOCAL_HEADER.size)
            if len(raw) != _LOCAL_HEADER.size:
                raise UploadRejected(f"Invalid distribution file '{filename}': truncated zip entry.")
            sig, _ver, flags, _method, _t, _d, _crc, _csize, _usize, name_len, extra_len = _LOCAL_HEADER.unpack(raw)
            if sig != _LOCAL_SIG:
                raise UploadRejected(f"Invalid distribution file '{filename}': bad zip local header.")
            if flags & 0x08:
                raise UploadRejected(
                    f"Invalid distribution file '{filename}': zip entry '{info.filename}' uses a data "
                    "descriptor; rebuild the wheel with a current build tool."
                )
            local_name = handle.read(name_len)
            if local_name not in (info.filename.encode("utf-8"), info.orig_filename.encode("cp437", "replace")):
                raise UploadRejected(
                    f"Invalid distribution file '{filename}': zip local header name does not match "
                    f"the central directory for '{info.filename}' (ZIP confusion)."
                )
            expected_offset = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len + info.compress_size
    if start_dir is not None and expected_offset != start_dir:
        raise UploadRejected(
            f"Invalid distribution file '{filename}': {start_dir - expected_offset} bytes between the last zip "
            "entry and the central directory (an entry hidden from the directory: ZIP confusion)."
        )


_check_zip_layout = check_zip_layout


def _open_zip(path: Path, filename: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UploadRejected(f"Invalid distribution file '{filename}': not a valid zip archive ({exc}).") from None


def check_zip_members(archive: zipfile.ZipFile, path: Path, filename: str, limits: ArchiveLimits) -> list[str]:
    """Every zip check that is not about the distribution format: names, compression, links,
    bombs and ZIP confusion. Returns the member names."""
    infos = archive.infolist()
    names = [info.filename for info in infos]
    if len(set(names)) != len(names):
        raise UploadRejected(f"Invalid distribution file '{filename}': duplicate member names in zip.")
    total = 0
    compressed = 0
    for info in infos:
        problem = bad_member_path(info.filename)
        if problem:
            raise UploadRejected(f"Invalid distribution file '{filename}': {problem}.")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise UploadRejected(
                f"Invalid distribution file '{filename}': member '{info.filename}' uses an "
                "unsupported compression method (only stored and deflated are allowed)."
            )
        if info.flag_bits & 0x1:
            raise UploadRejected(f"Invalid distribution file '{filename}': member '{info.filename}' is encrypted.")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UploadRejected(f"Invalid distribution file '{filename}': symlink '{info.filename}' in zip.")
        total += info.file_size
        compressed += info.compress_size
    check_bomb(total, compressed, len(infos), limits, filename)
    check_zip_layout(path, infos, filename, archive.start_dir)
    return names


def inspect_wheel(path: Path, filename: str, limits: ArchiveLimits) -> tuple[bytes, str]:
    """Check a wheel's archive and return (METADATA bytes, dist-info directory name)."""
    with _open_zip(path, filename) as archive:
        names = check_zip_members(archive, path, filename, limits)
        dist_infos = {n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info") and "/" in n}
        if len(dist_infos) != 1:
            raise UploadRejected(
                f"Invalid wheel '{filename}': expected exactly one top-level .dist-info directory, "
                f"found {len(dist_infos)}."
            )
        dist_info = dist_infos.pop()
        for required in ("METADATA", "WHEEL", "RECORD"):
            if f"{dist_info}/{required}" not in names:
                raise UploadRejected(f"Invalid wheel '{filename}': {dist_info}/{required} is missing.")
        try:
            metadata = _read_member(archive, f"{dist_info}/METADATA", filename)
            wheel_file = _read_member(archive, f"{dist_info}/WHEEL", filename)
            if f"{dist_info}/entry_points.txt" in names:
                entry_points = _read_member(archive, f"{dist_info}/entry_points.txt", filename)
                parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
                parser.optionxform = str  # type: ignore[assignment,method-assign]
                parser.read_string(entry_points.decode("utf-8"))
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            raise UploadRejected(f"Invalid wheel '{filename}': corrupt zip member ({exc}).") from None
        except (configparser.Error, UnicodeDecodeError) as exc:
            raise UploadRejected(
                f"Invalid wheel '{filename}': entry_points.txt does not parse ({type(exc).__name__})."
            ) from None
    wheel_meta = BytesParser().parsebytes(wheel_file)
    wheel_version = wheel_meta.get("Wheel-Version", "")
    if not wheel_version.startswith("1."):
        raise UploadRejected(
            f"Invalid wheel '{filename}': unsupported Wheel-Version '{wheel_version}' in WHEEL (expected 1.x)."
        )
    return metadata, dist_info


def inspect_zip_sdist(path: Path, filename: str, limits: ArchiveLimits, *,
                      root_pkg_info: bool = False) -> tuple[bytes, str]:
    """Check a .zip sdist (PEP 527; PyPI took them until PEP 625) and return (PKG-INFO bytes,
    top-level directory name): the same zip checks as a wheel's, one top-level directory.
    ``root_pkg_info`` (lenient): a PKG-INFO file at the archive's root beside that directory is
    accepted, and read when the directory has none (hand-made zips of 2008-2010, e.g.
    ``reportLab-2.3.zip``)."""
    with _open_zip(path, filename) as archive:
        names = check_zip_members(archive, path, filename, limits)
        beside = root_pkg_info and "PKG-INFO" in names
        inside = [name for name in names if name and not (beside and name == "PKG-INFO")]
        tops = {name.split("/")[0] for name in inside}
        if len(tops) != 1 or not all("/" in name or name.endswith("/") for name in inside):
            raise UploadRejected(
                f"Invalid sdist '{filename}': all members must be inside one top-level directory."
            )
        top = tops.pop()
        member = f"{top}/PKG-INFO" if f"{top}/PKG-INFO" in names else "PKG-INFO" if beside else None
        if member is None:
            raise MissingPkgInfo(f"Invalid sdist '{filename}': {top}/PKG-INFO is missing.")
        try:
            return _read_member(archive, member, filename), top
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            raise UploadRejected(f"Invalid sdist '{filename}': corrupt zip member ({exc}).") from None


def _read_member(archive: zipfile.ZipFile, name: str, filename: str) -> bytes:
    info = archive.getinfo(name)
    if info.file_size > MAX_METADATA_BYTES:
        raise UploadRejected(f"Invalid wheel '{filename}': {name} is larger than {MAX_METADATA_BYTES} bytes.")
    return archive.read(info)


def inspect_sdist(path: Path, filename: str, limits: ArchiveLimits) -> tuple[bytes, str]:
    """Check an sdist's tar archive and return (PKG-INFO bytes, top-level directory name)."""
    compressed = path.stat().st_size
    total = 0
    count = 0
    tops: set[str] = set()
    pkg_info: bytes | None = None
    try:
        # Members' sizes are limited below; headers and padding get 2 KiB per allowed member.
        stream_limit = limits.max_uncompressed + 2048 * limits.max_members
        with _BoundedGzip(path, filename, stream_limit) as stream, tarfile.open(fileobj=stream, mode="r:") as archive:
            for member in archive:
                count += 1
                total += member.size
                check_bomb(total, compressed, count, limits, filename)
                name = member.name.rstrip("/")
                problem = bad_member_path(name)
                if problem:
                    raise UploadRejected(f"Invalid distribution file '{filename}': {problem}.")
                tops.add(name.split("/")[0])
                if len(tops) > 1:
                    raise UploadRejected(
                        f"Invalid sdist '{filename}': all members must be inside one top-level directory."
                    )
                if member.issparse() if hasattr(member, "issparse") else member.type == tarfile.GNUTYPE_SPARSE:
                    raise UploadRejected(f"Invalid sdist '{filename}': sparse member '{name}'.")
                if member.isdev() or member.isfifo():
                    raise UploadRejected(f"Invalid sdist '{filename}': device or fifo member '{name}'.")
                if member.issym() or member.islnk():
                    base = posixpath.dirname(name) if member.issym() else ""
                    target = posixpath.normpath(posixpath.join(base, member.linkname))
                    if member.linkname.startswith("/") or target.startswith("..") or target.split("/")[0] not in tops:
                        raise UploadRejected(
                            f"Invalid sdist '{filename}': link '{name}' points outside the archive."
                        )
                elif not (member.isfile() or member.isdir()):
                    raise UploadRejected(f"Invalid sdist '{filename}': unsupported member type for '{name}'.")
                if name.count("/") == 1 and name.endswith("/PKG-INFO") and member.isfile():
                    if member.size > MAX_METADATA_BYTES:
                        raise UploadRejected(f"Invalid sdist '{filename}': PKG-INFO is too large.")
                    extracted = archive.extractfile(member)
                    pkg_info = extracted.read() if extracted else None
    except UploadRejected:
        raise
    except (tarfile.TarError, OSError, EOFError, ValueError, zlib.error) as exc:
        raise UploadRejected(f"Invalid distribution file '{filename}': not a valid .tar.gz archive ({exc}).") from None
    if not tops:
        raise UploadRejected(f"Invalid sdist '{filename}': the archive is empty.")
    top = tops.pop()
    if pkg_info is None:
        raise MissingPkgInfo(f"Invalid sdist '{filename}': {top}/PKG-INFO is missing.")
    return pkg_info, top
