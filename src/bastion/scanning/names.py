"""Typosquat names: does a new project name imitate a popular or an existing one?

``bastion.packaging.names`` owns the basic rules (PEP 503 normalization, the confusable fold,
standard-library and reserved names, the admin ban list). This module answers the next question
for a name that passed those: is it one typing slip, one look-alike letter, one reshuffle away from
a name people already install?

A candidate is compared, after PEP 503 normalization, with *protected* names (the most popular
PyPI projects, see the defaults below, and every project already on this index). It is never
flagged if it is itself a known name (any popular name in the list, or an existing project). It
resembles a protected name when:

* **separators** are the only difference (``scikitlearn`` / ``scikit-learn``);
* a **look-alike** fold makes them equal: ``rn``/``m``, ``vv``/``w``, ``cl``/``d``, ``0``/``o``,
  ``1``/``l`` (``rnatplotlib``, ``vvheel``, ``c0l0rama``);
* the **words are reordered** (``dateutil-python`` / ``python-dateutil``);
* a ``py``/``python`` **prefix or suffix** is added or removed (``python-requests``,
  ``requests-py``, ``pyrequests``, ``dateutil``) or **version digits** are appended or removed
  (``requests2``, ``numpy3``);
* they are **one edit** apart (insert, delete, substitute, swap two adjacent letters; a doubled or
  dropped letter and a QWERTY-neighbour key are one edit, labelled as such). Edits are counted on
  the name without separators (and also against a protected name without its trailing version
  digits, so ``beautifoulsoup`` still matches ``beautifulsoup4``).

Everything is precomputed when the index is built: one dict per key kind (folded form, sorted
words, affix-stripped cores) and a symmetric-delete map for edit distance 1 (every protected name
and each of its one-letter deletions -> the name). A check normalizes the candidate, derives its
handful of keys and its ~15 one-letter deletions, and does dict lookups; only the few hits are
verified by a direct comparison. No loop over the protected names ever runs at check time.

Defaults, measured with ``benchmarks/names.py --grid`` on the shipped top-pypi-packages list
(2026-11-30). "FP" is a false-positive proxy: the share of the names ranked 5,001-15,000 (real
projects somebody chose) that would be refused if they were new, against an index of the top 5,000.
"Detection" is the share caught of typos generated from the top 1,000 names (one per technique above
and name) plus the real squats ``certifia``, ``botoa3``, ``reqeusts``, ``python-dateutils``,
``urlib3``, ``beautifoulsoup``, ``maptplotlib``, ``numpyy``, ``pandass``; "mid" is the same for
typos of ranks 1,001-5,000.

* ``protect_top=5000``: ranks 1-5,000 are protected (rank 5,000 had ~0.8M downloads in 30 days).
  Every popular name in the list stays *known* (never flagged itself) whatever its rank. Protecting
  only the top 2,000 would cut FP from 2.44% to 1.52% but leave ranks 2,001-5,000 almost unguarded
  (mid detection 22%).
* ``edit_min_length=7``, ``short_edit_top=500``, ``short_edit_min_length=5``: one edit is checked
  against names of 7+ letters (separators not counted), and against names of 5-6 letters only in
  the top 500 (``boto3``, ``numpy``, ``pandas``: the ones worth squatting). One-edit neighbours of
  short names are mostly legitimate (``attr``/``attrs``, ``hyper``/``typer``, ``simpy``/``sympy``).
  Measured: detection / mid / FP = 91.4% / 89.4% / 2.44% (chosen); 6+ letters for all names
  91.5% / 93.7% / 2.78%; 7+ only 86.1% / 89.4% / 2.21%; 6+ and 4+ in the top 500 95.5% / 93.8% / 3.04%.
  Names of 3-4 letters only get the exact-key techniques.
* ``technique_top={"affix-removed": 1000, "digits-appended": 1000}``: dropping a ``py``/``python``
  affix (``docx``, ``kafka``, ``slugify``) and appending version digits (``elasticsearch8``,
  ``smmap2``, ``pypdf4``) are how many legitimate forks and wrappers are named, so they only count
  against the top 1,000: FP 2.80% -> 2.46% with no loss on the top-1,000 typos.
* Version digits are one or two trailing digits (``boto3``, ``pyside6``; not ``pyrfc3339``).
* Measured and *not* adopted (each off by default, settable): ignoring one-edit changes of a digit
  (``pyside2``/``pyside6``: FP -0.36 points, mid detection -10 points), letters added or dropped in
  front (``grequests``: -0.17 / -1.4), edits inside words shorter than 4 letters
  (``tensorflow-gpu``/``-cpu``: -0.26 / -2.9). The look-alike fold costs no measurable FP and adds
  3.6 points of detection. The fold has no ``i``/``l`` (normalized names are lower case, where they
  are easy to tell apart; the fold's ``1``/``l`` and ``0``/``o`` cover digits posing as letters).

Against the peer, plain edit distance 1 of the normalized name against all 15,000 names (GuardDog's
method), in the same run: detection 81.5% (mid 78.4%) with an FP proxy of 8.83% against the other
14,999 names, or 4.10% against the top 5,000 only. Building the index for 15,000 names takes
~0.1-0.2 s (9 MB); a check costs ~5 us median, ~30 us p99.

Existing projects on this index are protected by every technique, with no rank limits, and by one
edit when they have 7+ letters (``edit_min_length``): an index's own names are the likeliest target of
a dependency-confusion squat, and an admin can always allow a refused name. FP proxy for them
(ranks 10,001-15,000 checked against ranks 5,001-10,000 as existing projects): 1.92%. One edit
against a name without its version digits (``beautifulsoup4`` -> ``beautifulsoup``) is for popular
names only, so numbered families (``plugin-1`` ... ``plugin-5000``) do not all share a key: with
20,000 such projects the index builds in under a second and a check still costs ~10-20 us.
"""

