"""Orders: the `add` purchase pipeline and `status`, plus the operator's status changes.

`add` validates everything it can before taking the write lock, then runs one transaction
(BEGIN IMMEDIATE on SQLite): idempotency replay, purchase guard, coupon, charge, order row,
ledger row. The database has the last word on every rule that money or duplicates depend on:
the guard's upsert, the partial unique index on active orders, the conditional balance UPDATE
and the coupon's conditional use count. On PostgreSQL an order without coupon or idempotency
key is one call of the function serva_place_order (serva/schema.py), the same rules in one
statement and its own transaction: `_place_in_one_call`."""
import hashlib
import json
import re
from collections import namedtuple
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import current_app, g, request
from sqlalchemy import Integer, and_, bindparam, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from . import coupons, db, keys, ledger, request_id, services
from .errors import ApiError
from .ids import (MAX_ID, ORDER_NUMBER_BASE, ORDER_PREFIX, format_order_id, numeric_ids,
                  parse_order, parse_service, present_order)
from .money import MAX_AMOUNT, div_half_up, format_amount
from .params import BadText, load_json, parse_digits, requested_ids, whole_number
from .schema import (ACTIVE_STATUSES, FINAL_STATUSES, ORDER_STATUSES, accounts, dispatches,
                     idempotency_keys, orders, purchase_guards, service_rates,
                     services as services_table)
from .spec import (COUPON, FIELDS, IDEMPOTENCY_KEY, INTERVAL, LINK, ORDER, ORDERS, QUANTITY, RUNS,
                   SERVICE)

MAX_BATCH = 100
MAX_LINK_LENGTH = 2048
MAX_FIELD_LENGTH = 255
MAX_LINES_LENGTH = 100_000
REFUNDED_STATUSES = ("Partial", "Canceled")
DEFAULT_PORTS = {"http": 80, "https": 443}
MIN_RUNS, MAX_RUNS = 2, 1000  # drip-feed (docs/CONTRACT.md: add)
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
# pattern is Py_UNICODE_ISSPACE); one C scan instead of a generator over the link.
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
        with db.fast_read() as conn:
            service = conn.first(_SERVICE_FOR_ACCOUNT, {"service_id": service_id,
                                                        "account_id": account.account_id})
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


_ADD_LOOKUP = db.Statement(_add_lookup_select())


def add_lookup(params):
    """What `add` reads with the key: the service (active, with the account's custom rate)."""
    service_id = parse_service(params.get(SERVICE.name))
    if not service_id:
        return None
    return _ADD_LOOKUP, {"service_id": service_id}


def billable_units(service, quantity: int, runs: int | None = None) -> int:
    """A package's rate is its price (per run); every other rate is per 1000 units of the
    total quantity."""
    return 1000 * (runs or 1) if service.kind == "package" else quantity


# ---------------------------------------------------------------- the pipeline

def _idempotency_key(params):
    # The header as werkzeug's request.headers gives it, read from the WSGI environ.
    value = (request._get_current_object().environ.get("HTTP_IDEMPOTENCY_KEY")
             or params.get(IDEMPOTENCY_KEY.name))
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 255:
        raise ApiError("invalid_request", detail="an idempotency key is text of at most 255 characters")
    return value


def add_action(account, params):
    idem_key = _idempotency_key(params)
    return place(account.account_id, parse_add(account, params), idem_key, numeric_ids(account))


