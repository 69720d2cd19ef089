"""Orders: reading an `add` (parsing), placing it (placing), the `status` action (reading) and
moving an order to another status with its refund (moving), and the status history each move
writes (history). Other modules use the names below: `orders.place`, `orders.move`,
`orders.set_status`, `orders.OrderError`…"""
from ..schema import ACTIVE_STATUSES, FINAL_STATUSES, ORDER_STATUSES
from . import history
from .history import API, CLI, WORKER, history_of
from .moving import (IN_FLIGHT, REFUNDED_STATUSES, OrderError, move, refund_for,
                     refuse_cancel, set_status, status_fields)
from .parsing import (MAX_FIELD_LENGTH, MAX_INTERVAL, MAX_LINES_LENGTH, MAX_LINK_LENGTH,
                      MAX_RUNS, MIN_INTERVAL, MIN_RUNS, OrderRequest, ServiceRow, add_lookup,
                      normalize_link, parse_add, parse_dripfeed, parse_inputs)
from .placing import add_action, billable_units, place
from .reading import MAX_BATCH, status_action, status_entry, status_lookup

__all__ = [
    "ACTIVE_STATUSES", "API", "CLI", "FINAL_STATUSES", "IN_FLIGHT", "MAX_BATCH",
    "MAX_FIELD_LENGTH", "MAX_INTERVAL", "MAX_LINES_LENGTH", "MAX_LINK_LENGTH", "MAX_RUNS",
    "MIN_INTERVAL", "MIN_RUNS", "ORDER_STATUSES", "OrderError", "OrderRequest",
    "REFUNDED_STATUSES", "ServiceRow", "WORKER", "add_action", "add_lookup", "billable_units",
    "history", "history_of", "move", "normalize_link", "parse_add", "parse_dripfeed",
    "parse_inputs", "place", "refund_for", "refuse_cancel", "set_status", "status_action",
    "status_fields", "status_entry", "status_lookup",
]
