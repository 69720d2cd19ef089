"""Reading an `add`: everything about the order that can be checked before the write lock, in
the order a partner fixes things, and what `add` reads with the key (`add_lookup`)."""
import hashlib
import json
import re
from collections import namedtuple
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import Integer, and_, bindparam

from .. import db, keys, services
from ..errors import ApiError
from ..ids import MAX_ID, parse_service
from ..params import BadText, load_json, parse_digits, whole_number
from ..schema import accounts, service_rates, services as services_table
from ..spec import COUPON, FIELDS, INTERVAL, LINK, QUANTITY, RUNS, SERVICE

MAX_LINK_LENGTH = 2048
MAX_FIELD_LENGTH = 255
MAX_LINES_LENGTH = 100_000
DEFAULT_PORTS = {"http": 80, "https": 443}
MIN_RUNS, MAX_RUNS = 2, 1000  # drip-feed (CONTRACT.md: add)
MIN_INTERVAL, MAX_INTERVAL = 1, 1440  # minutes between runs
@dataclass
class OrderRequest:
    service: object
    rate: int
    target: str
    target_key: str
    quantity: int  # the total: per-run quantity x runs
    inputs: dict
    coupon_code: str | None
    runs: int | None = None  # drip-feed: None for an ordinary order
    interval: int | None = None

    def inputs_json(self) -> str | None:
        """The manual fields as the order row keeps them."""
        return json.dumps(self.inputs) if self.inputs else None

    def fingerprint(self) -> str:
        """What makes two requests 'the same' for an idempotency key."""
        parts = [self.service.id, self.target_key, self.quantity, self.inputs, self.coupon_code]
        if self.runs is not None:  # ordinary orders keep the fingerprint they always had
            parts += [self.runs, self.interval]
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------- input

def _text(value, what: str, limit: int) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ApiError("invalid_fields", detail=f"{what} must be text")
    value = str(value).strip()
    if len(value) > limit:
        raise ApiError("invalid_fields", detail=f"{what} is longer than {limit} characters")
    return value


# str.isspace() or below U+0020, the same set character for character (`\s` of a str
# pattern is Py_UNICODE_ISSPACE).
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f]")


def normalize_link(value) -> str:
    """The link as the guard compares it: scheme and host lower-cased, default port, fragment
    and trailing slash dropped. Anything but an absolute http(s) URL is `invalid_link`."""
    if not isinstance(value, str):
        raise ApiError("invalid_link")
    value = value.strip()
    if not value or len(value) > MAX_LINK_LENGTH or _SPACE_OR_CONTROL.search(value):
        raise ApiError("invalid_link")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ApiError("invalid_link") from None
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if scheme not in DEFAULT_PORTS or not host or "." not in host.strip("[]") and host != "localhost":
        raise ApiError("invalid_link")
    netloc = host if ":" not in host else f"[{host}]"
    if port is not None and port != DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    path = parts.path.rstrip("/")
    return f"{scheme}://{netloc}{path}" + (f"?{parts.query}" if parts.query else "")


def parse_inputs(raw) -> dict:
    """fields/inputs/custom_fields: an object, a list of {name, value}, or either as JSON text."""
    if raw is None:
        return {}
    if isinstance(raw, str):
        if not raw.strip():
            return {}
        try:
            raw = load_json(raw)
        except BadText as error:
            raise ApiError("invalid_fields", detail=str(error)) from None
        except ValueError:
            raise ApiError("invalid_fields", detail="not a JSON object or list") from None
    if isinstance(raw, list):
        pairs = {}
        for item in raw:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str) or "value" not in item:
                raise ApiError("invalid_fields", detail="list items need a name and a value")
            pairs[item["name"]] = item["value"]
        raw = pairs
    if not isinstance(raw, dict):
        raise ApiError("invalid_fields", detail="not a JSON object or list")
    return raw


def _quantity(value) -> int:
    quantity = parse_digits(value, max_digits=12)
    if quantity is None:
        raise ApiError("invalid_quantity")
    return quantity


def _bounded(value, low: int, high: int, error: str) -> int:
    """A whole number low..high given as text or a JSON integer, else ApiError(error)."""
    number = parse_digits(value, max_digits=12)
    if number is None or not low <= number <= high:
        raise ApiError(error)
    return number


def parse_dripfeed(params, service):
    """(runs, interval) of a drip-feed `add`, or (None, None) for an ordinary order. `runs`
    above 1 on a service without drip-feed is refused, never dropped."""
    raw_runs = RUNS.get(params)
    if raw_runs is None:
        return None, None
    runs = whole_number(raw_runs, RUNS.name)
    if runs == 1:
        return None, None  # one run is an ordinary order
    if not service.dripfeed:
        raise ApiError("dripfeed_not_available")
    runs = _bounded(runs, MIN_RUNS, MAX_RUNS, "invalid_runs")
    raw_interval = INTERVAL.get(params)
    if raw_interval is None:
        raise ApiError("missing_parameter", name=INTERVAL.name)
    interval = whole_number(raw_interval, INTERVAL.name)
    return runs, _bounded(interval, MIN_INTERVAL, MAX_INTERVAL, "invalid_interval")


def _check_bounds(quantity: int, service) -> None:
    if quantity < service.min_quantity:
        raise ApiError("quantity_below_min", min=service.min_quantity)
    if quantity > service.max_quantity:
        raise ApiError("quantity_above_max", max=service.max_quantity)


