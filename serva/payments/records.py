"""A payment's life in the database, each move one conditional UPDATE in the caller's write
transaction, and every balance change it causes a ledger row (`ledger.post`) in the same one.

Exactly once: a payment is credited only by the UPDATE that moves it from created/pending to
paid, which matches one row once, however many webhooks or operators race for it; the
partial unique index on the ledger (one `payment` row per payment) is the database's
backstop. Every gateway event is recorded once per event id, with what it did."""
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from .. import db, ledger
from ..money import BASIS_POINTS, div_half_up, format_amount
from ..schema import accounts, payment_events, payments
from .holds import collect_owed, put_on_hold

OPEN_STATUSES = ("created", "pending")  # not decided yet: may still be credited
DECISION_FIELDS = ("status", "flagged_reason", "note", "amount", "bonus", "currency", "paid_at")


class PaymentError(ValueError):
    """A payment action that cannot be applied as asked (the message says why)."""


def present_payment(payment_id: int) -> str:
    return f"PAY-{payment_id}"


def parse_payment(text) -> int | None:
    """`PAY-12` or `12` -> 12; None for anything else."""
    text = str(text).strip().upper().removeprefix("PAY-")
    return int(text) if text.isdigit() and len(text) <= 18 else None


def deposit_bonus(amount: int, bonus_bp: int, bonus_from: int) -> int:
    """The bonus a deposit of `amount` earns: `bonus_bp` of it, from `bonus_from` up."""
    if bonus_bp <= 0 or amount < bonus_from:
        return 0
    return div_half_up(amount * bonus_bp, BASIS_POINTS)


def lock_account(conn, account_id: int) -> None:
    """PostgreSQL: queue this account's money moves on its row, in the order orders take it
    (account first), so a credit, a reversal and an order see each other's balance. SQLite's
    BEGIN IMMEDIATE serializes every writer already."""
    if conn.dialect.name != "sqlite":
        conn.execute(select(accounts.c.id).where(accounts.c.id == account_id).with_for_update())


def create(conn, account_id: int, gateway: str, amount: int, currency: str, bonus: int = 0,
           gateway_id: str | None = None, reference: str | None = None,
           status: str = "created") -> int:
    """A new payment row. A manual payment's `gateway_id` is known now (its reference), and a
    second one with the same id is refused (PaymentError): the unique key decides."""
    stamp = db.now()
    try:
        return conn.execute(insert(payments).values(
            account_id=account_id, gateway=gateway, gateway_id=gateway_id, amount=amount,
            currency=currency, bonus=bonus, reference=reference, status=status,
            created_at=stamp, updated_at=stamp)).inserted_primary_key[0]
    except IntegrityError:
        raise PaymentError("a payment with this reference was already submitted") from None


def started(conn, payment_id: int, gateway_id: str) -> None:
    """The gateway made its side (a Checkout Session): keep its id, and wait for it. A
    webhook that came first has moved the payment on already and keeps its status."""
    conn.execute(update(payments).where(payments.c.id == payment_id,
                                        payments.c.gateway_id.is_(None))
                 .values(gateway_id=gateway_id, updated_at=db.now()))
    conn.execute(update(payments).where(payments.c.id == payment_id,
                                        payments.c.status == "created")
                 .values(status="pending", updated_at=db.now()))


def get(conn, payment_id: int):
    return conn.execute(select(payments).where(payments.c.id == payment_id)).first()


def by_charge(conn, gateway: str, charge: str):
    return conn.execute(select(payments).where(payments.c.gateway == gateway,
                                               payments.c.gateway_charge == charge)).first()


def record_event(conn, gateway: str, event_id: str, event_type: str, payment_id, outcome: str):
    """Keep a verified event once per id; False when it was recorded before (a replay)."""
    stmt = db.upsert(conn.dialect.name, payment_events).values(
        gateway=gateway, event_id=event_id[:255], type=event_type[:64], payment_id=payment_id,
        outcome=outcome[:255], received_at=db.now())
    return conn.execute(stmt.on_conflict_do_nothing(index_elements=["gateway", "event_id"])
                        .returning(payment_events.c.id)).first() is not None


def seen_event(conn, gateway: str, event_id: str) -> bool:
    return conn.execute(select(payment_events.c.id).where(
        payment_events.c.gateway == gateway, payment_events.c.event_id == event_id)).first() is not None


