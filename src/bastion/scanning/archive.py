"""Read a distribution in memory for the scanner: the format comes from magic bytes, never the name.

Nothing is extracted to disk and nothing is executed. ``read_archive`` returns the members the
rules look at (code and scripts in full up to a cap, every other member's first bytes for magic
checks) together with archive-safety findings: ZIP confusion, bombs, unsafe paths, links, device
files, nested archives (read recursively to a depth limit). A file that is not a readable archive
raises ``ArchiveError`` whose message says what is wrong.
"""

from __future__ import annotations

import bz2
import io
import lzma
import posixpath
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from bastion.packaging.archives import ArchiveLimits, bad_member_path, check_bomb, check_zip_layout
from bastion.packaging.errors import UploadRejected
from bastion.scanning.result import Finding

CODE_SUFFIXES = (".py", ".pyw", ".pth", ".pyi", ".sh", ".bat", ".cmd", ".ps1", ".vbs", ".js", ".toml", ".cfg")
"""Members read in full (up to ``ScanLimits.max_code_bytes``)."""
METADATA_NAMES = ("PKG-INFO", "METADATA")
ARCHIVE_SUFFIXES = (".zip", ".whl", ".egg", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar")
HEAD_BYTES = 256


class ArchiveError(Exception):
    """The file is not a readable archive; the message says what is wrong (one line)."""


class _Bomb(Exception):
    pass


@dataclass(frozen=True)
class ScanLimits:
    max_uncompressed: int = 1024 * 1024 * 1024
    max_ratio: int = 200
    bomb_floor: int = 128 * 1024 * 1024
    max_members: int = 100_000
    max_member_size: int = 512 * 1024 * 1024
    max_code_bytes: int = 2 * 1024 * 1024
    """Bytes read of one code member."""
    max_nested_bytes: int = 32 * 1024 * 1024
    """Largest nested archive read into memory."""
    max_depth: int = 2
    """Nested archives are read to this depth (the upload is depth 0)."""

    def archive_limits(self) -> ArchiveLimits:
        return ArchiveLimits(max_uncompressed=self.max_uncompressed, max_ratio=self.max_ratio,
                             bomb_floor=self.bomb_floor, max_members=self.max_members)


@dataclass
class Member:
    name: str
    """Path inside the upload; members of a nested archive are ``outer.zip!inner/path``."""
    size: int
    data: bytes
    """The whole member for code and metadata (up to the cap), else its first bytes."""
    truncated: bool = False
    nested_depth: int = 0


@dataclass
class Contents:
    format: str
    """zip, tar.gz, tar.bz2, tar.xz or tar."""
    members: list[Member] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    metadata: bytes | None = None
    metadata_name: str | None = None
    wheel: bool = False
    total_size: int = 0
    names: list[str] = field(default_factory=list)
    """Every member path (also those not read)."""


def sniff(head: bytes) -> str | None:
    """The container format from the first bytes (at least 262 for plain tar)."""
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:3] == b"BZh":
        return "bzip2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[257:262] == b"ustar":
        return "tar"
    return None


def _finding(rule: str, file: str, excerpt: str, why: str, severity: float) -> Finding:
    return Finding(rule=rule, file=file, line=None, excerpt=excerpt[:200], why=why, severity=severity,
                   category="archive")


class _Bounded(io.RawIOBase):
    """A decompressed stream capped in total and per read (tarfile reads pax headers whole)."""

    def __init__(self, raw: IO[bytes], limit: int, max_read: int = 16 * 1024 * 1024) -> None:
        self.raw = raw
        self.limit = limit
        self.max_read = max_read
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0 or size > self.max_read:
            raise _Bomb("a tar header or member larger than the scanner reads in one piece")
        data = self.raw.read(size)
        self.count += len(data)
        if self.count > self.limit:
            raise _Bomb(f"it unpacks to more than {self.limit} bytes")
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _wants_data(name: str) -> bool:
    base = posixpath.basename(name)
    return base.endswith(CODE_SUFFIXES) or base in METADATA_NAMES or base in ("setup.py", "entry_points.txt")


