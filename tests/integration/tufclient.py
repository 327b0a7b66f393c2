"""The TUF clients the integration tests drive against a live index: python-tuf's ngclient, and
``bastion verify-proxy`` with unmodified pip behind it; and the trusted root they start from.

Shared by test_tuf_client.py (the client path) and test_tuf_attacks.py (attacks through the
man-in-the-middle in mitm.py).
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tuf.api.metadata import Metadata, Root
from tuf.ngclient import Updater
from tuf.ngclient.urllib3_fetcher import Urllib3Fetcher

from tests.integration.conftest import BASTION, PYTHON, LiveServer, run

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
HTTP_TIMEOUT = 30
READY = re.compile(r"verify-proxy listening on http://127\.0\.0\.1:(\d+)/simple/")
PROXY_START_TIMEOUT = 30.0
PIP_TIMEOUT = 120


# ---------------------------------------------------------------------------------------------
# The trust anchor and python-tuf's ngclient
# ---------------------------------------------------------------------------------------------

def fetch_root(server: LiveServer, directory: Path) -> Path:
    """The server's version-1 root (checked to be root metadata), written to
    ``directory/1.root.json`` where the clients read it (the tests trust the loopback)."""
    with server.http() as client:
        response = client.get("/tuf/metadata/1.root.json")
    assert response.status_code == 200, response.text
    Metadata[Root].from_bytes(response.content)  # it parses as root metadata
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "1.root.json"
    path.write_bytes(response.content)
    return path


def tuf_updater(base_url: str, metadata_dir: Path, root: bytes) -> Updater:
    """python-tuf's ngclient used directly (not through Bastion's client code), reading metadata
    and targets from ``base_url`` (the index root), bootstrapped with the trusted ``root``;
    ``metadata_dir`` is its memory between runs (targets go to its ``targets/``)."""
    metadata_dir.mkdir(parents=True, exist_ok=True)
    return Updater(metadata_dir=str(metadata_dir), metadata_base_url=f"{base_url}/tuf/metadata/",
                   target_dir=str(metadata_dir / "targets"), target_base_url=f"{base_url}/",
                   fetcher=Urllib3Fetcher(socket_timeout=HTTP_TIMEOUT), bootstrap=root)


# ---------------------------------------------------------------------------------------------
# bastion verify-proxy, and pip through it
# ---------------------------------------------------------------------------------------------

@dataclass
class VerifyProxy:
    """A running ``bastion verify-proxy``."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def index_url(self) -> str:
        """Its simple index URL, for pip's and uv's --index-url."""
        return f"{self.url}/simple/"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, trust_env=False)


@contextmanager
def verify_proxy(index_url: str, root: Path, workdir: Path, env: dict[str, str], *,
                 cache_dir: Path | None = None) -> Iterator[VerifyProxy]:
    """``bastion verify-proxy --index index_url --port 0`` (cache in ``cache_dir``, by default
    ``workdir/cache``; its log in ``workdir``), up once it printed its ready line. Afterwards it
    must still run and have logged no traceback (a client hanging up is none: pip resets its
    connection after a refused file); then it is stopped (SIGTERM, then SIGKILL)."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"verify-proxy-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [BASTION, "verify-proxy", "--index", index_url, "--root", str(root), "--port", "0",
             "--cache-dir", str(cache_dir or workdir / "cache")],
            env=env, stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + PROXY_START_TIMEOUT
        while not (ready := READY.search(log_path.read_text(errors="replace"))):
            if proc.poll() is not None:
                pytest.fail(f"verify-proxy exited with {proc.returncode}:\n{log_path.read_text()}", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"verify-proxy printed no ready line in {PROXY_START_TIMEOUT} s:\n"
                            f"{log_path.read_text()}", pytrace=False)
            time.sleep(0.05)
        proxy = VerifyProxy(proc, int(ready.group(1)), log_path)
        yield proxy
        assert proc.poll() is None, f"verify-proxy died:\n{proxy.log()}"
        log = proxy.log()
        assert "Traceback" not in log, log
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def pip_install(index_url: str, target: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Unmodified pip installing ``args`` into ``target`` from ``index_url``. ``--retries 0``:
    pip retries a 502 five times with back-off by default, which only slows a refusal down."""
    return run([PYTHON, "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check", "--no-input",
                "--retries", "0", "--target", str(target), "--index-url", index_url, *args],
               env=env, timeout=PIP_TIMEOUT)
