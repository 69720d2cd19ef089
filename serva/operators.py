"""Operators: the people who run the business in the console, separate from partner accounts,
and what each role may do.

The roles' rights are one table (`PERMISSIONS`) that every console view is checked against;
support staff read everything and answer the queues, and only owners move money or touch
providers, keys and operators. Passwords are werkzeug hashes, as partners' are."""
from sqlalchemy import delete, insert, select, update
from werkzeug.security import check_password_hash, generate_password_hash

from .accounts import MIN_PASSWORD_LENGTH, normalize_email
from .db import now
from .schema import OPERATOR_ROLES, operator_sessions, operators, recovery_codes

# Every right a console action needs; `read` opens every page.
RIGHTS = (
    "read", "order.status", "order.cancel", "order.resolve", "refill.answer",
    "account.create", "account.access", "account.ban", "account.money", "account.pricing",
    "account.sessions", "key.revoke", "service.edit", "provider.edit", "coupon.edit",
    "audit.run", "payment.decide",
)
PERMISSIONS = {
    "owner": frozenset(RIGHTS),
    "support": frozenset({"read", "order.status", "order.cancel", "refill.answer"}),
}


class OperatorError(ValueError):
    """An operator command or console action that cannot be applied as asked."""


def allowed(role: str, right: str) -> bool:
    if right not in RIGHTS:
        raise KeyError(right)  # a typo in a view must not silently refuse or allow
    return right in PERMISSIONS.get(role, ())


def check_password_length(password: str) -> None:
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise OperatorError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")


def get_by_email(conn, email: str):
    return conn.execute(select(operators).where(operators.c.email == normalize_email(email))).first()


def get_by_id(conn, operator_id: int):
    return conn.execute(select(operators).where(operators.c.id == operator_id)).first()


def require(conn, email: str):
    row = get_by_email(conn, email)
    if row is None:
        raise OperatorError(f"no operator with email {normalize_email(email)}")
    return row


def create(conn, email: str, role: str, password: str) -> int:
    email = normalize_email(email)
    if "@" not in email or len(email) > 254:
        raise OperatorError(f"not an email address: {email!r}")
    if role not in OPERATOR_ROLES:
        raise OperatorError(f"role must be one of: {', '.join(OPERATOR_ROLES)}")
    check_password_length(password)
    if get_by_email(conn, email) is not None:
        raise OperatorError(f"an operator with email {email} already exists")
    return conn.execute(insert(operators).values(
        email=email, role=role, password_hash=generate_password_hash(password),
        created_at=now())).inserted_primary_key[0]


def list_all(conn):
    return conn.execute(select(operators).order_by(operators.c.email)).all()


def check_password(row, password: str) -> bool:
    return bool(row is not None and password and check_password_hash(row.password_hash, password))


def sign_out_everywhere(conn, operator_id: int) -> int:
    return conn.execute(update(operator_sessions)
                        .where(operator_sessions.c.operator_id == operator_id,
                               operator_sessions.c.revoked_at.is_(None))
                        .values(revoked_at=now())).rowcount


def set_disabled(conn, email: str, disabled: bool):
    """A disabled operator cannot sign in, and their open sessions end now."""
    row = require(conn, email)
    conn.execute(update(operators).where(operators.c.id == row.id).values(disabled=disabled))
    if disabled:
        sign_out_everywhere(conn, row.id)
    return row


def set_password(conn, email: str, password: str):
    """A new password ends every session of the operator (whoever held one signs in again)."""
    check_password_length(password)
    row = require(conn, email)
    conn.execute(update(operators).where(operators.c.id == row.id)
                 .values(password_hash=generate_password_hash(password)))
    sign_out_everywhere(conn, row.id)
    return row


def reset_second_factor(conn, email: str):
    """For a lost phone: the secret and recovery codes go, sessions end, and the next sign-in
    enrols again (an owner cannot get past it without)."""
    row = require(conn, email)
    conn.execute(update(operators).where(operators.c.id == row.id).values(
        totp_secret=None, totp_confirmed_at=None, totp_last_step=None))
    conn.execute(delete(recovery_codes).where(recovery_codes.c.operator_id == row.id))
    sign_out_everywhere(conn, row.id)
    return row
