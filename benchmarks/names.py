"""Typosquat name check (``bastion.scanning.names``): cost, detection and false positives.

    .venv/bin/python benchmarks/names.py [--csv PATH] [--seed 1] [--grid]

Prints, for the shipped top-pypi-packages list (or ``--csv``):

* index build time for all 15,000 names (median of 5) and the size of its maps;
* check cost: median and p99 microseconds per check over every candidate below (>= 10,000);
* detection: typos generated from the top 1,000 names (one per technique and name where the
  technique applies: letter inserted, doubled, dropped, swapped, QWERTY-neighbour substituted, any
  letter substituted, look-alike letters, words reordered, separators removed/added, py/python
  prefix/suffix, version digits appended), leaving out any that is itself a real project in the
  list, plus the real squats ``certifia``, ``botoa3``, ``reqeusts``, ``python-dateutils``,
  ``urlib3``, ``beautifoulsoup``, ``maptplotlib``, ``numpyy``, ``pandass``;
* false-positive proxy: the names ranked 5,001-15,000 (real projects someone chose) checked as if
  they were new, against an index of the top 5,000 (for Bastion) or against the other 14,999 names
  (for the peer); and, for existing projects, ranks 10,001-15,000 checked against an index whose
  only names are ranks 5,001-10,000 as existing projects;
* the same rates for the peer: plain edit distance 1 (insert, delete, substitute, adjacent swap)
  of the normalized name against all 15,000 names, GuardDog's method, computed in the same run.

``--grid`` also prints detection/FP for alternative settings (the measurements behind the defaults).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from bastion.scanning.names import QWERTY_NEIGHBOURS, NameIndex, edit_how, load_popular

REAL_SQUATS = ("certifia", "botoa3", "reqeusts", "python-dateutils", "urlib3", "beautifoulsoup",
               "maptplotlib", "numpyy", "pandass")
LETTERS = "abcdefghijklmnopqrstuvwxyz"
LOOKALIKES = (("m", "rn"), ("w", "vv"), ("d", "cl"), ("o", "0"), ("l", "1"))


def typos(name: str, rng: random.Random) -> dict[str, str]:
    """technique -> one typo of ``name`` made with it (normalized form)."""
    n = canonicalize_name(name)
    out: dict[str, str] = {}
    letters = [i for i, ch in enumerate(n) if ch.isalnum()]
    if not letters:
        return out
    i = rng.choice(letters)
    out["insert"] = n[:i] + rng.choice(LETTERS) + n[i:]
    out["double"] = n[:i] + n[i] + n[i:]
    if len(n) > 2:
        out["drop"] = n[:i] + n[i + 1:]
    pairs = [j for j in range(len(n) - 1) if n[j].isalnum() and n[j + 1].isalnum() and n[j] != n[j + 1]]
    if pairs:
        j = rng.choice(pairs)
        out["swap"] = n[:j] + n[j + 1] + n[j] + n[j + 2:]
    near = sorted(QWERTY_NEIGHBOURS.get(n[i], ()) - {"-"})
    if near:
        out["qwerty"] = n[:i] + rng.choice(near) + n[i + 1:]
    out["substitute"] = n[:i] + rng.choice([c for c in LETTERS if c != n[i]]) + n[i + 1:]
    looks = [(a, b) for a, b in LOOKALIKES if a in n]
    if looks:
        a, b = rng.choice(looks)
        out["lookalike"] = n.replace(a, b, 1)
    words = n.split("-")
    if len(words) > 1:
        shuffled = words[:]
        while shuffled == words:
            rng.shuffle(shuffled)
        out["reorder"] = "-".join(shuffled)
        out["separators-removed"] = "".join(words)
    elif len(n) >= 6:
        k = rng.randrange(2, len(n) - 2)
        out["separator-added"] = n[:k] + "-" + n[k:]
    out["affix"] = rng.choice(("python-{}", "py{}", "py-{}", "{}-py", "{}-python")).format(n)
    out["digits"] = n + rng.choice(("2", "3", "4"))
    return out


class Peer:
    """Plain edit distance 1 of the normalized name against a list (GuardDog's method), with a
    symmetric-delete map so it runs as fast as it can."""

    def __init__(self, names: list[str]) -> None:
        self.names = {canonicalize_name(n) for n in names}
        self.deletes: dict[str, list[str]] = {}
        for n in self.names:
            for key in {n, *(n[:i] + n[i + 1:] for i in range(len(n)))}:
                self.deletes.setdefault(key, []).append(n)

    def check(self, candidate: str, exclude_self: bool = False) -> str | None:
        c = canonicalize_name(candidate)
        if c in self.names and not exclude_self:
            return None
        for key in {c, *(c[:i] + c[i + 1:] for i in range(len(c)))}:
            for t in self.deletes.get(key, ()):
                if t != c and edit_how(c, t) is not None:
                    return t
        return None


def category(how: str) -> str:
    for word in ("separators", "looks like", "reordered", "prefix added", "suffix added", "prefix removed",
                 "suffix removed", "digits appended", "digits removed", "digits dropped", "keyboard", "swapped",
                 "doubled", "inserted", "dropped", "changed"):
        if word in how:
            return word
    return how


def rate(flagged: int, total: int) -> str:
    return f"{flagged}/{total} = {100 * flagged / max(total, 1):.2f}%"


def detection_set(popular: list[str], seed: int, start: int = 0, stop: int = 1000,
                  real: bool = True) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    known = {canonicalize_name(n) for n in popular}
    cases: list[tuple[str, str, str]] = []  # (technique, typo, original)
    for name in popular[start:stop]:
        for technique, typo in typos(name, rng).items():
            if typo not in known and typo != canonicalize_name(name):
                cases.append((technique, typo, name))
    if real:
        for squat in REAL_SQUATS:
            cases.append(("real", squat, ""))
    return cases


def detected(index: NameIndex, cases: list[tuple[str, str, str]]) -> int:
    return sum(index.check(typo) is not None for _, typo, _ in cases)


def evaluate(popular: list[str], cases: list[tuple[str, str, str]], **options: Any
             ) -> tuple[Counter[str], Counter[str], list[str], list[str]]:
    full = NameIndex.build(popular, **options)
    caught: Counter[str] = Counter()
    total: Counter[str] = Counter()
    missed: list[str] = []
    for technique, typo, _ in cases:
        total[technique] += 1
        if full.check(typo) is not None:
            caught[technique] += 1
        else:
            missed.append(f"{technique}:{typo}")
    top = NameIndex.build(popular[:5000], **options)
    fps = []
    for name in popular[5000:15000]:
        hit = top.check(name)
        if hit is not None:
            fps.append(f"{name} ~ {hit.name} ({hit.how})")
    return caught, total, missed, fps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--grid", action="store_true")
    parser.add_argument("--show", type=int, default=0, help="print this many missed typos and FPs")
    args = parser.parse_args()

    popular = load_popular(args.csv)
    print(f"popular names: {len(popular)}")
    builds = []
    for _ in range(5):
        t0 = time.perf_counter()
        index = NameIndex.build(popular)
        builds.append(time.perf_counter() - t0)
    print(f"build, all {len(popular)} names: median {statistics.median(builds) * 1000:.0f} ms "
          f"(min {min(builds) * 1000:.0f}, max {max(builds) * 1000:.0f}); protected {len(index)}, "
          f"delete-map keys {len(index._deletes)}")

    tracemalloc.start()
    measured = NameIndex.build(popular)
    size, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del measured
    print(f"index memory (tracemalloc, all {len(popular)} names): {size / 1e6:.1f} MB")
    existing = [f"{team}-{part}-{i}" for i in range(2000)
                for team, part in (("acme", "billing"), ("acme", "ledger"), ("corp", "search-client"),
                                   ("data", "pipeline"), ("ml", "features"))] + [f"tool{i}" for i in range(10000)]
    t0 = time.perf_counter()
    big = NameIndex.build(popular, existing)
    big_build = time.perf_counter() - t0
    probes = [name + "x" for name in existing[::10]] + [name[:-1] for name in existing[::10]]
    big_costs = []
    for name in probes:
        t0 = time.perf_counter_ns()
        big.check(name)
        big_costs.append(time.perf_counter_ns() - t0)
    big_costs.sort()
    print(f"with {len(existing)} existing projects (numbered families such as acme-billing-N, toolN): build "
          f"{big_build * 1000:.0f} ms, check median {statistics.median(big_costs) / 1000:.1f} us, p99 "
          f"{big_costs[int(len(big_costs) * 0.99)] / 1000:.1f} us over {len(probes)} near names")

    cases = detection_set(popular, args.seed)
    cases_mid = detection_set(popular, args.seed, 1000, 5000, real=False)
    legit = popular[5000:15000]
    candidates = [typo for _, typo, _ in cases] + legit
    costs = []
    for name in candidates:
        t0 = time.perf_counter_ns()
        index.check(name)
        costs.append(time.perf_counter_ns() - t0)
    costs.sort()
    print(f"check, {len(candidates)} candidates (typos + ranks 5,001-15,000): median "
          f"{statistics.median(costs) / 1000:.1f} us, p99 {costs[int(len(costs) * 0.99)] / 1000:.1f} us, "
          f"max {costs[-1] / 1000:.0f} us")

    caught, total, missed, fps = evaluate(popular, cases)
    print("\nBastion (defaults)")
    print(f"  detection: {rate(sum(caught.values()), sum(total.values()))}")
    print("    " + ", ".join(f"{t} {100 * caught[t] / total[t]:.0f}%" for t in sorted(total)))
    real_missed = [m for m in missed if m.startswith("real:")]
    print(f"  detection, typos of ranks 1,001-5,000: {rate(detected(NameIndex.build(popular), cases_mid), len(cases_mid))}")
    print(f"    real squats caught: {total['real'] - len(real_missed)}/{total['real']} {real_missed or ''}")
    print(f"  FP proxy (ranks 5,001-15,000 vs top 5,000): {rate(len(fps), len(legit))}")
    hows = Counter(category(fp.rsplit("(", 1)[1]) for fp in fps)
    print("    by reason: " + ", ".join(f"{h} {c}" for h, c in hows.most_common()))

    existing = NameIndex.build([], popular[5000:10000])
    fp_existing = sum(existing.check(n) is not None for n in popular[10000:15000])
    print(f"  FP proxy, existing projects (ranks 10,001-15,000 vs ranks 5,001-10,000 as existing): "
          f"{rate(fp_existing, 5000)}")

    t0 = time.perf_counter()
    peer = Peer(popular)
    peer_build = time.perf_counter() - t0
    peer_caught = sum(peer.check(typo) is not None for _, typo, _ in cases)
    peer_fp = sum(peer.check(n, exclude_self=True) is not None for n in legit)
    peer5k = Peer(popular[:5000])
    peer5k_fp = sum(peer5k.check(n) is not None for n in legit)
    print(f"\nPeer: edit distance 1 against all {len(popular)} names (GuardDog's method), build {peer_build * 1000:.0f} ms")
    print(f"  detection: {rate(peer_caught, len(cases))}")
    peer_mid = sum(peer.check(typo) is not None for _, typo, _ in cases_mid)
    print(f"  detection, typos of ranks 1,001-5,000: {rate(peer_mid, len(cases_mid))}")
    print(f"  FP proxy (ranks 5,001-15,000 vs the other 14,999): {rate(peer_fp, len(legit))}")
    print(f"  FP proxy (ranks 5,001-15,000 vs top 5,000 only): {rate(peer5k_fp, len(legit))}")

    if args.show:
        print("\nmissed:", *missed[: args.show], sep="\n  ")
        print("\nfalse positives:", *fps[: args.show], sep="\n  ")

    if args.grid:
        print("\ngrid: options -> detection, FP proxy")
        lean: dict[str, Any] = {"edit_skip_digits": True, "edit_skip_first": True, "edit_min_word": 4,
                                "technique_top": {"affix-removed": 1000, "digits-appended": 1000}}
        grid: list[dict[str, Any]] = [
            {},
            {"edit_min_length": 6, "short_edit_top": 0},
            {"edit_min_length": 7, "short_edit_top": 0},
            {"edit_min_length": 6, "short_edit_top": 500, "short_edit_min_length": 4},
            {"edit_skip_digits": True},
            {"edit_skip_first": True},
            {"edit_min_word": 4},
            {"technique_top": {"affix-removed": 1000, "digits-appended": 1000}},
            {"technique_top": {"edit": 2000}},
            {"protect_top": 2000},
            lean,
            {**lean, "protect_top": 3000},
            {**lean, "technique_top": {"affix-removed": 1000, "digits-appended": 1000, "edit": 2000}},
            {**lean, "edit_min_length": 6, "short_edit_top": 500, "short_edit_min_length": 4},
            {**lean, "edit_min_length": 6, "short_edit_top": 1000, "short_edit_min_length": 4},
            {**lean, "edit_min_length": 7, "short_edit_top": 1000, "short_edit_min_length": 4},
            {**lean, "edit_min_length": 8, "short_edit_top": 1000, "short_edit_min_length": 5},
            {"fold_confusions": False},
            {"edit_min_length": 100, "short_edit_top": 0},
        ]
        for options in grid:
            caught, total, _, fps = evaluate(popular, cases, **options)
            mid = detected(NameIndex.build(popular, **options), cases_mid)
            print(f"  {options or 'defaults'}: detection {100 * sum(caught.values()) / sum(total.values()):.2f}% "
                  f"(1,001-5,000: {100 * mid / len(cases_mid):.2f}%), FP {100 * len(fps) / len(legit):.2f}%")


if __name__ == "__main__":
    sys.exit(main())
