"""Bastion's benchmark against pypiserver and devpi-server: uploads, simple pages, downloads, scale.

    .venv/bin/python benchmarks/run.py            # full comparison (about 6 minutes)
    .venv/bin/python benchmarks/run.py --quick    # a smoke run (about 2 minutes)
    .venv/bin/python benchmarks/run.py --scale    # full comparison plus the 10,000-project catalog

See benchmarks/README.md for what is measured and how to read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import httpx  # noqa: E402

import dists  # noqa: E402
import load  # noqa: E402
import servers  # noqa: E402

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
ENDPOINTS = [
    # key, label, Accept header
    ("index", "GET /simple/", {"Accept": "text/html"}),
    ("project_html", "GET /simple/<project>/ HTML", {"Accept": "text/html"}),
    ("project_json", "GET /simple/<project>/ JSON", {"Accept": SIMPLE_JSON}),
    ("download", "GET 1 MB wheel", {}),
]
SIMPLE_ENDPOINTS = ("index", "project_html", "project_json")
TARGET_UPLOAD_RATIO = 2.0  # issue 13: Bastion's seconds per file at most twice pypiserver's
TARGET_DEVPI_RATIO = 10.0
TARGET_SCALE_RATIO = 0.8
TARGET_RSS_MB = 250.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.quick
        self.projects = args.projects or (5 if self.quick else 20)
        self.versions = 3
        self.duration = args.duration or (2.0 if self.quick else 5.0)
        self.runs = args.runs or (1 if self.quick else 3)
        self.warmup = 0.5 if self.quick else 1.0
        self.connections = args.connections
        self.threads = args.threads
        self.use_wrk = load.wrk_available() and not args.no_wrk
        self.workdir = Path(tempfile.mkdtemp(prefix="bastion-bench-"))
        self.targets: list[servers.Target] = []
        self.results: dict = {
            "meta": {
                "started": datetime.now(UTC).isoformat(timespec="seconds"),
                "mode": ("quick" if self.quick else "full") + (" + scale" if args.scale else ""),
                "host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
                "load_tool": "wrk" if self.use_wrk else "python-asyncio",
                "wrk": _wrk_version() if self.use_wrk else None,
                "connections": self.connections, "threads": self.threads if self.use_wrk else None,
                "duration_s": self.duration, "runs": self.runs, "warmup_s": self.warmup,
                "statistic": "median over runs of each figure (req/s, p50, p99) separately",
                "small_index": {"projects": self.projects, "versions": self.versions,
                                "files": self.projects * self.versions * 2 + 1},
            },
            "servers": {}, "upload": {}, "reads": {}, "scale": None, "targets": [],
        }

    # -- set-up ------------------------------------------------------------------------------
    def build_files(self) -> None:
        rounds = dists.small_index(self.projects, self.versions)
        self.rounds: list[list[Path]] = []
        for r, group in enumerate(rounds):
            directory = self.workdir / "dists" / f"round{r}"
            directory.mkdir(parents=True)
            self.rounds.append([d.write(directory) for d in group])
        big = dists.big_wheel()
        self.big = big
        self.big_path = big.write(self.workdir / "dists")
        self.project_names = [f"bench-pkg-{i:02d}" for i in range(self.projects)]
        sizes = [p.stat().st_size for group in self.rounds for p in group]
        log(f"built {len(sizes)} files ({min(sizes)}-{max(sizes)} bytes) and {big.filename} "
            f"({len(big.data):,} bytes) in {self.workdir / 'dists'}")

    def start_servers(self) -> None:
        venv_root = Path(self.args.venv_dir) if self.args.venv_dir else self.workdir / "venvs"
        venv_root.mkdir(parents=True, exist_ok=True)
        bastion_dir = self.workdir / "bastion-small"
        if not self.args.skip_peers:
            log(f"creating peer venvs in {venv_root} (pip install {' '.join(servers.PYPISERVER_REQUIREMENTS)}; "
                f"{' '.join(servers.DEVPI_REQUIREMENTS)})")
            with ThreadPoolExecutor(2) as pool:
                jobs = [pool.submit(servers.make_venv, venv_root / "pypiserver", servers.PYPISERVER_REQUIREMENTS,
                                    self.workdir / "pip-pypiserver.log"),
                        pool.submit(servers.make_venv, venv_root / "devpi", servers.DEVPI_REQUIREMENTS,
                                    self.workdir / "pip-devpi.log")]
                pypi_venv, devpi_venv = (job.result() for job in jobs)
        log("starting bastion" + ("" if self.args.skip_peers else ", pypiserver and devpi-server"))
        self.targets.append(servers.start_bastion(self.workdir, bastion_dir))
        if not self.args.skip_peers:
            self.targets.append(servers.start_pypiserver(self.workdir, pypi_venv))
            self.targets.append(servers.start_devpi(self.workdir, devpi_venv))
        for t in self.targets:
            self.results["servers"][t.name] = {"version": t.version, "port": t.port, "notes": t.notes}
            log(f"  {t.name} {t.version} on {t.base_url}{t.simple_root}")

    # -- uploads -----------------------------------------------------------------------------
    def upload(self) -> None:
        per_round = len(self.rounds[0])
        log(f"uploading {self.versions} rounds of {per_round} files to each server "
            f"(one twine invocation per round and server)")
        times: dict[str, list[float]] = {t.name: [] for t in self.targets}
        cpu: dict[str, list[float]] = {t.name: [] for t in self.targets}
        for r, files in enumerate(self.rounds):
            order = self.targets[r % len(self.targets):] + self.targets[:r % len(self.targets)]
            for target in order:
                before = target.process.cpu_seconds()
                seconds = servers.twine_upload(target, files, self.workdir)
                # The server's CPU over the round, background threads included (Bastion's TUF
                # signing and mail run beside the requests): steadier than the wall time.
                used = target.process.cpu_seconds() - before
                times[target.name].append(seconds)
                cpu[target.name].append(used)
                log(f"  round {r + 1}: {target.name:13s} {seconds:7.3f} s = {seconds / len(files) * 1000:7.1f} ms/file, "
                    f"server CPU {used / len(files) * 1000:6.1f} ms/file")
        for target in self.targets:
            servers.twine_upload(target, [self.big_path], self.workdir)  # untimed: the download test's file
            per_file = [s / per_round for s in times[target.name]]
            self.results["upload"][target.name] = {
                "files_per_round": per_round, "rounds_s": times[target.name],
                "per_file_s": statistics.median(per_file),
                "server_cpu_per_file_s": statistics.median(c / per_round for c in cpu[target.name]),
            }

    def verify(self, target: servers.Target, projects: list[str], files_per_project: int) -> dict:
        """Check every page answers correctly before loading it; returns the read endpoints' paths."""
        with httpx.Client(base_url=target.base_url, timeout=60, follow_redirects=False) as client:
            index = client.get(target.simple_root, headers={"Accept": "text/html"})
            index.raise_for_status()
            missing = [p for p in projects + [dists.BIG_PROJECT] if f"{p}/" not in index.text and f">{p}<" not in index.text]
            if missing:
                raise RuntimeError(f"{target.name}: simple index lacks {missing[:5]}")
            page = client.get(target.project_path(projects[0]), headers={"Accept": "text/html"})
            page.raise_for_status()
            links = page.text.count("<a ")
            if links != files_per_project:
                raise RuntimeError(f"{target.name}: {projects[0]} lists {links} files, expected {files_per_project}")
            json_page = client.get(target.project_path(projects[0]), headers={"Accept": SIMPLE_JSON})
            json_ok = json_page.status_code == 200 and json_page.headers.get("content-type", "").startswith(SIMPLE_JSON)
            if json_ok and len(json_page.json().get("files", [])) != files_per_project:
                raise RuntimeError(f"{target.name}: the JSON page of {projects[0]} has the wrong files")
            download = target.file_path(dists.BIG_PROJECT, self.big.filename)
            body = client.get(download)
            body.raise_for_status()
            if body.content != self.big.data:
                raise RuntimeError(f"{target.name}: the downloaded {self.big.filename} differs from the upload")
        return {
            "index": [target.simple_root],
            "project_html": [target.project_path(p) for p in projects],
            "project_json": [target.project_path(p) for p in projects] if json_ok else None,
            "download": [download],
        }

    # -- reads -------------------------------------------------------------------------------
    def measure(self, target: servers.Target, paths: list[str], headers: dict[str, str], duration: float) -> load.LoadResult:
        cpu_before = target.process.cpu_seconds()
        result = load.run_load(target.base_url, paths, headers, duration=duration, connections=self.connections,
                               threads=self.threads, use_wrk=self.use_wrk, workdir=self.workdir)
        if not target.process.alive():
            raise RuntimeError(f"{target.name} died under load:\n{target.process.log_tail()}")
        if result.requests:
            result.server_cpu_us = (target.process.cpu_seconds() - cpu_before) / result.requests * 1e6
        return result

    def read_matrix(self, plan: list[tuple[str, servers.Target, dict]]) -> dict[str, dict[str, dict]]:
        """Warm every (label, server) once, then ``runs`` rounds over all of them, interleaved so that
        the machine's noise spreads over every server alike."""
        out: dict[str, dict[str, dict]] = {}
        for label, target, paths in plan:
            out[label] = {}
            for key, _, headers in ENDPOINTS:
                if paths[key] is None:
                    out[label][key] = None
                    continue
                self.measure(target, paths[key], headers, self.warmup)
                out[label][key] = {"runs": []}
        for run in range(self.runs):
            for key, title, headers in ENDPOINTS:
                for label, target, paths in plan:
                    if paths[key] is None:
                        continue
                    result = self.measure(target, paths[key], headers, self.duration)
                    out[label][key]["runs"].append(result.as_dict())
                    flag = ""
                    if result.errors or result.bad_status:
                        flag = f"  ({result.errors} socket errors, {result.bad_status} bad statuses)"
                    log(f"  run {run + 1}/{self.runs} {label:13s} {title:30s} {result.rps:9.1f} req/s  "
                        f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  "
                        f"server CPU {result.server_cpu_us:7.1f} us/req{flag}")
        for per_server in out.values():
            for entry in per_server.values():
                if entry is None:
                    continue
                runs = entry["runs"]
                entry["rps"] = statistics.median(r["rps"] for r in runs)
                entry["p50_ms"] = statistics.median(r["p50_ms"] for r in runs)
                entry["p99_ms"] = statistics.median(r["p99_ms"] for r in runs)
                entry["server_cpu_us"] = statistics.median(r["server_cpu_us"] for r in runs)
                entry["errors"] = sum(r["errors"] + r["bad_status"] for r in runs)
        return out

    def reads(self) -> None:
        log(f"verifying pages, then measuring reads with {self.results['meta']['load_tool']} "
            f"({self.connections} connections, {self.duration:g} s x {self.runs} runs, {self.warmup:g} s warm-up)")
        plan = [(t.name, t, self.verify(t, self.project_names, self.versions * 2)) for t in self.targets]
        self.read_paths = {label: paths for label, _, paths in plan}
        self.results["reads"] = self.read_matrix(plan)
        for t in self.targets:
            self.results["servers"][t.name].update(t.process.memory_mb())

    # -- scale -------------------------------------------------------------------------------
    def scale(self) -> None:
        import catalog

        count = self.args.scale_projects or (1000 if self.quick else 10_000)
        per_project = self.args.files_per_project
        data_dir = self.workdir / "bastion-scale"
        for t in self.targets[1:]:
            t.stop()  # the peers are done: free their CPU and memory
        log(f"loading a catalog of {count:,} projects x {per_project} files into {data_dir} (service layer, in-process)")
        big_group = [dists.big_wheel()]
        info = catalog.load_catalog(data_dir, projects=count, files_per_project=per_project, extra=[big_group],
                                    user=(servers.USER, servers.EMAIL, servers.PASSWORD),
                                    show_progress=sys.stdout.isatty() or self.args.progress)
        log(f"  {len(info.projects):,} projects, {info.files:,} files, {info.bytes / 1e6:.1f} MB of blobs, "
            f"loaded in {info.seconds:.1f} s ({info.files / info.seconds:.0f} files/s)")
        db_mb = (data_dir / "bastion.db").stat().st_size / 1e6
        scale_target = servers.start_bastion(self.workdir, data_dir, name="bastion-scale", create_user=False)
        self.targets.append(scale_target)
        small = self.targets[0]
        scale_paths = self.verify(scale_target, info.projects, per_project)
        index_sizes = {
            label: len(httpx.get(t.base_url + t.simple_root, headers={"Accept": "text/html"}).content)
            for label, t in (("small", small), ("scale", scale_target))
        }
        # Cold: the server has just started and has not served any page yet; each first request
        # of a page misses the in-process cache and reads it from the database.
        log(f"cold first pass on the {count:,}-project catalog (fresh process, empty page cache)")
        cold: dict[str, dict] = {}
        for key, title, headers in ENDPOINTS:
            result = self.measure(scale_target, scale_paths[key], headers, self.duration)
            cold[key] = result.as_dict()
            log(f"  cold {title:30s} {result.rps:9.1f} req/s  p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  "
                f"server CPU {result.server_cpu_us:7.1f} us/req")
        # Then every page once, so that the measured runs see the steady state (all pages fit the
        # default 64 MiB page cache), as on the small index.
        swept = {}
        for key in ("project_html", "project_json"):
            headers = next(h for k, _, h in ENDPOINTS if k == key)
            swept[key] = load.sweep(scale_target.base_url, scale_paths[key], headers)
            log(f"  warmed {len(scale_paths[key]):,} {key} pages in {swept[key]['seconds']:.1f} s")
        # The small index is measured again, interleaved with the large one, so that the ratio
        # compares runs made under the same machine noise.
        plan = [("bastion-small", small, self.read_paths[small.name]), ("bastion-scale", scale_target, scale_paths)]
        log(f"measuring reads on the {count:,}-project catalog (warm) and, interleaved, on the small index")
        matrix = self.read_matrix(plan)
        memory = scale_target.process.memory_mb()
        ratios = {}
        for key, _, _ in ENDPOINTS:
            s, b = matrix["bastion-small"].get(key), matrix["bastion-scale"].get(key)
            ratios[key] = b["rps"] / s["rps"] if s and b and s["rps"] else None
        self.results["scale"] = {
            "projects": count, "files": info.files, "blob_bytes": info.bytes, "load_seconds": info.seconds,
            "database_mb": round(db_mb, 1), "simple_index_bytes": index_sizes,
            "reads": matrix, "ratio_scale_to_small": ratios, "server_memory": memory,
            "cold_first_pass": cold, "warm_sweep": swept,
            "small_server_memory": small.process.memory_mb(),
        }

    # -- report ------------------------------------------------------------------------------
    def targets_report(self) -> list[dict]:
        out = []
        reads = self.results["reads"]
        bastion = reads.get("bastion", {})
        devpi = reads.get("devpi-server")
        if devpi:
            parts = {k: bastion[k]["rps"] / devpi[k]["rps"] for k in SIMPLE_ENDPOINTS if bastion.get(k) and devpi.get(k)}
            worst = min(parts.values())
            out.append({"target": f"simple pages >= {TARGET_DEVPI_RATIO:g}x devpi-server req/s", "pass": worst >= TARGET_DEVPI_RATIO,
                        "detail": ", ".join(f"{_label(k)} {v:.1f}x" for k, v in parts.items()) + f" (lowest {worst:.1f}x)",
                        "values": parts})
        else:
            out.append({"target": f"simple pages >= {TARGET_DEVPI_RATIO:g}x devpi-server req/s", "pass": None,
                        "detail": "not run (--skip-peers)"})
        up = self.results["upload"]
        if "pypiserver" in up:
            b, p = up["bastion"]["per_file_s"], up["pypiserver"]["per_file_s"]
            out.append({"target": f"upload per file at most {TARGET_UPLOAD_RATIO:g}x pypiserver's",
                        "pass": b <= TARGET_UPLOAD_RATIO * p,
                        "detail": f"Bastion {b * 1000:.1f} ms/file, pypiserver {p * 1000:.1f} ms/file "
                                  f"(Bastion s / pypiserver s = {b / p:.2f})",
                        "values": {"bastion_s": b, "pypiserver_s": p}})
            out.append({"target": "upload per file no slower than pypiserver's (stretch)", "pass": b <= p,
                        "detail": f"Bastion {b * 1000:.1f} ms/file, pypiserver {p * 1000:.1f} ms/file "
                                  f"(pypiserver s / Bastion s = {p / b:.2f})",
                        "values": {"bastion_s": b, "pypiserver_s": p}})
        else:
            out.append({"target": f"upload per file at most {TARGET_UPLOAD_RATIO:g}x pypiserver's", "pass": None,
                        "detail": "not run (--skip-peers)"})
        scale = self.results["scale"]
        if scale:
            ratios = scale["ratio_scale_to_small"]
            judged = {k: v for k, v in ratios.items() if k != "index" and v is not None}
            worst = min(judged.values())
            sizes = scale["simple_index_bytes"]
            detail = ", ".join(f"{_label(k)} {v:.2f}" for k, v in judged.items()) + f" (lowest {worst:.2f})"
            if ratios.get("index") is not None:
                detail += (f"; not judged: GET /simple/ {ratios['index']:.3f} (its page grows with the catalog: "
                           f"{sizes['scale']:,} vs {sizes['small']:,} bytes)")
            out.append({"target": f"read speed at {scale['projects']:,} projects within 20% of the small index",
                        "pass": worst >= TARGET_SCALE_RATIO, "detail": detail, "values": ratios})
            rss = scale["server_memory"]["peak_rss_mb"]
            out.append({"target": f"peak RSS under {TARGET_RSS_MB:g} MB", "pass": rss < TARGET_RSS_MB,
                        "detail": f"{rss:.1f} MB peak (VmHWM summed over {scale['server_memory']['processes']} "
                                  f"process(es)) serving {scale['projects']:,} projects",
                        "values": {"peak_rss_mb": rss}})
        else:
            for name in ("read speed at 10,000 projects within 20% of the small index", f"peak RSS under {TARGET_RSS_MB:g} MB"):
                out.append({"target": name, "pass": None, "detail": "not run (use --scale)"})
        return out

    def report(self) -> str:
        lines: list[str] = []
        meta = self.results["meta"]
        lines.append(f"Bastion benchmark ({meta['mode']}; {meta['load_tool']}, {meta['connections']} connections, "
                     f"{meta['duration_s']:g} s x {meta['runs']} runs, median; {meta['cpus']} CPUs)")
        lines.append("servers: " + "; ".join(f"{n} {s['version']}" for n, s in self.results["servers"].items()
                                             if n != "bastion-scale"))
        lines.append("")
        header = (f"{'server':14s} {'endpoint':30s} {'req/s':>10s} {'p50 ms':>8s} {'p99 ms':>8s} {'Bastion ÷ peer':>15s}"
                  f" {'CPU µs/req':>11s}")
        lines += [header, "-" * len(header)]
        reads = self.results["reads"]
        bastion = reads.get("bastion", {})
        for key, title, _ in ENDPOINTS:
            for name, per_server in reads.items():
                entry = per_server.get(key)
                if entry is None:
                    lines.append(f"{name:14s} {title:30s} {'n/a':>10s} {'n/a':>8s} {'n/a':>8s} {'n/a':>15s} {'n/a':>11s}")
                    continue
                ratio = "-"
                if name != "bastion" and bastion.get(key):
                    ratio = f"{bastion[key]['rps'] / entry['rps']:.1f}x"
                lines.append(f"{name:14s} {title:30s} {entry['rps']:10.1f} {entry['p50_ms']:8.2f} "
                             f"{entry['p99_ms']:8.2f} {ratio:>15s} {entry['server_cpu_us']:11.1f}")
        lines.append("")
        up = self.results["upload"]
        header = (f"{'server':14s} {'twine upload':30s} {'s/file':>10s} {'files/s':>8s} {'CPU ms/file':>12s} "
                  f"{'peer s ÷ Bastion s':>19s}")
        lines += [header, "-" * len(header)]
        for name, entry in up.items():
            ratio = "-" if name == "bastion" else f"{entry['per_file_s'] / up['bastion']['per_file_s']:.2f}x"
            what = f"{self.results['meta']['small_index']['versions']} x {entry['files_per_round']} files, 1 call each"
            cpu_ms = entry.get("server_cpu_per_file_s")
            shown = f"{cpu_ms * 1000:12.1f}" if cpu_ms is not None else f"{'n/a':>12s}"
            lines.append(f"{name:14s} {what:30s} {entry['per_file_s']:10.4f} {1 / entry['per_file_s']:8.1f} "
                         f"{shown} {ratio:>19s}")
        scale = self.results["scale"]
        if scale:
            lines.append("")
            lines.append(f"scale: {scale['projects']:,} projects, {scale['files']:,} files, "
                         f"{scale['database_mb']:.0f} MB database, loaded in {scale['load_seconds']:.0f} s; "
                         f"small index measured alongside")
            header = (f"{'endpoint':37s} {'small req/s':>11s} {'scale req/s':>11s} {'p50 ms':>8s} {'p99 ms':>8s} "
                      f"{'scale ÷ small':>13s} {'CPU µs/req small/scale':>22s}")
            lines += [header, "-" * len(header)]
            for key, title, _ in ENDPOINTS:
                s, b = scale["reads"]["bastion-small"].get(key), scale["reads"]["bastion-scale"].get(key)
                if not s or not b:
                    continue
                lines.append(f"{title:37s} {s['rps']:11.1f} {b['rps']:11.1f} {b['p50_ms']:8.2f} {b['p99_ms']:8.2f} "
                             f"{scale['ratio_scale_to_small'][key]:13.3f} "
                             f"{s['server_cpu_us']:10.1f} / {b['server_cpu_us']:.1f}")
            for key, title, _ in ENDPOINTS:
                c, s = scale["cold_first_pass"].get(key), scale["reads"]["bastion-small"].get(key)
                if c and s and key in ("project_html", "project_json"):
                    lines.append(f"{(title + ' (cold)'):37s} {s['rps']:11.1f} {c['rps']:11.1f} {c['p50_ms']:8.2f} "
                                 f"{c['p99_ms']:8.2f} {c['rps'] / s['rps']:13.3f} "
                                 f"{s['server_cpu_us']:10.1f} / {c['server_cpu_us']:.1f}")
            lines.append("(cold) = the first run on the freshly started server, page cache empty (not judged); the other "
                         "scale rows run after every page was requested once")
            mem = scale["server_memory"]
            lines.append(f"bastion-scale memory: peak RSS {mem['peak_rss_mb']:.1f} MB, current {mem['rss_mb']:.1f} MB "
                         f"({mem['processes']} process(es)); small index server peak "
                         f"{scale['small_server_memory']['peak_rss_mb']:.1f} MB")
        lines.append("")
        lines.append("targets:")
        for t in self.results["targets"]:
            mark = "PASS" if t["pass"] else ("----" if t["pass"] is None else "FAIL")
            lines.append(f"  [{mark}] {t['target']}: {t['detail']}")
        errors = [(n, k) for n, per in reads.items() for k, e in per.items() if e and e["errors"]]
        if errors:
            lines.append("")
            lines.append("warning: errors or non-2xx answers during " + ", ".join(f"{n} {k}" for n, k in errors))
        return "\n".join(lines)

    def stop(self) -> None:
        for t in self.targets:
            try:
                t.stop()
            except Exception as exc:  # keep stopping the others
                print(f"could not stop {t.name}: {exc}", file=sys.stderr)

    def run(self) -> int:
        try:
            self.build_files()
            self.start_servers()
            self.upload()
            self.reads()
            if self.args.scale:
                self.scale()
            self.results["targets"] = self.targets_report()
        except BaseException:
            print(f"benchmark stopped; work dir (server logs, data dirs) kept: {self.workdir}", file=sys.stderr)
            raise
        finally:
            self.stop()
        self.results["meta"]["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        table = self.report()
        self.results["table"] = table.splitlines()
        output = Path(self.args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(self.results, indent=2) + "\n")
        print()
        print(table)
        print(f"\nresults: {output}")
        if not self.args.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            print(f"work dir kept: {self.workdir}")
        return 0


def _label(key: str) -> str:
    return {"index": "/simple/", "project_html": "project HTML", "project_json": "project JSON",
            "download": "1 MB download"}[key]


def _wrk_version() -> str:
    result = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    return (result.stdout + result.stderr).splitlines()[0].strip() if (result.stdout + result.stderr) else "?"


def main() -> int:
    parser = argparse.ArgumentParser(description="Benchmark Bastion against pypiserver and devpi-server.")
    parser.add_argument("--quick", action="store_true", help="5 projects, 1 run of 2 s per measurement")
    parser.add_argument("--scale", action="store_true",
                        help="also load a 10,000-project / 50,000-file catalog and measure reads and memory on it")
    parser.add_argument("--scale-projects", type=int, default=None, help="catalog size (default 10,000; 1,000 with --quick)")
    parser.add_argument("--files-per-project", type=int, default=5, help="catalog files per project (default 5)")
    parser.add_argument("--projects", type=int, default=None, help="projects in the small index (default 20; 5 with --quick)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per measurement (default 5; 2 with --quick)")
    parser.add_argument("--runs", type=int, default=None, help="runs per measurement, median reported (default 3; 1 with --quick)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent keep-alive connections (default 16)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--no-wrk", action="store_true", help="use the Python load generator even if wrk is installed")
    parser.add_argument("--skip-peers", action="store_true", help="measure Bastion only (no pypiserver/devpi-server)")
    parser.add_argument("--venv-dir", default=None, help="keep and reuse the peers' venvs here (default: a temp dir)")
    parser.add_argument("--output", default=str(HERE / "results" / "latest.json"), help="where to write the JSON results")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (data dirs, logs, files)")
    parser.add_argument("--progress", action="store_true", help="show the catalog progress bar even when not on a terminal")
    parser.add_argument("--report-only", metavar="JSON", default=None,
                        help="print the table of an earlier run's results file and exit (runs nothing)")
    args = parser.parse_args()
    if args.report_only:
        bench = Bench.__new__(Bench)
        bench.results = json.loads(Path(args.report_only).read_text())
        print(bench.report())
        return 0
    # SIGTERM (e.g. a timeout) unwinds like Ctrl-C, so that every server started here is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return Bench(args).run()


if __name__ == "__main__":
    sys.exit(main())
