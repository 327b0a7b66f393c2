"""Registered applications: an organization's dependency lists, resolved against this index, stored,
and checked against the advisories.

Formats (``--format``, or detected from the file name, then the content):

- ``requirements``: a pip requirements file, read with ``pip-requirements-parser``. Each line gets
  a version: a pin (``==1.2`` or ``===1.2``) as written; any other specifier the newest non-yanked
  release of this index that satisfies it; a project this index does not have, or whose releases
  all miss the specifier, is kept with no version ("not in this index"). The dependencies of each
  resolved release (its ``Requires-Dist``) are followed through the index's releases and stored as
  transitive (``direct=False``).
- ``pylock``: a PEP 751 ``pylock.toml`` (``packaging.pylock``): complete already, stored as given.
  Every package is direct: pylock 1.0 does not say which packages were asked for.
- ``cyclonedx``: a CycloneDX 1.4-1.6 JSON SBOM: every component whose ``purl`` is
  ``pkg:pypi/NAME@VERSION`` (nested components too). With a ``dependencies`` graph, the components
  the root (``metadata.component.bom-ref``) depends on are direct and the others transitive;
  without one, all are direct.

Environment markers (in requirements files, in ``Requires-Dist``, on pylock packages listed more
than once) are evaluated against :data:`MARKER_ENVIRONMENT`, a fixed, documented environment
(CPython 3.12 on Linux x86-64), so that a list resolves the same on every server.

A list that cannot be read is refused with the file and line (requirements) or the JSON path
(SBOM) and how to fix it; nothing is stored, and an application registered before keeps its list.
"""

from __future__ import annotations

import json
import re
import secrets
import tempfile
import tomllib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from packageurl import PackageURL
from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name, canonicalize_version
from packaging.version import InvalidVersion, Version
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from bastion.accounts.models import User
from bastion.accounts.mfa import decrypt_secret, encrypt_secret
from bastion.accounts.policy import account_requires_mfa, mfa_policy
from bastion.advisories.alerts import ALERTS_LOCK
from bastion.advisories.match import Matcher
from bastion.advisories.models import (
    Advisory,
    AdvisoryPackage,
    Application,
    ApplicationAlert,
    ApplicationPackage,
)
from bastion.advisories.query import AdvisoryView, merge_aliases
from bastion.authz import Permission, Principal, decide
from bastion.db import advisory_lock, utcnow
from bastion.errors import Forbidden, NotFound, ServiceError
from bastion.events import CLI_CONTEXT, RequestContext, record_event
from bastion.packaging.models import Project, Release
from bastion.packaging.service import held_releases

FORMATS = ("requirements", "pylock", "cyclonedx")
CYCLONEDX_VERSIONS = ("1.4", "1.5", "1.6")
MAX_LIST_BYTES = 5 * 1024 * 1024
"""A dependency list larger than this is refused (a big SBOM is ~1 MB)."""
MAX_PACKAGES = 5000
"""At most this many packages per application (direct and transitive)."""
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
MAX_COMPONENT_DEPTH = 64
"""Levels of nested CycloneDX components read (an SBOM nests a few)."""
ORPHANED = 0
"""``target_user_id`` of an application whose owner account was deleted: no account has id 0,
so only an admin may act on it (None would mean "a new application": anyone)."""
KNOWN_AT_REGISTRATION = "not sent: known at registration"
"""``ApplicationAlert.webhook_status`` of a finding the registration's answer showed: the owner
saw it then, so no alert is sent for it later."""

MARKER_ENVIRONMENT: dict[str, str] = {
    "implementation_name": "cpython",
    "implementation_version": "3.12.0",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_python_implementation": "CPython",
    "platform_release": "",
    "platform_system": "Linux",
    "platform_version": "",
    "python_full_version": "3.12.0",
    "python_version": "3.12",
    "sys_platform": "linux",
}
"""The environment markers are evaluated against: CPython 3.12 on Linux x86-64 (fixed, so that a
list resolves the same on every server, whatever Python runs Bastion)."""


class DependencyListError(ServiceError):
    """A dependency list that cannot be read: the message names the place and the fix."""

    status = 400


# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Dependency:
    """One dependency as read from a list (before or after resolution)."""

    name: str
    """PEP 503 normalized name."""
    version: str | None
    """The version used; None: not (yet) resolved, or not in this index."""
    specifier: str = ""
    """The specifier as listed (``>=2.0``), empty when the list pins or gives no version."""
    direct: bool = True
    """Listed in the file (True) or needed by another package (False)."""
    extras: tuple[str, ...] = ()
    """Extras asked for (requirements files), used to follow ``Requires-Dist``."""
    from_index: bool = True
    """False for a requirement installed from a URL or a path: not looked up in the index."""


