"""Shared fixtures: every DB-facing test runs on SQLite and on PostgreSQL.

PostgreSQL: ``BASTION_TEST_PG_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``).
Each test gets an empty, migrated database: on SQLite a copy of a migrated template file; on
PostgreSQL one database per test module, cloned once from a migrated template and emptied before
every test (creating a database per test costs ~0.3 s). When the server is unreachable,
the PostgreSQL half fails the run if ``CI`` is set, and otherwise is left out with a loud notice
in the summary, naming how many tests did not run.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from bastion.authz import OPERATOR
from bastion.db import Base, migrate
from bastion.services import Bastion
from bastion.settings import load_settings
from tests.mailbox import smtp_server  # noqa: F401

PG_URL = os.environ.get("BASTION_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = bool(os.environ.get("CI"))
BACKENDS = ("sqlite", "postgresql")
PASSWORD = "a-long-password"  # the password of every user made by ``make_user``

_pg_state: dict[str, object] = {"checked": False, "ok": False, "error": "", "template": None, "skipped": 0}


def _pg_admin_engine():  # type: ignore[no-untyped-def]
    return create_engine(PG_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)


def pg_available() -> bool:
    if not _pg_state["checked"]:
        _pg_state["checked"] = True
        try:
            engine = _pg_admin_engine()
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            engine.dispose()
            _pg_state["ok"] = True
        except Exception as exc:  # noqa: BLE001
            _pg_state["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return bool(_pg_state["ok"])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IN_CI or pg_available():
        return
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("backend") == "postgresql":
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        _pg_state["skipped"] = len(dropped)
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    if _pg_state["skipped"]:
        terminalreporter.write_sep(
            "!",
            f"NOT RUN: {_pg_state['skipped']} PostgreSQL tests: no server at {make_url(PG_URL).render_as_string()} "
            f"({_pg_state['error']}). Start PostgreSQL or set BASTION_TEST_PG_URL; in CI this fails the run.",
            red=True,
        )


def _pg_url_for(database: str) -> str:
    return make_url(PG_URL).set(database=database).render_as_string(hide_password=False)


def _create_pg_database(prefix: str, *, template: str | None = None) -> str:
    """Create a uniquely named PostgreSQL database (a clone of ``template`` if given); its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    clause = f' TEMPLATE "{template}"' if template else ""
    engine = _pg_admin_engine()
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"{clause}'))
    engine.dispose()
    return name


def _drop_pg_database(name: str) -> None:
    engine = _pg_admin_engine()
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def _pg_template() -> str:
    if _pg_state["template"] is None:
        name = _create_pg_database(f"bastion_tmpl_{os.getpid()}")
        migrate(_pg_url_for(name))
        _pg_state["template"] = name
    return str(_pg_state["template"])


def pytest_sessionfinish(session, exitstatus) -> None:  # type: ignore[no-untyped-def]
    template = _pg_state.get("template")
    if template:
        _drop_pg_database(str(template))


_sqlite_template: dict[str, Path] = {}


def _sqlite_template_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if "path" not in _sqlite_template:
        path = tmp_path_factory.mktemp("sqlite-template") / "bastion.db"
        migrate(f"sqlite:///{path}")
        _sqlite_template["path"] = path
    return _sqlite_template["path"]


