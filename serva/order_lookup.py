"""What the operator reads about orders: a filtered list, the hand-overs whose outcome is
unknown, and one order with its ledger rows, refills and hand-over. Reading only: every
change to an order goes through `orders`."""
from collections import namedtuple

from sqlalchemy import and_, select

from . import refills
from .schema import ACTIVE_STATUSES, accounts, dispatches, ledger, orders, providers

OrderDetails = namedtuple("OrderDetails", "order entries refills handover")


def list_orders(conn, *, account_id=None, status=None, service_id=None, cancel_requested=False,
                provider_id=None, unknown=False, attention=False, request_id=None, limit=50,
                before_id=None, created_from=None, created_to=None, link_contains=None):
    """Newest first, each row the order's columns plus the account's `email`. `request_id`
    finds the orders that request placed, charged or refunded (their ledger rows name it).
    `before_id` pages by key (the next page starts below the last id shown), so a page deep
    in a million orders costs what the first one does."""
    query = (select(orders, accounts.c.email).join(accounts, accounts.c.id == orders.c.account_id)
             .order_by(orders.c.id.desc()).limit(limit))
    if before_id is not None:
        query = query.where(orders.c.id < before_id)
    if created_from is not None:
        query = query.where(orders.c.created_at >= created_from)
    if created_to is not None:
        query = query.where(orders.c.created_at < created_to)
    if link_contains:
        escaped = link_contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(orders.c.target.like(f"%{escaped}%", escape="\\"))
    if request_id:
        by_ledger = select(ledger.c.order_id).where(ledger.c.request_id == request_id)
        query = query.where((orders.c.request_id == request_id) | orders.c.id.in_(by_ledger))
    if account_id is not None:
        query = query.where(orders.c.account_id == account_id)
    if status:
        query = query.where(orders.c.status == status)
    if service_id is not None:
        query = query.where(orders.c.service_id == service_id)
    if cancel_requested:
        query = query.where(orders.c.cancel_requested_at.is_not(None),
                            orders.c.status.in_(ACTIVE_STATUSES))
    if provider_id is not None:
        query = query.where(orders.c.provider_id == provider_id)
    if unknown:
        query = query.where(orders.c.id.in_(select(dispatches.c.order_id)
                                            .where(dispatches.c.state == "unknown")))
    if attention:
        query = query.where(orders.c.attention.is_not(None))
    return conn.execute(query).all()


def unknown_handovers(conn):
    """Hand-overs sent with no usable answer, oldest order first, with their provider's name."""
    return conn.execute(
        select(orders.c.id, orders.c.quantity, orders.c.target, dispatches.c.attempts,
               dispatches.c.last_message, dispatches.c.updated_at,
               providers.c.name.label("provider"))
        .select_from(dispatches.join(orders, orders.c.id == dispatches.c.order_id)
                     .outerjoin(providers, providers.c.id == orders.c.provider_id))
        .where(dispatches.c.state == "unknown").order_by(orders.c.id)).all()


def order_details(conn, order_id: int):
    """OrderDetails of one order (None when there is no such order): the order with the
    account's `email`, its ledger rows in order, its refills, and its hand-over to a provider
    (`provider`, `state`, `attempts`, `last_message`; each None when it has none)."""
    row = conn.execute(select(orders, accounts.c.email)
                       .join(accounts, accounts.c.id == orders.c.account_id)
                       .where(orders.c.id == order_id)).first()
    if row is None:
        return None
    entries = conn.execute(select(ledger).where(ledger.c.order_id == order_id)
                           .order_by(ledger.c.id)).all()
    handover = conn.execute(
        select(providers.c.name.label("provider"), dispatches.c.state, dispatches.c.attempts,
               dispatches.c.last_message)
        .select_from(orders.outerjoin(providers, providers.c.id == orders.c.provider_id)
                     .outerjoin(dispatches, and_(dispatches.c.order_id == orders.c.id,
                                                 dispatches.c.kind == "add")))
        .where(orders.c.id == order_id)).first()
    return OrderDetails(row, entries, refills.refills_of(conn, order_id), handover)
