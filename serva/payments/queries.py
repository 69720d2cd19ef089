"""What the operator and the partner read about payments: lists with filters, one payment
with its gateway events, the overview's counts, and the checks `serva audit` runs."""
from sqlalchemy import case, func, select

from ..money import format_amount
from ..schema import CREDITED_PAYMENT_STATUSES, accounts, ledger, payment_events, payments
from .records import present_payment

PAYMENT_KINDS = ("payment", "payment_bonus", "payment_reversal")  # ledger rows of a payment


def list_payments(conn, status=None, gateway=None, account_id=None, flagged=None, limit=100,
                  before_id=None):
    """Payments newest first, each with its account's email. Filters: a status (or a tuple
    of them), a gateway, an account, flagged (True) or not (False); `before_id` pages on."""
    query = (select(payments, accounts.c.email)
             .select_from(payments.join(accounts, accounts.c.id == payments.c.account_id)))
    if status is not None:
        query = query.where(payments.c.status.in_((status,) if isinstance(status, str) else status))
    if gateway is not None:
        query = query.where(payments.c.gateway == gateway)
    if account_id is not None:
        query = query.where(payments.c.account_id == account_id)
    if flagged is not None:
        flag = payments.c.flagged_reason
        query = query.where(flag.is_not(None) if flagged else flag.is_(None))
    if before_id is not None:
        query = query.where(payments.c.id < before_id)
    return conn.execute(query.order_by(payments.c.id.desc()).limit(limit)).all()


def payment_detail(conn, payment_id: int):
    """(the payment with its account's email, its gateway events oldest first), or None."""
    row = conn.execute(select(payments, accounts.c.email)
                       .select_from(payments.join(accounts, accounts.c.id == payments.c.account_id))
                       .where(payments.c.id == payment_id)).first()
    if row is None:
        return None
    events = conn.execute(select(payment_events).where(payment_events.c.payment_id == payment_id)
                          .order_by(payment_events.c.id)).all()
    return row, events


def event_ids(conn, payment_ids) -> dict:
    """{payment id: [its gateway event ids, oldest first]} for a page of payments."""
    found = {}
    if payment_ids:
        for payment_id, event_id in conn.execute(
                select(payment_events.c.payment_id, payment_events.c.event_id)
                .where(payment_events.c.payment_id.in_(list(payment_ids)))
                .order_by(payment_events.c.id)):
            found.setdefault(payment_id, []).append(event_id)
    return found


def overview(conn) -> dict:
    """The operator overview's payment figures: waiting for a decision (manual, pending),
    flagged, accounts on hold and what they owe."""
    pending_manual, flagged = conn.execute(select(
        func.count().filter((payments.c.gateway == "manual") & (payments.c.status == "pending")),
        func.count().filter(payments.c.flagged_reason.is_not(None)
                            & payments.c.status.in_(("created", "pending"))))).one()
    held = conn.execute(select(func.count()).where(accounts.c.hold_reason.is_not(None))).scalar()
    owed = conn.execute(select(func.coalesce(func.sum(payments.c.owed), 0))).scalar()
    return {"pending_manual": pending_manual, "flagged": flagged, "held_accounts": held,
            "owed": owed}


def violations(conn):
    """One line per broken payment invariant: a credited payment's ledger rows are its amount
    and bonus, an uncredited one has none, what reversals took is what was reversed less
    what is owed or forgiven, an account that owes is on hold, and every payment row of the
    ledger names a payment of its own account."""
    sums = (select(ledger.c.payment_id,
                   *(func.sum(case((ledger.c.kind == kind, ledger.c.amount), else_=0)).label(kind)
                     for kind in PAYMENT_KINDS))
            .where(ledger.c.payment_id.is_not(None)).group_by(ledger.c.payment_id).subquery())
    credited = payments.c.status.in_(CREDITED_PAYMENT_STATUSES)
    paid_in = func.coalesce(sums.c.payment, 0)
    bonus_in = func.coalesce(sums.c.payment_bonus, 0)
    taken = -func.coalesce(sums.c.payment_reversal, 0)
    rows = conn.execute(
        select(payments, paid_in.label("paid_in"), bonus_in.label("bonus_in"), taken.label("taken"))
        .select_from(payments.outerjoin(sums, sums.c.payment_id == payments.c.id))
        .where(case((credited, (paid_in != payments.c.amount) | (bonus_in != payments.c.bonus)),
                    else_=(paid_in != 0) | (bonus_in != 0))
               | (taken != payments.c.reversed - payments.c.owed - payments.c.written_off))
        .order_by(payments.c.id)).all()
    for row in rows:
        yield (f"payment {present_payment(row.id)} ({row.status}): amount "
               f"{format_amount(row.amount)} + bonus {format_amount(row.bonus)}, reversed "
               f"{format_amount(row.reversed)} (owed {format_amount(row.owed)}, written off "
               f"{format_amount(row.written_off)}) but the ledger credited "
               f"{format_amount(row.paid_in)} + {format_amount(row.bonus_in)} and took back "
               f"{format_amount(row.taken)}")
    for email, owed in conn.execute(
            select(accounts.c.email, func.sum(payments.c.owed))
            .select_from(payments.join(accounts, accounts.c.id == payments.c.account_id))
            .where(accounts.c.hold_reason.is_(None)).group_by(accounts.c.email)
            .having(func.sum(payments.c.owed) > 0)):
        yield f"account {email} owes {format_amount(owed)} for payments but is not on hold"
    for row in conn.execute(
            select(ledger.c.id, ledger.c.kind, ledger.c.account_id, payments.c.account_id.label("owner"))
            .select_from(ledger.outerjoin(payments, payments.c.id == ledger.c.payment_id))
            .where(ledger.c.kind.in_(PAYMENT_KINDS) | ledger.c.payment_id.is_not(None))
            .where(payments.c.id.is_(None) | (payments.c.account_id != ledger.c.account_id)
                   | ledger.c.kind.not_in(PAYMENT_KINDS))
            .order_by(ledger.c.id)):
        if row.owner is None:
            yield f"ledger row {row.id} ({row.kind}) names no existing payment"
        elif row.kind not in PAYMENT_KINDS:
            yield f"ledger row {row.id} ({row.kind}) names a payment but is not a payment's row"
        else:
            yield (f"ledger row {row.id} ({row.kind}) is account id {row.account_id}'s, its "
                   f"payment account id {row.owner}'s")
