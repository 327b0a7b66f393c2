"""Small, valid distribution files built in memory (no build backend, deterministic bytes).

Wheels follow PEP 427 (``{name}-{version}-py3-none-any.whl`` with METADATA, WHEEL and RECORD);
sdists follow PEP 625 (``{name}-{version}.tar.gz`` with one top-level directory holding PKG-INFO).
Names are normalized with underscores in filenames, as modern build backends write them. The same
inputs always give the same bytes, so every server receives byte-identical files.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import random
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

# A fixed timestamp makes archives reproducible (zip cannot store dates before 1980).
_ZIP_DATE = (2024, 1, 1, 0, 0, 0)
_TAR_MTIME = 1704067200


@dataclass(frozen=True)
class Dist:
    """One distribution file: its filename, bytes and the metadata it carries."""

    project: str
    version: str
    filename: str
    kind: str  # "wheel" or "sdist"
    data: bytes
    metadata: bytes

    def write(self, directory: Path) -> Path:
        path = directory / self.filename
        path.write_bytes(self.data)
        return path


def dist_name(project: str) -> str:
    """The filename form of a project name: normalized, with underscores."""
    return canonicalize_name(project).replace("-", "_")


def metadata_bytes(project: str, version: str, summary: str | None = None) -> bytes:
    text = (
        "Metadata-Version: 2.1\n"
        f"Name: {project}\n"
        f"Version: {version}\n"
        f"Summary: {summary or 'Synthetic project for the Bastion benchmark'}\n"
        "Author-email: Bench <bench@example.com>\n"
        "Requires-Python: >=3.8\n"
        "Classifier: Programming Language :: Python :: 3\n"
        "Description-Content-Type: text/markdown\n"
        "\n"
        f"# {project}\n\nA synthetic project made by `benchmarks/dists.py`, version {version}.\n"
    )
    return text.encode()


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def build_wheel(project: str, version: str, *, payload: bytes | None = None) -> Dist:
    """A pure-Python wheel; ``payload`` (stored uncompressed) pads it to a chosen size."""
    base = dist_name(project)
    info = f"{base}-{version}.dist-info"
    meta = metadata_bytes(project, version)
    members: dict[str, bytes] = {
        f"{base}/__init__.py": f'"""{project} {version}"""\n__version__ = "{version}"\n'.encode(),
    }
    if payload is not None:
        members[f"{base}/payload.bin"] = payload
    members[f"{info}/METADATA"] = meta
    members[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: bastion-benchmarks\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = [_record_line(p, d) for p, d in members.items()] + [f"{info}/RECORD,,"]
    members[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            entry = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            entry.external_attr = 0o644 << 16
            stored = name.endswith("payload.bin")
            entry.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
            archive.writestr(entry, data)
    filename = f"{base}-{version}-py3-none-any.whl"
    return Dist(project, version, filename, "wheel", buffer.getvalue(), meta)


def build_sdist(project: str, version: str) -> Dist:
    base = dist_name(project)
    top = f"{base}-{version}"
    meta = metadata_bytes(project, version)
    members = {
        f"{top}/PKG-INFO": meta,
        f"{top}/pyproject.toml": (
            '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n\n'
            f'[project]\nname = "{project}"\nversion = "{version}"\n'
        ).encode(),
        f"{top}/src/{base}/__init__.py": f'__version__ = "{version}"\n'.encode(),
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = _TAR_MTIME
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    data = gzip.compress(raw.getvalue(), mtime=0)
    return Dist(project, version, f"{top}.tar.gz", "sdist", data, meta)


def project_files(project: str, count: int) -> list[Dist]:
    """``count`` files for one project: wheel and sdist of 1.0.0, then 1.1.0, 1.2.0, ..."""
    files: list[Dist] = []
    minor = 0
    while len(files) < count:
        version = f"1.{minor}.0"
        files.append(build_wheel(project, version))
        if len(files) < count:
            files.append(build_sdist(project, version))
        minor += 1
    return files


def small_index(projects: int, versions: int) -> list[list[Dist]]:
    """The comparison data set, grouped by version: round r holds version 1.r.0 of every project
    (wheel and sdist), so each upload round sends the same number of new files to every server."""
    names = [f"bench-pkg-{i:02d}" for i in range(projects)]
    return [
        [d for name in names for d in (build_wheel(name, f"1.{r}.0"), build_sdist(name, f"1.{r}.0"))]
        for r in range(versions)
    ]


BIG_PROJECT = "bench-big"


def big_wheel(size: int = 1024 * 1024) -> Dist:
    """A wheel of about ``size`` bytes: an incompressible stored payload (seeded, so reproducible)."""
    payload = random.Random(1234).randbytes(size - 1500)
    return build_wheel(BIG_PROJECT, "1.0.0", payload=payload)
