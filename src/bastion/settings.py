"""All configuration in one place.

Values come from, in rising order of precedence: the defaults below, an optional TOML file
(``BASTION_CONFIG`` or ``<data dir>/bastion.toml``), and ``BASTION_*`` environment variables.
The defaults run the embedded configuration: SQLite and a local blob directory in the data dir.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
import tomllib
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

DEFAULT_DATA_DIR = "./bastion-data"

MIB = 1024 * 1024


class SettingsError(ValueError):
    """A configuration value is wrong; the message names it and says how to fix it."""


_DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_MAX_DURATION_SECONDS = 36500 * 86400


def parse_duration(text: str, *, what: str = "duration") -> timedelta:
    """Parse ``30d``, ``12h``, ``90m``, ``45s`` or ``2w`` into a timedelta."""
    match = _DURATION_RE.match(str(text))
    if not match:
        raise SettingsError(
            f"invalid {what} {text!r}: use a whole number and a unit, e.g. 30d, 12h, 90m, 45s or 2w"
        )
    seconds = int(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds <= 0:
        raise SettingsError(f"invalid {what} {text!r}: it must be longer than zero")
    if seconds > _MAX_DURATION_SECONDS:  # longer ones overflow dates (a 500, or a traceback)
        raise SettingsError(f"invalid {what} {text!r}: it must be at most 36500d (100 years)")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class Settings:
    """Bastion's configuration; every field can be set as ``BASTION_<FIELD NAME IN CAPS>``."""

    data_dir: Path = Path(DEFAULT_DATA_DIR)
    """Where the SQLite file, blobs, keys and the outbox live (created on first start)."""

    database_url: str = ""
    """SQLAlchemy URL; empty means ``sqlite:///<data_dir>/bastion.db``."""

    blob_dir: Path | None = None
    """Local blob directory; empty means ``<data_dir>/files``."""

    public_url: str = ""
    """Absolute base URL used in the JSON API's file URLs; empty means the request's own host."""

    max_file_size: int = 100 * MIB
    """Largest distribution file accepted (bytes); PyPI's default is 100 MiB."""

    max_project_size: int = 10 * 1024 * MIB
    """Largest total size of one project's files (bytes); PyPI's default is 10 GiB."""

    max_uncompressed_size: int = 1024 * MIB
    """Largest total uncompressed size of an archive's members (decompression-bomb limit)."""

    max_compression_ratio: int = 50
    """Largest ratio of uncompressed to compressed size when over ``bomb_floor`` (zip-bomb limit)."""

    bomb_floor: int = 64 * MIB
    """Archives whose members total less than this are never judged by ratio alone."""

    max_archive_members: int = 100_000
    """Largest number of members in an archive."""

    token_default_expiry: str = "90d"
    """Lifetime of an API token made without ``--expires``; ``never`` allows tokens without expiry."""

    prohibited_names: tuple[str, ...] = ()
    """Project names nobody may register (admin ban list), besides the built-in reserved names."""

    page_cache_bytes: int = 64 * MIB
    """Memory budget of the in-process cache of rendered pages."""

    workers: int = 1
    """Server worker processes."""

    mfa_policy: str = "critical"
    """Who must use 2FA: ``off``, ``critical`` (owners and maintainers of critical projects),
    ``all-uploaders`` (anyone uploading or holding a role) or ``everyone``. Admins can change the
    effective policy at run time (``bastion policy set``); this is the default."""

    critical_percent: float = 1.0
    """Projects in this top percentage by downloads are critical (sticky once reached)."""

    critical_window: str = "180d"
    """The trailing window over which downloads rank projects for ``critical_percent``."""

    encryption_key: str = ""
    """Fernet key (urlsafe base64 of 32 bytes) encrypting TOTP secrets at rest; empty means
    ``<data_dir>/encryption.key``, created on first start."""

    smtp_host: str = ""
    """SMTP server for email; empty writes each message to ``<data_dir>/outbox/`` instead."""

    smtp_port: int = 25
    """SMTP port."""

    smtp_tls: str = "off"
    """``off``, ``starttls`` or ``ssl``."""

    smtp_username: str = ""
    """SMTP login, if the server needs one."""

    smtp_password: str = ""
    """SMTP password (never logged)."""

    mail_from: str = "bastion@localhost"
    """The From address of every message."""

    rate_limit_storage: str = "memory://"
    """Where attempt counters live (``limits`` storage URI): ``memory://`` per process, or
    ``redis://127.0.0.1:6379`` shared by every worker."""

    login_attempts: str = "10 per 15 minutes"
    """Failed password attempts allowed per account (and ten times that per client address)."""

    mfa_attempts: str = "5 per 5 minutes"
    """Failed second-factor attempts allowed per account (and ten times that per client address)."""

    session_lifetime: str = "12h"
    """How long a browser sign-in lasts."""

    reauth_window: str = "15m"
    """How long a re-authentication (password and 2FA) unlocks sensitive actions."""

    cookie_secure: str = "auto"
    """``auto`` (Secure cookies and HSTS when the request or ``public_url`` is https), ``always``
    or ``never``."""

    download_flush_interval: str = "10s"
    """How often buffered download counts are written to the database."""

    tuf: str = "on"
    """``on``: sign every simple page and file with PEP 458 TUF metadata (served at /tuf/metadata/);
    ``off``: serve no TUF metadata."""

    tuf_bins: int = 256
    """Number of succinct hash bins (TAP 15) the targets are spread over: a power of two from 2 to
    16384, fixed when the repository is created. See the README for how to choose."""

    tuf_online_signer: str = ""
    """securesystemslib private-key URI of the online key (timestamp, snapshot, bins), e.g.
    ``file2:/path/online.pem``, ``gcpkms:...``, ``hsm:...``; empty means
    ``file2:<data_dir>/tuf/keys/online.pem``."""

    tuf_window: str = "1s"
    """Longest time an upload waits before the snapshot worker signs it."""

    tuf_timestamp_expiry: str = "1d"
    """Lifetime of each timestamp (PEP 458: 1 day)."""

    tuf_snapshot_expiry: str = "1d"
    """Lifetime of each snapshot (PEP 458: 1 day)."""

    tuf_bins_expiry: str = "1d"
    """Lifetime of each bin-n role (PEP 458: 1 day)."""

    tuf_targets_expiry: str = "365d"
    """Lifetime of the targets role (signed with the offline targets key)."""

    tuf_root_expiry: str = "365d"
    """Lifetime of root (signed with the offline root keys)."""

    tuf_refresh_interval: str = "1h"
    """How often the refresh task re-signs online roles that have used half their lifetime."""

    tuf_gc_grace: str = "1h"
    """How long superseded snapshots, bins and page versions stay downloadable (every root stays)."""

    scan: str = "on"
    """Scan every upload before it is visible (``on``), or publish without scanning (``off``)."""

    scan_quarantine_score: float = 4.0
    """A scan score (0-10) at or above this quarantines the file for review."""

    scan_reject_score: float = 10.0
    """A scan score at or above this refuses the upload outright. The default refuses only the
    unmistakable: quarantine keeps the evidence for review and does not tell an attacker which
    variant got through."""

    name_policy: str = "block"
    """A new project name that imitates a popular or existing one: ``block`` refuses it (400, naming
    the project it resembles), ``review`` creates it quarantined and queues it for an admin."""

    upload_strictness: str = "pypi"
    """Which rules an upload through ``/legacy/`` (twine, uv publish) must pass: ``pypi`` (today's PyPI
    rules: PEP 625 sdist and PEP 427 wheel filenames, no Metadata-Version 2.0, no deprecated
    classifiers, a README that renders, ...) or ``lenient`` (what PyPI accepted in earlier years:
    only what makes a file unusable or unsafe is refused). ``bastion import`` always uses
    ``lenient``. The README lists every rule that only ``pypi`` applies."""

    popular_names: Path | None = None
    """CSV of popular project names (``download_count,project``, most popular first) for the
    typosquat check; empty means the copy of hugovk/top-pypi-packages shipped with Bastion."""

    report_quarantine_age: str = "24h"
    """A trusted reporter's report quarantines a project younger than this at once."""

    advisories_source: Path | None = None
    """Where the scheduled task re-imports OSV advisories from (a PyPA advisory-database checkout,
    a directory or zip of OSV JSON); empty: no scheduled import (``bastion advisories import``)."""

    advisories_interval: str = "6h"
    """How often the scheduled task re-imports ``advisories_source``."""

    @property
    def tuf_keys_dir(self) -> Path:
        """Where ``bastion serve`` keeps a development key set and ``bastion tuf init`` writes keys."""
        return self.data_dir / "tuf" / "keys"

    @property
    def effective_tuf_online_signer(self) -> str:
        return self.tuf_online_signer or f"file2:{(self.tuf_keys_dir / 'online.pem').resolve()}"

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "bastion.db"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.sqlite_path}"

    @property
    def effective_blob_dir(self) -> Path:
        return self.blob_dir if self.blob_dir is not None else self.data_dir / "files"

    @property
    def secret_key_path(self) -> Path:
        return self.data_dir / "secret.key"

    @property
    def encryption_key_path(self) -> Path:
        return self.data_dir / "encryption.key"

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    def duration(self, name: str) -> timedelta:
        """A duration setting (``session_lifetime`` ...) as a timedelta."""
        return parse_duration(getattr(self, name), what=f"BASTION_{name.upper()}")

    @property
    def changes_path(self) -> Path:
        """A file touched after every committed change, so every process drops stale pages."""
        return self.data_dir / "changes.serial"

    @property
    def tuf_changes_path(self) -> Path:
        """A file replaced after every stored timestamp, so every process serves the new one."""
        return self.data_dir / "tuf.serial"

    @property
    def token_expiry(self) -> timedelta | None:
        if self.token_default_expiry.strip().lower() == "never":
            return None
        return parse_duration(self.token_default_expiry, what="BASTION_TOKEN_DEFAULT_EXPIRY")


