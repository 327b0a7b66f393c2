"""The HTTP API behind the CLI's operations: users, admins, tokens, roles, yanks.

Every refusal is checked for its status, its message and that the database did not change.
"""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest
from pymacaroons import Macaroon
from sqlalchemy import select

from bastion.accounts.models import ApiToken, User
from bastion.accounts.passwords import verify_password
from bastion.accounts.service import authenticate_token
from bastion.accounts.tokens import TOKEN_PREFIX
from bastion.packaging.models import Release
from tests.conftest import BACKENDS, require_backend
from tests.unit.world import Recipe, World, bearer, new_events

PROJECT = "api-proj"
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"


def build(w: World) -> None:
    w.user("root", admin=True)
    w.user("alice")  # owner of PROJECT
    w.user("bob")  # no role
    w.token("root", "root")
    w.token("alice", "alice")
    w.token("bob", "bob")
    for version in ("1.0", "2.0"):
        response = w.upload(w.tokens["alice"], PROJECT, version)
        assert response.status_code == 200, response.text


WORLD = Recipe(build, "api")


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return require_backend(request.param)


def as_(w: World, who: str) -> dict[str, str]:
    return bearer(w.tokens[who])


def refused(w: World, method: str, url: str, status: int, message: str, *, who: str = "root",
            body: object = None) -> str:
    """Send a request that must be refused with ``status`` and ``message`` and change nothing."""
    before = w.state()
    response = w.client.request(method, url, headers=as_(w, who), json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error
    assert w.state() == before, f"refused {method} {url} changed the database or files"
    return error


def aware(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


# -- users --------------------------------------------------------------------------------------

def test_create_user(w: World) -> None:
    before = w.state()
    response = w.client.post("/api/v1/users", headers=as_(w, "root"),
                             json={"name": "Carol.D", "email": "carol@example.org", "password": "correct horse battery"})
    assert response.status_code == 201, response.text
    assert response.json() == {"name": "Carol.D", "email": "carol@example.org", "is_admin": False}
    assert new_events(before, w.state()) == ["user.created"]
    with w.bastion.db.read() as session:
        user = session.execute(select(User).where(User.username_key == "carol.d")).scalar_one()
        assert user.password_hash.startswith("$argon2id$")
        assert "correct horse" not in user.password_hash
        assert verify_password(user.password_hash, "correct horse battery")


USER_REFUSALS = {
    "bad username": ({"name": "bad name!", "email": "x@example.org", "password": "long-enough-pw"}, 400,
                     "invalid username 'bad name!'"),
    "username too long": ({"name": "a" * 51, "email": "x@example.org", "password": "long-enough-pw"}, 400,
                          "invalid username"),
    "reserved username": ({"name": "__token__", "email": "x@example.org", "password": "long-enough-pw"}, 400,
                          "invalid username"),
    "bad email": ({"name": "carol", "email": "carol-at-example.org", "password": "long-enough-pw"}, 400,
                  "invalid email address 'carol-at-example.org'"),
    "email too long": ({"name": "carol", "email": "c@" + "e" * 300 + ".org", "password": "long-enough-pw"}, 400,
                       "invalid email address"),
    "short password": ({"name": "carol", "email": "c@example.org", "password": "short"}, 400,
                       "password too short: use at least 10 characters"),
    "long password": ({"name": "carol", "email": "c@example.org", "password": "p" * 4097}, 400,
                      "password too long"),
    "duplicate": ({"name": "alice", "email": "a2@example.org", "password": "long-enough-pw"}, 409,
                  "a user named 'alice' already exists"),
    "duplicate in another case": ({"name": "ALICE", "email": "a2@example.org", "password": "long-enough-pw"}, 409,
                                  "already exists"),
    "missing password": ({"name": "carol", "email": "c@example.org"}, 422, "Invalid request: body.password"),
}


@pytest.mark.parametrize("case", list(USER_REFUSALS))
def test_create_user_refusals(w: World, case: str) -> None:
    body, status, message = USER_REFUSALS[case]
    refused(w, "POST", "/api/v1/users", status, message, body=body)


def test_only_admins_create_users(w: World) -> None:
    body = {"name": "carol", "email": "carol@example.org", "password": "long-enough-pw"}
    refused(w, "POST", "/api/v1/users", 403, "only an index admin may do this", who="alice", body=body)


def test_set_admin(w: World) -> None:
    response = w.client.post("/api/v1/users/bob/admin", headers=as_(w, "root"))
    assert response.status_code == 200
    assert response.json() == {"name": "bob", "email": "bob@example.org", "is_admin": True}
    with w.bastion.db.read() as session:
        assert session.execute(select(User.is_admin).where(User.username == "bob")).scalar() is True
    # bob, now an admin, may act as one with the token he already had
    assert w.client.post("/api/v1/users/alice/admin", headers=as_(w, "bob")).status_code == 200


def test_set_admin_unknown_user(w: World) -> None:
    refused(w, "POST", "/api/v1/users/nobody/admin", 404, "no user named 'nobody'")


# -- tokens -------------------------------------------------------------------------------------

def _claims(w: World, raw: str) -> list[list]:
    return [json.loads(c.caveat_id) for c in Macaroon.deserialize(raw[len(TOKEN_PREFIX):]).caveats]


def test_create_token_with_projects_and_expiry(w: World) -> None:
    before = w.state()
    started = time.time()
    response = w.client.post("/api/v1/users/alice/tokens", headers=as_(w, "alice"),
                             json={"projects": ["API_Proj", "other.thing", "api-proj"], "expires": "30d",
                                   "description": "ci"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["token"].startswith("bastion-")
    assert body["projects"] == ["api-proj", "other-thing"]
    expires = aware(body["expires"]).timestamp()
    assert started + 30 * 86400 - 5 <= expires <= time.time() + 30 * 86400 + 5
    assert new_events(before, w.state()) == ["token.created"]
    with w.bastion.db.read() as session:
        principal, row = authenticate_token(session, w.bastion.secret, body["token"])
    assert row.id == body["id"] and row.description == "ci"
    assert principal.token_projects == frozenset({"api-proj", "other-thing"})
    kinds = {c[0]: c for c in _claims(w, body["token"])}
    assert kinds[1] == [1, ["api-proj", "other-thing"]]
    assert abs(kinds[0][1] - expires) <= 1


def test_create_token_never_expiring_and_default(w: World) -> None:
    never = w.client.post("/api/v1/users/alice/tokens", headers=as_(w, "root"), json={"expires": "never"})
    assert never.status_code == 201
    assert never.json()["expires"] is None and never.json()["projects"] is None
    assert [c[0] for c in _claims(w, never.json()["token"])] == [2]
    default = w.client.post("/api/v1/users/alice/tokens", headers=as_(w, "alice"), json={})
    assert default.status_code == 201
    left = aware(default.json()["expires"]).timestamp() - time.time()
    assert 90 * 86400 - 60 <= left <= 90 * 86400 + 5  # token_default_expiry = 90d
    hours = w.client.post("/api/v1/users/alice/tokens", headers=as_(w, "alice"), json={"expires": "12h"})
    left = aware(hours.json()["expires"]).timestamp() - time.time()
    assert 12 * 3600 - 60 <= left <= 12 * 3600 + 5


TOKEN_REFUSALS = {
    "unknown unit": ({"expires": "30x"}, 400, "invalid expires '30x': use a whole number and a unit"),
    "no unit": ({"expires": "30"}, 400, "invalid expires '30'"),
    "zero": ({"expires": "0d"}, 400, "it must be longer than zero"),
    "negative": ({"expires": "-5d"}, 400, "invalid expires '-5d'"),
    "empty": ({"expires": ""}, 400, "invalid expires ''"),
    "beyond any calendar": ({"expires": "9999999999d"}, 400, "invalid expires '9999999999d': it must be at most"),
    "past year 9999": ({"expires": "3000000d"}, 400, "invalid expires '3000000d'"),
    "projects not a list": ({"projects": "api-proj"}, 422, "Invalid request: body.projects"),
}


@pytest.mark.parametrize("case", list(TOKEN_REFUSALS))
def test_create_token_refusals(w: World, case: str) -> None:
    body, status, message = TOKEN_REFUSALS[case]
    refused(w, "POST", "/api/v1/users/alice/tokens", status, message, who="alice", body=body)


def test_create_token_for_unknown_user(w: World) -> None:
    refused(w, "POST", "/api/v1/users/nobody/tokens", 404, "no user named 'nobody'", body={})


def test_list_tokens_never_returns_the_secret(w: World) -> None:
    extra = w.client.post("/api/v1/users/alice/tokens", headers=as_(w, "alice"), json={"projects": [PROJECT]})
    secret_token = extra.json()["token"]
    response = w.client.get("/api/v1/users/alice/tokens", headers=as_(w, "alice"))
    assert response.status_code == 200
    listing = response.json()
    assert {t["id"] for t in listing} == {w.token_ids["alice"], extra.json()["id"]}
    assert all(t["token"] is None for t in listing)
    for raw in (secret_token, w.tokens["alice"]):
        signature = Macaroon.deserialize(raw[len(TOKEN_PREFIX):]).signature
        assert raw not in response.text and raw[len(TOKEN_PREFIX):] not in response.text
        assert signature not in response.text
    scoped = next(t for t in listing if t["id"] == extra.json()["id"])
    assert scoped["projects"] == [PROJECT] and scoped["revoked"] is None and scoped["created"]


def test_revoke_token(w: World) -> None:
    spare = w.token("spare", "alice")
    before = w.state()
    response = w.client.delete(f"/api/v1/tokens/{w.token_ids['spare']}", headers=as_(w, "alice"))
    assert response.status_code == 200
    assert response.json()["id"] == w.token_ids["spare"] and response.json()["revoked"]
    assert new_events(before, w.state()) == ["token.revoked"]
    assert w.client.get("/api/v1/users/alice/tokens", headers=bearer(spare)).status_code == 403
    listing = w.client.get("/api/v1/users/alice/tokens", headers=as_(w, "alice")).json()
    assert next(t for t in listing if t["id"] == w.token_ids["spare"])["revoked"]
    # revoking again changes nothing and records nothing
    after_first = w.state()
    again = w.client.delete(f"/api/v1/tokens/{w.token_ids['spare']}", headers=as_(w, "alice"))
    assert again.status_code == 200 and again.json()["revoked"] == response.json()["revoked"]
    assert w.state() == after_first


def test_revoke_unknown_token(w: World) -> None:
    refused(w, "DELETE", "/api/v1/tokens/" + "0" * 32, 404, f"no API token with id '{'0' * 32}'")


# -- roles --------------------------------------------------------------------------------------

ROLES = f"/api/v1/projects/{PROJECT}/roles"


def roles(w: World) -> list[dict[str, str]]:
    response = w.client.get(ROLES, headers=as_(w, "alice"))
    assert response.status_code == 200
    return response.json()


def test_grant_change_and_remove_roles(w: World) -> None:
    assert roles(w) == [{"username": "alice", "role": "owner"}]
    before = w.state()
    granted = w.client.post(ROLES, headers=as_(w, "alice"), json={"user": "BOB", "role": "maintainer"})
    assert granted.status_code == 200
    serial = granted.json()["serial"]
    assert isinstance(serial, int) and serial > 0
    assert new_events(before, w.state()) == ["role.granted"]
    assert roles(w) == [{"username": "bob", "role": "maintainer"}, {"username": "alice", "role": "owner"}]
    promoted = w.client.post(ROLES, headers=as_(w, "alice"), json={"user": "bob", "role": "owner"})
    assert promoted.status_code == 200 and promoted.json()["serial"] > serial
    assert roles(w) == [{"username": "alice", "role": "owner"}, {"username": "bob", "role": "owner"}]
    # with two owners, one may go
    removed = w.client.delete(f"{ROLES}/alice", headers=as_(w, "bob"))
    assert removed.status_code == 200
    assert roles_as(w, "bob") == [{"username": "bob", "role": "owner"}]


def roles_as(w: World, who: str) -> list[dict[str, str]]:
    return w.client.get(ROLES, headers=as_(w, who)).json()


ROLE_REFUSALS = {
    "last owner": ("DELETE", f"{ROLES}/alice", None, 409,
                   "'alice' is the last owner of 'api-proj': add another owner first"),
    "unknown role": ("POST", ROLES, {"user": "bob", "role": "admin"}, 400, "unknown role 'admin': use owner or maintainer"),
    "unknown user": ("POST", ROLES, {"user": "nobody", "role": "maintainer"}, 404, "no user named 'nobody'"),
    "unknown project": ("POST", "/api/v1/projects/nope/roles", {"user": "bob", "role": "maintainer"}, 404,
                        "no project named 'nope'"),
    "already has it": ("POST", ROLES, {"user": "alice", "role": "owner"}, 409, "already owner of 'api-proj'"),
    "remove without role": ("DELETE", f"{ROLES}/bob", None, 404, "user 'bob' has no role on 'api-proj'"),
    "remove unknown user": ("DELETE", f"{ROLES}/nobody", None, 404, "no user named 'nobody'"),
    "missing role field": ("POST", ROLES, {"user": "bob"}, 422, "body.role"),
}


@pytest.mark.parametrize("case", list(ROLE_REFUSALS))
def test_role_refusals(w: World, case: str) -> None:
    method, url, body, status, message = ROLE_REFUSALS[case]
    refused(w, method, url, status, message, who="alice", body=body)


# -- yanks --------------------------------------------------------------------------------------

def simple_html(w: World) -> str:
    response = w.client.get(f"/simple/{PROJECT}/")
    assert response.status_code == 200
    return response.text


def simple_json(w: World) -> dict:
    response = w.client.get(f"/simple/{PROJECT}/", headers={"Accept": SIMPLE_JSON})
    assert response.status_code == 200 and response.headers["content-type"] == SIMPLE_JSON
    return {f["filename"].split("-")[1]: f["yanked"] for f in response.json()["files"]}


def json_api(w: World, path: str = "json") -> dict:
    response = w.client.get(f"/pypi/{PROJECT}/{path}")
    assert response.status_code == 200
    return response.json()


def link_line(html: str, version: str) -> str:
    return next(line for line in html.splitlines() if f"api_proj-{version}-" in line)


def test_yank_and_unyank_with_reason(w: World) -> None:
    before = w.state()
    response = w.client.post(f"/api/v1/projects/{PROJECT}/releases/2.0/yank", headers=as_(w, "alice"),
                             json={"reason": "broken <build> & worse"})
    assert response.status_code == 200
    assert isinstance(response.json()["serial"], int)
    assert new_events(before, w.state()) == ["release.yanked"]
    html = simple_html(w)
    assert 'data-yanked="broken &lt;build&gt; &amp; worse"' in link_line(html, "2.0")
    assert "data-yanked" not in link_line(html, "1.0")
    assert simple_json(w) == {"1.0": False, "2.0": "broken <build> & worse"}
    document = json_api(w)
    assert [(f["yanked"], f["yanked_reason"]) for f in document["releases"]["2.0"]] == [
        (True, "broken <build> & worse")]
    assert [f["yanked"] for f in document["releases"]["1.0"]] == [False]
    assert document["info"]["version"] == "1.0"  # the newest release not yanked
    release = json_api(w, "2.0/json")
    assert release["info"]["yanked"] is True and release["info"]["yanked_reason"] == "broken <build> & worse"

    response = w.client.post(f"/api/v1/projects/{PROJECT}/releases/2.0/unyank", headers=as_(w, "alice"))
    assert response.status_code == 200
    assert "data-yanked" not in simple_html(w)
    assert simple_json(w) == {"1.0": False, "2.0": False}
    document = json_api(w)
    assert document["info"]["version"] == "2.0"
    assert [(f["yanked"], f["yanked_reason"]) for f in document["releases"]["2.0"]] == [(False, None)]
    assert json_api(w, "2.0/json")["info"]["yanked"] is False


def test_yank_without_reason(w: World) -> None:
    response = w.client.post(f"/api/v1/projects/{PROJECT}/releases/1.0/yank", headers=as_(w, "root"), json={})
    assert response.status_code == 200
    assert 'data-yanked=""' in link_line(simple_html(w), "1.0")
    assert simple_json(w)["1.0"] is True
    with w.bastion.db.read() as session:
        release = session.execute(select(Release).where(Release.version == "1.0")).scalar_one()
        assert release.yanked is True and release.yanked_reason is None


YANK = f"/api/v1/projects/{PROJECT}/releases"
YANK_REFUSALS = {
    "unknown version": ("POST", f"{YANK}/9.9/yank", {}, 404, "project 'api-proj' has no release 9.9"),
    "invalid version": ("POST", f"{YANK}/not-a-version/yank", {}, 400, "invalid version 'not-a-version'"),
    "unknown project": ("POST", "/api/v1/projects/nope/releases/1.0/yank", {}, 404, "no project named 'nope'"),
    "reason too long": ("POST", f"{YANK}/1.0/yank", {"reason": "x" * 1001}, 422, "body.reason"),
    "unyank a release not yanked": ("POST", f"{YANK}/1.0/unyank", None, 409, "api-proj 1.0 is already not yanked"),
}


@pytest.mark.parametrize("case", list(YANK_REFUSALS))
def test_yank_refusals(w: World, case: str) -> None:
    method, url, body, status, message = YANK_REFUSALS[case]
    refused(w, method, url, status, message, who="alice", body=body)


def test_yank_twice_is_refused(w: World) -> None:
    url = f"{YANK}/1.0/yank"
    assert w.client.post(url, headers=as_(w, "alice"), json={"reason": "r"}).status_code == 200
    refused(w, "POST", url, 409, "api-proj 1.0 is already yanked", who="alice", body={"reason": "r"})
    # a new reason is an update, not a refusal
    assert w.client.post(url, headers=as_(w, "alice"), json={"reason": "r2"}).status_code == 200
    assert simple_json(w)["1.0"] == "r2"


# -- schema -------------------------------------------------------------------------------------

def test_openapi_documents_the_operations(w: World) -> None:
    response = w.client.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    expected = {
        "/legacy/": {"post"},
        "/api/v1/users": {"post"},
        "/api/v1/users/{name}/admin": {"post"},
        "/api/v1/users/{name}/tokens": {"post", "get"},
        "/api/v1/tokens/{token_id}": {"delete"},
        "/api/v1/projects/{project}/roles": {"get", "post"},
        "/api/v1/projects/{project}/roles/{user}": {"delete"},
        "/api/v1/projects/{project}/releases/{version}/yank": {"post"},
        "/api/v1/projects/{project}/releases/{version}/unyank": {"post"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert set(paths[path]) == methods, path
        for method in methods:
            assert paths[path][method].get("summary"), (path, method)
    schemas = response.json()["components"]["schemas"]
    assert {"name", "email", "password"} <= set(schemas["UserRequest"]["properties"])
    assert {"projects", "expires"} <= set(schemas["TokenRequest"]["properties"])
    assert {"user", "role"} <= set(schemas["RoleRequest"]["properties"])
    assert "reason" in schemas["YankRequest"]["properties"]


def test_unauthenticated_api_calls_are_401_with_a_hint(w: World) -> None:
    before = w.state()
    response = w.client.post(ROLES, json={"user": "bob", "role": "maintainer"})
    assert response.status_code == 401
    assert "authentication required" in response.json()["error"]
    assert w.state() == before
    bad = w.client.get(ROLES, headers={"Authorization": "Token abc"})
    assert bad.status_code == 401 and "Unsupported authorization scheme 'Token'" in bad.json()["error"]
    garbage = w.client.get(ROLES, headers={"Authorization": "Basic !!!"})
    assert garbage.status_code == 401 and "Malformed Basic authorization" in garbage.json()["error"]


def test_list_tokens_is_per_user(w: World) -> None:
    """Tokens listed belong to the user asked for, never another user's."""
    alice = w.client.get("/api/v1/users/alice/tokens", headers=as_(w, "root")).json()
    bob = w.client.get("/api/v1/users/bob/tokens", headers=as_(w, "root")).json()
    assert {t["id"] for t in alice} == {w.token_ids["alice"]}
    assert {t["id"] for t in bob} == {w.token_ids["bob"]}
    with w.bastion.db.read() as session:
        owners = dict(session.execute(select(ApiToken.id, ApiToken.user_id)).all())
        ids = dict(session.execute(select(User.username, User.id)).all())
    assert owners[w.token_ids["alice"]] == ids["alice"]
