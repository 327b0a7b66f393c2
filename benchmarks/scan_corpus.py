"""The benign corpus of the scanning benchmark: the latest release's sdist and one wheel of the
most-downloaded PyPI projects, downloaded into a cache directory and never built or run.

    .venv/bin/python benchmarks/scan_corpus.py                      # top 330 projects -> /tmp/bastion-scan-corpus/benign/
    .venv/bin/python benchmarks/scan_corpus.py --top 50 --cache DIR

Projects come from ``/work/shared/data/top-pypi-packages.csv`` (columns download_count,project,
most popular first). For each project the script reads PyPI's JSON API (``/pypi/NAME/json``) and
takes the latest version's files:

* the **sdist** is downloaded with httpx from the URL the JSON gives and checked against its
  sha256 (``pip download`` of an sdist would run its build hooks to read the metadata: never);
* **one wheel**: ``py3-none-any`` (any pure-Python wheel) if there is one, else the best wheel for
  CPython 3.11 on manylinux x86_64 (the order of ``packaging.tags`` for that interpreter), fetched
  with ``pip download --no-deps --only-binary=:all: --ignore-requires-python --dest DIR URL#sha256=...``
  (a wheel is never built, pip checks the hash, and a release that needs a newer Python than this
  one is still downloaded: it is scanned, not installed).

Files over 40 MB are not downloaded and are recorded as skipped. The run is resumable: a file
already in the cache with the right sha256 is not downloaded again. Layout::

    CACHE/<project>/<filename>
    CACHE/corpus.json      {"files": [{project, version, file, kind, size, sha256, path}], "skipped": [...], ...}

Only pypi.org and files.pythonhosted.org are contacted.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
from packaging.tags import Tag, cpython_tags, compatible_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

DEFAULT_CACHE = Path("/tmp/bastion-scan-corpus/benign")
DEFAULT_CSV = Path("/work/shared/data/top-pypi-packages.csv")
DEFAULT_TOP = 330
MAX_BYTES = 40 * 1024 * 1024
MANIFEST = "corpus.json"


@dataclass
class CorpusFile:
    project: str
    version: str
    file: str
    kind: str  # "sdist" or "wheel"
    size: int
    sha256: str
    path: str  # relative to the cache dir


def top_projects(csv_path: Path = DEFAULT_CSV, n: int = DEFAULT_TOP) -> list[str]:
    out: list[str] = []
    with csv_path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            out.append(row["project"].strip())
            if len(out) >= n:
                break
    return out


def _wheel_tag_ranks() -> dict[Tag, int]:
    """Tag -> priority (lower is better) for CPython 3.11 on manylinux x86_64, like pip's order."""
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(39, 4, -1)]
    platforms += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]
    tags = list(cpython_tags((3, 11), platforms=platforms))
    tags += list(compatible_tags((3, 11), interpreter="cp311", platforms=platforms))
    return {tag: i for i, tag in reversed(list(enumerate(tags)))}


_RANKS = _wheel_tag_ranks()


def _is_pure(tags: frozenset[Tag]) -> bool:
    return any(t.abi == "none" and t.platform == "any" and t.interpreter.startswith("py3") for t in tags)