def _target_key(service_id: int, target: str) -> str:
    return hashlib.sha256(f"{service_id}\n{target}".encode()).hexdigest()


def parse_add(account, params) -> OrderRequest:
    """Everything `add` can check without the write lock, in the order a partner fixes things."""
    raw_service = SERVICE.get(params)
    if raw_service is None:
        raise ApiError("missing_parameter", name=SERVICE.name)
    service_id = parse_service(raw_service)
    service = None
    if service_id and getattr(account, "svc_lookup", None) == service_id:  # read with the key
        if account.svc_id is not None:
            service = ServiceRow._make(getattr(account, name) for name in _SERVICE_ROW_COLUMNS)
    elif service_id:
        with db.read() as conn:
            service = services.one_for_account(conn, account.account_id, service_id)
    if service is None:
        raise ApiError("service_unavailable")
    specs = services.field_specs(service)
    by_name = {spec["name"]: spec for spec in specs}
    lines_spec = next((s for s in specs if s.get("lines")), None)

    given = parse_inputs(FIELDS.get(params))
    if lines_spec and lines_spec["name"] not in given and params.get(lines_spec["name"]) is not None:
        given[lines_spec["name"]] = params[lines_spec["name"]]  # e.g. the ecosystem's `comments`
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        raise ApiError("invalid_fields", detail=f"unknown field {', '.join(map(str, unknown))}")
    inputs = {}
    for name, spec in by_name.items():
        limit = MAX_LINES_LENGTH if spec.get("lines") else MAX_FIELD_LENGTH
        value = _text(given[name], name, limit) if name in given else ""
        if not value and spec["required"]:
            raise ApiError("invalid_fields", detail=f"missing required field {name}")
        if value:
            inputs[name] = value

    if service.kind == "fields":
        target = "; ".join(f"{name}={inputs[name]}" for name in sorted(inputs)
                           if not by_name[name].get("lines"))
        # The guard compares the canonical form of every value (a bulk list included, one
        # entry per non-empty line), unambiguously: the displayed target is only for people.
        target_source = json.dumps({name: "\n".join(line.strip() for line in value.splitlines()
                                                    if line.strip())
                                    if by_name[name].get("lines") else value
                                    for name, value in inputs.items()}, sort_keys=True)
    else:
        link = LINK.get(params)
        if link is None:
            raise ApiError("missing_parameter", name=LINK.name)
        target = target_source = normalize_link(link)

    raw_quantity = QUANTITY.get(params)
    if service.fixed_quantity is not None:  # a pack: the service says how many
        quantity = service.fixed_quantity
        if raw_quantity is not None and _quantity(raw_quantity) != quantity:
            raise ApiError("invalid_quantity")
    elif lines_spec is not None:
        quantity = sum(1 for line in inputs.get(lines_spec["name"], "").splitlines() if line.strip())
        if raw_quantity is not None and _quantity(raw_quantity) != quantity:
            raise ApiError("invalid_quantity")
    elif service.kind == "package":
        quantity = 1
        if raw_quantity is not None and _quantity(raw_quantity) != 1:
            raise ApiError("invalid_quantity")
    else:
        if raw_quantity is None:
            raise ApiError("missing_parameter", name=QUANTITY.name)
        quantity = _quantity(raw_quantity)
    _check_bounds(quantity, service)
    runs, interval = parse_dripfeed(params, service)
    if runs is not None:
        quantity *= runs  # orders keep the total; each run delivers quantity / runs
        if quantity > MAX_ID:
            raise ApiError("invalid_quantity")

    coupon_code = COUPON.get(params)
    if coupon_code is not None and not isinstance(coupon_code, str):
        raise ApiError("invalid_coupon")
    return OrderRequest(
        service=service, quantity=quantity, inputs=inputs, target=target,
        target_key=_target_key(service.id, target_source),
        rate=services.effective_rate(service.rate, service.custom_rate, account.discount_bp),
        coupon_code=coupon_code.strip() if coupon_code else None, runs=runs, interval=interval)


# `add` reads the service with the key: one statement (see keys.resolve_select).
_SERVICE_FIELDS = ("id", "name", "category", "type", "kind", "rate", "min_quantity",
                   "max_quantity", "fields_json", "dripfeed", "fixed_quantity",
                   "provider_id", "custom_rate")
_SERVICE_ROW_COLUMNS = tuple(f"svc_{name}" for name in _SERVICE_FIELDS)
ServiceRow = namedtuple("ServiceRow", _SERVICE_FIELDS)


def _add_lookup_select():
    svc, rates = services_table, service_rates
    columns = [bindparam("service_id", type_=Integer).label("svc_lookup")]
    columns += [getattr(svc.c, name).label(f"svc_{name}") for name in _SERVICE_FIELDS[:-1]]
    columns.append(rates.c.rate.label("svc_custom_rate"))
    joined = (keys.AUTH_FROM
              .outerjoin(svc, and_(svc.c.id == bindparam("service_id"), svc.c.active.is_(True)))
              .outerjoin(rates, and_(rates.c.service_id == svc.c.id,
                                     rates.c.account_id == accounts.c.id)))
    return keys.resolve_select(*columns, from_=joined)


_ADD_LOOKUP = db.Lookup(_add_lookup_select())


def add_lookup(params):
    """What `add` reads with the key: the service (active, with the account's custom rate)."""
    service_id = parse_service(params.get(SERVICE.name))
    if not service_id:
        return None
    return _ADD_LOOKUP, {"service_id": service_id}