from __future__ import annotations

import csv
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

# -- defaults (see the module docstring for the measurements behind them) -------------------------

PROTECT_TOP = 5000
EDIT_MIN_LENGTH = 7
SHORT_EDIT_TOP = 500
SHORT_EDIT_MIN_LENGTH = 5
AFFIX_MIN_CORE = 4
"""A ``py``/``python`` affix or version digits only count when what is left has this many letters
(``pyre`` is not ``re`` with a prefix)."""

EDIT_SKIP_DIGITS = False
EDIT_SKIP_FIRST = False
EDIT_MIN_WORD = 0
TECHNIQUE_TOP: dict[str, int] = {"affix-removed": 1000, "digits-appended": 1000}
"""Techniques that only protect the most popular names: technique -> last protected rank."""

# Techniques, most telling first: of two explanations for the same target, the first is given.
_PRIORITY = ("separators", "lookalike", "words", "digits-appended", "digits-removed", "affix-added",
             "affix-removed", "edit")

POPULAR = "popular"
EXISTING = "existing"

# Look-alike sequences folded to the letters they imitate. Order matters: multi-letter first.
CONFUSIONS: tuple[tuple[str, str], ...] = (("rn", "m"), ("vv", "w"), ("cl", "d"), ("0", "o"), ("1", "l"))

_QWERTY_ROWS = ("1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm")


def _qwerty_neighbours() -> dict[str, frozenset[str]]:
    """Keys touching each key on a QWERTY keyboard (rows are staggered half a key to the right)."""
    out: dict[str, set[str]] = {}
    for r, row in enumerate(_QWERTY_ROWS):
        for c, ch in enumerate(row):
            near = out.setdefault(ch, set())
            for r2, cols in ((r, (c - 1, c + 1)), (r - 1, (c, c + 1)), (r + 1, (c - 1, c))):
                if 0 <= r2 < len(_QWERTY_ROWS):
                    near.update(_QWERTY_ROWS[r2][c2] for c2 in cols if 0 <= c2 < len(_QWERTY_ROWS[r2]))
    return {ch: frozenset(near) for ch, near in out.items()}


QWERTY_NEIGHBOURS = _qwerty_neighbours()

_PREFIX = re.compile(r"^(python|py)-?")
_SUFFIX = re.compile(r"-?(python|py)$")
_DIGITS = re.compile(r"(?<![0-9])-?[0-9]{1,2}$")  # version digits: boto3, pyside6, not pyrfc3339


def flat(normalized: str) -> str:
    """A PEP 503 normalized name without separators."""
    return normalized.replace("-", "")