def choose_wheel(urls: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The wheel to take from a release's files: a pure py3 wheel, else the best cp311 manylinux x86_64."""
    best: tuple[tuple[int, int], dict[str, Any]] | None = None
    for u in urls:
        if u.get("packagetype") != "bdist_wheel":
            continue
        try:
            _, _, _, tags = parse_wheel_filename(u["filename"])
        except Exception:  # noqa: BLE001 - an odd wheel name is simply not a candidate
            continue
        if _is_pure(tags):
            key = (0, 0)
        else:
            ranks = [_RANKS[t] for t in tags if t in _RANKS]
            if not ranks:
                continue
            key = (1, min(ranks))
        if best is None or key < best[0]:
            best = (key, u)
    return best[1] if best else None


def choose_sdist(urls: list[dict[str, Any]]) -> dict[str, Any] | None:
    sdists = [u for u in urls if u.get("packagetype") == "sdist"]
    # Prefer .tar.gz (PEP 625), then .zip, then anything else.
    sdists.sort(key=lambda u: (not u["filename"].endswith(".tar.gz"), not u["filename"].endswith(".zip")))
    return sdists[0] if sdists else None


def sha256_of(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class Downloader:
    def __init__(self, cache: Path, *, pip: list[str], log=print) -> None:
        self.cache = cache
        self.pip = pip
        self.log = log
        self.client = httpx.Client(timeout=httpx.Timeout(60.0, connect=20.0), follow_redirects=True,
                                   headers={"User-Agent": "bastion-scan-benchmark/1.0"})
        self.lock = threading.Lock()

    def close(self) -> None:
        self.client.close()

    def _present(self, dest: Path, sha: str) -> bool:
        return dest.is_file() and sha256_of(dest) == sha

    def project(self, name: str) -> tuple[list[CorpusFile], list[dict[str, Any]]]:
        files: list[CorpusFile] = []
        skipped: list[dict[str, Any]] = []
        try:
            data = self._json(name)
        except Exception as exc:  # noqa: BLE001
            return files, [{"project": name, "kind": "project", "reason": f"json: {exc}"}]
        version = data["info"]["version"]
        urls = data.get("urls") or []
        pdir = self.cache / canonicalize_name(name)
        for kind, chosen in (("sdist", choose_sdist(urls)), ("wheel", choose_wheel(urls))):
            if chosen is None:
                skipped.append({"project": name, "version": version, "kind": kind,
                                "reason": f"no {'sdist' if kind == 'sdist' else 'py3-none-any or cp311 manylinux x86_64 wheel'}"})
                continue
            fn, size, sha = chosen["filename"], int(chosen["size"]), chosen["digests"]["sha256"]
            if size > MAX_BYTES:
                skipped.append({"project": name, "version": version, "kind": kind, "file": fn, "size": size,
                                "reason": "over 40 MB"})
                continue
            dest = pdir / fn
            try:
                if not self._present(dest, sha):
                    pdir.mkdir(parents=True, exist_ok=True)
                    if kind == "sdist":
                        self._fetch(chosen["url"], dest, sha)
                    else:
                        self._pip_wheel(chosen["url"], dest, sha)
            except Exception as exc:  # noqa: BLE001
                skipped.append({"project": name, "version": version, "kind": kind, "file": fn, "size": size,
                                "reason": f"download failed: {exc}"[:300]})
                continue
            files.append(CorpusFile(name, version, fn, kind, size, sha, str(dest.relative_to(self.cache))))
        return files, skipped

    def _json(self, name: str) -> dict[str, Any]:
        for attempt in range(3):
            try:
                r = self.client.get(f"https://pypi.org/pypi/{name}/json")
                r.raise_for_status()
                data = r.json()
                # Some mirrors give relative file URLs: resolve them against the JSON's own URL.
                for u in data.get("urls") or []:
                    u["url"] = urljoin(str(r.url), u["url"])
                return data
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code == 404:
                    raise
                if attempt == 2:
                    raise
            except httpx.TransportError:
                if attempt == 2:
                    raise
            time.sleep(2 * (attempt + 1))
        raise AssertionError("unreachable")

    def _fetch(self, url: str, dest: Path, sha: str) -> None:
        """An sdist, with httpx, checked against the JSON's sha256 (written aside, then renamed)."""
        for attempt in range(3):
            tmp = dest.with_name(dest.name + ".part")
            try:
                h = hashlib.sha256()
                with self.client.stream("GET", url) as r, tmp.open("wb") as fh:
                    r.raise_for_status()
                    for chunk in r.iter_bytes(1 << 16):
                        h.update(chunk)
                        fh.write(chunk)
                if h.hexdigest() != sha:
                    raise ValueError(f"sha256 mismatch for {dest.name}")
                os.replace(tmp, dest)
                return
            except (httpx.TransportError, ValueError, httpx.HTTPStatusError):
                tmp.unlink(missing_ok=True)
                if attempt == 2:
                    raise
                time.sleep(2 * (attempt + 1))

    def _pip_wheel(self, url: str, dest: Path, sha: str) -> None:
        """A wheel, with ``pip download --no-deps --only-binary=:all:`` (never builds; pip checks the hash)."""
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".pip-") as tmp:
            cmd = [*self.pip, "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
                   "--disable-pip-version-check", "--ignore-requires-python", "--quiet", "--dest", tmp, f"{url}#sha256={sha}"]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            got = Path(tmp) / dest.name
            if proc.returncode != 0 or not got.is_file():
                raise RuntimeError(f"pip download: {proc.stderr.strip()[-240:]}")
            if sha256_of(got) != sha:
                raise ValueError(f"sha256 mismatch for {dest.name}")
            os.replace(got, dest)


def build_corpus(cache: Path = DEFAULT_CACHE, *, top: int = DEFAULT_TOP, csv_path: Path = DEFAULT_CSV,
                 workers: int = 4, log=print) -> dict[str, Any]:
    cache.mkdir(parents=True, exist_ok=True)
    names = top_projects(csv_path, top)
    pip = [sys.executable, "-m", "pip"]
    dl = Downloader(cache, pip=pip, log=log)
    results: dict[str, tuple[list[CorpusFile], list[dict[str, Any]]]] = {}
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futs = {pool.submit(dl.project, n): n for n in names}
            for i, fut in enumerate(as_completed(futs), 1):
                name = futs[fut]
                files, skipped = fut.result()
                results[name] = (files, skipped)
                log(f"[{i}/{len(names)}] {name}: {', '.join(f.file for f in files) or '-'}"
                    + (f"  (skipped: {'; '.join(s['kind'] + ' ' + s['reason'] for s in skipped)})" if skipped else ""))
                if i % 20 == 0:
                    _write_manifest(cache, names, results, top, started, partial=True)
    finally:
        dl.close()
    return _write_manifest(cache, names, results, top, started, partial=False)


def _write_manifest(cache: Path, names: list[str], results, top: int, started: float, *, partial: bool) -> dict[str, Any]:
    files = [asdict(f) for n in names if n in results for f in results[n][0]]
    skipped = [s for n in names if n in results for s in results[n][1]]
    manifest = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": str(DEFAULT_CSV),
        "top": top,
        "complete": not partial,
        "projects_tried": len(results),
        "projects_with_files": sum(1 for n in results if results[n][0]),
        "files": files,
        "skipped": skipped,
        "seconds": round(time.monotonic() - started, 1),
    }
    tmp = cache / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, cache / MANIFEST)
    return manifest


def load_corpus(cache: Path = DEFAULT_CACHE) -> dict[str, Any]:
    """The manifest, with only the files actually present in the cache (for benchmarks/scan.py)."""
    manifest = json.loads((cache / MANIFEST).read_text())
    manifest["files"] = [f for f in manifest["files"] if (cache / f["path"]).is_file()]
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"cache directory (default {DEFAULT_CACHE})")
    ap.add_argument("--top", type=int, default=DEFAULT_TOP, help=f"how many of the top projects (default {DEFAULT_TOP})")
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args(argv)
    manifest = build_corpus(args.cache, top=args.top, csv_path=args.csv, workers=args.workers,
                            log=lambda m: print(m, flush=True))
    total = sum(f["size"] for f in manifest["files"])
    print(f"done: {manifest['projects_with_files']}/{manifest['projects_tried']} projects with files, "
          f"{len(manifest['files'])} files, {total / 1e6:.1f} MB, {len(manifest['skipped'])} skipped, "
          f"{manifest['seconds']} s -> {args.cache / MANIFEST}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
