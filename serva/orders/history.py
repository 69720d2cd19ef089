"""An order's status history: one `order_history` row per change of its status, remains or
start count, written beside the order.updated webhook event (orders.move, and the worker's
progress batch), in the transaction of the change: a change that rolls back leaves no row.

Who made the change is named like the activity log's actors (`cli`, `operator:EMAIL`), plus
`worker` (the provider's word, applied by the worker) and `api` (the partner's own cancel).
The request id is the request's or the command's; the worker's rows have none."""
from sqlalchemy import insert, select

from ..activity import CLI
from ..db import now
from ..request_ids import request_id
from ..schema import order_history, orders

__all__ = ["API", "CLI", "SHOWN", "WORKER", "before_change", "history_of", "record"]

WORKER = "worker"  # the provider's word, applied by the worker
API = "api"  # the partner's own request
SHOWN = 200  # the console shows this many, newest first

_FIELDS = (orders.c.id, orders.c.status, orders.c.remains, orders.c.start_count)


def before_change(conn, order_ids) -> dict:
    """id -> (status, remains, start_count) of these orders as they are now, locked until the
    transaction ends (PostgreSQL; SQLite's BEGIN IMMEDIATE already holds every row), so what a
    history row says was before is what the change replaced."""
    ids = sorted(set(order_ids))
    if not ids:
        return {}
    rows = conn.execute(select(*_FIELDS).where(orders.c.id.in_(ids)).order_by(orders.c.id)
                        .with_for_update()).all()
    return {row.id: (row.status, row.remains, row.start_count) for row in rows}


def record(conn, before: dict, after: dict, actor: str) -> int:
    """One row per order whose (status, remains, start_count) went from `before[id]` to a
    different `after[id]`, in one statement; how many."""
    stamp = now()
    rid = None if actor == WORKER else request_id()
    rows = [{"order_id": order_id, "created_at": stamp, "status_before": before[order_id][0],
             "status_after": status, "remains": remains, "start_count": start_count,
             "actor": actor[:270], "request_id": rid}
            for order_id, (status, remains, start_count) in sorted(after.items())
            if order_id in before and before[order_id] != (status, remains, start_count)]
    if rows:
        conn.execute(insert(order_history), rows)
    return len(rows)


def history_of(conn, order_id: int, limit: int = SHOWN):
    """The order's last `limit` changes, newest first."""
    return conn.execute(select(order_history).where(order_history.c.order_id == order_id)
                        .order_by(order_history.c.created_at.desc(), order_history.c.id.desc())
                        .limit(limit)).all()
