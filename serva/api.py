"""The one endpoint, /api/v1 (and /api/v2, the same): parameters from anywhere, the key resolver,
then a dispatch table."""
import json
import re
from urllib.parse import parse_qsl

from flask import Blueprint, Response, current_app, request

from . import catalog as catalog_cache, orders, ratelimit, refills
from .auth import authenticate
from .errors import ApiError
from .money import format_amount
from .params import BAD_TEXT, BadText, load_json, parse_digits, storable

bp = Blueprint("api", __name__)

# Every path the endpoint answers (with or without a trailing slash): /api/v2 is the same
# endpoint, for the ecosystem's scripts that append `api/v2` to a domain. The session
# interface reads this too (no cookie session on the API).
API_VERSIONS = ("v1", "v2")
API_ENDPOINTS = tuple(f"/api/{version}" for version in API_VERSIONS)
API_PATHS = frozenset(path + slash for path in API_ENDPOINTS for slash in ("", "/"))

_URLENCODED = "application/x-www-form-urlencoded"
_FORM_TYPES = (_URLENCODED, "multipart/form-data")
_BRACKETED = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])+)$")
_PART = re.compile(r"\[([^\[\]]*)\]")
MAX_NESTING = 4


def json_response(payload, status=200) -> Response:
    return Response(json.dumps(payload, separators=(",", ":")), status=status,
                    mimetype="application/json")


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
        match = _BRACKETED.match(key)
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


def _storable_urlencoded(raw: bytes) -> bool:
    """A url-encoded string decodes to storable text (serva.params) unless it has a NUL: raw
    or as %00. Percent-escapes that are not UTF-8 stay escaped (werkzeug.url_quote), so they
    cannot make a surrogate."""
    return b"\x00" not in raw and b"%00" not in raw


def _urlencoded_items():
    """The pairs of a url-encoded body in the order `request.form.items(multi=True)` gives them
    (grouped by name, names in order of first appearance), parsed exactly as werkzeug parses
    them but without building its form parser, stream wrappers and MultiDict per request."""
    raw = request.get_data(cache=True)
    if not _storable_urlencoded(raw):
        raise ApiError("invalid_request", detail=BAD_TEXT)
    try:
        pairs = parse_qsl(raw.decode(), keep_blank_values=True, errors="werkzeug.url_quote")
    except ValueError:  # say so, rather than read it as an empty form ("API key is required")
        raise ApiError("invalid_request", detail="the form body is not valid UTF-8") from None
    grouped = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    return [(name, value) for name, values in grouped.items() for value in values]


def read_params():
    """All parameters merged (body over query) and the key(s) the body carried. Every text
    in them is storable (serva.params): anything else is `invalid_request` here, once."""
    params = {}
    query = request.query_string
    if query:
        if not _storable_urlencoded(query):
            raise ApiError("invalid_request", detail=BAD_TEXT)
        params = nest(request.args.items(multi=True))
    mimetype = request.mimetype
    if mimetype == _URLENCODED:
        items = _urlencoded_items()
        params.update(nest(items))
        return params, [value for name, value in items if name == "key"]
    if mimetype in _FORM_TYPES:
        form = request.form
        # A part without a name (no `name=` in its Content-Disposition) is werkzeug's None key.
        items = [(name, value) for name, value in form.items(multi=True) if name is not None]
        if not all(storable(name) and storable(value) for name, value in items):
            raise ApiError("invalid_request", detail=BAD_TEXT)
        params.update(nest(items))
        return params, form.getlist("key")
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
    return params, [body["key"]] if "key" in body else []


def balance(account, params):
    return {"balance": format_amount(account.balance), "currency": current_app.config["CURRENCY"]}


class Encoded(bytes):
    """A response body that is JSON already (the endpoint sends it as is)."""


def cached_catalog(account, params):
    """Every active service at the caller's rate, from the rendered catalog (serva.catalog)."""
    return Encoded(catalog_cache.response_body(account))


ACTIONS = {
    "balance": balance,
    "services": cached_catalog,
    "add": orders.add_action,
    "status": orders.status_action,
    "refill": refills.refill_action,
    "refill_status": refills.refill_status_action,
    "cancel": refills.cancel_action,
}

# What an action reads comes with the key lookup, in the same statement: params ->
# (statement, its parameters) or None. Never raises: errors come after authentication.
LOOKUPS = {
    "services": catalog_cache.lookup,
    "add": orders.add_lookup,
    "status": orders.status_lookup,
}


# Keys that open nothing: counted per client address (SERVA_RATE_LIMIT_INVALID_KEYS).
FAILED_AUTHENTICATION = frozenset({"invalid_key", "key_revoked"})


def endpoint():
    try:
        params, body_keys = read_params()
        action = params.get("action")
        name = action.strip().lower() if isinstance(action, str) else None
        handler = ACTIONS.get(name)
        lookup = LOOKUPS.get(name)
        try:
            account = authenticate(body_keys, *(lookup(params) or ()) if lookup else ())
        except ApiError as error:
            if error.code in FAILED_AUTHENTICATION:
                ratelimit.count_failed_authentication()
            raise
        ratelimit.count_key(account.key_id)
        if handler is None:
            raise ApiError("unknown_action")
        result = handler(account, params)
        if isinstance(result, Encoded):
            return Response(result, mimetype="application/json")
        return json_response(result)
    except ApiError as error:
        return error_response(error)


# No automatic OPTIONS (its empty text/html answer would break "every response is JSON": it
# gets the JSON 405) and no redirect for doubled slashes (a JSON 404 instead of an HTML 308).
for _path in API_ENDPOINTS:
    bp.add_url_rule(_path, view_func=endpoint, methods=["GET", "POST"], strict_slashes=False,
                    merge_slashes=False, provide_automatic_options=False)
