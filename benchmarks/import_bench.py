"""Time ``bastion import`` end to end on a generated index, and what the peers take for the same files.

    .venv/bin/python benchmarks/import_bench.py                    # 2,000 files / 200 projects, Bastion and peers
    .venv/bin/python benchmarks/import_bench.py --skip-peers       # Bastion only
    .venv/bin/python benchmarks/import_bench.py --projects 50 --workers 1

Data: ``benchmarks/dists.py``'s small valid files (a wheel and an sdist per version, 0.5-1.2 KB),
byte-for-byte reproducible: ``--projects`` projects (``imp-bench-000``...) x ``--files`` files,
written flat into one directory (pypiserver's layout).

Bastion: a fresh data dir (SQLite, local blobs), a user, and the TUF repository ``bastion serve``
makes on first start (development keys), so that the import signs what it stores; then
``bastion import DIR --owner bench --workers N`` is timed as a subprocess, from start to exit:
interpreter start-up, the worker processes, every check, the scan, the stores, the renders, the
TUF snapshot. A second run on the same tree (everything "already present") is timed too.

pypiserver 2.4.2 has no import: its "import" is copying the files into its package directory
(timed), after which it serves them (its first /simple/ listing is timed too; no check, no scan).
devpi-server 6.20.3 imports with ``devpi-import`` from a ``devpi-export`` of a server that holds
the same files (uploaded with twine, one invocation); ``devpi-import`` into a fresh server dir is
timed (it checks the export's hashes; no metadata checks, no scan). Peers run from their own venvs
(``benchmarks/servers.py``), kept in ``--venv-dir`` if given.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import dists, servers  # noqa: E402

BASTION = str(Path(sys.executable).parent / "bastion")
PASSWORD = "bench-password-7f3a9c1e"


def generate(directory: Path, projects: int, files: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(projects):
        for dist in dists.project_files(f"imp-bench-{i:03d}", files):
            written.append(dist.write(directory))
    return written


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}


def time_bastion(work: Path, source: Path, workers: int) -> dict[str, object]:
    data = work / "bastion-data"
    subprocess.run([BASTION, "user", "create", "bench", "--email", "bench@example.com", "--data-dir", str(data)],
                   input=PASSWORD + "\n", text=True, check=True, capture_output=True, env=_env())
    subprocess.run([sys.executable, "-c", (
        "import sys\nfrom bastion.services import Bastion\nfrom bastion.settings import load_settings\n"
        "from bastion.tuf.service import prepare\n"
        "b = Bastion(load_settings(sys.argv[1])); prepare(b, announce=False); b.close()"
    ), str(data)], check=True, env=_env())
    runs = {}
    for label in ("first", "again"):
        report = work / f"bastion-{label}.json"
        started = time.perf_counter()
        result = subprocess.run([BASTION, "import", str(source), "--owner", "bench", "--workers", str(workers),
                                 "--json", str(report), "--data-dir", str(data)],
                                capture_output=True, text=True, env=_env())
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"bastion import failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        runs[label] = {"seconds": seconds, "report": json.loads(report.read_text())}
    first = runs["first"]["report"]
    assert isinstance(first, dict)
    imported = int(first["accepted"]) + int(first["held_for_review"])
    return {"files": imported, "seconds": runs["first"]["seconds"],
            "files_per_second": imported / float(runs["first"]["seconds"]),  # type: ignore[arg-type]
            "inside_seconds": first["seconds"], "main_cpu_seconds": first["cpu_seconds"], "tuf": first["tuf"],
            "rerun_seconds": runs["again"]["seconds"],
            "rerun_present": runs["again"]["report"]["skipped_already_present"]}  # type: ignore[index]


def time_pypiserver(work: Path, files: list[Path], venv: Path, projects: int) -> dict[str, object]:
    packages = work / "pypiserver" / "pypiserver-packages"
    (work / "pypiserver").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    packages.mkdir(parents=True, exist_ok=True)
    for path in files:
        shutil.copy2(path, packages / path.name)
    copied = time.perf_counter() - started
    target = servers.start_pypiserver(work / "pypiserver", venv)
    try:
        listed = time.perf_counter()
        page = httpx.get(target.base_url + "/simple/", timeout=60, trust_env=False).text
        first_listing = time.perf_counter() - listed
        assert page.count("<a ") >= projects, "pypiserver does not list every project"
    finally:
        target.stop()
    return {"files": len(files), "copy_seconds": copied, "files_per_second": len(files) / copied,
            "first_simple_seconds": first_listing, "version": target.version}


def time_devpi(work: Path, files: list[Path], venv: Path) -> dict[str, object]:
    (work / "devpi").mkdir(parents=True, exist_ok=True)
    target = servers.start_devpi(work / "devpi", venv)
    try:
        upload_seconds = servers.twine_upload(target, files, work / "devpi")
    finally:
        target.stop()
    export = work / "devpi" / "export"
    subprocess.run([str(servers.bin_path(venv, "devpi-export")), "--serverdir", str(work / "devpi" / "devpi-server"),
                    str(export)], check=True, capture_output=True)
    started = time.perf_counter()
    subprocess.run([str(servers.bin_path(venv, "devpi-import")), "--serverdir", str(work / "devpi" / "imported"),
                    "--no-root-pypi", "--root-passwd", PASSWORD, str(export)], check=True, capture_output=True)
    seconds = time.perf_counter() - started
    return {"files": len(files), "seconds": seconds, "files_per_second": len(files) / seconds,
            "twine_upload_seconds": upload_seconds, "version": target.version}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=200)
    parser.add_argument("--files", type=int, default=10, help="files per project (default 10: 5 versions)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--venv-dir", type=Path, default=None, help="keep the peers' venvs here between runs")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    parser.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bastion-import-bench-"))
    try:
        files = generate(work / "source", args.projects, args.files)
        size = sum(p.stat().st_size for p in files)
        print(f"{len(files)} files, {args.projects} projects, {size / 1e6:.1f} MB; load average "
              f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
        results: dict[str, object] = {"files": len(files), "projects": args.projects, "workers": args.workers,
                                      "loadavg_before": os.getloadavg()[0]}
        bastion = time_bastion(work, work / "source", args.workers)
        results["bastion"] = bastion
        print(f"bastion import: {bastion['files']} files in {bastion['seconds']:.1f} s = "
              f"{bastion['files_per_second']:.1f} files/s end to end (every check, the scan, TUF: {bastion['tuf']}); "
              f"re-run (all present) {bastion['rerun_seconds']:.1f} s; the storing process used "
              f"{float(bastion['main_cpu_seconds']) * 1000 / max(int(bastion['files']), 1):.1f} ms CPU per file "  # type: ignore[arg-type]
              f"(worker processes not counted)", flush=True)
        if not args.skip_peers:
            venvs = args.venv_dir or work / "venvs"
            venvs.mkdir(parents=True, exist_ok=True)
            pypi_venv = servers.make_venv(venvs / "pypiserver", servers.PYPISERVER_REQUIREMENTS, work / "venv.log")
            devpi_venv = servers.make_venv(venvs / "devpi", servers.DEVPI_REQUIREMENTS, work / "venv.log")
            pypiserver = time_pypiserver(work, files, pypi_venv, args.projects)
            results["pypiserver"] = pypiserver
            print(f"pypiserver {pypiserver['version']}: copying the files into its directory took "
                  f"{pypiserver['copy_seconds']:.2f} s ({pypiserver['files_per_second']:.0f} files/s; no checks, no "
                  f"scan); its first /simple/ after start {pypiserver['first_simple_seconds']:.2f} s", flush=True)
            devpi = time_devpi(work, files, devpi_venv)
            results["devpi"] = devpi
            print(f"devpi-server {devpi['version']}: devpi-import of the export {devpi['seconds']:.1f} s = "
                  f"{devpi['files_per_second']:.1f} files/s (hash checks only); twine upload of the same files "
                  f"took {devpi['twine_upload_seconds']:.1f} s", flush=True)
        results["loadavg_after"] = os.getloadavg()[0]
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
        target = 100.0
        rate = float(bastion["files_per_second"])  # type: ignore[arg-type]
        print(f"target: >= {target:.0f} files/s: {'PASS' if rate >= target else 'FAIL'} ({rate:.1f})")
    finally:
        if args.keep:
            print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
