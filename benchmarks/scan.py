"""Upload scanning: Bastion's scanner vs GuardDog 3 on real malware and on popular benign packages.

    .venv/bin/python benchmarks/scan_corpus.py          # once: the benign corpus (top 330 PyPI projects)
    .venv/bin/python benchmarks/scan.py                 # full run, ~15-40 minutes (GuardDog is the slow part)
    .venv/bin/python benchmarks/scan.py --quick         # 40 malicious + 40 benign projects, a few minutes
    .venv/bin/python benchmarks/scan.py --skip-guarddog # Bastion only, about a minute

Measures, for each tool, on the same files:

* **detection**: share of the malicious development set (``/work/shared/data/malware-dev/``,
  manifest.json) flagged;
* **false positives**: share of benign projects (latest sdist + one wheel of the most-downloaded
  PyPI projects, see ``scan_corpus.py``) with at least one flagged file, and share of benign files;
* **speed**: seconds per file (median and mean), seconds per benign project (its files together),
  and MB/s = compressed bytes scanned / total scan seconds.

Bastion runs in-process, as the upload path runs it: ``Scanner().scan(path, filename=...)`` (the
one-off import + ``Scanner()`` cost is measured separately, in a fresh interpreter). A file is
flagged when the verdict is not ``allow`` (quarantine or reject, defaults 4.0 / 10.0); rejects are
counted too.

GuardDog 3.2.0 runs as its CLI, one process per file, ``guarddog pypi scan FILE
--output-format=json``, from its own venv (made by this script if missing). For a local archive
GuardDog copies the file into its own temp dir, extracts it there (content-based tar/zip detection,
``tarsafe`` / checked ``zipfile``), under its kernel sandbox (nono: network blocked), and runs
Semgrep and YARA rules over the extracted files: static analysis only, nothing is installed or
executed. Its time is measured per file including process start-up, and a no-op start-up
(``guarddog --version``, median of several) is reported and subtracted for a second figure.
GuardDog 3 reports *issues* (any rule match, including its "capability-*" rules that match
everyday code such as ``os.remove``) and a *risk score* 0-10 with a label (low < 5 <= suspicious <
7 <= high_risk). All four thresholds are reported; "any issue" is GuardDog's own notion of a
finding (``--exit-non-zero-on-finding``), "suspicious+" and "high_risk" are its risk labels.

GuardDog's typosquatting metadata rule wants fresh top-package lists and, offline, retries the
download at every start (the bundled lists are older than its 30-day refresh). The script points
``GUARDDOG_TOP_PACKAGES_CACHE_LOCATION`` at a copy of the bundled lists stamped as fresh, as on a
machine where the refresh succeeded, so no start-up waits on the network. (Metadata rules do not
run for local files anyway.)

The malware is live: this script only reads it (hashing, handing the path to the two scanners). It
never installs, builds, imports or executes it. Results go to ``benchmarks/results/scan-latest.json``
(rule ids, scores and timings; no malware contents).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

import scan_corpus  # noqa: E402

MALWARE_DIR = Path("/work/shared/data/malware-dev")
GUARDDOG_VERSION = "3.2.0"
GUARDDOG_VENV = Path("/tmp/bastion-guarddog-venv")
DEFAULT_OUT = HERE / "results" / "scan-latest.json"
GD_TIMEOUT = 600

err = Console(stderr=True)
out = Console(width=150)


@dataclass
class Sample:
    path: Path
    name: str  # the file name to report to the scanner (the original name for malware)
    label: str  # "malicious" or "benign"
    project: str
    kind: str  # sdist / wheel / malware archive format
    size: int
    cluster: str = ""


@dataclass
class Outcome:
    """One tool's answer for one file."""

    seconds: float
    flagged: dict[str, bool] = field(default_factory=dict)  # threshold name -> flagged
    score: float | None = None
    label: str = ""
    rules: list[str] = field(default_factory=list)
    detail: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


# --------------------------------------------------------------------------------------------- data