def fold(flat_name: str) -> str:
    """The look-alike fold of a name without separators (``rn`` -> ``m``, ``0`` -> ``o``, ...)."""
    for seq, letter in CONFUSIONS:
        flat_name = flat_name.replace(seq, letter)
    return flat_name


def _affix_variants(normalized: str) -> Iterator[tuple[str, str]]:
    """(what was stripped, flat remainder) for each py/python affix and version-digit strip."""
    no_digits = _DIGITS.sub("", normalized)
    bases = [(normalized, "")]
    if no_digits != normalized and no_digits:
        bases.append((no_digits, "digits"))
    for base, digits in bases:
        if digits:
            yield "version digits", flat(base)
        m = _PREFIX.match(base)
        if m and m.end() < len(base):
            yield f"'{m.group(0)}' prefix", flat(base[m.end():])
        m = _SUFFIX.search(base)
        if m and m.start() > 0:
            yield f"'{m.group(0)}' suffix", flat(base[:m.start()])


def _deletes(word: str) -> set[str]:
    return {word[:i] + word[i + 1:] for i in range(len(word))}


def edit(candidate: str, target: str) -> tuple[str, int, str] | None:
    """How ``candidate`` is one edit from ``target`` (both without separators), or None.

    Returns (how, where, what): the index in ``target`` where the edit is, and the characters
    typed or lost."""
    lc, lt = len(candidate), len(target)
    if abs(lc - lt) > 1 or candidate == target:
        return None
    i = 0
    shorter = min(lc, lt)
    while i < shorter and candidate[i] == target[i]:
        i += 1
    if lc == lt + 1:
        if candidate[i + 1:] != target[i:]:
            return None
        ch = candidate[i]
        if (i > 0 and candidate[i - 1] == ch) or (i + 1 < lc and candidate[i + 1] == ch):
            return "doubled letter", i, ch
        return "one letter inserted", i, ch
    if lt == lc + 1:
        if target[i + 1:] != candidate[i:]:
            return None
        ch = target[i]
        if (i > 0 and target[i - 1] == ch) or (i + 1 < lt and target[i + 1] == ch):
            return "doubled letter dropped", i, ch
        return "one letter dropped", i, ch
    if candidate[i + 1:] == target[i + 1:]:
        typed, meant = candidate[i], target[i]
        for seq, letter in CONFUSIONS:
            if {typed, meant} == {seq, letter}:
                return f"'{typed}' looks like '{meant}'", i, typed + meant
        if typed in QWERTY_NEIGHBOURS.get(meant, ()):
            return f"'{typed}' typed for '{meant}', its neighbour on the keyboard", i, typed + meant
        return "one letter changed", i, typed + meant
    if (i + 1 < lc and candidate[i] == target[i + 1] and candidate[i + 1] == target[i]
            and candidate[i + 2:] == target[i + 2:]):
        return "letters swapped", i, candidate[i:i + 2]
    return None


def edit_how(candidate: str, target: str) -> str | None:
    """How ``candidate`` is one edit from ``target`` (both without separators), or None."""
    found = edit(candidate, target)
    return None if found is None else found[0]


def _word_length_at(normalized: str, i: int) -> int:
    """Length of the word holding flat index ``i`` (or the last letter, at the end) of a
    multi-word name; a large number for a one-word name."""
    words = normalized.split("-")
    if len(words) == 1:
        return 1 << 30
    for word in words:
        if i < len(word):
            return len(word)
        i -= len(word)
    return len(words[-1])


def _fold_how(candidate_flat: str, target_flat: str) -> str:
    for seq, letter in CONFUSIONS:
        if seq in candidate_flat and seq not in target_flat and letter in target_flat:
            return f"'{seq}' looks like '{letter}'"
        if letter in candidate_flat and seq in target_flat and letter not in target_flat:
            return f"'{letter}' looks like '{seq}'"
    return "look-alike letters"


