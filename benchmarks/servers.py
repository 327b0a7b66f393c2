"""Start, drive and stop the servers under test: Bastion and its peers pypiserver and devpi-server.

Every server runs as a child process in its own session (process group) on a free loopback port
with a private data dir, and is stopped by that process group's id when the benchmark ends.
Peers are pip-installed into their own virtual environments.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

HOST = "127.0.0.1"
USER = "bench"
PASSWORD = "bench-password-7f3a9c1e"
EMAIL = "bench@example.com"

# Peers are pinned so that runs compare like with like; change here to measure other releases.
PYPISERVER_REQUIREMENTS = ["pypiserver[passlib,cache]==2.4.2", "waitress==3.0.2"]
DEVPI_REQUIREMENTS = ["devpi-server==6.20.3"]

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def bin_path(venv: Path, name: str) -> Path:
    return venv / "bin" / name


def make_venv(venv: Path, requirements: list[str], log: Path) -> Path:
    """Create ``venv`` and pip-install ``requirements`` (reused when a previous run made the same)."""
    marker = venv / ".bench-requirements"
    wanted = "\n".join(requirements)
    if marker.is_file() and marker.read_text() == wanted and bin_path(venv, "python").exists():
        return venv
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    with open(log, "ab") as out:
        result = subprocess.run(
            [str(bin_path(venv, "python")), "-m", "pip", "install", "--disable-pip-version-check", "-q",
             *requirements],
            stdout=out, stderr=subprocess.STDOUT,
        )
    if result.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(requirements)} failed; see {log}")
    marker.write_text(wanted)
    return venv


def installed_version(python: Path, dist: str) -> str:
    return subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()


class ServerProcess:
    """One server child process (and whatever workers it forks), in its own process group."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        handle = open(self.log, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=self.env, cwd=self.cwd, start_new_session=True)
        handle.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, url: str, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited during start-up:\n{self.log_tail()}")
            try:
                if httpx.get(url, timeout=2.0).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} did not answer {url} within {timeout:.0f} s:\n{self.log_tail()}")

    def pids(self) -> list[int]:
        """The server process and all its descendants (uvicorn/waitress workers)."""
        if self.proc is None:
            return []
        found: list[int] = []
        todo = [self.proc.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            try:
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as handle:
                        todo.extend(int(c) for c in handle.read().split())
            except OSError:
                continue
        return found

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the process tree (live processes only)."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / ticks

    def memory_mb(self) -> dict[str, float]:
        """Peak (VmHWM) and current (VmRSS) resident memory, summed over the process tree, in MB."""
        peak = current = 0
        for pid in self.pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            peak += int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
            current += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        return {"peak_rss_mb": round(peak / 1024, 1), "rss_mb": round(current / 1024, 1),
                "processes": len(self.pids())}

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = self.proc.pid  # start_new_session: the group id is the child's own pid
        try:
            os.killpg(pgid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(timeout=15)
        except ProcessLookupError:
            pass


@dataclass
class Target:
    """A running server and how to talk to it."""

    name: str
    version: str
    port: int
    simple_root: str
    """Path of the simple index, e.g. ``/simple/`` or ``/bench/dev/+simple/``."""
    upload_url: str
    username: str
    password: str
    process: ServerProcess
    notes: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def project_path(self, project: str) -> str:
        return f"{self.simple_root}{project}/"

    def file_path(self, project: str, filename: str) -> str:
        """The download path of ``filename``, read from the project's simple page (as pip finds it)."""
        page_url = self.base_url + self.project_path(project)
        response = httpx.get(page_url, headers={"Accept": "text/html"}, timeout=30, follow_redirects=True)
        response.raise_for_status()
        for href in re.findall(r'href="([^"]+)"', response.text):
            if href.split("#")[0].endswith("/" + filename) or href.split("#")[0] == filename:
                return urlsplit(urljoin(str(response.url), href.replace("&amp;", "&"))).path
        raise RuntimeError(f"{self.name}: {filename} is not linked from {page_url}")

    def stop(self) -> None:
        self.process.stop()


def _bastion_cli() -> list[str]:
    script = Path(sys.executable).parent / "bastion"
    return [str(script)] if script.exists() else [sys.executable, "-m", "bastion.cli"]


def bastion_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("bastion-index")


def start_bastion(workdir: Path, data_dir: Path, *, name: str = "bastion", create_user: bool = True,
                  port: int | None = None) -> Target:
    """``bastion serve`` on ``data_dir``; creates the benchmark user and an API token first."""
    cli = _bastion_cli()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    token = ""
    if create_user:
        subprocess.run([*cli, "user", "create", USER, "--email", EMAIL, "--data-dir", str(data_dir)],
                       input=PASSWORD + "\n", text=True, check=True, capture_output=True, env=env)
    token = subprocess.run([*cli, "token", "create", "--user", USER, "--expires", "30d", "--description",
                            "benchmark", "--data-dir", str(data_dir)],
                           text=True, check=True, capture_output=True, env=env).stdout.strip()
    port = port or free_port()
    process = ServerProcess(name, [*cli, "serve", "--host", HOST, "--port", str(port), "--data-dir", str(data_dir)],
                            workdir / f"{name}.log", env=env)
    process.start()
    target = Target(name=name, version=bastion_version(), port=port, simple_root="/simple/",
                    upload_url=f"http://{HOST}:{port}/legacy/", username="__token__", password=token,
                    process=process, notes=["1 uvicorn worker (default)", "upload auth: API token"])
    process.wait_ready(target.base_url + "/simple/")
    return target


def start_pypiserver(workdir: Path, venv: Path) -> Target:
    """pypiserver with its cached-dir backend (watchdog installed), waitress, and an htpasswd file."""
    python = bin_path(venv, "python")
    packages = workdir / "pypiserver-packages"
    packages.mkdir(parents=True, exist_ok=True)
    htpasswd = workdir / "pypiserver.htpasswd"
    subprocess.run([str(python), "-c", (
        "import sys; from passlib.apache import HtpasswdFile\n"
        "h = HtpasswdFile(sys.argv[1], new=True); h.set_password(sys.argv[2], sys.argv[3]); h.save()"
    ), str(htpasswd), USER, PASSWORD], check=True)
    port = free_port()
    process = ServerProcess("pypiserver", [
        str(bin_path(venv, "pypi-server")), "run", "--host", HOST, "--port", str(port),
        "--passwords", str(htpasswd), "--authenticate", "update", "--disable-fallback",
        "--server", "auto", "--log-stream", "none", str(packages),
    ], workdir / "pypiserver.log")
    process.start()
    target = Target(name="pypiserver", version=installed_version(python, "pypiserver"), port=port,
                    simple_root="/simple/", upload_url=f"http://{HOST}:{port}/", username=USER,
                    password=PASSWORD, process=process,
                    notes=["--server auto (picks waitress, installed)", "watchdog cache (pypiserver[cache])", "upload auth: htpasswd (apr_md5_crypt)"])
    process.wait_ready(target.base_url + "/simple/")
    return target


def start_devpi(workdir: Path, venv: Path) -> Target:
    """devpi-server (--init without root/pypi, offline), a user and a volatile stage index bench/dev."""
    python = bin_path(venv, "python")
    serverdir = workdir / "devpi-server"
    log = workdir / "devpi.log"
    with open(log, "ab") as out:
        subprocess.run([str(bin_path(venv, "devpi-init")), "--serverdir", str(serverdir), "--no-root-pypi",
                        "--root-passwd", PASSWORD], check=True, stdout=out, stderr=subprocess.STDOUT)
    port = free_port()
    process = ServerProcess("devpi-server", [
        str(bin_path(venv, "devpi-server")), "--serverdir", str(serverdir), "--host", HOST, "--port", str(port),
        "--offline-mode",
    ], log)
    process.start()
    base = f"http://{HOST}:{port}"
    process.wait_ready(base + "/+api")
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        r = client.put(f"/{USER}", content=json.dumps({"password": PASSWORD, "email": EMAIL}))
        r.raise_for_status()
        r = client.post("/+login", content=json.dumps({"user": USER, "password": PASSWORD}))
        r.raise_for_status()
        login = r.json()["result"]["password"]
        auth = base64.b64encode(f"{USER}:{login}".encode()).decode()
        r = client.put(f"/{USER}/dev", headers={"X-Devpi-Auth": auth},
                       content=json.dumps({"type": "stage", "bases": [], "volatile": True}))
        r.raise_for_status()
    target = Target(name="devpi-server", version=installed_version(python, "devpi-server"), port=port,
                    simple_root=f"/{USER}/dev/+simple/", upload_url=f"{base}/{USER}/dev/", username=USER,
                    password=PASSWORD, process=process,
                    notes=["waitress, 50 threads (default)", "stage index bench/dev, --offline-mode",
                           "upload auth: user password (Argon2)"])
    process.wait_ready(base + target.simple_root)
    return target


TWINE_TIMED = r"""
import sys, time
import twine.cli, twine.commands.upload, twine.package, twine.repository  # imports before the clock
start = time.perf_counter()
twine.cli.dispatch(sys.argv[1:])
print("BENCH_ELAPSED %.6f" % (time.perf_counter() - start))
"""


def twine_upload(target: Target, files: list[Path], workdir: Path) -> float:
    """Upload ``files`` in one twine invocation; returns the seconds twine spent in ``upload``
    (interpreter start-up and imports excluded, so the number is twine's own work plus the server's)."""
    config = workdir / "empty.pypirc"
    config.touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWINE_")}
    result = subprocess.run(
        [sys.executable, "-c", TWINE_TIMED, "upload", "--repository-url", target.upload_url,
         "-u", target.username, "-p", target.password, "--non-interactive", "--disable-progress-bar",
         "--config-file", str(config), *map(str, files)],
        capture_output=True, text=True, env=env,
    )
    match = re.search(r"BENCH_ELAPSED ([\d.]+)", result.stdout)
    if result.returncode != 0 or match is None:
        raise RuntimeError(f"twine upload to {target.name} failed (exit {result.returncode}):\n"
                           f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return float(match.group(1))
