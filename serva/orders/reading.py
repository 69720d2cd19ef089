"""Reading orders: the `status` action, for one order or a batch of up to MAX_BATCH. The
requested orders come with the key lookup's row (`status_lookup`): one SELECT per request."""
from flask import current_app
from sqlalchemy import bindparam, select

from .. import db, keys
from ..errors import ApiError
from ..ids import parse_order
from ..money import format_amount
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
_STATUS_LOOKUP = keys.resolve_select(
    select(db.json_rows(*_STATUS_COLUMNS))
    .where(orders.c.account_id == accounts.c.id,
           orders.c.id.in_(bindparam("ids", expanding=True)))
    .scalar_subquery().label("orders_json"))


def batch_ids(value, name="orders") -> list:
    """The ids of a batch parameter (`orders=a,b,c`, or a JSON list), as sent, in order."""
    if isinstance(value, list):
        tokens = [str(v).strip() for v in value if not isinstance(v, (dict, list))]
    elif isinstance(value, (str, int)) and not isinstance(value, bool):
        tokens = [t.strip() for t in str(value).split(",")]
    else:
        raise ApiError("invalid_request", detail=f"{name} must be a comma-separated list")
    return [t for t in tokens if t]


def _requested_ids(params) -> list:
    """The order ids a well-formed `status` request asks for (none when it is malformed:
    status_action then reports why)."""
    batch = params.get(ORDERS.name)
    try:
        if batch not in (None, "", []):
            tokens = batch_ids(batch)
            found = [parse_order(token) for token in tokens] if len(tokens) <= MAX_BATCH else []
        else:
            single = params.get(ORDER.name)
            found = [parse_order(single)] if single not in (None, "") else []
    except (ApiError, TypeError):
        return []
    return sorted({order_id for order_id in found if order_id is not None})


def status_lookup(params):
    """What `status` reads with the key: the requested orders of the key's account."""
    ids = _requested_ids(params)
    if not ids:
        return None
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
    batch = params.get(ORDERS.name)
    if batch not in (None, "", []):
        tokens = batch_ids(batch)
        if len(tokens) > MAX_BATCH:
            raise ApiError("too_many_orders", max=MAX_BATCH)
        parsed = {token: parse_order(token) for token in tokens}
        found = _found(account, parsed.values())
        missing = ApiError("order_not_found").message
        currency = current_app.config["CURRENCY"]
        return {token: status_entry(found[order_id], currency) if order_id in found
                else {"error": missing} for token, order_id in parsed.items()}
    single = params.get(ORDER.name)
    if single in (None, ""):
        raise ApiError("missing_parameter", name=ORDER.name)
    order_id = parse_order(single)
    row = _found(account, [order_id]).get(order_id)
    if row is None:
        raise ApiError("order_not_found")
    return status_entry(row)
