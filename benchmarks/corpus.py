"""A corpus of real distribution files from PyPI, for the upload acceptance benchmark (accept.py).

    .venv/bin/python benchmarks/corpus.py                           # full corpus -> ~/.cache/bastion-corpus
    .venv/bin/python benchmarks/corpus.py --limit-top 20 --history 40 --dir /tmp/small-corpus

Two groups of files, chosen once and downloaded once into a cache outside the repository
(``--dir``, env ``BASTION_CORPUS_DIR``, default ``~/.cache/bastion-corpus``):

* **top**: for each of the first ``--limit-top`` (1,000) projects of
  ``/work/shared/data/top-pypi-packages.csv``, the latest version (JSON API ``info.version``) and
  its sdist and every wheel, files over ``--max-size`` (50 MB) skipped;
* **history**: ``--history`` (540) older files spread evenly over the upload years 2008-2025
  (a quota per year), from seeded random projects of the whole CSV (85% from ranks 1001-15000,
  the long tail), seeded random files of random versions, preferring within a year the kind of
  file (``.tar.gz`` / ``.zip`` sdist, wheel) that year has least of so far. A year that cannot be
  filled within ``--max-lookups`` project look-ups leaves its quota to the others.

Only files pip could install are kept: ``.whl`` (a valid wheel filename), ``.tar.gz`` and ``.zip``
sdists, of a version that ``packaging.version.Version`` parses; everything else is counted by
reason. Every download is streamed to disk and checked against PyPI's sha256; the run is resumable
(a file already present with the right hash is not fetched again, and the plan is kept in the
cache so that a re-run downloads the same files). Nothing is built, installed or run: after the
download each file is only read (zip central directory, tar headers, the metadata file, WHEEL,
pyproject.toml) to record its Metadata-Version, its builder and anything unusual about it.

Cache layout::

    DIR/manifest.json        [{project, version, filename, packagetype, sha256, size, upload_time, url,
                               group, path, metadata_version, builder, notes}, ...]
    DIR/corpus-info.json     parameters, skipped counts by reason, the summary
    DIR/files/<project>/<filename>

Only pypi.org and files.pythonhosted.org are contacted.
"""

from __future__ import annotations

import argparse
import collections
import csv
import email.parser
import hashlib
import json
import os
import random
import re
import sys
import tarfile
import threading
import time
import tomllib
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

CSV_PATH = Path("/work/shared/data/top-pypi-packages.csv")
PYPI = "https://pypi.org"
DEFAULT_DIR = Path(os.environ.get("BASTION_CORPUS_DIR") or Path.home() / ".cache" / "bastion-corpus")
YEARS = range(2008, 2026)
LONG_TAIL_SHARE = 0.85
USER_AGENT = "bastion-corpus/1 (benchmark corpus; +https://127.0.0.1)"
SDIST_EXTENSIONS = (".tar.gz", ".zip")
MANIFEST = "manifest.json"
INFO = "corpus-info.json"


# ---------------------------------------------------------------------------------------------
# Choosing files
# ---------------------------------------------------------------------------------------------

def read_csv(path: Path = CSV_PATH) -> list[str]:
    with path.open(newline="") as handle:
        return [row["project"].strip() for row in csv.DictReader(handle)]


def file_kind(filename: str) -> str:
    lower = filename.lower()
    if lower.endswith(".whl"):
        return "wheel"
    if lower.endswith(".tar.gz"):
        return "tar.gz"
    if lower.endswith(".zip"):
        return "zip"
    return "other"


def skip_reason(release_version: str, f: dict[str, Any], max_size: int) -> str | None:
    """Why pip could not install this file (or why it is not wanted), None when it is kept."""
    filename = f["filename"]
    kind = file_kind(filename)
    if kind == "other":
        ext = re.search(r"(\.tar\.\w+|\.\w+)$", filename)
        return f"extension {ext.group(1).lower() if ext else '(none)'}"
    if f.get("packagetype") not in ("sdist", "bdist_wheel"):
        return f"packagetype {f.get('packagetype')}"
    if (kind == "wheel") != (f["packagetype"] == "bdist_wheel"):
        return "extension does not match packagetype"
    try:
        Version(release_version)
    except InvalidVersion:
        return "version not PEP 440"
    if kind == "wheel":
        try:
            parse_wheel_filename(filename)
        except InvalidWheelFilename:
            return "invalid wheel filename"
    if f.get("size", 0) > max_size:
        return "over max size"
    return None


