"""API tokens as macaroons (pymacaroons).

A token is ``bastion-`` + a serialized macaroon. Its identifier is a random public id; its key is
HMAC-SHA256(server secret, id), so no token key is ever stored. Caveats are JSON lists whose first
element is a tag, and which only ever grow at the end (wire format stability, as PyPI does):

- ``[0, not_after, not_before]``: Unix times; the token is valid in [not_before, not_after).
- ``[1, ["name", ...]]``: normalized project names the token may act on.
- ``[2, user_id]``: the user the token belongs to.

Anyone holding a token can append caveats to narrow it (attenuation); nobody can remove one. The
caveats issued at creation are stored and re-applied at every check.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pymacaroons import Macaroon, Verifier
from pymacaroons.exceptions import MacaroonException

TOKEN_PREFIX = "bastion-"
LOCATION = "bastion"
_KEY_CONTEXT = b"bastion-token-key-v1:"

TAG_TIME = 0
TAG_PROJECTS = 1
TAG_USER = 2


class InvalidToken(Exception):
    """The token is malformed, forged, expired, revoked or not valid for this use."""


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token says about itself."""

    token_id: str
    """The token's public identifier (its database key)."""
    projects: frozenset[str] | None
    """Projects the token may act on (intersection of every project caveat); None: no limit."""


def derive_key(secret: bytes, token_id: str) -> bytes:
    return hmac.new(secret, _KEY_CONTEXT + token_id.encode(), hashlib.sha256).digest()


def issue_token(secret: bytes, token_id: str, caveats: list[list]) -> str:
    macaroon = Macaroon(location=LOCATION, identifier=token_id, key=derive_key(secret, token_id))
    for caveat in caveats:
        macaroon.add_first_party_caveat(json.dumps(caveat, separators=(",", ":")))
    return TOKEN_PREFIX + macaroon.serialize()


def make_caveats(
    *, user_id: int, projects: Sequence[str] | None, not_after: int | None, not_before: int
) -> list[list]:
    caveats: list[list] = []
    if not_after is not None:
        caveats.append([TAG_TIME, not_after, not_before])
    if projects is not None:
        caveats.append([TAG_PROJECTS, sorted(projects)])
    caveats.append([TAG_USER, user_id])
    return caveats


def parse_token_id(raw: str) -> tuple[str, Macaroon]:
    """Decode a token without verifying it; raises InvalidToken if it is not a Bastion token."""
    if not raw.startswith(TOKEN_PREFIX):
        raise InvalidToken("not a Bastion API token (tokens start with 'bastion-')")
    try:
        macaroon = Macaroon.deserialize(raw[len(TOKEN_PREFIX) :])
        token_id = macaroon.identifier
        if isinstance(token_id, bytes):
            token_id = token_id.decode()
        if "\x00" in token_id:  # never issued, and PostgreSQL cannot even look it up
            raise ValueError(token_id)
    except Exception:
        raise InvalidToken("malformed API token: copy the whole token as it was printed") from None
    return token_id, macaroon


class _CaveatChecker:
    def __init__(self, user_id: int, now: int) -> None:
        self.user_id = user_id
        self.now = now
        self.projects: frozenset[str] | None = None
        self.failure: str | None = None

    def __call__(self, predicate: str | bytes) -> bool:
        try:
            caveat = json.loads(predicate)
            tag = caveat[0]
        except (ValueError, TypeError, IndexError, KeyError):
            self.failure = "the token carries a caveat Bastion cannot read"
            return False
        if tag == TAG_TIME and len(caveat) == 3:
            not_after, not_before = caveat[1], caveat[2]
            if not (isinstance(not_after, int) and isinstance(not_before, int)):
                self.failure = "the token's time caveat is malformed"
                return False
            if self.now >= not_after:
                self.failure = "the API token has expired: create a new one"
                return False
            if self.now < not_before:
                self.failure = "the API token is not valid yet"
                return False
            return True
        if tag == TAG_PROJECTS and len(caveat) == 2 and isinstance(caveat[1], list):
            names = frozenset(str(name) for name in caveat[1])
            self.projects = names if self.projects is None else self.projects & names
            return True
        if tag == TAG_USER and len(caveat) == 2:
            if caveat[1] != self.user_id:
                self.failure = "the API token belongs to another user"
                return False
            return True
        self.failure = "the token carries a caveat Bastion does not know"
        return False


def verify_token(
    secret: bytes, macaroon: Macaroon, *, token_id: str, user_id: int, stored_caveats: list[list]
) -> TokenClaims:
    """Check the signature and every caveat (the token's own and those stored at issue)."""
    checker = _CaveatChecker(user_id, int(time.time()))
    verifier = Verifier()
    verifier.satisfy_general(checker)
    try:
        verifier.verify(macaroon, derive_key(secret, token_id))
    except MacaroonException:
        raise InvalidToken(checker.failure or "invalid API token signature") from None
    except Exception:
        raise InvalidToken(checker.failure or "invalid API token") from None
    for caveat in stored_caveats:
        if not checker(json.dumps(caveat)):
            raise InvalidToken(checker.failure or "invalid API token")
    return TokenClaims(token_id=token_id, projects=checker.projects)
