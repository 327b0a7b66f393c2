"""The scanner engine: one ``Scanner`` per process, shared by every server thread.

``Scanner.scan(path)`` reads the archive in memory (``archive.py``), runs the YARA rules
(``rules/*.yar``) over code and the first bytes of every other member, analyses install-time
files in full (``setup.py``, ``.pth`` files, in-tree build backends) and other Python files once a
cheap YARA prefilter saw tokens of at least two suspicious families, adds metadata signals and
combines everything into a 0-10 score (``score.py``). It never imports, builds or executes what it
scans, and it never raises on bad input: an unreadable archive is a REJECT with ``error`` set.
"""

from __future__ import annotations

import dataclasses
import hashlib
import posixpath
import re
import time
import tomllib
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import yara

from bastion.scanning.archive import ArchiveError, Contents, Member, ScanLimits, read_archive
from bastion.scanning.code import Place, analyse_pth, analyse_python
from bastion.scanning.metadata import metadata_findings
from bastion.scanning.result import Finding, ScanContext, ScanPolicy, ScanResult, Verdict
from bastion.scanning.score import score

ENGINE_VERSION = "1"
MAX_AST_BYTES = 320 * 1024
"""Larger non-install Python files get the YARA rules only."""
MAX_AST_TOTAL = 12 * 1024 * 1024
"""AST work per upload (bytes of source)."""
PYTHON_SUFFIXES = (".py", ".pyw")
SCRIPT_SUFFIXES = (".sh", ".bat", ".cmd", ".ps1", ".vbs", ".js")
CODE_MEMBER_SUFFIXES = (".py", ".pyw", ".pth", ".pyi", *SCRIPT_SUFFIXES, ".toml", ".cfg", "PKG-INFO", "METADATA")

# Token families for the prefilter: a file is parsed when it shows two different families (or any
# strong marker). Method calls such as re.compile or model.eval are not matched.
_PREFILTER_FAMILIES: dict[str, list[str]] = {
    "exec": [r"/[^.\w]exec\s?\(/", r"/[^.\w]eval\(/", r"/=\s?(exec|eval|compile)\s*[\r\n;]/", r'"execfile("', r'"__import__("', r'"getattr(__builtins__"',
             r'"marshal.loads"', r'"pickle.loads"', r'"__builtins__"', r'"import_module("'],
    "decode": [r'"b64decode"', r'"b32decode"', r'"b85decode"', r'"a85decode"', r'"decompress("', r'"fromhex("',
               r'"unhexlify"', r'"chr("', r'"map(chr"', r'"chr ("', r'"[::-1]"', r'"rot13"', r'"rot_13"', r'".decrypt("',
               r'"decodebytes"'],
    "process": [r'"subprocess"', r'"os.system"', r'"popen"', r'"startfile"', r'"os.spawn"', r'"os.exec"',
                r'"pty.spawn"', r'"ShellExecute"', r'"create_subprocess"'],
    "network": [r'"urlopen"', r'"urlretrieve"', r'"requests."', r'"httpx"', r'"socket.socket"', r'"socket("', r'"create_connection"', r'"gethostbyname"', r'"http.client"',
                r'"webhook"', r'"telegram"', r'"discord"', r'"aiohttp"', r'"urllib"', r'"ftplib"', r'"smtplib"'],
    "info": [r'"gethostname"', r'"getuser"', r'"getlogin"', r'"platform.node"', r'"(os.environ)"',
             r'"environ.copy()"', r'"environ.items()"', r'"Login Data"', r'"/.ssh"', r'"\\.ssh"', r'"/.aws"',
             r'"\\.aws"', r'"leveldb"', r'"tdata"', r'"getfqdn"', r'"uname()"', r'"USERPROFILE"', r'"APPDATA"',
             r'"getnode"', r'"environ)"', r'"USERNAME"', r'"COMPUTERNAME"'],
    "persist": [r'"crontab"', r'"LaunchAgents"', r'"CurrentVersion"', r'"Startup"', r'"winreg"', r'".bashrc"',
                r'"systemd"', r'"schtasks"'],
    "clip": [r'"pyperclip"', r'"clipboard"', r'"OpenClipboard"'],
    "regex": [r'"re.match("', r'"re.search("', r'"re.fullmatch("', r'"re.findall("', r'"re.compile("'],
    "strong": [r'"SetValueEx"', r'"getattr(builtins"', r'"getattr(__builtins__"', r'"__builtins__.__dict__"', "{ EF BC }", "{ EF BD }", "{ F0 9D }",
               r'"powershell" nocase', r'"xmrig" nocase', r'"stratum+"',
               r'"dup2"', r'"VirtualAlloc"', r'"wallet" nocase', r'"CryptUnprotectData"', r'"/dev/tcp"'],
}


