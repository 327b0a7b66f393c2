"""Who may do what: every route x every principal, and ``bastion.authz.decide`` on its own.

The route matrix runs against one prepared world per backend (users, projects, releases, tokens);
after a test changes it, the world is restored row for row, so every case starts from the same
state. A refusal must leave every table, every blob and the temporary directory as they were.

The machinery (``World``, ``open_world``, ``state``) is shared with test_tokens.py, test_api.py,
test_events.py and test_cli.py: this suite may only add those six files.
"""

from __future__ import annotations

import copy
import shutil
import uuid
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
from bastion.authz import OPERATOR, Permission, Principal, decide
from bastion.db import Base
from bastion.packaging import service as packaging
from bastion.packaging.models import File, Release
from bastion.services import Bastion
from bastion.settings import load_settings
from tests.conftest import (
    BACKENDS,
    _pg_admin_engine,
    _pg_template,
    _pg_url_for,
    _sqlite_template_file,
    basic_auth,
    pg_available,
)
from tests.distbuilder import make_wheel, upload_form

# --------------------------------------------------------------------------------------------
# Shared machinery: a prepared world per backend, its full state, and restoring it.
# --------------------------------------------------------------------------------------------


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
        self.pg_name: str | None = None
        if backend == "sqlite":
            shutil.copy(_sqlite_template_file(tmp_path_factory), data_dir / "bastion.db")
            url = f"sqlite:///{data_dir / 'bastion.db'}"
        else:
            self.pg_name = f"bastion_w_{uuid.uuid4().hex[:12]}"
            engine = _pg_admin_engine()
            with engine.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{self.pg_name}" TEMPLATE "{_pg_template()}"'))
            engine.dispose()
            url = _pg_url_for(self.pg_name)
        self.bastion = Bastion(load_settings(data_dir, database_url=url), run_migrations=False)
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
            accounts.create_user(session, name, f"{name}@example.org", "a-long-password", principal=OPERATOR,
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
        if headers is None:
            headers = basic_auth(token) if token else {}
        with open(path, "rb") as handle:
            return self.client.post("/legacy/", data=upload_form(path, name, version), headers=headers,
                                    files={"content": (path.name, handle, "application/octet-stream")})

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

    _INFRASTRUCTURE = ("backend", "root", "pg_name", "bastion", "_client_cm", "client", "baseline", "_rows",
                       "known_clean")

    def export(self) -> dict[str, Any]:
        """What another backend's world needs to become a copy of this one (after ``freeze``)."""
        return {"rows": self._rows, "blobs": self.bastion.settings.effective_blob_dir, "secret": self.bastion.secret,
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
        if self.pg_name:
            engine = _pg_admin_engine()
            with engine.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)'))
            engine.dispose()


def module_backend(request: pytest.FixtureRequest) -> str:
    """Body of a module-scoped ``backend`` fixture (same rules as conftest's)."""
    if request.param == "postgresql" and not pg_available():
        pytest.fail("PostgreSQL is required but unreachable", pytrace=False)
    return str(request.param)


_SEEDS: dict[str, dict[str, Any]] = {}


def open_world(backend: str, tmp_path_factory: pytest.TempPathFactory, build: Callable[[World], None],
               label: str, *, share: bool = True) -> Iterator[World]:
    """A built world; with ``share``, the second backend gets a row-for-row copy of the first one's
    (building means hashing passwords, which is slow), else each backend builds its own."""
    seed = _SEEDS.get(label) if share else None
    world = World(backend, tmp_path_factory.mktemp(f"{label}-{backend}"), tmp_path_factory,
                  secret=seed["secret"] if seed else None)
    try:
        world.start_client()
        if seed:
            world.load(seed)
        else:
            build(world)
        world.freeze()
        if share and not seed:
            _SEEDS[label] = world.export()
        yield world
    finally:
        world.close()


# --------------------------------------------------------------------------------------------
# The world of the route matrix.
# --------------------------------------------------------------------------------------------

PROJECT = "acme-widgets"
OTHER = "acme-other"
NEW_PROJECT = "acme-fresh"


def build_authz_world(w: World) -> None:
    w.user("owen")  # owner of PROJECT and OTHER
    w.user("mia")  # maintainer of PROJECT
    w.user("nora")  # no role anywhere
    w.user("ada", admin=True)  # index admin, no role
    setup = w.token("setup", "owen")
    for name, version in ((PROJECT, "1.0"), (PROJECT, "0.9"), (OTHER, "1.0")):
        response = w.upload(setup, name, version)
        assert response.status_code == 200, response.text
    with w.bastion.db.write() as session:
        packaging.add_role(session, PROJECT, "mia", "maintainer", principal=OPERATOR)
        packaging.set_yanked(session, PROJECT, "0.9", yanked=True, reason="broken", principal=OPERATOR)
    w.token("owner", "owen")
    w.token("owner_other_token", "owen", projects=[OTHER])
    w.token("maintainer", "mia")
    w.token("no_role", "nora")
    w.token("admin", "ada")
    w.token("admin_scoped_token", "ada", projects=[PROJECT])
    w.token("spare", "owen")  # the token DELETE /api/v1/tokens/{id} revokes
    w.wheel(PROJECT, "3.0")
    w.wheel(NEW_PROJECT, "1.0")
    with w.bastion.db.read() as session:
        w.file_path = session.execute(  # type: ignore[attr-defined]
            select(File.path).where(File.filename.like("acme_widgets-1.0-%"))).scalar_one()


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return module_backend(request)


@pytest.fixture(scope="module")
def authz_world(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from open_world(backend, tmp_path_factory, build_authz_world, "authz")


@pytest.fixture
def w(authz_world: World) -> World:
    authz_world.reset()
    return authz_world


PRINCIPALS = ("anonymous", "no_role", "maintainer", "owner", "admin", "owner_other_token", "admin_scoped_token")

# Expected status per route, in the order of PRINCIPALS:
#   anonymous, user without a role, maintainer, owner, index admin,
#   owner with a token scoped to another project, admin with a token scoped to PROJECT.
# Account routes act on owen (the owner); the scoped tokens may never manage accounts.
EXPECTED: dict[str, dict[str, int]] = {
    route: dict(zip(PRINCIPALS, codes, strict=True))
    for route, codes in {
        "upload to existing project": (401, 403, 200, 200, 200, 403, 200),
        "upload creating a project": (401, 200, 200, 200, 200, 403, 403),
        "yank": (401, 403, 403, 200, 200, 403, 200),
        "unyank": (401, 403, 403, 200, 200, 403, 200),
        "list roles": (401, 403, 200, 200, 200, 403, 200),
        "grant role": (401, 403, 403, 200, 200, 403, 200),
        "remove role": (401, 403, 403, 200, 200, 403, 200),
        "create user": (401, 403, 403, 403, 201, 403, 403),
        "set admin": (401, 403, 403, 403, 200, 403, 403),
        "create token": (401, 403, 403, 201, 201, 403, 403),
        "list tokens": (401, 403, 403, 200, 200, 403, 403),
        "revoke token": (401, 403, 403, 200, 200, 403, 403),
        "GET /simple/": (200,) * 7,
        "GET /simple/{p}/": (200,) * 7,
        "GET /pypi/{p}/json": (200,) * 7,
        "GET /packages/...": (200,) * 7,
    }.items()
}

# The events an allowed request must add (and nothing else); None: a read, which changes nothing.
EVENTS: dict[str, list[str] | None] = {
    "upload to existing project": ["file.uploaded"],
    "upload creating a project": ["project.created", "file.uploaded"],
    "yank": ["release.yanked"],
    "unyank": ["release.unyanked"],
    "list roles": None,
    "grant role": ["role.granted"],
    "remove role": ["role.removed"],
    "create user": ["user.created"],
    "set admin": ["user.admin_set"],
    "create token": ["token.created"],
    "list tokens": None,
    "revoke token": ["token.revoked"],
    "GET /simple/": None,
    "GET /simple/{p}/": None,
    "GET /pypi/{p}/json": None,
    "GET /packages/...": None,
}


def _request(w: World, route: str, principal: str):  # type: ignore[no-untyped-def]
    token = w.tokens.get(principal)
    api = bearer(token) if token else {}
    c = w.client
    base = f"/api/v1/projects/{PROJECT}"
    if route == "upload to existing project":
        return w.upload(token, PROJECT, "3.0")
    if route == "upload creating a project":
        return w.upload(token, NEW_PROJECT, "1.0")
    if route == "yank":
        return c.post(f"{base}/releases/1.0/yank", json={"reason": "bad build"}, headers=api)
    if route == "unyank":
        return c.post(f"{base}/releases/0.9/unyank", headers=api)
    if route == "list roles":
        return c.get(f"{base}/roles", headers=api)
    if route == "grant role":
        return c.post(f"{base}/roles", json={"user": "nora", "role": "maintainer"}, headers=api)
    if route == "remove role":
        return c.delete(f"{base}/roles/mia", headers=api)
    if route == "create user":
        return c.post("/api/v1/users", json={"name": "newbie", "email": "newbie@example.org",
                                             "password": "another-long-password"}, headers=api)
    if route == "set admin":
        return c.post("/api/v1/users/nora/admin", headers=api)
    if route == "create token":
        return c.post("/api/v1/users/owen/tokens", json={"expires": "1d"}, headers=api)
    if route == "list tokens":
        return c.get("/api/v1/users/owen/tokens", headers=api)
    if route == "revoke token":
        return c.delete(f"/api/v1/tokens/{w.token_ids['spare']}", headers=api)
    headers = basic_auth(token) if token else {}
    if route == "GET /simple/":
        return c.get("/simple/", headers=headers)
    if route == "GET /simple/{p}/":
        return c.get(f"/simple/{PROJECT}/", headers=headers)
    if route == "GET /pypi/{p}/json":
        return c.get(f"/pypi/{PROJECT}/json", headers=headers)
    if route == "GET /packages/...":
        return c.get(f"/{w.file_path}", headers=headers)  # type: ignore[attr-defined]
    raise AssertionError(route)


def test_the_matrix_covers_every_api_route(w: World) -> None:
    """A new write route must be added to the matrix: compare with the app's own route list."""
    documented = set(w.client.get("/openapi.json").json()["paths"])
    covered = {
        "/legacy/", "/api/v1/projects/{project}/releases/{version}/yank",
        "/api/v1/projects/{project}/releases/{version}/unyank", "/api/v1/projects/{project}/roles",
        "/api/v1/projects/{project}/roles/{user}", "/api/v1/users", "/api/v1/users/{name}/admin",
        "/api/v1/users/{name}/tokens", "/api/v1/tokens/{token_id}", "/health",
    }
    assert documented == covered


@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize("route", list(EXPECTED))
def test_route_by_principal(w: World, route: str, principal: str) -> None:
    expected = EXPECTED[route][principal]
    before = w.baseline  # the fixture restored it
    response = _request(w, route, principal)
    after = w.state()
    w.known_clean = after == w.baseline
    assert response.status_code == expected, (route, principal, response.status_code, response.text)
    if expected >= 400:
        assert after == before, f"a refused request ({route} by {principal}) changed the database or files"
        message = response.text if route.startswith("upload") else response.json()["error"]
        assert message.strip(), "a refusal must say why"
        if expected == 401:
            assert response.headers.get("www-authenticate") == 'Basic realm="Bastion"'
            assert "token" in message.lower()
        return
    wanted = EVENTS[route]
    if wanted is None:
        assert after == before, f"{route} is a read but changed state"
    else:
        assert new_events(before, after) == wanted


def test_refusals_say_what_to_do(w: World) -> None:
    """The 403 messages name the cause, not just 'forbidden'."""
    msg = _request(w, "yank", "maintainer").json()["error"]
    assert f"only an owner of '{PROJECT}'" in msg
    msg = _request(w, "upload to existing project", "no_role").text
    assert "user 'nora' is not allowed to upload to project 'acme-widgets'" in msg
    assert "maintainer" in msg
    msg = _request(w, "upload to existing project", "owner_other_token").text
    assert f"limited to {OTHER}" in msg and f"--project {PROJECT}" in msg
    msg = _request(w, "create token", "admin_scoped_token").json()["error"]
    assert "project-scoped API token cannot manage accounts" in msg
    msg = _request(w, "create user", "owner").json()["error"]
    assert "only an index admin" in msg
    msg = _request(w, "list tokens", "maintainer").json()["error"]
    assert "only your own API tokens" in msg
    msg = _request(w, "list roles", "no_role").json()["error"]
    assert f"only owners and maintainers of '{PROJECT}' may list its roles" in msg


def test_password_credentials_are_refused_everywhere(w: World) -> None:
    """Basic auth with a real username and password never authenticates, even for an admin."""
    before = w.state()
    headers = basic_auth("a-long-password", username="ada")
    response = w.upload(None, PROJECT, "3.0", headers=headers)
    assert response.status_code == 403
    assert "Username/Password authentication is not supported" in response.text
    response = w.client.post("/api/v1/users/nora/admin", headers=headers)
    assert response.status_code == 403
    assert "Username/Password authentication is not supported" in response.json()["error"]
    assert w.state() == before


def test_allowed_effects_are_the_requested_ones(w: World) -> None:
    """Spot checks that an allowed request did what it said (beyond its event)."""
    assert _request(w, "yank", "admin_scoped_token").status_code == 200
    with w.bastion.db.read() as session:
        release = session.execute(select(Release).where(Release.version == "1.0",
                                                        Release.yanked.is_(True))).scalars().all()
        assert [r.yanked_reason for r in release] == ["bad build"]
    w.reset()
    assert _request(w, "upload creating a project", "no_role").status_code == 200
    roles = w.client.get(f"/api/v1/projects/{NEW_PROJECT}/roles", headers=bearer(w.tokens["no_role"]))
    assert roles.json() == [{"username": "nora", "role": "owner"}]
    w.reset()
    assert _request(w, "set admin", "admin").json()["is_admin"] is True


# --------------------------------------------------------------------------------------------
# decide() on its own: Permission x role x token scope x who.
# --------------------------------------------------------------------------------------------

P = "proj"
ROLES = (None, "maintainer", "owner")
SCOPES = (None, frozenset({P}), frozenset({"other"}), frozenset())
WHO = ("anonymous", "user", "admin", "operator")
USER_ID, ADMIN_ID, SOMEONE_ELSE = 10, 20, 99

# Which roles let a plain user (not an admin, token not limiting) exercise a project permission.
PROJECT_RULES: dict[Permission, set[str | None]] = {
    Permission.CREATE_PROJECT: {None, "maintainer", "owner"},
    Permission.UPLOAD: {"maintainer", "owner"},
    Permission.YANK: {"owner"},
    Permission.MANAGE_ROLES: {"owner"},
    Permission.VIEW_ROLES: {"maintainer", "owner"},
}
# Account permissions: who may, given no project-scoped token.
ACCOUNT_RULES: dict[Permission, str] = {
    Permission.MANAGE_TOKENS: "self or admin",
    Permission.CREATE_USER: "admin",
    Permission.SET_ADMIN: "admin",
}


def _principal(who: str, scope: frozenset[str] | None) -> Principal | None:
    if who == "anonymous":
        return None
    if who == "operator":
        return OPERATOR
    if who == "user":
        return Principal(user_id=USER_ID, username="u", is_admin=False, token_projects=scope, token_id="t")
    return Principal(user_id=ADMIN_ID, username="a", is_admin=True, token_projects=scope, token_id="t")


def _expected(permission: Permission, who: str, role: str | None, scope: frozenset[str] | None,
              target: int | None) -> bool:
    if permission is Permission.READ:
        return True
    if who == "anonymous":
        return False
    if permission in PROJECT_RULES:
        if scope is not None and P not in scope:
            return False
        return who in ("admin", "operator") or role in PROJECT_RULES[permission]
    if scope is not None:
        return False
    if who in ("admin", "operator"):
        return True
    return ACCOUNT_RULES[permission] == "self or admin" and target == USER_ID


def test_every_permission_has_a_rule() -> None:
    assert set(Permission) == {Permission.READ} | set(PROJECT_RULES) | set(ACCOUNT_RULES)


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("permission", list(Permission))
def test_decide(permission: Permission, who: str) -> None:
    for scope in SCOPES if who in ("user", "admin") else (None,):
        principal = _principal(who, scope)
        for role in ROLES:
            for target in (None, USER_ID, ADMIN_ID, SOMEONE_ELSE):
                if permission in PROJECT_RULES:
                    decision = decide(principal, permission, project=P, role=role)
                else:
                    decision = decide(principal, permission, target_user_id=target)
                want = _expected(permission, who, role, scope, target)
                case = (permission, who, role, scope, target)
                assert bool(decision) is want, case
                assert decision.allowed is want, case
                if want:
                    assert decision.reason == "", case
                else:
                    assert decision.reason, case
                    if permission is not Permission.UPLOAD:  # the reason is about what was asked
                        assert "upload to" not in decision.reason, case


@pytest.mark.parametrize("permission", sorted(PROJECT_RULES))
def test_project_permission_without_project_is_denied(permission: Permission) -> None:
    for who in ("user", "admin", "operator"):
        assert not decide(_principal(who, None), permission, role="owner")


def test_admin_token_scope_names_the_allowed_projects() -> None:
    admin = _principal("admin", frozenset({"b", "a"}))
    decision = decide(admin, Permission.UPLOAD, project="c")
    assert not decision
    assert "limited to a, b" in decision.reason
    assert "--project c" in decision.reason
    empty = decide(_principal("user", frozenset()), Permission.UPLOAD, project="c", role="owner")
    assert not empty and "limited to no project" in empty.reason
