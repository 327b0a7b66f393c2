"""The client side of PEP 458: fetch an index's files and pages only after TUF verified them.

``VerifiedIndex`` wraps python-tuf's ``ngclient.Updater`` (urllib3 fetcher): metadata from
``<index>/tuf/metadata/``, targets from ``<index>/``, a metadata cache on disk (so that every
fresh ``Updater`` starts from the newest metadata it trusted, which is what catches rollbacks and
keeps a refresh cheap), bootstrapped from the trusted root file the user gives. An ``Updater``
refreshes once in its life, so a new one is made for every lookup that comes more than
``max_age`` seconds after the last refresh; one lock serializes every use of it. Downloads of
target bytes run outside that lock. Distribution files are kept in a content-addressed cache
(``targets/sha256-<hex>``, re-verified against the signed length and hashes every time it is
read); simple pages, small and replaced at every change, are fetched anew each time.

Nothing here verifies anything by hand: signatures, versions, expiry, snapshots, lengths and
hashes are python-tuf's. Errors come in two kinds: ``ClientError`` (bad input, an index that
serves no TUF metadata: one line naming the file or URL and the fix) and ``VerificationError``
(python-tuf refused what the index served, or could not fetch it: fail closed).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from tuf.api import exceptions as tuf_exceptions
from tuf.api.metadata import Metadata, Root, TargetFile
from tuf.ngclient import Updater, UpdaterConfig
from tuf.ngclient.urllib3_fetcher import Urllib3Fetcher

USER_AGENT = "bastion-tuf-client/0.1"
METADATA_PATH = "tuf/metadata/"
REFRESH_MAX_AGE = 1.0
"""Seconds one refreshed Updater answers lookups before the next lookup makes a new one."""
_CACHE_NAME = re.compile(r"^[0-9a-f]{32,128}$")


class ClientError(Exception):
    """Bad input or an unusable index: the message is one line naming the file or URL and the fix."""


class VerificationError(Exception):
    """python-tuf refused (or could not fetch) what the index served; the message is the reason."""


def one_line(text: str, limit: int = 600) -> str:
    """``text`` on one line of printable characters (a reason phrase, a log line), cut at ``limit``."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def describe_failure(exc: BaseException) -> str:
    """python-tuf's message for ``exc``, with the causes it wrapped (a refused connection...)."""
    parts = [str(exc)] if str(exc) else []
    cause = exc.__cause__
    while cause is not None:
        reason = getattr(cause, "reason", None)  # urllib3's MaxRetryError carries the real error
        detail = str(reason or cause)
        if detail and not any(detail in part for part in parts):
            parts.append(detail)
        cause = cause.__cause__
    if not parts:
        return type(exc).__name__
    return one_line(parts[0] + "".join(f" ({part})" for part in parts[1:]))


# -- inputs ---------------------------------------------------------------------------------------
def normalize_index_url(url: str) -> str:
    """The index's base URL ending in '/' (a pasted ``.../simple/`` URL is cut back to its base)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ClientError(f"--index {url!r} is not an http(s) URL: give the index's base URL, "
                          "e.g. https://pypi.example.org/")
    if parts.query or parts.fragment:
        raise ClientError(f"--index {url!r} has a query or fragment: give the index's base URL, "
                          "e.g. https://pypi.example.org/")
    path = parts.path.rstrip("/")
    if path.endswith("/simple") or path == "simple":
        path = path[: -len("simple")]
    path = path.rstrip("/") + "/"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def load_trusted_root(path: Path) -> bytes:
    """The bytes of a TUF root metadata file, or a ClientError saying what the file is instead."""
    how = ("give the index's root metadata: fetch <index>/tuf/metadata/1.root.json once over a channel you "
           "trust, or use the 1.root.json written by `bastion tuf init`")
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ClientError(f"--root {path} does not exist: {how}") from None
    except IsADirectoryError:
        raise ClientError(f"--root {path} is a directory, not a file: {how}") from None
    except OSError as exc:
        raise ClientError(f"--root {path} cannot be read ({exc.strerror}): check its permissions, or {how}") from None
    try:
        document = json.loads(data)
    except ValueError:
        raise ClientError(f"--root {path} is not TUF metadata (not JSON): {how}") from None
    if not isinstance(document, dict) or not {"signed", "signatures"} <= set(document):
        raise ClientError(f"--root {path} is not TUF metadata (JSON without 'signed' and 'signatures'): {how}")
    try:
        metadata: Metadata[Any] = Metadata.from_bytes(data)
    except Exception as exc:  # noqa: BLE001  (DeserializationError, and whatever a parser meets)
        raise ClientError(f"--root {path} is not valid TUF metadata ({describe_failure(exc)}): {how}") from None
    if metadata.signed.type != Root.type:
        raise ClientError(f"--root {path} is TUF {metadata.signed.type} metadata, not root metadata: {how}")
    return data


def default_cache_dir(index_url: str) -> Path:
    """``$XDG_CACHE_HOME`` (or ``~/.cache``) ``/bastion/tuf/<hash of the index URL>``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    digest = hashlib.sha256(index_url.encode()).hexdigest()[:16]
    return Path(base) / "bastion" / "tuf" / digest


