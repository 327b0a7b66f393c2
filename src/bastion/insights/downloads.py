"""Download counts: buffered in memory on the read hot path, added to the database in batches.

Each process (server worker) keeps its own buffer; ``flush`` adds the buffered counts to the
day's rows with an upsert that *adds*, so any number of workers can flush into the same rows.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bastion.db import Database
from bastion.insights.models import DownloadCount
from bastion.packaging.models import File

# Paths mapped per query: far below SQLite's limit of bound parameters (32766), and one query for
# any ordinary flush (a flush holds the distinct files downloaded in one interval).
PATHS_PER_QUERY = 5000


class DownloadCounter:
    """Downloads counted in memory, per blob path, until the next ``flush``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def count(self, path: str) -> None:
        """Count one download of the blob at ``path`` (``packages/ab/cd/.../name.whl``).

        On the hot path of every file download: a dictionary increment, no I/O."""
        with self._lock:
            self._counts[path] = self._counts.get(path, 0) + 1

    def pending(self) -> dict[str, int]:
        """A copy of the counts not yet flushed."""
        with self._lock:
            return dict(self._counts)

    def flush(self, db: Database, *, day: date | None = None) -> int:
        """Add the buffered counts to ``day`` (default: today, UTC); the number of downloads written.

        The buffer is swapped out at once, so downloads counted during the flush wait for the
        next one. Paths of no known file (deleted since) are dropped. If the database fails, the
        counts are put back (and the error raised), so the next flush writes them.
        """
        with self._lock:
            batch, self._counts = self._counts, {}
        if not batch:
            return 0
        try:
            with db.write() as session:
                return add_downloads(session, batch, day or datetime.now(UTC).date())
        except BaseException:
            self._put_back(batch)
            raise

    def _put_back(self, batch: Mapping[str, int]) -> None:
        with self._lock:
            for path, number in batch.items():
                self._counts[path] = self._counts.get(path, 0) + number


def add_downloads(session: Session, counts: Mapping[str, int], day: date) -> int:
    """Add ``counts`` (blob path -> downloads) to the rows of ``day``; the number of downloads
    added (paths of no known file are left out)."""
    paths = sorted(counts)
    files: dict[str, tuple[int, int]] = {}
    for start in range(0, len(paths), PATHS_PER_QUERY):
        chunk = paths[start:start + PATHS_PER_QUERY]
        for row in session.execute(select(File.path, File.id, File.project_id).where(File.path.in_(chunk))):
            files[row.path] = (row.id, row.project_id)
    # Sorted by file id: concurrent flushes (several workers on PostgreSQL) then lock the rows
    # in the same order and cannot deadlock each other.
    found = sorted((file_id, project_id, counts[path]) for path, (file_id, project_id) in files.items())
    if not found:
        return 0
    session.execute(_adding_upsert(session), [
        {"file_id": file_id, "day": day, "project_id": project_id, "count": number}
        for file_id, project_id, number in found
    ])
    return sum(number for _, _, number in found)


def _adding_upsert(session: Session) -> Any:
    """``INSERT ... ON CONFLICT (file_id, day) DO UPDATE SET count = count + excluded.count``."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(DownloadCount)
    table = DownloadCount.__table__
    return statement.on_conflict_do_update(
        index_elements=[table.c["file_id"], table.c["day"]],
        set_={"count": table.c["count"] + statement.excluded["count"]},
    )
