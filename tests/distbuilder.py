"""Build small wheels and sdists in-process, well-formed or deliberately broken.

Integration tests build real distributions with `build` from tests/fixtures/projects; these
helpers exist for the many malformed variants the upload checks must refuse, which no build
backend would produce.
"""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

from packaging.utils import canonicalize_name


def metadata_text(name: str, version: str, *, extra: str = "", summary: str = "A test project",
                  metadata_version: str = "2.1", description: str | None = None,
                  content_type: str | None = None) -> str:
    lines = [f"Metadata-Version: {metadata_version}", f"Name: {name}", f"Version: {version}", f"Summary: {summary}"]
    if content_type:
        lines.append(f"Description-Content-Type: {content_type}")
    text = "\n".join(lines) + "\n" + extra
    if description is not None:
        text = text.rstrip("\n") + "\n\n" + description
    return text


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def wheel_filename(name: str, version: str, tag: str = "py3-none-any") -> str:
    """The name current build backends write (PEP 427: the normalized name, with underscores)."""
    return f"{canonicalize_name(name).replace('-', '_')}-{version}-{tag}.whl"


def make_wheel(directory: Path, name: str, version: str, *, tag: str = "py3-none-any",
               metadata: str | None = None, files: dict[str, bytes] | None = None,
               filename: str | None = None, omit: tuple[str, ...] = (), wheel_version: str = "1.0",
               entry_points: str | None = None) -> Path:
    """A wheel whose METADATA is ``metadata`` (default: a valid one for name/version)."""
    dist = f"{name.replace('-', '_')}-{version}.dist-info"
    members: dict[str, bytes] = {f"{name.replace('-', '_')}/__init__.py": b"VALUE = 1\n"}
    members.update(files or {})
    members[f"{dist}/METADATA"] = (metadata if metadata is not None else metadata_text(name, version)).encode()
    members[f"{dist}/WHEEL"] = (
        f"Wheel-Version: {wheel_version}\nGenerator: bastion-tests\nRoot-Is-Purelib: true\nTag: {tag}\n"
    ).encode()
    if entry_points is not None:
        members[f"{dist}/entry_points.txt"] = entry_points.encode()
    record = [_record_line(p, d) for p, d in members.items()] + [f"{dist}/RECORD,,"]
    members[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    for key in omit:
        members.pop(f"{dist}/{key}", None)
    path = directory / (filename or wheel_filename(name, version, tag))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return path


def sdist_filename(name: str, version: str) -> str:
    return f"{name.replace('-', '_').replace('.', '_').lower()}-{version}.tar.gz"


def make_sdist(directory: Path, name: str, version: str, *, metadata: str | None = None,
               files: dict[str, bytes] | None = None, filename: str | None = None,
               top: str | None = None, tweak=None) -> Path:  # type: ignore[no-untyped-def]
    """An sdist with ``<top>/PKG-INFO``; ``tweak(tarfile)`` may add hostile members."""
    top = top or sdist_filename(name, version)[: -len(".tar.gz")]
    members = {
        f"{top}/PKG-INFO": (metadata if metadata is not None else metadata_text(name, version)).encode(),
        f"{top}/pyproject.toml": b"[build-system]\nrequires = []\n",
    }
    members.update({f"{top}/{k}": v for k, v in (files or {}).items()})
    path = directory / (filename or sdist_filename(name, version))
    with tarfile.open(path, "w:gz") as archive:
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
        if tweak is not None:
            tweak(archive)
    return path


def digests(path: Path) -> dict[str, str]:
    data = path.read_bytes()
    return {
        "md5_digest": hashlib.md5(data).hexdigest(),
        "sha256_digest": hashlib.sha256(data).hexdigest(),
        "blake2_256_digest": hashlib.blake2b(data, digest_size=32).hexdigest(),
    }


def upload_form(path: Path, name: str, version: str, **overrides: str) -> dict[str, str]:
    """The form fields twine sends for ``path``."""
    filetype = "bdist_wheel" if path.name.endswith(".whl") else "sdist"
    form = {
        ":action": "file_upload",
        "protocol_version": "1",
        "metadata_version": "2.1",
        "name": name,
        "version": version,
        "filetype": filetype,
        "pyversion": "py3" if filetype == "bdist_wheel" else "source",
        **digests(path),
    }
    form.update(overrides)
    return {k: v for k, v in form.items() if v is not None}


def zip_bytes(members: dict[str, bytes]) -> bytes:
    """A zip archive in memory (for nested archives and zip-format sdists)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return buffer.getvalue()


def tar_gz_bytes(members: dict[str, bytes]) -> bytes:
    """A gzip-compressed tar archive in memory."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def make_zip_sdist(directory: Path, name: str, version: str, *, files: dict[str, bytes] | None = None,
                   filename: str | None = None, metadata: str | None = None) -> Path:
    """An sdist in zip format (``<top>/PKG-INFO`` plus ``files`` under ``<top>/``); ``filename`` may lie
    about the format (e.g. ``.tar.gz``)."""
    top = sdist_filename(name, version)[: -len(".tar.gz")]
    members = {f"{top}/PKG-INFO": (metadata if metadata is not None else metadata_text(name, version)).encode()}
    members.update({f"{top}/{k}": v for k, v in (files or {}).items()})
    path = directory / (filename or f"{top}.zip")
    path.write_bytes(zip_bytes(members))
    return path
