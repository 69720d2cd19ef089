"""The only way a balance changes: a conditional UPDATE of the cached balance plus a ledger
row, in the caller's transaction, so balance == sum(ledger) can never drift. On SQLite the
UPDATE is the ledger's trigger (schema.LEDGER_MOVES_BALANCE), so a posting is one INSERT.
Each row keeps the id of the request (or `cli:` command) that caused it."""
from sqlalchemy import bindparam, func, insert, select, text

from .db import FastConnection, Statement, fast, now
from .schema import INSUFFICIENT_BALANCE, accounts, ledger

# One statement decides and applies the change: a debit that would take the balance
# below zero matches no row, whatever other transactions are doing.
_APPLY = text("UPDATE accounts SET balance = balance + :amount "
              "WHERE id = :account_id AND balance + :amount >= 0 RETURNING balance")


class InsufficientFunds(Exception):
    pass


_APPLY_FAST = Statement(_APPLY)
_RECORD = insert(ledger).values(
    account_id=bindparam("account_id"), amount=bindparam("amount"), kind=bindparam("kind"),
    note=bindparam("note"), order_id=bindparam("order_id"), request_id=bindparam("request_id"),
    created_at=bindparam("stamp"))
_RECORD_FAST = Statement(_RECORD)
# SQLite: the row and, by its trigger, the balance change; the balance as the trigger left it.
_POST_SQLITE = Statement(_RECORD.returning(
    select(accounts.c.balance).where(accounts.c.id == bindparam("account_id")).scalar_subquery()))


def post(conn, account_id: int, amount: int, kind: str, note: str = "", order_id=None) -> int:
    """Apply `amount` (negative for a debit) and record it, in the caller's write transaction
    (a SQLAlchemy connection or a `db.FastConnection`), with this request's or command's id;
    returns the new balance."""
    from . import request_id
    return post_fast(conn if isinstance(conn, FastConnection) else fast(conn), account_id,
                     amount, kind, note, order_id, request_id())


def post_fast(fast_conn, account_id: int, amount: int, kind: str, note: str = "",
              order_id=None, request_id=None) -> int:
    """`post` with the request id given: a grouped commit runs this in another request's
    thread, so the id cannot be read from the context here."""
    row = {"account_id": account_id, "amount": amount, "kind": kind, "note": note[:255],
           "order_id": order_id, "request_id": request_id, "stamp": now()}
    if fast_conn.dialect.name == "sqlite":
        try:
            return fast_conn.scalar(_POST_SQLITE, row)
        except fast_conn.dialect.dbapi.IntegrityError as error:
            if str(error) == INSUFFICIENT_BALANCE:  # the trigger's RAISE
                raise InsufficientFunds(account_id) from None
            raise
    balance = fast_conn.scalar(_APPLY_FAST, {"amount": amount, "account_id": account_id})
    if balance is None:
        raise InsufficientFunds(account_id)
    fast_conn.execute(_RECORD_FAST, row)
    return balance


def ledger_sum(conn, account_id: int) -> int:
    return conn.execute(select(func.coalesce(func.sum(ledger.c.amount), 0))
                        .where(ledger.c.account_id == account_id)).scalar()


def balance_mismatches(conn):
    """Accounts whose cached balance differs from their ledger sum: (id, email, balance, sum)."""
    sums = (select(ledger.c.account_id, func.sum(ledger.c.amount).label("total"))
            .group_by(ledger.c.account_id).subquery())
    total = func.coalesce(sums.c.total, 0)
    return conn.execute(select(accounts.c.id, accounts.c.email, accounts.c.balance, total)
                        .select_from(accounts.outerjoin(sums, sums.c.account_id == accounts.c.id))
                        .where(accounts.c.balance != total)).all()