def _is_archive_name(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def read_archive(source: Path | bytes, filename: str, limits: ScanLimits = ScanLimits(), *, depth: int = 0,
                 prefix: str = "") -> Contents:
    """Read ``source`` (a path or the bytes of a nested archive); raise ArchiveError when unreadable."""
    try:
        if isinstance(source, Path):
            with open(source, "rb") as handle:
                head = handle.read(512)
            size = source.stat().st_size
        else:
            head = source[:512]
            size = len(source)
    except OSError as exc:
        raise ArchiveError(f"cannot read the file ({exc.strerror or exc})") from None
    if size == 0:
        raise ArchiveError("the file is empty")
    kind = sniff(head)
    if kind is None:
        opened = io.BytesIO(source) if isinstance(source, bytes) else source
        if zipfile.is_zipfile(opened):
            contents = _read_zip(source, filename, size, limits, depth, prefix)
            contents.findings.append(_finding(
                "archive.polyglot", prefix or "archive", repr(head[:16])[:60],
                "Data precedes the zip archive: the file can be read as two different things.", 6.0))
            return contents
        raise ArchiveError(f"not a zip, gzip, bzip2, xz or tar archive (it starts with {head[:8]!r})")
    if kind == "zip":
        return _read_zip(source, filename, size, limits, depth, prefix)
    return _read_tar(source, kind, filename, size, limits, depth, prefix)


def _open_stream(source: Path | bytes, kind: str) -> IO[bytes]:
    raw: IO[bytes] = open(source, "rb") if isinstance(source, Path) else io.BytesIO(source)
    if kind == "gzip":
        import gzip
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
    if kind == "bzip2":
        return bz2.BZ2File(raw, "rb")
    if kind == "xz":
        return lzma.LZMAFile(raw, "rb")
    return raw


def _check_path(contents: Contents, name: str, where: str) -> None:
    problem = bad_member_path(name.rstrip("/"))
    if problem and "backslash" not in problem:
        contents.findings.append(_finding(
            "archive.unsafe-path", where, name,
            f"The archive has {problem}: unpacking it writes outside the target directory.", 9.0))


def _bomb_check(contents: Contents, total: int, compressed: int, count: int, limits: ScanLimits,
                filename: str, where: str) -> bool:
    try:
        check_bomb(total, compressed, count, limits.archive_limits(), filename)
    except UploadRejected as exc:
        contents.findings.append(_finding("archive.bomb", where, str(exc), _why_bomb(str(exc)), 10.0))
        return True
    return False


def _why_bomb(message: str) -> str:
    tail = message.split("': ", 1)[-1]
    return f"Decompression bomb: {tail}"


def _read_tar(source: Path | bytes, kind: str, filename: str, size: int, limits: ScanLimits, depth: int,
              prefix: str) -> Contents:
    fmt = {"gzip": "tar.gz", "bzip2": "tar.bz2", "xz": "tar.xz", "tar": "tar"}[kind]
    contents = Contents(format=fmt)
    where = prefix or "archive"
    stream = _open_stream(source, kind)
    bounded = _Bounded(stream, limits.max_uncompressed + 2048 * limits.max_members)
    total = count = 0
    try:
        try:
            archive = tarfile.open(fileobj=io.BufferedReader(bounded, 1024 * 1024), mode="r|")
        except tarfile.ReadError as exc:
            text = str(exc)
            if kind != "tar" and any(word in text.lower() for word in ("zlib", "gzip", "crc", "compressed", "lzma",
                                                                        "bz2", "invalid data stream")):
                raise ArchiveError(f"corrupt {kind} stream ({text})") from None
            inner = "" if kind == "tar" else f" inside the {kind} stream"
            raise ArchiveError(f"not a tar archive{inner} ({text})") from None
        with archive:
            for info in archive:
                count += 1
                total += info.size
                name = info.name
                full = prefix + name
                contents.names.append(full)
                _check_path(contents, name, full)
                if _bomb_check(contents, total, size, count, limits, filename, where):
                    break
                if info.size > limits.max_member_size:
                    contents.findings.append(_finding(
                        "archive.member-too-large", full, f"{info.size} bytes",
                        f"A single member larger than {limits.max_member_size} bytes.", 6.0))
                    continue
                if info.issym() or info.islnk():
                    base = posixpath.dirname(name) if info.issym() else ""
                    target = posixpath.normpath(posixpath.join(base, info.linkname))
                    outside = info.linkname.startswith("/") or target == ".." or target.startswith("../")
                    top_ok = outside or target.split("/")[0] == name.split("/")[0]
                    if outside or not top_ok:
                        contents.findings.append(_finding(
                            "archive.link-outside", full, f"{name} -> {info.linkname}",
                            "A link that points outside the archive can overwrite or read files on unpacking.",
                            8.0))
                    else:
                        contents.findings.append(_finding(
                            "archive.link", full, f"{name} -> {info.linkname}",
                            "A symlink or hardlink inside the archive (harmless on its own).", 0.3))
                    continue
                if info.isdev() or info.isfifo():
                    contents.findings.append(_finding(
                        "archive.device", full, name, "A device or fifo member: no distribution needs one.", 8.0))
                    continue
                if not info.isfile():
                    continue
                contents.total_size += info.size
                handle = archive.extractfile(info)
                if handle is None:
                    continue
                _take_member(contents, full, info.size, handle, filename, limits, depth)
    except ArchiveError:
        raise
    except _Bomb as exc:
        contents.findings.append(_finding("archive.bomb", where, str(exc), f"Decompression bomb: {exc}.", 10.0))
    except (tarfile.TarError, OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as exc:
        if count == 0:
            raise ArchiveError(f"not a valid {fmt} archive ({type(exc).__name__}: {exc})") from None
        raise ArchiveError(
            f"the {fmt} archive is corrupt after {count} members ({type(exc).__name__}: {exc})") from None
    finally:
        stream.close()
    if count == 0:
        raise ArchiveError(f"the {fmt} archive is empty")
    return contents


def _take_member(contents: Contents, full: str, size: int, handle: IO[bytes], filename: str, limits: ScanLimits,
                 depth: int) -> None:
    """Read what the rules need of one regular member."""
    base = posixpath.basename(full)
    if _wants_data(full):
        data = handle.read(limits.max_code_bytes)
        member = Member(full, size, data, truncated=size > len(data), nested_depth=depth)
        if base in METADATA_NAMES and _is_core_metadata(full, contents):
            if contents.metadata is None or full.count("/") < (contents.metadata_name or "").count("/"):
                contents.metadata = data
                contents.metadata_name = full
        contents.members.append(member)
        return
    head = handle.read(HEAD_BYTES)
    nested_kind = sniff(head + b"\x00" * 512) if len(head) >= 4 else None
    if nested_kind is not None and nested_kind != "tar" and _is_archive_name(full):
        contents.findings.append(_finding(
            "archive.nested", full, f"{nested_kind} archive, {size} bytes",
            "An archive inside the distribution: it is scanned too.", 0.2))
        if depth + 1 <= limits.max_depth and size <= limits.max_nested_bytes:
            data = head + handle.read(limits.max_nested_bytes)
            try:
                inner = read_archive(data, filename, limits, depth=depth + 1, prefix=full + "!")
            except ArchiveError as exc:
                contents.findings.append(_finding(
                    "archive.nested-unreadable", full, str(exc),
                    "A nested archive that cannot be read hides its contents from review.", 1.0))
                return
            contents.members.extend(inner.members)
            contents.findings.extend(inner.findings)
            contents.names.extend(inner.names)
        elif depth + 1 > limits.max_depth:
            contents.findings.append(_finding(
                "archive.nested-too-deep", full, f"depth {depth + 1}",
                f"Archives nested deeper than {limits.max_depth} levels are not scanned.", 2.0))
        return
    contents.members.append(Member(full, size, head, truncated=size > len(head), nested_depth=depth))


def _is_core_metadata(full: str, contents: Contents) -> bool:
    if "!" in full:
        return False
    parts = full.split("/")
    if parts[-1] == "METADATA":
        return len(parts) == 2 and parts[0].endswith(".dist-info")
    return len(parts) == 2 or (len(parts) == 1)


def _read_zip(source: Path | bytes, filename: str, size: int, limits: ScanLimits, depth: int,
              prefix: str) -> Contents:
    contents = Contents(format="zip")
    where = prefix or "archive"
    handle: IO[bytes] = open(source, "rb") if isinstance(source, Path) else io.BytesIO(source)
    try:
        try:
            archive = zipfile.ZipFile(handle)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise ArchiveError(f"not a valid zip archive ({exc})") from None
        with archive:
            infos = archive.infolist()
            if not infos:
                raise ArchiveError("the zip archive is empty")
            names = [info.filename for info in infos]
            contents.names = [prefix + n for n in names]
            seen: set[str] = set()
            for n in names:
                if n in seen:
                    contents.findings.append(_finding(
                        "archive.zip-confusion", prefix + n, f"duplicate member name '{n}'",
                        "Duplicate zip member names: different tools unpack different files (ZIP confusion).",
                        9.0))
                    break
                seen.add(n)
            try:
                check_zip_layout(handle, infos, filename)
            except UploadRejected as exc:
                message = str(exc)
                if "data descriptor" not in message:
                    confusion = "ZIP confusion" in message or "bad zip local header" in message
                    contents.findings.append(_finding(
                        "archive.zip-confusion" if confusion else "archive.zip-layout", where,
                        message.split("': ", 1)[-1],
                        "The zip's local headers disagree with its central directory: tools may see "
                        "different files." if confusion else
                        "The zip's entries are not back to back: data is hidden between them.",
                        9.0 if confusion else 3.0))
            total = sum(i.file_size for i in infos)
            compressed = sum(i.compress_size for i in infos)
            if _bomb_check(contents, total, size, len(infos), limits, filename, where):
                return contents
            del compressed
            contents.wheel = depth == 0 and any(
                n.count("/") == 1 and n.split("/")[0].endswith(".dist-info") and n.endswith("/WHEEL")
                for n in names)
            for info in infos:
                full = prefix + info.filename
                _check_path(contents, info.filename, full)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    contents.findings.append(_finding(
                        "archive.link", full, info.filename,
                        "A symlink inside a zip (pip does not create it; harmless on its own).", 0.5))
                    continue
                if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
                    contents.findings.append(_finding(
                        "archive.device", full, info.filename, "A device or fifo member: no distribution needs one.",
                        8.0))
                    continue
                if info.is_dir():
                    continue
                if info.file_size > limits.max_member_size:
                    contents.findings.append(_finding(
                        "archive.member-too-large", full, f"{info.file_size} bytes",
                        f"A single member larger than {limits.max_member_size} bytes.", 6.0))
                    continue
                if info.flag_bits & 0x1:
                    contents.findings.append(_finding(
                        "archive.encrypted", full, info.filename,
                        "An encrypted member cannot be reviewed.", 3.0))
                    continue
                contents.total_size += info.file_size
                try:
                    with archive.open(info) as member:
                        _take_member(contents, full, info.file_size, member, filename, limits, depth)
                except NotImplementedError as exc:
                    contents.findings.append(_finding(
                        "archive.unsupported-member", full, str(exc),
                        "A member compressed with a method the scanner cannot read.", 2.0))
                except (zipfile.BadZipFile, zlib.error, EOFError, OSError, lzma.LZMAError) as exc:
                    contents.findings.append(_finding(
                        "archive.corrupt-member", full, f"{type(exc).__name__}: {exc}",
                        "A corrupt member cannot be reviewed.", 2.0))
    finally:
        handle.close()
    return contents
