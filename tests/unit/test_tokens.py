"""API tokens as macaroons: format, verification, caveats, attenuation, tampering, revocation."""

from __future__ import annotations

import base64
import json
import time
from datetime import timedelta

import pytest
from pymacaroons import Macaroon
from pymacaroons.caveat import Caveat
from sqlalchemy import update

from bastion.accounts.models import ApiToken, User
from bastion.accounts.service import authenticate_token
from bastion.accounts.tokens import TOKEN_PREFIX, derive_key, issue_token, parse_token_id
from bastion.authz import OPERATOR
from bastion.errors import Forbidden
from bastion.events import RequestContext
from bastion.packaging.errors import UploadRejected
from bastion.packaging.upload import IncomingFile, upload
from tests.conftest import BACKENDS, basic_auth, require_backend
from tests.distbuilder import upload_form
from tests.unit.world import Recipe, World, bearer, db_rows

PROJECT = "tok-proj"


def build(w: World) -> None:
    w.user("alice")  # owner of PROJECT
    w.user("bob")
    response = w.upload(w.token("alice", "alice"), PROJECT, "1.0")
    assert response.status_code == 200, response.text
    w.token("bob", "bob")
    w.token("alice_never", "alice", expires=None)
    for version in ("2.0", "3.0"):
        w.wheel(PROJECT, version)
    with w.bastion.db.read() as session:
        w.ids = {name: session.query(User).filter_by(username=name).one().id  # type: ignore[attr-defined]
                 for name in ("alice", "bob")}


WORLD = Recipe(build, "tokens")


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return require_backend(request.param)


def authenticate(w: World, raw: str):  # type: ignore[no-untyped-def]
    with w.bastion.db.read() as session:
        return authenticate_token(session, w.bastion.secret, raw)


def refused(w: World, raw: str) -> str:
    """The refusal message for ``raw``; fails the test if the token is accepted."""
    with pytest.raises(Forbidden) as info:
        authenticate(w, raw)
    assert info.value.status == 403
    assert info.value.message.startswith("Invalid API token: ")
    return info.value.message


def attenuate(raw: str, *caveats: object) -> str:
    macaroon = Macaroon.deserialize(raw[len(TOKEN_PREFIX):])
    for caveat in caveats:
        macaroon.add_first_party_caveat(caveat if isinstance(caveat, str) else json.dumps(caveat))
    return TOKEN_PREFIX + macaroon.serialize()


def rebuilt(raw: str, *, caveats: list[bytes] | None = None, signature: str | None = None,
            identifier: str | None = None) -> str:
    """The token with its caveat list, signature or identifier replaced (what a forger can do)."""
    original = Macaroon.deserialize(raw[len(TOKEN_PREFIX):])
    ids = [c.caveat_id_bytes for c in original.caveats] if caveats is None else caveats
    forged = Macaroon(location=original.location, identifier=identifier or original.identifier,
                      caveats=[Caveat(caveat_id=c, version=original.version) for c in ids],
                      signature=signature or original.signature, version=original.version)
    return TOKEN_PREFIX + forged.serialize()


def caveat_bytes(raw: str) -> list[bytes]:
    return [c.caveat_id_bytes for c in Macaroon.deserialize(raw[len(TOKEN_PREFIX):]).caveats]


def upload_as(w: World, raw: str, version: str = "2.0"):  # type: ignore[no-untyped-def]
    return w.upload(raw, PROJECT, version)


def test_token_format_and_verification(w: World) -> None:
    raw = w.tokens["alice"]
    assert raw.startswith("bastion-")
    token_id, macaroon = parse_token_id(raw)
    assert token_id == w.token_ids["alice"]
    assert macaroon.location == "bastion"
    assert [json.loads(c) for c in caveat_bytes(raw)][-1] == [2, w.ids["alice"]]  # type: ignore[attr-defined]
    principal, row = authenticate(w, raw)
    assert (principal.username, principal.user_id, principal.is_admin) == ("alice", w.ids["alice"], False)  # type: ignore[attr-defined]
    assert principal.token_projects is None and principal.token_id == token_id == row.id
    # over HTTP, as Bearer and as Basic __token__
    assert w.client.get("/api/v1/users/alice/tokens", headers=bearer(raw)).status_code == 200
    assert w.client.get("/api/v1/users/alice/tokens", headers=basic_auth(raw)).status_code == 200
    # with surrounding whitespace, as pasted
    assert authenticate(w, f"  {raw}\n")[0].username == "alice"


