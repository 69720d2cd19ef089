"""How order and service ids look to partners: strings by default ("ORD-100023", "1234"),
JSON integers when the INTEGER_IDS compatibility setting is on (CONTRACT.md)."""
from flask import current_app

from .params import parse_digits

ORDER_PREFIX = "ORD-"
ORDER_NUMBER_BASE = 100_000  # order number = row id + base, so numbers start at 100001
MAX_ID = 2**31 - 1  # ids are INTEGER columns; a larger number cannot be ours (PostgreSQL refuses it)
REFILL_PREFIX = "REF-"
REFILL_NUMBER_BASE = 5_000  # refill number = row id + base, so numbers start at 5001


def _integer_ids() -> bool:
    return current_app.config["INTEGER_IDS"]


def order_number(order_id: int) -> int:
    return order_id + ORDER_NUMBER_BASE


def present_order(order_id: int):
    number = order_number(order_id)
    return number if _integer_ids() else f"{ORDER_PREFIX}{number}"


def present_service(service_id: int):
    return service_id if _integer_ids() else str(service_id)


def numeric_ids(account) -> bool:
    """Whether this account's ids are JSON integers (the deployment default for now)."""
    chosen = getattr(account, "id_format", None)
    return _integer_ids() if chosen is None else chosen == "numeric"


def format_refill_id(refill_id: int, numeric: bool):
    """A refill id as the API returns it: "REF-5001", or 5001 in the numeric format."""
    number = refill_id + REFILL_NUMBER_BASE
    return number if numeric else f"{REFILL_PREFIX}{number}"


def present_refill(refill_id: int) -> str:
    """A refill as people read it (CLI): always "REF-5001"."""
    return format_refill_id(refill_id, numeric=False)


def _parse_number(value, prefix: str, base: int):
    """'<prefix>N' (any case), 'N' or N -> N - base when that can be a row id; else None."""
    if isinstance(value, str):
        value = value.strip()
        if value[:len(prefix)].upper() == prefix:
            value = value[len(prefix):]
    number = parse_digits(value)
    if number is None:
        return None
    row_id = number - base
    return row_id if 0 < row_id <= MAX_ID else None


def parse_order(value):
    """'ORD-100023' (any case), '100023' or 100023 -> row id; None when it cannot be one of ours."""
    return _parse_number(value, ORDER_PREFIX, ORDER_NUMBER_BASE)


def parse_refill(value):
    """'REF-5001' (any case), '5001' or 5001 -> row id; None when it cannot be one of ours."""
    return _parse_number(value, REFILL_PREFIX, REFILL_NUMBER_BASE)


def parse_service(value):
    """'1234' or 1234 -> 1234; None otherwise."""
    number = parse_digits(value)
    return number if number is not None and 0 < number <= MAX_ID else None
