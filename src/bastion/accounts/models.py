"""Account tables: users, API tokens, browser sessions, second factors and the index policy."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from bastion.db import Base, UTCDateTime, utcnow


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    """As the user typed it."""
    username_key: Mapped[str] = mapped_column(String(100), unique=True)
    """Lower-cased, for case-insensitive uniqueness and lookup."""
    email: Mapped[str] = mapped_column(String(254))
    password_hash: Mapped[str] = mapped_column(String(200))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    """The user followed the link mailed to ``email``."""
    password_changed: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """Last password change; reset links issued before it no longer work."""
    totp_secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    """The TOTP secret, encrypted (Fernet) with the index's encryption key; None: no TOTP."""
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """The 30 s time step of the last accepted code: a code is accepted once (replay refused)."""
    mfa_enabled: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """When the user first had a second factor (TOTP or a security key); None: no 2FA."""
    trusted_reporter: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    """Malware reports by this user can quarantine a project on their own (see scanning.reports)."""


class WebAuthnCredential(Base):
    """A security key or passkey registered as a second factor."""

    __tablename__ = "webauthn_credentials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    credential_id: Mapped[str] = mapped_column(String(1400), unique=True)
    """The authenticator's credential id, base64url."""
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    """COSE public key."""
    sign_count: Mapped[int] = mapped_column(BigInteger, default=0)
    name: Mapped[str] = mapped_column(String(64))
    """The label the user gave it."""
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RecoveryCode(Base):
    """One single-use recovery code, stored as a keyed hash."""

    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    used: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class BrowserSession(Base):
    """A browser sign-in. The cookie holds a random token; only its SHA-256 is stored."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    """SHA-256 (hex) of the cookie value."""
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(20))
    """``pending-2fa`` (password accepted, second factor awaited) or ``active``."""
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires: Mapped[datetime] = mapped_column(UTCDateTime)
    reauth_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """Last re-authentication (password and second factor): unlocks sensitive actions for a while."""
    challenge: Mapped[str | None] = mapped_column(Text, nullable=True)
    """The pending WebAuthn challenge (base64url), or a pending TOTP secret during enrollment."""
    ip_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(Text, nullable=True)


class IndexPolicy(Base):
    """Index-wide policy values an admin changed at run time (they override settings)."""

    __tablename__ = "index_policy"

    key: Mapped[str] = mapped_column(String(60), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))
    changed: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    changed_by: Mapped[str | None] = mapped_column(String(100), nullable=True)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    """Random public identifier carried in the macaroon; the signing key is derived from it."""
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    description: Mapped[str] = mapped_column(String(200), default="")
    caveats: Mapped[list] = mapped_column(JSON)
    """The caveats issued at creation, re-applied at every check (a copy cannot be edited away)."""
    projects: Mapped[list | None] = mapped_column(JSON, nullable=True)
    """Normalized project names the token is limited to; None means every project of the user."""
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