def test_scoped_token_claims_its_projects(w: World) -> None:
    raw = w.token("scoped", "alice", projects=["Tok_Proj", "other.thing"])
    principal, _ = authenticate(w, raw)
    assert principal.token_projects == frozenset({"tok-proj", "other-thing"})


def test_expiry_is_enforced(w: World) -> None:
    token_id, uid = w.token_ids["alice_never"], w.ids["alice"]  # type: ignore[attr-defined]
    secret, now = w.bastion.secret, int(time.time())
    assert refused(w, issue_token(secret, token_id, [[0, now - 1, now - 100], [2, uid]])).endswith(
        "the API token has expired: create a new one")
    assert "expired" in refused(w, issue_token(secret, token_id, [[0, now, now - 100], [2, uid]]))
    assert authenticate(w, issue_token(secret, token_id, [[0, now + 100, now - 100], [2, uid]]))[0].username == "alice"


def test_not_before_is_enforced(w: World) -> None:
    token_id, uid = w.token_ids["alice_never"], w.ids["alice"]  # type: ignore[attr-defined]
    secret, now = w.bastion.secret, int(time.time())
    assert refused(w, issue_token(secret, token_id, [[0, now + 1000, now + 500], [2, uid]])).endswith(
        "the API token is not valid yet")
    assert "malformed" in refused(w, issue_token(secret, token_id, [[0, "tomorrow", now], [2, uid]]))


def test_a_holder_can_shorten_the_lifetime(w: World) -> None:
    now = int(time.time())
    assert "expired" in refused(w, attenuate(w.tokens["alice"], [0, now - 1, now - 10]))
    assert "not valid yet" in refused(w, attenuate(w.tokens["alice"], [0, now + 100, now + 50]))


def test_attenuation_narrows_the_scope(w: World) -> None:
    before = w.state()
    narrowed = attenuate(w.tokens["alice"], [1, ["other"]])
    assert authenticate(w, narrowed)[0].token_projects == frozenset({"other"})
    response = upload_as(w, narrowed)
    assert response.status_code == 403
    assert f"limited to other and cannot act on '{PROJECT}'" in response.text
    assert w.state() == before
    # two project caveats: the intersection
    both = attenuate(w.tokens["alice"], [1, ["other", PROJECT]], [1, [PROJECT, "third"]])
    assert authenticate(w, both)[0].token_projects == frozenset({PROJECT})
    # a scoped token keeps its project rights but loses account rights
    scoped = attenuate(w.tokens["alice"], [1, [PROJECT]])
    assert w.client.get("/api/v1/users/alice/tokens", headers=bearer(scoped)).status_code == 403
    assert upload_as(w, scoped).status_code == 200
    # and the unattenuated token still works
    assert upload_as(w, w.tokens["alice"], "3.0").status_code == 200


def test_attenuation_cannot_widen_a_scoped_token(w: World) -> None:
    scoped = w.token("scoped", "alice", projects=["other"])
    widened = attenuate(scoped, [1, ["other", PROJECT]])
    assert authenticate(w, widened)[0].token_projects == frozenset({"other"})
    assert upload_as(w, widened).status_code == 403


def test_removing_a_caveat_is_refused(w: World) -> None:
    raw = w.token("scoped", "alice", projects=["other"])
    caveats = caveat_bytes(raw)
    assert json.loads(caveats[1]) == [1, ["other"]]
    without_scope = rebuilt(raw, caveats=[caveats[0], caveats[2]])
    assert "signature" in refused(w, without_scope)
    # the attenuation caveat, dropped from an attenuated token, is as firmly bound
    narrowed = attenuate(w.tokens["alice"], [1, ["other"]])
    assert "signature" in refused(w, rebuilt(narrowed, caveats=caveat_bytes(narrowed)[:-1]))
    assert "signature" in refused(w, rebuilt(raw, caveats=[]))


def test_altering_a_caveat_or_the_signature_is_refused(w: World) -> None:
    raw = w.token("scoped", "alice", projects=["other"])
    caveats = caveat_bytes(raw)
    widened = rebuilt(raw, caveats=[caveats[0], json.dumps([1, ["other", PROJECT]]).encode(), caveats[2]])
    assert "signature" in refused(w, widened)
    now = int(time.time())
    later = rebuilt(raw, caveats=[json.dumps([0, now + 10**8, now]).encode(), *caveats[1:]])
    assert "signature" in refused(w, later)
    signature = Macaroon.deserialize(raw[len(TOKEN_PREFIX):]).signature
    flipped = ("1" if signature[0] == "0" else "0") + signature[1:]
    assert "signature" in refused(w, rebuilt(raw, signature=flipped))
    assert authenticate(w, rebuilt(raw))[0].username == "alice"  # the rebuilding itself is faithful