def place(account_id: int, req: OrderRequest, idem_key: str | None, numeric: bool) -> dict:
    """Place the order; the response shows its id in the account's format (`numeric`)."""
    config = current_app._get_current_object().config
    stamp = db.now()
    rid = request_id()  # read here: the grouped work may run in another request's thread
    engine = db.get_engine()
    if engine.dialect.name == "postgresql" and idem_key is None and not req.coupon_code:
        return _place_in_one_call(engine, account_id, req, numeric, stamp, rid)
    fingerprint = req.fingerprint() if idem_key else None

    def work(conn):  # one transaction; on SQLite grouped with other threads' orders
        fast = db.fast(conn)  # the same transaction, without SQLAlchemy's per-statement cost
        if conn.dialect.name != "sqlite":
            # SQLite's BEGIN IMMEDIATE serializes all writers; elsewhere one account's orders
            # queue on its row, so the idempotency, guard and coupon checks see each other.
            conn.execute(select(accounts.c.id).where(accounts.c.id == account_id).with_for_update())
        if idem_key is not None:
            replay = _replay(conn, account_id, idem_key, fingerprint, stamp)
            if replay is not None:  # the first response, its order id in today's format
                return {**replay, "order": format_order_id(parse_order(replay["order"]), numeric)}
        _guard(fast, account_id, req, stamp + config["GUARD_WINDOW_SECONDS"], stamp)
        coupon = None
        units = billable_units(req.service, req.quantity, req.runs)
        if req.coupon_code:
            base, _ = coupons.price(req.rate, units, None)
            coupon = coupons.applicable(conn, req.coupon_code, account_id, req.service, base, stamp)
        charge, discount = coupons.price(req.rate, units, coupon)
        if charge > MAX_AMOUNT:  # no balance can cover it, and it would not fit the column
            raise ApiError("insufficient_balance")
        try:
            order_id = fast.insert(_INSERT_ORDER_FAST, {
                "account_id": account_id, "service_id": req.service.id, "target": req.target,
                "target_key": req.target_key, "quantity": req.quantity,
                "inputs_json": req.inputs_json(),
                "charge": charge, "remains": req.quantity,
                "coupon_id": coupon.id if coupon else None, "runs": req.runs,
                "interval_minutes": req.interval, "runs_done": 0 if req.runs else None,
                "provider_id": req.service.provider_id, "request_id": rid, "stamp": stamp})
        except (IntegrityError, conn.dialect.dbapi.IntegrityError):
            # The partial unique index: an active order for this service and target exists.
            # Raising rolls back the guard row written above, so nothing is left behind.
            raise ApiError("active_order_exists") from None
        if req.service.provider_id is not None:
            # The outbox: the hand-over commits with the charge, or neither does.
            fast.execute(_INSERT_DISPATCH_FAST, {"order_id": order_id, "stamp": stamp})
        if coupon is not None:
            coupons.redeem(conn, coupon, account_id, order_id, discount)
        try:
            balance = ledger.post_fast(fast, account_id, -charge, "charge",
                                       f"order {present_order(order_id)}", order_id, rid)
        except ledger.InsufficientFunds:
            raise ApiError("insufficient_balance") from None
        response = _answer(order_id, charge, balance, numeric, config["CURRENCY"])
        if idem_key is not None:
            _remember(conn, account_id, idem_key, fingerprint, response,
                      stamp + config["IDEMPOTENCY_TTL_SECONDS"])
        return response

    return db.write_grouped(work, repeatable=True)  # it only reads and writes the database


# PostgreSQL: the function serva_place_order (serva/schema.py) decides and writes everything
# `work` does for an order without coupon or idempotency key, in one statement.
_PLACE_CALL = db.Statement(text(
    "SELECT placed_id, new_balance FROM serva_place_order("
    "CAST(:account_id AS INTEGER), CAST(:service_id AS INTEGER), CAST(:target AS TEXT), "
    "CAST(:target_key AS VARCHAR), CAST(:quantity AS INTEGER), CAST(:inputs_json AS TEXT), "
    "CAST(:charge AS BIGINT), CAST(:runs AS INTEGER), CAST(:interval_minutes AS INTEGER), "
    "CAST(:provider_id AS INTEGER), CAST(:request_id AS VARCHAR), CAST(:stamp AS BIGINT), "
    "CAST(:guard_expires_at AS BIGINT), CAST(:note_prefix AS VARCHAR), "
    "CAST(:number_base AS INTEGER))"))
REFUSED = "SV000"  # the function's SQLSTATE for a refusal; the message is the API error code


