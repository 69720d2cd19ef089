"""Accounts: sign-in identity, API access state, ban, discount and per-service custom rates."""
from sqlalchemy import delete, insert, select, update
from werkzeug.security import check_password_hash, generate_password_hash

from . import ledger
from .db import now
from .money import AmountError, format_amount, parse_amount
from .schema import ID_FORMATS, accounts, ledger as ledger_rows, service_rates, services


MIN_PASSWORD_LENGTH = 8


class AccountError(ValueError):
    """An operator or partner action that cannot be applied as asked."""


def normalize_email(email: str) -> str:
    return (email or "").strip().lower()


def get_by_email(conn, email: str):
    return conn.execute(select(accounts).where(accounts.c.email == normalize_email(email))).first()


def get_by_id(conn, account_id: int):
    return conn.execute(select(accounts).where(accounts.c.id == account_id)).first()


def require(conn, email: str):
    row = get_by_email(conn, email)
    if row is None:
        raise AccountError(f"no account with email {normalize_email(email)}")
    return row


def create(conn, email: str, password: str | None, approved: bool = False) -> int:
    email = normalize_email(email)
    if "@" not in email or len(email) > 254:
        raise AccountError(f"not an email address: {email!r}")
    if get_by_email(conn, email) is not None:
        raise AccountError(f"an account with email {email} already exists")
    return conn.execute(insert(accounts).values(
        email=email, password_hash=generate_password_hash(password) if password else None,
        api_access="approved" if approved else "none", created_at=now())).inserted_primary_key[0]


def check_password(row, password: str) -> bool:
    return bool(row is not None and row.password_hash and password
                and check_password_hash(row.password_hash, password))


def set_password(conn, account_id: int, password: str) -> None:
    conn.execute(update(accounts).where(accounts.c.id == account_id)
                 .values(password_hash=generate_password_hash(password)))


def set_api_access(conn, account_id: int, state: str) -> None:
    """'none', 'requested' (the partner asked) or 'approved' (the operator granted)."""
    values = {"api_access": state}
    if state == "requested":
        values["access_requested_at"] = now()
    conn.execute(update(accounts).where(accounts.c.id == account_id).values(**values))


def request_api_access(conn, account_id: int) -> bool:
    """The partner asks for API access; only from 'none' (True when the request was recorded)."""
    result = conn.execute(update(accounts)
                          .where(accounts.c.id == account_id, accounts.c.api_access == "none")
                          .values(api_access="requested", access_requested_at=now()))
    return result.rowcount > 0


def access_requests(conn):
    return conn.execute(select(accounts.c.email, accounts.c.access_requested_at)
                        .where(accounts.c.api_access == "requested")
                        .order_by(accounts.c.access_requested_at)).all()


def set_banned(conn, account_id: int, banned: bool, reason: str | None = None) -> None:
    conn.execute(update(accounts).where(accounts.c.id == account_id)
                 .values(banned=banned, ban_reason=reason if banned else None))


def set_discount(conn, account_id: int, discount_bp: int) -> None:
    conn.execute(update(accounts).where(accounts.c.id == account_id).values(discount_bp=discount_bp))


def set_id_format(conn, account_id: int, id_format: str) -> None:
    """'prefixed' or 'numeric': how the API shows this account's ids (serva.ids)."""
    if id_format not in ID_FORMATS:
        raise AccountError(f"id format must be one of: {', '.join(ID_FORMATS)}")
    conn.execute(update(accounts).where(accounts.c.id == account_id).values(id_format=id_format))


def set_custom_rate(conn, account_id: int, service_id: int, rate: int | None) -> None:
    """A per-account rate for one service (replaces the discounted list rate); None removes it."""
    if conn.execute(select(services.c.id).where(services.c.id == service_id)).first() is None:
        raise AccountError(f"no service with id {service_id}")
    conn.execute(delete(service_rates).where(service_rates.c.account_id == account_id,
                                             service_rates.c.service_id == service_id))
    if rate is not None:
        conn.execute(insert(service_rates).values(account_id=account_id, service_id=service_id,
                                                  rate=rate))


def custom_rates(conn, account_id: int):
    return conn.execute(select(service_rates.c.service_id, service_rates.c.rate)
                        .where(service_rates.c.account_id == account_id)
                        .order_by(service_rates.c.service_id)).all()


def parse_amount_to_move(text: str) -> int:
    """An operator's credit or debit amount: positive, exact (AccountError otherwise)."""
    try:
        value = parse_amount(text)
    except AmountError as error:
        raise AccountError(str(error)) from None
    if value <= 0:
        raise AccountError(f"amount must be positive: {text}")
    return value


def move_balance(conn, row, amount: int, note: str) -> int:
    """An operator's credit (amount > 0, a top-up) or debit (< 0, an adjustment, never below
    zero): one ledger row with its required note. Returns the new balance."""
    note = (note or "").strip()
    if not note:
        raise AccountError("a note must say why the balance changes")
    try:
        return ledger.post(conn, row.id, amount, "topup" if amount > 0 else "adjustment", note)
    except ledger.InsufficientFunds:
        raise AccountError(f"the balance of {row.email} is {format_amount(row.balance)}; "
                           f"it cannot go below 0") from None


def search(conn, q: str = "", after_id: int | None = None, limit: int = 50):
    """Accounts in id order whose email contains `q`, one page (after `after_id`)."""
    query = select(accounts).order_by(accounts.c.id).limit(limit)
    if q.strip():
        query = query.where(accounts.c.email.contains(normalize_email(q), autoescape=True))
    if after_id is not None:
        query = query.where(accounts.c.id > after_id)
    return conn.execute(query).all()


def statement(conn, account_id: int, limit: int = 50):
    """The account's newest ledger rows (each with its request id)."""
    return conn.execute(select(ledger_rows).where(ledger_rows.c.account_id == account_id)
                        .order_by(ledger_rows.c.id.desc()).limit(limit)).all()
