"""Hardening: attacker-influenced advisory text (id, summary, details, aliases, references) and
project metadata (a Project-URL labelled security with a ``javascript:`` URL) render inert on the
security pages, the index-wide page and the badge, on both databases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bastion.advisories.ingest import import_path
from bastion.services import Bastion
from tests.conftest import make_user
from tests.unit.advisories.test_hardening_quarantine import _upload

EVIL_ID = 'PYSEC-"><b>owned<b>'
RECORD = {
    "id": EVIL_ID, "modified": "2099-01-01T00:00:00Z", "published": "2099-01-01T00:00:00Z",
    "summary": "<script>alert('summary')</script>", "details": "<img src=x onerror=alert('details')>",
    "aliases": ["<svg onload=alert('alias')>", "javascript:alert('alias')"],
    "references": [{"type": "WEB", "url": "javascript:alert('reference')"}],
    "database_specific": {"severity": "<iframe src=javascript:alert('severity')>"},
    "affected": [{"package": {"ecosystem": "PyPI", "name": "xsslib"},
                  "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "9.0"}]}]}],
}


def test_advisory_text_and_project_urls_render_inert(bastion: Bastion, client: Any, tmp_path: Path) -> None:
    token = make_user(bastion, "alice")
    _upload(client, tmp_path, token, "xsslib", "1.0",
            extra="Project-URL: Security, javascript:alert('url')\nProject-URL: Security policy, "
                  "https://example.org/security\n")
    tree = tmp_path / "osv"
    tree.mkdir()
    (tree / "evil.json").write_text(json.dumps(RECORD))
    summary = import_path(bastion, tree)
    assert summary.added == 1, summary.problems

    for url in ("/projects/xsslib/security", "/security", "/projects/xsslib/security/badge.svg"):
        response = client.get(url)
        assert response.status_code == 200, url
        text = response.text.lower()
        for raw in ("<script>alert", "<img src=x", "<svg onload", "<iframe", "<b>owned", 'href="javascript:',
                    "href='javascript:"):
            assert raw not in text, (url, raw)
    page = client.get("/projects/xsslib/security").text
    # Shown, as text: the escaped summary and id, the javascript: Project-URL as evidence only.
    assert "&lt;script&gt;alert(" in page and "&lt;b&gt;owned&lt;b&gt;" in page
    assert "javascript:alert(&#39;url&#39;)" in page
    assert 'href="https://osv.dev/vulnerability/PYSEC-&#34;&gt;&lt;b&gt;owned&lt;b&gt;"' in page
    assert "content-security-policy" in {k.lower() for k in client.get("/projects/xsslib/security").headers}
    # The JSON twins carry the text as data (a JSON string), served as JSON.
    document = client.get("/projects/xsslib/security.json")
    assert document.headers["content-type"].startswith("application/json")
    assert document.json()["vulnerabilities"][0]["summary"] == "<script>alert('summary')</script>"


def test_advisory_text_reaches_terminals_inert(bastion: Bastion, tmp_path: Path, data_dir: Path,
                                              database_url: str) -> None:
    """Rich markup and terminal escape sequences in advisory text (aliases, summary) print as plain
    text in ``bastion advisories list|show`` and ``bastion audit``'s tables; an id holding a
    control character is refused at import."""
    from bastion.advisories.audit import Finding, Report, render_columns, render_markdown
    from tests.unit.advisories.test_app_api import cli

    tree = tmp_path / "term"
    tree.mkdir()
    record = {"id": "PYSEC-2099-61", "modified": "2099-01-01T00:00:00Z", "aliases": ["[/]", "[bold]CVE-1"],
              "summary": "clean\x1b[2J\x1b]0;pwned\x07 text", "affected": []}
    (tree / "ok.json").write_text(json.dumps(record))
    (tree / "bad.json").write_text(json.dumps(record | {"id": "PYSEC-\x1b[8m"}))
    (tree / "lib.json").write_text(json.dumps(record | {"id": "PYSEC-2099-62", "affected": [
        {"package": {"ecosystem": "PyPI", "name": "termlib"},
         "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.0"}]}]}]}))
    summary = import_path(bastion, tree)
    assert summary.added == 2 and "not a usable advisory id" in summary.problems[0].reason
    pins = tmp_path / "requirements.txt"
    pins.write_text("termlib==1.0\n")
    make_user(bastion, "carol")
    assert cli(data_dir, database_url, "app", "register", "termapp", str(pins), "--owner", "carol").returncode == 0
    app = cli(data_dir, database_url, "app", "show", "termapp")
    assert "PYSEC-2099-62" in app.stdout and "[/], [bold]CVE-1" in app.stdout and "\x1b" not in app.stdout
    listed = cli(data_dir, database_url, "advisories", "list")
    assert listed.returncode == 0, listed.stderr
    assert "[/], [bold]CVE-1" in listed.stdout
    shown = cli(data_dir, database_url, "advisories", "show", "PYSEC-2099-61")
    assert shown.returncode == 0, shown.stderr
    assert "clean[2J]0;pwned text" in shown.stdout and "\x1b" not in shown.stdout

    report = Report(findings=[Finding("pkg", "1.0", "PYSEC-\x1b[8m1", [], ["2.0\x1b[1A"], "hidden\x1b[8m|x")])
    for text in (render_columns(report), render_markdown(report)):
        assert "\x1b" not in text and "PYSEC-[8m1" in text