def _place_in_one_call(engine, account_id, req, numeric, stamp, rid):
    """`place` on PostgreSQL for an order without coupon or idempotency key (those keep the
    multi-statement transaction of `work`): one call of serva_place_order in autocommit on the
    thread's connection (`db.one_call`: one round trip, never retried), so the call is the whole
    transaction and the account's row lock is held for its statements and
    the commit, never across a round trip. Same rules, same answers as `work`."""
    config = current_app._get_current_object().config
    charge, _ = coupons.price(req.rate, billable_units(req.service, req.quantity, req.runs), None)
    params = {"account_id": account_id, "service_id": req.service.id, "target": req.target,
              "target_key": req.target_key, "quantity": req.quantity,
              "inputs_json": req.inputs_json(),
              # above MAX_AMOUNT no balance can cover it (nor would it fit the column)
              "charge": charge if charge <= MAX_AMOUNT else None,
              "runs": req.runs, "interval_minutes": req.interval,
              "provider_id": req.service.provider_id, "request_id": rid, "stamp": stamp,
              "guard_expires_at": stamp + config["GUARD_WINDOW_SECONDS"],
              "note_prefix": f"order {ORDER_PREFIX}", "number_base": ORDER_NUMBER_BASE}
    with db.one_call(engine) as conn:
        try:
            row = conn.first(_PLACE_CALL, params)
        except engine.dialect.dbapi.Error as error:
            if getattr(error, "sqlstate", None) == REFUSED:
                raise ApiError(error.diag.message_primary) from None
            if (getattr(error, "sqlstate", None) == "23505"
                    and error.diag.constraint_name == "uq_orders_one_active_per_target"):
                raise ApiError("active_order_exists") from None
            raise
    return _answer(row.placed_id, charge, row.new_balance, numeric, config["CURRENCY"])


def _answer(order_id, charge, balance, numeric, currency) -> dict:
    """`add`'s answer, whichever path placed the order."""
    return {"order": format_order_id(order_id, numeric), "charge": format_amount(charge),
            "currency": currency, "balance": format_amount(balance)}


_INSERT_ORDER = insert(orders).values(
    account_id=bindparam("account_id"), service_id=bindparam("service_id"),
    target=bindparam("target"), target_key=bindparam("target_key"),
    quantity=bindparam("quantity"), inputs_json=bindparam("inputs_json"),
    charge=bindparam("charge"), remains=bindparam("remains"), coupon_id=bindparam("coupon_id"),
    runs=bindparam("runs"), interval_minutes=bindparam("interval_minutes"),
    runs_done=bindparam("runs_done"), request_id=bindparam("request_id"),
    provider_id=bindparam("provider_id"),
    status="Pending", created_at=bindparam("stamp"), updated_at=bindparam("stamp"))
_INSERT_ORDER_FAST = db.Statement.per_dialect(
    lambda dialect_name: db.returning_id(dialect_name, _INSERT_ORDER, orders.c.id))
_INSERT_DISPATCH_FAST = db.Statement(insert(dispatches).values(
    order_id=bindparam("order_id"), kind="add", state="due", attempts=0,
    due_at=bindparam("stamp"), created_at=bindparam("stamp"), updated_at=bindparam("stamp")))
_SERVICE_FOR_ACCOUNT = db.Statement(services._ONE_FOR_ACCOUNT)


def _guard_statement(dialect_name):
    stmt = db.upsert(dialect_name, purchase_guards).values(
        account_id=bindparam("account_id"), service_id=bindparam("service_id"),
        target_key=bindparam("target_key"), quantity=bindparam("quantity"),
        expires_at=bindparam("expires_at"))
    return stmt.on_conflict_do_update(
        index_elements=["account_id", "service_id", "target_key", "quantity"],
        set_={"expires_at": stmt.excluded.expires_at},
        where=purchase_guards.c.expires_at <= bindparam("stamp"))


_GUARD = db.Statement.per_dialect(_guard_statement)