def malware_samples(directory: Path = MALWARE_DIR) -> list[Sample]:
    manifest = json.loads((directory / "manifest.json").read_text())
    out_: list[Sample] = []
    for e in manifest:
        p = directory / e["file"]
        if not p.is_file():
            continue
        original = Path(e.get("source_path") or e["file"]).name
        out_.append(Sample(p, original, "malicious", e.get("package", ""), e.get("format", ""), p.stat().st_size,
                           e.get("cluster", "")[:12]))
    out_.sort(key=lambda s: s.path.name)
    return out_


def benign_samples(cache: Path) -> tuple[list[Sample], dict[str, Any]]:
    if not (cache / scan_corpus.MANIFEST).is_file():
        raise SystemExit(f"no benign corpus at {cache}: run `.venv/bin/python benchmarks/scan_corpus.py --cache {cache}` first")
    manifest = scan_corpus.load_corpus(cache)
    samples = [Sample(cache / f["path"], f["file"], "benign", f["project"], f["kind"], f["size"])
               for f in manifest["files"]]
    return samples, manifest


def spread(items: list, n: int | None) -> list:
    """``n`` items evenly spread over ``items`` (all of them if n is None or larger)."""
    if n is None or n >= len(items):
        return list(items)
    if n <= 0:
        return []
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def limit_projects(samples: list[Sample], n: int | None) -> list[Sample]:
    projects = list(dict.fromkeys(s.project for s in samples))  # popularity order, as in the manifest
    keep = set(spread(projects, n))
    return [s for s in samples if s.project in keep]


# ------------------------------------------------------------------------------------------ Bastion

def bastion_startup_seconds(runs: int = 3) -> list[float]:
    """Wall time of a fresh interpreter that imports the scanner and builds a Scanner (like `bastion scan`)."""
    code = "from bastion.scanning.scanner import Scanner; Scanner()"
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - t0)
    return times


class BastionRunner:
    def __init__(self) -> None:
        t0 = time.perf_counter()
        from bastion.scanning.result import Verdict
        from bastion.scanning.scanner import Scanner
        self.verdict = Verdict
        self.scanner = Scanner()
        self.init_seconds = time.perf_counter() - t0
        self.rules_version = ""

    def scan(self, s: Sample) -> Outcome:
        t = time.perf_counter()
        try:
            r = self.scanner.scan(s.path, filename=s.name)
        except Exception as exc:  # noqa: BLE001 - a crash is a result too
            dt = time.perf_counter() - t
            err.print(f"[red]Bastion crashed on {s.name}[/red]: {traceback.format_exc(limit=3)}")
            return Outcome(dt, {"non-allow": False, "reject": False}, error=f"crash: {type(exc).__name__}: {exc}"[:300])
        dt = time.perf_counter() - t
        self.rules_version = r.rules_version or self.rules_version
        rules = sorted({f.rule for f in r.findings})
        detail = []
        for f in sorted(r.findings, key=lambda f: -f.severity)[:12]:
            d = {"rule": f.rule, "file": f.file, "line": f.line, "severity": f.severity}
            if s.label == "benign":  # excerpts of benign code help tuning; no malware contents in results
                d["excerpt"] = f.excerpt[:160]
            detail.append(d)
        return Outcome(dt, {"non-allow": r.verdict != self.verdict.ALLOW, "reject": r.verdict == self.verdict.REJECT},
                       score=r.score, label=r.verdict.value, rules=rules, detail=detail, error=r.error)


# ----------------------------------------------------------------------------------------- GuardDog

GD_THRESHOLDS = ("any issue", "any risk", "suspicious+", "high_risk")