def entry_for(project: str, version: str, f: dict[str, Any], group: str, request_url: str) -> dict[str, Any]:
    return {
        "project": project,
        "version": version,
        "filename": f["filename"],
        "packagetype": f["packagetype"],
        "sha256": f["digests"]["sha256"],
        "size": f["size"],
        "upload_time": f.get("upload_time_iso_8601") or f.get("upload_time"),
        # The JSON API's url can be relative (../../packages/...): resolve it against the request.
        "url": urljoin(request_url, f["url"]),
        "group": group,
        "path": f"files/{canonicalize_name(project)}/{f['filename']}",
    }


class PyPI:
    """The JSON API, with retries; one shared client (HTTP/1.1 keep-alive) for all threads."""

    def __init__(self) -> None:
        self.client = httpx.Client(timeout=httpx.Timeout(60, connect=20), follow_redirects=True,
                                   headers={"User-Agent": USER_AGENT},
                                   limits=httpx.Limits(max_connections=16, max_keepalive_connections=16))

    def project(self, name: str) -> tuple[str, dict[str, Any] | None]:
        url = f"{PYPI}/pypi/{name}/json"
        for attempt in range(4):
            try:
                response = self.client.get(url)
                if response.status_code == 404:
                    return url, None
                response.raise_for_status()
                return str(response.url), response.json()
            except (httpx.HTTPError, ValueError):
                if attempt == 3:
                    return url, None
                time.sleep(1 + 2 * attempt)
        return url, None


def plan_top(pypi: PyPI, names: list[str], max_size: int, skipped: Counter[str],
             progress: Any) -> list[dict[str, Any]]:
    """The latest version's sdist and every wheel of each project (in CSV order)."""
    entries: list[dict[str, Any]] = []
    task = progress.add_task("JSON API: top projects", total=len(names))
    with ThreadPoolExecutor(8) as pool:
        for name, (url, data) in zip(names, pool.map(pypi.project, names)):
            progress.advance(task)
            if data is None:
                skipped["top: project not found"] += 1
                continue
            version = data["info"]["version"]
            files = data.get("releases", {}).get(version) or data.get("urls") or []
            if not files:
                skipped["top: latest version has no files"] += 1
                continue
            sdists = 0
            for f in files:
                reason = skip_reason(version, f, max_size)
                if reason is None and f["packagetype"] == "sdist":
                    sdists += 1
                    if sdists > 1:
                        reason = "second sdist of the release"
                if reason:
                    skipped[f"top: {reason}"] += 1
                    continue
                entries.append(entry_for(data["info"]["name"], version, f, "top", url))
    return entries


def _prefetch(pool: ThreadPoolExecutor, fn: Any, items: Iterable[str], ahead: int) -> Iterator[tuple[str, Any]]:
    """Results of ``fn`` over ``items`` in order, at most ``ahead`` requests in flight."""
    queue: collections.deque[tuple[str, Any]] = collections.deque()
    iterator = iter(items)
    for item in iterator:
        queue.append((item, pool.submit(fn, item)))
        if len(queue) >= ahead:
            break
    while queue:
        item, future = queue.popleft()
        yield item, future.result()
        nxt = next(iterator, None)
        if nxt is not None:
            queue.append((nxt, pool.submit(fn, nxt)))