def test_a_token_replayed_as_another_user_is_refused(w: World) -> None:
    alice, bob = w.ids["alice"], w.ids["bob"]  # type: ignore[attr-defined]
    raw = w.tokens["alice"]
    caveats = caveat_bytes(raw)
    assert json.loads(caveats[-1]) == [2, alice]
    as_bob = rebuilt(raw, caveats=[*caveats[:-1], json.dumps([2, bob]).encode()])
    refused(w, as_bob)
    # appending bob's user caveat keeps the signature valid but can never match both users
    assert refused(w, attenuate(raw, [2, bob])).endswith("the API token belongs to another user")
    # alice's macaroon presented under bob's token id
    refused(w, rebuilt(raw, identifier=w.token_ids["bob"]))
    # even with the server secret, a token whose user caveat names another user than the row's fails
    forged = issue_token(w.bastion.secret, w.token_ids["alice_never"], [[2, bob]])
    assert "belongs to another user" in refused(w, forged)


def test_unknown_or_unreadable_caveats_are_refused(w: World) -> None:
    raw = w.tokens["alice"]
    assert refused(w, attenuate(raw, [99, "anything"])).endswith("a caveat Bastion does not know")
    assert "does not know" in refused(w, attenuate(raw, [1, "not-a-list"]))
    assert "does not know" in refused(w, attenuate(raw, [2]))
    assert "cannot read" in refused(w, attenuate(raw, "not json at all"))
    assert "cannot read" in refused(w, attenuate(raw, "[]"))
    macaroon = Macaroon.deserialize(raw[len(TOKEN_PREFIX):])
    macaroon.add_third_party_caveat("https://elsewhere.example", b"k" * 32, "third-party-id")
    refused(w, TOKEN_PREFIX + macaroon.serialize())


def test_malformed_and_foreign_tokens_are_refused(w: World) -> None:
    assert "tokens start with 'bastion-'" in refused(w, "pypi-AgEIcHlwaS5vcmc")
    assert "malformed API token" in refused(w, "bastion-not~base64!")
    assert "malformed API token" in refused(w, "bastion-")
    token_id = w.token_ids["alice"]
    caveats = [json.loads(c) for c in caveat_bytes(w.tokens["alice"])]
    assert "signature" in refused(w, issue_token(b"another-server-secret", token_id, caveats))
    assert "unknown API token" in refused(w, issue_token(w.bastion.secret, "f" * 32, caveats))


def test_revoked_token_is_refused_immediately(w: World) -> None:
    created = w.client.post("/api/v1/users/alice/tokens", json={"expires": "1d"}, headers=bearer(w.tokens["alice"]))
    assert created.status_code == 201
    fresh, fresh_id = created.json()["token"], created.json()["id"]
    assert w.client.get("/api/v1/users/alice/tokens", headers=bearer(fresh)).status_code == 200
    revoked = w.client.delete(f"/api/v1/tokens/{fresh_id}", headers=bearer(w.tokens["alice"]))
    assert revoked.status_code == 200 and revoked.json()["revoked"] is not None
    response = w.client.get("/api/v1/users/alice/tokens", headers=bearer(fresh))
    assert response.status_code == 403
    assert "revoked" in response.json()["error"]
    before = w.state()
    response = upload_as(w, fresh)
    assert response.status_code == 403 and "revoked" in response.text
    assert w.state() == before
    assert "revoked" in refused(w, fresh)
    # other tokens of the user are unaffected
    assert upload_as(w, w.tokens["alice"]).status_code == 200


def test_revocation_during_an_upload_is_not_undone(w: World) -> None:
    """An upload authenticated just before its token is revoked must not resurrect the token."""
    principal, row = authenticate(w, w.tokens["alice"])
    response = w.client.delete(f"/api/v1/tokens/{row.id}", headers=bearer(w.tokens["alice"]))
    assert response.status_code == 200
    path = w.wheel(PROJECT, "2.0")
    before = w.state()
    with open(path, "rb") as handle, pytest.raises(UploadRejected) as info:
        upload(w.bastion, principal, upload_form(path, PROJECT, "2.0"),
               IncomingFile(path.name, "application/octet-stream", handle), RequestContext())
    assert info.value.status == 403 and "revoked" in info.value.message
    assert w.state() == before
    with w.bastion.db.read() as session:
        assert session.get(ApiToken, row.id).revoked is not None


