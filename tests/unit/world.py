"""A prepared "world" shared by the tests of one module on one backend (test_authz.py,
test_api.py, test_tokens.py, test_events.py): a database and data dir with users, projects,
releases and tokens, built once, and restored row for row after a test changed it. Also the full
state of an instance (``state``), which test_cli.py compares too.

The fixtures (``world``, ``w``) are in tests/unit/conftest.py.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import shutil
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

import bastion.accounts.models  # noqa: F401  (registers tables)
import bastion.events  # noqa: F401
import bastion.packaging.models  # noqa: F401
import bastion.simple.models  # noqa: F401
from bastion.accounts import service as accounts
from bastion.authz import OPERATOR
from bastion.db import Base
from bastion.services import Bastion
from bastion.settings import load_settings
from tests.conftest import PASSWORD, fresh_database, post_upload
from tests.distbuilder import make_wheel, upload_form


def db_rows(bastion: Bastion) -> dict[str, list[tuple]]:
    """Every row of every table, in primary-key order."""
    with bastion.db.read() as session:
        return {
            table.name: [tuple(row) for row in session.execute(
                select(table).order_by(*table.primary_key.columns)).all()]
            for table in Base.metadata.sorted_tables
        }


def state(bastion: Bastion) -> dict[str, Any]:
    """Everything a request could change: all rows, the blobs on disk, the temporary files."""
    root = bastion.settings.effective_blob_dir
    return {
        "db": db_rows(bastion),
        "blobs": sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()),
        "tmp": sorted(p.name for p in bastion.tmp_dir.iterdir()),
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_events(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Actions of the events ``after`` has and ``before`` had not."""
    columns = list(bastion.events.Event.__table__.columns.keys())
    ident, action = columns.index("id"), columns.index("action")
    known = {row[ident] for row in before["db"]["events"]}
    return [row[action] for row in after["db"]["events"] if row[ident] not in known]


