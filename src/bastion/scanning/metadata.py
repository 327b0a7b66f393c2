"""Metadata signals from PKG-INFO / METADATA (parsed with ``packaging.metadata``; broken metadata is
tolerated). They are weak on their own: the scorer caps them below the quarantine threshold unless
code signals are present.
"""

from __future__ import annotations

import functools
import re
from email.utils import getaddresses
from importlib import resources

from packaging.metadata import parse_email
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from bastion.scanning.result import Finding, ScanContext


@functools.cache
def disposable_domains() -> frozenset[str]:
    text = resources.files("bastion.scanning").joinpath("data/disposable-domains.txt").read_text("utf-8")
    return frozenset(line.strip().lower() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def _f(rule: str, excerpt: str, why: str, severity: float, category: str = "metadata") -> Finding:
    excerpt = "".join(ch if ch.isprintable() else " " for ch in excerpt)[:200]
    return Finding(rule=rule, file="metadata", line=None, excerpt=excerpt, why=why, severity=severity,
                   category=category)


def metadata_findings(data: bytes | None, context: ScanContext) -> list[Finding]:
    findings: list[Finding] = []
    if context.resembles:
        name = context.project_name or "this project"
        findings.append(_f("name.typosquat", f"{name} ~ {context.resembles}",
                           f"The project name imitates the popular or existing project '{context.resembles}'.",
                           2.0, "name"))
    if data is None:
        findings.append(_f("meta.missing", "", "The archive has no core metadata (PKG-INFO or METADATA).", 1.0))
        return findings
    try:
        raw, _unparsed = parse_email(data)
    except (ValueError, TypeError, UnicodeError) as exc:  # packaging tolerates most damage; be safe anyway
        findings.append(_f("meta.unparsable", str(exc), "The core metadata cannot be parsed.", 1.0))
        return findings
    emails = " ".join(str(raw.get(key) or "") for key in ("author_email", "maintainer_email"))
    for _name, address in getaddresses([emails]):
        domain = address.rpartition("@")[2].lower().strip(">. ")
        if domain and domain in disposable_domains():
            findings.append(_f("meta.disposable-email", address,
                               "The author's e-mail address is at a disposable (throw-away) domain.", 1.0))
            break
    version = str(raw.get("version") or "")
    if re.fullmatch(r"0(\.0)*", version):
        findings.append(_f("meta.zero-version", version, "Release 0.0.0: typical of throw-away uploads.", 0.5))
    summary = str(raw.get("summary") or "").strip()
    description = str(raw.get("description") or "").strip()
    if not summary and not description:
        findings.append(_f("meta.no-description", "", "Neither a summary nor a description.", 0.5))
    known = context.known_malicious
    if known:
        for spec in raw.get("requires_dist") or []:
            try:
                requirement = Requirement(spec)
            except InvalidRequirement:
                continue
            if canonicalize_name(requirement.name) in known:
                findings.append(_f("meta.requires-malicious", spec,
                                   f"Depends on '{requirement.name}', a project removed as malware.", 3.0,
                                   "metadata"))
    return findings