def _coerce(name: str, kind: Any, raw: Any) -> Any:
    # Type-strict: a TOML 1.5 or true for a size must not become 1, nor a number become a path.
    kind_text = str(kind)
    if kind_text in ("float", "<class 'float'>"):
        fvalue: float | None = float(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) else None
        if isinstance(raw, str):
            try:
                fvalue = float(raw.strip())
            except ValueError:
                fvalue = None
        if fvalue is None or not (0 < fvalue <= 100):
            raise SettingsError(f"invalid value {raw!r} for {name}: expected a number above 0 and at most 100")
        return fvalue
    if kind_text in ("int", "<class 'int'>"):
        value = raw if isinstance(raw, int) and not isinstance(raw, bool) else None
        if isinstance(raw, str):
            try:
                value = int(raw.strip())
            except ValueError:
                value = None
        if value is None or value <= 0:
            raise SettingsError(f"invalid value {raw!r} for {name}: expected a positive whole number")
        return value
    if kind_text.startswith("tuple"):
        if isinstance(raw, str):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if isinstance(raw, list) and all(isinstance(part, str) for part in raw):
            return tuple(raw)
        raise SettingsError(
            f"invalid value {raw!r} for {name}: expected a list of names such as [\"a\", \"b\"] "
            "(or comma-separated text)"
        )
    if "Path" in kind_text and isinstance(raw, (str, os.PathLike)):
        return None if raw == "" else Path(raw)
    if not isinstance(raw, str):
        raise SettingsError(f"invalid value {raw!r} for {name}: expected text (in quotes in bastion.toml)")
    return raw


