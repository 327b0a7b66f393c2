"""pip and uv install from a live server: newest version, dependencies, sdists, PEP 658 metadata."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import (
    PROJECTS,
    PYTHON,
    UV,
    Dists,
    LiveServer,
    RecordingProxy,
    describe,
    installed,
    run,
    wheel_metadata,
)

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"


@pytest.fixture(scope="module")
def index(module_server: LiveServer, dists: Dists) -> Iterator[LiveServer]:
    """A server holding demo-pkg 1.0.0 and 1.1.0, demo-dep 0.1.0 and the sdist-only project."""
    module_server.twine_ok([*dists.demo, dists.sdist("demo-sdist-only-0.1.0")])
    yield module_server


def import_version(server: LiveServer, target: Path, module: str) -> str:
    result = run([PYTHON, "-c", f"import {module}; print({module}.__version__)"],
                 env={**server.client_env, "PYTHONPATH": str(target)}, cwd=target)
    assert result.returncode == 0, describe(result)
    return result.stdout.strip()


def test_pip_installs_newest_version_and_its_dependency(index: LiveServer, tmp_path: Path) -> None:
    target = tmp_path / "target"
    result = index.pip_install(target, "demo-pkg")
    assert result.returncode == 0, describe(result)
    assert installed(target) == {"demo-pkg": "1.1.0", "demo-dep": "0.1.0"}, describe(result)
    assert import_version(index, target, "demo_pkg") == "1.1.0"
    assert import_version(index, target, "demo_dep") == "0.1.0"


def test_pip_installs_a_pinned_older_version_without_the_new_dependency(index: LiveServer, tmp_path: Path) -> None:
    target = tmp_path / "target"
    result = index.pip_install(target, "Demo_Pkg==1.0.0")  # a non-normalized name: pip normalizes
    assert result.returncode == 0, describe(result)
    assert installed(target) == {"demo-pkg": "1.0.0"}, describe(result)


def test_pip_builds_and_installs_an_sdist_only_project(index: LiveServer, tmp_path: Path) -> None:
    target = tmp_path / "target"
    result = index.pip_install(target, "--no-binary", ":all:", "--no-build-isolation", "demo-sdist-only")
    assert result.returncode == 0, describe(result)
    assert installed(target) == {"demo-sdist-only": "0.1.0"}, describe(result)
    assert import_version(index, target, "demo_sdist_only") == "0.1.0"
    assert "demo_sdist_only-0.1.0.tar.gz" in result.stdout, describe(result)


def test_pip_uses_pep658_metadata(index: LiveServer, dists: Dists, tmp_path: Path) -> None:
    target = tmp_path / "target"
    result = index.pip_install(target, "-v", "demo-pkg")
    assert result.returncode == 0, describe(result)
    # pip fetched the dependency information from the .metadata files, not from the wheels.
    urls = dict(re.findall(r"Obtaining dependency information for (\S+) from (\S+\.metadata)", result.stdout))
    assert set(urls) == {"demo-pkg", "demo-dep>=0.1"}, describe(result)
    assert urls["demo-pkg"].startswith(f"{index.url}/packages/")
    assert urls["demo-pkg"].endswith("/demo_pkg-1.1.0-py3-none-any.whl.metadata")
    # ... and those files are the wheels' METADATA, with the digest the simple page announced.
    page = index.simple_json("demo-pkg")
    (entry,) = [f for f in page["files"] if f["filename"] == "demo_pkg-1.1.0-py3-none-any.whl"]
    with index.http() as client:
        response = client.get(urls["demo-pkg"])
    assert response.status_code == 200
    assert response.content == wheel_metadata(dists.wheel("demo-pkg-1.1.0"))
    assert entry["core-metadata"] == {"sha256": hashlib.sha256(response.content).hexdigest()}


def test_uv_installs_newest_version_and_its_dependency(index: LiveServer, dists: Dists, tmp_path: Path) -> None:
    target = tmp_path / "target"
    result = index.uv_install(target, "demo-pkg")
    assert result.returncode == 0, describe(result)
    assert installed(target) == {"demo-pkg": "1.1.0", "demo-dep": "0.1.0"}, describe(result)
    assert "+ demo-pkg==1.1.0" in result.stderr and "+ demo-dep==0.1.0" in result.stderr, describe(result)
    assert import_version(index, target, "demo_pkg") == "1.1.0"
    # The installed module is the fixture project's, as built and uploaded.
    source = PROJECTS / "demo-pkg-1.1.0" / "src" / "demo_pkg" / "__init__.py"
    assert (target / "demo_pkg" / "__init__.py").read_text() == source.read_text()


def test_installers_read_the_json_simple_api_and_the_metadata_files(index: LiveServer, tmp_path: Path) -> None:
    """Through a recording proxy: what pip and uv asked for, and in which representation."""
    for tool in ("uv", "pip"):
        with RecordingProxy(index.url) as proxy:
            result = run(
                [UV, "pip", "install", "--no-config", "--no-cache", "--target", str(tmp_path / tool), "--python",
                 PYTHON, "--index-url", f"{proxy.url}/simple/", "demo-pkg"] if tool == "uv" else
                [PYTHON, "-m", "pip", "install", "--no-cache-dir", "--target", str(tmp_path / tool),
                 "--index-url", f"{proxy.url}/simple/", "demo-pkg"],
                env=index.client_env,
            )
        assert result.returncode == 0, describe(result)
        assert installed(tmp_path / tool) == {"demo-pkg": "1.1.0", "demo-dep": "0.1.0"}, describe(result)
        assert proxy.pages() == {"/simple/demo-pkg/": SIMPLE_JSON, "/simple/demo-dep/": SIMPLE_JSON}, (tool, proxy.seen)
        assert all(SIMPLE_JSON in s.accept for s in proxy.seen if s.path.startswith("/simple/")), (tool, proxy.seen)
        fetched = [p.rsplit("/", 1)[1] for p in proxy.paths() if p.startswith("/packages/")]
        assert sorted(fetched) == [
            "demo_dep-0.1.0-py3-none-any.whl", "demo_dep-0.1.0-py3-none-any.whl.metadata",
            "demo_pkg-1.1.0-py3-none-any.whl", "demo_pkg-1.1.0-py3-none-any.whl.metadata",
        ], (tool, proxy.seen)
        assert all(s.status == 200 for s in proxy.seen), (tool, proxy.seen)


def test_uv_builds_an_sdist_only_project(index: LiveServer, tmp_path: Path) -> None:
    target = tmp_path / "target"
    result = index.uv_install(target, "--no-build-isolation", "demo-sdist-only")
    assert result.returncode == 0, describe(result)
    assert installed(target) == {"demo-sdist-only": "0.1.0"}, describe(result)