def test_last_used_is_recorded_after_an_upload(w: World) -> None:
    def last_used() -> dict[str, object]:
        listing = w.client.get("/api/v1/users/alice/tokens", headers=bearer(w.tokens["alice_never"]))
        assert listing.status_code == 200
        return {t["id"]: t["last_used"] for t in listing.json()}

    fresh = w.token("fresh", "alice")
    assert last_used()[w.token_ids["fresh"]] is None
    started = time.time()
    assert upload_as(w, fresh).status_code == 200
    used = last_used()
    assert used[w.token_ids["alice_never"]] is None  # authenticating a listing is not a use
    with w.bastion.db.read() as session:
        stamp = session.get(ApiToken, w.token_ids["fresh"]).last_used
    assert stamp is not None and started - 1 <= stamp.timestamp() <= time.time() + 1
    assert used[w.token_ids["fresh"]] is not None


def test_token_keys_are_not_stored(w: World) -> None:
    secret = w.bastion.secret
    needles: list[bytes] = [secret]
    for key, raw in w.tokens.items():
        derived = derive_key(secret, w.token_ids[key])
        signature = Macaroon.deserialize(raw[len(TOKEN_PREFIX):]).signature
        needles += [derived, derived.hex().encode(), base64.b64encode(derived), base64.urlsafe_b64encode(derived),
                    base64.urlsafe_b64encode(derived).rstrip(b"="), signature.encode(), raw.encode(),
                    raw[len(TOKEN_PREFIX):].encode()]
    haystack = b"\n".join(
        value if isinstance(value, bytes) else repr(value).encode()
        for rows in db_rows(w.bastion).values() for row in rows for value in row
    )
    with w.bastion.db.read() as session:
        row = session.get(ApiToken, w.token_ids["alice"])
        columns = [getattr(row, c.key) for c in ApiToken.__table__.columns]
    assert w.token_ids["alice"] in columns  # the scan does see the token rows
    assert w.token_ids["alice"].encode() in haystack
    found = [n for n in needles if n in haystack]
    assert not found, "a token key, signature or the server secret is stored in the database"


def test_stored_caveats_are_reapplied(w: World) -> None:
    raw, token_id, uid = w.tokens["alice"], w.token_ids["alice"], w.ids["alice"]  # type: ignore[attr-defined]
    assert authenticate(w, raw)[0].username == "alice"
    now = int(time.time())
    with w.bastion.db.write() as session:
        session.execute(update(ApiToken).where(ApiToken.id == token_id)
                        .values(caveats=[[0, now - 10, now - 100], [2, uid]]))
    assert "expired" in refused(w, raw)
    with w.bastion.db.write() as session:
        session.execute(update(ApiToken).where(ApiToken.id == token_id)
                        .values(caveats=[[1, ["other"]], [2, uid]]))
    assert authenticate(w, raw)[0].token_projects == frozenset({"other"})
    assert upload_as(w, raw).status_code == 403
    with w.bastion.db.write() as session:
        session.execute(update(ApiToken).where(ApiToken.id == token_id)
                        .values(caveats=[[2, w.ids["bob"]]]))  # type: ignore[attr-defined]
    assert "another user" in refused(w, raw)


def test_disabled_user_tokens_are_refused(w: World) -> None:
    with w.bastion.db.write() as session:
        session.execute(update(User).where(User.username == "alice").values(is_active=False))
    assert "disabled" in refused(w, w.tokens["alice"])


def test_token_created_by_operator_with_tiny_expiry_verifies_now(w: World) -> None:
    from bastion.accounts import service

    started = int(time.time())
    with w.bastion.db.write() as session:
        new = service.create_token(session, w.bastion.secret, "bob", projects=None,
                                   expires_in=timedelta(seconds=30), principal=OPERATOR)
    ended = int(time.time())
    time_caveat = json.loads(caveat_bytes(new.token)[0])
    assert time_caveat[0] == 0 and started + 29 <= time_caveat[1] <= ended + 30 and time_caveat[2] <= started
    assert authenticate(w, new.token)[0].username == "bob"
