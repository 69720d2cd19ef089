"""The only way a balance changes: a conditional UPDATE of the cached balance plus a ledger
row, in the caller's transaction, so balance == sum(ledger) can never drift. Each row keeps
the id of the request (or `cli:` command) that caused it."""
from sqlalchemy import bindparam, func, insert, select, update

from .db import now
from .schema import accounts, ledger
from .request_ids import request_id

# One statement decides and applies the change: a debit that would take the balance below
# zero matches no row, whatever other transactions are doing (and the CHECK on `balance`
# refuses it even if some other statement tried).
_APPLY = (update(accounts)
          .where(accounts.c.id == bindparam("account_id"),
                 accounts.c.balance + bindparam("amount") >= 0)
          .values(balance=accounts.c.balance + bindparam("amount"))
          .returning(accounts.c.balance))


_RECORD = insert(ledger).values(
    account_id=bindparam("account_id"), amount=bindparam("amount"), kind=bindparam("kind"),
    note=bindparam("note"), order_id=bindparam("order_id"), payment_id=bindparam("payment_id"),
    request_id=bindparam("request_id"),
    created_at=bindparam("created_at"))


class InsufficientFunds(Exception):
    pass


def post(conn, account_id: int, amount: int, kind: str, note: str = "", order_id=None,
         rid=None, payment_id=None) -> int:
    """Apply `amount` (negative for a debit) and record it, in the caller's write transaction,
    with this request's or command's id (`rid` when the caller read it already: a grouped
    work runs in another request's thread) and the order or payment it is for; returns the
    new balance. Raises InsufficientFunds (and changes nothing) when the balance would go
    below zero or there is no such account."""
    balance = conn.execute(_APPLY, {"account_id": account_id, "amount": amount}).scalar()
    if balance is None:
        raise InsufficientFunds(account_id)
    conn.execute(_RECORD, {"account_id": account_id, "amount": amount, "kind": kind,
                           "note": note[:255], "order_id": order_id, "payment_id": payment_id,
                           "request_id": rid or request_id(), "created_at": now()})
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
