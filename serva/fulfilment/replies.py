"""How a provider's words are read: its status names (one map, for orders and for refills),
its refusals that mean "not now" rather than "never", and its counts.

Panels spell statuses their own way ("In progress", "inprogress", "IN_PROGRESS", "Cancelled",
"Refunded"); each is read into one of Serva's statuses, and anything else is None (an unknown
status changes nothing)."""
import re
from decimal import Decimal

# A provider's status name (lower case, no spaces or underscores) -> Serva's order status.
STATUS_NAMES = {"pending": "Pending", "inprogress": "In progress", "processing": "Processing",
                "completed": "Completed", "partial": "Partial", "canceled": "Canceled",
                "cancelled": "Canceled", "refunded": "Canceled"}
# A refill has fewer states than an order: Processing is In progress, an ended refill that was
# not done is Rejected (also spelt "rejected" or "error", which no order status is).
REFILL_OF_ORDER_STATUS = {"Pending": "Pending", "In progress": "In progress",
                          "Processing": "In progress", "Completed": "Completed",
                          "Canceled": "Rejected"}
REFILL_ONLY_NAMES = {"rejected": "Rejected", "error": "Rejected"}

# Provider messages that mean "not now" rather than "never" (the contract's Fulfilment part):
# the provider's funds, its duplicate/active-order guards, its rate limits, its key or access.
# Such a refusal is an answer: nothing was placed, so asking again later is safe.
FOR_NOW = ("not enough funds", "insufficient", "balance", "active order", "duplicate",
           "too many", "rate limit", "retry", "temporarily", "busy", "api key", "key",
           "banned", "not approved", "maintenance", "disabled")


def _name(value):
    if not isinstance(value, str):
        return None
    return value.replace(" ", "").replace("_", "").lower()


def order_status(value):
    """Serva's order status for a provider's status name, or None."""
    return STATUS_NAMES.get(_name(value))


def refill_status(value):
    """Serva's refill status for a provider's status name, or None."""
    name = _name(value)
    if name in REFILL_ONLY_NAMES:
        return REFILL_ONLY_NAMES[name]
    return REFILL_OF_ORDER_STATUS.get(STATUS_NAMES.get(name))


def refused_for_now(message: str) -> bool:
    """Whether a provider's refusal says "not now" (True) or "never" (False)."""
    text = message.lower()
    return any(marker in text for marker in FOR_NOW)


def usable_id(value) -> bool:
    """Whether a provider's order or refill id can be kept: a non-empty string or integer that
    fits the column (64 characters)."""
    return not isinstance(value, bool) and isinstance(value, (str, int)) \
        and bool(str(value).strip()) and len(str(value)) <= 64


def count(value):
    """An integer count from a provider (int, integral Decimal or numeric string), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
        return int(value)
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    return None
