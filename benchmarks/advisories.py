"""Advisories: import of the PyPA snapshot, matching 100,000 releases, and ``bastion audit`` vs pip-audit.

    .venv/bin/python benchmarks/advisories.py [--quick] [--runs 5] [--snapshot DIR] [--out FILE]

Prints, and writes to ``benchmarks/results/advisories-latest.json``:

(a) ``bastion advisories import`` of the whole snapshot (``/work/shared/data/advisory-database``,
    2,661 advisories) into a fresh SQLite data dir, through the real command (a subprocess, as
    an operator runs it): median seconds over ``--runs`` fresh data dirs; then a re-import of the
    same tree with nothing changed (median);
(b) matching: 100,000 releases inserted directly in the database (rows, not uploads: 2,000
    projects, the ones the advisories name first, then made-up ones, x 50 versions each, taken
    from the versions the advisories list and fix, padded with others), then the importer's
    full re-match (``bastion.advisories.ingest.rematch_all``): seconds and releases per second,
    median of the runs, and the matches stored;
(c) a 200-line requirements file of real names from the snapshot, half pinned at a version an
    advisory lists or puts in a range, half at a version no advisory affects, audited against the
    same live ``bastion serve`` (the snapshot imported) by ``bastion audit -r FILE --no-deps``
    and by ``pip-audit -s osv --osv-url <index>/osv/v1/query --no-deps --disable-pip -r FILE``
    (2.10.1, the test pin), both as subprocesses, alternating, median wall seconds, the ratio,
    and whether both report the same advisory ids after alias merging.

``--quick``: one run of each, 10,000 releases, 50 requirement lines.
Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BIN = Path(sys.executable).parent
SNAPSHOT = Path(os.environ.get("BASTION_ADVISORY_DB", "/work/shared/data/advisory-database"))
RESULTS = HERE / "results" / "advisories-latest.json"


# -- the requirements file ---------------------------------------------------------------------------

def snapshot_entries(root: Path) -> dict[str, list[tuple[str, Any]]]:
    """{normalized project name: [(advisory id, affected entry)]} of the non-withdrawn records."""
    from bastion.advisories.osv import RecordError, load_yaml, parse_record

    found: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    for path in sorted((root / "vulns").rglob("*.yaml")):
        try:
            record = parse_record(load_yaml(path.read_bytes()))
        except RecordError:
            continue
        if record.withdrawn is not None:
            continue
        for entry in record.affected:
            found[entry.name].append((record.id, entry))
    return dict(found)


def _texts(entry: Any) -> list[str]:
    return [*entry.versions, *(text for r in entry.ranges for event in r["events"] for text in event.values())]


def snapshot_requirements(root: Path, count: int) -> list[tuple[str, str, bool]]:
    """``count`` (name, version, vulnerable) pins of real projects from the snapshot, alternating a
    version an advisory affects and one none affects. Projects whose advisories hold a version
    text that is not PEP 440 are left out (pip-audit fails on a ``fixed`` it cannot parse)."""
    from bastion.advisories.match import Matcher, parse_version

    picks: list[tuple[str, str, bool]] = []
    for name, entries in sorted(snapshot_entries(root).items()):
        texts = [t for _, e in entries for t in _texts(e) if t not in ("0", "*")]
        if any(parse_version(t) is None for t in texts):
            continue
        matchers = [Matcher(e.ranges, e.versions) for _, e in entries]
        want_vulnerable = len(picks) % 2 == 0
        candidates = sorted({parse_version(t) for t in texts if parse_version(t) is not None})
        affected = [v for v in candidates if any(m.affects(v) for m in matchers)]
        clean = [v for v in candidates if not any(m.affects(v) for m in matchers)]
        if want_vulnerable and affected:
            picks.append((name, str(affected[len(affected) // 2]), True))
        elif not want_vulnerable and clean:
            picks.append((name, str(clean[-1]), False))
        if len(picks) == count:
            break
    return picks


def write_requirements(path: Path, picks: list[tuple[str, str, bool]]) -> Path:
    path.write_text("".join(f"{name}=={version}\n" for name, version, _ in picks))
    return path


# -- helpers --------------------------------------------------------------------------------------

def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.upper().startswith(("PIP_", "BASTION_", "UV_")) and "proxy" not in k.lower()}
    env.update(HOME=str(home), NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
               PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", NO_COLOR="1", COLUMNS="200")
    return env


def _timed(cmd: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    elapsed = time.perf_counter() - start
    if result.returncode not in ok:
        raise SystemExit(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return elapsed, result


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- (a) import -----------------------------------------------------------------------------------

def bench_import(snapshot: Path, work: Path, runs: int, env: dict[str, str]) -> dict[str, Any]:
    fresh, again = [], []
    summary = ""
    for run in range(runs):
        data = work / f"import-{run}"
        cmd = [str(BIN / "bastion"), "advisories", "import", str(snapshot), "--data-dir", str(data)]
        seconds, result = _timed(cmd, env)
        fresh.append(seconds)
        summary = (result.stdout + result.stderr).strip().splitlines()[-1]
        seconds, _ = _timed(cmd, env)
        again.append(seconds)
        if run < runs - 1:
            shutil.rmtree(data)
    return {"fresh_seconds": fresh, "fresh_median": statistics.median(fresh),
            "unchanged_seconds": again, "unchanged_median": statistics.median(again), "summary": summary}


# -- (b) matching ---------------------------------------------------------------------------------

def synthesise_releases(bastion: Any, snapshot: Path, total: int, per_project: int = 50) -> tuple[int, int]:
    """``total`` releases over ``total / per_project`` projects (advisory names first), inserted as rows."""
    from packaging.utils import canonicalize_version
    from sqlalchemy import insert

    from bastion.advisories.match import parse_version
    from bastion.packaging.models import Project, Release
    from bastion.packaging.names import ultranormalize

    entries = snapshot_entries(snapshot)
    projects = total // per_project
    names: list[str] = []
    folded: set[str] = set()
    for name in [*sorted(entries), *(f"made-up-project-{i:05d}" for i in range(projects))]:
        if ultranormalize(name) not in folded:  # the index refuses confusable names: so do we
            folded.add(ultranormalize(name))
            names.append(name)
        if len(names) == projects:
            break
    now = datetime.now(UTC)
    project_rows, release_rows = [], []
    for pid, name in enumerate(names, 1):
        texts = sorted({t for _, e in entries.get(name, []) for t in _texts(e)
                        if t not in ("0", "*") and parse_version(t) is not None},
                       key=lambda t: parse_version(t))  # type: ignore[arg-type,return-value]
        versions: dict[str, str] = {}
        for text in texts:
            versions.setdefault(canonicalize_version(text), text)
        minor = 0
        while len(versions) < per_project:
            candidate = f"{minor // 10}.{minor % 10}.{pid % 7}"
            minor += 1
            versions.setdefault(canonicalize_version(candidate), candidate)
        chosen = list(versions.items())[:per_project]
        project_rows.append({"id": pid, "name": name, "normalized_name": name, "ultranormalized_name": ultranormalize(name),
                             "created": now, "last_serial": 0})
        release_rows += [{"project_id": pid, "version": v, "canonical_version": c, "created": now, "core_metadata": {}}
                         for c, v in chosen]
    with bastion.db.write() as session:
        session.execute(insert(Project), project_rows)
        for start in range(0, len(release_rows), 10_000):
            session.execute(insert(Release), release_rows[start:start + 10_000])
    return len(project_rows), len(release_rows)


def bench_matching(snapshot: Path, work: Path, releases: int, runs: int) -> dict[str, Any]:
    from sqlalchemy import delete, func, select

    from bastion.advisories.ingest import import_path, rematch_all
    from bastion.advisories.models import VulnerabilityMatch
    from bastion.services import Bastion
    from bastion.settings import load_settings

    data = work / "matching"
    bastion = Bastion(load_settings(data, tuf="off"))
    try:
        import_path(bastion, snapshot)
        projects, rows = synthesise_releases(bastion, snapshot, releases)
        seconds, stored = [], 0
        for _ in range(runs):
            with bastion.db.write() as session:
                session.execute(delete(VulnerabilityMatch))
            start = time.perf_counter()
            with bastion.db.write() as session:
                rematch_all(session)
            seconds.append(time.perf_counter() - start)
            with bastion.db.read() as session:
                stored = session.execute(select(func.count()).select_from(VulnerabilityMatch)).scalar_one()
    finally:
        bastion.close()
    median = statistics.median(seconds)
    return {"projects": projects, "releases": rows, "seconds": seconds, "median": median,
            "releases_per_second": rows / median, "matches_stored": stored}


# -- (c) audit vs pip-audit -----------------------------------------------------------------------

def merge_overlapping(groups: Iterable[frozenset[str]]) -> set[frozenset[str]]:
    """Id sets that share any id, merged (transitively)."""
    merged: list[set[str]] = []
    for group in groups:
        touching = [m for m in merged if m & group]
        union = set(group).union(*touching)
        merged = [m for m in merged if not m & group] + [union]
    return {frozenset(m) for m in merged}


def _merged(report: dict[str, Any]) -> dict[str, set[frozenset[str]]]:
    return {f"{d['name']} {d['version']}": merge_overlapping(frozenset([v["id"], *v.get("aliases", [])])
                                                             for v in d["vulns"])
            for d in report["dependencies"] if d.get("vulns")}


def _unmerged_counts(report: dict[str, Any]) -> int:
    return sum(len(d["vulns"]) for d in report["dependencies"] if d.get("vulns"))


def _json_of(text: str) -> dict[str, Any]:
    return json.loads(text[text.index("{"):])


def bench_audit(snapshot: Path, work: Path, lines: int, runs: int, env: dict[str, str]) -> dict[str, Any]:
    data = work / "audit-index"
    _timed([str(BIN / "bastion"), "advisories", "import", str(snapshot), "--data-dir", str(data)], env)
    picks = snapshot_requirements(snapshot, lines)
    requirements = write_requirements(work / "requirements.txt", picks)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(work / "server.log", "wb")
    server = subprocess.Popen([str(BIN / "bastion"), "serve", "--port", str(port), "--data-dir", str(data)],
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit(f"bastion serve did not start: {(work / 'server.log').read_text()[-2000:]}")
                time.sleep(0.1)
        bastion_cmd = [str(BIN / "bastion"), "audit", "--index-url", url, "--no-deps", "-r", str(requirements),
                       "-f", "json"]
        pip_audit_cmd = [str(BIN / "pip-audit"), "-s", "osv", "--osv-url", f"{url}/osv/v1/query", "--no-deps",
                         "--disable-pip", "-r", str(requirements), "-f", "json", "--progress-spinner", "off",
                         "--cache-dir", str(work / "pip-audit-cache")]
        # The same command without the `bastion` entry point's other commands (imported eagerly by
        # bastion.cli): what `bastion audit` would cost if the CLI loaded its commands lazily.
        direct_cmd = [sys.executable, "-c", "from bastion.advisories.audit_cli import audit_command; audit_command()",
                      *bastion_cmd[2:]]
        ours, theirs, startup, direct = [], [], [], []
        _timed(bastion_cmd, env, ok=(0, 1))  # warm-up: the server's first queries, the OS file cache
        ours_report = theirs_report = None
        for run in range(runs):
            order = [(bastion_cmd, ours), (pip_audit_cmd, theirs)]
            for cmd, times in order if run % 2 == 0 else order[::-1]:
                seconds, result = _timed(cmd, env, ok=(0, 1))
                times.append(seconds)
                if cmd is bastion_cmd:
                    ours_report = _json_of(result.stdout)
                else:
                    theirs_report = _json_of(result.stdout)
                shutil.rmtree(work / "pip-audit-cache", ignore_errors=True)
            startup.append(_timed([str(BIN / "bastion"), "--version"], env)[0])
            direct.append(_timed(direct_cmd, env, ok=(0, 1))[0])
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
    assert ours_report is not None and theirs_report is not None
    ours_merged, theirs_merged = _merged(ours_report), _merged(theirs_report)
    return {
        "lines": len(picks), "vulnerable_pins": sum(v for *_, v in picks),
        "bastion_audit_seconds": ours, "bastion_audit_median": statistics.median(ours),
        "pip_audit_seconds": theirs, "pip_audit_median": statistics.median(theirs),
        "ratio_pip_audit_over_bastion": statistics.median(theirs) / statistics.median(ours),
        "bastion_cli_startup_seconds": startup, "bastion_cli_startup_median": statistics.median(startup),
        "audit_command_alone_seconds": direct, "audit_command_alone_median": statistics.median(direct),
        "ratio_pip_audit_over_audit_command_alone": statistics.median(theirs) / statistics.median(direct),
        "rows_bastion": _unmerged_counts(ours_report), "rows_pip_audit": _unmerged_counts(theirs_report),
        "findings_after_merging": sum(len(v) for v in ours_merged.values()),
        "same_ids_after_alias_merging": ours_merged == theirs_merged,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 run, 10,000 releases, 50 requirement lines")
    parser.add_argument("--runs", type=int, default=None, help="runs per measurement (default 5; --quick 1)")
    parser.add_argument("--releases", type=int, default=None, help="releases to match (default 100,000)")
    parser.add_argument("--lines", type=int, default=None, help="requirement lines (default 200)")
    parser.add_argument("--snapshot", type=Path, default=SNAPSHOT)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    args = parser.parse_args()
    runs = args.runs or (1 if args.quick else 5)
    releases = args.releases or (10_000 if args.quick else 100_000)
    lines = args.lines or (50 if args.quick else 200)
    work = Path(tempfile.mkdtemp(prefix="bastion-bench-advisories-"))
    env = _env(work / "home")
    (work / "home").mkdir()
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"), "quick": args.quick, "runs": runs,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "snapshot": str(args.snapshot),
        "peer": "pip-audit 2.10.1 (-s osv --osv-url <this index>)",
    }
    try:
        print(f"(a) importing {args.snapshot} into fresh SQLite data dirs, {runs} run(s) ...", flush=True)
        results["import"] = bench_import(args.snapshot, work, runs, env)
        imp = results["import"]
        print(f"    fresh import: median {imp['fresh_median']:.2f} s   no-change re-import: median "
              f"{imp['unchanged_median']:.2f} s\n    {imp['summary']}", flush=True)

        print(f"(b) matching {releases:,} releases (rows inserted directly), {runs} run(s) ...", flush=True)
        results["matching"] = bench_matching(args.snapshot, work, releases, runs)
        m = results["matching"]
        print(f"    rematch_all: median {m['median']:.2f} s = {m['releases_per_second']:,.0f} releases/s over "
              f"{m['projects']:,} projects; {m['matches_stored']:,} matches stored", flush=True)

        print(f"(c) bastion audit vs pip-audit, {lines}-line requirements file, {runs} run(s) each ...", flush=True)
        results["audit"] = bench_audit(args.snapshot, work, lines, runs, env)
        a = results["audit"]
        print(f"    bastion audit: median {a['bastion_audit_median']:.2f} s   pip-audit: median "
              f"{a['pip_audit_median']:.2f} s   ratio (pip-audit / bastion): {a['ratio_pip_audit_over_bastion']:.2f}x\n"
              f"    of bastion audit's time, the bare CLI start (`bastion --version`): median "
              f"{a['bastion_cli_startup_median']:.2f} s; the audit command alone (python -c, no other "
              f"commands imported): median {a['audit_command_alone_median']:.2f} s, ratio "
              f"{a['ratio_pip_audit_over_audit_command_alone']:.2f}x\n"
              f"    {a['lines']} lines ({a['vulnerable_pins']} vulnerable pins); rows reported: bastion "
              f"{a['rows_bastion']}, pip-audit {a['rows_pip_audit']}; {a['findings_after_merging']} findings after "
              f"alias merging; same ids: "
              f"{a['same_ids_after_alias_merging']}", flush=True)
    finally:
        if args.keep:
            print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {args.out}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    main()
