"""Insights: buffered download counts, critical projects, the 2FA figures, their chart and pages."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import event, func, select
from starlette.testclient import TestClient

from bastion.accounts.models import User, WebAuthnCredential
from bastion.db import Database
from bastion.events import Event, verify_chain
from bastion.insights import tasks
from bastion.insights.chart import line_chart_svg
from bastion.insights.critical import critical_project_ids, critical_slots, is_critical, recompute_critical
from bastion.insights.downloads import DownloadCounter
from bastion.insights.mfa_stats import compute_stats, history, take_snapshot
from bastion.insights.models import CriticalProject, DownloadCount, MfaSnapshot
from bastion.insights.routes import router
from bastion.packaging.models import File, Project, Release, Role
from bastion.services import Bastion
from bastion.simple.serve import ReadAPI

SVG = "{http://www.w3.org/2000/svg}"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TODAY = NOW.date()


# -- building a world ------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Made:
    project_id: int
    file_id: int
    path: str
    name: str


def make_projects(bastion: Bastion, names: list[str], *, metadata: bool = False) -> list[Made]:
    """One project per name, each with one release and one wheel (rows only, no blob)."""
    made = []
    with bastion.db.write() as session:
        for name in names:
            project = Project(name=name, normalized_name=name, ultranormalized_name=name.replace("-", ""))
            session.add(project)
            session.flush()
            release = Release(project_id=project.id, version="1.0", canonical_version="1", core_metadata={})
            session.add(release)
            session.flush()
            digest = hashlib.sha256(name.encode()).hexdigest()
            filename = f"{name.replace('-', '_')}-1.0-py3-none-any.whl"
            path = f"packages/{digest[:2]}/{digest[2:4]}/{digest[4:]}/{filename}"
            row = File(
                release_id=release.id, project_id=project.id, filename=filename, packagetype="bdist_wheel",
                python_version="py3", size=5, md5_digest=digest[:32], sha256_digest=digest,
                blake2_256_digest=hashlib.blake2b(name.encode(), digest_size=32).hexdigest(), path=path,
                metadata_sha256=digest if metadata else None,
            )
            session.add(row)
            session.flush()
            made.append(Made(project.id, row.id, path, name))
    return made


def make_users(bastion: Bastion, spec: dict[str, tuple[bool, int]]) -> dict[str, int]:
    """Users by name: (has TOTP, number of WebAuthn credentials); their ids."""
    ids = {}
    with bastion.db.write() as session:
        for name, (totp, keys) in spec.items():
            user = User(username=name, username_key=name, email=f"{name}@example.org", password_hash="x",
                        totp_secret="encrypted" if totp else None)
            session.add(user)
            session.flush()
            for number in range(keys):
                session.add(WebAuthnCredential(user_id=user.id, credential_id=f"{name}-{number}",
                                               public_key=b"k", name=f"key {number}"))
            ids[name] = user.id
    return ids


def grant(bastion: Bastion, project_id: int, user_id: int, role: str = "owner") -> None:
    with bastion.db.write() as session:
        session.add(Role(project_id=project_id, user_id=user_id, role=role))


def add_downloads(bastion: Bastion, made: Made, count: int, day: date = TODAY) -> None:
    with bastion.db.write() as session:
        session.add(DownloadCount(file_id=made.file_id, project_id=made.project_id, day=day, count=count))


def stored_counts(bastion: Bastion) -> dict[tuple[int, date], int]:
    with bastion.db.read() as session:
        rows = session.execute(select(DownloadCount.file_id, DownloadCount.day, DownloadCount.count)).all()
    return {(row.file_id, row.day): row.count for row in rows}


def critical_names(bastion: Bastion) -> set[str]:
    with bastion.db.read() as session:
        return set(session.execute(
            select(Project.normalized_name).join(CriticalProject, CriticalProject.project_id == Project.id)
        ).scalars())


def utc_today() -> date:
    """The real day (the counter and the pages use the clock; the critical tests a fixed NOW)."""
    return datetime.now(UTC).date()


# -- download counter --------------------------------------------------------------------------
def test_counter_buffers_in_memory_and_flushes_adding(bastion: Bastion) -> None:
    one, two = make_projects(bastion, ["one", "two"])
    counter = DownloadCounter()
    counter.count(one.path)
    counter.count(one.path)
    counter.count(two.path)
    counter.count("packages/no/such/file.whl")  # deleted since: dropped
    assert counter.pending() == {one.path: 2, two.path: 1, "packages/no/such/file.whl": 1}
    assert stored_counts(bastion) == {}  # nothing written before the flush

    assert counter.flush(bastion.db) == 3
    assert counter.pending() == {}
    counter.count(one.path)
    assert counter.flush(bastion.db) == 1
    assert counter.flush(bastion.db) == 0  # nothing buffered: no transaction
    assert stored_counts(bastion) == {(one.file_id, utc_today()): 3, (two.file_id, utc_today()): 1}
    with bastion.db.read() as session:
        project_ids = set(session.execute(select(DownloadCount.project_id)).scalars())
    assert project_ids == {one.project_id, two.project_id}


def test_flush_adds_to_the_row_another_worker_wrote(bastion: Bastion) -> None:
    (one,) = make_projects(bastion, ["one"])
    first, second = DownloadCounter(), DownloadCounter()  # two worker processes
    first.count(one.path)
    second.count(one.path)
    second.count(one.path)
    first.flush(bastion.db, day=TODAY)
    second.flush(bastion.db, day=TODAY)
    first.count(one.path)
    first.flush(bastion.db, day=TODAY + timedelta(days=1))
    assert stored_counts(bastion) == {(one.file_id, TODAY): 3, (one.file_id, TODAY + timedelta(days=1)): 1}


def test_counting_from_threads_while_flushing_loses_nothing(bastion: Bastion) -> None:
    made = make_projects(bastion, ["one", "two"])
    counter = DownloadCounter()
    per_thread, threads = 3000, 8
    done = threading.Event()

    def download(index: int) -> None:
        for _ in range(per_thread):
            counter.count(made[index % 2].path)

    def flush_repeatedly() -> None:
        while not done.is_set():
            counter.flush(bastion.db, day=TODAY)

    flusher = threading.Thread(target=flush_repeatedly)
    flusher.start()
    workers = [threading.Thread(target=download, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    done.set()
    flusher.join()
    counter.flush(bastion.db, day=TODAY)
    counts = stored_counts(bastion)
    assert sum(counts.values()) == per_thread * threads
    assert counts[(made[0].file_id, TODAY)] == counts[(made[1].file_id, TODAY)] == per_thread * threads // 2


def test_database_error_puts_the_counts_back(bastion: Bastion, tmp_path: Path) -> None:
    (one,) = make_projects(bastion, ["one"])
    counter = DownloadCounter()
    counter.count(one.path)
    counter.count(one.path)
    broken = Database(f"sqlite:///{tmp_path / 'unmigrated.db'}")  # no tables: every query fails
    try:
        with pytest.raises(Exception, match="no such table"):
            counter.flush(broken, day=TODAY)
    finally:
        broken.dispose()
    assert counter.pending() == {one.path: 2}
    counter.count(one.path)
    assert counter.flush(bastion.db, day=TODAY) == 3
    assert stored_counts(bastion) == {(one.file_id, TODAY): 3}


# -- the read hot path counts downloads ---------------------------------------------------------
def test_read_api_counts_whole_file_downloads_only(bastion: Bastion) -> None:
    (one,) = make_projects(bastion, ["one"], metadata=True)
    bastion.blobs.put_bytes(one.path, b"wheel")
    bastion.blobs.put_bytes(one.path + ".metadata", b"Metadata-Version: 2.1\n")
    client = TestClient(ReadAPI(bastion, FastAPI()), base_url="http://testserver")

    response = client.get("/" + one.path)
    assert response.status_code == 200 and response.content == b"wheel"
    assert bastion.downloads.pending() == {one.path: 1}

    assert client.head("/" + one.path).status_code == 200
    assert client.get("/" + one.path + ".metadata").status_code == 200
    etag = response.headers["etag"]
    assert client.get("/" + one.path, headers={"If-None-Match": etag}).status_code == 304
    assert client.get("/" + one.path.replace(".whl", "-x.whl")).status_code == 404
    assert bastion.downloads.pending() == {one.path: 1}

    assert tasks.flush_downloads(bastion) == 1
    assert stored_counts(bastion) == {(one.file_id, utc_today()): 1}


# -- critical projects -------------------------------------------------------------------------
def test_top_one_percent_of_200_projects_is_two(bastion: Bastion) -> None:
    made = make_projects(bastion, [f"p{i:03d}" for i in range(200)])
    with bastion.db.write() as session:
        for index, item in enumerate(made):
            session.add(DownloadCount(file_id=item.file_id, project_id=item.project_id, day=TODAY, count=index + 1))
    with bastion.db.write() as session:
        marked = recompute_critical(session, percent=1.0, window=timedelta(days=180), now=NOW)
    assert marked == ["p199", "p198"]  # best ranked first
    with bastion.db.read() as session:
        assert critical_project_ids(session) == {made[199].project_id, made[198].project_id}
        assert is_critical(session, made[199].project_id)
        assert not is_critical(session, made[0].project_id)
        rows = {row.project_id: row for row in session.execute(select(CriticalProject)).scalars()}
        assert rows[made[199].project_id].downloads == 200
        assert rows[made[199].project_id].since == NOW
        events = session.execute(select(Event).where(Event.action == "project.critical").order_by(Event.id)).scalars()
        recorded = [(e.subject, e.details["downloads"], e.details["rank"]) for e in events]
    assert recorded == [("project:p199", 200, 1), ("project:p198", 199, 2)]
    with bastion.db.read() as session:
        assert verify_chain(session).ok  # the events extend the audit chain like any other

    with bastion.db.write() as session:  # again: nothing new, no new event
        assert recompute_critical(session, percent=1.0, window=timedelta(days=180), now=NOW) == []
    with bastion.db.read() as session:
        assert session.execute(
            select(func.count()).select_from(Event).where(Event.action == "project.critical")
        ).scalar() == 2


def test_slots_round_up_without_float_noise() -> None:
    assert critical_slots(200, 1.0) == 2
    assert critical_slots(200, 1.1) == 3
    assert critical_slots(1000, 0.7) == 7
    assert critical_slots(5, 1.0) == 1
    assert critical_slots(0, 1.0) == 0


def test_only_downloaded_projects_qualify(bastion: Bastion) -> None:
    made = make_projects(bastion, [f"p{i:03d}" for i in range(300)])  # 3 slots at 1 %
    add_downloads(bastion, made[7], 1)
    add_downloads(bastion, made[8], 0)  # a row of zero downloads is no download
    with bastion.db.write() as session:
        assert recompute_critical(session, percent=1.0, window=timedelta(days=180), now=NOW) == ["p007"]


def test_window_leaves_out_older_days(bastion: Bastion) -> None:
    old, recent, edge = make_projects(bastion, ["old", "recent", "edge"])
    add_downloads(bastion, old, 10_000, TODAY - timedelta(days=200))
    add_downloads(bastion, recent, 5, TODAY)
    add_downloads(bastion, edge, 4, TODAY - timedelta(days=179))
    add_downloads(bastion, edge, 4, TODAY - timedelta(days=181))  # outside: edge has 4, not 8
    with bastion.db.write() as session:
        assert recompute_critical(session, percent=50.0, window=timedelta(days=180), now=NOW) == ["recent", "edge"]


def test_critical_is_sticky_after_downloads_stop(bastion: Bastion) -> None:
    first, second, *_ = make_projects(bastion, [f"p{i}" for i in range(10)])  # 1 slot at 10 %
    add_downloads(bastion, first, 100, TODAY)
    with bastion.db.write() as session:
        assert recompute_critical(session, percent=10.0, window=timedelta(days=30), now=NOW) == ["p0"]
    later = NOW + timedelta(days=90)  # p0's downloads are out of the window; p1 is downloaded now
    add_downloads(bastion, second, 3, later.date())
    with bastion.db.write() as session:
        assert recompute_critical(session, percent=10.0, window=timedelta(days=30), now=later) == ["p1"]
    assert critical_names(bastion) == {"p0", "p1"}


def test_daily_task_uses_the_settings_and_is_idempotent(bastion: Bastion) -> None:
    made = make_projects(bastion, [f"p{i:02d}" for i in range(20)])
    for index, item in enumerate(made):
        add_downloads(bastion, item, index + 1, TODAY - timedelta(days=index))
    bastion.settings = dataclasses.replace(bastion.settings, critical_percent=10.0, critical_window="15d")
    # A 15-day window covers the days of p00..p15 (p16..p19 are older): 2 slots of 20 at 10 %.
    assert tasks.daily_insights(bastion, now=NOW) == ["p15", "p14"]
    assert tasks.daily_insights(bastion, now=NOW + timedelta(hours=3)) == []
    bastion.settings = dataclasses.replace(bastion.settings, critical_percent=15.0)
    assert tasks.daily_insights(bastion, now=NOW + timedelta(hours=6)) == ["p13"]
    assert critical_names(bastion) == {"p15", "p14", "p13"}
    with bastion.db.read() as session:
        snapshots = session.execute(select(MfaSnapshot)).scalars().all()
    assert [s.day for s in snapshots] == [TODAY]
    assert snapshots[0].data["critical_projects"] == 3


def test_daily_task_flushes_this_process_first(bastion: Bastion) -> None:
    (one,) = make_projects(bastion, ["one"])
    bastion.downloads.count(one.path)
    assert tasks.daily_insights(bastion) == ["one"]
    assert bastion.downloads.pending() == {}


# -- 2FA figures -------------------------------------------------------------------------------
def build_mfa_world(bastion: Bastion) -> dict[str, int]:
    """alice: TOTP; bob: two security keys; carol: both; dave, erin: none.

    p1 (critical): alice owner, dave maintainer -> not all 2FA
    p2 (critical): bob owner, alice maintainer  -> all 2FA
    p3: carol owner -> all 2FA;  p4: no roles -> not counted;  p5: erin owner -> not all 2FA
    """
    users = make_users(bastion, {"alice": (True, 0), "bob": (False, 2), "carol": (True, 1),
                                 "dave": (False, 0), "erin": (False, 0)})
    p1, p2, p3, _p4, p5 = make_projects(bastion, ["p1", "p2", "p3", "p4", "p5"])
    grant(bastion, p1.project_id, users["alice"])
    grant(bastion, p1.project_id, users["dave"], "maintainer")
    grant(bastion, p2.project_id, users["bob"])
    grant(bastion, p2.project_id, users["alice"], "maintainer")
    grant(bastion, p3.project_id, users["carol"])
    grant(bastion, p5.project_id, users["erin"])
    with bastion.db.write() as session:
        session.add_all([CriticalProject(project_id=p1.project_id), CriticalProject(project_id=p2.project_id)])
    return users


def test_stats_of_a_hand_built_world(bastion: Bastion) -> None:
    build_mfa_world(bastion)
    with bastion.db.read() as session:
        stats = compute_stats(session)
    assert stats.as_dict() == {
        "users": 5, "users_any_2fa": 3, "users_any_2fa_share": 0.6,
        "users_totp": 2, "users_totp_share": 0.4,
        "users_webauthn": 2, "users_webauthn_share": 0.4,
        "critical_projects": 2,
        "critical_maintainers": 3, "critical_maintainers_2fa": 2, "critical_maintainers_2fa_share": 2 / 3,
        "projects": 5, "projects_all_2fa": 2, "projects_all_2fa_share": 0.4,
    }


def test_stats_of_an_empty_index(bastion: Bastion) -> None:
    with bastion.db.read() as session:
        stats = compute_stats(session)
    assert stats.users == stats.projects == stats.critical_maintainers == 0
    assert stats.users_any_2fa_share == stats.critical_maintainers_2fa_share == stats.projects_all_2fa_share == 0.0


def test_stats_take_a_fixed_number_of_queries(bastion: Bastion) -> None:
    """Aggregates, not a loop over users: the number of statements does not grow with them."""
    build_mfa_world(bastion)
    make_users(bastion, {f"u{i}": (i % 2 == 0, i % 3) for i in range(60)})
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(bastion.db.engine, "before_cursor_execute", record)
    try:
        with bastion.db.read() as session:
            stats = compute_stats(session)
    finally:
        event.remove(bastion.db.engine, "before_cursor_execute", record)
    assert stats.users == 65
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) <= 5


def test_snapshot_upsert_is_idempotent_and_history_is_ordered(bastion: Bastion) -> None:
    users = build_mfa_world(bastion)
    with bastion.db.write() as session:
        take_snapshot(session, TODAY - timedelta(days=1))
        take_snapshot(session, TODAY)
    make_users(bastion, {"frank": (True, 0)})
    with bastion.db.write() as session:
        take_snapshot(session, TODAY)  # again the same day: replaced, not added
    with bastion.db.write() as session:
        take_snapshot(session, TODAY - timedelta(days=400))  # older than a year: not in the history
    with bastion.db.read() as session:
        past = history(session, today=TODAY)
        assert session.execute(select(func.count()).select_from(MfaSnapshot)).scalar() == 3
    assert [day for day, _ in past] == [TODAY - timedelta(days=1), TODAY]
    assert past[0][1]["users"] == 5 and past[1][1]["users"] == 6
    assert past[1][1]["users_any_2fa_share"] == pytest.approx(4 / 6)
    assert len(users) == 5


# -- the chart ---------------------------------------------------------------------------------
def test_chart_is_well_formed_with_one_line_per_series_and_escapes_labels() -> None:
    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(30)]
    series = {
        "Users with 2FA": [(day, i / 60) for i, day in enumerate(days)],
        "Share <critical> & more": [(day, 0.5 + i / 100) for i, day in enumerate(days)],
        "Projects": [(day, 1.5) for day in days[:10]],  # clamped to 100 %
    }
    svg = line_chart_svg(series, title="2FA <over> time")
    root = ET.fromstring(svg)  # parses: everything escaped
    assert root.tag == SVG + "svg"
    assert root.findtext(SVG + "title") == "2FA <over> time"
    assert "Users with 2FA" in root.findtext(SVG + "desc", "")
    assert len(root.findall(f".//{SVG}polyline")) == 3
    assert len(root.findall(f".//{SVG}circle")) == 30 + 30 + 10
    assert "&lt;critical&gt; &amp; more" in svg
    texts = [t.text for t in root.iter(SVG + "text")]
    assert "Share <critical> & more" in texts
    assert "2026-01-01" in texts and "2026-01-30" in texts
    assert {"0 %", "50 %", "100 %"} <= set(texts)
    for forbidden in ("<script", "href", "style=", "url(", "<style", "<foreignObject"):
        assert forbidden not in svg
    ys = [float(c.get("cy", "-1")) for c in root.iter(SVG + "circle")]
    assert min(ys) >= 0  # clamped inside the plot


def test_chart_of_one_snapshot_and_of_none() -> None:
    one = ET.fromstring(line_chart_svg({"Users with 2FA": [(date(2026, 1, 1), 0.25)]}, title="t"))
    assert len(one.findall(f".//{SVG}circle")) == 1
    assert "no snapshots yet" not in ET.tostring(one, encoding="unicode")

    empty_svg = line_chart_svg({"Users with 2FA": [], "Projects": []}, title="t")
    empty = ET.fromstring(empty_svg)
    assert "no snapshots yet" in [t.text for t in empty.iter(SVG + "text")]
    assert empty.findall(f".//{SVG}polyline") == []


def test_chart_legend_wraps_long_labels() -> None:
    labels = {f"A rather long series label number {i}": [(date(2026, 1, 1), 0.1 * i)] for i in range(5)}
    root = ET.fromstring(line_chart_svg(labels, title="t", width=400, height=200))
    assert int(root.get("height", "0")) > 200  # more legend rows, taller chart


# -- the public pages --------------------------------------------------------------------------
@pytest.fixture
def stats_client(bastion: Bastion):  # type: ignore[no-untyped-def]
    """The dashboard's router alone (app.py wires it into the real app)."""
    app = FastAPI()
    app.state.bastion = bastion
    app.include_router(router)
    with TestClient(app, base_url="http://testserver") as client:
        yield client


