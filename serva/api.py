"""The one endpoint, /api/v1: parameters from anywhere, the key resolver, then a dispatch table."""
import json
import re

from flask import Blueprint, Response, current_app, request

from . import db, orders, services
from .auth import authenticate
from .errors import ApiError
from .ids import present_service
from .money import format_amount

bp = Blueprint("api", __name__)

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_BRACKETED = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])+)$")
_PART = re.compile(r"\[([^\[\]]*)\]")
MAX_NESTING = 4


def json_response(payload, status=200) -> Response:
    return Response(json.dumps(payload, separators=(",", ":")), status=status,
                    mimetype="application/json")


def _listify(value):
    """{"0": a, "1": b} -> [a, b], recursively (PHP sends arrays as numbered keys)."""
    if not isinstance(value, dict):
        return value
    value = {k: _listify(v) for k, v in value.items()}
    if value and all(k.isdigit() for k in value) and \
            sorted(int(k) for k in value) == list(range(len(value))):
        return [value[k] for k in sorted(value, key=int)]
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


def read_params():
    """All parameters merged (body over query) and the key(s) the body carried."""
    params = nest(request.args.items(multi=True))
    if request.mimetype in _FORM_TYPES:
        form = request.form
        params.update(nest(form.items(multi=True)))
        return params, form.getlist("key")
    raw = request.get_data(cache=True)
    if not raw.strip():
        return params, []
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError("invalid_request", detail="the body is neither a form nor JSON") from None
    if not isinstance(body, dict):
        raise ApiError("invalid_request", detail="a JSON body must be an object")
    params.update(body)
    return params, [body["key"]] if "key" in body else []


def balance(account, params):
    return {"balance": format_amount(account.balance), "currency": current_app.config["CURRENCY"]}


def service_entry(row, discount_bp: int) -> dict:
    return {
        "service": present_service(row.id),
        "name": row.name,
        "category": row.category,
        "type": row.type,
        "rate": format_amount(services.effective_rate(row.rate, row.custom_rate, discount_bp)),
        "min": row.min_quantity,
        "max": row.max_quantity,
        "fields": services.field_specs(row),
        "refill": bool(row.refill),
        "cancel": bool(row.cancel),
    }


def catalog(account, params):
    with db.read() as conn:
        rows = services.catalog(conn, account.account_id)
    return [service_entry(row, account.discount_bp) for row in rows]


ACTIONS = {
    "balance": balance,
    "services": catalog,
    "add": orders.add_action,
    "status": orders.status_action,
}


@bp.route("/api/v1", methods=["GET", "POST"], strict_slashes=False)
def endpoint():
    try:
        params, body_keys = read_params()
        account = authenticate(body_keys)
        action = params.get("action")
        handler = ACTIONS.get(action.strip().lower()) if isinstance(action, str) else None
        if handler is None:
            raise ApiError("unknown_action")
        return json_response(handler(account, params))
    except ApiError as error:
        return json_response(error.body())