def credit(conn, payment_id: int, charge: str | None = None, note: str = "") -> bool:
    """Move an open, unflagged payment to paid and credit its amount (and bonus) as ledger
    rows, in one transaction; what the account owes from earlier reversals is collected from
    it. False when the payment was not open (already credited, rejected…): nothing changes.
    The caller has locked the account (`lock_account`)."""
    stamp = db.now()
    moved = conn.execute(
        update(payments)
        .where(payments.c.id == payment_id, payments.c.status.in_(OPEN_STATUSES),
               payments.c.flagged_reason.is_(None))
        .values(status="paid", paid_at=stamp, updated_at=stamp,
                gateway_charge=func.coalesce(payments.c.gateway_charge, charge), note=note or None)
        .returning(payments.c.account_id, payments.c.amount, payments.c.bonus)).first()
    if moved is None:
        return False
    label = present_payment(payment_id)
    ledger.post(conn, moved.account_id, moved.amount, "payment", f"payment {label}",
                payment_id=payment_id)
    if moved.bonus:
        ledger.post(conn, moved.account_id, moved.bonus, "payment_bonus",
                    f"deposit bonus for payment {label}", payment_id=payment_id)
    collect_owed(conn, moved.account_id)
    return True


def flag(conn, payment_id: int, reason: str) -> bool:
    """Set an open payment aside for the operator (nothing is credited while it is flagged)."""
    return conn.execute(update(payments)
                        .where(payments.c.id == payment_id, payments.c.status.in_(OPEN_STATUSES),
                               payments.c.flagged_reason.is_(None))
                        .values(flagged_reason=reason[:255], updated_at=db.now())).rowcount > 0


def close(conn, payment_id: int, status: str, note: str | None = None) -> bool:
    """An open payment ends uncredited: rejected (the operator), expired or failed (the
    gateway). False when it was not open any more."""
    return conn.execute(update(payments)
                        .where(payments.c.id == payment_id, payments.c.status.in_(OPEN_STATUSES))
                        .values(status=status, note=note, updated_at=db.now())).rowcount > 0


def approve(conn, payment_id: int, note: str = "") -> None:
    """The operator confirms a payment: a manual one they received, or a flagged one they
    checked with the gateway (the flag is cleared and Serva's amount credited)."""
    row = get(conn, payment_id)
    if row is None:
        raise PaymentError(f"no payment {present_payment(payment_id)}")
    if row.status not in OPEN_STATUSES:
        raise PaymentError(f"payment {present_payment(payment_id)} is {row.status}, not pending")
    if row.gateway != "manual" and row.flagged_reason is None:
        raise PaymentError(f"payment {present_payment(payment_id)} is credited by its gateway's "
                           f"webhook; only a flagged one may be approved by hand")
    lock_account(conn, row.account_id)
    conn.execute(update(payments).where(payments.c.id == payment_id)
                 .values(flagged_reason=None))
    if not credit(conn, payment_id, note=note):
        raise PaymentError(f"payment {present_payment(payment_id)} was decided meanwhile")


def reject(conn, payment_id: int, note: str) -> None:
    """The operator refuses a payment; the partner sees the note, so it must say why."""
    row = get(conn, payment_id)
    if row is None:
        raise PaymentError(f"no payment {present_payment(payment_id)}")
    if not (note or "").strip():
        raise PaymentError("a note must say why the payment is rejected")
    if not close(conn, payment_id, "rejected", note or None):
        raise PaymentError(f"payment {present_payment(payment_id)} is {row.status}, not pending")


def decision_fields(conn, payment_id: int):
    """What approving or rejecting may alter, as a dict (the activity's before and after),
    or None when there is no such payment."""
    row = conn.execute(select(*(payments.c[name] for name in DECISION_FIELDS))
                       .where(payments.c.id == payment_id)).first()
    return None if row is None else dict(row._mapping)


def reverse(conn, row, total: int, status: str, why: str) -> int:
    """Take back up to `total` of what the payment credited (amount and bonus), counting what
    earlier reversals took: refunds and disputes name cumulative amounts, so a replay or a
    second event asks for nothing new. What the balance does not cover is owed and puts the
    account on hold. Returns what was newly reversed. The caller has locked the account."""
    credited = row.amount + row.bonus
    total = min(total, credited)
    due = total - row.reversed
    if due <= 0:
        return 0
    balance = conn.execute(select(accounts.c.balance)
                           .where(accounts.c.id == row.account_id)).scalar()
    taken = min(balance, due)
    moved = conn.execute(update(payments)
                         .where(payments.c.id == row.id, payments.c.reversed == row.reversed)
                         .values(reversed=total, owed=payments.c.owed + (due - taken),
                                 status=status, updated_at=db.now())).rowcount
    if not moved:  # cannot happen under the account lock; never take money twice
        raise PaymentError(f"payment {present_payment(row.id)} changed meanwhile")
    label = present_payment(row.id)
    if taken:
        ledger.post(conn, row.account_id, -taken, "payment_reversal", f"{why} of payment {label}",
                    payment_id=row.id)
    if due > taken:
        put_on_hold(conn, row.account_id, f"{why} of payment {label}: "
                                          f"{format_amount(due - taken)} owed")
    return due