def guarddog_env(venv: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["GUARDDOG_TOP_PACKAGES_CACHE_LOCATION"] = str(venv / "top-packages-cache")
    env.pop("PYTHONPATH", None)
    return env


def ensure_guarddog(venv: Path) -> Path:
    exe = venv / "bin" / "guarddog"
    if not exe.is_file():
        err.print(f"installing guarddog=={GUARDDOG_VERSION} into {venv} ...")
        base = getattr(sys, "_base_executable", None) or sys.executable
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                        f"guarddog=={GUARDDOG_VERSION}"], check=True)
    got = subprocess.run([str(venv / "bin" / "python"), "-c",
                          "import importlib.metadata as m; print(m.version('guarddog'))"],
                         capture_output=True, text=True, check=True).stdout.strip()
    if got != GUARDDOG_VERSION:
        raise SystemExit(f"{venv} has guarddog {got}, expected {GUARDDOG_VERSION}: remove it or pass --guarddog-venv")
    # Fresh-stamped copies of the bundled top-package lists (see the module docstring).
    cache = venv / "top-packages-cache"
    cache.mkdir(exist_ok=True)
    res = subprocess.run([str(venv / "bin" / "python"), "-c",
                          "import guarddog, os; print(os.path.join(os.path.dirname(guarddog.__file__), "
                          "'analyzer', 'metadata', 'resources'))"],
                         capture_output=True, text=True, check=True).stdout.strip()
    now = int(time.time())
    for src in Path(res).glob("top_*.json"):
        dst = cache / src.name
        try:
            if now - json.loads(dst.read_text()).get("downloaded_timestamp", 0) < 7 * 86400:
                continue
        except (OSError, ValueError):
            pass
        data = json.loads(src.read_text())
        data["downloaded_timestamp"] = now
        dst.write_text(json.dumps(data))
    return exe


def guarddog_startup_seconds(exe: Path, env: dict[str, str], runs: int = 5) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([str(exe), "--version"], capture_output=True, env=env, check=True)
        times.append(time.perf_counter() - t0)
    return times


def parse_guarddog(stdout: str) -> dict[str, Any]:
    start = stdout.find("{")
    if start < 0:
        raise ValueError("no JSON in output")
    return json.JSONDecoder().raw_decode(stdout[start:])[0]


def guarddog_scan(s: Sample, exe: Path, env: dict[str, str], cwd: str) -> Outcome:
    cmd = [str(exe), "pypi", "scan", str(s.path), "--output-format=json"]
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=GD_TIMEOUT)
        dt = time.perf_counter() - t
    except subprocess.TimeoutExpired:
        return Outcome(time.perf_counter() - t, dict.fromkeys(GD_THRESHOLDS, False), error=f"timeout after {GD_TIMEOUT} s")
    try:
        data = parse_guarddog(proc.stdout)
    except ValueError:
        return Outcome(dt, dict.fromkeys(GD_THRESHOLDS, False),
                       error=f"exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-300:]}")
    results = data.get("results") or {}
    rules = sorted(k for k, v in results.items() if v)
    issues = int(data.get("issues") or 0)
    rs = data.get("risk_score") or {}
    score = float(rs.get("score") or 0.0)
    label = str(rs.get("label") or "")
    errors = data.get("errors") or {}
    return Outcome(
        dt,
        {"any issue": issues > 0, "any risk": score > 0, "suspicious+": score >= 5.0, "high_risk": label == "high_risk"},
        score=score, label=label, rules=rules, detail=[{"issues": issues, "risks": len(data.get("risks") or [])}],
        error=("; ".join(f"{k}: {str(v)[:120]}" for k, v in errors.items())[:300] or None) if errors else None)


# ---------------------------------------------------------------------------------------- summaries

def _stats(xs: list[float]) -> dict[str, float | None]:
    if not xs:
        return {"median": None, "mean": None, "p90": None, "max": None}
    xs_sorted = sorted(xs)
    return {"median": statistics.median(xs), "mean": statistics.fmean(xs),
            "p90": xs_sorted[min(len(xs) - 1, int(0.9 * len(xs)))], "max": xs_sorted[-1]}