@dataclass(frozen=True)
class Resemblance:
    """Why a candidate name looks like a protected one."""

    name: str
    """The popular or existing project name it imitates (display form)."""
    source: str
    """``popular`` or ``existing``."""
    how: str
    """What differs, in a few words (``letters swapped``, ``'rn' looks like 'm'``, ...)."""

    def message(self, candidate: str) -> str:
        """One line for a 400 refusal, printable by twine."""
        what = "the popular project" if self.source == POPULAR else "the existing project"
        candidate = "".join(ch if ch.isprintable() else "?" for ch in candidate)
        return (
            f"The name '{candidate}' is too similar to {what} '{self.name}' ({self.how}), so it is refused "
            "to protect users from typosquatting. Choose a different name, or if the name is legitimate "
            f"ask an index admin to allow it (bastion names allow {candidate})."
        )


# Map values: one normalized target (the common case) or a dict of them used as an ordered set, in
# rank order (popular names are added most popular first, then existing projects as they come,
# each ranked after all before it), so a check can stop at the first target of a slot that applies.
_Slot = str | dict[str, None]


def _put(index: dict[str, _Slot], key: str, target: str) -> None:
    have = index.get(key)
    if have is None:
        index[key] = target
    elif isinstance(have, str):
        index[key] = {have: None, target: None}
    else:
        have[target] = None


def _drop(index: dict[str, _Slot], key: str, target: str) -> None:
    have = index.get(key)
    if have is None:
        return
    if isinstance(have, str):
        if have == target:
            del index[key]
        return
    have.pop(target, None)
    if len(have) == 1:
        index[key] = next(iter(have))


def _slot(index: dict[str, _Slot], key: str) -> Iterable[str]:
    have = index.get(key)
    if have is None:
        return ()
    return (have,) if isinstance(have, str) else have


@dataclass
class _Target:
    display: str
    rank: int  # popular: 1-based rank; existing: after every popular name
    popular: bool
    existing: bool
    edit: bool  # one-edit neighbours are refused


