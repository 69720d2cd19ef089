"""Invariant checks over the whole database (the `audit` command).

`violations` are broken money invariants (the command exits 1); `stale_rows` are upkeep
warnings (expired purchase-guard and idempotency rows that `serva prune` should have
deleted): they cannot change money, since an expired row is ignored by every check that reads
it, but they say the cron job is missing and the tables grow."""
from datetime import datetime, timezone

from sqlalchemy import case, func, select

from .ids import present_order
from .ledger import balance_mismatches
from .money import format_amount
from .payments.queries import violations as payment_violations
from .schema import (accounts, coupon_redemptions, coupons, idempotency_keys, ledger, orders,
                     purchase_guards)

ORDER_KINDS = ("charge", "refund")  # ledger rows that move money for an order, and must name it
STALE_AFTER_SECONDS = 24 * 3600  # expired longer than this and still there: prune is not running


def violations(conn):
    """Yield one human-readable line per broken invariant."""
    for account_id, email, balance, total in balance_mismatches(conn):
        yield (f"account {email} (id {account_id}): balance {format_amount(balance)} "
               f"!= ledger sum {format_amount(total)}")
    for email, balance in conn.execute(select(accounts.c.email, accounts.c.balance)
                                       .where(accounts.c.balance < 0)):
        yield f"account {email}: negative balance {format_amount(balance)}"

    per_order = (select(ledger.c.order_id,
                        func.sum(case((ledger.c.kind == "charge", -ledger.c.amount), else_=0)).label("charged"),
                        func.sum(case((ledger.c.kind == "refund", ledger.c.amount), else_=0)).label("refunded"))
                 .where(ledger.c.order_id.is_not(None)).group_by(ledger.c.order_id).subquery())
    charged = func.coalesce(per_order.c.charged, 0)
    refunded = func.coalesce(per_order.c.refunded, 0)
    rows = conn.execute(select(orders.c.id, orders.c.charge, orders.c.refunded, charged, refunded)
                        .select_from(orders.outerjoin(per_order, per_order.c.order_id == orders.c.id))
                        .where((orders.c.charge != charged) | (orders.c.refunded != refunded)))
    for order_id, charge, order_refunded, ledger_charged, ledger_refunded in rows:
        yield (f"order {present_order(order_id)}: charge {format_amount(charge)} / refunded "
               f"{format_amount(order_refunded)} but ledger charged {format_amount(ledger_charged)} "
               f"/ refunded {format_amount(ledger_refunded)}")

    used = (select(coupon_redemptions.c.coupon_id, func.count().label("n"))
            .group_by(coupon_redemptions.c.coupon_id).subquery())
    for code, uses, count in conn.execute(
            select(coupons.c.code, coupons.c.uses, func.coalesce(used.c.n, 0))
            .select_from(coupons.outerjoin(used, used.c.coupon_id == coupons.c.id))
            .where(coupons.c.uses != func.coalesce(used.c.n, 0))):
        yield f"coupon {code}: uses {uses} != {count} redemptions"

    yield from orphan_ledger_rows(conn)
    yield from payment_violations(conn)


def orphan_ledger_rows(conn):
    """Ledger rows that point nowhere: to an account or order that does not exist, a charge or
    refund that names no order, or an order of another account. (Serva's connections enforce
    the foreign keys, but the sqlite3 shell does not by default, nor a hand-made restore.)"""
    owner = orders.alias("owner")
    rows = conn.execute(
        select(ledger.c.id, ledger.c.account_id, ledger.c.kind, ledger.c.amount, ledger.c.order_id,
               accounts.c.id.label("found_account"), owner.c.id.label("found_order"),
               owner.c.account_id.label("order_account"))
        .select_from(ledger.outerjoin(accounts, accounts.c.id == ledger.c.account_id)
                     .outerjoin(owner, owner.c.id == ledger.c.order_id))
        .where(accounts.c.id.is_(None)
               | (ledger.c.order_id.is_not(None) & owner.c.id.is_(None))
               | (ledger.c.order_id.is_(None) & ledger.c.kind.in_(ORDER_KINDS))
               | (owner.c.account_id != ledger.c.account_id))
        .order_by(ledger.c.id))
    for row in rows:
        what = f"ledger row {row.id} ({row.kind} {format_amount(row.amount)})"
        if row.found_account is None:
            yield f"{what}: account id {row.account_id} does not exist"
        if row.order_id is None:
            if row.kind in ORDER_KINDS:
                yield f"{what}: a {row.kind} must name its order"
        elif row.found_order is None:
            yield f"{what}: order {present_order(row.order_id)} does not exist"
        elif row.order_account != row.account_id:
            yield (f"{what}: order {present_order(row.order_id)} belongs to account id "
                   f"{row.order_account}, the row to account id {row.account_id}")


def stale_rows(conn, stamp: int, stale_after: int = STALE_AFTER_SECONDS):
    """One warning per kind of row that expired more than `stale_after` seconds before
    `stamp` and was not pruned."""
    cutoff = stamp - stale_after
    for table, what in ((purchase_guards, "purchase-guard rows"),
                        (idempotency_keys, "idempotency records")):
        count, oldest = conn.execute(select(func.count(), func.min(table.c.expires_at))
                                     .where(table.c.expires_at <= cutoff)).one()
        if count:
            expired = datetime.fromtimestamp(oldest, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            yield (f"{count} {what} expired more than {stale_after} s ago and are still there "
                   f"(the oldest at {expired}): run `serva prune`, e.g. hourly from cron")