def load_settings(data_dir: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Build settings from defaults, the TOML file, the environment and explicit overrides."""
    env = os.environ
    values: dict[str, Any] = {}
    chosen_dir = data_dir or env.get("BASTION_DATA_DIR") or DEFAULT_DATA_DIR
    values["data_dir"] = Path(chosen_dir)
    config_path = Path(env["BASTION_CONFIG"]) if env.get("BASTION_CONFIG") else Path(chosen_dir) / "bastion.toml"
    if env.get("BASTION_CONFIG") and not config_path.is_file():
        raise SettingsError(f"BASTION_CONFIG names {config_path}, which is not a file: fix the path or unset it")
    known = {f.name: f for f in fields(Settings)}
    if config_path.is_file():
        try:
            table = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SettingsError(f"cannot read {config_path}: {exc}; fix the TOML syntax") from None
        for key, raw in table.items():
            if key not in known or key == "data_dir":
                raise SettingsError(
                    f"unknown setting {key!r} in {config_path}; known settings: "
                    + ", ".join(sorted(k for k in known if k != "data_dir"))
                )
            values[key] = _coerce(key, known[key].type, raw)
    for name, spec in known.items():
        if name == "data_dir":
            continue
        env_name = f"BASTION_{name.upper()}"
        if env_name in env:
            values[name] = _coerce(env_name, spec.type, env[env_name])
    for name, raw in overrides.items():
        if raw is not None:
            values[name] = _coerce(name, known[name].type, raw) if name != "data_dir" else Path(raw)
    settings = replace(Settings(), **values)
    settings.token_expiry  # validates the duration early, with a clear message
    validate(settings)
    if settings.workers < 1:
        raise SettingsError("BASTION_WORKERS must be at least 1")
    return settings


MFA_POLICIES = ("off", "critical", "all-uploaders", "everyone")
SMTP_TLS_MODES = ("off", "starttls", "ssl")
COOKIE_SECURE_MODES = ("auto", "always", "never")
TUF_MODES = ("on", "off")
SCAN_MODES = ("on", "off")
NAME_POLICIES = ("block", "review")
UPLOAD_STRICTNESS = ("pypi", "lenient")
TUF_BIN_COUNTS = tuple(2 ** bits for bits in range(1, 15))


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SettingsError(f"invalid value {value!r} for {name}: use one of {', '.join(choices)}")


def validate(settings: Settings) -> None:
    """Refuse values that would only fail later, naming the setting and the fix."""
    _choice("BASTION_MFA_POLICY", settings.mfa_policy, MFA_POLICIES)
    _choice("BASTION_SMTP_TLS", settings.smtp_tls, SMTP_TLS_MODES)
    _choice("BASTION_COOKIE_SECURE", settings.cookie_secure, COOKIE_SECURE_MODES)
    _choice("BASTION_TUF", settings.tuf, TUF_MODES)
    _choice("BASTION_SCAN", settings.scan, SCAN_MODES)
    _choice("BASTION_NAME_POLICY", settings.name_policy, NAME_POLICIES)
    _choice("BASTION_UPLOAD_STRICTNESS", settings.upload_strictness, UPLOAD_STRICTNESS)
    if settings.scan_quarantine_score > settings.scan_reject_score:
        raise SettingsError(
            f"BASTION_SCAN_QUARANTINE_SCORE ({settings.scan_quarantine_score}) is above "
            f"BASTION_SCAN_REJECT_SCORE ({settings.scan_reject_score}): the quarantine threshold must be "
            "at most the reject threshold"
        )
    if settings.popular_names is not None and not settings.popular_names.is_file():
        raise SettingsError(
            f"BASTION_POPULAR_NAMES names {settings.popular_names}, which is not a file: give a CSV of "
            "'download_count,project' rows, or leave it empty for the list shipped with Bastion"
        )
    if settings.advisories_source is not None and not settings.advisories_source.exists():
        raise SettingsError(
            f"BASTION_ADVISORIES_SOURCE names {settings.advisories_source}, which does not exist: give a "
            "checkout of the PyPA advisory database, a directory or zip of OSV JSON, or leave it empty"
        )
    if settings.tuf_bins not in TUF_BIN_COUNTS:
        raise SettingsError(
            f"invalid value {settings.tuf_bins} for BASTION_TUF_BINS: use a power of two from 2 to 16384 "
            "(256 for up to about 100,000 files, 16384 at PyPI's scale)"
        )
    for name in ("critical_window", "session_lifetime", "reauth_window", "download_flush_interval",
                 "tuf_window", "tuf_timestamp_expiry", "tuf_snapshot_expiry", "tuf_bins_expiry",
                 "tuf_targets_expiry", "tuf_root_expiry", "tuf_refresh_interval", "tuf_gc_grace",
                 "report_quarantine_age", "advisories_interval"):
        parse_duration(getattr(settings, name), what=f"BASTION_{name.upper()}")
    for name in ("login_attempts", "mfa_attempts"):
        parse_rate(getattr(settings, name), what=f"BASTION_{name.upper()}")
    if settings.smtp_port > 65535:
        raise SettingsError(f"invalid value {settings.smtp_port} for BASTION_SMTP_PORT: use a port from 1 to 65535")
    if not settings.rate_limit_storage.startswith(("memory://", "redis://", "rediss://")):
        raise SettingsError(
            f"invalid value {settings.rate_limit_storage!r} for BASTION_RATE_LIMIT_STORAGE: "
            "use memory:// or redis://HOST:PORT"
        )
    if settings.encryption_key:
        fernet_key(settings.encryption_key, what="BASTION_ENCRYPTION_KEY")


def parse_rate(text: str, *, what: str):  # type: ignore[no-untyped-def]
    """A ``limits`` rate such as ``10 per 15 minutes``."""
    from limits import parse

    try:
        return parse(text)
    except ValueError:
        raise SettingsError(
            f"invalid {what} {text!r}: write a count and a period, e.g. '10 per 15 minutes' or '5/minute'"
        ) from None


def fernet_key(text: str, *, what: str) -> bytes:
    import base64
    import binascii

    try:
        raw = base64.urlsafe_b64decode(text.strip().encode())
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise SettingsError(
            f"invalid {what}: it must be 32 bytes in urlsafe base64 (make one with "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)"
        )
    return text.strip().encode()


def ensure_data_dir(settings: Settings) -> None:
    """Create the data dir and the server secret on first use."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.effective_blob_dir.mkdir(parents=True, exist_ok=True)
    _create_once(settings.secret_key_path, secrets.token_hex(32))
    if not settings.encryption_key:
        import base64

        _create_once(settings.encryption_key_path, base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())


def _create_once(path: Path, text: str) -> None:
    """Create ``path`` (mode 0600) holding ``text`` unless it exists. The file is written aside and
    linked into place, so that two commands started at once on a fresh data dir neither fail
    (one link wins, the other keeps the winner's) nor read a key file that is still empty."""
    if path.exists():
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)


def read_encryption_key(settings: Settings) -> bytes:
    """The Fernet key that encrypts TOTP secrets at rest."""
    if settings.encryption_key:
        return fernet_key(settings.encryption_key, what="BASTION_ENCRYPTION_KEY")
    try:
        text = settings.encryption_key_path.read_text()
    except FileNotFoundError:
        raise SettingsError(
            f"no encryption key at {settings.encryption_key_path}; run `bastion serve` once to create the data dir"
        ) from None
    return fernet_key(text, what=f"key in {settings.encryption_key_path}")


def read_secret_key(settings: Settings) -> bytes:
    """The server secret: the root from which every API token's macaroon key is derived."""
    env_key = os.environ.get("BASTION_SECRET_KEY")
    if env_key:
        return env_key.encode()
    try:
        return settings.secret_key_path.read_text().strip().encode()
    except FileNotFoundError:
        raise SettingsError(
            f"no secret key at {settings.secret_key_path}; run `bastion serve` once to create the data dir"
        ) from None


