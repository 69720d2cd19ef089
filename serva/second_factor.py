"""The console's second factor: TOTP (RFC 6238, pyotp) and ten one-time recovery codes.

Owners must enrol; support staff may. A code is accepted once: the step it belongs to is
stored and the UPDATE that records it matches only a later step, so a code seen over a
shoulder (or replayed) a second time is refused, even by two requests at once. Recovery codes
are random, stored as SHA-256 hashes (they carry enough entropy for a fast hash), and used
up by a conditional UPDATE."""
import hashlib
import secrets
import time

import pyotp
import segno
from sqlalchemy import delete, insert, select, update

from .db import now
from .schema import operators, recovery_codes

ISSUER = "Serva"
RECOVERY_CODES = 10
RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no look-alikes (l/1, o/0)


def required(row) -> bool:
    """Whether this operator must pass a second factor (owners always; others once enrolled)."""
    return row.role == "owner" or row.totp_confirmed_at is not None


def enrolled(row) -> bool:
    return row.totp_confirmed_at is not None


def pending_secret(conn, row) -> str:
    """The secret being enrolled (made on the first visit, kept until confirmed)."""
    if row.totp_secret and not enrolled(row):
        return row.totp_secret
    secret = pyotp.random_base32()
    conn.execute(update(operators).where(operators.c.id == row.id,
                                         operators.c.totp_confirmed_at.is_(None))
                 .values(totp_secret=secret))
    return secret


def provisioning_uri(secret: str, email: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=ISSUER)


def qr_data_uri(text: str) -> str:
    """The QR code as an SVG data: URI (an <img> the CSP allows; no script, no request)."""
    return segno.make(text, error="m").svg_data_uri(scale=5)


def _matching_step(secret: str, code: str):
    """The time step `code` belongs to (this one or its neighbours, for a skewed clock)."""
    code = "".join((code or "").split())
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    moment = time.time()
    for offset in (0, -1, 1):
        at = moment + offset * totp.interval
        if secrets.compare_digest(totp.at(at), code):
            return int(at) // totp.interval
    return None


def _use_code(conn, row, code: str, confirming: bool) -> bool:
    step = _matching_step(row.totp_secret or "", code) if row.totp_secret else None
    if step is None:
        return False
    condition = [operators.c.id == row.id,
                 operators.c.totp_last_step.is_(None) | (operators.c.totp_last_step < step)]
    values = {"totp_last_step": step}
    if confirming:
        condition.append(operators.c.totp_confirmed_at.is_(None))
        values["totp_confirmed_at"] = now()
    return conn.execute(update(operators).where(*condition).values(**values)).rowcount == 1


def _hash(code: str) -> str:
    return hashlib.sha256(normalize_recovery(code).encode()).hexdigest()


def normalize_recovery(code: str) -> str:
    return "".join(ch for ch in (code or "").lower() if ch.isalnum())


def confirm(conn, row, code: str):
    """Enrolment confirmed by a code from the app: the ten recovery codes (shown once), or
    None when the code is wrong."""
    if enrolled(row) or not _use_code(conn, row, code, confirming=True):
        return None
    conn.execute(delete(recovery_codes).where(recovery_codes.c.operator_id == row.id))
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(10))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    conn.execute(insert(recovery_codes), [{"operator_id": row.id, "code_hash": _hash(code)}
                                          for code in codes])
    return codes


def verify(conn, row, code: str) -> bool:
    """A sign-in's second step: a TOTP code not used before, or an unused recovery code."""
    if not enrolled(row):
        return False
    if _use_code(conn, row, code, confirming=False):
        return True
    if len(normalize_recovery(code)) != 10:
        return False
    return conn.execute(update(recovery_codes).where(
        recovery_codes.c.operator_id == row.id, recovery_codes.c.code_hash == _hash(code),
        recovery_codes.c.used_at.is_(None)).values(used_at=now())).rowcount == 1


def recovery_codes_left(conn, operator_id: int) -> int:
    return len(conn.execute(select(recovery_codes.c.id).where(
        recovery_codes.c.operator_id == operator_id, recovery_codes.c.used_at.is_(None))).all())
