"""Moving an order: the operator's status changes (`set_status`) and the one place an order
changes status and is refunded (`move`), which the worker and the forwarding use as well."""
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from .. import db, ledger
from ..ids import present_order
from ..money import div_half_up
from ..schema import FINAL_STATUSES, ORDER_STATUSES, dispatches, orders
from ..webhooks import outbox
from . import history

REFUNDED_STATUSES = ("Partial", "Canceled")
IN_FLIGHT = ("sending", "unknown")  # hand-over states the operator may not overtake


class OrderError(ValueError):
    pass


def set_status(conn, order_id: int, status: str, start_count=None, remains=None,
               runs_done=None, by: str = history.CLI) -> int:
    """Move an order to `status`; a Partial or Canceled order refunds through the ledger exactly
    once (the UPDATE only matches an order not refunded yet). Returns the refund. Becoming
    final stamps `completed_at` (a refill's window counts from it). `by`: the operator, as
    the status history names them (the CLI unless said)."""
    if status not in ORDER_STATUSES:
        raise OrderError(f"status must be one of: {', '.join(ORDER_STATUSES)}")
    order = conn.execute(select(orders).where(orders.c.id == order_id)).first()
    if order is None:
        raise OrderError(f"no order {present_order(order_id)}")
    if order.status in REFUNDED_STATUSES:
        raise OrderError(f"order {present_order(order_id)} is {order.status} and was refunded; "
                         f"its status is final")
    if status == "Partial":
        if remains is None or not 0 < remains < order.quantity:
            raise OrderError("a Partial order needs --remains between 1 and quantity-1")
    elif status == "Canceled":
        remains = order.quantity
    elif status == "Completed" and remains is None:
        remains = 0
    if remains is not None and not 0 <= remains <= order.quantity:
        raise OrderError("remains must be between 0 and the order's quantity")
    if runs_done is not None and order.runs is None:
        raise OrderError(f"order {present_order(order_id)} is not a drip-feed order")
    if runs_done is not None and not 0 <= runs_done <= order.runs:
        raise OrderError(f"runs done must be between 0 and the order's {order.runs} runs")
    if status == "Completed" and runs_done is None and order.runs is not None:
        runs_done = order.runs
    extra = {} if runs_done is None else {"runs_done": runs_done}
    if status not in FINAL_STATUSES:
        return move(conn, order, status, start_count, remains, by=by, **extra)
    extra["next_sync_at"] = None  # final: the worker does not poll it again
    # A hand-over still waiting is withdrawn in this transaction (no worker can claim it
    # after); one claimed (in flight) or of unknown outcome makes the move refused by the
    # UPDATE itself, so the provider never places an order refunded here.
    conn.execute(update(dispatches).where(*_handover(order_id, ("due",))).values(
        state="canceled", lease_owner=None, lease_until=None, updated_at=db.now(),
        last_message=f"withdrawn: the operator set {status}"))
    try:
        return move(conn, order, status, start_count, remains,
                    guard=~select(dispatches.c.id).where(*_handover(order_id, IN_FLIGHT)).exists(),
                    by=by, **extra)
    except OrderError:
        busy = conn.execute(select(dispatches.c.state)
                            .where(*_handover(order_id, IN_FLIGHT))).scalar()
        if busy == "sending":
            raise OrderError(f"order {present_order(order_id)} is being handed over to its provider "
                             f"right now; wait for the worker's pass to record the answer, then "
                             f"try again") from None
        if busy == "unknown":
            raise OrderError(f"order {present_order(order_id)} was sent to its provider with no "
                             f"answer (outcome unknown); check at the provider and settle it with "
                             f"`serva order resolve {present_order(order_id)}` "
                             f"(--provider-order PID, --resend or --cancel)") from None
        raise


STATUS_FIELDS = ("status", "start_count", "remains", "runs_done", "refunded")


def status_fields(conn, order_id: int):
    """What a status change may alter, as a dict (the activity's before and after), or None."""
    row = conn.execute(select(*(orders.c[name] for name in STATUS_FIELDS))
                       .where(orders.c.id == order_id)).first()
    return None if row is None else dict(row._mapping)


def refuse_cancel(conn, order_id: int) -> None:
    """The operator answers a partner's cancel request with no: the order goes on, and the
    partner may ask again."""
    changed = conn.execute(update(orders).where(orders.c.id == order_id,
                                                orders.c.cancel_requested_at.is_not(None))
                           .values(cancel_requested_at=None, updated_at=db.now())).rowcount
    if not changed:
        raise OrderError(f"order {present_order(order_id)} has no cancel request")


def _handover(order_id, states):
    """Conditions for the order's `add` hand-over in one of `states`."""
    return (dispatches.c.order_id == order_id, dispatches.c.kind == "add",
            dispatches.c.state.in_(states))


def refund_for(order, status: str, remains) -> int:
    """What a final status gives back: Partial the undelivered share (half-up, capped at the
    charge), Canceled everything, anything else nothing."""
    if status == "Partial":
        return min(order.charge, div_half_up(order.charge * remains, order.quantity))
    if status == "Canceled":
        return order.charge
    return 0


def move(conn, order, status: str, start_count=None, remains=None, guard=None, *, by: str,
         **extra) -> int:
    """The one place an order changes status and is refunded: a conditional UPDATE that only
    matches an order not refunded yet (Partial/Canceled are final), then the refund as a ledger
    row in the same transaction, so a refund happens at most once whoever asks (the operator,
    the worker, two workers at once). Becoming final stamps `completed_at` (a refill's window
    counts from it). `order` needs id, account_id, status, charge and quantity. Returns the
    refund; raises OrderError when the order was refunded meanwhile (or `guard`, a further
    condition of the UPDATE, does not hold). The order.updated webhook event and the status
    history's row (`by`: who, see orders.history) are written here too, so every path that
    moves an order reports and records it, and only if the move commits."""
    before = history.before_change(conn, [order.id])
    refund = refund_for(order, status, remains)
    stamp = db.now()
    values = {"status": status, "refunded": refund, "updated_at": stamp, **extra}
    if status not in FINAL_STATUSES:
        values["completed_at"] = None
    elif status != order.status:
        values["completed_at"] = stamp
    if start_count is not None:
        values["start_count"] = start_count
    if remains is not None:
        values["remains"] = remains
    try:
        changed = conn.execute(update(orders)
                               .where(orders.c.id == order.id, orders.c.status.not_in(REFUNDED_STATUSES),
                                      *([] if guard is None else [guard]))
                               .values(**values)).rowcount
    except IntegrityError:  # the partial unique index: one active order per target
        raise OrderError(f"another active order of this account has the same service and target; "
                         f"order {present_order(order.id)} cannot become {status}") from None
    if not changed:
        raise OrderError(f"order {present_order(order.id)} changed meanwhile; try again")
    if refund:
        ledger.post(conn, order.account_id, refund, "refund",
                    f"{status.lower()} order {present_order(order.id)}", order_id=order.id)
    outbox.order_updated(conn, [order.id])  # the partner's webhook, in this transaction
    was = before[order.id]
    history.record(conn, before, {order.id: (status, was[1] if remains is None else remains,
                                             was[2] if start_count is None else start_count)}, by)
    return refund
