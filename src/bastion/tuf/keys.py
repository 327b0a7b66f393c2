"""TUF keys: the key ceremony's files, loading signers, and checking that a signer can sign.

Offline keys (root k-of-n, targets) are Ed25519 PKCS#8 PEM files meant to be moved to offline
storage after ``bastion tuf init``; the online key (timestamp, snapshot, bins) is named by a
securesystemslib private-key URI (``file2:PATH`` by default), so a KMS or HSM signer can take its
place. Every failure is a ``TufError`` whose one-line message names the file or URI and the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner, Key, Signer, SSlibKey


class TufError(RuntimeError):
    """A TUF key, file or repository problem; the message says what is wrong and what to do."""


ROOT_KEY_NAME = "root-{n}.pem"
TARGETS_KEY_NAME = "targets.pem"
ONLINE_KEY_NAME = "online.pem"
OFFLINE_DIR = "offline"
CHECK_PAYLOAD = b"bastion: can this signer sign?"


@dataclass(frozen=True)
class KeyFiles:
    """Where a key ceremony wrote its keys."""

    root: tuple[Path, ...]
    """The root keys (k of n), offline."""
    targets: Path
    """The targets key, offline: signs the delegation to the bins."""
    online: Path
    """The online key: signs timestamp, snapshot and every bin-n role."""


def _write_private(path: Path, signer: CryptoSigner) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(signer.private_bytes)


def generate_key_files(directory: Path, *, root_keys: int = 3) -> tuple[KeyFiles, list[CryptoSigner], CryptoSigner,
                                                                       CryptoSigner]:
    """Make ``root_keys`` root keys and a targets key under ``directory/offline`` and the online key
    in ``directory`` (files 0600, never overwritten). Returns the paths and the signers."""
    offline = directory / OFFLINE_DIR
    root_paths = tuple(offline / ROOT_KEY_NAME.format(n=n) for n in range(1, root_keys + 1))
    targets_path = offline / TARGETS_KEY_NAME
    online_path = directory / ONLINE_KEY_NAME
    existing = [p for p in (*root_paths, targets_path, online_path) if p.exists()]
    if existing:
        raise TufError(f"{existing[0]} already exists: a key ceremony never overwrites keys; "
                       "choose an empty --keys-dir or move the old keys away")
    root_signers = [write_new_key(path) for path in root_paths]
    targets_signer = write_new_key(targets_path)
    online_signer = write_new_key(online_path)
    return KeyFiles(root_paths, targets_path, online_path), root_signers, targets_signer, online_signer


def write_new_key(path: Path) -> CryptoSigner:
    """A new Ed25519 key written to ``path`` (0600, in a 0700 directory; never over an existing file)."""
    signer = CryptoSigner.generate_ed25519()
    _write_private(path, signer)
    return signer


def load_key_file(path: Path, *, what: str, public_key: SSlibKey | None = None) -> CryptoSigner:
    """An Ed25519 signer from a PEM file, or a TufError naming the file and the fix. With
    ``public_key``, the file must hold that key (and the signer carries its keyid)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise TufError(f"{what} key file {path} does not exist: give the path of the PEM file "
                       "written by `bastion tuf init`") from None
    except IsADirectoryError:
        raise TufError(f"{what} key file {path} is a directory: give the path of the PEM file "
                       "written by `bastion tuf init`") from None
    except OSError as exc:
        raise TufError(f"{what} key file {path} cannot be read ({exc.strerror}): check its permissions") from None
    try:
        private = load_pem_private_key(data, None)
    except (ValueError, TypeError) as exc:
        reason = "it is encrypted" if "encrypted" in str(exc).lower() or isinstance(exc, TypeError) else \
            "it is not a PEM private key"
        raise TufError(f"{what} key file {path} cannot be used: {reason}; give an unencrypted PKCS#8 PEM "
                       "Ed25519 key as written by `bastion tuf init`") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise TufError(f"{what} key file {path} holds a {type(private).__name__}, not an Ed25519 key: "
                       "use a key written by `bastion tuf init`")
    signer = CryptoSigner(private)
    if public_key is None:
        return signer
    if signer.public_key.keyval != public_key.keyval:
        raise TufError(f"{what} key file {path} is not the key the repository trusts (keyid "
                       f"{public_key.keyid[:16]}...): give the key that `bastion tuf init` or "
                       "`bastion tuf rotate` wrote")
    return CryptoSigner(private, public_key)


def load_signer(uri: str, public_key: Key, *, what: str) -> Signer:
    """The signer a securesystemslib private-key URI names, checked against ``public_key``."""
    if uri.startswith("file2:"):
        assert isinstance(public_key, SSlibKey)
        return load_key_file(Path(uri[len("file2:"):]), what=what, public_key=public_key)
    try:
        signer = Signer.from_priv_key_uri(uri, public_key)
    except Exception as exc:  # noqa: BLE001  (every backend raises its own kinds)
        raise TufError(f"{what} signer {uri} cannot be loaded ({type(exc).__name__}: {exc}): check the URI "
                       "and the credentials it needs") from None
    check_signer(signer, public_key, uri=uri, what=what)
    return signer


def check_signer(signer: Signer, public_key: Key, *, uri: str, what: str) -> None:
    """Sign a test payload and verify it with the trusted public key; TufError if either fails."""
    try:
        signature = signer.sign(CHECK_PAYLOAD)
    except Exception as exc:  # noqa: BLE001
        raise TufError(f"{what} signer {uri} cannot sign ({type(exc).__name__}: {exc}): fix the signer "
                       "configuration (BASTION_TUF_ONLINE_SIGNER) before serving") from None
    try:
        public_key.verify_signature(signature, CHECK_PAYLOAD)
    except Exception:  # noqa: BLE001
        raise TufError(f"{what} signer {uri} signs with a key the repository does not trust: configure the "
                       "key listed in root, or rotate to this one with `bastion tuf rotate`") from None
