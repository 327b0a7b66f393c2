"""Who may do what: every route x every principal, and ``bastion.authz.decide`` on its own.

The route matrix runs against one prepared world per backend (users, projects, releases, tokens);
after a test changes it, the world is restored row for row, so every case starts from the same
state. A refusal must leave every table, every blob and the temporary directory as they were.

The machinery (``World``, ``state``, the ``w`` fixture) is in world.py and conftest.py, shared
with test_tokens.py, test_api.py, test_events.py and test_cli.py.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bastion.authz import OPERATOR, Permission, Principal, decide
from bastion.packaging import service as packaging
from bastion.packaging.models import File, Release
from tests.conftest import BACKENDS, basic_auth, require_backend
from tests.unit.world import Recipe, World, bearer, new_events

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
    from bastion.advisories.applications import register

    with w.bastion.db.write() as session:
        register(session, w.bastion, "shop", f"{PROJECT}==1.0\n", principal=OPERATOR, owner="owen")
    with w.bastion.db.read() as session:
        w.file_path = session.execute(  # type: ignore[attr-defined]
            select(File.path).where(File.filename.like("acme_widgets-1.0-%"))).scalar_one()


WORLD = Recipe(build_authz_world, "authz")


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return require_backend(request.param)


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
        "register application (owner's)": (401, 403, 403, 200, 200, 403, 403),
        "register application (new)": (401, 201, 201, 201, 201, 403, 403),
        "list applications": (401, 200, 200, 200, 200, 403, 403),
        "show application": (401, 403, 403, 200, 200, 403, 403),
        "remove application": (401, 403, 403, 200, 200, 403, 403),
        "import advisories": (401, 403, 403, 403, 400, 403, 403),  # the admin passes authorization
        "POST /osv/v1/query": (200,) * 7,
        "POST /osv/v1/querybatch": (200,) * 7,
        "GET /security.json": (200,) * 7,
        "GET /projects/{p}/security.json": (200,) * 7,
        "GET /simple/": (200,) * 7,
        "GET /simple/{p}/": (200,) * 7,
        "GET /pypi/{p}/json": (200,) * 7,
        "GET /packages/...": (200,) * 7,
    }.items()
}

# The events an allowed request must add (and nothing else); None: a read, which changes nothing.
EVENTS: dict[str, list[str] | None] = {
    "upload to existing project": ["token.used", "file.uploaded"],
    "upload creating a project": ["project.created", "token.used", "file.uploaded"],
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
    "register application (owner's)": ["application.updated"],
    "register application (new)": ["application.registered"],
    "list applications": None,
    "show application": None,
    "remove application": ["application.removed"],
    "import advisories": None,  # checked apart: an import is more than an event (test_advisories_api.py)
    "POST /osv/v1/query": None,
    "POST /osv/v1/querybatch": None,
    "GET /security.json": None,
    "GET /projects/{p}/security.json": None,
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
    if route == "register application (owner's)":
        return c.put("/api/applications/shop", json={"format": "requirements", "content": f"{OTHER}==1.0\n"},
                     headers=api)
    if route == "register application (new)":
        return c.put("/api/applications/fresh", json={"format": "requirements", "content": f"{PROJECT}==1.0\n"},
                     headers=api)
    if route == "list applications":
        return c.get("/api/applications", headers=api)
    if route == "show application":
        return c.get("/api/applications/shop", headers=api)
    if route == "remove application":
        return c.delete("/api/applications/shop", headers=api)
    if route == "import advisories":
        return c.post("/api/v1/advisories", json=[], headers=api)  # refused after authorization: 400
    if route == "POST /osv/v1/query":
        return c.post("/osv/v1/query", json={"package": {"name": PROJECT, "ecosystem": "PyPI"}, "version": "1.0"},
                      headers=api)
    if route == "POST /osv/v1/querybatch":
        return c.post("/osv/v1/querybatch", json={"queries": [{"package": {"name": PROJECT, "ecosystem": "PyPI"},
                                                              "version": "1.0"}]}, headers=api)
    if route == "GET /security.json":
        return c.get("/security.json", headers=api)
    if route == "GET /projects/{p}/security.json":
        return c.get(f"/projects/{PROJECT}/security.json", headers=api)
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
        "/stats/2fa.json",  # public and read-only: the 2FA dashboard's figures
        "/api/applications", "/api/applications/{name}", "/api/v1/advisories", "/osv/v1/query",
        "/osv/v1/querybatch", "/security.json", "/projects/{name}/security.json",
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
    Permission.MANAGE_PROJECT: {"owner"},
    Permission.VIEW_PROJECT_HISTORY: {"owner"},
}
# Account permissions: who may, given no project-scoped token.
ACCOUNT_RULES: dict[Permission, str] = {
    Permission.MANAGE_TOKENS: "self or admin",
    Permission.CREATE_USER: "admin",
    Permission.SET_ADMIN: "admin",
    Permission.SET_POLICY: "admin",
    Permission.VIEW_ALL_EVENTS: "admin",
    Permission.REVIEW_MALWARE: "admin",
    Permission.REPORT_MALWARE: "anyone",
    Permission.IMPORT_ADVISORIES: "admin",
    Permission.MANAGE_APPLICATION: "new, self or admin",
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
    if ACCOUNT_RULES[permission] == "anyone":
        return True
    if ACCOUNT_RULES[permission] == "new, self or admin":
        return target in (None, USER_ID)
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


# --------------------------------------------------------------------------------------------
# The 2FA mandate in decide(): where it applies, a principal without 2FA is refused whatever its
# role (admins included), reading stays allowed, and the reason says how to enable 2FA.
# --------------------------------------------------------------------------------------------

MFA_EXEMPT = {Permission.READ, Permission.VIEW_ROLES, Permission.VIEW_PROJECT_HISTORY, Permission.REPORT_MALWARE}


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("permission", list(Permission))
@pytest.mark.parametrize("has_2fa", [False, True])
def test_decide_under_the_2fa_mandate(permission: Permission, who: str, has_2fa: bool) -> None:
    import dataclasses

    for scope in SCOPES if who in ("user", "admin") else (None,):
        principal = _principal(who, scope)
        if principal is not None and who != "operator":
            principal = dataclasses.replace(principal, has_2fa=has_2fa)
        for role in ROLES:
            for target in (None, USER_ID, ADMIN_ID, SOMEONE_ELSE):
                if permission in PROJECT_RULES:
                    decision = decide(principal, permission, project=P, role=role, mfa_required=True)
                else:
                    decision = decide(principal, permission, target_user_id=target, mfa_required=True)
                want = _expected(permission, who, role, scope, target)
                if want and who in ("user", "admin") and not has_2fa and permission not in MFA_EXEMPT:
                    # Refused only for the mandate: the reason says how to enable 2FA.
                    want = False
                    assert "two-factor authentication is required" in decision.reason
                    assert "/account/2fa" in decision.reason
                elif not want:  # refused anyway: told the real reason, not to enable 2FA
                    assert "two-factor" not in decision.reason, (permission, who, role, scope, target)
                assert bool(decision) is want, (permission, who, role, scope, target, has_2fa)
