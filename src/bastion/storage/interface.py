"""The BlobStore interface: content-addressed distribution files and their metadata files."""

from __future__ import annotations

import abc
from pathlib import Path


class BlobStore(abc.ABC):
    """Stores immutable blobs under index paths such as ``packages/ab/cd/<rest>/<filename>``."""

    @abc.abstractmethod
    def put_file(self, path: str, source: Path) -> None:
        """Store the bytes of ``source`` at ``path`` atomically (readers never see a partial blob)."""

    @abc.abstractmethod
    def put_bytes(self, path: str, data: bytes) -> None:
        """Store ``data`` at ``path`` atomically."""

    @abc.abstractmethod
    def delete(self, path: str) -> None:
        """Remove ``path``; no error if it is absent."""

    @abc.abstractmethod
    def exists(self, path: str) -> bool:
        """Whether a blob is stored at ``path``."""

    @abc.abstractmethod
    def local_path(self, path: str) -> Path | None:
        """A filesystem path the server can read the blob from, if the backend has one."""