def summarize(tool: str, outcomes: dict[Path, Outcome], mal: list[Sample], ben: list[Sample],
              thresholds: tuple[str, ...], startup: float = 0.0) -> dict[str, Any]:
    mal = [s for s in mal if s.path in outcomes]
    ben = [s for s in ben if s.path in outcomes]
    allfiles = mal + ben
    secs = [outcomes[s.path].seconds for s in allfiles]
    total_bytes = sum(s.size for s in allfiles)
    total_secs = sum(secs)
    by_project: dict[str, list[Sample]] = defaultdict(list)
    for s in ben:
        by_project[s.project].append(s)
    summary: dict[str, Any] = {
        "tool": tool,
        "files": len(allfiles), "malicious_files": len(mal), "benign_files": len(ben), "benign_projects": len(by_project),
        "errors": {"malicious": sum(1 for s in mal if outcomes[s.path].error),
                   "benign": sum(1 for s in ben if outcomes[s.path].error)},
        "seconds_per_file": _stats(secs),
        "seconds_per_malicious_file": _stats([outcomes[s.path].seconds for s in mal]),
        "seconds_per_benign_file": _stats([outcomes[s.path].seconds for s in ben]),
        "seconds_per_benign_project": _stats([sum(outcomes[s.path].seconds for s in ss) for ss in by_project.values()]),
        "total_seconds": total_secs, "total_mb": total_bytes / 1e6,
        "mb_per_s": (total_bytes / 1e6 / total_secs) if total_secs else None,
        "startup_seconds": startup,
        "thresholds": {},
    }
    if startup:
        net = [max(0.0, x - startup) for x in secs]
        summary["seconds_per_file_minus_startup"] = _stats(net)
        summary["mb_per_s_minus_startup"] = total_bytes / 1e6 / sum(net) if sum(net) else None
    for th in thresholds:
        detected = [s for s in mal if outcomes[s.path].flagged.get(th)]
        fp_files = [s for s in ben if outcomes[s.path].flagged.get(th)]
        fp_projects = sorted({s.project for s in fp_files})
        summary["thresholds"][th] = {
            "detected": len(detected), "detection_rate": len(detected) / len(mal) if mal else None,
            "missed": [s.path.name for s in mal if not outcomes[s.path].flagged.get(th)],
            "fp_files": len(fp_files), "fp_file_rate": len(fp_files) / len(ben) if ben else None,
            "fp_projects": len(fp_projects), "fp_project_rate": len(fp_projects) / len(by_project) if by_project else None,
            "flagged_projects": fp_projects,
        }
    return summary


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def fnum(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def print_report(report: dict[str, Any]) -> None:
    tools = report["tools"]
    t = Table(title=f"Upload scanning: {report['malicious_files']} malicious files, {report['benign_projects']} benign "
                    f"projects ({report['benign_files']} files), {report['date']}")
    t.add_column("tool / threshold")
    t.add_column("detection", justify="right")
    t.add_column("FP projects", justify="right")
    t.add_column("FP files", justify="right")
    for name, s in tools.items():
        for th, v in s["thresholds"].items():
            t.add_row(f"{name}: {th}", f"{v['detected']}/{s['malicious_files']} {pct(v['detection_rate'])}",
                      f"{v['fp_projects']}/{s['benign_projects']} {pct(v['fp_project_rate'])}",
                      f"{v['fp_files']}/{s['benign_files']} {pct(v['fp_file_rate'])}")
    out.print(t)
    sp = Table(title="Speed (one file at a time; GuardDog: one process per file)")
    for c in ("tool", "s/file median", "s/file mean", "s/benign project median", "s/benign project mean", "MB/s",
              "start-up s", "errors (mal/ben)"):
        sp.add_column(c, justify="right" if c != "tool" else "left")
    for name, s in tools.items():
        sp.add_row(name, fnum(s["seconds_per_file"]["median"], 4), fnum(s["seconds_per_file"]["mean"], 4),
                   fnum(s["seconds_per_benign_project"]["median"], 3), fnum(s["seconds_per_benign_project"]["mean"], 3),
                   fnum(s["mb_per_s"], 2), fnum(s.get("startup_seconds"), 2),
                   f"{s['errors']['malicious']}/{s['errors']['benign']}")
        if "seconds_per_file_minus_startup" in s:
            m = s["seconds_per_file_minus_startup"]
            sp.add_row(f"{name} minus start-up", fnum(m["median"], 4), fnum(m["mean"], 4), "", "",
                       fnum(s.get("mb_per_s_minus_startup"), 2), "", "")
    out.print(sp)
    for line in report.get("ratios_text", []):
        out.print(line)
    for name, s in tools.items():
        for th, v in s["thresholds"].items():
            names = v["flagged_projects"]
            listed = ", ".join(names) if len(names) <= 40 else f"{', '.join(names[:40])}, ... ({len(names)} in all)"
            out.print(f"[bold]{name}[/bold] benign projects flagged ({th}): {listed or 'none'}")
    if report.get("bastion_flagged_benign"):
        out.print("[bold]Bastion, flagged benign files:[/bold]")
        for f in report["bastion_flagged_benign"]:
            out.print(f"  {f['file']} ({f['project']}): {f['verdict']} {f['score']} rules={','.join(f['rules'])}")
    if report.get("bastion_missed_malware"):
        out.print(f"[bold]Bastion, missed malicious files ({len(report['bastion_missed_malware'])}):[/bold] "
                  + ", ".join(escape(f"{m['file']} [{m['cluster']}]") for m in report["bastion_missed_malware"]))
    if report.get("bastion_slowest"):
        out.print("[bold]Bastion, slowest files:[/bold] " + ", ".join(
            f"{f['file']} ({f['size'] / 1e6:.1f} MB) {f['seconds']:.2f} s" for f in report["bastion_slowest"]))
    if report.get("names"):
        n = report["names"]
        out.print(f"Name check (bastion.scanning.names): {n.get('text', '')}")
    for note in report.get("notes", []):
        out.print(f"[dim]note: {note}[/dim]")


def name_check(mal: list[Sample]) -> dict[str, Any]:
    try:
        from bastion.scanning.names import NameIndex, load_popular
    except Exception as exc:  # noqa: BLE001
        return {"text": f"skipped ({type(exc).__name__}: {exc})"}
    try:
        t0 = time.perf_counter()
        index = NameIndex.build(load_popular(None))
        build = time.perf_counter() - t0
        packages = sorted({s.project for s in mal if s.project})
        hits = {}
        t0 = time.perf_counter()
        for p in packages:
            r = index.check(p)
            if r is not None:
                hits[p] = f"{r.name} ({r.how})"
        per = (time.perf_counter() - t0) / max(1, len(packages))
    except Exception as exc:  # noqa: BLE001
        return {"text": f"skipped (API not usable: {type(exc).__name__}: {exc})"}
    return {"malicious_names": len(packages), "flagged": len(hits), "rate": len(hits) / max(1, len(packages)),
            "build_seconds": build, "check_us": per * 1e6, "hits": hits,
            "text": f"{len(hits)}/{len(packages)} malicious package names ({pct(len(hits) / max(1, len(packages)))}) "
                    f"resemble a popular name; index build {build:.2f} s, {per * 1e6:.0f} µs per check "
                    "(false-positive proxy: benchmarks/names.py)"}


# --------------------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="40 malicious files + 40 benign projects")
    ap.add_argument("--skip-guarddog", action="store_true")
    ap.add_argument("--skip-bastion", action="store_true", help="GuardDog only (e.g. before the scanner exists)")
    ap.add_argument("--limit-benign", type=int, default=None, help="benign projects (spread over the popularity list)")
    ap.add_argument("--limit-malicious", type=int, default=None, help="malicious files (spread over the set)")
    ap.add_argument("--cache", type=Path, default=scan_corpus.DEFAULT_CACHE, help="benign corpus (scan_corpus.py --cache)")
    ap.add_argument("--malware", type=Path, default=MALWARE_DIR)
    ap.add_argument("--guarddog-venv", type=Path, default=GUARDDOG_VENV)
    ap.add_argument("--json-out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--merge-guarddog", type=Path, default=None,
                    help="take the GuardDog figures from an earlier results file instead of running it again")
    ap.add_argument("--report-only", type=Path, default=None, help="print the tables of an earlier results file")
    args = ap.parse_args(argv)

    if args.report_only:
        print_report(json.loads(args.report_only.read_text()))
        return 0
    if args.quick:
        args.limit_benign = 40 if args.limit_benign is None else args.limit_benign
        args.limit_malicious = 40 if args.limit_malicious is None else args.limit_malicious

    mal = spread(malware_samples(args.malware), args.limit_malicious)
    ben_all, corpus = benign_samples(args.cache)
    ben = limit_projects(ben_all, args.limit_benign)
    samples = mal + ben
    n_projects = len({s.project for s in ben})
    err.print(f"{len(mal)} malicious files, {n_projects} benign projects ({len(ben)} files, "
              f"{sum(s.size for s in ben) / 1e6:.1f} MB)")
    notes: list[str] = []
    if n_projects < 300 and args.limit_benign is None:
        notes.append(f"only {n_projects} benign projects in the corpus (target 300): is scan_corpus.py finished?")

    report: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "malicious_files": len(mal), "benign_projects": n_projects, "benign_files": len(ben),
        "benign_corpus": {"created": corpus.get("created"), "top": corpus.get("top"),
                          "skipped": len(corpus.get("skipped", []))},
        "tools": {}, "files": {}, "notes": notes,
    }
    per_file: dict[str, dict[str, Any]] = {
        str(s.path): {"file": s.path.name, "name": s.name, "label": s.label, "project": s.project, "kind": s.kind,
                      "size": s.size, **({"cluster": s.cluster} if s.cluster else {})} for s in samples}

    scanner_py = ROOT / "src" / "bastion" / "scanning" / "scanner.py"
    run_b = not args.skip_bastion
    if run_b and not scanner_py.is_file():
        notes.append("Bastion skipped: src/bastion/scanning/scanner.py does not exist yet")
        run_b = False

    gd = None
    if args.merge_guarddog:
        old = json.loads(args.merge_guarddog.read_text())
        if "GuardDog" in old.get("tools", {}):
            report["tools"]["GuardDog"] = old["tools"]["GuardDog"]
            for k, v in old.get("files", {}).items():
                if k in per_file and "guarddog" in v:
                    per_file[k]["guarddog"] = v["guarddog"]
            notes.append(f"GuardDog figures taken from {args.merge_guarddog} ({old.get('date')}), not measured in this run")
    elif not args.skip_guarddog:
        exe = ensure_guarddog(args.guarddog_venv)
        gd = (exe, guarddog_env(args.guarddog_venv))
    bastion = None
    b_startup: list[float] = []
    if run_b:
        b_startup = bastion_startup_seconds()
        bastion = BastionRunner()
    g_startup: list[float] = guarddog_startup_seconds(*gd, runs=3) if gd else []

    # One file at a time; with both tools, each file is scanned by both in turn (alternating which
    # goes first), so the shared machine's noise falls on both alike.
    b_out: dict[Path, Outcome] = {}
    g_out: dict[Path, Outcome] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=False) as progress, \
            tempfile.TemporaryDirectory(prefix="bastion-gd-cwd-") as cwd:
        task = progress.add_task(" + ".join(n for n, on in (("Bastion", bastion), ("GuardDog", gd)) if on) or "nothing",
                                 total=len(samples))
        for i, s in enumerate(samples):
            steps = []
            if bastion:
                steps.append(lambda s=s: b_out.__setitem__(s.path, bastion.scan(s)))
            if gd:
                steps.append(lambda s=s: g_out.__setitem__(s.path, guarddog_scan(s, *gd, cwd)))
                if i % 20 == 10:  # no-op start-up, measured among the scans (same noise)
                    g_startup.extend(guarddog_startup_seconds(*gd, runs=1))
            for step in (steps if i % 2 == 0 else steps[::-1]):
                step()
            progress.advance(task)

    if bastion:
        b_sum = summarize("Bastion", b_out, mal, ben, ("non-allow", "reject"))
        b_sum.update(init_seconds_in_process=round(bastion.init_seconds, 3), rules_version=bastion.rules_version,
                     startup_seconds=statistics.median(b_startup), startup_runs=b_startup)
        report["tools"]["Bastion"] = b_sum
        for s in samples:
            o = b_out[s.path]
            per_file[str(s.path)]["bastion"] = {"seconds": round(o.seconds, 4), "verdict": o.label, "score": o.score,
                                                "rules": o.rules, "findings": o.detail, "error": o.error}
        report["bastion_flagged_benign"] = [
            {"file": s.path.name, "project": s.project, "verdict": b_out[s.path].label, "score": b_out[s.path].score,
             "rules": b_out[s.path].rules, "findings": b_out[s.path].detail}
            for s in ben if b_out[s.path].flagged.get("non-allow")]
        report["bastion_slowest"] = [
            {"file": s.path.name, "label": s.label, "size": s.size, "seconds": round(b_out[s.path].seconds, 3)}
            for s in sorted(samples, key=lambda s: -b_out[s.path].seconds)[:10]]
        report["bastion_missed_malware"] = [
            {"file": s.path.name, "cluster": s.cluster, "score": b_out[s.path].score, "rules": b_out[s.path].rules,
             "error": b_out[s.path].error}
            for s in mal if not b_out[s.path].flagged.get("non-allow")]
    if gd:
        g_sum = summarize("GuardDog", g_out, mal, ben, GD_THRESHOLDS, statistics.median(g_startup))
        g_sum.update(version=GUARDDOG_VERSION, startup_runs=g_startup)
        g_sum["benign_rule_counts"] = dict(Counter(r for s in ben for r in g_out[s.path].rules).most_common())
        report["tools"]["GuardDog"] = g_sum
        for s in samples:
            o = g_out[s.path]
            per_file[str(s.path)]["guarddog"] = {"seconds": round(o.seconds, 3), "score": o.score, "label": o.label,
                                                 "rules": o.rules, "issues": o.detail[0]["issues"] if o.detail else None,
                                                 "error": o.error}
        report["guarddog_flagged_benign"] = {
            th: [{"file": s.path.name, "project": s.project, "score": g_out[s.path].score, "label": g_out[s.path].label,
                  "rules": g_out[s.path].rules} for s in ben if g_out[s.path].flagged.get(th)]
            for th in ("any risk", "suspicious+", "high_risk")}

    ratios: list[str] = []
    b, g = report["tools"].get("Bastion"), report["tools"].get("GuardDog")
    if b and g and b["seconds_per_file"]["median"] and g["seconds_per_file"]["median"]:
        r = {
            "median_per_file": g["seconds_per_file"]["median"] / b["seconds_per_file"]["median"],
            "mean_per_file": g["seconds_per_file"]["mean"] / b["seconds_per_file"]["mean"],
            "median_per_file_minus_startup": g["seconds_per_file_minus_startup"]["median"] / b["seconds_per_file"]["median"],
            "mean_per_file_minus_startup": g["seconds_per_file_minus_startup"]["mean"] / b["seconds_per_file"]["mean"],
            "cli_to_cli_median": (g["seconds_per_file"]["median"]) / (b["seconds_per_file"]["median"] + b["startup_seconds"]),
        }
        report["speed_ratio_guarddog_over_bastion"] = r
        ratios.append(
            f"Speed: Bastion is {r['median_per_file']:.0f}x faster than GuardDog per file (median; mean {r['mean_per_file']:.0f}x); "
            f"{r['median_per_file_minus_startup']:.0f}x with GuardDog's process start-up subtracted "
            f"(mean {r['mean_per_file_minus_startup']:.0f}x); one CLI process per file on both sides "
            f"(Bastion + its {b['startup_seconds']:.2f} s start-up): {r['cli_to_cli_median']:.1f}x")
    report["ratios_text"] = ratios
    if mal:
        report["names"] = name_check(mal)
    report["files"] = per_file

    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(report, indent=1, default=str))
    print_report(report)
    err.print(f"results: {args.json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