class NameIndex:
    """Protected names, precomputed for sub-millisecond checks of a new project name."""

    def __init__(self, *, protect_top: int = PROTECT_TOP, edit_min_length: int = EDIT_MIN_LENGTH,
                 short_edit_top: int = SHORT_EDIT_TOP, short_edit_min_length: int = SHORT_EDIT_MIN_LENGTH,
                 affix_min_core: int = AFFIX_MIN_CORE, fold_confusions: bool = True,
                 technique_top: dict[str, int] | None = None, edit_skip_digits: bool = EDIT_SKIP_DIGITS,
                 edit_skip_first: bool = EDIT_SKIP_FIRST, edit_min_word: int = EDIT_MIN_WORD) -> None:
        self.protect_top = protect_top
        self.edit_min_length = edit_min_length
        self.short_edit_top = short_edit_top
        self.short_edit_min_length = short_edit_min_length
        self.affix_min_core = affix_min_core
        self.fold_confusions = fold_confusions
        self.edit_skip_digits = edit_skip_digits
        self.edit_skip_first = edit_skip_first
        self.edit_min_word = edit_min_word
        self.technique_top = dict(TECHNIQUE_TOP if technique_top is None else technique_top)
        self._popular: set[str] = set()  # every popular name, protected or not
        self._existing: set[str] = set()  # projects on this index
        self._targets: dict[str, _Target] = {}  # protected: normalized -> target
        self._flat: dict[str, _Slot] = {}
        self._fold: dict[str, _Slot] = {}
        self._words: dict[str, _Slot] = {}
        self._cores: dict[str, _Slot] = {}  # a target without its affix/digits -> target
        self._deletes: dict[str, _Slot] = {}  # edit-1 target flat forms and their deletions
        self._next_existing_rank = 10**9
        # Projects are added and removed by request threads while others check names.
        self._lock = threading.Lock()

    @classmethod
    def build(cls, popular: Iterable[str], existing: Iterable[str] = (), **options: Any) -> NameIndex:
        """An index of ``popular`` names (most popular first) and this index's ``existing`` projects.

        Every popular name is known (never flagged itself); the first ``protect_top`` are protected.
        ``options`` override the defaults (the keyword arguments of ``NameIndex()``: ``protect_top``,
        ``edit_min_length``, ``short_edit_top``, ``short_edit_min_length``, ``affix_min_core``,
        ``fold_confusions``, ``technique_top``, ``edit_skip_digits``, ``edit_skip_first``,
        ``edit_min_word``)."""
        index = cls(**options)
        rank = 0
        for name in popular:
            normalized = canonicalize_name(name)
            if normalized in index._popular:
                continue
            rank += 1
            index._popular.add(normalized)
            if rank <= index.protect_top:
                index._protect(normalized, name, rank, popular=True)
        for name in existing:
            index.add_existing(name)
        return index

    def __len__(self) -> int:
        return len(self._targets)

    def _edit_protected(self, flat_name: str, rank: int) -> bool:
        if len(flat_name) >= self.edit_min_length:
            return True
        return rank <= self.short_edit_top and len(flat_name) >= self.short_edit_min_length

    def _keys(self, normalized: str, target: _Target) -> Iterator[tuple[dict[str, _Slot], set[str]]]:
        """Each map and the keys (deduplicated) under which ``normalized`` is stored in it."""
        f = flat(normalized)
        yield self._flat, {f}
        if self.fold_confusions:
            yield self._fold, {fold(f)}
        words = normalized.split("-")
        if len(words) > 1:
            yield self._words, {"-".join(sorted(words))}
        yield self._cores, {core for _how, core in _affix_variants(normalized) if len(core) >= self.affix_min_core}
        if target.edit:
            keys = {f} | _deletes(f)
            core = flat(_DIGITS.sub("", normalized))
            # beautifoulsoup -> beautifulsoup4. Popular names only: an index's numbered names
            # (plugin-1 ... plugin-500) would all share one core.
            if target.popular and core != f and len(core) >= self.edit_min_length:
                keys |= {core} | _deletes(core)
            yield self._deletes, keys

    def _protect(self, normalized: str, display: str, rank: int, *, popular: bool) -> None:
        target = self._targets.get(normalized)
        if target is not None:
            target.existing = target.existing or not popular
            return
        edit = self._edit_protected(flat(normalized), rank)
        target = self._targets[normalized] = _Target(display, rank, popular, not popular, edit)
        for index, keys in self._keys(normalized, target):
            for key in keys:
                _put(index, key, normalized)

    def add_existing(self, name: str) -> None:
        """A project was created on this index: protect its name too."""
        normalized = canonicalize_name(name)
        with self._lock:
            self._existing.add(normalized)
            self._next_existing_rank += 1
            self._protect(normalized, name, self._next_existing_rank, popular=False)

    def remove_existing(self, name: str) -> None:
        """A project was deleted: its name no longer protects (unless it is a protected popular name)."""
        normalized = canonicalize_name(name)
        with self._lock:
            self._existing.discard(normalized)
            target = self._targets.get(normalized)
            if target is None:
                return
            if target.popular:
                target.existing = False
                return
            del self._targets[normalized]
            for index, keys in self._keys(normalized, target):
                for key in keys:
                    _drop(index, key, normalized)

    def _edit(self, normalized: str, f: str, target: str, tf: str) -> str | None:
        found = edit(f, tf)
        if found is None:
            return None
        how, i, what = found
        if self.edit_skip_digits and any(ch.isdigit() for ch in what):
            return None  # pyside2/pyside6, elasticsearch8: version numbers, not typos
        if self.edit_skip_first and i == 0 and len(f) != len(tf):
            return None  # grequests, aresponses: a letter added in front is a new name
        short = self.edit_min_word
        if short and (_word_length_at(target, i) < short
                      or (len(f) > len(tf) and _word_length_at(normalized, i) < short)):
            return None  # tensorflow-gpu/-cpu, google-cloud-iap/-iam, django-q: short words differ
        return how

    def is_known(self, name: str) -> bool:
        """A popular name (protected or not) or a project on this index: never flagged itself."""
        normalized = canonicalize_name(name)
        return normalized in self._popular or normalized in self._existing

    def check(self, candidate: str) -> Resemblance | None:
        """What protected name ``candidate`` imitates (the most popular, if several), or None."""
        with self._lock:
            return self._check(canonicalize_name(candidate))

    def _check(self, normalized: str) -> Resemblance | None:
        if normalized in self._popular or normalized in self._existing:
            return None
        hits: list[tuple[int, int, str, str]] = []  # (rank, technique's place in _PRIORITY, target, how)
        f = flat(normalized)
        words = normalized.split("-")
        tops = self.technique_top

        def found(kind: str, targets: Iterable[str], how: str) -> bool:
            """Record the first (best-ranked) of ``targets`` this technique protects."""
            limit = tops.get(kind)
            for t in targets:
                target = self._targets[t]
                if limit is None or not target.popular or target.rank <= limit or target.existing:
                    hits.append((target.rank, _PRIORITY.index(kind), t, how))
                    return True
            return False

        found("separators", _slot(self._flat, f), "separators added or removed")
        if self.fold_confusions:
            for t in _slot(self._fold, fold(f)):
                tf = flat(t)
                if tf != f and found("lookalike", (t,), _fold_how(f, tf)):
                    break
        if len(words) > 1:
            found("words", (t for t in _slot(self._words, "-".join(sorted(words))) if t.split("-") != words),
                  "words reordered")
        for how, core in _affix_variants(normalized):  # candidate = target + affix or digits
            if len(core) >= self.affix_min_core:
                if how == "version digits":
                    found("digits-appended", _slot(self._flat, core), "version digits appended")
                else:
                    found("affix-added", _slot(self._flat, core), f"{how} added")
        for t in _slot(self._cores, f):  # candidate = target without its affix or digits
            how = next((how for how, core in _affix_variants(t) if core == f), "")
            if how == "version digits":
                if found("digits-removed", (t,), "version digits removed"):
                    break
            elif how and found("affix-removed", (t,), f"{how} removed"):
                break
        seen: set[str] = set()
        for key in (f, *_deletes(f)):
            for t in _slot(self._deletes, key):
                if t in seen:
                    continue
                seen.add(t)
                tf = flat(t)
                edited = self._edit(normalized, f, t, tf)
                if edited is None:
                    core = _DIGITS.sub("", t)
                    if core != t:
                        edited = self._edit(normalized, f, core, flat(core))
                        if edited is not None:
                            edited += " and version digits dropped"
                if edited is not None and found("edit", (t,), edited):
                    break
        if not hits:
            return None
        _rank, _priority, t, how = min(hits)
        target = self._targets[t]
        return Resemblance(target.display, POPULAR if target.popular else EXISTING, how)


