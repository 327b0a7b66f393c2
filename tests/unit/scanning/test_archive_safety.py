"""Archive problems: each gives a finding (or, when the file is not a readable archive, a clear one-line
error with verdict reject) and never an exception. Nothing is extracted to disk."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import struct
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from bastion.scanning.archive import ScanLimits
from bastion.scanning.result import ScanResult, Verdict
from bastion.scanning.scanner import Scanner
from tests.distbuilder import make_sdist, make_wheel, make_zip_sdist, metadata_text, tar_gz_bytes, zip_bytes
from tests.unit.scanning.conftest import rules

EVIL = b"import base64\nexec(base64.b64decode('aW1wb3J0IG9zO29zLnN5c3RlbSgnaWQnKQ=='))\n"


def scan_bytes(tmp_path: Path, scanner: Scanner, data: bytes, name: str = "demo-1.0.tar.gz") -> ScanResult:
    path = tmp_path / name
    path.write_bytes(data)
    return scanner.scan(path)


@pytest.mark.parametrize(("data", "message"), [
    (b"", "the file is empty"),
    (b"hello, this is not an archive at all" * 20, "not a zip, gzip, bzip2, xz or tar archive"),
    (gzip.compress(b"plain text, not a tar stream" * 40), "not a tar archive inside the gzip stream"),
    (b"PK\x03\x04" + b"\x00" * 100, "not a valid zip archive"),
    (b"\x1f\x8b\x08\x00" + b"\x00" * 20, "corrupt gzip stream"),
    (bz2.compress(b"x" * 2000), "not a tar archive inside the bzip2 stream"),
])
def test_unreadable_files_give_a_clear_error(tmp_path: Path, scanner: Scanner, data: bytes, message: str) -> None:
    result = scan_bytes(tmp_path, scanner, data)
    assert result.verdict == Verdict.REJECT
    assert result.error is not None and message in result.error, result.error
    assert "\n" not in result.error
    assert result.error.startswith("demo-1.0.tar.gz: ")


def test_truncated_tar_gz_gives_an_error(tmp_path: Path, scanner: Scanner) -> None:
    good = make_sdist(tmp_path, "demo", "1.0", files={"demo/big.py": bytes(range(256)) * 400})
    data = good.read_bytes()
    result = scan_bytes(tmp_path, scanner, data[: len(data) // 2], "cut-1.0.tar.gz")
    assert result.verdict == Verdict.REJECT
    assert result.error and "corrupt" in result.error or "not a valid" in (result.error or "")


def test_missing_file_gives_an_error(tmp_path: Path, scanner: Scanner) -> None:
    result = scanner.scan(tmp_path / "nope.tar.gz")
    assert result.verdict == Verdict.REJECT
    assert result.error and "cannot read the file" in result.error


def test_format_comes_from_magic_bytes_not_the_name(tmp_path: Path, scanner: Scanner) -> None:
    """A zip named .tar.gz (common in malware) is read as a zip, its code scanned, and the lie noted."""
    path = make_zip_sdist(tmp_path, "demo", "1.0", files={"setup.py": EVIL}, filename="demo-1.0.tar.gz")
    result = scanner.scan(path)
    assert result.error is None
    assert {"archive.format-mismatch", "code.exec-decoded"} <= rules(result)
    assert result.verdict != Verdict.ALLOW


def test_tar_bz2_and_tar_xz_are_read(tmp_path: Path, scanner: Scanner) -> None:
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as archive:
        for name, data in {"demo-1.0/PKG-INFO": metadata_text("demo", "1.0").encode(), "demo-1.0/setup.py": EVIL}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    for compressed, suffix in ((bz2.compress(tar.getvalue()), ".tar.bz2"), (lzma.compress(tar.getvalue()), ".tar.xz"),
                               (tar.getvalue(), ".tar")):
        result = scan_bytes(tmp_path, scanner, compressed, "demo-1.0" + suffix)
        assert result.error is None
        assert "code.exec-decoded" in rules(result), suffix


def _tweak_add(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", data: bytes = b"x") -> Callable[..., None]:
    def tweak(archive: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = linkname
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        archive.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return tweak


@pytest.mark.parametrize(("tweak", "rule", "blocks"), [
    (_tweak_add("demo-1.0/../../etc/evil"), "archive.unsafe-path", True),
    (_tweak_add("/etc/evil"), "archive.unsafe-path", True),
    (_tweak_add("demo-1.0/link", tarfile.SYMTYPE, "/etc/passwd"), "archive.link-outside", True),
    (_tweak_add("demo-1.0/link", tarfile.SYMTYPE, "../../../home"), "archive.link-outside", True),
    (_tweak_add("demo-1.0/hard", tarfile.LNKTYPE, "etc/passwd"), "archive.link-outside", True),
    (_tweak_add("demo-1.0/dev", tarfile.CHRTYPE), "archive.device", True),
    (_tweak_add("demo-1.0/fifo", tarfile.FIFOTYPE), "archive.device", True),
    (_tweak_add("demo-1.0/docs/latest", tarfile.SYMTYPE, "v1"), "archive.link", False),
])
def test_tar_member_problems(tmp_path: Path, scanner: Scanner, tweak: Callable[..., None], rule: str,
                             blocks: bool) -> None:
    path = make_sdist(tmp_path, "demo", "1.0", tweak=tweak)
    result = scanner.scan(path)
    assert result.error is None
    assert rule in rules(result)
    assert (result.verdict != Verdict.ALLOW) is blocks, (result.score, result.findings)


def _raw_zip(entries: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def test_zip_duplicate_names_are_zip_confusion(tmp_path: Path, scanner: Scanner) -> None:
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = _raw_zip([("demo-1.0/PKG-INFO", metadata_text("demo", "1.0").encode()),
                         ("demo-1.0/setup.py", b"print('shown')\n"), ("demo-1.0/setup.py", EVIL)])
    result = scan_bytes(tmp_path, scanner, data, "demo-1.0.zip")
    assert "archive.zip-confusion" in rules(result)
    assert result.verdict != Verdict.ALLOW


def test_zip_local_header_name_mismatch_is_zip_confusion(tmp_path: Path, scanner: Scanner) -> None:
    data = bytearray(_raw_zip([("demo-1.0/PKG-INFO", metadata_text("demo", "1.0").encode()),
                               ("demo-1.0/setup.py", b"print(1)\n")]))
    # rename the second entry in its local header only: tools that read local headers see another file
    offset = data.index(b"PK\x03\x04", 4)
    name_at = offset + 30
    assert data[name_at:name_at + 17] == b"demo-1.0/setup.py"
    data[name_at:name_at + 17] = b"demo-1.0/setup.pz"
    result = scan_bytes(tmp_path, scanner, bytes(data), "demo-1.0.zip")
    assert result.error is None
    assert "archive.zip-confusion" in rules(result)
    assert result.verdict != Verdict.ALLOW


def test_data_before_a_zip_is_a_polyglot(tmp_path: Path, scanner: Scanner) -> None:
    data = b"#!/bin/sh\necho hidden\n" + zip_bytes({"demo-1.0/PKG-INFO": metadata_text("demo", "1.0").encode()})
    result = scan_bytes(tmp_path, scanner, data, "demo-1.0.zip")
    assert result.error is None
    assert "archive.polyglot" in rules(result)
    assert result.verdict != Verdict.ALLOW


def test_zip_bomb_by_ratio(tmp_path: Path) -> None:
    scanner = Scanner(limits=ScanLimits(bomb_floor=1024 * 1024, max_ratio=100))
    data = zip_bytes({"demo-1.0/PKG-INFO": metadata_text("demo", "1.0").encode(),
                      "demo-1.0/zeros.bin": b"\x00" * (8 * 1024 * 1024)})
    result = scan_bytes(tmp_path, scanner, data, "demo-1.0.zip")
    assert "archive.bomb" in rules(result)
    assert result.verdict == Verdict.REJECT


def test_tar_bomb_by_total_size(tmp_path: Path) -> None:
    scanner = Scanner(limits=ScanLimits(max_uncompressed=2 * 1024 * 1024, bomb_floor=1024 * 1024))
    data = tar_gz_bytes({"demo-1.0/PKG-INFO": metadata_text("demo", "1.0").encode(),
                         "demo-1.0/a.bin": b"\x00" * (3 * 1024 * 1024)})
    result = scan_bytes(tmp_path, scanner, data)
    assert "archive.bomb" in rules(result)
    assert result.verdict == Verdict.REJECT


def test_member_count_limit(tmp_path: Path) -> None:
    scanner = Scanner(limits=ScanLimits(max_members=50))
    data = tar_gz_bytes({f"demo-1.0/f{i}.txt": b"x" for i in range(80)})
    result = scan_bytes(tmp_path, scanner, data)
    finding = next(f for f in result.findings if f.rule == "archive.bomb")
    assert "more than 50 members" in finding.excerpt


def test_oversized_pax_header_does_not_exhaust_memory(tmp_path: Path, scanner: Scanner) -> None:
    header = tarfile.TarInfo("demo-1.0/PKG-INFO")
    header.type = tarfile.XHDTYPE
    header.size = 64 * 1024 * 1024
    raw = header.tobuf(format=tarfile.USTAR_FORMAT)
    stream = gzip.compress(raw + b"\x00" * (20 * 1024 * 1024))
    result = scan_bytes(tmp_path, scanner, stream)
    assert result.verdict == Verdict.REJECT
    assert "archive.bomb" in rules(result) or result.error


def test_member_size_limit(tmp_path: Path) -> None:
    scanner = Scanner(limits=ScanLimits(max_member_size=1000))
    data = tar_gz_bytes({"demo-1.0/PKG-INFO": metadata_text("demo", "1.0").encode(), "demo-1.0/big.bin": b"y" * 5000})
    result = scan_bytes(tmp_path, scanner, data)
    assert "archive.member-too-large" in rules(result)


def test_nested_archives_are_scanned(tmp_path: Path, scanner: Scanner) -> None:
    inner_wheel = zip_bytes({"evil/__init__.py": EVIL, "evil-1.0.dist-info/METADATA": b"Name: evil\n"})
    path = make_sdist(tmp_path, "demo", "1.0", files={"vendor/evil-1.0-py3-none-any.whl": inner_wheel})
    result = scanner.scan(path)
    assert "archive.nested" in rules(result)
    hit = next(f for f in result.findings if f.rule == "code.exec-decoded")
    assert hit.file == "demo-1.0/vendor/evil-1.0-py3-none-any.whl!evil/__init__.py"
    assert result.verdict != Verdict.ALLOW


def test_nesting_stops_at_the_depth_limit(tmp_path: Path) -> None:
    scanner = Scanner(limits=ScanLimits(max_depth=1))
    level2 = zip_bytes({"deep/__init__.py": EVIL})
    level1 = zip_bytes({"inner/deep.zip": level2})
    path = make_sdist(tmp_path, "demo", "1.0", files={"outer.zip": level1})
    result = scanner.scan(path)
    assert "archive.nested-too-deep" in rules(result)
    assert "code.exec-decoded" not in rules(result)
    deeper = Scanner(limits=ScanLimits(max_depth=2)).scan(path)
    assert "code.exec-decoded" in rules(deeper)


def test_unsafe_paths_inside_a_nested_archive_weigh_little(tmp_path: Path, scanner: Scanner) -> None:
    """Test fixtures (a bad tar inside a test folder) are not a danger to whoever installs the package."""
    bad = tar_gz_bytes({"../escape.txt": b"x"})
    path = make_sdist(tmp_path, "demo", "1.0", files={"tests/data/bad.tar.gz": bad})
    result = scanner.scan(path)
    finding = next(f for f in result.findings if f.rule == "archive.unsafe-path")
    assert finding.severity <= 1.0
    assert result.verdict == Verdict.ALLOW


def test_corrupt_nested_archive_is_noted_not_fatal(tmp_path: Path, scanner: Scanner) -> None:
    path = make_sdist(tmp_path, "demo", "1.0", files={"data/broken.zip": b"PK\x03\x04" + b"\x00" * 64})
    result = scanner.scan(path)
    assert result.error is None
    assert "archive.nested-unreadable" in rules(result)
    assert result.verdict == Verdict.ALLOW


def test_clean_wheel_and_sdist_have_no_archive_findings(tmp_path: Path, scanner: Scanner) -> None:
    for path in (make_wheel(tmp_path, "demo", "1.0"), make_sdist(tmp_path, "demo", "1.0")):
        result = scanner.scan(path)
        assert result.error is None and result.verdict == Verdict.ALLOW
        assert not [f for f in result.findings if f.category == "archive"]


def test_scanner_does_not_write_to_disk(tmp_path: Path, scanner: Scanner) -> None:
    path = make_sdist(tmp_path / "..", "demo-nowrite", "1.0", files={"setup.py": EVIL}) if False else \
        make_sdist(tmp_path, "demo", "1.0", files={"setup.py": EVIL})
    before = sorted(p.name for p in tmp_path.iterdir())
    scanner.scan(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_zip_with_a_local_header_longer_than_declared_is_not_a_crash(tmp_path: Path, scanner: Scanner) -> None:
    data = bytearray(_raw_zip([("demo-1.0/PKG-INFO", metadata_text("demo", "1.0").encode())]))
    struct.pack_into("<H", data, 28, 60000)  # extra-field length in the local header
    result = scan_bytes(tmp_path, scanner, bytes(data), "demo-1.0.zip")
    assert result.verdict != Verdict.ALLOW or result.error is None
