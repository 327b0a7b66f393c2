"""Integration fixtures: real distributions, a live ``bastion serve`` and the real clients.

Everything goes through subprocesses the way a user works: ``python -m build`` builds the
fixture projects in tests/fixtures/projects, ``bastion serve`` runs the index on a free loopback
port, ``bastion user create`` / ``bastion token create`` make the accounts, and twine, pip and uv
talk to the server over HTTP on 127.0.0.1 only.

Servers: ``live_server`` is a fresh server on an empty database for one test (built on the
``database_url`` fixture of tests/conftest.py: on PostgreSQL, the module's database emptied
first); ``module_server`` is shared by the tests of one module, one per backend. Both run on
SQLite and on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.conftest import BACKENDS, fresh_database, require_backend

REPO = Path(__file__).resolve().parents[2]
PROJECTS = REPO / "tests" / "fixtures" / "projects"
BIN = Path(sys.executable).parent
PYTHON = sys.executable
BASTION = str(BIN / "bastion")
TWINE = str(BIN / "twine")
UV = str(BIN / "uv")

USER_PASSWORD = "a-long-password"
CLIENT_TIMEOUT = 180
SERVER_START_TIMEOUT = 60


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


# ---------------------------------------------------------------------------------------------
# Environments and subprocess helpers
# ---------------------------------------------------------------------------------------------

_STRIP_PREFIXES = ("PIP_", "UV_", "TWINE_", "BASTION_", "XDG_", "PYTHONPATH")


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without proxies or client/index configuration, HOME isolated.

    The tools must talk to the live server only: no pip config (the machine may set
    PIP_FIND_LINKS), no uv or twine config, no keyring, no proxy for 127.0.0.1.
    """
    env = {
        key: value for key, value in os.environ.items()
        if not key.upper().startswith(_STRIP_PREFIXES) and "proxy" not in key.lower()
    }
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(home),
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        PIP_CONFIG_FILE=os.devnull,
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        UV_NO_CONFIG="1",
        UV_PYTHON_DOWNLOADS="never",
        PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring",
        NO_COLOR="1",
        COLUMNS="200",
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.update(extra)
    return env


def run(cmd: Sequence[str], *, env: dict[str, str], input: str | None = None, cwd: Path | None = None,
        timeout: float = CLIENT_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], env=env, input=input, cwd=cwd, capture_output=True, text=True,
        timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL,
    )


def flat(text: str) -> str:
    """Whitespace collapsed: rich (bastion's CLI, twine) wraps long lines at the terminal width."""
    return " ".join(text.split())