PREFILTER_NAMESPACE = "prefilter"


def _prefilter_source() -> str:
    rules = []
    for family, strings in _PREFILTER_FAMILIES.items():
        lines = "\n".join(f"        $s{i} = {s}" for i, s in enumerate(strings))
        rules.append(f"rule {family}\n{{\n    strings:\n{lines}\n    condition:\n        any of them\n}}\n")
    return "\n".join(rules)


def _worth_parsing(families: set[str]) -> bool:
    """Only token combinations that a code rule can turn into a finding are worth an AST."""
    return "strong" in families or ("clip" in families and "regex" in families) or (
        "exec" in families and bool(families & {"decode", "network", "process"})) or (
        "network" in families and bool(families & {"process", "info", "decode"})) or (
        "persist" in families) or (
        "process" in families and bool(families & {"decode", "info"}))


def rule_files() -> list[tuple[str, bytes]]:
    folder = resources.files("bastion.scanning").joinpath("rules")
    found = [(entry.name, entry.read_bytes()) for entry in folder.iterdir() if entry.name.endswith(".yar")]
    return sorted(found)


class Scanner:
    """Scan distributions. Thread-safe: compiled rules are shared, each scan keeps its own state."""

    def __init__(self, policy: ScanPolicy = ScanPolicy(), limits: ScanLimits = ScanLimits()) -> None:
        self.policy = policy
        self.limits = limits
        files = rule_files()
        digest = hashlib.sha256(f"bastion-scanner/{ENGINE_VERSION}".encode())
        for name, data in files:
            digest.update(name.encode() + b"\0" + data + b"\0")
        for module in ("archive", "code", "fold", "pyast", "metadata", "score", "scanner"):
            digest.update(resources.files("bastion.scanning").joinpath(f"{module}.py").read_bytes())
        self.rules_version: str = digest.hexdigest()[:12]
        sources = {name[: -len(".yar")]: data.decode("utf-8") for name, data in files}
        # one compiled set, one pass per member: the rules and the prefilter's token families
        self._rules = yara.compile(sources={**sources, PREFILTER_NAMESPACE: _prefilter_source()})
        self._rule_meta = self._collect_meta(files)

    @staticmethod
    def _collect_meta(files: list[tuple[str, bytes]]) -> dict[str, dict[str, Any]]:
        meta: dict[str, dict[str, Any]] = {}
        for name, data in files:
            compiled = yara.compile(source=data.decode("utf-8"))
            for rule in compiled:
                meta[rule.identifier] = dict(rule.meta) | {"file": name}
        return meta

    def rule_ids(self) -> list[str]:
        return sorted(f"yara.{name.replace('_', '-')}" for name in self._rule_meta)

    # -- scanning -----------------------------------------------------------------------------------

    def scan(self, path: Path, *, filename: str | None = None, context: ScanContext | None = None) -> ScanResult:
        started = time.perf_counter()
        name = filename or Path(path).name
        context = context or ScanContext()
        sha256 = ""
        try:
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1024 * 1024), b""):
                    digest.update(block)
            sha256 = digest.hexdigest()
            contents = read_archive(Path(path), name, self.limits)
            findings = self._scan_contents(contents, context, name)
        except ArchiveError as exc:
            return self._error(name, sha256, f"{name}: {exc}", started)
        except OSError as exc:
            return self._error(name, sha256, f"{name}: cannot read the file ({exc.strerror or exc})", started)
        except Exception as exc:  # noqa: BLE001 - the contract: never raise on bad input
            return self._error(name, sha256, f"{name}: the scanner failed on this file ({type(exc).__name__}: "
                                             f"{str(exc)[:160]})", started)
        findings.sort(key=lambda f: (-f.severity, f.file, f.line or 0))
        value = score(findings, self.policy)
        return ScanResult(filename=name, sha256=sha256, verdict=self.policy.verdict(value), score=value,
                          findings=tuple(findings), rules_version=self.rules_version,
                          seconds=time.perf_counter() - started)

    def scan_many(self, paths: Iterable[Path], context: ScanContext | None = None) -> Iterator[ScanResult]:
        for path in paths:
            yield self.scan(path, context=context)

    def _error(self, name: str, sha256: str, message: str, started: float) -> ScanResult:
        message = " ".join(message.split())
        finding = Finding(rule="archive.unreadable", file="archive", line=None, excerpt=message[:200],
                          why="The file is not a readable distribution archive.", severity=10.0, category="archive")
        return ScanResult(filename=name, sha256=sha256, verdict=Verdict.REJECT, score=10.0, findings=(finding,),
                          rules_version=self.rules_version, seconds=time.perf_counter() - started, error=message)

    def _scan_contents(self, contents: Contents, context: ScanContext, name: str) -> list[Finding]:
        findings = list(contents.findings)
        lower = name.lower()
        if contents.format == "zip" and lower.endswith((".tar.gz", ".tgz", ".tar.bz2")) or \
                contents.format.startswith("tar") and lower.endswith((".whl", ".zip")):
            findings.append(Finding(
                rule="archive.format-mismatch", file="archive", line=None,
                excerpt=f"{name} is really a {contents.format} archive",
                why="The file's name says one archive format and its bytes another.", severity=1.5,
                category="archive"))
        install_paths = self._install_paths(contents)
        live = _imported_dormant(contents)
        budget = MAX_AST_TOTAL
        for member in contents.members:
            base = posixpath.basename(member.name)
            code = base.endswith(CODE_MEMBER_SUFFIXES)
            if not code and (contents.wheel or "!" in member.name):
                continue  # only the executable-magic rules look at other members, and only in sdists
            matches = self._match(member)
            if base not in ("PKG-INFO", "METADATA"):
                findings.extend(self._yara(member, matches, contents.wheel))
            if base.endswith(".pth"):
                findings.extend(analyse_pth(_text(member.data), member.name))
                continue
            if not base.endswith(PYTHON_SUFFIXES):
                continue
            install = member.name in install_paths
            init = base == "__init__.py" and member.name.count("/") <= 2
            if not install:
                if len(member.data) > MAX_AST_BYTES or budget <= 0 or (
                        _dormant(member.name) and member.name not in live):
                    continue
                families = {m.rule for m in matches if m.namespace == PREFILTER_NAMESPACE}
                if member.data[:5] in (b"exec(", b"eval("):
                    families.add("exec")
                if not _worth_parsing(families):
                    continue
            budget -= len(member.data)
            findings.extend(analyse_python(_text(member.data), member.name, Place(install=install, init=init)))
        findings.extend(metadata_findings(contents.metadata, context))
        return [f if f.file in live else _weigh(f) for f in findings]

    def _install_paths(self, contents: Contents) -> set[str]:
        """setup.py at the top of an sdist and the modules of an in-tree build backend."""
        paths: set[str] = set()
        if contents.wheel:
            return paths
        for member in contents.members:
            if "!" in member.name:
                continue
            parts = member.name.split("/")
            if parts[-1] == "setup.py" and len(parts) <= 2:
                paths.add(member.name)
            if parts[-1] == "pyproject.toml" and len(parts) <= 2:
                paths |= _backend_paths(member, contents)
        return paths

    def _match(self, member: Member) -> list[Any]:
        try:
            return list(self._rules.match(data=member.data, timeout=5))
        except yara.Error:
            return []

    def _yara(self, member: Member, matches: list[Any], wheel: bool) -> list[Finding]:
        out = []
        for match in matches:
            if match.namespace == PREFILTER_NAMESPACE:
                continue
            meta = self._rule_meta.get(match.rule, {})
            if meta.get("only") == "sdist" and (wheel or "!" in member.name):
                continue
            line, excerpt = _match_excerpt(member.data, match)
            out.append(Finding(rule=f"yara.{match.rule.replace('_', '-')}", file=member.name, line=line,
                               excerpt=excerpt, why=str(meta.get("why", match.rule)),
                               severity=float(meta.get("severity", 5.0)), category=str(meta.get("category", ""))))
        return out


