"""Combine findings into one 0-10 score, the way a reviewer weighs them.

Findings in the same file reinforce each other with diminishing returns (the strongest counts in
full, the next half, then a quarter ...), so several signals in one install-time file weigh more
than the same signals scattered over a package. Files combine the same way but more weakly. Name
and metadata signals only add to code signals: on their own they stay below the quarantine
threshold.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from bastion.scanning.result import Finding, ScanPolicy

_SOFT_CATEGORIES = frozenset({"metadata", "name"})
FILE_WEIGHTS = (1.0, 0.5, 0.25, 0.125)
PACKAGE_WEIGHTS = (1.0, 0.3, 0.15, 0.05)
MAX_FILES_PER_RULE = 2


def _combine(values: Iterable[float], weights: tuple[float, ...]) -> float:
    total = 0.0
    for index, value in enumerate(sorted(values, reverse=True)):
        total += value * (weights[index] if index < len(weights) else weights[-1] / 2)
    return total


def score(findings: Iterable[Finding], policy: ScanPolicy = ScanPolicy()) -> float:
    per_file: dict[str, dict[str, float]] = {}
    soft = 0.0
    for finding in findings:
        if finding.category in _SOFT_CATEGORIES:
            soft += finding.severity
            continue
        rules = per_file.setdefault(finding.file.split("!")[0] if finding.category == "archive" else finding.file, {})
        # one rule counts once per file (its strongest occurrence)
        rules[finding.rule] = max(rules.get(finding.rule, 0.0), finding.severity)
    # The same rule in many files (a dozen launcher .exe files, one pattern copied across modules) is one
    # observation repeated: each rule counts in at most two files, the files where it weighs most.
    ordered = sorted(per_file.values(), key=lambda rules: -_combine(rules.values(), FILE_WEIGHTS))
    seen: Counter[str] = Counter()
    files = []
    for rules in ordered:
        kept = [value for rule, value in rules.items() if seen[rule] < MAX_FILES_PER_RULE]
        seen.update(rules.keys())
        files.append(min(10.0, _combine(kept, FILE_WEIGHTS)))
    code = min(10.0, _combine(files, PACKAGE_WEIGHTS))
    if code < 1.0:
        # metadata alone: below the quarantine threshold, whatever the policy
        soft_total = min(soft, max(0.0, min(3.0, policy.quarantine_at - 1.0)))
    else:
        soft_total = min(soft, 3.0)
    return round(min(10.0, code + soft_total), 1)