@dataclass(frozen=True)
class ParsedList:
    """A dependency list read from a file."""

    format: str
    """requirements, pylock or cyclonedx."""
    dependencies: list[Dependency]
    complete: bool
    """True for lock files and SBOMs: stored as given, nothing resolved or followed."""
    notes: list[str] = field(default_factory=list)
    """What was left out and why (shown to the user, never an error)."""


@dataclass(frozen=True)
class Finding:
    """A package of an application at a version an open advisory affects."""

    name: str
    version: str
    direct: bool
    advisory: AdvisoryView


@dataclass(frozen=True)
class ApplicationSummary:
    name: str
    owner: str | None
    format: str
    created: datetime
    updated: datetime
    contact_email: str | None
    webhook_url: str | None
    direct: int
    transitive: int

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "owner": self.owner, "format": self.format,
                "created": _iso(self.created), "updated": _iso(self.updated),
                "contact_email": self.contact_email, "webhook_url": self.webhook_url,
                "packages": {"direct": self.direct, "transitive": self.transitive}}


@dataclass(frozen=True)
class ApplicationDetail:
    summary: ApplicationSummary
    packages: list[Dependency]
    findings: list[Finding]
    notes: list[str] = field(default_factory=list)
    webhook_secret: str | None = None
    """Set only by the registration that created it: shown once, never again."""
    created: bool = False
    in_index: frozenset[str] = frozenset()
    """Names of the packages whose version is a release of this index."""

    @property
    def vulnerable(self) -> bool:
        return bool(self.findings)

    def as_json(self) -> dict[str, Any]:
        by_package: dict[str, list[str]] = defaultdict(list)
        for finding in self.findings:
            by_package[finding.name].append(finding.advisory.id)
        document = self.summary.as_json()
        document["packages_list"] = [
            {"name": p.name, "version": p.version, "specifier": p.specifier, "direct": p.direct,
             "in_index": p.name in self.in_index, "vulnerabilities": by_package.get(p.name, [])}
            for p in self.packages
        ]
        document["findings"] = [
            {"package": f.name, "version": f.version, "direct": f.direct, "id": f.advisory.id,
             "aliases": f.advisory.aliases, "summary": f.advisory.summary, "link": f.advisory.link,
             "fixed_in": f.advisory.fixed_in}
            for f in self.findings
        ]
        document["vulnerable"] = self.vulnerable
        if self.notes:
            document["notes"] = self.notes
        if self.webhook_secret is not None:
            document["webhook_secret"] = self.webhook_secret
        return document


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------------
# Reading the lists
# ---------------------------------------------------------------------------------------------

def detect_format(filename: str, text: str) -> str:
    """The format by file name (pylock*.toml, *.json, *.txt/*.in), else by content."""
    base = Path(filename).name.lower()
    if base.endswith(".toml") and base.startswith("pylock"):
        return "pylock"
    if base.endswith(".json"):
        return "cyclonedx"
    if base.endswith((".txt", ".in")):
        return "requirements"
    stripped = text.lstrip()
    if stripped.startswith("{"):
        return "cyclonedx"
    if re.search(r"(?m)^\s*lock-version\s*=", text):
        return "pylock"
    return "requirements"


def parse_list(content: str | bytes, *, fmt: str | None = None, filename: str = "requirements.txt") -> ParsedList:
    """Read a dependency list (DependencyListError says where and how to fix it)."""
    if isinstance(content, bytes):
        if len(content) > MAX_LIST_BYTES:
            raise DependencyListError(f"{filename}: the list is {len(content)} bytes; the limit is "
                                      f"{MAX_LIST_BYTES} bytes: register a smaller list", status=413)
        try:
            content = content.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DependencyListError(f"{filename}: not UTF-8 text (byte {exc.start}): save the file as UTF-8") from None
    elif len(content.encode()) > MAX_LIST_BYTES:
        raise DependencyListError(f"{filename}: the list is larger than {MAX_LIST_BYTES} bytes: register a smaller "
                                  "list", status=413)
    content = content.removeprefix("\ufeff")
    chosen = fmt or detect_format(filename, content)
    if chosen not in FORMATS:
        raise DependencyListError(f"unknown format '{chosen}': use one of {', '.join(FORMATS)}")
    if chosen == "requirements":
        parsed = parse_requirements(content, filename)
    elif chosen == "pylock":
        parsed = parse_pylock(content, filename)
    else:
        parsed = parse_cyclonedx(content, filename)
    if not parsed.dependencies:
        raise DependencyListError(f"{filename}: no dependency found in this {chosen} list: check the file "
                                  "(and --format) and register it again")
    return parsed