DORMANT_DIRS = frozenset({"test", "tests", "testing", "example", "examples", "doc", "docs", "benchmark", "benchmarks",
                          "bench", "scripts", "tools", "ci", ".github", ".gitlab", ".evergreen", ".spin",
                          "manual tests", "fixtures", "tutorials"})


def _dormant(member: str) -> bool:
    """Code that neither installing nor importing the package runs (tests, examples, docs, dev scripts)."""
    parts = member.split("!")[0].split("/")[:-1]
    return any(p.lower() in DORMANT_DIRS for p in parts)


_IMPORT = re.compile(rb"(?m)^[ \t]*(?:from[ \t]+([\w.]+)[ \t]+import[ \t]+\(?([\w, \t]+)|import[ \t]+([\w.]+))")
_DORMANT_WORDS = (b"tests", b"testing", b"example", b"scripts", b"fixtures", b"tools", b"demo", b"docs")


def _imported_dormant(contents: Contents) -> set[str]:
    """Dormant members (under tests/, scripts/ ...) that package code imports: they run after all."""
    dormant = {m.name: m.name[: -len(".py")] for m in contents.members
               if m.name.endswith(".py") and _dormant(m.name)}
    if not dormant:
        return set()
    wanted: set[str] = set()
    for member in contents.members:
        if not member.name.endswith(".py") or member.name in dormant:
            continue
        data = member.data
        if not any(word in data for word in _DORMANT_WORDS):
            continue
        for match in _IMPORT.finditer(data):
            module = (match.group(1) or match.group(3) or b"").decode("ascii", "replace").lstrip(".")
            names = [n.strip() for n in (match.group(2) or b"").decode("ascii", "replace").split(",") if n.strip()]
            for dotted in [module, *(f"{module}.{n}" if module else n for n in names)]:
                parts = dotted.split(".")
                if any(p.lower() in DORMANT_DIRS for p in parts):
                    wanted.add("/".join(parts))
    if not wanted:
        return set()
    live = set()
    for name, stem in dormant.items():
        for suffix in wanted:
            if stem.endswith("/" + suffix) or stem.endswith("/" + suffix + "/__init__"):
                live.add(name)
                break
    return live