def _guard(fast, account_id, req, expires_at, stamp):
    """`duplicate_target`: the same account, service, target and quantity inside the window.
    One upsert decides: it refreshes an expired guard row or inserts a new one, and matches
    nothing when an unexpired one stands."""
    if not fast.execute(_GUARD, {"account_id": account_id, "service_id": req.service.id,
                                 "target_key": req.target_key, "quantity": req.quantity,
                                 "expires_at": expires_at, "stamp": stamp}):
        raise ApiError("duplicate_target")  # the upsert changed no row


def _replay(conn, account_id, key, fingerprint, stamp):
    row = conn.execute(select(idempotency_keys.c.request_hash, idempotency_keys.c.response_json)
                       .where(idempotency_keys.c.account_id == account_id,
                              idempotency_keys.c.key == key,
                              idempotency_keys.c.expires_at > stamp)).first()
    if row is None:
        return None
    if row.request_hash != fingerprint:
        raise ApiError("idempotency_conflict")
    return json.loads(row.response_json)


def _remember(conn, account_id, key, fingerprint, response, expires_at):
    stmt = db.upsert(conn.dialect.name, idempotency_keys).values(
        account_id=account_id, key=key, request_hash=fingerprint,
        response_json=json.dumps(response), expires_at=expires_at)
    conn.execute(stmt.on_conflict_do_update(
        index_elements=["account_id", "key"],
        set_={c: getattr(stmt.excluded, c) for c in ("request_hash", "response_json", "expires_at")}))


# ---------------------------------------------------------------- status

_STATUS_COLUMNS = (orders.c.id, orders.c.charge, orders.c.refunded, orders.c.status,
                   orders.c.start_count, orders.c.remains, orders.c.runs, orders.c.runs_done)
_BATCH = (select(*_STATUS_COLUMNS)
          .where(orders.c.account_id == bindparam("account_id"),
                 orders.c.id.in_(bindparam("ids", expanding=True))))


_BATCH_BY_LENGTH = {}  # n -> the batch query for n ids (one compiled statement per length)


def _batch_statement(n: int):
    statement = _BATCH_BY_LENGTH.get(n)
    if statement is None:
        statement = _BATCH_BY_LENGTH[n] = db.Statement(
            select(*_STATUS_COLUMNS).where(orders.c.account_id == bindparam("account_id"),
                                           orders.c.id.in_([bindparam(f"id{i}") for i in range(n)])),
            held=n == 1)
    return statement


def _aggregated(dialect_name):
    """The status columns of many orders as one JSON array value (one row to fetch, whatever
    the number of orders: each row SQLite hands over is a round trip through the driver)."""
    if dialect_name == "postgresql":
        return func.json_agg(func.json_build_array(*_STATUS_COLUMNS))
    return func.json_group_array(func.json_array(*_STATUS_COLUMNS))


_STATUS_LOOKUP_BY_LENGTH = {}


def _status_lookup_statement(n: int):
    statement = _STATUS_LOOKUP_BY_LENGTH.get(n)
    if statement is None:
        def build(dialect_name):
            found = (select(_aggregated(dialect_name))
                     .where(orders.c.account_id == accounts.c.id,
                            orders.c.id.in_([bindparam(f"id{i}") for i in range(n)]))
                     .scalar_subquery())
            return keys.resolve_select(found.label("orders_json"))
        statement = _STATUS_LOOKUP_BY_LENGTH[n] = db.Statement.per_dialect(build, held=n == 1)
    return statement


def _requested(params):
    """(ids as sent, is_batch, their order ids) of a status request, or the ApiError that says
    why it is malformed (status_action raises it). Kept for the request in `g`, so
    status_action does not parse the ids a second time."""
    kept = g._get_current_object()  # once, not through the proxy twice (db.get_engine)
    known = kept.get("serva_status")
    if known is not None and known[0] is params:
        return known[1]
    try:
        tokens, is_batch = requested_ids(params, ORDER, ORDERS, MAX_BATCH)
        requested = tokens, is_batch, [parse_order(token) for token in tokens]
    except ApiError as error:
        requested = error
    kept.serva_status = (params, requested)
    return requested