def output(result: subprocess.CompletedProcess[str]) -> str:
    return flat(result.stdout + "\n" + result.stderr)


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return (f"command: {' '.join(map(str, result.args))}\nexit code: {result.returncode}\n"
            f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wheel_metadata(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return archive.read(name)


# ---------------------------------------------------------------------------------------------
# Distributions built once per session with `python -m build`
# ---------------------------------------------------------------------------------------------

RACE_PROJECTS = ("race-pkg-1", "race-pkg-2", "race-pkg-3", "race-pkg-4")


@dataclass(frozen=True)
class Dists:
    """Every distribution the tests upload, built from tests/fixtures/projects."""

    root: Path
    by_key: dict[str, list[Path]]

    def files(self, key: str) -> list[Path]:
        """All files of one build, e.g. ``demo-pkg-1.0.0``."""
        return list(self.by_key[key])

    def wheel(self, key: str) -> Path:
        (wheel,) = [p for p in self.by_key[key] if p.name.endswith(".whl")]
        return wheel

    def sdist(self, key: str) -> Path:
        (sdist,) = [p for p in self.by_key[key] if p.name.endswith(".tar.gz")]
        return sdist

    @property
    def demo(self) -> list[Path]:
        """demo-pkg 1.0.0 and 1.1.0 and demo-dep 0.1.0, sdists and wheels."""
        return [*self.files("demo-pkg-1.0.0"), *self.files("demo-pkg-1.1.0"), *self.files("demo-dep-0.1.0")]

    @property
    def conflicting_wheel(self) -> Path:
        """A wheel named like demo-pkg 1.0.0's wheel, with different bytes."""
        return self.wheel("demo-pkg-1.0.0-altered")


def _build_jobs(src_root: Path) -> list[tuple[str, Path, list[str]]]:
    """(key, source dir copy, extra build args) for every build."""
    jobs: list[tuple[str, Path, list[str]]] = []
    for key in ("demo-pkg-1.0.0", "demo-pkg-1.1.0", "demo-dep-0.1.0"):
        target = src_root / key
        shutil.copytree(PROJECTS / key, target)
        jobs.append((key, target, []))
    target = src_root / "demo-sdist-only-0.1.0"
    shutil.copytree(PROJECTS / "demo-sdist-only-0.1.0", target)
    jobs.append(("demo-sdist-only-0.1.0", target, ["--sdist"]))
    # Same name and version as demo-pkg 1.0.0, different module content: same wheel filename,
    # different bytes.
    target = src_root / "demo-pkg-1.0.0-altered"
    shutil.copytree(PROJECTS / "demo-pkg-1.0.0", target)
    with open(target / "src" / "demo_pkg" / "__init__.py", "a") as handle:
        handle.write('\nALTERED = "this build differs from the uploaded one"\n')
    jobs.append(("demo-pkg-1.0.0-altered", target, ["--wheel"]))
    for name in RACE_PROJECTS:
        target = src_root / name
        shutil.copytree(PROJECTS / "race-template", target)
        for path in (target / "pyproject.toml", target / "README.md", target / "src" / "race_module" / "__init__.py"):
            path.write_text(path.read_text().replace("RACE_NAME", name))
        jobs.append((name, target, []))
    return jobs


@pytest.fixture(scope="session")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    """Real sdists and wheels, built once per session (in parallel) with the venv's setuptools."""
    src_root = tmp_path_factory.mktemp("build-src")
    out_root = tmp_path_factory.mktemp("dists")
    env = clean_env(tmp_path_factory.mktemp("build-home"))
    jobs = _build_jobs(src_root)
    running = []
    for key, source, extra in jobs:
        outdir = out_root / key
        log = open(src_root / f"{key}.log", "w+")
        proc = subprocess.Popen(
            [PYTHON, "-m", "build", "--no-isolation", *extra, "--outdir", str(outdir), str(source)],
            env=env, cwd=source, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        running.append((key, outdir, proc, log))
    by_key: dict[str, list[Path]] = {}
    failures = []
    for key, outdir, proc, log in running:
        code = proc.wait(timeout=300)
        log.seek(0)
        text_out = log.read()
        log.close()
        if code != 0:
            failures.append(f"building {key} failed ({code}):\n{text_out}")
            continue
        by_key[key] = sorted(outdir.iterdir())
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)
    expected = {
        "demo-pkg-1.0.0": {"demo_pkg-1.0.0.tar.gz", "demo_pkg-1.0.0-py3-none-any.whl"},
        "demo-pkg-1.1.0": {"demo_pkg-1.1.0.tar.gz", "demo_pkg-1.1.0-py3-none-any.whl"},
        "demo-dep-0.1.0": {"demo_dep-0.1.0.tar.gz", "demo_dep-0.1.0-py3-none-any.whl"},
        "demo-sdist-only-0.1.0": {"demo_sdist_only-0.1.0.tar.gz"},
        "demo-pkg-1.0.0-altered": {"demo_pkg-1.0.0-py3-none-any.whl"},
    }
    for key, names in expected.items():
        assert {p.name for p in by_key[key]} == names, f"unexpected build output for {key}: {by_key[key]}"
    return Dists(root=out_root, by_key=by_key)


# ---------------------------------------------------------------------------------------------
# The live server
# ---------------------------------------------------------------------------------------------

_RUNNING: list[LiveServer] = []


@dataclass
class LiveServer:
    """A running ``bastion serve`` and the way to reach it (HTTP and the CLI on its data dir)."""

    backend: str
    port: int
    data_dir: Path
    database_url: str | None
    """Set (as BASTION_DATABASE_URL) for PostgreSQL; None: the data dir's embedded SQLite."""
    home: Path
    proc: subprocess.Popen[bytes]
    stderr_path: Path
    token: str = ""
    """alice's API token (alice is created with every server)."""
    tokens: dict[str, str] = field(default_factory=dict)
    """API tokens by user name."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def index_url(self) -> str:
        return f"{self.url}/simple/"

    @property
    def upload_url(self) -> str:
        return f"{self.url}/legacy/"

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def cli_env(self) -> dict[str, str]:
        extra = {"BASTION_DATABASE_URL": self.database_url} if self.database_url else {}
        return clean_env(self.home, **extra)

    @property
    def client_env(self) -> dict[str, str]:
        return clean_env(self.home)

    def http(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, trust_env=False, **kwargs)  # type: ignore[arg-type]

    # -- the CLI, as an operator runs it next to the server --------------------------------
    def cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return run([BASTION, *args, "--data-dir", str(self.data_dir)], env=self.cli_env, input=input)

    def cli_ok(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        result = self.cli(*args, input=input)
        assert result.returncode == 0, describe(result)
        return result

    def create_user(self, name: str, *, password: str = USER_PASSWORD) -> None:
        result = self.cli_ok("user", "create", name, "--email", f"{name}@example.org", input=password + "\n")
        assert f"created user {name}" in result.stdout, describe(result)

    def create_token(self, user: str, *options: str) -> str:
        result = self.cli_ok("token", "create", "--user", user, *options)
        token = result.stdout.strip()
        assert token.startswith("bastion-") and "\n" not in token, describe(result)
        return token

    # -- clients ---------------------------------------------------------------------------
    def twine_upload(self, files: Sequence[Path], *, user: str = "__token__", password: str | None = None,
                     extra: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
        return run(
            [TWINE, "--no-color", "upload", "--non-interactive", "--disable-progress-bar",
             "--repository-url", self.upload_url, "-u", user, "-p", password if password is not None else self.token,
             *extra, *map(str, files)],
            env=self.client_env,
        )

    def twine_ok(self, files: Sequence[Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
        result = self.twine_upload(files, **kwargs)  # type: ignore[arg-type]
        assert result.returncode == 0, describe(result)
        return result

    def pip_install(self, target: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return run(
            [PYTHON, "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check", "--no-input",
             "--target", str(target), "--index-url", self.index_url, *args],
            env=self.client_env,
        )

    def uv_install(self, target: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return run(
            [UV, "pip", "install", "--no-config", "--no-cache", "--target", str(target), "--python", PYTHON,
             "--index-url", self.index_url, *args],
            env=self.client_env,
        )

    def simple_json(self, project: str) -> dict:
        with self.http() as client:
            response = client.get(f"/simple/{project}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        assert response.status_code == 200, (response.status_code, response.text)
        return response.json()

    def filenames(self, project: str) -> set[str]:
        """Files the live server lists for a project (empty if the project does not exist)."""
        with self.http() as client:
            response = client.get(f"/simple/{project}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        if response.status_code == 404:
            return set()
        assert response.status_code == 200, (response.status_code, response.text)
        return {f["filename"] for f in response.json()["files"]}


def installed(target: Path) -> dict[str, str]:
    """{project: version} of the distributions pip/uv put into a --target directory."""
    found = {}
    for entry in target.glob("*.dist-info"):
        name, _, version = entry.name[: -len(".dist-info")].rpartition("-")
        found[name.replace("_", "-").lower()] = version
    return found


class Anchors(HTMLParser):
    """{link text: attributes} of every anchor of a simple page."""

    def __init__(self) -> None:
        super().__init__()
        self.anchors: dict[str, dict[str, str | None]] = {}
        self._attrs: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._attrs = dict(attrs)

    def handle_data(self, data: str) -> None:
        if self._attrs is not None:
            self.anchors[data.strip()] = self._attrs

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._attrs = None


def html_anchors(server: LiveServer, project: str) -> dict[str, dict[str, str | None]]:
    """The anchors of a project's HTML simple page, by filename."""
    with server.http() as client:
        response = client.get(f"/simple/{project}/", headers={"Accept": "text/html"})
    assert response.status_code == 200
    parser = Anchors()
    parser.feed(response.text)
    return parser.anchors


@dataclass(frozen=True)
class Seen:
    """One request that went through a RecordingProxy."""

    method: str
    path: str
    accept: str
    status: int
    content_type: str


class RecordingProxy:
    """A loopback reverse proxy in front of a live server that records what a client asked for.

    It shows what an installer really did on the wire (which pages, which representation, which
    .metadata files), which the server itself does not log.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.seen: list[Seen] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self) -> None:
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "accept-encoding", "connection")}
                with httpx.Client(trust_env=False, timeout=60) as client:
                    response = client.request(self.command, proxy.upstream + self.path, headers=headers)
                proxy.seen.append(Seen(self.command, self.path, self.headers.get("accept", ""),
                                       response.status_code, response.headers.get("content-type", "")))
                body = response.content
                self.send_response(response.status_code, response.reason_phrase)
                for key, value in response.headers.items():
                    if key.lower() not in ("content-length", "content-encoding", "connection", "transfer-encoding"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = _forward
            do_HEAD = _forward

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> RecordingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def pages(self) -> dict[str, str]:
        """{simple page path: content type answered}."""
        return {s.path: s.content_type for s in self.seen if s.path.startswith("/simple/") and s.status == 200}

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(server: LiveServer) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    last_error = ""
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"bastion serve exited with {server.proc.returncode}:\n{server.stderr_text()}")
        try:
            response = httpx.get(f"{server.url}/health", timeout=2, trust_env=False)
            if response.status_code == 200 and response.json().get("status") == "ok":
                return
            last_error = f"{response.status_code} {response.text}"
        except httpx.HTTPError as exc:
            last_error = repr(exc)
        time.sleep(0.1)
    raise RuntimeError(f"bastion serve did not answer /health in time ({last_error}):\n{server.stderr_text()}")


def _stop(server: LiveServer) -> int | None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=15)
        return None
    return server.proc.returncode


def start_server(backend: str, data_dir: Path, database_url: str | None, home: Path) -> LiveServer:
    """``bastion serve`` on a free loopback port, healthy, with user alice and her API token."""
    data_dir.mkdir(parents=True, exist_ok=True)
    attempts = 3
    for attempt in range(1, attempts + 1):
        port = _free_port()
        stderr_path = data_dir.parent / f"server-{port}.stderr.log"
        env = clean_env(home, **({"BASTION_DATABASE_URL": database_url} if database_url else {}))
        with open(stderr_path, "wb") as err_handle:
            proc = subprocess.Popen(
                [BASTION, "serve", "--port", str(port), "--data-dir", str(data_dir)],
                env=env, stdout=subprocess.DEVNULL, stderr=err_handle, stdin=subprocess.DEVNULL,
            )
        server = LiveServer(backend=backend, port=port, data_dir=data_dir, database_url=database_url,
                            home=home, proc=proc, stderr_path=stderr_path)
        try:
            _wait_healthy(server)
        except RuntimeError:
            _stop(server)
            # Another process may have taken the port between our probe and the bind.
            if "address already in use" in server.stderr_text().lower() and attempt < attempts:
                continue
            raise
        break
    _RUNNING.append(server)
    try:
        server.create_user("alice")
        server.token = server.create_token("alice")
        server.tokens["alice"] = server.token
    except BaseException:
        _shutdown(server)
        raise
    return server


def _shutdown(server: LiveServer) -> None:
    if server in _RUNNING:
        _RUNNING.remove(server)
    early_exit = _stop(server)
    log = server.stderr_text()
    problems = []
    if early_exit is not None:
        problems.append(f"the server exited on its own with code {early_exit}")
    if "Traceback" in log or "Exception in ASGI application" in log:
        problems.append("the server logged an unhandled exception (an HTTP 500)")
    if problems:
        pytest.fail(f"bastion serve ({server.backend}, {server.url}): {'; '.join(problems)}\n"
                    f"--- server stderr ---\n{log}", pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A safety net: no server outlives the session, whatever happened to its fixture."""
    for server in list(_RUNNING):
        _RUNNING.remove(server)
        _stop(server)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """On failure, attach the stderr of every running server to the report."""
    report = yield
    if report.failed:
        for server in _RUNNING:
            report.sections.append(
                (f"bastion serve stderr ({server.backend}, {server.url})", server.stderr_text()[-20000:] or "(empty)")
            )
    return report


def _sqlite_data_dir(database_url: str) -> Path:
    assert database_url.startswith("sqlite:///"), database_url
    return Path(database_url[len("sqlite:///"):]).parent


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Module-scoped override of tests/conftest.py's ``backend``: one server per module and backend."""
    return require_backend(str(request.param))


@pytest.fixture
def live_server(backend: str, database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """A fresh server on the fresh database of ``database_url`` (SQLite or PostgreSQL), for one test."""
    if backend == "sqlite":
        server = start_server(backend, _sqlite_data_dir(database_url), None, tmp_path / "home")
    else:
        server = start_server(backend, tmp_path / "pgdata", database_url, tmp_path / "home")
    yield server
    _shutdown(server)


@pytest.fixture(scope="module")
def module_database_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Like ``database_url``, for a whole module: a fresh, migrated database per module and backend."""
    with fresh_database(backend, tmp_path_factory.mktemp("module-data"), tmp_path_factory) as url:
        yield url


@pytest.fixture(scope="module")
def module_server(backend: str, module_database_url: str,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server shared by the tests of a module (per backend)."""
    home = tmp_path_factory.mktemp("home")
    if backend == "sqlite":
        server = start_server(backend, _sqlite_data_dir(module_database_url), None, home)
    else:
        server = start_server(backend, tmp_path_factory.mktemp("pgdata") / "data", module_database_url, home)
    yield server
    _shutdown(server)
