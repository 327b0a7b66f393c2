"""Second factors: TOTP (pyotp), WebAuthn security keys and passkeys (webauthn), recovery codes.

No HTTP here. Every change and every use appends an audit event in the caller's transaction.
``User.mfa_enabled`` is kept non-null exactly while the user has at least one second factor, so
that authentication can tell "has 2FA" from the user row alone (no extra query per upload).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime

import pyotp
import segno
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.exceptions import InvalidAuthenticationResponse, InvalidRegistrationResponse, WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from bastion.accounts.models import RecoveryCode, User, WebAuthnCredential
from bastion.db import utcnow
from bastion.errors import Conflict, NotFound, ServiceError
from bastion.events import RequestContext, record_event

TOTP_ISSUER = "Bastion"
TOTP_STEP = 30
TOTP_WINDOW = 1  # +-1 step: a code from the previous or next 30 s is still accepted
RECOVERY_CODE_COUNT = 8
MAX_SECURITY_KEYS = 10


class MfaError(ServiceError):
    """A second-factor code or assertion was refused; the message says why and what to do."""


# ---------------------------------------------------------------------------------------------
# Encryption of TOTP secrets at rest
# ---------------------------------------------------------------------------------------------

def encrypt_secret(key: bytes, secret: str) -> str:
    return Fernet(key).encrypt(secret.encode()).decode()


def decrypt_secret(key: bytes, token: str) -> str:
    try:
        return Fernet(key).decrypt(token.encode()).decode()
    except InvalidToken:
        raise ServiceError(
            "the stored TOTP secret cannot be decrypted with this index's encryption key: "
            "restore the original BASTION_ENCRYPTION_KEY (or <data_dir>/encryption.key)",
            status=500,
        ) from None


# ---------------------------------------------------------------------------------------------
# State of a user's factors
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Factors:
    """Which second factors a user has."""

    totp: bool
    """A TOTP authenticator app is enrolled."""
    security_keys: int
    """Number of registered WebAuthn credentials."""
    recovery_codes_left: int
    """Unused recovery codes."""

    @property
    def any(self) -> bool:
        return self.totp or self.security_keys > 0


def factors(session: Session, user: User) -> Factors:
    keys = session.execute(
        select(func.count()).select_from(WebAuthnCredential).where(WebAuthnCredential.user_id == user.id)
    ).scalar_one()
    codes = session.execute(
        select(func.count()).select_from(RecoveryCode)
        .where(RecoveryCode.user_id == user.id, RecoveryCode.used.is_(None))
    ).scalar_one()
    return Factors(totp=user.totp_secret is not None, security_keys=int(keys), recovery_codes_left=int(codes))


def _after_factor_change(session: Session, user: User, *, secret: bytes,
                         context: RequestContext | None = None) -> list[str] | None:
    """Keep ``mfa_enabled`` true to the factors; on the first factor, issue recovery codes (returned
    once, to be shown once)."""
    state = factors(session, user)
    if state.any and user.mfa_enabled is None:
        user.mfa_enabled = utcnow()
        has_codes = session.execute(
            select(func.count()).select_from(RecoveryCode).where(RecoveryCode.user_id == user.id)
        ).scalar_one()
        if not has_codes:
            return generate_recovery_codes(session, user, secret=secret, context=context)
    elif not state.any and user.mfa_enabled is not None:
        user.mfa_enabled = None
        # Without a second factor the recovery codes recover nothing; new ones come with the next.
        for row in session.execute(select(RecoveryCode).where(RecoveryCode.user_id == user.id)).scalars():
            session.delete(row)
        session.flush()  # counted right by a later factor change in the same transaction
    return None


def _event(session: Session, action: str, user: User, context: RequestContext | None, secret: bytes,
           details: dict | None = None) -> None:
    record_event(session, action, actor_id=user.id, actor=user.username, subject=f"user:{user.username}",
                 context=context or RequestContext(), details=details, secret=secret)


# ---------------------------------------------------------------------------------------------
# TOTP
# ---------------------------------------------------------------------------------------------

def new_totp_secret() -> str:
    return pyotp.random_base32()  # 160 bits, as RFC 4226 recommends


def totp_uri(secret: str, username: str, issuer: str = TOTP_ISSUER) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=issuer)


def qr_svg(text: str) -> str:
    """An inline SVG QR code of ``text`` (made here: no network, no script)."""
    return segno.make(text, error="m").svg_inline(scale=5, title="TOTP QR code")


def _clean_code(code: str) -> str:
    return "".join(code.split()).replace("-", "")


def matching_step(secret: str, code: str, *, now: datetime | None = None) -> int | None:
    """The 30 s time step (within +-1 of now) whose code equals ``code``, compared in constant
    time; None when none does."""
    code = _clean_code(code)
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now or utcnow())
    found = None
    for step in range(current - TOTP_WINDOW, current + TOTP_WINDOW + 1):
        expected = totp.generate_otp(step)
        if hmac.compare_digest(expected.encode(), code.encode()):
            found = step
    return found


def enable_totp(session: Session, user: User, secret_b32: str, code: str, *, key: bytes, secret: bytes,
                context: RequestContext | None = None, now: datetime | None = None) -> list[str] | None:
    """Enroll TOTP after the user proved their app computes the right code; returns new recovery
    codes when this is the user's first second factor."""
    if user.totp_secret is not None:
        raise Conflict("an authenticator app is already enrolled: remove it first to enroll another")
    step = matching_step(secret_b32, code, now=now)
    if step is None:
        _event(session, "mfa.totp_enroll_failed", user, context, secret)
        raise MfaError("that code does not match: check the time on your device and enter the current "
                       "6-digit code from your authenticator app")
    user.totp_secret = encrypt_secret(key, secret_b32)
    user.totp_last_step = step
    _event(session, "mfa.totp_added", user, context, secret)
    return _after_factor_change(session, user, secret=secret, context=context)


