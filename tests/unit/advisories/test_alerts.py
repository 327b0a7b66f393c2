"""Alerts on new advisories, end to end on SQLite and PostgreSQL: a real SMTP server receives the
mails, a real HTTP server on 127.0.0.1 receives the webhook calls and the test checks their
signature with the secret the registration printed. Maintainers hear of an advisory on their
latest release, application owners of one on a version they use; an alias group is one alert;
nothing is sent twice (re-import, a new upload), nothing for a withdrawn advisory."""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bastion.advisories import alerts
from bastion.advisories.ingest import import_path
from bastion.advisories.models import AdvisoryNotice, ApplicationAlert
from bastion.services import Bastion
from tests.unit.advisories.records import write_pysec
from tests.conftest import make_user
from tests.mailbox import Mailbox, free_port
from tests.unit.test_web_pages import add_role, upload


class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST and answers ``status``."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        self.location = ""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.status)
                if receiver.location:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def check_signature(secret: str, headers: dict[str, str], body: bytes) -> None:
    """What a receiver does, written here independently of Bastion's code."""
    timestamp = headers["x-bastion-timestamp"]
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, headers["x-bastion-signature"])
    assert abs(time.time() - int(timestamp)) < 60
    assert headers["x-bastion-event"] == "advisory" and headers["content-type"] == "application/json"


def advisory(tree: Path, n: int, *, name: str = "zorblax-core", fixed: str = "1.1",
             modified: str = "2099-02-01T00:00:00Z", extra: str = "") -> None:
    write_pysec(tree, n, name=name, fixed=fixed, modified=modified, published="2099-01-02T03:04:05Z", extra=extra)


def ghsa(tree: Path, n: int, fixed: str) -> None:
    record = {"id": f"GHSA-zorb-000{n}-abcd", "modified": "2099-03-01T00:00:00Z", "aliases": [f"CVE-2099-{n}"],
              "summary": "Zorblax executes what it reads", "details": "Seen by GitHub.",
              "affected": [{"package": {"ecosystem": "PyPI", "name": "Zorblax_Core"},
                            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}]}]}
    (tree / "vulns" / "zorblax-core" / f"GHSA-zorb-000{n}-abcd.json").write_text(json.dumps(record))


def advisory_mail(bastion: Bastion, box: Mailbox) -> list[tuple[str, str]]:
    """(recipient, subject) of every advisory alert delivered so far (upload notices left out)."""
    assert bastion.tasks.drain(timeout=60)
    return sorted((rcpt, str(message["Subject"])) for message, rcpts in zip(box.messages, box.recipients, strict=True)
                  for rcpt in rcpts if "uploaded to" not in str(message["Subject"]))


def body_of(box: Mailbox, to: str, subject: str) -> str:
    return str(box.wait_for(to, subject).get_content())