def status_lookup(params):
    """What `status` reads with the key: the requested orders of the key's account."""
    requested = _requested(params)
    if isinstance(requested, ApiError):
        return None
    ids = sorted({i for i in requested[2] if i is not None})
    if not ids:
        return None
    return _status_lookup_statement(len(ids)), {f"id{i}": order_id for i, order_id in enumerate(ids)}


def _found(account, order_ids) -> dict:
    """The account's orders among these ids: from the key lookup's row when it brought them."""
    value = getattr(account, "orders_json", False)
    if value is False:
        return _find(account.account_id, order_ids)
    if isinstance(value, (str, bytes)):
        value = json.loads(value)
    return {item[0]: item for item in value or ()}  # lists in _STATUS_COLUMNS' order


def status_entry(row, currency=None) -> dict:
    """One order's status answer from its _STATUS_COLUMNS (a row, or the list the key lookup's
    JSON brought: unpacked by position, no row object made for each of up to 100 orders)."""
    _, charge, refunded, status, start_count, remains, runs, runs_done = row
    entry = {"charge": format_amount(charge - refunded), "start_count": start_count,
             "status": status, "remains": remains,
             "currency": currency or current_app._get_current_object().config["CURRENCY"]}
    if runs is not None:  # a drip-feed order
        entry["runs"] = runs
        entry["runs_done"] = runs_done
    return entry


def _find(account_id, order_ids):
    """The account's orders among these ids, in one indexed query (account_id, id)."""
    ids = sorted({i for i in order_ids if i is not None})
    if not ids:
        return {}
    params = {f"id{i}": order_id for i, order_id in enumerate(ids)}
    params["account_id"] = account_id
    with db.fast_read() as conn:
        rows = conn.all(_batch_statement(len(ids)), params)
    return {row.id: row for row in rows}


def status_action(account, params):
    requested = _requested(params)
    if isinstance(requested, ApiError):
        raise requested
    tokens, is_batch, order_ids = requested
    found = _found(account, order_ids)
    if is_batch:
        missing = ApiError("order_not_found").message
        currency = current_app._get_current_object().config["CURRENCY"]
        return {token: status_entry(found[order_id], currency) if order_id in found
                else {"error": missing} for token, order_id in zip(tokens, order_ids)}
    row = found.get(order_ids[0])
    if row is None:
        raise ApiError("order_not_found")
    return status_entry(row)


# ---------------------------------------------------------------- operator

class OrderError(ValueError):
    pass