def remove_totp(session: Session, user: User, *, secret: bytes, context: RequestContext | None = None) -> None:
    if user.totp_secret is None:
        raise NotFound("no authenticator app is enrolled")
    user.totp_secret = None
    user.totp_last_step = None
    _event(session, "mfa.totp_removed", user, context, secret)
    _after_factor_change(session, user, secret=secret, context=context)


def check_totp(session: Session, user: User, code: str, *, key: bytes, secret: bytes,
               context: RequestContext | None = None, now: datetime | None = None) -> None:
    """Accept a TOTP code once: a code of a step already used (replay) or an older one is refused.
    Raises MfaError (and records an event) when refused."""
    if user.totp_secret is None:
        raise MfaError("no authenticator app is enrolled on this account: use a security key or a recovery code")
    # Two sign-ins racing with the same code: the row lock makes the second see the first's step
    # (PostgreSQL; SQLite's write transactions already run one at a time).
    session.refresh(user, attribute_names=["totp_last_step"], with_for_update=True)
    step = matching_step(decrypt_secret(key, user.totp_secret), code, now=now)
    if step is None:
        _event(session, "mfa.failed", user, context, secret, {"method": "totp", "reason": "wrong or expired code"})
        raise MfaError("invalid or expired code: enter the current 6-digit code from your authenticator app")
    if user.totp_last_step is not None and step <= user.totp_last_step:
        _event(session, "mfa.failed", user, context, secret, {"method": "totp", "reason": "code reused"})
        raise MfaError("this code was used already: wait for your authenticator app to show the next code")
    user.totp_last_step = step
    _event(session, "mfa.used", user, context, secret, {"method": "totp"})


# ---------------------------------------------------------------------------------------------
# Recovery codes
# ---------------------------------------------------------------------------------------------

def _code_hash(secret: bytes, code: str) -> str:
    normalized = _clean_code(code).lower()
    return hmac.new(secret, b"bastion-recovery-code-v1:" + normalized.encode(), hashlib.sha256).hexdigest()