# -- the popular-names list -------------------------------------------------------------------------

def _shipped_csv() -> Path:
    return Path(str(resources.files("bastion.scanning") / "data" / "top-pypi-packages.csv"))


def load_popular(path: Path | None, limit: int | None = None) -> list[str]:
    """Project names from a ``download_count,project`` CSV (with header), most popular first.

    ``None`` reads the copy of hugovk/top-pypi-packages shipped with Bastion. Raises ValueError
    naming the file and what is wrong with it."""
    if limit is not None and limit <= 0:
        return []
    source = path if path is not None else _shipped_csv()
    try:
        handle = source.open(newline="", encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"popular names file {source} does not exist: give a CSV of download_count,project "
                         "rows (e.g. from hugovk/top-pypi-packages) or leave the setting empty") from None
    except OSError as exc:
        raise ValueError(f"popular names file {source} cannot be read: {exc.strerror or exc}") from None
    names: list[str] = []
    with handle:
        try:
            reader = csv.reader(handle, strict=True)
            header = next(reader, None)
            if header is None:
                raise ValueError(f"popular names file {source} is empty: expected a header "
                                 "'download_count,project' and one row per project")
            columns = [c.strip().lower() for c in header]
            if "project" not in columns:
                raise ValueError(f"popular names file {source}: the header {','.join(header)!r} has no "
                                 "'project' column (expected 'download_count,project')")
            col = columns.index("project")
            for row in reader:
                if not row or not any(cell.strip() for cell in row):
                    continue
                if len(row) <= col or not row[col].strip():
                    raise ValueError(f"popular names file {source}, line {reader.line_num}: no project "
                                     f"name in {','.join(row)!r}")
                names.append(row[col].strip())
                if limit is not None and len(names) >= limit:
                    break
        except UnicodeDecodeError:
            raise ValueError(f"popular names file {source} is not UTF-8 text: expected a CSV of "
                             "download_count,project rows") from None
        except csv.Error as exc:
            raise ValueError(f"popular names file {source}, line {reader.line_num}: not valid CSV ({exc})") from None
    if not names:
        raise ValueError(f"popular names file {source} lists no projects: expected one "
                         "download_count,project row per project after the header")
    return names
