"""BlobStore on a local directory: the tree nginx or a CDN can serve as it is."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from bastion.storage.interface import BlobStore


class LocalBlobStore(BlobStore):
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _target(self, path: str) -> Path:
        target = (self.root / path).resolve()
        if self.root not in target.parents:
            raise ValueError(f"blob path escapes the store: {path!r}")
        return target

    def _atomic_write(self, target: Path, writer) -> None:  # type: ignore[no-untyped-def]
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                writer(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_file(self, path: str, source: Path) -> None:
        def copy(handle) -> None:  # type: ignore[no-untyped-def]
            with open(source, "rb") as src:
                shutil.copyfileobj(src, handle, 1024 * 1024)

        self._atomic_write(self._target(path), copy)

    def put_bytes(self, path: str, data: bytes) -> None:
        self._atomic_write(self._target(path), lambda handle: handle.write(data))

    def delete(self, path: str) -> None:
        target = self._target(path)
        target.unlink(missing_ok=True)
        for parent in target.parents:
            if parent == self.root:
                break
            try:
                parent.rmdir()
            except OSError:
                break

    def exists(self, path: str) -> bool:
        return self._target(path).is_file()

    def local_path(self, path: str) -> Path | None:
        return self._target(path)