def set_status(conn, order_id: int, status: str, start_count=None, remains=None,
               runs_done=None) -> int:
    """Move an order to `status`; a Partial or Canceled order refunds through the ledger exactly
    once (the UPDATE only matches an order not refunded yet). Returns the refund. Becoming
    final stamps `completed_at` (a refill's window counts from it)."""
    if status not in ORDER_STATUSES:
        raise OrderError(f"status must be one of: {', '.join(ORDER_STATUSES)}")
    order = conn.execute(select(orders).where(orders.c.id == order_id)).first()
    if order is None:
        raise OrderError(f"no order {present_order(order_id)}")
    if order.status in REFUNDED_STATUSES:
        raise OrderError(f"order {present_order(order_id)} is {order.status} and was refunded; "
                         f"its status is final")
    if status == "Partial":
        if remains is None or not 0 < remains < order.quantity:
            raise OrderError("a Partial order needs --remains between 1 and quantity-1")
    elif status == "Canceled":
        remains = order.quantity
    elif status == "Completed" and remains is None:
        remains = 0
    if remains is not None and not 0 <= remains <= order.quantity:
        raise OrderError("remains must be between 0 and the order's quantity")
    if runs_done is not None and order.runs is None:
        raise OrderError(f"order {present_order(order_id)} is not a drip-feed order")
    if runs_done is not None and not 0 <= runs_done <= order.runs:
        raise OrderError(f"runs done must be between 0 and the order's {order.runs} runs")
    if status == "Completed" and runs_done is None and order.runs is not None:
        runs_done = order.runs
    extra = {} if runs_done is None else {"runs_done": runs_done}
    if status not in FINAL_STATUSES:
        return move(conn, order, status, start_count, remains, **extra)
    extra["next_sync_at"] = None  # final: the worker does not poll it again
    # A hand-over still waiting is withdrawn in this transaction (no worker can claim it
    # after); one claimed (in flight) or of unknown outcome makes the move refused by the
    # UPDATE itself, so the provider never places an order refunded here.
    conn.execute(update(dispatches).where(*_handover(order_id, ("due",))).values(
        state="canceled", lease_owner=None, lease_until=None, updated_at=db.now(),
        last_message=f"withdrawn: the operator set {status}"))
    try:
        return move(conn, order, status, start_count, remains,
                    guard=~select(dispatches.c.id).where(*_handover(order_id, IN_FLIGHT)).exists(),
                    **extra)
    except OrderError:
        busy = conn.execute(select(dispatches.c.state)
                            .where(*_handover(order_id, IN_FLIGHT))).scalar()
        if busy == "sending":
            raise OrderError(f"order {present_order(order_id)} is being handed over to its provider "
                             f"right now; wait for the worker's pass to record the answer, then "
                             f"try again") from None
        if busy == "unknown":
            raise OrderError(f"order {present_order(order_id)} was sent to its provider with no "
                             f"answer (outcome unknown); check at the provider and settle it with "
                             f"`serva order resolve {present_order(order_id)}` "
                             f"(--provider-order PID, --resend or --cancel)") from None
        raise


IN_FLIGHT = ("sending", "unknown")  # hand-over states the operator may not overtake


def _handover(order_id, states):
    """Conditions for the order's `add` hand-over in one of `states`."""
    return (dispatches.c.order_id == order_id, dispatches.c.kind == "add",
            dispatches.c.state.in_(states))


def refund_for(order, status: str, remains) -> int:
    """What a final status gives back: Partial the undelivered share (half-up, capped at the
    charge), Canceled everything, anything else nothing."""
    if status == "Partial":
        return min(order.charge, div_half_up(order.charge * remains, order.quantity))
    if status == "Canceled":
        return order.charge
    return 0


def move(conn, order, status: str, start_count=None, remains=None, guard=None, **extra) -> int:
    """The one place an order changes status and is refunded: a conditional UPDATE that only
    matches an order not refunded yet (Partial/Canceled are final), then the refund as a ledger
    row in the same transaction, so a refund happens at most once whoever asks (the operator,
    the worker, two workers at once). Becoming final stamps `completed_at` (a refill's window
    counts from it). `order` needs id, account_id, status, charge and quantity. Returns the
    refund; raises OrderError when the order was refunded meanwhile (or `guard`, a further
    condition of the UPDATE, does not hold)."""
    refund = refund_for(order, status, remains)
    stamp = db.now()
    values = {"status": status, "refunded": refund, "updated_at": stamp, **extra}
    if status not in FINAL_STATUSES:
        values["completed_at"] = None
    elif status != order.status:
        values["completed_at"] = stamp
    if start_count is not None:
        values["start_count"] = start_count
    if remains is not None:
        values["remains"] = remains
    try:
        changed = conn.execute(update(orders)
                               .where(orders.c.id == order.id, orders.c.status.not_in(REFUNDED_STATUSES),
                                      *([] if guard is None else [guard]))
                               .values(**values)).rowcount
    except IntegrityError:  # the partial unique index: one active order per target
        raise OrderError(f"another active order of this account has the same service and target; "
                         f"order {present_order(order.id)} cannot become {status}") from None
    if not changed:
        raise OrderError(f"order {present_order(order.id)} changed meanwhile; try again")
    if refund:
        ledger.post(conn, order.account_id, refund, "refund",
                    f"{status.lower()} order {present_order(order.id)}", order_id=order.id)
    return refund