def test_stats_json(bastion: Bastion, stats_client: TestClient) -> None:
    build_mfa_world(bastion)
    today = utc_today()
    with bastion.db.write() as session:
        take_snapshot(session, today - timedelta(days=1))
        take_snapshot(session, today)
    response = stats_client.get("/stats/2fa.json")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "max-age=60, public"
    body = response.json()
    assert body["users"] == 5 and body["users_any_2fa"] == 3 and body["users_any_2fa_share"] == 0.6
    assert body["critical_maintainers_2fa_share"] == pytest.approx(2 / 3)
    assert body["projects_all_2fa"] == 2 and body["critical_projects"] == 2
    assert body["history"] == [
        {"day": day.isoformat(), "users_any_2fa_share": 0.6,
         "critical_maintainers_2fa_share": pytest.approx(2 / 3), "projects_all_2fa_share": 0.4}
        for day in (today - timedelta(days=1), today)
    ]


def test_stats_page(bastion: Bastion, stats_client: TestClient) -> None:
    build_mfa_world(bastion)
    with bastion.db.write() as session:
        take_snapshot(session, utc_today())
    response = stats_client.get("/stats/2fa")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "Content-Security-Policy" in response.headers
    html = response.text
    assert "<svg" in html and "<polyline" in html and "<script" not in html
    assert 'href="/stats/2fa.json"' in html
    assert "60.0&nbsp;%" in html  # users with 2FA
    assert "66.7&nbsp;%" in html  # critical maintainers
    assert "40.0&nbsp;%" in html  # projects fully on 2FA
    assert "3 of 5" in html and "2 of 3" in html
    assert "no snapshots yet" not in html


def test_stats_page_of_a_new_index(bastion: Bastion, stats_client: TestClient) -> None:
    response = stats_client.get("/stats/2fa")
    assert response.status_code == 200
    assert "no snapshots yet" in response.text
    assert stats_client.get("/stats/2fa.json").json()["history"] == []
