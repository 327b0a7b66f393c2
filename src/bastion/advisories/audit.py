"""``bastion audit``: audit dependencies against an index's advisories, over HTTP, like pip-audit.

The work, with no terminal in it (``audit_cli.py`` is the command):

1. read what to audit: requirements files (``pip-requirements-parser``), a ``pylock.toml``
   (``packaging.pylock``) or an installed environment (``importlib.metadata``);
2. resolve against the index's JSON API: ``==`` pins as written, any other specifier to the newest
   non-yanked version that satisfies it (``packaging.specifiers``), then each release's
   ``requires_dist`` (markers evaluated for this interpreter and the requested extras) breadth
   first, the first version reached of a name winning (``--no-deps``: the listed ones only);
3. ask the index's OSV API: one ``/osv/v1/querybatch`` for everything, then ``/osv/v1/query`` for
   the whole records of the vulnerable ones only; records that share an id or alias are one
   finding (:func:`bastion.advisories.query.merge_aliases`, as the JSON API shows them);
4. apply ignores (alias-aware, with a reason and an expiry), and with ``--fix`` find, per
   vulnerable package, the lowest version on the index at or above the current one that no
   advisory affects.

Everything talks HTTP with ``urllib`` (the runtime has no HTTP client dependency): a developer
audits from any machine that reaches the index. JSON fetches run in a small thread pool.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from packaging.markers import Marker, UndefinedComparison, UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version

from bastion.advisories.match import Matcher, parse_version

DEFAULT_INDEX_URL = "http://127.0.0.1:8080"
BATCH_LIMIT = 1000
"""Queries per querybatch request (the OSV API's limit)."""
WORKERS = 8
"""Concurrent HTTP requests to the index."""
USER_AGENT = "bastion-audit"

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total)."""


class AuditInputError(Exception):
    """Bad input (missing file, unparsable line, bad ignore): the message says what and how to fix it."""


class IndexUnavailable(Exception):
    """The index could not be asked (unreachable, or an unexpected answer)."""


# -- values ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Wanted:
    """A requirement to resolve."""

    name: NormalizedName
    specifier: SpecifierSet
    extras: frozenset[str]
    origin: str
    """Where it came from: ``requirements.txt:3``, or ``via NAME VERSION`` for a dependency."""
    direct: bool = True

    @property
    def pinned(self) -> str | None:
        """The version of an exact pin (``==1.0``, ``===1.0``), else None (``==1.*`` is a range)."""
        specs = list(self.specifier)
        if len(specs) == 1 and specs[0].operator in ("==", "===") and not specs[0].version.endswith(".*"):
            return specs[0].version
        return None


@dataclass(frozen=True)
class Dependency:
    """A package at the version that is audited."""

    name: NormalizedName
    version: str
    direct: bool = True
    origin: str = ""


@dataclass(frozen=True)
class Skipped:
    """Something that could not be audited, and why."""

    name: str
    reason: str


@dataclass(frozen=True)
class Ignore:
    """An advisory id not to report (any id or alias of the finding), until ``expires``."""

    id: str
    reason: str = ""
    expires: date | None = None
    """The last day it applies; None: no expiry."""
    origin: str = "--ignore"

    def expired(self, today: date) -> bool:
        return self.expires is not None and today > self.expires


@dataclass
class Finding:
    """One vulnerability (alias group) of one dependency."""

    name: NormalizedName
    version: str
    id: str
    aliases: list[str]
    fix_versions: list[str]
    """Fixed versions above the audited one that the advisory does not affect, ascending."""
    description: str
    ignored_by: Ignore | None = None
    """An ignore in force: not reported as a finding, listed as ignored."""
    expired_ignore: Ignore | None = None
    """An ignore that matched but has expired: the finding is reported again, and this says so."""

    @property
    def ids(self) -> set[str]:
        return {self.id, *self.aliases}


@dataclass(frozen=True)
class Fix:
    """The smallest upgrade of a vulnerable package that clears every advisory, if the index has one."""

    name: NormalizedName
    old_version: str
    new_version: str | None
    reason: str = ""
    """Why there is none (when ``new_version`` is None)."""


@dataclass
class Report:
    dependencies: list[Dependency] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    fixes: list[Fix] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def open_findings(self) -> list[Finding]:
        return [f for f in self.findings if f.ignored_by is None]

    @property
    def ignored(self) -> list[Finding]:
        return [f for f in self.findings if f.ignored_by is not None]

    @property
    def exit_code(self) -> int:
        return 1 if self.open_findings else 0


# -- reading inputs -------------------------------------------------------------------------------

def _env_marker_ok(marker: Marker | None, extras: Iterable[str] = ()) -> bool:
    """Whether a marker holds for this interpreter (with any of ``extras``, or none)."""
    if marker is None:
        return True
    try:
        return any(marker.evaluate({"extra": extra}) for extra in (*extras, ""))
    except (UndefinedComparison, UndefinedEnvironmentName, InvalidVersion):
        return True  # cannot tell: audit it (the safe side)


def read_requirements(path: Path) -> tuple[list[Wanted], list[Skipped]]:
    """The requirements of a requirements file (and of the files it includes with ``-r``)."""
    from pip_requirements_parser import RequirementsFile

    if not path.exists() or path.is_dir():  # exists: /dev/stdin and <(...) are no regular files
        raise AuditInputError(f"{path}: no such requirements file. Check the path given to -r.")
    try:
        parsed = RequirementsFile.from_file(str(path), include_nested=True)
    except Exception as exc:  # unreadable file, a nested -r that is missing...  # noqa: BLE001
        raise AuditInputError(f"{path}: cannot read it as a requirements file: {exc}") from None
    if parsed.invalid_lines:
        bad = parsed.invalid_lines[0]
        where = f"{bad.filename or path}:{bad.line_number}"
        reason = " ".join(str(bad.error_message).split())
        more = f" (and {len(parsed.invalid_lines) - 1} more invalid line(s))" if len(parsed.invalid_lines) > 1 else ""
        raise AuditInputError(
            f"{where}: not a valid requirement: {bad.line!r}: {reason}{more}. Write it as NAME==VERSION, "
            "NAME>=VERSION or NAME (PEP 508), or remove the line.")
    wanted, skipped = [], []
    for req in parsed.requirements:
        where = f"{req.filename or path}:{req.line_number}"
        if req.is_editable or req.link is not None or req.req is None or not req.name:
            skipped.append(Skipped(req.name or (req.line or where).strip(),
                                   f"{where}: an editable, URL or local path requirement cannot be resolved "
                                   "against an index"))
            continue
        if not _env_marker_ok(req.marker):
            continue  # pip would not install it here
        wanted.append(Wanted(name=canonicalize_name(req.name), specifier=req.specifier or SpecifierSet(),
                             extras=frozenset(canonicalize_name(e) for e in req.extras or ()), origin=where))
    return wanted, skipped


def read_pylock(path: Path) -> tuple[list[Dependency], list[Skipped]]:
    """The packages of a ``pylock.toml`` (PEP 751) whose markers hold for this interpreter."""
    from packaging.pylock import Pylock, PylockValidationError, is_valid_pylock_path

    if not path.is_file():
        raise AuditInputError(f"{path}: no such lock file. Check the path.")
    if not is_valid_pylock_path(path):
        raise AuditInputError(f"{path}: a lock file is named pylock.toml or pylock.NAME.toml (PEP 751); "
                              "for a requirements file use -r.")
    try:
        lock = Pylock.from_dict(tomllib.loads(path.read_text(encoding="utf-8")))
    except tomllib.TOMLDecodeError as exc:
        raise AuditInputError(f"{path}: not valid TOML: {exc}. Regenerate the lock file.") from None
    except PylockValidationError as exc:
        raise AuditInputError(f"{path}: not a valid pylock.toml: {exc}. Regenerate the lock file.") from None
    found, skipped = [], []
    for package in lock.packages:
        if package.marker is not None and not _env_marker_ok(package.marker):
            continue
        if package.version is None:
            skipped.append(Skipped(package.name, f"{path}: no version (a VCS, directory or archive package)"))
            continue
        found.append(Dependency(name=package.name, version=str(package.version), origin=str(path)))
    return found, skipped


def environment_paths(python: str) -> list[str]:
    """``sys.path`` of another interpreter."""
    try:
        result = subprocess.run([python, "-c", "import json, sys; print(json.dumps(sys.path))"],
                                capture_output=True, text=True, timeout=60, check=False)
    except OSError as exc:
        raise AuditInputError(f"--python {python}: cannot run it: {exc}. Give the path of a Python interpreter.") from None
    if result.returncode != 0:
        raise AuditInputError(f"--python {python}: it failed ({result.stderr.strip()[:300]}). "
                              "Give the path of a Python interpreter.")
    try:
        paths = json.loads(result.stdout)
    except ValueError:
        raise AuditInputError(f"--python {python}: did not print its sys.path; is it a Python interpreter?") from None
    return [p for p in paths if isinstance(p, str) and p and Path(p).exists()]  # sys.path lists absent zips too


def read_environment(paths: Sequence[str] | None) -> tuple[list[Dependency], list[Skipped]]:
    """The distributions installed on ``paths`` (site-packages directories; None: this interpreter)."""
    if paths is not None:
        for entry in paths:
            if not Path(entry).exists():
                raise AuditInputError(f"--path {entry}: no such directory. Give a site-packages directory.")
    found: dict[str, Dependency] = {}
    skipped = []
    dists = importlib_metadata.distributions(path=list(paths)) if paths is not None else importlib_metadata.distributions()
    for dist in dists:
        name = dist.metadata["Name"] if dist.metadata else None
        if not name:
            continue
        normalized = canonicalize_name(name)
        if normalized in found:
            continue  # the first on the path is the one imported
        version = dist.version
        if parse_version(version) is None:
            skipped.append(Skipped(normalized, f"installed version {version!r} is not a PEP 440 version"))
            continue
        found[normalized] = Dependency(name=normalized, version=version, origin="installed")
    return sorted(found.values(), key=lambda d: d.name), skipped


def parse_ignore(option: str, reason: str = "") -> Ignore:
    """``--ignore ID`` or ``--ignore ID:YYYY-MM-DD`` (the last day the ignore applies)."""
    text = option.strip()
    ident, sep, until = text.rpartition(":") if ":" in text else (text, "", "")
    expires = None
    if sep:
        try:
            expires = date.fromisoformat(until.strip())
        except ValueError:
            raise AuditInputError(f"--ignore {option}: {until!r} is not a date; write --ignore ID or "
                                  "--ignore ID:YYYY-MM-DD (the last day the ignore applies).") from None
    ident = ident.strip()
    if not ident or any(c.isspace() for c in ident):
        raise AuditInputError(f"--ignore {option!r}: give an advisory id, e.g. --ignore CVE-2024-1234 "
                              "or --ignore GHSA-xxxx-xxxx-xxxx:2026-12-31.")
    return Ignore(id=ident, reason=reason, expires=expires, origin="--ignore")


def read_ignore_file(path: Path) -> list[Ignore]:
    """An ignore file: TOML with ``[[ignore]]`` tables of ``id``, ``reason`` and optional ``expires``::

        [[ignore]]
        id = "CVE-2024-1234"
        reason = "we never parse untrusted XML"
        expires = 2026-12-31
    """
    if not path.is_file():
        raise AuditInputError(f"{path}: no such ignore file. Check the path given to --ignore-file.")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise AuditInputError(f"{path}: not valid TOML: {exc}.") from None
    entries = data.get("ignore", [])
    unknown = set(data) - {"ignore"}
    if unknown or not isinstance(entries, list):
        raise AuditInputError(f"{path}: expected only [[ignore]] tables (id, reason, expires), found "
                              f"{', '.join(sorted(unknown)) or 'ignore = ' + type(entries).__name__}.")
    ignores = []
    for i, entry in enumerate(entries, 1):
        where = f"{path}: [[ignore]] #{i}"
        if not isinstance(entry, dict):
            raise AuditInputError(f"{where} must be a table with id, reason and expires.")
        extra = set(entry) - {"id", "reason", "expires"}
        if extra:
            raise AuditInputError(f"{where}: unknown key(s) {', '.join(sorted(extra))}; the keys are id, reason, expires.")
        ident, reason, expires = entry.get("id"), entry.get("reason"), entry.get("expires")
        if not isinstance(ident, str) or not ident.strip():
            raise AuditInputError(f'{where}: id is missing; add id = "CVE-..." (any id or alias of the advisory).')
        if not isinstance(reason, str) or not reason.strip():
            raise AuditInputError(f'{where} ({ident}): reason is missing; say why it is safe to ignore: reason = "...".')
        if isinstance(expires, str):
            try:
                expires = date.fromisoformat(expires)
            except ValueError:
                expires = "bad"
        if expires is not None and (not isinstance(expires, date) or hasattr(expires, "hour")):
            raise AuditInputError(f"{where} ({ident}): expires must be a date like 2026-12-31 (the last day the "
                                  "ignore applies), or left out.")
        ignores.append(Ignore(id=ident.strip(), reason=reason.strip(), expires=expires, origin=str(path)))
    return ignores


# -- the index over HTTP --------------------------------------------------------------------------

def index_base(url: str) -> str:
    """The index's root URL from what a user passes (``http://host:8080``, ``.../simple/``)."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise AuditInputError(f"--index-url {url!r}: give the index's http(s) URL, e.g. http://127.0.0.1:8080.")
    path = parts.path.rstrip("/")
    for suffix in ("/simple", "/osv/v1/query", "/osv/v1"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


@dataclass(frozen=True)
class ProjectInfo:
    name: NormalizedName
    versions: list[Version]
    """Versions with at least one non-yanked file, ascending."""


class IndexClient:
    """The JSON API and OSV API of one index."""

    def __init__(self, base_url: str, *, timeout: float = 60.0) -> None:
        self.base = index_base(base_url)
        self.timeout = timeout
        self._projects: dict[str, ProjectInfo | None] = {}

    def _request(self, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, headers={
            "User-Agent": USER_AGENT, "Accept": "application/json",
            **({"Content-Type": "application/json"} if data is not None else {})})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 (http(s) only)
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and data is None:
                return None
            detail = ""
            try:
                detail = json.loads(exc.read()).get("message", "")
            except Exception:  # noqa: BLE001
                pass
            hint = " Is this a Bastion index (it serves /osv/v1/)?" if exc.code in (404, 405) else ""
            raise IndexUnavailable(f"{self.base}{path}: HTTP {exc.code} {detail or exc.reason}.{hint}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise IndexUnavailable(f"cannot reach the index at {self.base}: {reason}. Check --index-url "
                                   "(default $BASTION_INDEX_URL, $BASTION_PUBLIC_URL or http://127.0.0.1:8080).") from None
        except ValueError:
            raise IndexUnavailable(f"{self.base}{path}: the answer is not JSON. Is {self.base} a Bastion index?") from None

    def project(self, name: str) -> ProjectInfo | None:
        """The project's non-yanked versions (None: not on the index)."""
        normalized = canonicalize_name(name)
        if normalized not in self._projects:
            page = self._request(f"/pypi/{urllib.parse.quote(normalized)}/json")
            info = None
            if isinstance(page, dict):
                versions = []
                for text, files in (page.get("releases") or {}).items():
                    parsed = parse_version(text)
                    if parsed is not None and files and not all(f.get("yanked") for f in files):
                        versions.append(parsed)
                info = ProjectInfo(name=normalized, versions=sorted(versions))
            self._projects[normalized] = info
        return self._projects[normalized]

    def requires_dist(self, name: str, version: str) -> list[str] | None:
        """The release's ``Requires-Dist`` (None: the release is not on the index)."""
        page = self._request(f"/pypi/{urllib.parse.quote(canonicalize_name(name))}/{urllib.parse.quote(version)}/json")
        if not isinstance(page, dict):
            return None
        return list((page.get("info") or {}).get("requires_dist") or [])

    def querybatch(self, pairs: Sequence[tuple[str, str]]) -> list[list[str]]:
        """Advisory ids affecting each (name, version), in order."""
        answers: list[list[str]] = []
        for start in range(0, len(pairs), BATCH_LIMIT):
            chunk = pairs[start:start + BATCH_LIMIT]
            body = {"queries": [{"package": {"name": n, "ecosystem": "PyPI"}, "version": v} for n, v in chunk]}
            results = (self._request("/osv/v1/querybatch", body) or {}).get("results")
            if not isinstance(results, list) or len(results) != len(chunk):
                raise IndexUnavailable(f"{self.base}/osv/v1/querybatch: unexpected answer (not one result per query).")
            answers += [[v["id"] for v in (r or {}).get("vulns", [])] for r in results]
        return answers

    def query(self, name: str, version: str) -> list[dict[str, Any]]:
        """The whole OSV records affecting (name, version)."""
        answer = self._request("/osv/v1/query", {"package": {"name": name, "ecosystem": "PyPI"}, "version": version})
        return list((answer or {}).get("vulns", []))


def _parallel(function: Callable[[Any], Any], items: Sequence[Any], progress: Progress | None = None,
              stage: str = "") -> list[Any]:
    if not items:
        return []
    results: list[Any] = []
    with ThreadPoolExecutor(max_workers=min(WORKERS, len(items))) as pool:
        for done, result in enumerate(pool.map(function, items), 1):
            results.append(result)
            if progress:
                progress(stage, done, len(items))
    return results


# -- resolving ------------------------------------------------------------------------------------

def resolve(client: IndexClient, wanted: Sequence[Wanted], *, follow_deps: bool = True,
            progress: Progress | None = None) -> tuple[list[Dependency], list[Skipped], list[str]]:
    """Versions for every requirement (and, with ``follow_deps``, their dependencies): pins as
    written, others the newest non-yanked version on the index that satisfies them."""
    resolved: dict[str, Dependency] = {}
    skipped: list[Skipped] = []
    notes: list[str] = []
    seen_skip: set[str] = set()
    level = list(wanted)
    while level:
        unpinned = sorted({w.name for w in level if w.pinned is None and w.name not in resolved})
        _parallel(client.project, unpinned, progress, "resolving")
        new: list[tuple[Dependency, Wanted]] = []
        for want in level:
            if want.name in resolved or want.name in seen_skip:
                continue
            version = want.pinned
            if version is None:
                project = client.project(want.name)
                if project is None:
                    seen_skip.add(want.name)
                    skipped.append(Skipped(want.name, f"{want.origin}: not found on the index"))
                    continue
                matching = list(want.specifier.filter(project.versions))
                if not matching:
                    seen_skip.add(want.name)
                    shown = str(want.specifier) or "any version"
                    skipped.append(Skipped(want.name, f"{want.origin}: no version on the index satisfies {shown}"))
                    continue
                version = str(max(matching))
            dependency = Dependency(name=want.name, version=version, direct=want.direct, origin=want.origin)
            resolved[want.name] = dependency
            new.append((dependency, want))
        if not follow_deps or not new:
            break
        requirements = _parallel(lambda pair: client.requires_dist(pair[0].name, pair[0].version), new,
                                 progress, "dependencies")
        level = []
        for (dependency, want), requires in zip(new, requirements, strict=True):
            if requires is None:
                notes.append(f"{dependency.name} {dependency.version} is not on the index: audited, "
                             "its dependencies not followed")
                continue
            for text in requires:
                try:
                    requirement = Requirement(text)
                except InvalidRequirement:
                    notes.append(f"{dependency.name} {dependency.version}: unreadable Requires-Dist {text!r} ignored")
                    continue
                if not _env_marker_ok(requirement.marker, want.extras):
                    continue
                level.append(Wanted(name=canonicalize_name(requirement.name), specifier=requirement.specifier,
                                    extras=frozenset(canonicalize_name(e) for e in requirement.extras),
                                    origin=f"via {dependency.name} {dependency.version}", direct=False))
    return list(resolved.values()), skipped, notes


# -- auditing -------------------------------------------------------------------------------------

def _description(record: dict[str, Any]) -> str:
    text = record.get("summary") or record.get("details") or "N/A"
    return " ".join(str(text).split())


def _fix_versions(record: dict[str, Any], name: str, version: str) -> list[str]:
    current = parse_version(version)
    found: set[str] = set()
    for entry in record.get("affected") or []:
        package = entry.get("package") or {}
        if package.get("ecosystem", "").split(":", 1)[0] != "PyPI" or canonicalize_name(package.get("name", "")) != name:
            continue
        matcher = Matcher(entry.get("ranges") or [], [str(v) for v in entry.get("versions") or []])
        for text in matcher.fixed_in():
            at = parse_version(text)
            if at is not None and (current is None or at > current) and not matcher.affects(at):
                found.add(text)
    return sorted(found, key=lambda t: parse_version(t) or Version("0"))


def findings_for(dependency: Dependency, records: Sequence[dict[str, Any]]) -> list[Finding]:
    """One finding per alias group of the records (the JSON API's merging: PYSEC id shown first)."""
    from bastion.advisories.osv import RecordError, parse_record
    from bastion.advisories.views import AdvisoryFacts, merge_aliases

    pairs = []
    for record in records:
        try:
            parsed = parse_record(record)
        except RecordError:
            continue
        if parsed.withdrawn is not None:
            continue
        advisory = AdvisoryFacts(id=parsed.id, modified=parsed.modified, published=parsed.published, withdrawn=None,
                            summary=parsed.summary, details=parsed.details, aliases=parsed.aliases, record=record)
        pairs.append((advisory, _fix_versions(record, dependency.name, dependency.version)))
    findings = []
    for view in merge_aliases(pairs):
        description = _description({"summary": view.summary, "details": view.details})
        findings.append(Finding(name=dependency.name, version=dependency.version, id=view.id,
                                aliases=[a for a in view.aliases if a != view.id], fix_versions=view.fixed_in,
                                description=description))
    return findings


def apply_ignores(findings: Iterable[Finding], ignores: Sequence[Ignore], today: date) -> None:
    for finding in findings:
        for ignore in ignores:
            if ignore.id in finding.ids:
                if ignore.expired(today):
                    finding.expired_ignore = ignore
                else:
                    finding.ignored_by = ignore
                    finding.expired_ignore = None
                    break


def smallest_fixes(client: IndexClient, findings: Sequence[Finding],
                   progress: Progress | None = None) -> list[Fix]:
    """Per vulnerable package: the lowest version on the index, above the audited one, that no
    advisory affects (pre-releases only when the audited version is one)."""
    vulnerable: dict[NormalizedName, str] = {}
    for finding in findings:
        vulnerable.setdefault(finding.name, finding.version)
    names = sorted(vulnerable)
    _parallel(client.project, names, progress, "fixes")
    candidates: dict[NormalizedName, list[Version]] = {}
    fixes: dict[NormalizedName, Fix] = {}
    for name in names:
        current = parse_version(vulnerable[name])
        project = client.project(name)
        if project is None:
            fixes[name] = Fix(name, vulnerable[name], None, "not on the index")
            continue
        allow_pre = current is not None and current.is_prerelease
        candidates[name] = [v for v in project.versions
                            if (current is None or v > current) and (allow_pre or not v.is_prerelease)]
        if not candidates[name]:
            fixes[name] = Fix(name, vulnerable[name], None, "no newer version on the index")
    pairs = [(name, str(v)) for name, versions in candidates.items() for v in versions]
    answers = dict(zip(pairs, (bool(ids) for ids in client.querybatch(pairs)), strict=True)) if pairs else {}
    for name, versions in candidates.items():
        if name in fixes:
            continue
        clean = next((str(v) for v in versions if not answers[(name, str(v))]), None)
        fixes[name] = Fix(name, vulnerable[name], clean,
                          "" if clean else f"every newer version on the index ({len(versions)}) is affected too")
    return [fixes[name] for name in names]


def audit(client: IndexClient, dependencies: Sequence[Dependency], *, ignores: Sequence[Ignore] = (),
          today: date | None = None, fix: bool = False, progress: Progress | None = None) -> Report:
    """Ask the index about every dependency; the report of findings (and fixes)."""
    report = Report(dependencies=list(dependencies))
    hits = client.querybatch([(d.name, d.version) for d in dependencies])
    vulnerable = [d for d, ids in zip(dependencies, hits, strict=True) if ids]
    records = _parallel(lambda d: client.query(d.name, d.version), vulnerable, progress, "auditing")
    for dependency, found in zip(vulnerable, records, strict=True):
        report.findings += findings_for(dependency, found)
    apply_ignores(report.findings, ignores, today or date.today())
    if fix:
        report.fixes = smallest_fixes(client, report.open_findings, progress)
    return report


# -- output ---------------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: object) -> str:
    """``text`` without control characters: what an index serves (advisory text from a public
    database) must not reach the terminal as escape sequences (hiding rows, rewriting the screen)."""
    return _CONTROL.sub("", str(text))


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    rows = [[printable(c) for c in row] for row in rows]
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows, strict=False)]
    line = lambda cells: " ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _fix_rows(report: Report) -> list[list[str]]:
    return [[f.name, f.old_version, f.new_version or "-", "" if f.new_version else f.reason] for f in report.fixes]


