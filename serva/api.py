"""The one endpoint, /api/v1 (and /api/v2, the same): parameters from anywhere, the key resolver,
then a dispatch table."""
import json
import re

import orjson
from flask import Blueprint, Response, current_app, request

from . import catalog as catalog_cache, orders, ratelimit, refills, spec
from .auth import authenticate
from .errors import ApiError
from .money import format_amount
from .params import BAD_TEXT, BadText, load_json, parse_digits, storable
from .spec import Action, Example

bp = Blueprint("api", __name__)

# Every path the endpoint answers (with or without a trailing slash): /api/v2 is the same
# endpoint, for the ecosystem's scripts that append `api/v2` to a domain. The session
# interface reads this too (no cookie session on the API).
API_VERSIONS = ("v1", "v2")
API_ENDPOINTS = tuple(f"/api/{version}" for version in API_VERSIONS)
API_PATHS = frozenset(path + slash for path in API_ENDPOINTS for slash in ("", "/"))

_URLENCODED = "application/x-www-form-urlencoded"
_JSON = "application/json"
_FORM_TYPES = (_URLENCODED, "multipart/form-data")
_BRACKETED = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])+)$")
_PART = re.compile(r"\[([^\[\]]*)\]")
MAX_NESTING = 4


_encode_any = json.JSONEncoder(separators=(",", ":")).encode


def _encode(payload) -> bytes:
    """The answer's JSON: orjson (a status of 100 orders spent a fifth of its instructions in
    the standard encoder, bench/README.md); the standard encoder for what orjson refuses (an
    integer beyond 64 bits). Both write compact JSON; orjson writes non-ASCII text as UTF-8
    rather than \\u escapes, the same JSON to every parser."""
    try:
        return orjson.dumps(payload)
    except TypeError:  # orjson.JSONEncodeError
        return _encode_any(payload).encode()


def json_response(payload, status=200) -> Response:
    return Response(_encode(payload), status=status, content_type=_JSON)


def error_response(error: ApiError) -> Response:
    """An API error as the contract renders it: HTTP 200, or 429/503 with Retry-After."""
    response = json_response(error.body(), error.status)
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def _listify(value):
    """{"0": a, "1": b} -> [a, b], recursively (PHP sends arrays as numbered keys)."""
    if not isinstance(value, dict):
        return value
    value = {k: _listify(v) for k, v in value.items()}
    numbers = {k: parse_digits(k) for k in value}
    if value and None not in numbers.values() and sorted(numbers.values()) == list(range(len(value))):
        return [value[k] for k in sorted(value, key=numbers.get)]
    return value


def nest(items) -> dict:
    """Form pairs to a dict, reading PHP-style keys: fields[player_id]=1 -> {"fields": {...}}."""
    out = {}
    for key, value in items:
        match = _BRACKETED.match(key) if "[" in key else None
        if match is None:
            out[key] = value
            continue
        path = [match.group(1), *_PART.findall(match.group(2))]
        if len(path) > MAX_NESTING + 1:
            raise ApiError("invalid_request", detail=f"parameter {match.group(1)} is nested too deep")
        node = out
        for part in path[:-1]:
            part = part or str(len(node))
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1] or str(len(node))] = value
    return {key: _listify(value) for key, value in out.items()}


def _utf8(raw: bytes, where: str) -> None:
    """Refuse bytes that are not UTF-8 before werkzeug parses them: its url-encoded parser would
    read them as an empty form, and the partner would be told "API key is required"."""
    if not raw.isascii():
        try:
            raw.decode()
        except UnicodeDecodeError:
            raise ApiError("invalid_request", detail=f"the {where} is not valid UTF-8") from None


def _pairs(parsed) -> list:
    """The (name, value) pairs of a parsed query string or form, every text storable, and one
    `action` however often it is repeated: two different ones are refused, as two different
    keys are. (Escapes that are not UTF-8 stay escaped text, so no surrogate comes from here;
    a multipart part without a name is werkzeug's None key, and ignored.)"""
    pairs = [(name, value) for name, value in parsed.items(multi=True) if name is not None]
    if not all(storable(name) and storable(value) for name, value in pairs):
        raise ApiError("invalid_request", detail=BAD_TEXT)
    if len({value.strip().lower() for value in parsed.getlist(spec.ACTION.name)}) > 1:
        raise ApiError("ambiguous_action")
    return pairs


