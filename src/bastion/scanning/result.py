"""What a scan returns: a verdict, a 0-10 score and findings a reviewer can check.

This is the contract between the scanner engine (``scanner.py`` and the rule modules), the upload
path, the review queue and ``bastion scan``. Keep it small and JSON-friendly: findings are stored
as JSON in the database and printed by ``bastion scan --json``.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any


class Verdict(enum.StrEnum):
    ALLOW = "allow"
    """Published at once."""
    QUARANTINE = "quarantine"
    """Stored but invisible and not downloadable until an admin releases it."""
    REJECT = "reject"
    """Refused at upload; nothing is stored."""


@dataclass(frozen=True)
class Finding:
    """One observation, as a reviewer would write it down."""

    rule: str
    """Rule id, e.g. ``install.exec-decoded`` or ``yara.powershell-encoded``."""
    file: str
    """Member path inside the archive (``archive`` for the archive itself, ``metadata`` for metadata)."""
    line: int | None
    """1-based line in ``file``, when the finding has one."""
    excerpt: str
    """A short excerpt of the code or bytes (at most ~200 characters, one line, printable)."""
    why: str
    """Why it matters, in one sentence."""
    severity: float = 0.0
    """This finding's weight before combination (0-10)."""
    category: str = ""
    """What kind of signal: archive, install-hook, execution, obfuscation, network, exfiltration,
    persistence, payload, binary, metadata, name."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Finding:
        line = data.get("line")
        return cls(rule=str(data.get("rule", "")), file=str(data.get("file", "")),
                   line=int(line) if line is not None else None, excerpt=str(data.get("excerpt", "")),
                   why=str(data.get("why", "")), severity=float(data.get("severity") or 0.0),
                   category=str(data.get("category") or ""))


@dataclass(frozen=True)
class ScanPolicy:
    """Where scores turn into verdicts (settings ``scan_quarantine_score`` and ``scan_reject_score``)."""

    quarantine_at: float = 4.0
    reject_at: float = 10.0

    def verdict(self, score: float) -> Verdict:
        if score >= self.reject_at:
            return Verdict.REJECT
        if score >= self.quarantine_at:
            return Verdict.QUARANTINE
        return Verdict.ALLOW


@dataclass(frozen=True)
class ScanContext:
    """What the index knows beyond the file's bytes (all optional: ``bastion scan`` runs offline)."""

    project_name: str | None = None
    """The project the file is uploaded to."""
    new_project: bool = False
    """The upload creates the project."""
    known_malicious: frozenset[str] = frozenset()
    """Normalized names of projects removed as malware (a Requires-Dist on one is a signal)."""
    resembles: str | None = None
    """The popular or existing name this project's name imitates, if the name check found one."""


@dataclass(frozen=True)
class ScanResult:
    filename: str
    sha256: str
    verdict: Verdict
    score: float
    """0-10, rounded to one decimal."""
    findings: tuple[Finding, ...] = field(default_factory=tuple)
    rules_version: str = ""
    """Changes whenever a rule file or the engine changes: rescans compare it."""
    seconds: float = 0.0
    error: str | None = None
    """Set when the archive could not be read: the message says what is wrong."""

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.filename, "sha256": self.sha256, "verdict": self.verdict.value, "score": self.score,
            "findings": [f.to_json() for f in self.findings], "rules_version": self.rules_version,
            "seconds": round(self.seconds, 4), "error": self.error,
        }