def render_columns(report: Report) -> str:
    lines: list[str] = []
    if report.open_findings:
        lines += _table(["Name", "Version", "ID", "Fix Versions"],
                        [[f.name, f.version, f.id, ",".join(f.fix_versions)] for f in report.open_findings])
    if report.ignored:
        lines += ["", "Ignored:"] if lines else ["Ignored:"]
        lines += _table(["Name", "Version", "ID", "Expires", "Reason"],
                        [[f.name, f.version, f.id, str(f.ignored_by.expires or "never") if f.ignored_by else "",
                          f.ignored_by.reason if f.ignored_by else ""] for f in report.ignored])
    if report.fixes:
        lines += ["", "Fixes (smallest upgrade clearing every advisory):"] if lines else ["Fixes:"]
        lines += _table(["Name", "Version", "Upgrade to", "Note"], _fix_rows(report))
    if report.skipped:
        lines += ["", "Skipped:"] if lines else ["Skipped:"]
        lines += _table(["Name", "Skip Reason"], [[s.name, s.reason] for s in report.skipped])
    return "\n".join(lines) + ("\n" if lines else "")


def render_markdown(report: Report) -> str:
    def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
        escape = lambda text: printable(text).replace("|", "\\|")  # noqa: E731
        return [" | ".join(headers), " | ".join("---" for _ in headers),
                *(" | ".join(escape(c) for c in row) for row in rows)]

    parts: list[list[str]] = []
    if report.open_findings:
        parts.append(table(["Name", "Version", "ID", "Fix Versions", "Description"],
                           [[f.name, f.version, f.id, ", ".join(f.fix_versions), f.description]
                            for f in report.open_findings]))
    if report.ignored:
        parts.append(["**Ignored**", "", *table(["Name", "Version", "ID", "Expires", "Reason"],
                     [[f.name, f.version, f.id, str(f.ignored_by.expires or "never") if f.ignored_by else "",
                       f.ignored_by.reason if f.ignored_by else ""] for f in report.ignored])])
    if report.fixes:
        parts.append(["**Fixes**", "", *table(["Name", "Version", "Upgrade to", "Note"], _fix_rows(report))])
    if report.skipped:
        parts.append(table(["Name", "Skip Reason"], [[s.name, s.reason] for s in report.skipped]))
    return "\n\n".join("\n".join(p) for p in parts) + ("\n" if parts else "")