def plan_history(pypi: PyPI, all_names: list[str], n_files: int, seed: int, max_size: int,
                 max_lookups: int, taken: set[str], skipped: Counter[str], progress: Any) -> list[dict[str, Any]]:
    """``n_files`` files spread over YEARS from seeded random projects and versions."""
    rng = random.Random(seed)
    head, tail = all_names[:1000], all_names[1000:]
    rng.shuffle(head)
    rng.shuffle(tail)

    def draws() -> Iterator[str]:
        h = t = 0
        while h < len(head) or t < len(tail):
            if (rng.random() < LONG_TAIL_SHARE and t < len(tail)) or h >= len(head):
                t += 1
                yield tail[t - 1]
            else:
                h += 1
                yield head[h - 1]

    quota = {year: n_files // len(YEARS) + (1 if i < n_files % len(YEARS) else 0) for i, year in enumerate(YEARS)}
    chosen: dict[int, list[dict[str, Any]]] = {year: [] for year in YEARS}
    kinds: dict[int, Counter[str]] = {year: Counter() for year in YEARS}
    reserve: dict[int, list[dict[str, Any]]] = {year: [] for year in YEARS}
    task = progress.add_task("JSON API: history projects", total=max_lookups)
    lookups = 0
    pick = random.Random(seed + 1)
    with ThreadPoolExecutor(8) as pool:
        for name, (url, data) in _prefetch(pool, pypi.project, draws(), 16):
            lookups += 1
            progress.advance(task)
            if data is not None:
                # {year: {version: [file, ...]}} of the kept files of this project
                by_year: dict[int, dict[str, list[dict[str, Any]]]] = collections.defaultdict(dict)
                for version, files in sorted(data.get("releases", {}).items()):
                    for f in files:
                        reason = skip_reason(version, f, max_size)
                        if reason:
                            skipped[f"history candidates: {reason}"] += 1
                            continue
                        if f["filename"] in taken:
                            continue
                        year = int((f.get("upload_time_iso_8601") or f["upload_time"])[:4])
                        if year in quota:
                            by_year[year].setdefault(version, []).append(f)
                per_project = 0
                for year in sorted(by_year, key=lambda y: pick.random()):
                    versions = sorted(by_year[year])
                    pick.shuffle(versions)
                    for version in versions[:1]:
                        files = by_year[year][version]
                        # the kind of file this year has least of so far, then a random one of it
                        least = min({file_kind(f["filename"]) for f in files}, key=lambda k: (kinds[year][k], k))
                        f = pick.choice([f for f in files if file_kind(f["filename"]) == least])
                        entry = entry_for(data["info"]["name"], version, f, "history", url)
                        if len(chosen[year]) < quota[year] and per_project < 5:
                            chosen[year].append(entry)
                            kinds[year][least] += 1
                            taken.add(f["filename"])
                            per_project += 1
                        elif len(reserve[year]) < 200:
                            reserve[year].append(entry)
            else:
                skipped["history: project not found"] += 1
            if all(len(chosen[y]) >= quota[y] for y in YEARS) or lookups >= max_lookups:
                break
    progress.update(task, total=lookups, completed=lookups)
    # Years left short give their quota to the others, from the files set aside.
    missing = n_files - sum(len(v) for v in chosen.values())
    years = [y for y in YEARS if reserve[y]]
    while missing > 0 and years:
        for year in list(years):
            while reserve[year] and reserve[year][0]["filename"] in taken:
                reserve[year].pop(0)
            if not reserve[year]:
                years.remove(year)
                continue
            entry = reserve[year].pop(0)
            chosen[year].append(entry)
            taken.add(entry["filename"])
            missing -= 1
            if missing == 0:
                break
    return [e for year in YEARS for e in chosen[year]]


# ---------------------------------------------------------------------------------------------
# Downloading
# ---------------------------------------------------------------------------------------------

def sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def download(client: httpx.Client, entry: dict[str, Any], root: Path, on_bytes: Any) -> str | None:
    """Stream one file to disk and check its sha256; None on success, else the error."""
    dest = root / entry["path"]
    if dest.is_file() and dest.stat().st_size == entry["size"] and sha256_file(dest) == entry["sha256"]:
        on_bytes(entry["size"])
        return None
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + f".part{threading.get_ident()}")
    error = "not attempted"
    for attempt in range(4):
        digest = hashlib.sha256()
        done = 0
        try:
            with client.stream("GET", entry["url"]) as response:
                response.raise_for_status()
                with part.open("wb") as handle:
                    for chunk in response.iter_bytes(1 << 20):
                        handle.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        on_bytes(len(chunk))
            if digest.hexdigest() != entry["sha256"]:
                error = f"sha256 mismatch ({digest.hexdigest()})"
            else:
                part.replace(dest)
                return None
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        on_bytes(-done)
        part.unlink(missing_ok=True)
        time.sleep(1 + 2 * attempt)
    return error


def download_all(entries: list[dict[str, Any]], root: Path, threads: int, progress: Any) -> dict[str, str]:
    total = sum(e["size"] for e in entries)
    task = progress.add_task(f"download {len(entries)} files", total=total)
    lock = threading.Lock()

    def on_bytes(n: int) -> None:
        with lock:
            progress.advance(task, n)

    client = httpx.Client(timeout=httpx.Timeout(120, connect=20), follow_redirects=True,
                          headers={"User-Agent": USER_AGENT},
                          limits=httpx.Limits(max_connections=threads * 2, max_keepalive_connections=threads * 2))
    failures: dict[str, str] = {}
    with ThreadPoolExecutor(threads) as pool:
        for entry, error in zip(entries, pool.map(lambda e: download(client, e, root, on_bytes), entries)):
            if error:
                failures[entry["filename"]] = error
    client.close()
    return failures


