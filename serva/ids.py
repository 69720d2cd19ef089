"""How order, service and refill ids look to partners.

Each account has an id format (docs/CONTRACT.md, Ids): `prefixed` — strings as on
the public page ("ORD-100023", "1234", "REF-5001") — or `numeric` — JSON integers (100023,
1234, 5001), for panel scripts that store a provider's ids in integer columns. An account that
has not chosen follows the deployment default, the INTEGER_IDS setting. Every id the API returns
goes through the format_* functions here; ids are accepted in either form whatever the format."""
from flask import current_app

from .params import parse_digits
from .schema import ID_FORMATS  # noqa: F401 - the formats, named where the column is

ORDER_PREFIX = "ORD-"
ORDER_NUMBER_BASE = 100_000  # order number = row id + base, so numbers start at 100001
REFILL_PREFIX = "REF-"
REFILL_NUMBER_BASE = 5_000  # refill number = row id + base, so numbers start at 5001
MAX_ID = 2**31 - 1  # ids are INTEGER columns; a larger number cannot be ours (PostgreSQL refuses it)


def numeric_ids(account) -> bool:
    """Whether this account's ids are JSON integers: its own choice (`accounts.id_format`, read
    with the key) or, when it has not chosen, the deployment default."""
    chosen = account.id_format
    if chosen is None:
        return current_app._get_current_object().config["INTEGER_IDS"]
    return chosen == "numeric"


def id_format_name(numeric: bool) -> str:
    return "numeric" if numeric else "prefixed"


def order_number(order_id: int) -> int:
    return order_id + ORDER_NUMBER_BASE


def format_order_id(order_id: int, numeric: bool):
    """An order id as the API returns it: "ORD-100023", or 100023 in the numeric format."""
    number = order_number(order_id)
    return number if numeric else f"{ORDER_PREFIX}{number}"


def format_service_id(service_id: int, numeric: bool):
    """A service id as the API returns it: "1234", or 1234 in the numeric format."""
    return service_id if numeric else str(service_id)


def format_refill_id(refill_id: int, numeric: bool):
    """A refill id as the API returns it: "REF-5001", or 5001 in the numeric format."""
    number = refill_id + REFILL_NUMBER_BASE
    return number if numeric else f"{REFILL_PREFIX}{number}"


def present_order(order_id: int) -> str:
    """An order as people read it (CLI, ledger notes, logs): always "ORD-100023"."""
    return format_order_id(order_id, numeric=False)


def present_refill(refill_id: int) -> str:
    """A refill as people read it (CLI): always "REF-5001"."""
    return format_refill_id(refill_id, numeric=False)


def _parse_number(value, prefix: str, base: int):
    """'<prefix>123' (any case), '123' or 123 -> 123 - base; None when it cannot be one of ours."""
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
