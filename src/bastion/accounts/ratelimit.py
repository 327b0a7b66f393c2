"""Rate limits and lockout for password and second-factor attempts (the ``limits`` library).

Failures are counted per account and per client address in a moving window; when an account's
budget is spent, further attempts are refused, right or wrong, until the window moves on. The
per-address budget is ten times the per-account one (one office behind one NAT). Counters live in
memory (one process) or in Redis (``BASTION_RATE_LIMIT_STORAGE=redis://...``, shared by workers).
"""

from __future__ import annotations

import ipaddress
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, storage, strategies

from bastion.settings import Settings, SettingsError, parse_rate

KINDS = ("password", "mfa")


@dataclass(frozen=True)
class Lockout:
    """Attempts are refused for now."""

    retry_after: int
    """Seconds until the next attempt may be made."""
    scope: str
    """``account`` or ``address``: whose budget is spent."""

    @property
    def message(self) -> str:
        minutes = max(1, math.ceil(self.retry_after / 60))
        whose = "this account" if self.scope == "account" else "your network address"
        return (f"too many failed attempts for {whose}: try again in {minutes} minute{'s' if minutes > 1 else ''} "
                "(or reset your password if you forgot it)")


def network_of(address: str | None) -> str | None:
    """The key of a client address: IPv4 as is, IPv6 by its /64 (one host owns a whole /64)."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class AttemptLimiter:
    def __init__(self, storage_uri: str, rates: dict[str, str]) -> None:
        try:
            self.storage = storage.storage_from_string(storage_uri)
        except Exception as exc:  # noqa: BLE001  (the library raises several kinds)
            raise SettingsError(f"cannot use BASTION_RATE_LIMIT_STORAGE={storage_uri!r}: {exc}") from None
        self.window = strategies.MovingWindowRateLimiter(self.storage)
        self.per_account: dict[str, RateLimitItem] = {}
        self.per_address: dict[str, RateLimitItem] = {}
        self.noise: RateLimitItem = parse_rate("30 per 15 minutes", what="audit noise budget")
        for kind, text in rates.items():
            item = parse_rate(text, what=f"rate for {kind} attempts")
            self.per_account[kind] = item
            self.per_address[kind] = type(item)(item.amount * 10, item.multiples, namespace="bastion-ip")

    @classmethod
    def from_settings(cls, settings: Settings) -> AttemptLimiter:
        return cls(settings.rate_limit_storage, {
            "password": settings.login_attempts,
            "mfa": settings.mfa_attempts,
            # Not failures but costs: each registration hashes a password and sends a mail, each
            # reset request sends a mail to someone's inbox.
            "signup": "20 per hour",
            "reset": "5 per hour",
        })

    def _retry_after(self, item: RateLimitItem, *ids: str) -> int:
        stats = self.window.get_window_stats(item, *ids)
        return max(1, int(stats.reset_time - time.time()) + 1)

    def locked(self, kind: str, account: str, address: str | None) -> Lockout | None:
        """Whether an attempt may be made now (nothing is counted)."""
        address = network_of(address)
        item = self.per_account[kind]
        if not self.window.test(item, kind, account.lower()):
            return Lockout(self._retry_after(item, kind, account.lower()), "account")
        if address:
            ip_item = self.per_address[kind]
            if not self.window.test(ip_item, kind, address):
                return Lockout(self._retry_after(ip_item, kind, address), "address")
        return None

    def failed(self, kind: str, account: str, address: str | None) -> Lockout | None:
        """Count a failed attempt; the lockout it caused, if the budget is now spent."""
        self.window.hit(self.per_account[kind], kind, account.lower())
        if address:
            self.window.hit(self.per_address[kind], kind, network_of(address) or address)
        return self.locked(kind, account, address)

    def may_record(self, address: str | None) -> bool:
        """Whether one more refusal by an unauthenticated client (a lockout hit, a forged form)
        may be written to the audit log: each costs the chain's lock, so a flood of them is
        capped per address (30 per 15 minutes); the refusals themselves go on."""
        return self.window.hit(self.noise, "events", address or "-")

    def succeeded(self, kind: str, account: str) -> None:
        """A success clears the account's failures (not the address's)."""
        self.window.clear(self.per_account[kind], kind, account.lower())