def read_params():
    """All parameters merged (body over query) and the key(s) the body carried, as werkzeug
    parses them (`request.args`, `request.form`) or as JSON. Every text in them is storable
    (serva.params): anything else is `invalid_request` here, once."""
    params = {}
    if request.query_string:
        _utf8(request.query_string, "query string")
        params = nest(_pairs(request.args))
    mimetype = request.mimetype
    if mimetype in _FORM_TYPES:
        if mimetype == _URLENCODED:
            _utf8(request.get_data(cache=True), "form body")
        form = request.form
        params.update(nest(_pairs(form)))
        return params, form.getlist(spec.KEY.name)
    raw = request.get_data(cache=True)
    if not raw.strip():
        return params, []
    try:
        body = load_json(raw)
    except BadText:
        raise ApiError("invalid_request", detail=BAD_TEXT) from None
    except ValueError:
        raise ApiError("invalid_request", detail="the body is neither a form nor JSON") from None
    if not isinstance(body, dict):
        raise ApiError("invalid_request", detail="a JSON body must be an object")
    params.update(body)
    return params, [body[spec.KEY.name]] if spec.KEY.name in body else []


def balance(account, params):
    return {"balance": format_amount(account.balance),
            "currency": current_app.config["CURRENCY"]}


class Encoded:
    """A response body that is JSON already: the endpoint sends these bytes as they are. A
    holder, not a bytes subclass, which would copy the ~100 KB catalog on every request."""

    __slots__ = ("body",)

    def __init__(self, body: bytes):
        self.body = body


def cached_catalog(account, params):
    """Every active service at the caller's rate, from the rendered catalog (serva.catalog)."""
    return Encoded(catalog_cache.response_body(account))


# The examples are one session against the demo data (`serva demo`), in this order; the
# public page (GET /api) shows them and tests/test_api_page.py runs every one as shown.
_FOLLOWERS = {"service": "1234", "link": "https://example.com/post/1", "quantity": 1000}
_TOP_UP = {"service": "7788", "fields": {"player_id": "123456789", "server_id": "55"}}
_DRIP_FEED = {"service": "1234", "link": "https://example.com/post/2", "quantity": 100,
              "runs": 3, "interval": 60}


def _status(charge, status, remains, start_count=None):
    return lambda page: {"charge": charge, "start_count": start_count, "status": status,
                         "remains": remains, "currency": page["currency"]}


