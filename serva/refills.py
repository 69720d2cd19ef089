"""After an order: the partner's `refill`, `refill_status` and `cancel` (docs/CONTRACT.md), and the
operator's answers to them.

A refill is a row of its own (`refills`); the database allows one Pending/In progress refill
per order (a partial unique index), so two refill requests racing for one order cannot both be
accepted. A cancel is a request stamped on the order (`cancel_requested_at`) by one conditional
UPDATE that only matches an active order of a service with cancel; the money comes back only
when the outcome arrives (`orders.set_status` with Canceled or Partial, which refunds once).
Another account's order or refill is "not found", exactly like one that does not exist."""
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from . import db
from .errors import ApiError
from .fulfilment import forwarding
from .ids import format_refill_id, numeric_ids, parse_order, parse_refill, present_refill
from .orders import API, MAX_BATCH
from .params import requested_ids
from .schema import (ACTIVE_STATUSES, PENDING_REFILL_STATUSES, REFILL_STATUSES, accounts, orders,
                     refills, services)
from .spec import ORDER, ORDERS, REFILL, REFILLS
from .webhooks import outbox

REFILLABLE_STATUSES = ("Completed", "Partial")
DAY = 86_400


class RefillError(ValueError):
    """An operator's refill change that cannot be applied."""


def _each(tokens, work):
    """work(token) for every token: its result, or the ApiError it raised (per-id errors)."""
    outcomes = []
    for token in tokens:
        try:
            outcomes.append(work(token))
        except ApiError as error:
            outcomes.append(error)
    return outcomes


def _answer(tokens, is_batch, outcomes, id_name, value_name, present):
    """The contract's shapes: {value_name: v} for one id (its error raised), or a list of
    {id_name: id as sent, value_name: v or {"error": message}} in the order sent."""
    if not is_batch:
        if isinstance(outcomes[0], ApiError):
            raise outcomes[0]
        return {value_name: present(outcomes[0])}
    return [{id_name: token, value_name: {"error": outcome.message}
             if isinstance(outcome, ApiError) else present(outcome)}
            for token, outcome in zip(tokens, outcomes)]


# ---------------------------------------------------------------- refill

_REFILL_CHECK = (select(orders.c.status, orders.c.completed_at, orders.c.provider_id,
                        services.c.refill_days)
                 .join(services, services.c.id == orders.c.service_id))


def _refill(conn, account_id: int, order_id, stamp: int) -> int:
    """Create a Pending refill of the account's order, or raise why not."""
    if order_id is None:
        raise ApiError("order_not_found")
    query = _REFILL_CHECK.where(orders.c.id == order_id, orders.c.account_id == account_id)
    if conn.dialect.name != "sqlite":  # SQLite's BEGIN IMMEDIATE already serializes writers
        query = query.with_for_update(of=orders)
    order = conn.execute(query).first()
    if order is None:
        raise ApiError("order_not_found")
    if order.refill_days <= 0:
        raise ApiError("refill_not_available", reason="the service has no refill")
    if order.status not in REFILLABLE_STATUSES:
        raise ApiError("refill_not_available", reason="the order is not completed")
    if order.completed_at is None or stamp > order.completed_at + order.refill_days * DAY:
        raise ApiError("refill_not_available", reason="the refill window is over")
    try:
        with conn.begin_nested():  # the unique index refuses a second pending refill
            refill_id = conn.execute(insert(refills).values(
                order_id=order_id, account_id=account_id, status="Pending", created_at=stamp,
                updated_at=stamp).returning(refills.c.id)).scalar_one()
    except IntegrityError:
        raise ApiError("refill_not_available", reason="a refill is already pending") from None
    if order.provider_id is not None:  # the provider does it: the worker hands it over
        forwarding.enqueue(conn, order_id, "refill", stamp)
    return refill_id


def refill_action(account, params):
    tokens, is_batch = requested_ids(params, ORDER, ORDERS, MAX_BATCH)
    stamp = db.now()
    with db.write() as conn:
        outcomes = _each(tokens, lambda t: _refill(conn, account.account_id, parse_order(t), stamp))
    numeric = numeric_ids(account)
    return _answer(tokens, is_batch, outcomes, "order", "refill",
                   lambda refill_id: format_refill_id(refill_id, numeric))


