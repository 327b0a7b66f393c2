from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bastion.scanning.result import ScanContext, ScanResult
from bastion.scanning.scanner import Scanner
from tests.distbuilder import make_sdist, make_wheel


@pytest.fixture(scope="session")
def scanner() -> Scanner:
    return Scanner()


@pytest.fixture
def scan_sdist(tmp_path: Path, scanner: Scanner) -> Callable[..., ScanResult]:
    counter = iter(range(10_000))

    def scan(files: dict[str, bytes | str], *, name: str = "demo-pkg", version: str = "1.0",
             metadata: str | None = None, context: ScanContext | None = None) -> ScanResult:
        folder = tmp_path / f"s{next(counter)}"
        folder.mkdir()
        data = {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}
        path = make_sdist(folder, name, version, files=data, metadata=metadata)
        return scanner.scan(path, context=context)

    return scan


@pytest.fixture
def scan_wheel(tmp_path: Path, scanner: Scanner) -> Callable[..., ScanResult]:
    counter = iter(range(10_000))

    def scan(files: dict[str, bytes | str], *, name: str = "demo-pkg", version: str = "1.0",
             metadata: str | None = None, context: ScanContext | None = None) -> ScanResult:
        folder = tmp_path / f"w{next(counter)}"
        folder.mkdir()
        data = {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}
        path = make_wheel(folder, name, version, files=data, metadata=metadata)
        return scanner.scan(path, context=context)

    return scan


def rules(result: ScanResult) -> set[str]:
    return {f.rule for f in result.findings}