def _pinned(specifier: SpecifierSet) -> str | None:
    """The version of a pin (``==1.2``, ``===1.2``), or None."""
    specs = list(specifier)
    if len(specs) == 1 and specs[0].operator in ("==", "===") and not specs[0].version.endswith(".*"):
        return specs[0].version
    return None


def parse_requirements(text: str, filename: str = "requirements.txt") -> ParsedList:
    """A pip requirements file (no nested -r/-c files: register the combined list)."""
    from pip_requirements_parser import RequirementsFile

    # RequirementsFile.from_string of 32.0.1 is broken (it lacks an import): parse a private copy.
    with tempfile.TemporaryDirectory(prefix="bastion-req-") as directory:
        path = Path(directory) / "requirements.txt"
        path.write_text(text, encoding="utf-8")
        try:
            parsed = RequirementsFile.from_file(str(path), include_nested=False)
        except Exception as exc:  # noqa: BLE001  (the parser raises bare exceptions on odd input)
            raise DependencyListError(f"{filename}: cannot be read as a requirements file: {exc}") from None
    for invalid in parsed.invalid_lines:
        line = invalid.requirement_line
        reason = " ".join(str(invalid.error_message).split())
        raise DependencyListError(
            f"{filename}:{line.line_number}: '{_short(line.line)}' is not a valid requirement ({reason}): "
            "write NAME, NAME==VERSION or NAME>=VERSION (PEP 508), or remove the line"
        )
    for option in parsed.options:
        nested = {k for k in option.options if k in ("requirements", "constraints")}
        if nested:
            raise DependencyListError(
                f"{filename}:{option.requirement_line.line_number}: '{_short(option.requirement_line.line)}' "
                "includes another file, which is not sent with this one: register the combined list "
                "(the output of `pip freeze` or `pip-compile`) instead"
            )
    dependencies: dict[str, tuple[Dependency, int]] = {}
    notes: list[str] = []
    for req in parsed.requirements:
        number = req.requirement_line.line_number
        where = f"{filename}:{number}"
        if not req.name:
            raise DependencyListError(
                f"{where}: '{_short(req.requirement_line.line)}' is a path or URL without a project name: "
                "advisories are matched by name and version; write it as NAME==VERSION, or remove the line"
            )
        if req.marker is not None and not req.marker.evaluate(dict(MARKER_ENVIRONMENT)):
            notes.append(f"{where}: {req.name} left out: its marker '{req.marker}' is false in the default "
                         "environment (CPython 3.12 on Linux x86-64)")
            continue
        name = canonicalize_name(req.name)
        if req.link is not None or req.is_editable:
            # Installed from a URL or a path, not from an index: no version to look up.
            dependency = Dependency(name=name, version=None, specifier="", direct=True, from_index=False)
        else:
            specifier = req.specifier or SpecifierSet()
            dependency = Dependency(name=name, version=_pinned(specifier), specifier=str(specifier), direct=True,
                                    extras=tuple(sorted(canonicalize_name(e) for e in (req.extras or ()))))
        if name in dependencies:
            raise DependencyListError(
                f"{where}: {req.name} is listed again (first at {filename}:{dependencies[name][1]}): list each "
                "project once, with one specifier"
            )
        dependencies[name] = (dependency, number)
    return ParsedList("requirements", [d for d, _ in dependencies.values()], complete=False, notes=notes)


def _short(line: str) -> str:
    line = " ".join(line.split())
    return line if len(line) <= 120 else line[:117] + "..."


def parse_pylock(text: str, filename: str = "pylock.toml") -> ParsedList:
    """A PEP 751 lock file, stored as given (every package direct)."""
    from packaging.pylock import Pylock, PylockValidationError

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DependencyListError(f"{filename}: not valid TOML ({exc}): fix the file or export it again "
                                  "(`uv export --format pylock.toml`, `pip lock`)") from None
    try:
        lock = Pylock.from_dict(data)
    except PylockValidationError as exc:
        raise DependencyListError(f"{filename}: not a valid pylock file: {exc}: fix the file or export it "
                                  "again (`uv export --format pylock.toml`, `pip lock`)") from None
    grouped: dict[str, list[Any]] = defaultdict(list)
    for package in lock.packages:
        grouped[canonicalize_name(package.name)].append(package)
    dependencies = []
    notes: list[str] = []
    for name, packages in grouped.items():
        if len(packages) > 1:  # one entry per environment: keep the default environment's
            matching = [p for p in packages if p.marker is None or p.marker.evaluate(dict(MARKER_ENVIRONMENT))]
            versions = sorted({str(p.version) for p in matching if p.version is not None})
            if len(versions) > 1:
                raise DependencyListError(
                    f"{filename}: packages '{name}' lists the versions {', '.join(versions)} for the same "
                    "environment (CPython 3.12 on Linux x86-64): register one lock per environment"
                )
            if len(matching) != len(packages):
                notes.append(f"{filename}: {name}: the entries whose marker is false in the default environment "
                             "(CPython 3.12 on Linux x86-64) are left out")
            packages = matching or packages[:1]
        package = packages[0]
        dependencies.append(Dependency(name=name, version=str(package.version) if package.version else None,
                                       specifier="", direct=True))
    return ParsedList("pylock", dependencies, complete=True, notes=notes)


