"""The services one Bastion instance is made of, built from settings (used by the app and the CLI)."""

from __future__ import annotations

import os
import tempfile

from bastion.db import Database, migrate
from bastion.settings import Settings, ensure_data_dir, read_secret_key
from bastion.storage.interface import BlobStore
from bastion.storage.local import LocalBlobStore


class Bastion:
    """Settings, database, blob store and the server secret, wired together."""

    def __init__(self, settings: Settings, *, run_migrations: bool = True) -> None:
        self.settings = settings
        ensure_data_dir(settings)
        if run_migrations:
            migrate(settings.effective_database_url)
        self.db = Database(settings.effective_database_url)
        self.blobs: BlobStore = LocalBlobStore(settings.effective_blob_dir)
        self.secret = read_secret_key(settings)
        self.tmp_dir = settings.data_dir / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def notify_change(self, serial: int) -> None:
        """Tell every process serving this data dir that pages changed (after commit)."""
        path = self.settings.changes_path
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".changes-")
        with os.fdopen(fd, "w") as handle:
            handle.write(str(serial))
        os.replace(tmp, path)

    def close(self) -> None:
        self.db.dispose()
