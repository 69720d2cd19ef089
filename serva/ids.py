"""How order and service ids look to partners: strings by default ("ORD-100023", "1234"),
JSON integers when the INTEGER_IDS compatibility setting is on (CONTRACT.md)."""
from flask import current_app

from .params import parse_digits

ORDER_PREFIX = "ORD-"
ORDER_NUMBER_BASE = 100_000  # order number = row id + base, so numbers start at 100001
MAX_ID = 2**31 - 1  # ids are INTEGER columns; a larger number cannot be ours (PostgreSQL refuses it)


def _integer_ids() -> bool:
    return current_app.config["INTEGER_IDS"]


def order_number(order_id: int) -> int:
    return order_id + ORDER_NUMBER_BASE


def present_order(order_id: int):
    number = order_number(order_id)
    return number if _integer_ids() else f"{ORDER_PREFIX}{number}"


def present_service(service_id: int):
    return service_id if _integer_ids() else str(service_id)


def parse_order(value):
    """'ORD-100023' (any case), '100023' or 100023 -> row id; None when it cannot be one of ours."""
    if isinstance(value, str):
        value = value.strip()
        if value[:4].upper() == ORDER_PREFIX:
            value = value[4:]
    number = parse_digits(value)
    if number is None:
        return None
    order_id = number - ORDER_NUMBER_BASE
    return order_id if 0 < order_id <= MAX_ID else None


def parse_service(value):
    """'1234' or 1234 -> 1234; None otherwise."""
    number = parse_digits(value)
    return number if number is not None and 0 < number <= MAX_ID else None
