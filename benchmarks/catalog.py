"""Load a synthetic catalog into a fresh Bastion data dir, in-process, through the service layer.

Running every file through ``bastion.packaging.upload.upload()`` would re-render the whole simple
index for each new project (10,000 renders of a growing 10,000-name page) and re-render a project's
pages once per file. This loader makes the same rows with the same functions instead, batched:

* ``create_project`` (name checks, owner role, journal entry, ``project.created`` event),
* ``Release`` and ``File`` rows filled exactly as ``upload._store`` fills them (digests, blob path
  from ``upload.blob_path``, PEP 658 metadata blob and its sha256, python_version from the
  filename checks), a ``DeletedFilename`` row, a ``journal`` entry and a ``file.uploaded`` event per
  file, blobs written through ``bastion.blobs``,
* ``refresh_project_pages`` once per project (after all its files), and once with ``index=True``
  at the end,

one write transaction per batch of projects. Files are real, small, valid wheels and sdists.

    .venv/bin/python benchmarks/catalog.py DATA_DIR [--projects 10000] [--files-per-project 5]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from packaging.metadata import parse_email  # noqa: E402
from packaging.utils import canonicalize_version  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn  # noqa: E402

import dists  # noqa: E402
from bastion.accounts import service as accounts  # noqa: E402
from bastion.accounts.models import User  # noqa: E402
from bastion.authz import OPERATOR  # noqa: E402
from bastion.db import utcnow  # noqa: E402
from bastion.events import CLI_CONTEXT, record_event  # noqa: E402
from bastion.packaging import checks  # noqa: E402
from bastion.packaging.models import DeletedFilename, File, Release  # noqa: E402
from bastion.packaging.service import create_project, find_project, journal  # noqa: E402
from bastion.packaging.upload import blob_path  # noqa: E402
from bastion.services import Bastion  # noqa: E402
from bastion.settings import load_settings  # noqa: E402
from bastion.simple.render import refresh_project_pages  # noqa: E402


_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="blob")


@dataclass
class CatalogInfo:
    projects: list[str]
    files: int
    bytes: int
    seconds: float
    serial: int


def scale_project_name(i: int) -> str:
    return f"scale-pkg-{i:05d}"


_METADATA_CACHE: dict[bytes, object] = {}


def _parse_metadata(raw: bytes, filename: str):  # type: ignore[no-untyped-def]
    """checks.parse_core_metadata, once per distinct METADATA (a wheel and its sdist share one)."""
    parsed = _METADATA_CACHE.get(raw)
    if parsed is None:
        if len(_METADATA_CACHE) > 64:
            _METADATA_CACHE.clear()
        parsed = _METADATA_CACHE[raw] = checks.parse_core_metadata(raw, filename)
    return parsed


def _add_project(session, bastion: Bastion, owner, name: str, files: list[dists.Dist],  # type: ignore[no-untyped-def]
                 writes: list[Future]) -> tuple[int, int]:
    """One project with its releases and files, as the upload path stores them. Returns (serial, bytes).

    Blob writes (each fsynced by the blob store) go to ``writes``' thread pool; the caller waits for
    them before committing, so no committed row lacks its blob."""
    prohibited = frozenset(bastion.settings.prohibited_names)
    project = create_project(session, name, owner, prohibited=prohibited, context=CLI_CONTEXT,
                             secret=bastion.secret)
    releases: dict[str, Release] = {}
    serial = project.last_serial
    total = 0
    for dist in files:
        metadata = _parse_metadata(dist.metadata, dist.filename)
        if dist.kind == "wheel":
            parsed = checks.check_wheel_filename(dist.filename, metadata)
        else:
            parsed = checks.check_sdist_filename(dist.filename, metadata)
        version = str(metadata.version)
        release = releases.get(version)
        if release is None:
            raw, _ = parse_email(dist.metadata)
            release = Release(
                project_id=project.id, version=version, canonical_version=canonicalize_version(version),
                requires_python=str(metadata.requires_python) if metadata.requires_python else None,
                core_metadata=dict(raw),
            )
            session.add(release)
            session.flush()
            releases[version] = release
        digests = {
            "md5_digest": hashlib.md5(dist.data, usedforsecurity=False).hexdigest(),
            "sha256_digest": hashlib.sha256(dist.data).hexdigest(),
            "blake2_256_digest": hashlib.blake2b(dist.data, digest_size=32).hexdigest(),
        }
        path = blob_path(digests["blake2_256_digest"], dist.filename)
        writes.append(_POOL.submit(bastion.blobs.put_bytes, path, dist.data))
        metadata_sha256 = None
        if dist.kind == "wheel":
            writes.append(_POOL.submit(bastion.blobs.put_bytes, path + ".metadata", dist.metadata))
            metadata_sha256 = hashlib.sha256(dist.metadata).hexdigest()
        filetype = "bdist_wheel" if dist.kind == "wheel" else "sdist"
        session.add(File(
            release_id=release.id, project_id=project.id, filename=dist.filename, packagetype=filetype,
            python_version=parsed.python_version, size=len(dist.data), md5_digest=digests["md5_digest"],
            sha256_digest=digests["sha256_digest"], blake2_256_digest=digests["blake2_256_digest"], path=path,
            requires_python=release.requires_python, metadata_sha256=metadata_sha256, upload_time=utcnow(),
            uploader_id=owner.id if owner is not None else None,
        ))
        session.add(DeletedFilename(filename=dist.filename))
        total += len(dist.data)
        serial = journal(session, project, f"add {parsed.python_version} file {dist.filename}",
                         version=version, actor_id=owner.id if owner is not None else None)
        record_event(session, "file.uploaded", actor_id=owner.id if owner is not None else None,
                     actor=owner.username if owner is not None else None,
                     subject=f"project:{project.normalized_name}", context=CLI_CONTEXT, secret=bastion.secret,
                     details={"filename": dist.filename, "version": version, "sha256": digests["sha256_digest"],
                              "token_id": None})
    project.total_size = total
    refresh_project_pages(session, project.id, versions=list(releases))
    return serial, total


def load_catalog(data_dir: Path, *, projects: int, files_per_project: int, extra: list[list[dists.Dist]] = (),  # type: ignore[assignment]
                 batch: int = 200, user: tuple[str, str, str] | None = None, show_progress: bool = True) -> CatalogInfo:
    """Fill ``data_dir`` (new or empty) with ``projects`` projects of ``files_per_project`` files each,
    plus the projects in ``extra`` (each a list of files of one project)."""
    start = time.perf_counter()
    bastion = Bastion(load_settings(data_dir))
    names = [scale_project_name(i) for i in range(projects)]
    work: list[tuple[str, list[dists.Dist] | None]] = [(n, None) for n in names]
    work += [(group[0].project, group) for group in extra]
    files = 0
    size = 0
    serial = 0
    last_project_id = None
    try:
        owner_id = None
        if user is not None:
            with bastion.db.write() as session:
                owner_id = accounts.create_user(session, user[0], user[1], user[2], principal=OPERATOR,
                                                secret=bastion.secret).id
        columns = [TextColumn("[bold]catalog"), BarColumn(), MofNCompleteColumn(), TextColumn("projects"),
                   TimeElapsedColumn(), TimeRemainingColumn()]
        with Progress(*columns, disable=not show_progress, transient=False) as progress:
            task = progress.add_task("catalog", total=len(work))
            for offset in range(0, len(work), batch):
                with bastion.db.write() as session:
                    owner = session.get(User, owner_id) if owner_id is not None else None
                    writes: list[Future] = []
                    for name, group in work[offset:offset + batch]:
                        group = group if group is not None else dists.project_files(name, files_per_project)
                        serial, added = _add_project(session, bastion, owner, name, group, writes)
                        files += len(group)
                        size += added
                        progress.advance(task)
                    for write in writes:
                        write.result()  # raises if a blob could not be written: the batch rolls back
                    last_project_id = find_project(session, work[min(offset + batch, len(work)) - 1][0]).id
        with bastion.db.write() as session:  # the simple index, rendered once for the whole catalog
            refresh_project_pages(session, last_project_id, index=True)
        bastion.notify_change(serial)
    finally:
        bastion.close()
    return CatalogInfo(projects=names, files=files, bytes=size, seconds=time.perf_counter() - start, serial=serial)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--projects", type=int, default=10_000)
    parser.add_argument("--files-per-project", type=int, default=5)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()
    info = load_catalog(args.data_dir, projects=args.projects, files_per_project=args.files_per_project,
                        batch=args.batch)
    print(f"{len(info.projects)} projects, {info.files} files, {info.bytes / 1e6:.1f} MB of blobs "
          f"in {info.seconds:.1f} s (serial {info.serial})")


if __name__ == "__main__":
    main()
