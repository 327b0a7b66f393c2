"""Hardening against hostile input to issue 6's readers, on both databases: JSON nested past the
parser's depth (the OSV API, the application API and its CycloneDX reader, the advisory push API,
an imported record) and a YAML record whose anchors expand exponentially (a "billion laughs" in a
public advisory database) are refused with a clear reason, quickly, storing nothing; the rest of
the import goes on."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bastion.advisories.ingest import import_path
from bastion.services import Bastion
from tests.conftest import make_user
from tests.unit.world import state

DEEP = b"[" * 5000 + b"]" * 5000
GOOD = """\
id: PYSEC-2099-21
modified: 2099-02-01T00:00:00Z
affected:
- package:
    ecosystem: PyPI
    name: goodlib
  ranges:
  - type: ECOSYSTEM
    events:
    - introduced: "0"
    - fixed: "2.0"
"""


def _laughs() -> str:
    lines = ["id: PYSEC-2099-22", "modified: 2099-02-01T00:00:00Z", 'l0: &l0 ["ha","ha","ha","ha","ha","ha","ha","ha"]']
    lines += [f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 8) + "]" for i in range(1, 9)]  # 8**9 strings
    return "\n".join(lines + ["database_specific: *l8", ""])


def test_deep_json_and_yaml_bombs_are_refused(bastion: Bastion, client: Any, tmp_path: Path) -> None:
    token = make_user(bastion, "root", admin=True)
    auth = {"Authorization": f"Bearer {token}"}
    before = state(bastion)
    for url in ("/osv/v1/query", "/osv/v1/querybatch"):
        response = client.post(url, content=DEEP, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, (url, response.text)
        assert "nested too deeply" in response.json()["message"], response.text
    def bom(levels: int) -> bytes:
        return (b'{"bomFormat": "CycloneDX", "specVersion": "1.5", "components": '
                + b'[{"components": ' * levels + b"[]" + b"}]" * levels + b"}")

    for body in (DEEP, bom(2000), bom(300)):  # past the JSON parser; past the components walk
        response = client.put("/api/applications/shop", content=body,
                              headers={**auth, "Content-Type": "application/json"})
        assert response.status_code == 400, response.text
        assert "nested too deeply" in response.json()["error"], response.text
    response = client.post("/api/v1/advisories", content=DEEP, headers={**auth, "Content-Type": "application/json"})
    assert response.status_code == 400 and "nested too deeply" in response.json()["error"], response.text
    assert state(bastion) == before

    tree = tmp_path / "advisories" / "vulns"
    (tree / "goodlib").mkdir(parents=True)
    (tree / "goodlib" / "PYSEC-2099-21.yaml").write_text(GOOD)
    (tree / "goodlib" / "PYSEC-2099-22.yaml").write_text(_laughs())
    (tree / "goodlib" / "PYSEC-2099-23.json").write_bytes(DEEP)
    (tree / "goodlib" / "PYSEC-2099-24.json").write_text(json.dumps(
        {"id": "PYSEC-2099-24", "modified": "2099-02-01T00:00:00Z", "database_specific": json.loads("[" * 900 + "]" * 900)}))
    started = time.monotonic()
    summary = import_path(bastion, tmp_path / "advisories")
    assert time.monotonic() - started < 10
    assert (summary.added, summary.skipped) == (1, 3)
    reasons = {Path(p.path).name: p.reason for p in summary.problems}
    assert "expands to more than" in reasons["PYSEC-2099-22.yaml"], reasons
    assert "nested too deeply" in reasons["PYSEC-2099-23.json"], reasons
    assert "nested too deeply" in reasons["PYSEC-2099-24.json"], reasons


def test_zip_over_the_member_or_size_caps_is_refused_up_front(bastion: Bastion, client: Any,
                                                             monkeypatch: Any) -> None:
    import io
    import zipfile

    from bastion.advisories import ingest

    token = make_user(bastion, "root", admin=True)
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/zip"}
    monkeypatch.setattr(ingest, "MAX_ZIP_MEMBERS", 3)
    monkeypatch.setattr(ingest, "MAX_ZIP_BYTES", 1024 * 1024)

    def archive(members: dict[str, bytes]) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
            for name, data in members.items():
                z.writestr(name, data)
        return buffer.getvalue()

    good = GOOD.encode()
    before = state(bastion)
    many = archive({f"r{i}.yaml": good for i in range(4)})
    bomb = archive({"a.json": b" " * 700_000, "b.json": b" " * 700_000})  # 1.4 MB from a few KB
    assert len(bomb) < 20_000
    for body, counted in ((many, "holds 4 records"), (bomb, "1,400,000 bytes uncompressed")):
        response = client.post("/api/v1/advisories", content=body, headers=auth)
        assert response.status_code == 400, response.text
        message = response.json()["error"]
        assert counted in message and "split it" in message, message
    assert state(bastion) == before  # not even an import run
    assert client.post("/api/v1/advisories", content=archive({"r.yaml": good}), headers=auth).json()["added"] == 1


def test_a_huge_sbom_or_pylock_is_refused_like_a_huge_requirements_list(bastion: Bastion, client: Any) -> None:
    from bastion.advisories.applications import MAX_PACKAGES

    token = make_user(bastion, "carol")
    auth = {"Authorization": f"Bearer {token}"}
    count = MAX_PACKAGES + 1
    sbom = {"bomFormat": "CycloneDX", "specVersion": "1.5",
            "components": [{"name": f"p{i}", "purl": f"pkg:pypi/p{i}@1.0"} for i in range(count)]}
    pylock = 'lock-version = "1.0"\ncreated-by = "test"\n' + "".join(
        f'[[packages]]\nname = "p{i}"\nversion = "1.0"\nwheels = [{{ url = "https://files.example.org/p{i}-1.0-py3-none-any.whl", '
        f'hashes = {{ sha256 = "{"ab" * 32}" }} }}]\n' for i in range(count))
    before = state(bastion)
    for kwargs in ({"json": sbom}, {"json": {"format": "pylock", "content": pylock}}):
        response = client.put("/api/applications/huge", headers=auth, **kwargs)
        assert response.status_code == 400, response.text[:300]
        assert f"exceed {MAX_PACKAGES} packages" in response.json()["error"], response.text[:300]
    assert state(bastion) == before