@dataclass(frozen=True)
class VerifiedTarget:
    """A target file whose bytes python-tuf checked against the signed metadata."""

    path: str
    """Its TUF target path, e.g. ``simple/demo-pkg/index.json``."""
    info: TargetFile
    """What the signed metadata says about it (length, hashes)."""

    @property
    def sha256(self) -> str | None:
        return self.info.hashes.get("sha256")


class VerifiedIndex:
    """One index's TUF metadata and targets, fetched and verified with python-tuf's ngclient."""

    def __init__(self, index_url: str, root: bytes, cache_dir: Path, *, max_age: float = REFRESH_MAX_AGE,
                 root_label: str = "the trusted root") -> None:
        self.index_url = normalize_index_url(index_url)
        self.metadata_url = self.index_url + METADATA_PATH
        self.root = root
        self.cache_dir = cache_dir
        self.metadata_dir = cache_dir / "metadata"
        self.targets_dir = cache_dir / "targets"
        self.max_age = max_age
        self.fetcher = Urllib3Fetcher(app_user_agent=USER_AGENT)
        self.config = UpdaterConfig(app_user_agent=USER_AGENT)
        self._lock = threading.Lock()
        self._updater: Updater | None = None
        self._refreshed = 0.0
        try:
            self.metadata_dir.mkdir(parents=True, exist_ok=True)
            self.targets_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ClientError(f"--cache-dir {cache_dir} cannot be created ({exc.strerror}): choose a writable "
                              "directory") from None
        try:
            self._new_updater()  # loads and checks the trusted root: signed by its own keys
        except tuf_exceptions.RepositoryError as exc:
            raise ClientError(f"{root_label} cannot be trusted ({describe_failure(exc)}): give the index's root "
                              "metadata as published (1.root.json), unmodified") from None

    # -- metadata ---------------------------------------------------------------------------------
    def _new_updater(self) -> Updater:
        return Updater(
            metadata_dir=str(self.metadata_dir),
            metadata_base_url=self.metadata_url,
            target_dir=str(self.targets_dir),
            target_base_url=self.index_url,
            fetcher=self.fetcher,
            config=self.config,
            bootstrap=self.root,
        )

    def check_serves_tuf(self) -> None:
        """ClientError unless the index answers for ``timestamp.json`` (reachable, TUF on).

        Not a verification: it tells "wrong URL / index down / TUF off" apart from an attack, which
        python-tuf reports later as a VerificationError.
        """
        url = self.metadata_url + "timestamp.json"
        try:
            self.fetcher.download_bytes(url, self.config.timestamp_max_length)
        except tuf_exceptions.DownloadHTTPError as exc:
            raise ClientError(f"{self.index_url} serves no TUF metadata (GET {url} answered HTTP {exc.status_code}): "
                              "check --index (the index's base URL) and that the index signs with TUF "
                              "(Bastion: BASTION_TUF=on)") from None
        except tuf_exceptions.DownloadLengthMismatchError:
            return  # an answer, if an odd one: python-tuf will judge it
        except tuf_exceptions.DownloadError as exc:
            raise ClientError(f"cannot reach {self.index_url} ({describe_failure(exc)}): check --index and that "
                              "the index is running") from None

    def _current(self) -> Updater:
        """A refreshed Updater no older than ``max_age`` (call with the lock held)."""
        now = time.monotonic()
        if self._updater is None or now - self._refreshed > self.max_age:
            self._updater = None
            updater = self._new_updater()
            updater.refresh()
            self._updater, self._refreshed = updater, time.monotonic()
        return self._updater

    def refresh(self) -> None:
        """Refresh now (VerificationError if python-tuf refuses the index's metadata)."""
        with self._lock:
            self._updater = None
            self._guard("refreshing metadata from " + self.metadata_url, self._current)

    def target(self, path: str) -> VerifiedTarget | None:
        """What the signed metadata lists for ``path``; None when it does not list it."""
        return self._lookup(path)[1]

    def _lookup(self, path: str) -> tuple[Updater, VerifiedTarget | None]:
        with self._lock:
            updater = self._guard("refreshing metadata from " + self.metadata_url, self._current)
            info = self._guard(f"looking up {path}", lambda: updater.get_targetinfo(path))
        return updater, None if info is None else VerifiedTarget(path, info)

    @staticmethod
    def _guard(what: str, action: Any) -> Any:
        try:
            return action()
        except (tuf_exceptions.RepositoryError, tuf_exceptions.DownloadError) as exc:
            raise VerificationError(f"{what}: {describe_failure(exc)}") from exc
        except OSError as exc:
            raise VerificationError(f"{what}: cannot write the metadata cache ({exc})") from exc

    # -- targets ----------------------------------------------------------------------------------
    def open_target(self, path: str, *, cache: bool = True) -> tuple[VerifiedTarget, IO[bytes]] | None:
        """The target's verified bytes as an open file at offset 0 (the caller closes it); None when
        the signed metadata does not list ``path``. With ``cache`` the bytes are kept on disk under
        their hash (for files, which never change); without, they are fetched every time."""
        updater, target = self._lookup(path)
        if target is None:
            return None
        return target, self._open_verified(updater, target, cache=cache)

    def read_target(self, path: str, *, cache: bool = False) -> tuple[VerifiedTarget, bytes] | None:
        """The target's verified bytes (for pages: small, and a new version at every change)."""
        found = self.open_target(path, cache=cache)
        if found is None:
            return None
        target, handle = found
        with handle:
            return target, handle.read()

    def _cache_path(self, target: VerifiedTarget) -> Path | None:
        algorithm, digest = sorted(target.info.hashes.items())[0]
        if not _CACHE_NAME.match(digest) or not re.fullmatch(r"[a-z0-9-]{1,20}", algorithm):
            return None
        return self.targets_dir / f"{algorithm}-{digest}"

    def _verified_handle(self, file: Path, target: VerifiedTarget) -> IO[bytes] | None:
        """``file`` opened and checked against the signed length and hashes, or None."""
        try:
            handle = open(file, "rb")
        except OSError:
            return None
        try:
            target.info.verify_length_and_hashes(handle)
        except tuf_exceptions.LengthOrHashMismatchError:
            handle.close()
            return None
        handle.seek(0)
        return handle

    def _open_verified(self, updater: Updater, target: VerifiedTarget, *, cache: bool) -> IO[bytes]:
        """From the cache when a copy there still matches the signed length and hashes; otherwise
        downloaded by python-tuf (outside the lock: the Updater's trusted metadata is not touched)."""
        cached = self._cache_path(target) if cache else None
        if cached is not None:
            handle = self._verified_handle(cached, target)
            if handle is not None:
                return handle
        part = self.targets_dir / f".{uuid.uuid4().hex}.part"
        try:
            try:
                updater.download_target(target.info, filepath=str(part))
            except (tuf_exceptions.RepositoryError, tuf_exceptions.DownloadError) as exc:
                raise VerificationError(f"{target.path}: {describe_failure(exc)}") from exc
            except OSError as exc:
                raise VerificationError(f"{target.path}: cannot write the target cache ({exc})") from exc
            final = part
            if cached is not None:
                os.replace(part, cached)
                final = cached
            handle = self._verified_handle(final, target)
            if handle is None:  # changed on disk between python-tuf's check and ours
                raise VerificationError(f"{target.path}: the cached copy changed on disk after verification")
            return handle
        finally:
            part.unlink(missing_ok=True)  # not cached: the open handle keeps the bytes (POSIX)

    def fetch_unsigned(self, url_path: str, max_length: int) -> bytes:
        """Bytes at ``<index>/<url_path>`` that TUF does not sign (the caller checks them against a
        verified page); VerificationError when they cannot be fetched."""
        url = self.index_url + url_path
        try:
            return self.fetcher.download_bytes(url, max_length)
        except tuf_exceptions.DownloadError as exc:
            raise VerificationError(f"{url_path}: {describe_failure(exc)}") from exc