def parse_cyclonedx(text: str, filename: str = "bom.json") -> ParsedList:
    """A CycloneDX 1.4-1.6 JSON SBOM: its pkg:pypi components, direct ones from the root's edges."""
    try:
        bom = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DependencyListError(f"{filename}:{exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno}): "
                                  "fix the file or generate the SBOM again (CycloneDX JSON)") from None
    except RecursionError:
        raise DependencyListError(f"{filename}: JSON nested too deeply: fix the file or generate the SBOM again "
                                  "(CycloneDX JSON)") from None
    if not isinstance(bom, dict) or bom.get("bomFormat") != "CycloneDX":
        raise DependencyListError(f"{filename}: $.bomFormat must be \"CycloneDX\": this is not a CycloneDX JSON "
                                  "SBOM (XML SBOMs are not read: generate JSON)")
    spec = bom.get("specVersion")
    if spec not in CYCLONEDX_VERSIONS:
        raise DependencyListError(f"{filename}: $.specVersion is {json.dumps(spec)}; CycloneDX "
                                  f"{', '.join(CYCLONEDX_VERSIONS)} are read: generate the SBOM in one of them")
    components = bom.get("components", [])
    if not isinstance(components, list):
        raise DependencyListError(f"{filename}: $.components must be a list of components")
    found: dict[str, tuple[str, str | None, str]] = {}  # name -> (version, bom-ref, path)
    by_ref: dict[str, str] = {}
    skipped = 0

    def walk(items: list[Any], path: str, depth: int = 1) -> None:
        nonlocal skipped
        if depth > MAX_COMPONENT_DEPTH:
            raise DependencyListError(f"{filename}: components nested too deeply (over {MAX_COMPONENT_DEPTH} "
                                      "levels): fix the file or generate the SBOM again (CycloneDX JSON)")
        for index, component in enumerate(items):
            here = f"{path}[{index}]"
            if not isinstance(component, dict):
                raise DependencyListError(f"{filename}: {here} must be an object")
            nested = component.get("components")
            if nested is not None:
                if not isinstance(nested, list):
                    raise DependencyListError(f"{filename}: {here}.components must be a list")
                walk(nested, f"{here}.components", depth + 1)
            purl_text = component.get("purl")
            if purl_text is None:
                skipped += 1
                continue
            if not isinstance(purl_text, str):
                raise DependencyListError(f"{filename}: {here}.purl must be a string (pkg:pypi/NAME@VERSION)")
            try:
                purl = PackageURL.from_string(purl_text)
            except ValueError as exc:
                raise DependencyListError(f"{filename}: {here}.purl '{_short(purl_text)}' is not a package URL "
                                          f"({exc}): write pkg:pypi/NAME@VERSION") from None
            if purl.type != "pypi":
                skipped += 1
                continue
            if not purl.version:
                raise DependencyListError(f"{filename}: {here}.purl '{_short(purl_text)}' has no version: write "
                                          "pkg:pypi/NAME@VERSION (advisories are matched by version)")
            name = canonicalize_name(purl.name)
            ref = component.get("bom-ref")
            if name in found and found[name][0] != purl.version:
                raise DependencyListError(
                    f"{filename}: {here}.purl names {name} {purl.version}, and {found[name][2]}.purl names "
                    f"{name} {found[name][0]}: an application uses one version of each package: register "
                    "each environment's SBOM as its own application"
                )
            found.setdefault(name, (purl.version, ref if isinstance(ref, str) else None, f"{here}"))
            if isinstance(ref, str):
                by_ref[ref] = name

    walk(components, "$.components")
    direct = _cyclonedx_direct(bom, by_ref, filename)
    dependencies = [Dependency(name=name, version=version, specifier="",
                               direct=True if direct is None else name in direct)
                    for name, (version, _ref, _path) in found.items()]
    notes = [f"{filename}: {skipped} component(s) without a pkg:pypi purl left out"] if skipped else []
    return ParsedList("cyclonedx", dependencies, complete=True, notes=notes)


