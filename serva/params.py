"""The rules every request parameter is read by: numbers are ASCII digits, text is storable.

Python is generous where the API must not be: `'²'.isdigit()` is true yet `int('²')` fails,
and `int('١٠٠')` or `int('１００')` quietly read Arabic-Indic or full-width digits. JSON's
`"\\ud800"` escape makes a lone surrogate, a `str` that cannot be encoded, so it fails later in
a hash, an INSERT or a log line; PostgreSQL refuses NUL in any text. Parameters pass through
here once, and whatever is not a number or not text the database can keep is a clean error
of the request, never a 500."""
import json

from .errors import ApiError

MAX_DIGITS = 18  # fits a 64-bit integer; longer digit strings are never ids or quantities


def parse_digits(value, max_digits: int = MAX_DIGITS):
    """The integer written in ASCII digits 0-9 (surrounding whitespace ignored), or a JSON
    integer as it is; None for anything else (signs, unicode digits, bools, floats)."""
    if isinstance(value, str):
        value = value.strip()
        if value.isascii() and value.isdigit() and len(value) <= max_digits:
            return int(value)
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def whole_number(value, name: str) -> int:
    """parse_digits, or `invalid_request` naming the parameter: for a number whose range has an
    error of its own (drip-feed's `runs`, `interval`), so that a value that is no number at all
    is not reported as out of range (or, before the range, as a service without drip-feed)."""
    number = parse_digits(value)
    if number is None:
        raise ApiError("invalid_request", detail=f"{name} must be a whole number (digits 0-9)")
    return number


def batch_ids(value, name: str) -> list:
    """The ids of a batch parameter (`orders=a,b,c`, or a JSON list), as sent, in order."""
    if isinstance(value, list):
        tokens = [str(v).strip() for v in value if not isinstance(v, (dict, list))]
    elif isinstance(value, (str, int)) and not isinstance(value, bool):
        tokens = [t.strip() for t in str(value).split(",")]
    else:
        raise ApiError("invalid_request", detail=f"{name} must be a comma-separated list")
    return [t for t in tokens if t]


def requested_ids(params, single, batch, limit: int) -> tuple:
    """(ids as sent, True) of a batch (`orders=a,b`), or ([id], False) of one id (`order`),
    given the two spec.Params: what status, refill, refill_status and cancel read alike. A batch
    that names no id (`orders=`, `orders=,`) counts as absent, like any empty parameter; with
    no single id either, the error names the parameter that was sent (`orders`), so a partner
    who sent an empty list is not told about a parameter it never used."""
    value = params.get(batch.name)
    if value is not None:
        tokens = batch_ids(value, batch.name)
        if len(tokens) > limit:
            raise ApiError("too_many_orders", max=limit)
        if tokens:
            return tokens, True
    one = params.get(single.name)
    if isinstance(one, (dict, list)):  # order[]=1, or a JSON list or object
        raise ApiError("invalid_request", detail=f"{single.name} must be one id, not a list")
    if one not in (None, ""):
        return [one], False
    raise ApiError("missing_parameter", name=single.name if value is None else batch.name)


def storable(text: str) -> bool:
    """Text that encodes as UTF-8 (no lone surrogate) and holds no NUL."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def all_storable(value) -> bool:
    """storable() for every string in a decoded JSON value, object keys included (iterative:
    the parser allows nesting deeper than Python's recursion limit)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not storable(item):
                return False
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


BAD_TEXT = "a parameter holds text that is not valid Unicode, or a NUL character"


class BadText(ValueError):
    """Text that cannot be stored (see storable)."""

    def __init__(self):
        super().__init__(BAD_TEXT)


def load_json(raw):
    """json.loads for request data (bytes or str): ValueError for what does not parse or nests
    too deep for the parser, BadText (a ValueError too) for text that cannot be stored."""
    try:
        value = json.loads(raw)
    except RecursionError:  # nesting too deep for the parser
        raise ValueError("nested too deep") from None
    if not all_storable(value):
        raise BadText()
    return value