# The dispatch table: every action, the parameters it reads, what it reads with the key
# (`lookup`) and its examples. The endpoint dispatches from it, the public page renders it.
ACTIONS = {
    "balance": Action(
        balance, "The balance of the key's account.",
        examples=(Example({}, lambda page: {"balance": "100", "currency": page["currency"]}),)),
    "services": Action(
        cached_catalog,
        "Every active service: its id, name, category, type, your rate per 1000 units (after "
        "your discount or custom rate), the quantity bounds, the manual fields it needs, and "
        "whether refill, cancel and drip-feed work for it.",
        examples=(Example({}, lambda page: page["services"][:1],
                          note="The first entry; the list has one per active service."),),
        lookup=catalog_cache.lookup),
    "add": Action(
        orders.add_action,
        "Places an order: checks everything, then charges the balance and records the order "
        "in one transaction (all of it happens or none). Returns the order id, the charge and "
        "the new balance.",
        params=(spec.SERVICE, spec.LINK, spec.QUANTITY, spec.FIELDS, spec.COMMENTS, spec.RUNS,
                spec.INTERVAL, spec.COUPON, spec.IDEMPOTENCY_KEY),
        examples=(
            Example(_FOLLOWERS, lambda page: {"order": "ORD-100001", "charge": "0.89",
                                              "currency": page["currency"], "balance": "99.11"},
                    note="A link service."),
            Example(_TOP_UP, lambda page: {"order": "ORD-100002", "charge": "0.2",
                                           "currency": page["currency"], "balance": "98.91"},
                    note="A top-up pack with manual fields: the service sets the quantity."),
            Example(_DRIP_FEED, lambda page: {"order": "ORD-100003", "charge": "0.267",
                                              "currency": page["currency"], "balance": "98.643"},
                    note="Drip-feed: 3 runs of 100, an hour apart, charged for 300."),
        ),
        lookup=orders.add_lookup,
        extra=("The same account repeating the same service, target and quantity within a few "
               "minutes gets `duplicate_target`; an active order for the same service and target "
               "gets `active_order_exists`.",)),
    "status": Action(
        orders.status_action,
        "The status of one order (`order`) or of up to 100 (`orders`): what was charged after "
        "refunds, the start count, the status and the remains (a drip-feed order adds `runs` "
        "and `runs_done`). Statuses: Pending, In progress, Processing, Completed, Partial (the "
        "undelivered part refunded), Canceled (refunded).",
        params=(spec.ORDER, spec.ORDERS),
        examples=(
            Example({"order": "ORD-100001"}, _status("0.89", "In progress", 450, 1200),
                    note="After the order started: 550 of the 1000 delivered so far.",
                    setup=(("order", "set-status", "ORD-100001", "In progress",
                            "--start-count", "1200", "--remains", "450"),)),
            Example({"orders": "ORD-100001,100003,ORD-999999"},
                    lambda page: {"ORD-100001": _status("0.89", "In progress", 450, 1200)(page),
                                  "100003": {**_status("0.267", "Pending", 300)(page),
                                             "runs": 3, "runs_done": 0},
                                  "ORD-999999": {"error": ApiError("order_not_found").message}},
                    note="Several at once, keyed by each id as sent."),
        ),
        lookup=orders.status_lookup),
    "refill": Action(
        refills.refill_action,
        "Asks for a refill of one order (`order`) or of up to 100 (`orders`): for a service "
        "with refill, an order Completed or Partial within the service's refill window, and "
        "no refill of it still pending. Returns the refill id to follow with `refill_status`.",
        params=(spec.ORDER, spec.ORDERS),
        examples=(
            Example({"order": "ORD-100001"}, {"refill": "REF-5001"},
                    note="After the order completed.",
                    setup=(("order", "set-status", "ORD-100001", "Completed"),)),
            Example({"orders": "ORD-100001,ORD-100002"},
                    [{"order": "ORD-100001", "refill": "REF-5002"},
                     {"order": "ORD-100002", "refill": {"error": ApiError(
                         "refill_not_available", reason="the service has no refill").message}}],
                    note="A list in the order sent; the first refill was done meanwhile.",
                    setup=(("refill", "set-status", "REF-5001", "Completed"),)),
        )),
    "refill_status": Action(
        refills.refill_status_action,
        "The status of one refill (`refill`) or of up to 100 (`refills`): Pending, In progress, "
        "Completed or Rejected.",
        params=(spec.REFILL, spec.REFILLS),
        examples=(
            Example({"refill": "REF-5001"}, {"status": "Completed"}),
            Example({"refills": "REF-5001,5002,REF-9999"},
                    [{"refill": "REF-5001", "status": "Completed"},
                     {"refill": "5002", "status": "Pending"},
                     {"refill": "REF-9999", "status": {"error": ApiError("refill_not_found").message}}],
                    note="A list in the order sent."),
        )),
    "cancel": Action(
        refills.cancel_action,
        "Asks to cancel one order (`order`) or up to 100 (`orders`) of a service with cancel "
        "that are still active. `1` means the request was accepted, not that the order is "
        "canceled: the outcome shows in `status`, and the money comes back with a Canceled or "
        "Partial outcome.",
        params=(spec.ORDER, spec.ORDERS),
        examples=(
            Example({"order": "ORD-100003"}, {"cancel": 1},
                    note="Once the order is with its provider, the cancel goes there too; an "
                         "order not handed over yet is Canceled and refunded at once.",
                    setup=(("worker", "--once"),)),
            Example({"orders": "ORD-100003,ORD-100002"},
                    [{"order": "ORD-100003", "cancel": 1},
                     {"order": "ORD-100002",
                      "cancel": {"error": ApiError("cancel_not_available").message}}],
                    note="A list in the order sent."),
        )),
}


# Keys that open nothing: counted per client address (SERVA_RATE_LIMIT_INVALID_KEYS).
FAILED_AUTHENTICATION = frozenset({"invalid_key", "key_revoked"})


def endpoint():
    try:
        params, body_keys = read_params()
        action = params.get(spec.ACTION.name)
        name = action.strip().lower() if isinstance(action, str) else None
        entry = ACTIONS.get(name)
        lookup = entry.lookup if entry is not None else None
        try:
            account = authenticate(body_keys, *(lookup(params) or ()) if lookup else ())
        except ApiError as error:
            if error.code in FAILED_AUTHENTICATION:
                ratelimit.count_failed_authentication()
            raise
        ratelimit.count_key(account.key_id)
        if entry is None:
            raise ApiError("unknown_action")
        result = entry.handler(account, params)
        if isinstance(result, Encoded):
            return Response(result.body, content_type=_JSON)
        return json_response(result)
    except ApiError as error:
        return error_response(error)


# No automatic OPTIONS (its empty text/html answer would break "every response is JSON": it
# gets the JSON 405) and no redirect for doubled slashes (a JSON 404 instead of an HTML 308).
for _path in API_ENDPOINTS:
    bp.add_url_rule(_path, view_func=endpoint, methods=["GET", "POST"], strict_slashes=False,
                    merge_slashes=False, provide_automatic_options=False)