def _cyclonedx_direct(bom: dict[str, Any], by_ref: dict[str, str], filename: str) -> set[str] | None:
    """Names the root depends on, or None when the SBOM has no usable graph (all direct)."""
    metadata = bom.get("metadata")
    root = metadata.get("component", {}).get("bom-ref") if isinstance(metadata, dict) and isinstance(
        metadata.get("component"), dict) else None
    graph = bom.get("dependencies")
    if root is None or graph is None:
        return None
    if not isinstance(graph, list):
        raise DependencyListError(f"{filename}: $.dependencies must be a list of {{\"ref\", \"dependsOn\"}}")
    for index, edge in enumerate(graph):
        if not isinstance(edge, dict) or not isinstance(edge.get("ref"), str):
            raise DependencyListError(f"{filename}: $.dependencies[{index}].ref must be a string (a bom-ref)")
        depends = edge.get("dependsOn", [])
        if not isinstance(depends, list) or not all(isinstance(d, str) for d in depends):
            raise DependencyListError(f"{filename}: $.dependencies[{index}].dependsOn must be a list of bom-refs")
        if edge["ref"] == root:
            return {by_ref[d] for d in depends if d in by_ref}
    return None


# ---------------------------------------------------------------------------------------------
# Resolving against the index
# ---------------------------------------------------------------------------------------------

@dataclass
class _Candidate:
    release_id: int
    version: str
    canonical: str
    yanked: bool


def _releases(session: Session, names: Iterable[str]) -> dict[str, list[_Candidate]]:
    """Releases of the projects of this index among ``names``, by normalized name; not those whose
    every file is held for review (published nowhere, so never chosen nor said to be here)."""
    found: dict[str, list[_Candidate]] = defaultdict(list)
    for chunk in _chunks(sorted(set(names))):
        rows = session.execute(
            select(Project.normalized_name, Project.id, Release.id, Release.version, Release.canonical_version,
                   Release.yanked)
            .join(Release, Release.project_id == Project.id)
            .where(Project.normalized_name.in_(chunk), Project.status != "quarantined")
        ).all()
        held = held_releases(session, sorted({row[1] for row in rows}))
        for name, _, release_id, version, canonical, yanked in rows:
            if release_id not in held:
                found[name].append(_Candidate(release_id, version, canonical, yanked))
    return found


def _chunks(items: Sequence[Any], size: int = 500) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _choose(candidates: list[_Candidate], specifier: str, pinned: str | None) -> _Candidate | None:
    """The release a dependency uses: the pinned one, else the newest non-yanked one satisfying."""
    if pinned is not None:
        try:
            wanted = canonicalize_version(pinned)
        except InvalidVersion:
            wanted = pinned
        return next((c for c in candidates if c.canonical == wanted or c.version == pinned), None)
    try:
        spec = SpecifierSet(specifier)
    except InvalidSpecifier:
        return None
    usable = {c.version: c for c in candidates if not c.yanked}
    matching = list(spec.filter(usable))
    if not matching:
        return None
    return usable[max(matching, key=Version)]


def resolve(session: Session, parsed: ParsedList) -> list[Dependency]:
    """Give each dependency of a requirements list its version in this index, and add the
    dependencies of the chosen releases (``Requires-Dist``), transitively."""
    if parsed.complete:  # a lock or SBOM lists every package itself: held to the same size
        if len(parsed.dependencies) > MAX_PACKAGES:
            raise DependencyListError(f"the list has {len(parsed.dependencies)} packages and may not exceed "
                                      f"{MAX_PACKAGES} packages: register a smaller application")
        return list(parsed.dependencies)
    chosen: dict[str, Dependency] = {}
    release_of: dict[str, int] = {}
    level = list(parsed.dependencies)
    while level:
        candidates = _releases(session, [d.name for d in level])
        next_level_from: list[tuple[int, tuple[str, ...]]] = []
        for dependency in level:
            if dependency.name in chosen:
                continue
            if len(chosen) >= MAX_PACKAGES:
                raise DependencyListError(f"the list and its dependencies exceed {MAX_PACKAGES} packages: "
                                          "register a smaller application")
            pick = _choose(candidates.get(dependency.name, []), dependency.specifier,
                           dependency.version) if dependency.from_index else None
            version = dependency.version or (pick.version if pick else None)
            chosen[dependency.name] = Dependency(dependency.name, version, dependency.specifier, dependency.direct,
                                                 dependency.extras)
            if pick is not None:
                release_of[dependency.name] = pick.release_id
                next_level_from.append((pick.release_id, dependency.extras))
        level = _requirements_of(session, next_level_from, chosen)
    return list(chosen.values())