class World:
    """A database and data dir shared by one module's tests on one backend."""

    def __init__(self, backend: str, root: Path, tmp_path_factory: pytest.TempPathFactory,
                 secret: bytes | None = None) -> None:
        self.backend = backend
        self.root = root
        data_dir = root / "data"
        data_dir.mkdir(parents=True)
        if secret is not None:  # a world copied from another backend keeps its tokens valid
            (data_dir / "secret.key").write_bytes(secret)
        self._database = contextlib.ExitStack()  # its own database, dropped by ``close``
        url = self._database.enter_context(fresh_database(backend, data_dir, tmp_path_factory))
        # TUF off: a world is compared row for row and copied between backends, which the TUF
        # worker's background signing (and a key set per data dir) would defeat; the TUF tests
        # (test_tuf_*.py) cover signing.
        self.bastion = Bastion(load_settings(data_dir, database_url=url, tuf="off"), run_migrations=False)
        self.tokens: dict[str, str] = {}
        self.token_ids: dict[str, str] = {}
        self.files: dict[str, Path] = {}
        self._client_cm: Any = None
        self.client: Any = None
        self.baseline: dict[str, Any] | None = None
        self.known_clean = False
        self._rows: dict[str, list[dict]] = {}

    # -- building ----------------------------------------------------------------------------
    def start_client(self) -> None:
        from starlette.testclient import TestClient

        from bastion.app import create_app

        self._client_cm = TestClient(create_app(bastion=self.bastion), base_url="http://testserver")
        self.client = self._client_cm.__enter__()

    def user(self, name: str, *, admin: bool = False) -> None:
        with self.bastion.db.write() as session:
            accounts.create_user(session, name, f"{name}@example.org", PASSWORD, principal=OPERATOR,
                                 secret=self.bastion.secret)
            if admin:
                accounts.set_admin(session, name, principal=OPERATOR, secret=self.bastion.secret)

    def token(self, key: str, user: str, *, projects: list[str] | None = None,
              expires: timedelta | None = timedelta(days=1)) -> str:
        with self.bastion.db.write() as session:
            new = accounts.create_token(session, self.bastion.secret, user, projects=projects,
                                        expires_in=expires, principal=OPERATOR)
        self.tokens[key] = new.token
        self.token_ids[key] = new.token_id
        return new.token

    def wheel(self, name: str, version: str) -> Path:
        key = f"{name}-{version}"
        if key not in self.files:
            directory = self.root / "dists" / key
            directory.mkdir(parents=True)
            self.files[key] = make_wheel(directory, name, version)
        return self.files[key]

    def upload(self, token: str | None, name: str, version: str, *, headers: dict[str, str] | None = None):
        path = self.wheel(name, version)
        return post_upload(self.client, token, path, upload_form(path, name, version), headers=headers)

    # -- state -------------------------------------------------------------------------------
    def freeze(self) -> None:
        """Remember the current state as the one every test starts from."""
        self.baseline = state(self.bastion)
        with self.bastion.db.read() as session:
            self._rows = {
                table.name: [dict(row._mapping) for row in session.execute(select(table)).all()]
                for table in Base.metadata.sorted_tables
            }

    def state(self) -> dict[str, Any]:
        return state(self.bastion)

    _INFRASTRUCTURE = ("backend", "root", "_database", "bastion", "_client_cm", "client", "baseline", "_rows",
                       "known_clean")

    def export(self) -> dict[str, Any]:
        """What another backend's world needs to become a copy of this one (after ``freeze``). The
        blobs are copied now: the other backend's world opens after this one's tests ran, and
        must not inherit what the last of them left (the next test's reset would remove it)."""
        blobs = self.root / "seed-blobs"
        shutil.copytree(self.bastion.settings.effective_blob_dir, blobs)
        return {"rows": self._rows, "blobs": blobs, "secret": self.bastion.secret,
                "attrs": copy.deepcopy({k: v for k, v in vars(self).items() if k not in self._INFRASTRUCTURE})}

    def load(self, seed: dict[str, Any]) -> None:
        """Become a copy of the exported world: the same rows, blobs and tokens."""
        assert self.bastion.secret == seed["secret"]
        with self.bastion.db.write() as session:
            for table in Base.metadata.sorted_tables:
                if seed["rows"][table.name]:
                    session.execute(table.insert(), seed["rows"][table.name])
            if self.backend == "postgresql":  # the copied ids were not drawn from the sequences
                for table in Base.metadata.sorted_tables:
                    column = next(iter(table.primary_key.columns))
                    if len(table.primary_key.columns) == 1 and column.autoincrement is not False \
                            and column.type.python_type is int:
                        session.execute(text(
                            f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column.name}'), "
                            f"COALESCE(MAX({column.name}), 0) + 1, false) FROM {table.name}"))
        shutil.copytree(seed["blobs"], self.bastion.settings.effective_blob_dir, dirs_exist_ok=True)
        self.bastion.notify_change(0)
        for key, value in copy.deepcopy(seed["attrs"]).items():
            setattr(self, key, value)

    def reset(self) -> None:
        """Bring the world back to the frozen state if anything changed it."""
        assert self.baseline is not None
        if self.known_clean:  # the last test saw the frozen state at its end
            self.known_clean = False
            return
        if state(self.bastion) == self.baseline:
            return
        with self.bastion.db.write() as session:
            for table in reversed(Base.metadata.sorted_tables):
                session.execute(table.delete())
            for table in Base.metadata.sorted_tables:
                if self._rows[table.name]:
                    session.execute(table.insert(), self._rows[table.name])
        root = self.bastion.settings.effective_blob_dir
        for path in root.rglob("*"):
            if path.is_file() and str(path.relative_to(root)) not in self.baseline["blobs"]:
                path.unlink()
        for path in self.bastion.tmp_dir.iterdir():
            if path.name not in self.baseline["tmp"]:
                path.unlink()
        self.bastion.notify_change(0)  # every ReadAPI drops its cached pages
        assert state(self.bastion) == self.baseline, "the world could not be restored"

    def close(self) -> None:
        if self._client_cm is not None:
            self._client_cm.__exit__(None, None, None)
        self.bastion.close()
        self._database.close()


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to build a module's world: ``build`` fills it, ``label`` names it; with ``share``, the
    second backend gets a row-for-row copy of the first one's (building means hashing passwords,
    which is slow), else each backend builds its own."""

    build: Callable[[World], None]
    label: str
    share: bool = True


_SEEDS: dict[str, dict[str, Any]] = {}


def open_world(backend: str, tmp_path_factory: pytest.TempPathFactory, recipe: Recipe) -> Iterator[World]:
    """A world built by ``recipe`` (or copied from the other backend's), frozen, closed afterwards."""
    seed = _SEEDS.get(recipe.label) if recipe.share else None
    world = World(backend, tmp_path_factory.mktemp(f"{recipe.label}-{backend}"), tmp_path_factory,
                  secret=seed["secret"] if seed else None)
    try:
        world.start_client()
        if seed:
            world.load(seed)
        else:
            recipe.build(world)
        world.freeze()
        if recipe.share and not seed:
            _SEEDS[recipe.label] = world.export()
        yield world
    finally:
        world.close()