def generate_recovery_codes(session: Session, user: User, *, secret: bytes,
                            context: RequestContext | None) -> list[str]:
    """Replace the user's recovery codes with eight new single-use ones (returned once; stored
    only as keyed hashes)."""
    for row in session.execute(select(RecoveryCode).where(RecoveryCode.user_id == user.id)).scalars():
        session.delete(row)
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = secrets.token_hex(8)  # 64 bits, 16 hex characters (PyPI's format)
        codes.append(f"{raw[:4]}-{raw[4:8]}-{raw[8:12]}-{raw[12:]}")
        session.add(RecoveryCode(user_id=user.id, code_hash=_code_hash(secret, raw)))
    _event(session, "mfa.recovery_codes_generated", user, context, secret, {"count": RECOVERY_CODE_COUNT})
    return codes


def use_recovery_code(session: Session, user: User, code: str, *, secret: bytes,
                      context: RequestContext | None = None) -> int:
    """Spend one recovery code; the number left. Raises MfaError when it is wrong or used."""
    wanted = _code_hash(secret, code)
    # Locked rows: two sign-ins racing with one code cannot both spend it (PostgreSQL; SQLite's
    # write transactions already run one at a time).
    rows = session.execute(
        select(RecoveryCode).where(RecoveryCode.user_id == user.id).with_for_update()
    ).scalars().all()
    match = None
    for row in rows:  # compare every row, in constant time each
        if hmac.compare_digest(row.code_hash, wanted):
            match = row
    if match is None or match.used is not None:
        reason = "recovery code already used" if match is not None else "wrong recovery code"
        _event(session, "mfa.failed", user, context, secret, {"method": "recovery_code", "reason": reason})
        raise MfaError(f"{reason}: each code works once; type one of the unused codes you saved")
    match.used = utcnow()
    left = sum(1 for row in rows if row.used is None)
    _event(session, "mfa.recovery_code_used", user, context, secret, {"codes_left": left})
    return left


# ---------------------------------------------------------------------------------------------
# WebAuthn
# ---------------------------------------------------------------------------------------------

def _user_handle(user: User) -> bytes:
    return hashlib.sha256(f"bastion-user:{user.id}".encode()).digest()


def webauthn_registration_options(session: Session, user: User, *, rp_id: str) -> tuple[str, str]:
    """(options JSON for navigator.credentials.create, challenge to remember in the session)."""
    existing = session.execute(
        select(WebAuthnCredential.credential_id).where(WebAuthnCredential.user_id == user.id)
    ).scalars().all()
    if len(existing) >= MAX_SECURITY_KEYS:
        raise Conflict(f"at most {MAX_SECURITY_KEYS} security keys per account: remove one first")
    options = generate_registration_options(
        rp_id=rp_id,
        rp_name="Bastion",
        user_id=_user_handle(user),
        user_name=user.username,
        user_display_name=user.username,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.DISCOURAGED,
            user_verification=UserVerificationRequirement.DISCOURAGED,
        ),
        exclude_credentials=[PublicKeyCredentialDescriptor(id=base64url_to_bytes(c)) for c in existing],
    )
    return options_to_json(options), bytes_to_base64url(options.challenge)


def add_webauthn(session: Session, user: User, credential: str, *, challenge: str, rp_id: str, origin: str,
                 name: str, secret: bytes, context: RequestContext | None = None
                 ) -> tuple[WebAuthnCredential, list[str] | None]:
    """Verify a registration response and store the credential; recovery codes if it is the first
    second factor."""
    name = " ".join(name.split())
    if not name or len(name) > 64:
        raise ServiceError("name the security key with 1 to 64 characters, e.g. 'YubiKey 5 (office)'")
    try:
        verified = verify_registration_response(
            credential=credential, expected_challenge=base64url_to_bytes(challenge),
            expected_rp_id=rp_id, expected_origin=origin,
        )
    # WebAuthnException: also a malformed credential (InvalidJSONStructure, bad CBOR...), not only a wrong one.
    except (InvalidRegistrationResponse, WebAuthnException, ValueError, KeyError, TypeError,
            json.JSONDecodeError) as exc:
        _event(session, "mfa.webauthn_enroll_failed", user, context, secret, {"reason": str(exc)[:200]})
        raise MfaError(f"the security key's response could not be verified ({exc}): try registering it again") from None
    credential_id = bytes_to_base64url(verified.credential_id)
    if session.execute(
        select(WebAuthnCredential.id).where(WebAuthnCredential.credential_id == credential_id)
    ).scalar() is not None:
        raise Conflict("this security key is registered already")
    row = WebAuthnCredential(user_id=user.id, credential_id=credential_id,
                             public_key=verified.credential_public_key, sign_count=verified.sign_count, name=name)
    session.add(row)
    session.flush()
    _event(session, "mfa.webauthn_added", user, context, secret, {"name": name, "credential": row.id})
    return row, _after_factor_change(session, user, secret=secret, context=context)


