"""Invariant checks over the whole database (the `audit` command)."""
from sqlalchemy import case, func, select

from .ids import present_order
from .ledger import balance_mismatches
from .money import format_amount
from .schema import accounts, coupon_redemptions, coupons, ledger, orders


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
