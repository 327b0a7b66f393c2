"""Hardening of who may act on issue 6's surfaces, on both databases: the 2FA mandate (policy
``everyone``: every action beyond reading) holds for registering and removing applications and for
pushing advisories through the API, as it does for every other account action; a refusal stores
nothing."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from bastion.accounts import policy
from bastion.accounts.models import User
from bastion.authz import OPERATOR
from bastion.db import utcnow
from bastion.services import Bastion
from tests.conftest import make_user
from tests.unit.world import state


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "text/plain"}


def test_the_everyone_mandate_holds_for_applications(bastion: Bastion, client: Any) -> None:
    plain = make_user(bastion, "nofactor")
    secured = make_user(bastion, "withfactor")
    with bastion.db.write() as session:
        session.execute(update(User).where(User.username == "withfactor").values(mfa_enabled=utcnow()))
    assert client.put("/api/applications/early", content=b"flask\n", headers=_bearer(plain)).status_code == 201

    with bastion.db.write() as session:
        policy.set_mfa_policy(session, "everyone", principal=OPERATOR)
    before = state(bastion)
    for method, url, kwargs in [("put", "/api/applications/shop", {"content": b"flask\n"}),
                                ("put", "/api/applications/early", {"content": b"django\n"}),
                                ("delete", "/api/applications/early", {})]:
        refused = getattr(client, method)(url, headers=_bearer(plain), **kwargs)
        assert refused.status_code == 403, (url, refused.text)
        assert "two-factor authentication is required" in refused.json()["error"]
        assert "/account/2fa" in refused.json()["error"]
    assert state(bastion) == before
    # Reading one's own is not held back; someone with 2FA may act.
    assert client.get("/api/applications/early", headers=_bearer(plain)).status_code == 200
    assert client.put("/api/applications/shop", content=b"flask\n", headers=_bearer(secured)).status_code == 201
    assert client.delete("/api/applications/shop", headers=_bearer(secured)).status_code == 200


def test_the_everyone_mandate_holds_for_pushing_advisories(bastion: Bastion, client: Any) -> None:
    record = b'{"id": "PYSEC-2099-51", "modified": "2099-01-01T00:00:00Z"}'
    plain = {"Authorization": f"Bearer {make_user(bastion, 'root', admin=True)}", "Content-Type": "application/json"}
    secured = {"Authorization": f"Bearer {make_user(bastion, 'root2', admin=True)}",
               "Content-Type": "application/json"}
    with bastion.db.write() as session:
        session.execute(update(User).where(User.username == "root2").values(mfa_enabled=utcnow()))
        policy.set_mfa_policy(session, "everyone", principal=OPERATOR)
    before = state(bastion)
    refused = client.post("/api/v1/advisories", content=record, headers=plain)
    assert refused.status_code == 403 and "two-factor authentication is required" in refused.json()["error"]
    assert state(bastion) == before
    assert client.post("/api/v1/advisories", content=record, headers=secured).json()["added"] == 1