def refill_status_action(account, params):
    tokens, is_batch = requested_ids(params, REFILL, REFILLS, MAX_BATCH)
    wanted = {token: parse_refill(token) for token in tokens}
    ids = sorted({i for i in wanted.values() if i is not None})
    found = {}
    if ids:
        with db.read() as conn:
            found = dict(conn.execute(select(refills.c.id, refills.c.status).where(
                refills.c.account_id == account.account_id, refills.c.id.in_(ids))).all())

    def status(token):
        refill_id = wanted[token]
        if refill_id not in found:
            raise ApiError("refill_not_found")
        return found[refill_id]
    return _answer(tokens, is_batch, _each(tokens, status), "refill", "status", lambda s: s)


# ---------------------------------------------------------------- cancel

_CANCELABLE = select(services.c.id).where(services.c.cancel.is_(True))


def _cancel(conn, account_id: int, order_id, stamp: int) -> int:
    """Record the account's request to cancel an active order (again: still accepted). A
    provider order's first request goes to the provider (or, never handed over, is canceled
    and refunded at once)."""
    if order_id is None:
        raise ApiError("order_not_found")
    mine = (orders.c.id == order_id, orders.c.account_id == account_id)
    cancelable = (orders.c.status.in_(ACTIVE_STATUSES), orders.c.service_id.in_(_CANCELABLE))
    first = conn.execute(
        update(orders).where(*mine, *cancelable, orders.c.cancel_requested_at.is_(None))
        .values(cancel_requested_at=stamp).returning(orders.c.provider_id)).first()
    if first is not None:
        if first.provider_id is not None \
                and not forwarding.cancel_before_handover(conn, order_id, stamp, API):
            forwarding.enqueue(conn, order_id, "cancel", stamp)
        return 1
    order = conn.execute(select(orders.c.id).where(*mine)).first()
    if order is None:
        raise ApiError("order_not_found")
    if conn.execute(select(orders.c.id).where(*mine, *cancelable)).first() is not None:
        return 1  # asked before, still waiting for the outcome
    raise ApiError("cancel_not_available")


def cancel_action(account, params):
    tokens, is_batch = requested_ids(params, ORDER, ORDERS, MAX_BATCH)
    stamp = db.now()
    with db.write() as conn:
        outcomes = _each(tokens, lambda t: _cancel(conn, account.account_id, parse_order(t), stamp))
    return _answer(tokens, is_batch, outcomes, "order", "cancel", lambda accepted: accepted)


# ---------------------------------------------------------------- operator

def list_refills(conn, status=None, limit=50):
    """Newest refills first, with their order and account."""
    query = (select(refills, accounts.c.email, orders.c.service_id, orders.c.target)
             .join(orders, orders.c.id == refills.c.order_id)
             .join(accounts, accounts.c.id == refills.c.account_id)
             .order_by(refills.c.id.desc()).limit(limit))
    if status is not None:
        query = query.where(refills.c.status == status)
    return conn.execute(query).all()


def refills_of(conn, order_id: int):
    return conn.execute(select(refills).where(refills.c.order_id == order_id)
                        .order_by(refills.c.id)).all()


def set_refill_status(conn, refill_id: int, status: str) -> None:
    """Move a refill on; Completed and Rejected are final. One conditional UPDATE decides, so
    two operators (or an operator and the worker) cannot both move a refill out of Pending."""
    if status not in REFILL_STATUSES:
        raise RefillError(f"status must be one of: {', '.join(REFILL_STATUSES)}")
    changed = conn.execute(update(refills).where(refills.c.id == refill_id,
                                                 refills.c.status.in_(PENDING_REFILL_STATUSES))
                           .values(status=status, updated_at=db.now())).rowcount
    if changed:
        outbox.refill_updated(conn, [refill_id])  # the partner's webhook, in this transaction
        return
    current = conn.execute(select(refills.c.status).where(refills.c.id == refill_id)).scalar()
    if current is None:
        raise RefillError(f"no refill {present_refill(refill_id)}")
    raise RefillError(f"refill {present_refill(refill_id)} is {current}; its status is final")