# ---------------------------------------------------------------------------------------------
# Inspecting (reading only: nothing is extracted, built or run)
# ---------------------------------------------------------------------------------------------

_GENERATORS = [
    ("bdist_wheel", "setuptools"), ("setuptools", "setuptools"), ("hatchling", "hatchling"),
    ("flit", "flit"), ("poetry", "poetry-core"), ("pdm-backend", "pdm-backend"), ("pdm", "pdm-backend"),
    ("maturin", "maturin"), ("scikit-build-core", "scikit-build-core"), ("skbuild", "scikit-build"),
    ("scikit-build", "scikit-build"), ("meson", "meson-python"), ("mesonpy", "meson-python"),
    ("uv", "uv"), ("whey", "whey"), ("enscons", "enscons"), ("sip", "sip"), ("pbr", "pbr"),
    ("py-build-cmake", "py-build-cmake"), ("wheel", "setuptools"),
]
_BACKENDS = {
    "setuptools.build_meta": "setuptools", "setuptools.build_meta:__legacy__": "setuptools",
    "hatchling.build": "hatchling", "flit_core.buildapi": "flit", "flit.buildapi": "flit",
    "poetry.core.masonry.api": "poetry-core", "poetry.masonry.api": "poetry-core",
    "pdm.backend": "pdm-backend", "pdm.pep517.api": "pdm-backend", "maturin": "maturin",
    "scikit_build_core.build": "scikit-build-core", "mesonpy": "meson-python", "uv_build": "uv",
}


def builder_of_generator(generator: str) -> str:
    head = generator.strip().split()[0].lower() if generator.strip() else ""
    for prefix, name in _GENERATORS:
        if head.startswith(prefix):
            return name
    return head or "(none)"


_MV_FIELDS_SINCE = {  # fields and the Metadata-Version that standardized them
    "license-file": "2.4", "license-expression": "2.4", "dynamic": "2.2",
    "description-content-type": "2.1", "provides-extra": "2.1",
    "requires-dist": "1.2", "requires-python": "1.2", "project-url": "1.2",
    "maintainer": "1.2", "maintainer-email": "1.2", "requires-external": "1.2",
    "classifier": "1.1", "download-url": "1.1",
}


def metadata_notes(raw: bytes, kind: str) -> tuple[str | None, list[str]]:
    """(Metadata-Version, notes) of a PKG-INFO/METADATA file: what a strict check may trip on."""
    from packaging.metadata import ExceptionGroup as MetaErrors  # type: ignore[attr-defined]
    from packaging.metadata import Metadata, parse_email

    notes: list[str] = []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        notes.append("metadata: not UTF-8")
        text = raw.decode("utf-8", errors="replace")
    headers = email.parser.Parser().parsestr(text, headersonly=True)
    mv = headers.get("Metadata-Version")
    try:
        mv_key = Version(mv) if mv else None
    except InvalidVersion:
        mv_key = None
    present = {k.lower() for k in headers.keys()}
    for field_name, since in _MV_FIELDS_SINCE.items():
        if field_name in present and mv_key is not None and mv_key < Version(since):
            notes.append(f"metadata: {field_name} under Metadata-Version {mv}")
    parsed, unparsed = parse_email(raw)
    for key in unparsed:
        notes.append(f"metadata: unparsed field {key}")
    try:
        meta = Metadata.from_raw(parsed, validate=True)
    except MetaErrors as group:
        for exc in group.exceptions:
            message = re.sub(r"'[^']*'", "'…'", str(exc))
            notes.append(f"metadata invalid: {message[:120]}")
        meta = None
    except Exception as exc:  # noqa: BLE001 - anything packaging raises is a note
        notes.append(f"metadata error: {type(exc).__name__}")
        meta = None
    try:
        import trove_classifiers

        for classifier in parsed.get("classifiers", []):
            if classifier in trove_classifiers.deprecated_classifiers:
                notes.append("metadata: deprecated classifier")
            elif classifier not in trove_classifiers.classifiers:
                notes.append("metadata: unknown classifier")
    except ImportError:
        pass
    if meta is not None and meta.version is not None and meta.version.local:
        notes.append("metadata: local version")
    return mv, sorted(set(notes))