def _requirements_of(session: Session, releases: list[tuple[int, tuple[str, ...]]],
                     known: dict[str, Dependency]) -> list[Dependency]:
    """The dependencies (Requires-Dist, markers true in the default environment) of the releases."""
    if not releases:
        return []
    extras_of = dict(releases)
    metadata: dict[int, dict[str, Any]] = {}
    for chunk in _chunks(sorted(extras_of)):
        metadata.update(session.execute(
            select(Release.id, Release.core_metadata).where(Release.id.in_(chunk))).all())
    found: dict[str, Dependency] = {}
    for release_id, extras in releases:
        for text in (metadata.get(release_id) or {}).get("requires_dist") or []:
            try:
                requirement = Requirement(text)
            except InvalidRequirement:
                continue  # accepted at upload by an older rule: not followed
            if requirement.marker is not None and not _marker_true(requirement.marker, extras):
                continue
            name = canonicalize_name(requirement.name)
            if name in known or name in found:
                continue
            found[name] = Dependency(name, None, str(requirement.specifier), direct=False,
                                     extras=tuple(sorted(canonicalize_name(e) for e in requirement.extras)))
    return list(found.values())


def _marker_true(marker: Marker, extras: tuple[str, ...]) -> bool:
    try:
        return any(marker.evaluate({**MARKER_ENVIRONMENT, "extra": extra}) for extra in (extras or ("",)))
    except Exception:  # noqa: BLE001  (an odd marker: the dependency is not followed)
        return False


# ---------------------------------------------------------------------------------------------
# Findings
# ---------------------------------------------------------------------------------------------

def findings_for(session: Session, packages: Sequence[Dependency]) -> list[Finding]:
    """The packages at versions open advisories affect (alias groups merged), by package name."""
    versions = {p.name: p for p in packages if p.version is not None}
    if not versions:
        return []
    entries: dict[str, list[tuple[Advisory, AdvisoryPackage]]] = defaultdict(list)
    for chunk in _chunks(sorted(versions)):
        for advisory, entry in session.execute(
            select(Advisory, AdvisoryPackage).join(AdvisoryPackage, AdvisoryPackage.advisory_id == Advisory.id)
            .where(AdvisoryPackage.normalized_name.in_(chunk), Advisory.withdrawn.is_(None))
        ):
            entries[entry.normalized_name].append((advisory, entry))
    found: list[Finding] = []
    for name in sorted(entries):
        package = versions[name]
        assert package.version is not None
        pairs: dict[str, tuple[Advisory, list[str]]] = {}
        for advisory, entry in entries[name]:
            matcher = Matcher(entry.ranges, entry.versions)
            if matcher.affects(package.version):
                previous = pairs.get(advisory.id, (advisory, []))[1]
                pairs[advisory.id] = (advisory, previous + matcher.fixed_in())
        for view in merge_aliases(list(pairs.values())):
            found.append(Finding(name, package.version, package.direct, view))
    return found


def in_index(session: Session, packages: Sequence[Dependency]) -> frozenset[str]:
    """The packages whose version is a release of this index."""
    releases = _releases(session, [p.name for p in packages if p.version is not None])
    found = set()
    for package in packages:
        if package.version is not None and _choose(releases.get(package.name, []), "", package.version):
            found.add(package.name)
    return frozenset(found)


def usage_counts(session: Session, normalized_name: str) -> tuple[int, int]:
    """How many registered applications use the project: (directly, only transitively)."""
    rows = dict(session.execute(
        select(ApplicationPackage.direct, func.count(func.distinct(ApplicationPackage.application_id)))
        .where(ApplicationPackage.normalized_name == canonicalize_name(normalized_name))
        .group_by(ApplicationPackage.direct)
    ).all())
    return int(rows.get(True, 0)), int(rows.get(False, 0))


# ---------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------

def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ServiceError(f"invalid application name '{_short(name)}': use 1-100 letters, digits, '.', '_' or "
                           "'-', starting with a letter or digit")
    return name