def rename_webauthn(session: Session, user: User, credential_pk: int, name: str, *, secret: bytes,
                    context: RequestContext | None = None) -> WebAuthnCredential:
    row = _own_credential(session, user, credential_pk)
    name = " ".join(name.split())
    if not name or len(name) > 64:
        raise ServiceError("name the security key with 1 to 64 characters")
    old, row.name = row.name, name
    _event(session, "mfa.webauthn_renamed", user, context, secret, {"from": old, "to": name})
    return row


def remove_webauthn(session: Session, user: User, credential_pk: int, *, secret: bytes,
                    context: RequestContext | None = None) -> None:
    row = _own_credential(session, user, credential_pk)
    session.delete(row)
    session.flush()
    _event(session, "mfa.webauthn_removed", user, context, secret, {"name": row.name})
    _after_factor_change(session, user, secret=secret, context=context)


def _own_credential(session: Session, user: User, credential_pk: int) -> WebAuthnCredential:
    # An id out of the column's range (from a URL) is no key, not a database error.
    row = session.get(WebAuthnCredential, credential_pk) if 0 < credential_pk < 2**31 else None
    if row is None or row.user_id != user.id:
        raise NotFound("no such security key on your account")
    return row


def webauthn_authentication_options(session: Session, user: User, *, rp_id: str) -> tuple[str, str]:
    creds = session.execute(
        select(WebAuthnCredential.credential_id).where(WebAuthnCredential.user_id == user.id)
    ).scalars().all()
    if not creds:
        raise NotFound("no security key is registered on this account")
    options = generate_authentication_options(
        rp_id=rp_id,
        allow_credentials=[PublicKeyCredentialDescriptor(id=base64url_to_bytes(c)) for c in creds],
        user_verification=UserVerificationRequirement.DISCOURAGED,
    )
    return options_to_json(options), bytes_to_base64url(options.challenge)


def check_webauthn(session: Session, user: User, credential: str, *, challenge: str, rp_id: str, origin: str,
                   secret: bytes, context: RequestContext | None = None) -> WebAuthnCredential:
    """Verify an assertion from one of the user's keys; refuses a cloned key (counter went back)."""
    try:
        raw_id = json.loads(credential).get("rawId") or json.loads(credential).get("id")
        row = session.execute(
            select(WebAuthnCredential).where(WebAuthnCredential.credential_id == str(raw_id),
                                             WebAuthnCredential.user_id == user.id)
        ).scalar_one_or_none()
        if row is None:
            raise MfaError("this security key is not registered on this account")
        verified = verify_authentication_response(
            credential=credential, expected_challenge=base64url_to_bytes(challenge), expected_rp_id=rp_id,
            expected_origin=origin, credential_public_key=row.public_key,
            credential_current_sign_count=row.sign_count,
        )
    except MfaError as exc:
        _event(session, "mfa.failed", user, context, secret, {"method": "webauthn", "reason": exc.message})
        raise
    except (InvalidAuthenticationResponse, WebAuthnException, ValueError, KeyError, TypeError,
            AttributeError) as exc:
        _event(session, "mfa.failed", user, context, secret, {"method": "webauthn", "reason": str(exc)[:200]})
        raise MfaError(f"the security key's answer could not be verified ({exc}): try again") from None
    row.sign_count = verified.new_sign_count
    row.last_used = utcnow()
    _event(session, "mfa.used", user, context, secret, {"method": "webauthn", "name": row.name})
    return row


def list_webauthn(session: Session, user: User) -> list[WebAuthnCredential]:
    return list(session.execute(
        select(WebAuthnCredential).where(WebAuthnCredential.user_id == user.id).order_by(WebAuthnCredential.id)
    ).scalars())
