"""Project names: PEP 503 normalization, the confusable fold, and names nobody may register."""

from __future__ import annotations

import re
import sys

from packaging.utils import canonicalize_name

# packaging's own rule for a valid project name (PEP 508 / core metadata "Name").
_VALID_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
_SEPARATORS = re.compile(r"[-_.]+")

# Modules that were in the standard library of some Python 3 release but no longer are
# (PEP 594 and earlier removals): a project with such a name would shadow old code paths.
REMOVED_STDLIB_MODULES = frozenset(
    {
        "aifc", "asynchat", "asyncore", "audioop", "binhex", "cgi", "cgitb", "chunk", "crypt",
        "distutils", "dummy_threading", "formatter", "imghdr", "imp", "lib2to3", "macpath",
        "mailcap", "msilib", "nis", "nntplib", "ossaudiodev", "parser", "pipes", "smtpd",
        "sndhdr", "spwd", "sunau", "symbol", "telnetlib", "tkinter", "uu", "xdrlib",
    }
)

STDLIB_NAMES = frozenset(
    canonicalize_name(name) for name in (set(sys.stdlib_module_names) | REMOVED_STDLIB_MODULES)
    if not name.startswith("_")
)

# Names that would collide with Bastion's own routes or mislead users.
RESERVED_NAMES = frozenset(
    canonicalize_name(name)
    for name in ("simple", "packages", "legacy", "pypi", "api", "admin", "tuf", "stats", "bastion", "help")
)


def normalize(name: str) -> str:
    """PEP 503 normalized name."""
    return canonicalize_name(name)


def ultranormalize(name: str) -> str:
    """The confusable fold: separators removed, ``l``/``i`` -> ``1``, ``o`` -> ``0``, lower case."""
    folded = _SEPARATORS.sub("", name.lower())
    return folded.translate(str.maketrans("lio", "110"))


def is_valid_name(name: str) -> bool:
    # ASCII first: with IGNORECASE, [A-Z] also matches the dotless i, the long s and the Kelvin sign.
    return name.isascii() and bool(_VALID_NAME.match(name)) and len(name) <= 200


def is_stdlib_name(name: str) -> bool:
    """The name (or a dotted name's first part) is a standard library module's."""
    dotted_top = normalize(name.split(".")[0]) if "." in name else None
    return normalize(name) in STDLIB_NAMES or dotted_top in STDLIB_NAMES


def name_refusal(name: str, prohibited: frozenset[str] = frozenset(), *, stdlib: bool = True) -> str | None:
    """Why ``name`` may not be registered as a new project, or None if it may. ``stdlib=False``
    (imports) lets a standard library module's name through: the caller flags it instead."""
    if not is_valid_name(name):
        return (
            f"Invalid project name '{name}': a name starts and ends with a letter or digit and "
            "contains only letters, digits, '.', '_' and '-'. See PEP 508."
        )
    normalized = normalize(name)
    if stdlib and is_stdlib_name(name):
        return (
            f"The name '{name}' isn't allowed: it is the name of a Python standard library module. "
            "Choose a different project name."
        )
    if normalized in RESERVED_NAMES:
        return f"The name '{name}' isn't allowed: it is reserved by the index. Choose a different name."
    # Admins type names in any spelling; a ban also covers the name's confusables (the fold that
    # refuses look-alikes of existing projects), or 'evilpkg' and 'evi1-pkg' would stay open.
    if ultranormalize(name) in {ultranormalize(p) for p in prohibited}:
        return (
            f"The name '{name}' isn't allowed: an index admin has prohibited it. "
            "Choose a different name, or ask an admin if you believe this is wrong."
        )
    return None
