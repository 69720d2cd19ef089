"""Holds: an account whose payment was taken back (refund, dispute) beyond what its balance
covered owes the rest, and places no orders until it is settled.

Why debit up to the balance and record the rest as owed, rather than hold without a debit:
the balance never goes below zero and always equals the ledger's sum (both enforced by the
database), the money still there goes back at once instead of waiting for the operator, and
what is missing is one number per payment (`payments.owed`) that later credits settle
first. The hold itself is the account's `hold_reason`; `add` answers `account_on_hold`
while it is set."""
from sqlalchemy import func, select, update

from .. import db, ledger
from ..schema import accounts, payments


def put_on_hold(conn, account_id: int, reason: str) -> None:
    """Hold the account (the first reason and time are kept while it stays on hold)."""
    conn.execute(update(accounts).where(accounts.c.id == account_id,
                                        accounts.c.hold_reason.is_(None))
                 .values(hold_reason=reason[:255], held_at=db.now()))


def owed_by(conn, account_id: int) -> int:
    return conn.execute(select(func.coalesce(func.sum(payments.c.owed), 0))
                        .where(payments.c.account_id == account_id)).scalar()


def collect_owed(conn, account_id: int) -> int:
    """Take what the account owes from its balance, oldest payment first, as far as the
    balance goes; lift the hold when nothing is owed any more. Returns what was collected.
    The caller has locked the account (records.lock_account)."""
    held = conn.execute(select(accounts.c.balance, accounts.c.hold_reason)
                        .where(accounts.c.id == account_id)).first()
    if held is None or held.hold_reason is None:
        return 0
    balance, collected = held.balance, 0
    for payment_id, owed in conn.execute(
            select(payments.c.id, payments.c.owed)
            .where(payments.c.account_id == account_id, payments.c.owed > 0)
            .order_by(payments.c.id)).all():
        taken = min(balance, owed)
        if not taken:
            break
        conn.execute(update(payments).where(payments.c.id == payment_id)
                     .values(owed=payments.c.owed - taken, updated_at=db.now()))
        balance = ledger.post(conn, account_id, -taken, "payment_reversal",
                              f"owed for payment PAY-{payment_id}", payment_id=payment_id)
        collected += taken
    if owed_by(conn, account_id) == 0:
        lift_hold(conn, account_id)
    return collected


def lift_hold(conn, account_id: int) -> None:
    conn.execute(update(accounts).where(accounts.c.id == account_id)
                 .values(hold_reason=None, held_at=None))


def write_off(conn, account_id: int) -> int:
    """The operator forgives what the account still owes (after collecting what its balance
    covers): the owed amounts go to zero and the hold is lifted. Returns what was forgiven."""
    collect_owed(conn, account_id)
    forgiven = owed_by(conn, account_id)
    conn.execute(update(payments).where(payments.c.account_id == account_id, payments.c.owed > 0)
                 .values(written_off=payments.c.written_off + payments.c.owed, owed=0,
                         updated_at=db.now()))
    lift_hold(conn, account_id)
    return forgiven


def held_accounts(conn):
    """Accounts on hold, for the operator: id, email, balance, hold_reason, held_at, owed."""
    owed = (select(payments.c.account_id, func.sum(payments.c.owed).label("owed"))
            .group_by(payments.c.account_id).subquery())
    return conn.execute(
        select(accounts.c.id, accounts.c.email, accounts.c.balance, accounts.c.hold_reason,
               accounts.c.held_at, func.coalesce(owed.c.owed, 0).label("owed"))
        .select_from(accounts.outerjoin(owed, owed.c.account_id == accounts.c.id))
        .where(accounts.c.hold_reason.is_not(None))
        .order_by(accounts.c.held_at, accounts.c.id)).all()
