"""Reading orders: the `status` action, for one order or a batch of up to MAX_BATCH. The
requested orders come with the key lookup's row (`status_lookup`): one SELECT per request."""
from flask import current_app
from sqlalchemy import bindparam, select

from .. import db, keys
from ..errors import ApiError
from ..ids import parse_order
from ..money import format_amount
from ..params import requested_ids
from ..schema import accounts, orders
from ..spec import ORDER, ORDERS

MAX_BATCH = 100

_STATUS_COLUMNS = (orders.c.id, orders.c.charge, orders.c.refunded, orders.c.status,
                   orders.c.start_count, orders.c.remains, orders.c.runs, orders.c.runs_done)
_BATCH = (select(*_STATUS_COLUMNS)
          .where(orders.c.account_id == bindparam("account_id"),
                 orders.c.id.in_(bindparam("ids", expanding=True))))
# The requested orders of the key's account, as one JSON value (db.json_rows) in the key
# lookup's row.
def _status_lookup(ids_match):
    return keys.resolve_select(
        select(db.json_rows(*_STATUS_COLUMNS))
        .where(orders.c.account_id == accounts.c.id, ids_match)
        .scalar_subquery().label("orders_json"))


_STATUS_LOOKUP = _status_lookup(orders.c.id.in_(bindparam("ids", expanding=True)))
_STATUS_LOOKUP_ONE = db.Lookup(_status_lookup(orders.c.id == bindparam("id")))  # the usual case


# Where the request's parameters keep what `_requested` made of them: the key lookup and the
# action both need it, and a batch of 100 ids is worth parsing once. An object, so no parameter
# a partner sends can be it.
_PARSED = object()


def _requested(params):
    """(ids as sent, is_batch, their order ids) of a `status` request (params.requested_ids:
    the rules status, refill, refill_status and cancel share), parsed once per request."""
    parsed = params.get(_PARSED)
    if parsed is None:
        tokens, is_batch = requested_ids(params, ORDER, ORDERS, MAX_BATCH)
        parsed = params[_PARSED] = tokens, is_batch, [parse_order(token) for token in tokens]
    return parsed


def _requested_ids(params) -> list:
    """The order ids a well-formed `status` request asks for (none when it is malformed:
    status_action then reports why, parsing again)."""
    try:
        _, _, order_ids = _requested(params)
    except ApiError:
        return []
    return sorted({order_id for order_id in order_ids if order_id is not None})


def status_lookup(params):
    """What `status` reads with the key: the requested orders of the key's account."""
    ids = _requested_ids(params)
    if not ids:
        return None
    if len(ids) == 1:
        return _STATUS_LOOKUP_ONE, {"id": ids[0]}
    return _STATUS_LOOKUP, {"ids": ids}


def _found(account, order_ids) -> dict:
    """The account's orders among these ids: from the key lookup's row when it brought them."""
    brought = getattr(account, "orders_json", False)
    if brought is not False:
        return {item[0]: item for item in brought or ()}
    ids = sorted({i for i in order_ids if i is not None})
    if not ids:
        return {}
    with db.read() as conn:
        rows = conn.execute(_BATCH, {"account_id": account.account_id, "ids": ids}).all()
    return {row.id: row for row in rows}


def status_entry(row, currency=None) -> dict:
    """One order's status answer from its _STATUS_COLUMNS (a row, or a list of the key
    lookup's JSON, in the same order)."""
    _, charge, refunded, status, start_count, remains, runs, runs_done = row
    entry = {"charge": format_amount(charge - refunded), "start_count": start_count,
             "status": status, "remains": remains,
             "currency": currency or current_app.config["CURRENCY"]}
    if runs is not None:  # a drip-feed order
        entry["runs"] = runs
        entry["runs_done"] = runs_done
    return entry


def status_action(account, params):
    tokens, is_batch, order_ids = _requested(params)
    found = _found(account, order_ids)
    if is_batch:
        missing = ApiError("order_not_found").message
        currency = current_app.config["CURRENCY"]
        return {token: status_entry(found[order_id], currency) if order_id in found
                else {"error": missing} for token, order_id in zip(tokens, order_ids)}
    row = found.get(order_ids[0])
    if row is None:
        raise ApiError("order_not_found")
    return status_entry(row)
