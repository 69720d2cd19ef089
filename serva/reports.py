"""What the console's overview reads: orders, revenue (charges − refunds), provider cost where
known and margin over the last day, week and month; orders and revenue per day; the queues
waiting for an operator; and the last audit's result.

Every sum reads the covering index on orders' `created_at`, so a month of a busy panel is
a range scan of the index, never a pass over the orders table."""
import json
from collections import namedtuple

from sqlalchemy import case, func, select

from . import audit, db
from .schema import (PENDING_REFILL_STATUSES, ACTIVE_STATUSES, accounts, orders, refills,
                     serva_meta, services)

DAY = 86_400
WINDOWS = (("24 h", DAY), ("7 d", 7 * DAY), ("30 d", 30 * DAY))
LAST_AUDIT_KEY = "last_audit"

Summary = namedtuple("Summary", "label orders revenue cost margin")


def summaries(conn, stamp: int) -> list:
    """One Summary per window; `cost` counts orders of provider-linked services at the
    service's provider rate as last seen (None when no order's cost is known)."""
    since = stamp - WINDOWS[-1][1]
    columns = []
    for _, seconds in WINDOWS:
        inside = orders.c.created_at > stamp - seconds
        columns += [func.sum(case((inside, 1), else_=0)),
                    func.sum(case((inside, orders.c.charge - orders.c.refunded), else_=0))]
    totals = conn.execute(select(*columns).where(orders.c.created_at > since)).one()
    # Grouped by `service_id + 0`, not the column: on the column SQLite would rather walk the
    # service index (no sort for the GROUP BY) through every order of every day; the window's
    # range of the covering index is a small part of that.
    service = (orders.c.service_id + 0).label("service")
    per_service = conn.execute(
        select(service,
               *(func.sum(case((orders.c.created_at > stamp - seconds, orders.c.quantity),
                               else_=0)) for _, seconds in WINDOWS))
        .where(orders.c.created_at > since, orders.c.status != "Canceled")
        .group_by(service)).all()
    rates = dict(conn.execute(select(services.c.id, services.c.provider_rate)
                              .where(services.c.provider_rate.is_not(None))).all())
    result = []
    for index, (label, _) in enumerate(WINDOWS):
        count, revenue = int(totals[2 * index] or 0), int(totals[2 * index + 1] or 0)
        known = [(rates[row[0]], int(row[1 + index] or 0)) for row in per_service
                 if row[0] in rates]
        cost = sum(rate * quantity // 1000 for rate, quantity in known) if known else None
        result.append(Summary(label, count, revenue, cost,
                              None if cost is None else revenue - cost))
    return result


def per_day(conn, stamp: int, days: int = 30) -> list:
    """(day start, orders, revenue) for each of the last `days` days, empty days included."""
    first = (stamp // DAY - days + 1) * DAY
    day = orders.c.created_at // DAY
    rows = conn.execute(select(day.label("day"), func.count(),
                               func.sum(orders.c.charge - orders.c.refunded))
                        .where(orders.c.created_at >= first).group_by("day")).all()
    found = {int(row[0]): (int(row[1]), int(row[2] or 0)) for row in rows}
    return [(first + i * DAY, *found.get(first // DAY + i, (0, 0))) for i in range(days)]


def queues(conn) -> dict:
    """How many partners wait on an operator: API access, refills, cancels."""
    return {
        "access": conn.execute(select(func.count()).where(accounts.c.api_access == "requested")).scalar(),
        "refills": conn.execute(select(func.count()).select_from(refills).where(
            refills.c.status.in_(PENDING_REFILL_STATUSES))).scalar(),
        "cancels": conn.execute(select(func.count()).select_from(orders).where(
            orders.c.cancel_requested_at.is_not(None), orders.c.status.in_(ACTIVE_STATUSES))).scalar(),
    }


def run_audit(conn) -> dict:
    """Check the money invariants now and keep the result (its time, violations) for the
    overview; call it in a write transaction."""
    return record_audit(conn, audit.violations(conn))


def record_audit(conn, problems) -> dict:
    """Keep an audit's result (its time, violations) as the last audit, which the overview
    shows, whoever ran it: the console's button (run_audit) or `serva audit` from cron, which
    checks in a read transaction and records here in a short write one, so a long audit never
    holds the write lock."""
    problems = [str(problem) for problem in problems]
    result = {"at": db.now(), "passed": not problems, "count": len(problems),
              "first": problems[0][:120] if problems else None}
    stmt = db.upsert(conn.dialect.name, serva_meta).values(key=LAST_AUDIT_KEY,
                                                           value=json.dumps(result))
    conn.execute(stmt.on_conflict_do_update(index_elements=["key"],
                                            set_={"value": stmt.excluded.value}))
    return result


def last_audit(conn):
    value = conn.execute(select(serva_meta.c.value).where(serva_meta.c.key == LAST_AUDIT_KEY)).scalar()
    return None if value is None else json.loads(value)