def render_json(report: Report) -> str:
    """pip-audit's ``--format json`` shape (dependencies with vulns, skipped ones with
    ``skip_reason``, fixes), plus ``ignored`` and ``notes``."""
    by_dep: dict[tuple[str, str], list[Finding]] = {}
    for finding in report.open_findings:
        by_dep.setdefault((finding.name, finding.version), []).append(finding)
    dependencies: list[dict[str, Any]] = [
        {"name": d.name, "version": d.version,
         "vulns": [{"id": f.id, "fix_versions": f.fix_versions, "aliases": f.aliases, "description": f.description}
                   for f in by_dep.get((d.name, d.version), [])]}
        for d in report.dependencies]
    dependencies += [{"name": s.name, "skip_reason": s.reason} for s in report.skipped]
    fixes: list[dict[str, Any]] = [
        {"name": f.name, "old_version": f.old_version, "new_version": f.new_version} if f.new_version else
        {"name": f.name, "version": f.old_version, "skip_reason": f.reason} for f in report.fixes]
    ignored = [{"name": f.name, "version": f.version, "id": f.id, "aliases": f.aliases,
                "reason": f.ignored_by.reason if f.ignored_by else "",
                "expires": f.ignored_by.expires.isoformat() if f.ignored_by and f.ignored_by.expires else None}
               for f in report.ignored]
    return json.dumps({"dependencies": dependencies, "fixes": fixes, "ignored": ignored, "notes": report.notes},
                      indent=2) + "\n"


RENDERERS = {"columns": render_columns, "json": render_json, "markdown": render_markdown}


def summary_line(report: Report) -> str:
    findings = report.open_findings
    packages = len({(f.name, f.version) for f in findings})
    text = (f"Found {len(findings)} known vulnerabilit{'y' if len(findings) == 1 else 'ies'} in "
            f"{packages} package{'' if packages == 1 else 's'}" if findings else "No known vulnerabilities found")
    extra = []
    if report.ignored:
        extra.append(f"{len(report.ignored)} ignored")
    if report.skipped:
        extra.append(f"{len(report.skipped)} skipped")
    return f"{text} ({len(report.dependencies)} audited{', ' if extra else ''}{', '.join(extra)})"


def expiry_warnings(report: Report) -> list[str]:
    return [f"the ignore of {f.expired_ignore.id} ({f.expired_ignore.origin}) expired on "
            f"{f.expired_ignore.expires}: {f.id} in {f.name} {f.version} is reported again"
            for f in report.findings if f.expired_ignore is not None]