def test_alerts_reach_maintainers_and_applications_once(bastion_with: Any, smtp_server: Mailbox, receiver: Receiver,
                                                        tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    bastion, client = bastion_with(smtp_host=smtp_server.host, smtp_port=smtp_server.port)
    tokens = {name: make_user(bastion, name) for name in ("alice", "bob", "carol")}
    for version in ("1.0", "2.0"):
        upload(client, tmp_path, tokens["alice"], "zorblax-core", version)
    add_role(bastion, "zorblax-core", "bob", "maintainer")
    carol = {"Authorization": f"Bearer {tokens['carol']}"}
    shop = client.put("/api/applications/shop", headers=carol, json={
        "format": "requirements", "content": "zorblax-core==1.0\n", "webhook_url": receiver.url})
    assert shop.status_code == 201, shop.text
    secret = shop.json()["webhook_secret"]
    sbom = {"bomFormat": "CycloneDX", "specVersion": "1.6", "components": [
        {"name": "zorblax-core", "purl": "pkg:pypi/zorblax-core@2.0"},
        {"name": "elsewhere", "purl": "pkg:pypi/elsewhere@1.0"}]}  # a version this index does not hold
    kiosk = client.put("/api/applications/kiosk?contact_email=ops@example.org", headers=carol, json=sbom)
    assert kiosk.status_code == 201, kiosk.text
    assert "webhook_secret" not in kiosk.json()
    assert advisory_mail(bastion, smtp_server) == []
    tree = tmp_path / "advisory-database"

    # 1. A PYSEC and its GHSA (one CVE) affect 1.0: not the latest release (2.0), so the
    #    maintainers hear nothing; shop (on 1.0) gets one mail and one signed call, kiosk nothing.
    advisory(tree, 1)
    ghsa(tree, 1, "1.1")
    import_path(bastion, tree)
    subject = "[Bastion] shop: PYSEC-2099-1 affects zorblax-core 1.0"
    assert advisory_mail(bastion, smtp_server) == [("carol@example.org", subject)]
    text = body_of(smtp_server, "carol@example.org", subject)
    assert "GHSA-zorb-0001-abcd, CVE-2099-1" in text and "zorblax-core 1.0 (fixed in 1.1)" in text
    assert "bastion app register shop FILE" in text
    (headers, body), = receiver.calls
    check_signature(secret, headers, body)
    payload = json.loads(body)
    assert set(payload) == {"application", "advisory", "packages", "sent"}
    assert payload["application"] == "shop"
    assert payload["advisory"] == {"id": "PYSEC-2099-1", "aliases": ["GHSA-zorb-0001-abcd", "CVE-2099-1"],
                                   "summary": "Zorblax executes what it reads",
                                   "link": "https://osv.dev/vulnerability/PYSEC-2099-1"}
    assert payload["packages"] == [{"name": "zorblax-core", "version": "1.0", "fixed_in": ["1.1"]}]
    with pytest.raises(AssertionError):  # a tampered body or another secret fails the check
        check_signature(secret, headers, body.replace(b"shop", b"shoq"))
    with pytest.raises(AssertionError):
        check_signature("another secret", headers, body)
    assert alerts.verify_signature(secret, headers["x-bastion-timestamp"], body, headers["x-bastion-signature"])
    assert not alerts.verify_signature(secret, headers["x-bastion-timestamp"], body, headers["x-bastion-signature"],
                                       now=time.time() + 3600)  # a replay an hour later
    with bastion.db.read() as session:
        rows = {(a.advisory_id, a.webhook_status) for a in session.execute(select(ApplicationAlert)).scalars()}
    assert rows == {("PYSEC-2099-1", "200"), ("GHSA-zorb-0001-abcd", "200")}

    # 2. PYSEC-2099-2 affects every release below 3.0: the latest too (alice and bob are told, each
    #    in their own mail), shop again, and kiosk (its contact address, no webhook).
    advisory(tree, 2, fixed="3.0")
    import_path(bastion, tree)
    latest = "[Bastion] zorblax-core 2.0: PYSEC-2099-2 affects your latest release"
    assert advisory_mail(bastion, smtp_server) == sorted([
        ("carol@example.org", subject), ("alice@example.org", latest), ("bob@example.org", latest),
        ("carol@example.org", "[Bastion] shop: PYSEC-2099-2 affects zorblax-core 1.0"),
        ("ops@example.org", "[Bastion] kiosk: PYSEC-2099-2 affects zorblax-core 2.0"),
    ])
    text = body_of(smtp_server, "bob@example.org", latest)
    assert "Release: 2.0" in text and "Fixed in:      3.0" in text and "https://osv.dev/vulnerability/PYSEC-2099-2" in text
    assert len(receiver.calls) == 2
    check_signature(secret, *receiver.calls[1])
    assert json.loads(receiver.calls[1][1])["advisory"]["id"] == "PYSEC-2099-2"
    sent = len(smtp_server.messages)

    # 3. A withdrawn advisory tells nobody; re-importing the same data, or a newer version of a
    #    record already told, tells nobody again; nor does a new release that the told advisory
    #    affects becoming the latest.
    advisory(tree, 3, fixed="9.0", extra="withdrawn: 2099-04-01T00:00:00Z\n")
    import_path(bastion, tree)
    import_path(bastion, tree)
    advisory(tree, 2, fixed="3.0", modified="2099-05-01T00:00:00Z")
    import_path(bastion, tree)
    upload(client, tmp_path, tokens["alice"], "zorblax-core", "2.5")
    assert len(advisory_mail(bastion, smtp_server)) == 5
    assert len(smtp_server.messages) == sent + 2  # the two upload notices of 2.5, nothing else
    assert len(receiver.calls) == 2
    with bastion.db.read() as session:
        notices = set(session.execute(select(AdvisoryNotice.advisory_id)).scalars())
    assert notices == {"PYSEC-2099-2"}

    # 4. An advisory about a project this index does not hold matches no release here; the
    #    importer names it (advisory_ids), and kiosk, which uses that project, is told once.
    advisory(tree, 4, name="elsewhere", fixed="1.5")
    import_path(bastion, tree)
    for _ in range(2):
        with bastion.db.write() as session:
            found = alerts.collect_alerts(session, bastion, [], advisory_ids=["PYSEC-2099-4"])
        alerts.deliver(bastion, found)
    assert ("ops@example.org", "[Bastion] kiosk: PYSEC-2099-4 affects elsewhere 1.0") in \
        advisory_mail(bastion, smtp_server)
    assert len(advisory_mail(bastion, smtp_server)) == 6

    # 5. A receiver that is down: one mail lists both advisories decided together; the first call
    #    is tried three times, the second not at all (the runner sends everyone's mail); each
    #    outcome is stored, and the secret is in no log line.
    receiver.status = 503
    monkeypatch.setattr(alerts, "RETRY_DELAYS", (0.0, 0.0))
    caplog.set_level(logging.DEBUG)
    advisory(tree, 5, fixed="1.0.1")
    advisory(tree, 6, fixed="1.0.2")
    import_path(bastion, tree)
    digest = "[Bastion] shop: 2 new advisories affect its packages"
    assert ("carol@example.org", digest) in advisory_mail(bastion, smtp_server)
    text = body_of(smtp_server, "carol@example.org", digest)
    assert "PYSEC-2099-5" in text and "PYSEC-2099-6" in text and "zorblax-core 1.0 (fixed in 1.0.2)" in text
    assert len(receiver.calls) == 5
    for call in receiver.calls[2:]:
        check_signature(secret, *call)
    with bastion.db.read() as session:
        statuses = dict(session.execute(select(ApplicationAlert.advisory_id, ApplicationAlert.webhook_status).where(
            ApplicationAlert.advisory_id.in_(["PYSEC-2099-5", "PYSEC-2099-6"]))).all())
    assert statuses == {"PYSEC-2099-5": "error: HTTP 503 (3 tries)",
                        "PYSEC-2099-6": "error: not tried: the previous call failed after every try"}
    assert "webhook of application shop" in caplog.text and secret not in caplog.text

    # 6. Registering a list shows its findings, which count as told: no alert for them later.
    again = client.put("/api/applications/shop", headers=carol, json={"content": "zorblax-core==1.0\n"})
    assert again.status_code == 200 and again.json()["vulnerable"] is True
    assert {f["id"] for f in again.json()["findings"]} == {"PYSEC-2099-1", "PYSEC-2099-2", "PYSEC-2099-5",
                                                           "PYSEC-2099-6"}
    fresh = client.put("/api/applications/till", headers=carol, json={"content": "zorblax-core==1.0\n"})
    assert fresh.status_code == 201 and fresh.json()["vulnerable"] is True
    with bastion.db.write() as session:
        found = alerts.collect_alerts(session, bastion, [], advisory_ids=["PYSEC-2099-1", "PYSEC-2099-2"])
    assert found.messages == [] and found.webhooks == []


def test_webhook_retries_refuses_redirects_and_reports_failures(receiver: Receiver) -> None:
    body = b'{"application":"x"}'
    receiver.status = 500
    assert alerts.post_signed(receiver.url, body, "s3cret", delays=(0.0, 0.0)) == "error: HTTP 500 (3 tries)"
    assert len(receiver.calls) == 3
    for headers, sent in receiver.calls:
        assert sent == body
        check_signature("s3cret", headers, sent)
    receiver.status = 302
    receiver.location = "http://127.0.0.1:9/elsewhere"
    assert alerts.post_signed(receiver.url, body, "s3cret", delays=(0.0, 0.0)) == \
        "error: HTTP 302 (redirects are not followed) (1 try)"
    refused = alerts.post_signed(f"http://127.0.0.1:{free_port()}/hook", body, "s3cret", delays=(0.0, 0.0))
    assert refused.startswith("error: ConnectionRefusedError") and refused.endswith("(3 tries)")
    assert alerts.signature("k", "1700000000", b"{}") == \
        "sha256=" + hmac.new(b"k", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert not alerts.verify_signature("k", "not a time", b"{}", alerts.signature("k", "1", b"{}"))


def test_the_cli_import_delivers_before_it_exits(bastion: Bastion, smtp_server: Mailbox, receiver: Receiver,
                                                 tmp_path: Path, data_dir: Path, database_url: str) -> None:
    """`bastion advisories import` runs no background worker: the alerts it decides are sent
    (mail by SMTP, the signed webhook call) before the command exits."""
    import os
    import subprocess

    from bastion.advisories.applications import register
    from bastion.authz import OPERATOR
    from tests.unit.advisories.test_applications import add_release

    make_user(bastion, "carol")
    with bastion.db.write() as session:
        add_release(session, "zorblax-core", "1.0")
        secret = register(session, bastion, "shop", "zorblax-core==1.0\n", principal=OPERATOR, owner="carol",
                          webhook_url=receiver.url).webhook_secret
    assert secret is not None
    tree = tmp_path / "advisory-database"
    advisory(tree, 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env.update(BASTION_DATABASE_URL=database_url, BASTION_SMTP_HOST=smtp_server.host,
               BASTION_SMTP_PORT=str(smtp_server.port))
    done = subprocess.run([str(Path(sys.executable).parent / "bastion"), "advisories", "import", str(tree),
                           "--data-dir", str(data_dir)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [(r, str(m["Subject"])) for m, rs in zip(smtp_server.messages, smtp_server.recipients, strict=True)
            for r in rs] == [("carol@example.org", "[Bastion] shop: PYSEC-2099-1 affects zorblax-core 1.0")]
    (call,) = receiver.calls
    check_signature(secret, *call)
    with bastion.db.read() as session:
        assert session.execute(select(ApplicationAlert.webhook_status)).scalar_one() == "200"