def check_webhook_url(url: str) -> str:
    """https, or http to this machine only (tests, a local relay); no credentials in the URL."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise ServiceError(f"invalid webhook URL '{_short(url)}': give an https:// URL") from None
    if len(url) > 2000 or parts.scheme not in ("https", "http") or not host:
        raise ServiceError(f"invalid webhook URL '{_short(url)}': give an https:// URL (at most 2000 characters)")
    if parts.scheme == "http" and host not in LOCAL_HOSTS:
        raise ServiceError(f"the webhook URL must use https (http is allowed only to localhost or 127.0.0.1): "
                           f"'{_short(url)}'")
    if parts.username or parts.password:
        raise ServiceError("the webhook URL must not carry a user name or password: the receiver checks the "
                           "X-Bastion-Signature header instead (HMAC-SHA256 with the webhook secret)")
    return url


def check_email(address: str) -> str:
    if len(address) > 254 or not EMAIL_RE.match(address):
        raise ServiceError(f"invalid contact email '{_short(address)}': give one address such as "
                           "security@example.org")
    return address


def _authorize(principal: Principal | None, application: Application | None, *,
               session: Session | None = None) -> Principal:
    """MANAGE_APPLICATION; with ``session`` (a change, not a read) the 2FA policy applies too, as to
    every account action (``everyone`` holds it to 2FA)."""
    target = None if application is None else (
        application.owner_id if application.owner_id is not None else ORPHANED)
    mfa_required = session is not None and account_requires_mfa(mfa_policy(session))
    decision = decide(principal, Permission.MANAGE_APPLICATION, target_user_id=target, mfa_required=mfa_required)
    if not decision:
        raise Forbidden(decision.reason, status=401 if principal is None else 403)
    assert principal is not None
    return principal


def _find(session: Session, name: str) -> Application:
    application = session.execute(select(Application).where(Application.name == name)).scalar_one_or_none()
    if application is None:
        raise NotFound(f"no application named '{_short(name)}': register it first "
                       "(PUT /api/applications/NAME, or `bastion app register NAME FILE --owner USER`)")
    return application


def register(
    session: Session,
    bastion: Any,
    name: str,
    content: str | bytes,
    *,
    principal: Principal | None,
    fmt: str | None = None,
    filename: str | None = None,
    owner: str | None = None,
    webhook_url: str | None = None,
    contact_email: str | None = None,
    rotate_secret: bool = False,
    context: RequestContext = CLI_CONTEXT,
) -> ApplicationDetail:
    """Register (or replace) the dependency list of application ``name``.

    ``webhook_url`` / ``contact_email``: None keeps the current value, "" clears it. ``owner``: a
    user name (the operator and admins only; others own what they register). The webhook secret is
    made when the application first gets a webhook URL (or ``rotate_secret``) and returned once.
    Everything is checked before anything is written; the caller's transaction makes it atomic.
    """
    check_name(name)
    if principal is None:
        raise Forbidden("authentication required: supply an API token (username __token__)", status=401)
    if webhook_url:
        check_webhook_url(webhook_url)
    if contact_email:
        check_email(contact_email)
    advisory_lock(session, f"bastion:application:{name}")  # two first registrations of one name: one wins
    existing = session.execute(select(Application).where(Application.name == name)).scalar_one_or_none()
    # first: someone else's application is refused whatever the list says
    _authorize(principal, existing, session=session)
    owner_id = _owner_id(session, principal, owner, existing)
    parsed = parse_list(content, fmt=fmt, filename=filename or f"{name} ({fmt or 'dependency list'})")
    packages = resolve(session, parsed)

    now = utcnow()
    created = existing is None
    application = existing or Application(name=name, owner_id=owner_id, created=now, source_format=parsed.format)
    if created:
        session.add(application)
    application.owner_id = owner_id
    application.updated = now
    application.source_format = parsed.format
    if contact_email is not None:
        application.contact_email = contact_email or None
    if webhook_url is not None:
        application.webhook_url = webhook_url or None
    secret: str | None = None
    if application.webhook_url is None:
        application.webhook_secret = None
    elif application.webhook_secret is None or rotate_secret:
        secret = secrets.token_hex(32)
        application.webhook_secret = encrypt_secret(bastion.encryption_key, secret)
    session.flush()
    session.execute(delete(ApplicationPackage).where(ApplicationPackage.application_id == application.id))
    session.add_all([ApplicationPackage(application_id=application.id, normalized_name=p.name, version=p.version,
                                        specifier=p.specifier[:500], direct=p.direct) for p in packages])
    session.flush()
    findings = findings_for(session, packages)
    record_event(
        session, "application.registered" if created else "application.updated",
        actor_id=principal.user_id, actor=principal.username, subject=f"application:{name}", context=context,
        secret=bastion.secret,
        details={"format": parsed.format, "direct": sum(p.direct for p in packages),
                 "transitive": sum(not p.direct for p in packages), "owner": _username(session, owner_id),
                 "webhook": application.webhook_url is not None, "webhook_secret_issued": secret is not None,
                 "contact_email": application.contact_email},
    )
    _mark_known(session, application.id, findings)  # after the event: locks in the order uploads take them
    return ApplicationDetail(_summary(session, application), sorted(packages, key=lambda p: (not p.direct, p.name)),
                             findings, parsed.notes, secret, created, in_index(session, packages))


def _owner_id(session: Session, principal: Principal, owner: str | None, existing: Application | None) -> int:
    if owner is not None:
        user = session.execute(select(User).where(User.username_key == owner.lower())).scalar_one_or_none()
        if user is None:
            raise NotFound(f"no user named '{_short(owner)}' to own the application: create the account first")
        if user.id != principal.user_id and not principal.is_admin:
            raise Forbidden("only an index admin may register an application for another user")
        return user.id
    if existing is not None and existing.owner_id is not None:
        return existing.owner_id
    if principal.user_id is None:
        raise ServiceError("an application needs an owner to receive its alerts: give --owner USER")
    return principal.user_id


def _mark_known(session: Session, application_id: int, findings: list[Finding]) -> None:
    """The findings the registration shows count as told: no alert for them later."""
    ids = {member for f in findings for member in f.advisory.members}
    if not ids:
        return
    advisory_lock(session, ALERTS_LOCK)  # an import deciding alerts for this application meanwhile
    told = set(session.execute(select(ApplicationAlert.advisory_id).where(
        ApplicationAlert.application_id == application_id)).scalars())
    session.add_all([ApplicationAlert(application_id=application_id, advisory_id=i,
                                      webhook_status=KNOWN_AT_REGISTRATION) for i in sorted(ids - told)])


def _username(session: Session, user_id: int | None) -> str | None:
    if user_id is None:
        return None
    return session.execute(select(User.username).where(User.id == user_id)).scalar_one_or_none()


def _summary(session: Session, application: Application) -> ApplicationSummary:
    counts = dict(session.execute(
        select(ApplicationPackage.direct, func.count()).where(ApplicationPackage.application_id == application.id)
        .group_by(ApplicationPackage.direct)).all())
    return ApplicationSummary(application.name, _username(session, application.owner_id), application.source_format,
                              application.created, application.updated, application.contact_email,
                              application.webhook_url, int(counts.get(True, 0)), int(counts.get(False, 0)))


def stored_packages(session: Session, application_id: int) -> list[Dependency]:
    return [Dependency(p.normalized_name, p.version, p.specifier, p.direct) for p in session.execute(
        select(ApplicationPackage).where(ApplicationPackage.application_id == application_id)
        .order_by(ApplicationPackage.direct.desc(), ApplicationPackage.normalized_name)).scalars()]


def show(session: Session, name: str, *, principal: Principal | None) -> ApplicationDetail:
    """An application's packages and its current findings."""
    if principal is None:
        raise Forbidden("authentication required: supply an API token (username __token__)", status=401)
    application = _find(session, name)
    _authorize(principal, application)
    packages = stored_packages(session, application.id)
    return ApplicationDetail(_summary(session, application), packages, findings_for(session, packages),
                             in_index=in_index(session, packages))


