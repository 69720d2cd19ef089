"""The webhook outbox: events written in the transaction of the change they report.

`order_updated` is called where an order's status changes (orders.move, and the worker's
batch of progress statuses), `refill_updated` where a refill's status changes. Each writes
one `webhook_events` row per changed order or refill whose account has an enabled endpoint,
in the caller's transaction: the event commits with its change, or neither does, so no event
is lost and none reports a change that rolled back. The worker delivers them (delivery).

The body is built here, once: the same bytes are signed and sent on every attempt. Its shape
is Standard Webhooks' (`type`, `timestamp`, `data`); an order's `data` is its `status`
answer with `order` in the account's id format, a refill's is the refill, its order and
status. Every field has a bounded size, so a body stays far below MAX_BODY_BYTES."""
import json
import uuid
from datetime import datetime, timezone

from sqlalchemy import insert, select

from ..db import now
from ..ids import format_order_id, format_refill_id, numeric_ids
from ..orders.reading import status_entry
from ..schema import accounts, orders, refills, webhook_endpoints, webhook_events

MAX_BODY_BYTES = 20 * 1024
ORDER_UPDATED, REFILL_UPDATED, TEST = "order.updated", "refill.updated", "webhook.test"
EVENT_TYPES = (ORDER_UPDATED, REFILL_UPDATED, TEST)

_LISTENING = (accounts.join(webhook_endpoints, (webhook_endpoints.c.account_id == accounts.c.id)
                            & webhook_endpoints.c.enabled.is_(True)))
_ORDERS = (select(orders.c.id, orders.c.charge, orders.c.refunded, orders.c.status,
                  orders.c.start_count, orders.c.remains, orders.c.runs, orders.c.runs_done,
                  orders.c.account_id, accounts.c.id_format)
           .select_from(orders.join(_LISTENING, accounts.c.id == orders.c.account_id)))
_REFILLS = (select(refills.c.id, refills.c.order_id, refills.c.status, refills.c.account_id,
                   accounts.c.id_format)
            .select_from(refills.join(_LISTENING, accounts.c.id == refills.c.account_id)))


def body(event_type: str, data: dict, stamp: int) -> str:
    """A Standard Webhooks payload: the event type, when it happened, its data."""
    moment = datetime.fromtimestamp(stamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps({"type": event_type, "timestamp": moment, "data": data},
                      separators=(",", ":"), ensure_ascii=False)


def new_msg_id() -> str:
    """The event's webhook-id: unique, and the same on every attempt (receivers de-duplicate
    by it)."""
    return f"msg_{uuid.uuid4().hex}"


def _write(conn, rows) -> int:
    """Insert (account_id, type, data) events, due now; how many."""
    stamp = now()
    values = [{"msg_id": new_msg_id(), "account_id": account_id, "type": event_type,
               "payload": body(event_type, data, stamp), "created_at": stamp,
               "state": "pending", "attempts": 0, "next_attempt_at": stamp}
              for account_id, event_type, data in rows]
    if values:
        conn.execute(insert(webhook_events), values)
    return len(values)


def order_data(row) -> dict:
    """An order.updated event's data: `order` in the account's id format and its `status`
    answer (status, remains, start_count, charge after refunds, currency; drip-feed runs)."""
    return {"order": format_order_id(row.id, numeric_ids(row)), **status_entry(tuple(row)[:8])}


def order_updated(conn, order_ids) -> int:
    """order.updated for these orders, as they are now in this transaction."""
    ids = sorted(set(order_ids))
    if not ids:
        return 0
    rows = conn.execute(_ORDERS.where(orders.c.id.in_(ids))).all()
    return _write(conn, [(row.account_id, ORDER_UPDATED, order_data(row)) for row in rows])


def refill_updated(conn, refill_ids) -> int:
    """refill.updated for these refills, as they are now in this transaction."""
    ids = sorted(set(refill_ids))
    if not ids:
        return 0
    rows = conn.execute(_REFILLS.where(refills.c.id.in_(ids))).all()
    return _write(conn, [(row.account_id, REFILL_UPDATED, {
        "refill": format_refill_id(row.id, numeric_ids(row)),
        "order": format_order_id(row.order_id, numeric_ids(row)),
        "status": row.status}) for row in rows])


def test_event(conn, account_id: int) -> bool:
    """A webhook.test event, for the partner to see its receiver work; False without an
    enabled endpoint."""
    listening = conn.execute(select(webhook_endpoints.c.id).where(
        webhook_endpoints.c.account_id == account_id,
        webhook_endpoints.c.enabled.is_(True))).first()
    if listening is None:
        return False
    return bool(_write(conn, [(account_id, TEST, {"message": "a test event from Serva"})]))
