"""The services one Bastion instance is made of, built from settings (used by the app and the CLI)."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from collections.abc import Iterable
from typing import TYPE_CHECKING

from bastion.changes import ChangeMarker
from bastion.db import Database, migrate
from bastion.insights.downloads import DownloadCounter
from bastion.mail import Mailer, MailError, Message, make_mailer
from bastion.accounts.ratelimit import AttemptLimiter
from bastion.settings import Settings, ensure_data_dir, read_encryption_key, read_secret_key
from bastion.storage.interface import BlobStore
from bastion.storage.local import LocalBlobStore
from bastion.tasks import TaskRunner, ThreadTaskRunner

if TYPE_CHECKING:
    from bastion.scanning.scanner import Scanner
    from bastion.scanning.service import NameGuard
    from bastion.tuf.service import SnapshotWorker

mail_logger = logging.getLogger("bastion.mail")


class Bastion:
    """Settings, database, blob store and the server secret, wired together."""

    def __init__(self, settings: Settings, *, run_migrations: bool = True) -> None:
        self.settings = settings
        ensure_data_dir(settings)
        if run_migrations:
            migrate(settings.effective_database_url)
        self.db = Database(settings.effective_database_url, info={"settings": settings})
        self.blobs: BlobStore = LocalBlobStore(settings.effective_blob_dir)
        self.downloads = DownloadCounter()  # per process; tasks.flush_downloads writes it
        self.secret = read_secret_key(settings)
        self.tmp_dir = settings.data_dir / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.mailer: Mailer = make_mailer(settings)
        # Not started here (the CLI builds a Bastion too): the server calls start_background().
        self.tasks: TaskRunner = ThreadTaskRunner()
        self._periodic_registered = False
        self._limiter: AttemptLimiter | None = None
        self._encryption_key: bytes | None = None
        self.tuf_worker: SnapshotWorker | None = None
        self._scanner: Scanner | None = None
        self._name_guard: NameGuard | None = None
        self._lazy_lock = threading.Lock()

    def start_background(self) -> None:
        """Start running background and periodic tasks (the server does this; the CLI does not)."""
        from bastion.insights.tasks import daily_insights, flush_downloads

        if not self._periodic_registered:
            self._periodic_registered = True
            self.tasks.every("flush_downloads", self.settings.duration("download_flush_interval"),
                             lambda: flush_downloads(self))
            # Hourly, though the work is daily: it is idempotent, and a server restarted more often
            # than daily would otherwise never reach its first run.
            self.tasks.every("daily_insights", timedelta(hours=1), lambda: daily_insights(self))
            if self.settings.advisories_source is not None:
                from bastion.advisories.ingest import scheduled_import

                self.tasks.every("advisories_import", self.settings.duration("advisories_interval"),
                                 lambda: scheduled_import(self))
            self._start_tuf()
        self.tasks.start()

    def _start_tuf(self) -> None:
        """Open the TUF repository (TufError if signing is configured but broken), start the
        snapshot worker, re-sign what is stale now and then every ``tuf_refresh_interval``."""
        from bastion.tuf.service import SnapshotWorker, prepare, run_refresh

        signer = prepare(self)
        if signer is None:
            return
        self.tuf_worker = SnapshotWorker(self, signer)
        self.tuf_worker.start()
        worker = self.tuf_worker
        self.tasks.every("tuf_refresh", self.settings.duration("tuf_refresh_interval"),
                         lambda: run_refresh(self, worker.current_signer()))
        # A server that was down for a day starts with fresh metadata.
        self.tasks.submit("tuf_refresh", lambda: run_refresh(self, worker.current_signer()))

    def stop_background(self, timeout: float = 10.0) -> None:
        """Finish queued work (mail) for at most ``timeout`` seconds, write the buffered download
        counts, stop the worker (idempotent)."""
        from bastion.insights.tasks import flush_downloads

        if self.tuf_worker is not None:
            self.tuf_worker.stop()
        self.tasks.stop(timeout=timeout)
        try:
            flush_downloads(self)
        except Exception:  # noqa: BLE001  (shutting down: log and go on)
            logging.getLogger("bastion.tasks").exception("final download-count flush failed")

    @property
    def limiter(self) -> AttemptLimiter:
        """Counters of failed password and 2FA attempts (made on first use)."""
        if self._limiter is None:
            self._limiter = AttemptLimiter.from_settings(self.settings)
        return self._limiter

    @property
    def scanner(self) -> Scanner:
        """The upload scanner (rules compiled on first use; one per process, thread-safe)."""
        if self._scanner is None:
            from bastion.scanning.service import make_scanner

            with self._lazy_lock:
                if self._scanner is None:
                    self._scanner = make_scanner(self.settings)
        return self._scanner

    @property
    def name_guard(self) -> NameGuard:
        """The typosquat check (popular names indexed on first use)."""
        if self._name_guard is None:
            from bastion.scanning.service import NameGuard

            with self._lazy_lock:
                if self._name_guard is None:
                    self._name_guard = NameGuard(self.settings)
        return self._name_guard

    @property
    def encryption_key(self) -> bytes:
        """The key that encrypts TOTP secrets at rest."""
        if self._encryption_key is None:
            self._encryption_key = read_encryption_key(self.settings)
        return self._encryption_key

    def send_mail(self, messages: Iterable[Message]) -> None:
        """Queue one background task per message (call after commit). A failed send is logged."""
        for message in messages:
            self.tasks.submit("send_mail", self._deliver_mail, message)

    def _deliver_mail(self, message: Message) -> None:
        try:
            self.mailer.send(message)
        except MailError as exc:
            mail_logger.error("mail to %s not sent (%s): %s", ", ".join(message.to), message.subject, exc)

    def notify_change(self, serial: int) -> None:
        """Tell every process serving this data dir that pages changed (after commit)."""
        ChangeMarker(self.settings.changes_path).write(str(serial))
        if self.tuf_worker is not None:
            self.tuf_worker.wake()  # sign the change now rather than at the next poll

    def close(self) -> None:
        self.stop_background()
        self.db.dispose()