def list_applications(session: Session, *, principal: Principal | None) -> list[ApplicationSummary]:
    """The principal's applications (every application for admins)."""
    if principal is None:
        raise Forbidden("authentication required: supply an API token (username __token__)", status=401)
    decision = decide(principal, Permission.MANAGE_APPLICATION, target_user_id=principal.user_id)
    if not decision:
        raise Forbidden(decision.reason)
    query = select(Application).order_by(Application.name)
    if not principal.is_admin:
        query = query.where(Application.owner_id == principal.user_id)
    return [_summary(session, a) for a in session.execute(query).scalars()]


def remove(session: Session, bastion: Any, name: str, *, principal: Principal | None,
           context: RequestContext = CLI_CONTEXT) -> None:
    """Forget an application: its list, its alerts and its webhook secret."""
    if principal is None:
        raise Forbidden("authentication required: supply an API token (username __token__)", status=401)
    application = _find(session, name)
    _authorize(principal, application, session=session)
    owner = _username(session, application.owner_id)
    session.execute(delete(ApplicationPackage).where(ApplicationPackage.application_id == application.id))
    session.execute(delete(ApplicationAlert).where(ApplicationAlert.application_id == application.id))
    session.delete(application)
    record_event(session, "application.removed", actor_id=principal.user_id, actor=principal.username,
                 subject=f"application:{name}", context=context, secret=bastion.secret, details={"owner": owner})


def webhook_secret(bastion: Any, application: Application) -> str | None:
    """The application's webhook secret, decrypted (for signing; never logged)."""
    if application.webhook_secret is None:
        return None
    return decrypt_secret(bastion.encryption_key, application.webhook_secret)
