"""Upload acceptance on real files: which of PyPI's own files a fresh Bastion takes, through the
real clients, and why it refuses the others.

    .venv/bin/python benchmarks/accept.py --sample 500                  # seeded sample of the corpus
    .venv/bin/python benchmarks/accept.py                               # every file of the corpus (hours)
    .venv/bin/python benchmarks/accept.py --strictness lenient --sample 500 --json /tmp/lenient.json

The files are the corpus of ``benchmarks/corpus.py`` (``--dir``, env ``BASTION_CORPUS_DIR``,
default ``~/.cache/bastion-corpus``; run that first). For each client, a fresh ``bastion serve``
(started with ``benchmarks/servers.start_bastion``: SQLite, a temp data dir, a user and an API
token) receives every file:

* **twine 6.1.0**: ``twine upload --repository-url http://127.0.0.1:PORT/legacy/ -u __token__ -p
  TOKEN``. Files go in batches of one project's files (twine stops at the first error: the files
  before it were accepted, the one it names was refused, and the rest are sent again in a new
  batch; a batch that twine refuses before sending anything is sent again file by file so that
  every file gets its own answer);
* **uv publish**: ``uv publish --publish-url http://127.0.0.1:PORT/legacy/ --token TOKEN``, batched
  the same way (uv names the file it failed on; it skips files with a non-normalized name on its
  own, with a warning and exit code 0: counted as a client refusal).

Every file ends in one of: **accepted** (and visible on the simple page), **accepted, held for
review** (200, but the scanner quarantined it, so it is not on the simple page; ``bastion review
list`` gives the reason), **refused by the server** (HTTP status and the server's message, grouped
by the message with file names, versions, numbers and quoted values replaced by placeholders) or
**refused by the client** before sending (twine's ``InvalidDistribution`` and friends, uv's own
checks).

Server settings go into the temp data dir's ``bastion.toml`` (the settings file ``bastion serve``
reads, equivalent to the ``BASTION_*`` variables; ``start_bastion`` clears inherited ``BASTION_*``
variables): ``upload_strictness`` (``--strictness``, default ``pypi``), ``name_policy``
(``--name-policy``, default ``review``: a top project's name that resembles another popular one is
created and flagged instead of refused, since a fresh index would otherwise refuse real projects;
``block`` shows those refusals), and, for big wheels, ``max_file_size`` raised to 1 GiB and
``max_project_size`` to 100 GiB (the defaults are PyPI's 100 MiB and 10 GiB).

Then ``--install N`` (default 40) seeded releases with an accepted, visible wheel for this
interpreter are installed back from the twine server with ``pip install --no-deps --only-binary
:all: --target TMP --index-url http://127.0.0.1:PORT/simple/ NAME==VERSION`` and with ``uv pip
install`` (the same options), and the wheel each installer took and its ``.dist-info`` are checked.

Prints rich tables and writes every file's outcome to ``--json`` (default
``benchmarks/results/accept-latest.json``). Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import sys_tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

sys.path.insert(0, str(Path(__file__).resolve().parent))
import servers  # noqa: E402  (benchmarks/servers.py: start_bastion, Target)
from corpus import DEFAULT_DIR, load_manifest  # noqa: E402

BIN = Path(sys.executable).parent
TWINE = str(BIN / "twine")
UV = str(BIN / "uv")
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "accept-latest.json"
BATCH = 20
GIB = 1024 * 1024 * 1024

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass
class Outcome:
    filename: str
    client: str
    result: str
    """accepted | held | server_refused | client_refused | error"""
    status: int | None = None
    message: str = ""
    reason: str = ""
    """``message`` with names and values replaced by placeholders, for grouping."""


# ---------------------------------------------------------------------------------------------
# Grouping messages
# ---------------------------------------------------------------------------------------------

def normalize_reason(message: str, filename: str = "", project: str = "", version: str = "") -> str:
    """One rule's message whatever the file: names, versions, numbers and quoted values replaced."""
    text = " ".join(message.split())
    # (the version is not replaced by name: "1.1" would also hit "metadata version 1.1"; numbers become N)
    for value, mark in ((filename, "<file>"), (project, "<name>")):
        if value and len(value) > 2:
            text = text.replace(value, mark)
    text = re.sub(r"[^\s'\"`]+\.(whl|tar\.gz|zip)\b", "<file>", text)
    # quoted values; an apostrophe inside a word (form's) is not a quote
    text = re.sub(r"(?<![A-Za-z])'[^']*'(?![A-Za-z])", "'…'", text)
    text = re.sub(r'"[^"]*"', '"…"', text)
    text = re.sub(r"`[^`]*`", "`…`", text)
    text = re.sub(r"https?://\S+", "<url>", text)
    text = re.sub(r"\b\d+(\.\d+)*\b", "N", text)
    return text[:200]