def inspect_file(path_str: str, filename: str, project: str, version: str) -> dict[str, Any]:
    """metadata_version, builder and notes of one file, read without extracting it."""
    path = Path(path_str)
    kind = file_kind(filename)
    notes: list[str] = []
    metadata: bytes | None = None
    builder = "(unknown)"
    normalized = canonicalize_name(project).replace("-", "_")
    try:
        if kind == "wheel":
            if not filename.startswith(normalized + "-"):
                notes.append("filename: wheel name not normalized")
            with zipfile.ZipFile(path) as archive:
                infos = archive.infolist()
                names = [i.filename for i in infos]
                if len(names) != len(set(names)):
                    notes.append("zip: duplicate member names")
                if any(i.flag_bits & 0x08 for i in infos):
                    notes.append("zip: data descriptors")
                if any(i.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) for i in infos):
                    notes.append("zip: compression other than stored/deflated")
                if any((i.external_attr >> 16) & 0o170000 == 0o120000 for i in infos):
                    notes.append("zip: symlink members")
                if any(n.startswith("/") or ".." in n.split("/") for n in names):
                    notes.append("zip: absolute or .. paths")
                if archive.comment:
                    notes.append("zip: archive comment")
                dist_infos = {n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")}
                if len(dist_infos) != 1:
                    notes.append(f"wheel: {len(dist_infos)} .dist-info dirs")
                if dist_infos:
                    d = sorted(dist_infos)[0]
                    if f"{d}/METADATA" in names:
                        metadata = archive.read(f"{d}/METADATA")
                    if f"{d}/WHEEL" in names:
                        wheel = email.parser.Parser().parsestr(archive.read(f"{d}/WHEEL").decode("utf-8", "replace"))
                        builder = builder_of_generator(wheel.get("Generator") or "")
                    if f"{d}/RECORD" not in names:
                        notes.append("wheel: no RECORD")
        else:
            if not re.fullmatch(re.escape(normalized) + "-" + re.escape(version) + r"\.tar\.gz", filename):
                notes.append("filename: sdist not PEP 625")
            members: list[tuple[str, str]] = []  # (name, type)
            pyproject: bytes | None = None
            has_setup_py = False
            if kind == "zip":
                with zipfile.ZipFile(path) as archive:
                    infos = archive.infolist()
                    if any(i.flag_bits & 0x08 for i in infos):
                        notes.append("zip: data descriptors")
                    members = [(i.filename, "dir" if i.is_dir() else "file") for i in infos]
                    tops = {n.split("/")[0] for n, _ in members}
                    for name, _ in members:
                        parts = name.split("/")
                        if len(parts) == 2 and parts[1] == "PKG-INFO" and metadata is None:
                            metadata = archive.read(name)
                        elif len(parts) == 2 and parts[1] == "pyproject.toml":
                            pyproject = archive.read(name)
                        elif len(parts) == 2 and parts[1] == "setup.py":
                            has_setup_py = True
            else:
                with tarfile.open(path, "r:gz") as archive:
                    if archive.pax_headers:
                        notes.append("tar: global pax header")
                    for member in archive:
                        name = member.name.removeprefix("./")
                        kind_name = ("file" if member.isfile() else "dir" if member.isdir() else
                                     "symlink" if member.issym() else "hardlink" if member.islnk() else "other")
                        members.append((name, kind_name))
                        parts = name.split("/")
                        if len(parts) == 2 and parts[1] == "PKG-INFO" and member.isfile() and metadata is None:
                            metadata = archive.extractfile(member).read()  # type: ignore[union-attr]
                        elif len(parts) == 2 and parts[1] == "pyproject.toml" and member.isfile():
                            pyproject = archive.extractfile(member).read()  # type: ignore[union-attr]
                        elif len(parts) == 2 and parts[1] == "setup.py":
                            has_setup_py = True
                for name, kind_name in members:
                    if kind_name in ("symlink", "hardlink", "other"):
                        notes.append(f"tar: {kind_name} members")
                        break
            tops = {n.split("/")[0] for n, _ in members if n}
            if len(tops) != 1:
                notes.append(f"sdist: {len(tops)} top-level entries")
            if any(n.startswith("/") or ".." in n.split("/") for n, _ in members):
                notes.append("sdist: absolute or .. paths")
            if metadata is None:
                notes.append("sdist: no PKG-INFO in the top dir")
            backend = None
            if pyproject is not None:
                try:
                    backend = tomllib.loads(pyproject.decode("utf-8", "replace")).get("build-system", {}).get("build-backend")
                except tomllib.TOMLDecodeError:
                    notes.append("sdist: pyproject.toml does not parse")
            if backend:
                builder = _BACKENDS.get(backend, backend)
            elif has_setup_py:
                builder = "setuptools (setup.py)"
            elif pyproject is not None:
                builder = "setuptools (pyproject.toml, no backend)"
            else:
                builder = "(none found)"
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as exc:
        notes.append(f"archive unreadable: {type(exc).__name__}")
    mv = None
    if metadata is not None:
        mv, meta_notes = metadata_notes(metadata, kind)
        notes.extend(meta_notes)
    elif kind == "wheel":
        notes.append("wheel: no METADATA")
    return {"metadata_version": mv, "builder": builder, "notes": sorted(set(notes))}


def inspect_all(entries: list[dict[str, Any]], root: Path, progress: Any) -> None:
    todo = [e for e in entries if "metadata_version" not in e and (root / e["path"]).is_file()]
    task = progress.add_task(f"inspect {len(todo)} files", total=len(todo))
    with ProcessPoolExecutor(max(1, (os.cpu_count() or 2))) as pool:
        futures = [(e, pool.submit(inspect_file, str(root / e["path"]), e["filename"], e["project"], e["version"]))
                   for e in todo]
        for entry, future in futures:
            try:
                entry.update(future.result())
            except Exception as exc:  # noqa: BLE001 - a file we cannot read is a finding, not a crash
                entry.update({"metadata_version": None, "builder": "(error)",
                              "notes": [f"inspect failed: {type(exc).__name__}: {exc}"[:200]]})
            progress.advance(task)


# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------

def summarize(entries: list[dict[str, Any]]) -> dict[str, Any]:
    def count(key: Any) -> dict[str, int]:
        return dict(sorted(Counter(key(e) for e in entries).items(), key=lambda kv: (-kv[1], str(kv[0]))))

    notes: Counter[str] = Counter()
    for e in entries:
        notes.update(e.get("notes") or [])
    return {
        "files": len(entries),
        "megabytes": round(sum(e["size"] for e in entries) / 1e6, 1),
        "projects": len({canonicalize_name(e["project"]) for e in entries}),
        "by_group": count(lambda e: e["group"]),
        "megabytes_by_group": {g: round(sum(e["size"] for e in entries if e["group"] == g) / 1e6, 1)
                               for g in ("top", "history")},
        "by_year": dict(sorted(Counter(e["upload_time"][:4] for e in entries).items())),
        "history_by_year": dict(sorted(Counter(e["upload_time"][:4] for e in entries
                                               if e["group"] == "history").items())),
        "by_metadata_version": count(lambda e: str(e.get("metadata_version"))),
        "by_extension": count(lambda e: file_kind(e["filename"])),
        "by_builder": count(lambda e: e.get("builder") or "(not inspected)"),
        "by_builder_wheels": count(lambda e: (e.get("builder") or "(not inspected)")
                                   if e["packagetype"] == "bdist_wheel" else "(sdist)"),
        "by_platform": count(lambda e: _platform_family(e["filename"])),
        "notes": dict(notes.most_common()),
    }


def _platform_family(filename: str) -> str:
    if not filename.endswith(".whl"):
        return "sdist"
    try:
        tags = parse_wheel_filename(filename)[3]
    except InvalidWheelFilename:
        return "invalid"
    platforms = {t.platform for t in tags}
    families = set()
    for p in platforms:
        m = re.match(r"(manylinux1|manylinux2010|manylinux2014|manylinux_\d+_\d+|musllinux_\d+_\d+|macosx|win_amd64|"
                     r"win32|win_arm64|linux|any|ios|android|emscripten|pyodide)", p)
        families.add(m.group(1) if m else p)
    return "+".join(sorted(families))


def print_summary(summary: dict[str, Any], skipped: Counter[str], failures: dict[str, str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{summary['files']} files, {summary['megabytes']} MB, {summary['projects']} projects[/]"
                  f"  by group: {summary['by_group']}  MB by group: {summary['megabytes_by_group']}")
    for key in ("history_by_year", "by_year", "by_metadata_version", "by_extension", "by_builder",
                "by_builder_wheels", "by_platform", "notes"):
        table = Table(title=key.replace("_", " "), show_header=False, box=None)
        items = list(summary[key].items())
        for k, v in items[:40]:
            table.add_row(str(k), str(v))
        if len(items) > 40:
            table.add_row(f"... {len(items) - 40} more", "")
        console.print(table)
    table = Table(title="skipped", show_header=False, box=None)
    for k, v in sorted(skipped.items(), key=lambda kv: -kv[1]):
        table.add_row(k, str(v))
    console.print(table)
    if failures:
        console.print(f"[red]{len(failures)} downloads failed[/]: " + ", ".join(list(failures)[:10]))


# ---------------------------------------------------------------------------------------------

def load_manifest(root: Path) -> list[dict[str, Any]]:
    return json.loads((root / MANIFEST).read_text())


def main(argv: list[str] | None = None) -> int:
    from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeRemainingColumn, TransferSpeedColumn)

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="cache dir (env BASTION_CORPUS_DIR)")
    parser.add_argument("--limit-top", type=int, default=1000, help="top projects (default 1000)")
    parser.add_argument("--history", type=int, default=540, help="historical files (default 540)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--max-size", type=int, default=50 * 1024 * 1024, help="bytes (default 50 MB)")
    parser.add_argument("--max-lookups", type=int, default=3000, help="history: project look-ups at most")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--replan", action="store_true", help="ask PyPI again even if a plan with the same options exists")
    parser.add_argument("--reinspect", action="store_true", help="read every file again (metadata version, builder, notes)")
    parser.add_argument("--csv", type=Path, default=CSV_PATH)
    args = parser.parse_args(argv)

    root: Path = args.dir.expanduser()
    root.mkdir(parents=True, exist_ok=True)
    params = {"limit_top": args.limit_top, "history": args.history, "seed": args.seed,
              "max_size": args.max_size, "max_lookups": args.max_lookups, "csv": str(args.csv)}
    info_path = root / INFO
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    started = time.monotonic()

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    if not args.replan and info.get("params") == params and (root / MANIFEST).is_file():
        entries = load_manifest(root)
        skipped = Counter(info.get("skipped", {}))
        print(f"plan: reusing {len(entries)} entries of {root / MANIFEST} (same options; --replan to ask PyPI again)")
    else:
        names = read_csv(args.csv)
        skipped = Counter()
        pypi = PyPI()
        with Progress(*columns, transient=False) as progress:
            entries = plan_top(pypi, names[: args.limit_top], args.max_size, skipped, progress)
            taken = {e["filename"] for e in entries}
            entries += plan_history(pypi, names, args.history, args.seed, args.max_size, args.max_lookups,
                                    taken, skipped, progress)
        # Keep what an earlier run learnt about a file (its inspection) when the plan is remade.
        if (root / MANIFEST).is_file():
            old = {(e["filename"], e["sha256"]): e for e in load_manifest(root)}
            for e in entries:
                prev = old.get((e["filename"], e["sha256"]))
                if prev and "metadata_version" in prev:
                    e.update({k: prev[k] for k in ("metadata_version", "builder", "notes")})
        info = {"params": params, "skipped": dict(skipped), "planned_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (root / MANIFEST).write_text(json.dumps(entries, indent=1))
        info_path.write_text(json.dumps(info, indent=1))
    print(f"plan: {len(entries)} files, {sum(e['size'] for e in entries) / 1e6:.0f} MB")

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn()) as progress:
        failures = download_all(entries, root, args.threads, progress)
    if args.reinspect:
        for e in entries:
            e.pop("metadata_version", None)
    with Progress(*columns) as progress:
        inspect_all(entries, root, progress)
    (root / MANIFEST).write_text(json.dumps(entries, indent=1))
    present = [e for e in entries if e["filename"] not in failures]
    summary = summarize(present)
    info.update({"summary": summary, "failures": failures,
                 "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "seconds": round(time.monotonic() - started, 1)})
    info_path.write_text(json.dumps(info, indent=1))
    print_summary(summary, skipped, failures)
    print(f"manifest: {root / MANIFEST}  info: {info_path}  ({time.monotonic() - started:.0f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
