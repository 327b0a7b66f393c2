"""``bastion tuf``: the key ceremony, key rotation, status and an immediate refresh."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from rich.console import Console

from bastion.cli import _fail, _open, data_dir_option, err
from bastion.db import utcnow
from bastion.events import record_event
from bastion.tuf import repository
from bastion.tuf.keys import (
    OFFLINE_DIR,
    ONLINE_KEY_NAME,
    TufError,
    generate_key_files,
    load_key_file,
    load_signer,
    write_new_key,
)

out = Console(soft_wrap=True)  # paths and commands stay on one line, copyable


@click.group()
def tuf() -> None:
    """PEP 458 TUF keys and metadata."""


def _human(moment: datetime) -> str:
    seconds = (moment - utcnow()).total_seconds()
    if seconds < 0:
        return f"{moment:%Y-%m-%d %H:%M} UTC ([bold red]EXPIRED[/])"
    hours = seconds / 3600
    span = f"in {hours:.1f} h" if hours < 48 else f"in {hours / 24:.0f} days"
    return f"{moment:%Y-%m-%d %H:%M} UTC ({span})"


def _external_online_signer(uri: str | None, public_key_file: str | None) -> Any:
    """An online signer named by URI (KMS, HSM...) with its public key from a PEM file."""
    if not uri:
        return None
    if not public_key_file:
        _fail("--online-signer needs --online-public-key: the PEM public key of that signer, which root will list")
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    from securesystemslib.signer import SSlibKey

    try:
        public = SSlibKey.from_crypto(load_pem_public_key(Path(public_key_file).read_bytes()))  # type: ignore[arg-type]
    except (OSError, ValueError) as exc:
        _fail(f"--online-public-key {public_key_file} cannot be read as a PEM public key ({exc}): export the "
              "signer's public key in PEM form")
    try:
        return load_signer(uri, public, what="online")
    except TufError as exc:
        _fail(str(exc))


@tuf.command("init")
@click.option("--keys-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write the keys (default: <data dir>/tuf/keys).")
@click.option("--root-keys", default=3, show_default=True, type=click.IntRange(1, 20), help="Root keys to make (n).")
@click.option("--root-threshold", default=2, show_default=True, type=click.IntRange(1, 20),
              help="Root signatures required (k).")
@click.option("--online-signer", default=None, help="Use this securesystemslib signer URI as the online key "
              "(KMS, HSM) instead of making a key file; needs --online-public-key.")
@click.option("--online-public-key", default=None, type=click.Path(dir_okay=False),
              help="PEM public key of --online-signer.")
@data_dir_option
def tuf_init(keys_dir: Path | None, root_keys: int, root_threshold: int, online_signer: str | None,
             online_public_key: str | None, data_dir: str | None) -> None:
    """Key ceremony: make root (k of n), targets and online keys, and sign version 1 of every role.

    The root and targets keys are written under KEYS_DIR/offline: move them to offline storage
    (they are needed again only to rotate keys or re-sign root and targets within a year). The
    online key signs timestamp, snapshot and the bins and stays with the server. The bin count is
    BASTION_TUF_BINS and cannot change later.
    """
    if root_threshold > root_keys:
        _fail(f"--root-threshold {root_threshold} is more than --root-keys {root_keys}: k must be at most n")
    bastion = _open(data_dir)
    try:
        with bastion.db.read() as session:
            if repository.repository_row(session) is not None:
                _fail("this index already has a TUF repository: `bastion tuf init` runs once, on a fresh index; "
                      "use `bastion tuf rotate` to change its keys")
        external = _external_online_signer(online_signer, online_public_key)
        directory = keys_dir or bastion.settings.tuf_keys_dir
        try:
            files, roots, targets, online = generate_key_files(directory, root_keys=root_keys)
        except TufError as exc:
            _fail(str(exc))
        if external is not None:
            files.online.unlink()
            online = external
        try:
            with bastion.db.write() as session:
                repository.initialize(session, root_signers=roots, root_threshold=root_threshold,
                                      targets_signer=targets, online_signer=online, bins=bastion.settings.tuf_bins,
                                      lifetimes=repository.Lifetimes.from_settings(bastion.settings),
                                      development_keys=False)
                record_event(session, "tuf.init", actor="operator", secret=bastion.secret,
                             details={"bins": bastion.settings.tuf_bins, "root_keys": root_keys,
                                      "root_threshold": root_threshold, "online_keyid": online.public_key.keyid})
                root_bytes = repository.load_head(session, "root").to_bytes()
        except BaseException:
            # Nothing was created: keys that sign nothing must not stay beside real ones, nor
            # block the next attempt with "already exists".
            for path in (*files.root, files.targets, files.online):
                path.unlink(missing_ok=True)
            raise
        root_file = directory / "1.root.json"
        root_file.write_bytes(root_bytes)
    except TufError as exc:
        _fail(str(exc))
    finally:
        bastion.close()
    out.print(f"TUF repository created: {bastion.settings.tuf_bins} bins, root {root_threshold} of {root_keys}.",
              highlight=False)
    out.print(f"  offline keys: {escape(str(directory / OFFLINE_DIR))}  [bold]move them to offline storage now[/]",
              highlight=False)
    if external is None:
        default = directory / ONLINE_KEY_NAME
        out.print(f"  online key:   {escape(str(files.online))}", highlight=False)
        if default.resolve() != bastion.settings.tuf_keys_dir.resolve() / ONLINE_KEY_NAME:
            out.print(f"  set BASTION_TUF_ONLINE_SIGNER=file2:{escape(str(files.online.resolve()))}", highlight=False)
    else:
        out.print(f"  online key:   {escape(online_signer or '')}  (set BASTION_TUF_ONLINE_SIGNER to it)",
                  highlight=False)
    out.print(f"  trusted root: {escape(str(root_file))}  give it to clients (bastion verify-proxy --root ...)",
              highlight=False)


@tuf.command("rotate")
@click.option("--root-key", "root_key_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A current root key file (repeat until the current threshold is met).")
@click.option("--online", is_flag=True, help="Replace the online key (timestamp, snapshot, bins).")
@click.option("--targets-key", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The offline targets key (needed with --online: targets re-delegates the bins).")
@click.option("--new-targets-key", is_flag=True,
              help="Replace the targets key with a new one (written to --keys-dir/offline).")
@click.option("--new-root-keys", type=click.IntRange(1, 20), default=None,
              help="Replace the root keys with this many new ones (written to --keys-dir/offline).")
@click.option("--new-root-threshold", type=click.IntRange(1, 20), default=None, help="Threshold of the new root keys.")
@click.option("--keys-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where new keys are written (default: <data dir>/tuf/keys).")
@click.option("--online-signer", default=None, help="New online signer URI (KMS, HSM) instead of a new key file.")
@click.option("--online-public-key", default=None, type=click.Path(dir_okay=False),
              help="PEM public key of --online-signer.")
@data_dir_option
def tuf_rotate(root_key_files: tuple[Path, ...], online: bool, targets_key: Path | None, new_targets_key: bool,
               new_root_keys: int | None,
               new_root_threshold: int | None, keys_dir: Path | None, online_signer: str | None,
               online_public_key: str | None, data_dir: str | None) -> None:
    """Rotate the online, targets and/or root keys: a new root signed by the old and new thresholds.

    Clients that trusted the old root follow the chain of roots and from then on refuse metadata
    signed with a retired key. A running server reloads the online key file by itself. To move
    an index from the development key set that `bastion serve` made to offline keys, rotate all
    three (--online --targets-key OLD --new-targets-key --new-root-keys 3) and move the new
    offline keys away.
    """
    if not online and not new_root_keys and not new_targets_key:
        _fail("nothing to rotate: give --online, --new-targets-key and/or --new-root-keys N")
    if new_root_threshold is not None and not new_root_keys:
        _fail("--new-root-threshold applies to new root keys: give --new-root-keys N as well")
    if not root_key_files:
        _fail("rotation is signed by the current root keys: pass --root-key FILE (repeat up to the threshold)")
    bastion = _open(data_dir)
    written: list[Path] = []  # new key files: removed again unless the rotation commits
    committed = False
    try:
        with bastion.db.read() as session:
            root = repository.load_head(session, "root").signed
        root_keys = {keyid: root.keys[keyid] for keyid in root.roles["root"].keyids}
        root_signers = []
        for path in root_key_files:
            signer = load_key_file(path, what="root")
            match = next((key for key in root_keys.values() if key.keyval == signer.public_key.keyval), None)
            if match is None:
                _fail(f"root key file {path} is not one of the current root keys: give the files written by "
                      "`bastion tuf init` (or the last rotation)")
            root_signers.append(load_key_file(path, what="root", public_key=match))  # type: ignore[arg-type]
        targets_signer = None
        if online and not new_targets_key:
            if targets_key is None:
                _fail("--online re-signs the delegation to the bins: pass --targets-key FILE (the offline targets key)")
            targets_public = root.keys[root.roles["targets"].keyids[0]]
            targets_signer = load_key_file(targets_key, what="targets", public_key=targets_public)  # type: ignore[arg-type]
        directory = keys_dir or bastion.settings.tuf_keys_dir
        stamp = utcnow().strftime("%Y%m%dT%H%M%S")
        new_online = None
        new_online_path: Path | None = None
        if online:
            new_online = _external_online_signer(online_signer, online_public_key)
            if new_online is None:
                new_online_path = directory / f"{ONLINE_KEY_NAME}.new-{stamp}"
                new_online = write_new_key(new_online_path)
                written.append(new_online_path)
        new_targets = None
        new_targets_path: Path | None = None
        if new_targets_key:
            new_targets_path = directory / OFFLINE_DIR / f"targets-{stamp}.pem"
            new_targets = write_new_key(new_targets_path)
            written.append(new_targets_path)
        current_online = None
        if new_targets_key and not online:
            from bastion.tuf.service import online_signer as configured_online_signer

            current_online = configured_online_signer(bastion)
        new_roots: list[Any] = []
        new_root_paths: list[Path] = []
        if new_root_keys:
            for n in range(1, new_root_keys + 1):
                path = directory / OFFLINE_DIR / f"root-{stamp}-{n}.pem"
                signer = write_new_key(path)
                written.append(path)
                new_roots.append(signer)
                new_root_paths.append(path)
        with bastion.db.write() as session:
            report = repository.rotate(session, root_signers=root_signers,
                                       lifetimes=repository.Lifetimes.from_settings(bastion.settings),
                                       new_root_signers=new_roots or None, new_root_threshold=new_root_threshold,
                                       targets_signer=targets_signer, new_online_signer=new_online,
                                       new_targets_signer=new_targets, online_signer=current_online)
            record_event(session, "tuf.rotate", actor="operator", secret=bastion.secret,
                         details={"root_version": report.root_version, "online": online,
                                  "new_root_keys": len(new_roots), "new_targets_key": new_targets_key,
                                  "online_keyid": new_online.public_key.keyid if new_online else None})
            root_bytes = repository.load_head(session, "root").to_bytes()
        committed = True
        if new_online_path is not None:
            _install_online_key(bastion, new_online_path, stamp)
        (directory / f"{report.root_version}.root.json").write_bytes(root_bytes)
        from bastion.tuf.service import write_marker

        # Always: root.json changed even when no new timestamp was signed (a root-only rotation),
        # and running servers keep their cached root.json until the marker changes.
        write_marker(bastion, report.timestamp if report.timestamp is not None else report.root_version)
    except TufError as exc:
        _fail(str(exc))
    finally:
        if not committed:  # a refused rotation leaves no untrusted private key behind
            for path in written:
                path.unlink(missing_ok=True)
        bastion.close()
    out.print(f"root version {report.root_version} signed by the old and new root thresholds.", highlight=False)
    if online:
        out.print(f"online key replaced: targets v{report.targets_version}, {report.bins} bins re-signed, "
                  f"snapshot v{report.snapshot}, timestamp v{report.timestamp}.", highlight=False)
        if online_signer:
            out.print(f"set BASTION_TUF_ONLINE_SIGNER={escape(online_signer)} and restart the server", highlight=False)
    if new_targets_path is not None:
        out.print(f"new targets key: {escape(str(new_targets_path))}  [bold]move it to offline storage[/]",
                  highlight=False)
    for path in new_root_paths:
        out.print(f"new root key: {escape(str(path))}  [bold]move it to offline storage[/]", highlight=False)


def _install_online_key(bastion: Any, new_path: Path, stamp: str) -> None:
    """Put the new online key where the server reads it: the configured file2: path (the old key
    is kept beside it as ``.retired-<time>``); otherwise tell the operator what to set."""
    uri = bastion.settings.effective_tuf_online_signer
    if not uri.startswith("file2:"):
        err.print(f"the online key was written to {escape(str(new_path))}: set "
                  f"BASTION_TUF_ONLINE_SIGNER=file2:{escape(str(new_path.resolve()))} and restart", highlight=False)
        return
    current = Path(uri[len("file2:"):])
    if current.exists():
        os.replace(current, current.with_name(f"{current.name}.retired-{stamp}"))
    os.replace(new_path, current)


@tuf.command("status")
@data_dir_option
def tuf_status(data_dir: str | None) -> None:
    """Versions and expiry of every role, bin count, targets and the snapshot queue."""
    from bastion.tuf.service import status

    bastion = _open(data_dir)
    try:
        state = status(bastion)
    except TufError as exc:
        _fail(str(exc))
    finally:
        bastion.close()
    table = Table(title="TUF repository")
    table.add_column("role")
    table.add_column("version", justify="right")
    table.add_column("expires")
    for role in state.roles:
        table.add_row(role.role, str(role.version), _human(role.expires))
    if state.bins_oldest_expiry is not None:
        table.add_row(f"bins ({state.bins})", f"≤{state.bins_newest_version}", _human(state.bins_oldest_expiry))
    out.print(table)
    queue = f"{state.queue_depth} project(s) waiting"
    if state.queue_oldest is not None:
        queue += f", oldest {max((utcnow() - state.queue_oldest).total_seconds(), 0):.1f} s ago"
    out.print(f"bins: {state.bins}    targets: {state.targets:,}    queue: {queue}", highlight=False)
    out.print(f"metadata stored: {state.metadata_rows:,} versions, {state.metadata_bytes / 1e6:.1f} MB", highlight=False)
    if state.development_keys:
        out.print("[bold yellow]development key set: the root key is ONLINE[/] (made by `bastion serve`); "
                  "rotate to offline root keys for production", highlight=False)
    if state.suspended:
        out.print("[yellow]TUF was turned off: the next server start with BASTION_TUF=on re-signs every project[/]",
                  highlight=False)


@tuf.command("refresh")
@data_dir_option
def tuf_refresh(data_dir: str | None) -> None:
    """Sign what is queued, re-sign online roles past half their life, collect garbage (what the
    server does by itself every BASTION_TUF_REFRESH_INTERVAL)."""
    from bastion.tuf.service import online_signer, run_refresh, run_snapshot

    bastion = _open(data_dir)
    try:
        signer = online_signer(bastion)
        cycles = 0
        while run_snapshot(bastion, signer) is not None:
            cycles += 1
        refreshed = run_refresh(bastion, signer)
    except TufError as exc:
        _fail(str(exc))
    finally:
        bastion.close()
    out.print(f"snapshot runs: {cycles}; re-signed {refreshed.bins} bins"
              + (f", snapshot v{refreshed.snapshot}, timestamp v{refreshed.timestamp}" if refreshed.timestamp else ""),
              highlight=False)
    for warning in refreshed.warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