def _sqlite_copy(directory: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A copy of the migrated SQLite template as ``directory``/bastion.db; its URL."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(_sqlite_template_file(tmp_path_factory), directory / "bastion.db")
    return f"sqlite:///{directory / 'bastion.db'}"


def require_backend(backend: str) -> str:
    """The body of every ``backend`` fixture: PostgreSQL must be reachable when it is asked for
    (locally, ``pytest_collection_modifyitems`` has deselected its tests when it is not)."""
    if backend == "postgresql" and not pg_available():
        pytest.fail(
            f"PostgreSQL is required in CI but unreachable at {PG_URL}: {_pg_state['error']}", pytrace=False
        )
    return backend


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return require_backend(str(request.param))


@contextlib.contextmanager
def fresh_database(backend: str, directory: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh, migrated database: a copy of the SQLite template in ``directory``, or a PostgreSQL
    database cloned from the migrated template and dropped afterwards."""
    if backend == "sqlite":
        yield _sqlite_copy(directory, tmp_path_factory)
        return
    name = _create_pg_database("bastion_t", template=_pg_template())
    try:
        yield _pg_url_for(name)
    finally:
        _drop_pg_database(name)


@pytest.fixture(scope="module")
def _pg_module_database() -> Iterator[Engine]:
    """One migrated PostgreSQL database for the tests of a module, which ``database_url`` empties
    before each of them."""
    import bastion.accounts.models  # noqa: F401  (every table in Base.metadata)
    import bastion.advisories.models  # noqa: F401
    import bastion.events  # noqa: F401
    import bastion.insights.models  # noqa: F401
    import bastion.packaging.models  # noqa: F401
    import bastion.scanning.models  # noqa: F401
    import bastion.simple.models  # noqa: F401
    import bastion.tuf.models  # noqa: F401

    name = _create_pg_database("bastion_m", template=_pg_template())
    engine = create_engine(_pg_url_for(name), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            tables = set(conn.execute(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
            )).scalars())
        assert tables == {t.name for t in Base.metadata.sorted_tables}, "a table the wipe would miss"
        yield engine
    finally:
        engine.dispose()
        _drop_pg_database(name)


def _empty_pg_database(engine: Engine) -> None:
    """Back to the state of a fresh clone of the template: no rows (it holds none), and every
    sequence restarted so that ids start at 1 again."""
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL lock_timeout = '10s'"))  # a leaked connection fails loudly
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
        sequences = conn.execute(text("SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'"))
        for sequence in sequences.scalars().all():
            conn.execute(text(f'ALTER SEQUENCE "{sequence}" RESTART'))


@pytest.fixture
def database_url(backend: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
                 request: pytest.FixtureRequest) -> str:
    """An empty, migrated database on the chosen backend: on SQLite a copy of the template in
    ``tmp_path``/data, on PostgreSQL the module's database, emptied first."""
    if backend == "sqlite":
        return _sqlite_copy(tmp_path / "data", tmp_path_factory)
    engine: Engine = request.getfixturevalue("_pg_module_database")
    _empty_pg_database(engine)
    return engine.url.render_as_string(hide_password=False)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def bastion(data_dir: Path, database_url: str) -> Iterator[Bastion]:
    """Services on a fresh data dir and database (SQLite and PostgreSQL). The database is migrated
    already: no migration check here."""
    instance = Bastion(load_settings(data_dir, database_url=database_url), run_migrations=False)
    yield instance
    instance.close()


@pytest.fixture
def client(bastion: Bastion):  # type: ignore[no-untyped-def]
    """An in-process HTTP client for the whole app (read hot path included)."""
    from starlette.testclient import TestClient

    from bastion.app import create_app

    with TestClient(create_app(bastion=bastion), base_url="http://testserver") as test_client:
        settle_tuf(bastion)
        yield test_client


def settle_tuf(bastion: Bastion, timeout: float = 30.0) -> None:
    """Wait until the started server's TUF work is done: the start-up refresh and every queued
    project signed. Tests that compare database rows before and after a request call it first,
    so that background signing does not show up as a change the request made."""
    import time

    from bastion.tuf.repository import queue_depth

    if bastion.tuf_worker is None:
        return
    deadline = time.monotonic() + timeout
    assert bastion.tasks.drain(timeout), "background tasks did not finish"
    while True:
        with bastion.db.read() as session:
            depth, _ = queue_depth(session)
        if depth == 0:
            return
        assert time.monotonic() < deadline, f"{depth} project(s) still queued for TUF signing after {timeout}s"
        bastion.tuf_worker.wake(now=True)
        time.sleep(0.02)


@functools.cache
def password_hash(password: str = PASSWORD) -> str:
    """The argon2 hash of ``password``, computed once per session: hashing is most of what
    creating a user costs."""
    from bastion.accounts.passwords import hash_password

    return hash_password(password)


def make_user(bastion: Bastion, name: str, *, admin: bool = False, projects: list[str] | None = None) -> str:
    """Create a user (optionally admin) whose password is ``PASSWORD`` and return a fresh API token
    for them, in one transaction. The row is written directly, with the cached hash (no
    ``user.created`` event)."""
    from bastion.accounts.models import User

    with bastion.db.write() as session:
        session.add(User(username=name, username_key=name.lower(), email=f"{name}@example.org",
                         password_hash=password_hash(), is_admin=admin))
        session.flush()
        return _new_token(session, bastion, name, projects)


def make_token(bastion: Bastion, name: str, *, projects: list[str] | None = None) -> str:
    """A fresh API token (valid for a day) for the existing user ``name``."""
    with bastion.db.write() as session:
        return _new_token(session, bastion, name, projects)


def _new_token(session, bastion: Bastion, name: str, projects: list[str] | None) -> str:  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from bastion.accounts import service

    new = service.create_token(session, bastion.secret, name, projects=projects,
                               expires_in=timedelta(days=1), principal=OPERATOR)
    return new.token


def basic_auth(token: str, username: str = "__token__") -> dict[str, str]:
    raw = base64.b64encode(f"{username}:{token}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def post_upload(client, token: str | None, path: Path, form: dict[str, str],  # type: ignore[no-untyped-def]
                *, content_type: str = "application/octet-stream", filename: str | None = None,
                headers: dict[str, str] | None = None):
    """POST /legacy/ as twine does (multipart, Basic __token__, or ``headers`` instead)."""
    if headers is None:
        headers = basic_auth(token) if token else {}
    with open(path, "rb") as handle:
        return client.post(
            "/legacy/", data=form, files={"content": (filename or path.name, handle, content_type)}, headers=headers
        )


def snapshot_state(bastion: Bastion) -> dict[str, object]:
    """Everything an upload could change: row counts, rendered pages, blobs on disk."""
    from sqlalchemy import func, select

    from bastion.accounts.models import ApiToken, User
    from bastion.events import Event
    from bastion.packaging.models import DeletedFilename, File, JournalEntry, Project, Release, Role
    from bastion.simple.models import RenderedPage

    with bastion.db.read() as session:
        counts = {
            model.__tablename__: session.execute(select(func.count()).select_from(model)).scalar()
            for model in (User, ApiToken, Project, Role, Release, File, DeletedFilename, JournalEntry, Event)
        }
        pages = {row.key: row.sha256 for row in session.execute(select(RenderedPage)).scalars()}
    blob_root = bastion.settings.effective_blob_dir
    blobs = sorted(str(p.relative_to(blob_root)) for p in blob_root.rglob("*") if p.is_file())
    tmp_files = sorted(p.name for p in bastion.tmp_dir.iterdir())
    return {"counts": counts, "pages": pages, "blobs": blobs, "tmp": tmp_files}
