"""``bastion download NAME==VERSION``: one distribution file, fetched and verified through TUF.

The project's ``simple/<name>/index.json`` is a TUF target, so the list of files is verified
first; the chosen file is another target, verified before it is written to the destination.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.tags import Tag, sys_tags
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from bastion.packaging.names import is_valid_name
from bastion.tuf.client import ClientError, VerificationError, VerifiedIndex
from bastion.tuf.client.proxy import target_path_of_link

_SPEC = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*(\S+)\s*$")


class NotFound(Exception):
    """The signed metadata lists no such project, version or file; the message says which."""


@dataclass(frozen=True)
class Downloaded:
    """A file saved after python-tuf verified it."""

    path: Path
    """Where it was written."""
    sha256: str
    """The sha256 of the bytes written (python-tuf checked them against the signed hashes)."""


def parse_spec(spec: str) -> tuple[str, Version]:
    """(normalized name, version) of ``NAME==VERSION``; ClientError otherwise."""
    how = "give one exact pin, e.g. `bastion download demo-pkg==1.0.0 ...`"
    match = _SPEC.match(spec)
    if match is None or not is_valid_name(match.group(1)):
        raise ClientError(f"{spec!r} is not NAME==VERSION: {how}")
    try:
        version = Version(match.group(2))
    except InvalidVersion:
        raise ClientError(f"{match.group(2)!r} in {spec!r} is not a valid version (PEP 440): {how}") from None
    return canonicalize_name(match.group(1)), version


def _file_version(filename: str) -> tuple[str, Version | None, frozenset[Tag] | None]:
    """(kind, version, wheel tags) of a distribution filename; version None when unparsable."""
    try:
        if filename.endswith(".whl"):
            _, version, _, tags = parse_wheel_filename(filename)
            return "wheel", version, tags
        _, version = parse_sdist_filename(filename)
        return "sdist", version, None
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return "other", None, None


def choose_file(files: list[dict[str, Any]], version: Version, filename: str | None) -> dict[str, Any]:
    """The entry of ``files`` to download: ``filename`` exactly, else the wheel this interpreter
    ranks best, else the sdist. NotFound when none fits."""
    of_version = [f for f in files if _file_version(str(f.get("filename", "")))[1] == version]
    if filename is not None:
        for entry in files:
            if entry.get("filename") == filename:
                return entry
        names = ", ".join(sorted(str(f.get("filename")) for f in of_version)) or "none"
        raise NotFound(f"no file named {filename} (files of version {version}: {names})")
    if not of_version:
        raise NotFound(f"no file of version {version}")
    ranking = {tag: rank for rank, tag in enumerate(sys_tags())}
    wheels = []
    for entry in of_version:
        kind, _, tags = _file_version(entry["filename"])
        if kind == "wheel" and tags:
            ranks = [ranking[t] for t in tags if t in ranking]
            if ranks:
                wheels.append((min(ranks), entry["filename"], entry))
    if wheels:
        return min(wheels, key=lambda w: (w[0], w[1]))[2]
    sdists = [e for e in of_version if _file_version(e["filename"])[0] == "sdist"]
    if sdists:
        return sorted(sdists, key=lambda e: (not e["filename"].endswith(".tar.gz"), e["filename"]))[0]
    names = ", ".join(sorted(f["filename"] for f in of_version))
    raise NotFound(f"no wheel of version {version} fits this interpreter and there is no sdist (files: {names}); "
                   "pass --file FILENAME to take one anyway")


def download(index: VerifiedIndex, name: str, version: Version, dest: Path, filename: str | None = None) -> Downloaded:
    """Verify the project's JSON simple page, choose a file, verify it, write it to ``dest``."""
    page_path = f"simple/{name}/index.json"
    found = index.read_target(page_path)
    if found is None:
        raise NotFound(f"{name} is not a project in the signed TUF metadata of {index.index_url}")
    _, page = found
    try:
        files = json.loads(page).get("files", [])
    except (ValueError, AttributeError) as exc:
        raise VerificationError(f"{page_path}: the verified page is not a PEP 691 JSON page ({exc})") from None
    entry = choose_file(files, version, filename)
    chosen = str(entry["filename"])
    if "/" in chosen or chosen in ("", ".", ".."):
        raise VerificationError(f"{page_path}: lists an unusable filename {chosen!r}")
    target = target_path_of_link(str(entry.get("url", "")), name, index.index_url)
    if target is None:
        raise VerificationError(f"{page_path}: {chosen} links off the index ({entry.get('url')})")
    opened = index.open_target(target)
    if opened is None:
        raise VerificationError(f"{page_path} lists {chosen} at {target}, which the signed metadata does not list")
    verified, handle = opened
    listed = (entry.get("hashes") or {}).get("sha256")
    if listed and verified.sha256 and listed != verified.sha256:
        handle.close()
        raise VerificationError(f"{target}: the verified page lists sha256 {listed}, the signed metadata "
                                f"{verified.sha256}")
    try:
        dest.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{chosen}.")
    except OSError as exc:
        handle.close()
        raise ClientError(f"--dest {dest} cannot be written ({exc.strerror}): choose a writable directory") from None
    try:
        digest = hashlib.sha256()
        with handle, os.fdopen(fd, "wb") as out:
            while chunk := handle.read(1024 * 1024):
                digest.update(chunk)
                out.write(chunk)
        final = dest / chosen
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return Downloaded(path=final, sha256=digest.hexdigest())