# ---------------------------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------------------------

def client_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.upper().startswith(("PIP_", "UV_", "TWINE_", "BASTION_", "PYTHONPATH")) and "proxy" not in k.lower()}
    home.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", NO_COLOR="1",
               COLUMNS="10000", PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1",
               UV_NO_CONFIG="1", UV_PYTHON_DOWNLOADS="never", PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring")
    return env


def _run(argv: list[str], env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(argv, -1, str(exc.stdout or ""), f"timeout after {timeout} s")


class Uploader:
    """One client against one server: uploads a batch and says what happened to each file."""

    name = ""

    def __init__(self, target: servers.Target, home: Path) -> None:
        self.target = target
        self.env = client_env(home)
        self.config = home / "empty.pypirc"
        self.config.touch()

    def command(self, files: list[Path]) -> list[str]:
        raise NotImplementedError

    def upload(self, files: list[Path]) -> list[Outcome]:
        """Outcomes of ``files`` in order, re-sending what a stopped batch did not reach."""
        outcomes: dict[str, Outcome] = {}
        todo = list(files)
        while todo:
            result = _run(self.command(todo), self.env)
            done = self.parse(todo, result)
            if not done and len(todo) > 1:
                # refused before anything was sent, without naming the file: one by one
                for path in todo:
                    single = self.parse([path], _run(self.command([path]), self.env))
                    outcomes.update({o.filename: o for o in single} or
                                    {path.name: Outcome(path.name, self.name, "error", message="no answer parsed")})
                break
            if not done:
                outcomes[todo[0].name] = Outcome(todo[0].name, self.name, "error",
                                                 message=_tail(result) or f"exit {result.returncode}")
                todo = todo[1:]
                continue
            outcomes.update({o.filename: o for o in done})
            todo = [p for p in todo if p.name not in outcomes]
        return [outcomes[p.name] for p in files]

    def parse(self, files: list[Path], result: subprocess.CompletedProcess[str]) -> list[Outcome]:
        raise NotImplementedError


def _tail(result: subprocess.CompletedProcess[str], n: int = 600) -> str:
    return ANSI.sub("", (result.stdout + "\n" + result.stderr)).strip()[-n:]


class Twine(Uploader):
    name = "twine"

    def command(self, files: list[Path]) -> list[str]:
        return [TWINE, "--no-color", "upload", "--non-interactive", "--disable-progress-bar",
                "--config-file", str(self.config), "--repository-url", self.target.upload_url,
                "-u", "__token__", "-p", self.target.password, *map(str, files)]

    def parse(self, files: list[Path], result: subprocess.CompletedProcess[str]) -> list[Outcome]:
        text = ANSI.sub("", result.stdout + "\n" + result.stderr)
        started = re.findall(r"^Uploading (\S+)\s*$", text, re.M)
        if result.returncode == 0:
            return [Outcome(p.name, self.name, "accepted") for p in files if p.name in started]
        out = [Outcome(name, self.name, "accepted") for name in started[:-1]]
        http = re.search(r"HTTPError: (\d{3}) ([^\n]*?) from (\S+)\s*\n(.*)", text, re.S)
        if http and started:
            message = " ".join(re.sub(r"^(ERROR|WARNING)\s+", "", http.group(4).strip(), flags=re.M).split())
            out.append(Outcome(started[-1], self.name, "server_refused", int(http.group(1)), message))
            return out
        error = re.search(r"ERROR\s+(\w+(?:Error|Distribution|Exception|Warning)?): (.*)", text, re.S)
        if not started:
            if len(files) == 1:
                message = " ".join(f"{error.group(1)}: {error.group(2)}".split()) if error else _tail(result)
                return [Outcome(files[0].name, self.name, "client_refused", None, message)]
            return []
        # it started sending a file and failed without an HTTP answer (a traceback: its last line)
        if error:
            message = " ".join(f"{error.group(1)}: {error.group(2)}".split())
        else:
            lines = [line for line in text.strip().splitlines() if line.strip()]
            message = lines[-1].strip() if lines else f"exit {result.returncode}"
        out.append(Outcome(started[-1], self.name, "error", None, message))
        return out


class UvPublish(Uploader):
    name = "uv"

    def command(self, files: list[Path]) -> list[str]:
        return [UV, "publish", "--no-config", "--publish-url", self.target.upload_url, "--token",
                self.target.password, *map(str, files)]

    def parse(self, files: list[Path], result: subprocess.CompletedProcess[str]) -> list[Outcome]:
        text = ANSI.sub("", result.stdout + "\n" + result.stderr)
        by_name = {p.name: p for p in files}
        out: dict[str, Outcome] = {}
        for name, why in re.findall(r"warning: `([^`]+)` (.*?), skipping", text):
            base = Path(name).name
            out[base] = Outcome(base, self.name, "client_refused", None, f"skipped: {why}")
        uploaded = [n for n in re.findall(r"^Uploading (\S+) \(", text, re.M)]
        failed = re.search(r"error: Failed to publish `([^`]+)`.*?\n(.*)", text, re.S)
        if result.returncode == 0:
            for name in uploaded:
                out.setdefault(name, Outcome(name, self.name, "accepted"))
            # uv prints nothing per file for a file it found on the index already; count it accepted
            return [out.get(p.name) or Outcome(p.name, self.name, "accepted") for p in files]
        if failed:
            bad = Path(failed.group(1)).name
            for name in uploaded:
                if name != bad:
                    out.setdefault(name, Outcome(name, self.name, "accepted"))
            detail = " ".join(failed.group(2).split())
            status = re.search(r"status code (\d{3})", detail)
            says = re.search(r"Server says: (.*)", detail)
            if status:
                message = says.group(1) if says else detail
                out[bad] = Outcome(bad, self.name, "server_refused", int(status.group(1)), message.strip())
            elif bad in uploaded:
                out[bad] = Outcome(bad, self.name, "error", None, detail[:600])
            else:
                out[bad] = Outcome(bad, self.name, "client_refused", None, detail[:600])
            return [o for o in out.values() if o.filename in by_name]
        if len(files) == 1:
            error = re.search(r"error: (.*)", text, re.S)
            message = " ".join(error.group(1).split())[:600] if error else _tail(result)
            return [Outcome(files[0].name, self.name, "client_refused", None, message)]
        return list(out.values())


# ---------------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------------

def start_server(workdir: Path, name: str, settings: dict[str, Any]) -> servers.Target:
    """A fresh ``bastion serve`` whose data dir holds ``bastion.toml`` with ``settings``."""
    data_dir = workdir / f"{name}-data"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    lines = [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    (data_dir / "bastion.toml").write_text("\n".join(lines) + "\n")
    return servers.start_bastion(workdir, data_dir, name=name)


def visible_files(target: servers.Target, projects: set[str]) -> set[str]:
    found: set[str] = set()
    with httpx.Client(base_url=target.base_url, timeout=60, trust_env=False) as client:
        for project in sorted(projects):
            response = client.get(f"/simple/{project}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"},
                                  follow_redirects=True)
            if response.status_code == 200:
                found.update(f["filename"] for f in response.json()["files"])
    return found


def review_cases(data_dir: Path) -> list[dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    result = subprocess.run([*servers._bastion_cli(), "review", "list", "--state", "all", "--json",
                             "--data-dir", str(data_dir)], capture_output=True, text=True, env=env)
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def run_client(client_cls: type[Uploader], entries: list[dict[str, Any]], corpus: Path, workdir: Path,
               settings: dict[str, Any], jobs: int, progress: Any) -> tuple[list[Outcome], dict[str, Any]]:
    target = start_server(workdir, f"bastion-{client_cls.name}", settings)
    uploader = client_cls(target, workdir / f"home-{client_cls.name}")
    batches: list[list[Path]] = []
    by_project: dict[str, list[Path]] = defaultdict(list)
    for e in entries:
        by_project[canonicalize_name(e["project"])].append(corpus / e["path"])
    for files in by_project.values():
        for i in range(0, len(files), BATCH):
            batches.append(files[i:i + BATCH])
    task = progress.add_task(f"{client_cls.name} upload", total=len(entries))
    lock = threading.Lock()
    outcomes: list[Outcome] = []
    started = time.monotonic()

    def one(batch: list[Path]) -> None:
        result = uploader.upload(batch)
        with lock:
            outcomes.extend(result)
            progress.advance(task, len(batch))

    try:
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(one, batches))
        elapsed = time.monotonic() - started
        visible = visible_files(target, set(by_project))
        cases = review_cases(Path(target.process.argv[target.process.argv.index("--data-dir") + 1]))
    finally:
        target.stop()
    held_why = {c["file"]: f"{c['source']}: {c['summary']}" for c in cases if c.get("file")}
    for o in outcomes:
        if o.result == "accepted" and o.filename not in visible:
            o.result = "held"
            o.message = held_why.get(o.filename, "not on the simple page after a 200")
    name_flags = [c for c in cases if c.get("source") == "name"]
    info = {"seconds": round(elapsed, 1), "server_version": target.version, "port": target.port,
            "review_cases": len(cases), "name_flags": [{"project": c["project"], "summary": c["summary"]}
                                                        for c in name_flags]}
    return outcomes, info


# ---------------------------------------------------------------------------------------------
# Installing back
# ---------------------------------------------------------------------------------------------

def install_back(entries: list[dict[str, Any]], accepted: set[str], corpus: Path, workdir: Path, settings: dict[str, Any],
                 n: int, seed: int) -> list[dict[str, Any]]:
    """Upload the chosen releases' wheels to a fresh server, install each with pip and uv."""
    ranks = {tag: i for i, tag in enumerate(sys_tags())}
    py = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    # (project, version) -> the wheel pip would take: the best-ranked compatible accepted wheel
    best: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
    for e in entries:
        if e["filename"] not in accepted or not e["filename"].endswith(".whl"):
            continue
        try:
            tags = parse_wheel_filename(e["filename"])[3]
        except InvalidWheelFilename:
            continue
        rank = min((ranks[t] for t in tags if t in ranks), default=None)
        if rank is None:
            continue
        key = (str(canonicalize_name(e["project"])), str(e["version"]))
        if key not in best or rank < best[key][0]:
            best[key] = (rank, e)
    keys = sorted(best)
    random.Random(seed).shuffle(keys)
    chosen = keys[:n]
    if not chosen:
        return []
    target = start_server(workdir, "bastion-install", settings)
    uploader = Twine(target, workdir / "home-install")
    results = []
    try:
        for key in chosen:
            wheel = best[key][1]
            # every file of the release that was accepted, so the installer chooses among them
            files = [corpus / e["path"] for e in entries
                     if (canonicalize_name(e["project"]), e["version"]) == key and e["filename"] in accepted]
            uploader.upload(files)
            with httpx.Client(base_url=target.base_url, timeout=60, trust_env=False) as client:
                page = client.get(f"/simple/{key[0]}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}).json()
            requires_python = next((f.get("requires-python") for f in page.get("files", [])
                                    if f["filename"] == wheel["filename"]), None)
            row: dict[str, Any] = {"project": key[0], "version": key[1], "expected_wheel": wheel["filename"],
                                   "requires_python": requires_python}
            try:
                if requires_python and py not in SpecifierSet(requires_python):
                    row["skipped"] = f"requires-python {requires_python} excludes {py}"
            except InvalidSpecifier:
                row["skipped"] = f"requires-python {requires_python!r} does not parse"
            if "skipped" not in row:
                for tool in ("pip", "uv"):
                    row[tool] = install_one(tool, target, key, workdir, wheel["filename"])
            results.append(row)
    finally:
        target.stop()
    return results


def install_one(tool: str, target: servers.Target, key: tuple[str, str], workdir: Path, expected: str) -> dict[str, Any]:
    dest = Path(tempfile.mkdtemp(prefix=f"{tool}-", dir=workdir))
    env = client_env(workdir / f"home-{tool}")
    spec = f"{key[0]}=={key[1]}"
    common = ["--no-deps", "--only-binary", ":all:", "--target", str(dest), "--index-url", target.base_url + "/simple/"]
    if tool == "pip":
        argv = [sys.executable, "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check", *common, spec]
    else:
        argv = [UV, "pip", "install", "--no-config", "--no-cache", "--python", sys.executable, *common, spec]
    started = time.monotonic()
    result = _run(argv, env, timeout=600)
    dist_infos = [p.name for p in dest.glob("*.dist-info")]
    wanted = [d for d in dist_infos
              if d.removesuffix(".dist-info").rpartition("-")[::2] and
              canonicalize_name(d.removesuffix(".dist-info").rpartition("-")[0]) == key[0]]
    ok = result.returncode == 0 and bool(wanted) and any((dest / d / "RECORD").is_file() for d in wanted)
    row: dict[str, Any] = {"ok": ok, "seconds": round(time.monotonic() - started, 2), "dist_info": wanted}
    if tool == "pip":  # pip names the file it downloaded
        row["took_expected_wheel"] = expected in result.stdout
    if not ok:
        row["error"] = _tail(result, 800)
    shutil.rmtree(dest, ignore_errors=True)
    return row


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

def summarize(outcomes_by_client: dict[str, list[Outcome]], entries: list[dict[str, Any]]) -> dict[str, Any]:
    meta = {e["filename"]: e for e in entries}
    summary: dict[str, Any] = {}
    for client, outcomes in outcomes_by_client.items():
        for o in outcomes:
            e = meta.get(o.filename, {})
            if o.result in ("server_refused", "client_refused", "error", "held"):
                o.reason = normalize_reason(o.message, o.filename, e.get("project", ""), e.get("version", ""))
        counts = Counter(o.result for o in outcomes)
        groups: dict[str, dict[str, Any]] = {}
        for o in outcomes:
            if o.result == "accepted":
                continue
            key = f"{o.result}|{o.status or ''}|{o.reason}"
            g = groups.setdefault(key, {"result": o.result, "status": o.status, "reason": o.reason, "count": 0,
                                        "example": o.filename, "example_message": o.message[:400],
                                        "by_group": Counter()})
            g["count"] += 1
            g["by_group"][meta.get(o.filename, {}).get("group", "?")] += 1
        for g in groups.values():
            g["by_group"] = dict(g["by_group"])
        summary[client] = {"files": len(outcomes), "counts": dict(counts),
                           "groups": sorted(groups.values(), key=lambda g: (g["result"], -g["count"]))}
    return summary


def print_report(summary: dict[str, Any], installs: list[dict[str, Any]], params: dict[str, Any],
                 infos: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(160, Console().width))
    table = Table(title=f"Upload acceptance (strictness={params['strictness']}, name_policy={params['name_policy']}, "
                        f"{params['files']} files, {params['megabytes']} MB, bastion from {params['bastion_src']})")
    table.add_column("client")
    for col in ("files", "accepted", "held for review", "server refused", "client refused", "errors", "seconds"):
        table.add_column(col, justify="right")
    for client, s in summary.items():
        c = s["counts"]
        table.add_row(client, str(s["files"]), str(c.get("accepted", 0)), str(c.get("held", 0)),
                      str(c.get("server_refused", 0)), str(c.get("client_refused", 0)), str(c.get("error", 0)),
                      str(infos.get(client, {}).get("seconds", "")))
    console.print(table)
    for result, title in (("server_refused", "Refused by the server"), ("client_refused", "Refused by the client"),
                          ("held", "Accepted, held for review"), ("error", "Errors")):
        rows = [(client, g) for client, s in summary.items() for g in s["groups"] if g["result"] == result]
        if not rows:
            continue
        merged: dict[tuple[Any, str], dict[str, Any]] = {}
        for client, g in rows:
            m = merged.setdefault((g["status"], g["reason"]), {"example": g["example"], **{c: 0 for c in summary}})
            m[client] += g["count"]
        t = Table(title=title, show_lines=False)
        if result == "server_refused":
            t.add_column("status")
        t.add_column("reason (normalized)", overflow="fold", max_width=90)
        for client in summary:
            t.add_column(client, justify="right")
        t.add_column("example", overflow="fold", max_width=45)
        for (status, reason), m in sorted(merged.items(), key=lambda kv: -sum(kv[1][c] for c in summary)):
            cells = [reason, *(str(m[c]) for c in summary), m["example"]]
            t.add_row(*([str(status)] if result == "server_refused" else []), *cells)
        console.print(t)
    for client, info in infos.items():
        if info.get("name_flags"):
            console.print(f"{client}: {len(info['name_flags'])} new names flagged for review (name_policy=review), e.g. "
                          + "; ".join(f"{f['project']}: {f['summary']}" for f in info["name_flags"][:5]))
    if installs:
        t = Table(title="Installed back (--no-deps --only-binary :all: --target)")
        for col in ("release", "wheel pip should take", "pip", "uv"):
            t.add_column(col, overflow="fold")
        for row in installs:
            cells = []
            for tool in ("pip", "uv"):
                r = row.get(tool)
                cells.append("skipped: " + row["skipped"] if r is None else ("ok" if r["ok"] else "FAILED: " + r["error"][-200:]))
            t.add_row(f"{row['project']}=={row['version']}", row["expected_wheel"], *cells)
        console.print(t)
        done = [r for r in installs if "skipped" not in r]
        console.print(f"installs: {len(done)} releases; pip ok {sum(r['pip']['ok'] for r in done)}, "
                      f"uv ok {sum(r['uv']['ok'] for r in done)}; skipped {len(installs) - len(done)}")


def main(argv: list[str] | None = None) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="the corpus (benchmarks/corpus.py)")
    parser.add_argument("--sample", type=int, default=0, help="a seeded sample of N files (0: all)")
    parser.add_argument("--group", choices=["top", "history"], help="only this corpus group")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--strictness", default="pypi", help="the server's upload_strictness (pypi, lenient)")
    parser.add_argument("--name-policy", default="review", choices=["review", "block"])
    parser.add_argument("--clients", default="twine,uv", help="comma-separated: twine, uv")
    parser.add_argument("--jobs", type=int, default=2, help="client processes at once")
    parser.add_argument("--install", type=int, default=40, help="releases to install back (0: none)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--workdir", type=Path, help="kept; default a temp dir that is deleted")
    parser.add_argument("--bastion-src", type=Path,
                        help="run the servers from this src dir (PYTHONPATH), e.g. a `git archive COMMIT src` export, "
                             "instead of the installed tree")
    args = parser.parse_args(argv)
    if args.bastion_src:
        # start_bastion passes our environment on (less BASTION_*): the servers and the bastion CLI
        # import bastion from here; the clients' environment drops PYTHONPATH.
        os.environ["PYTHONPATH"] = str(args.bastion_src.resolve())

    corpus = args.dir.expanduser()
    entries = [e for e in load_manifest(corpus) if (corpus / e["path"]).is_file()]
    if args.group:
        entries = [e for e in entries if e["group"] == args.group]
    if args.sample and args.sample < len(entries):
        entries = random.Random(args.seed).sample(entries, args.sample)
    entries.sort(key=lambda e: (canonicalize_name(e["project"]), e["upload_time"] or "", e["filename"]))
    settings: dict[str, Any] = {"name_policy": args.name_policy, "max_file_size": GIB, "max_project_size": 100 * GIB}
    if args.strictness != "pypi":  # the default; left out so that a tree older than the setting starts too
        settings["upload_strictness"] = args.strictness
    params = {"corpus": str(corpus), "files": len(entries), "megabytes": round(sum(e["size"] for e in entries) / 1e6, 1),
              "sample": args.sample, "group": args.group, "seed": args.seed, "strictness": args.strictness,
              "name_policy": args.name_policy, "server_settings": settings,
              "bastion_src": str(args.bastion_src) if args.bastion_src else "installed tree",
              "twine": subprocess.run([TWINE, "--version"], capture_output=True, text=True).stdout.split("(")[0].strip(),
              "uv": subprocess.run([UV, "--version"], capture_output=True, text=True).stdout.strip()}
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bastion-accept-"))
    workdir.mkdir(parents=True, exist_ok=True)
    clients = {"twine": Twine, "uv": UvPublish}
    outcomes: dict[str, list[Outcome]] = {}
    infos: dict[str, Any] = {}
    installs: list[dict[str, Any]] = []
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as progress:
            for name in args.clients.split(","):
                outcomes[name], infos[name] = run_client(clients[name], entries, corpus, workdir, settings, args.jobs, progress)
        if args.install:
            accepted = {o.filename for o in outcomes.get("twine", next(iter(outcomes.values()), [])) if o.result == "accepted"}
            installs = install_back(entries, accepted, corpus, workdir, settings, args.install, args.seed)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    summary = summarize(outcomes, entries)
    print_report(summary, installs, params, infos)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {e["filename"]: e for e in entries}
    args.json.write_text(json.dumps({
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "params": params, "servers": infos,
        "summary": summary, "installs": installs,
        "files": [{**asdict(o), "group": meta[o.filename]["group"], "project": meta[o.filename]["project"],
                   "version": meta[o.filename]["version"], "metadata_version": meta[o.filename].get("metadata_version"),
                   "builder": meta[o.filename].get("builder")}
                  for client in outcomes for o in outcomes[client]],
    }, indent=1))
    print(f"report: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