def _weigh(finding: Finding) -> Finding:
    """Findings in nested archives (archive safety) and in dormant code weigh less."""
    if finding.category == "archive" and "!" in finding.file and finding.severity > 1.0:
        return dataclasses.replace(finding, severity=1.0)
    if finding.category not in ("archive", "metadata", "name") and _dormant(finding.file):
        return dataclasses.replace(finding, severity=round(finding.severity * 0.3, 1))
    return finding


def _backend_paths(member: Member, contents: Contents) -> set[str]:
    try:
        data = tomllib.loads(_text(member.data))
    except (tomllib.TOMLDecodeError, ValueError):
        return set()
    system = data.get("build-system") if isinstance(data, dict) else None
    if not isinstance(system, dict):
        return set()
    backend = system.get("build-backend")
    backend_path = system.get("backend-path")
    if not isinstance(backend, str) or not isinstance(backend_path, list):
        return set()
    top = posixpath.dirname(member.name)
    module = backend.split(":")[0].replace(".", "/")
    found = set()
    names = set(contents.names)
    for folder in backend_path:
        if not isinstance(folder, str):
            continue
        base = posixpath.normpath(posixpath.join(top, folder, module))
        for candidate in (base + ".py", base + "/__init__.py"):
            if candidate in names:
                found.add(candidate)
    return found


def _text(data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _match_excerpt(data: bytes, match: Any) -> tuple[int | None, str]:
    for string in match.strings:
        for instance in string.instances:
            offset = instance.offset
            line = data.count(b"\n", 0, offset) + 1
            start = data.rfind(b"\n", 0, offset) + 1
            end = data.find(b"\n", offset)
            raw = data[start: end if end >= 0 else len(data)]
            if len(raw) > 200:
                raw = data[max(start, offset - 60): offset + 140]
            text = raw.decode("utf-8", "replace")
            return line, "".join(ch if ch.isprintable() else "?" for ch in text.strip())[:200]
    return None, f"{len(data)} bytes matched {match.rule}"
