"""OSV records written as the PyPA advisory database writes them (YAML, unquoted timestamps), for
the advisory tests: one template instead of a copy per test module."""

from __future__ import annotations

from pathlib import Path

PYSEC = """\
id: PYSEC-2099-{n}
modified: {modified}
published: {published}
aliases:
- CVE-2099-{n}
{extra}details: Remote code execution in zorblax {n}.
affected:
- package:
    ecosystem: PyPI
    name: {name}
  ranges:
  - type: ECOSYSTEM
    events:
    - introduced: "0"
    - fixed: "{fixed}"
"""


def write_pysec(tree: Path, n: int, *, name: str = "zorblax-core", fixed: str = "1.1",
                modified: str = "2024-02-01T00:00:00Z", published: str = "2024-01-02T03:04:05Z",
                extra: str = "", folder: str | None = None) -> Path:
    """Write PYSEC-2099-``n`` (every version below ``fixed`` of ``name``) into ``tree``'s
    ``vulns/<folder or name>/`` and return its path."""
    directory = tree / "vulns" / (folder or name)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"PYSEC-2099-{n}.yaml"
    path.write_text(PYSEC.format(n=n, name=name, fixed=fixed, modified=modified, published=published, extra=extra))
    return path
