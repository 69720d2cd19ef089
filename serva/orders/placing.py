"""Placing an order (`add`), the same function on SQLite and PostgreSQL.

`add` validates everything it can before taking the write lock (serva.orders.parsing), then
runs one transaction (BEGIN IMMEDIATE on SQLite; on PostgreSQL the account's row locked
first when an idempotency key or a coupon is involved, else by the charge): idempotency
replay, purchase guard, coupon, order row, hand-over row, charge. The database has the last
word on every rule that money or duplicates depend on: the guard's upsert, the partial unique
index on active orders, the conditional balance UPDATE (`ledger.post`) and the coupon's
conditional use count."""
import json

from flask import current_app, request
from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from .. import coupons, db, ledger
from ..errors import ApiError
from ..request_ids import request_id
from ..ids import format_order_id, numeric_ids, parse_order, present_order
from ..money import MAX_AMOUNT, format_amount
from ..schema import accounts, dispatches, idempotency_keys, orders, purchase_guards
from ..spec import IDEMPOTENCY_KEY
from .parsing import OrderRequest, parse_add


def _idempotency_key(params):
    value = request.headers.get("Idempotency-Key") or params.get(IDEMPOTENCY_KEY.name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 255:
        raise ApiError("invalid_request", detail="an idempotency key is text of at most 255 characters")
    return value


def add_action(account, params):
    if account.hold_reason is not None:
        # Set only with the balance taken to zero (serva.payments.holds), so an order racing
        # the hold finds no funds either.
        raise ApiError("account_on_hold")
    idem_key = _idempotency_key(params)
    return place(account.account_id, parse_add(account, params), idem_key, numeric_ids(account))


def billable_units(service, quantity: int, runs: int | None = None) -> int:
    """A package's rate is its price (per run); every other rate is per 1000 units of the
    total quantity."""
    return 1000 * (runs or 1) if service.kind == "package" else quantity


def place(account_id: int, req: OrderRequest, idem_key: str | None, numeric: bool) -> dict:
    """Place the order in one transaction; the response shows its id in the account's format
    (`numeric`)."""
    config = current_app.config
    stamp = db.now()
    fingerprint = req.fingerprint() if idem_key else None
    rid = request_id()  # read here: the work may run in another request's thread

    def work(conn):
        if conn.dialect.name != "sqlite" and (idem_key is not None or req.coupon_code):
            # SQLite's BEGIN IMMEDIATE serializes all writers. Elsewhere an order with an
            # idempotency key or a coupon queues on its account's row first, so those checks
            # (each a read before a write) see each other; any other order takes that lock
            # only with its charge, last, its guard and active-order checks being unique
            # indexes the database serializes by itself: one account's orders then wait for
            # each other's charge and commit, not for their whole transactions.
            conn.execute(_LOCK_ACCOUNT, {"account_id": account_id})
        if idem_key is not None:
            replay = _replay(conn, account_id, idem_key, fingerprint, stamp)
            if replay is not None:  # the first response, its order id in today's format
                return {**replay, "order": format_order_id(parse_order(replay["order"]), numeric)}
        _guard(conn, account_id, req, stamp + config["GUARD_WINDOW_SECONDS"], stamp)
        coupon = None
        units = billable_units(req.service, req.quantity, req.runs)
        if req.coupon_code:
            base, _ = coupons.price(req.rate, units, None)
            coupon = coupons.applicable(conn, req.coupon_code, account_id, req.service, base, stamp)
        charge, discount = coupons.price(req.rate, units, coupon)
        if charge > MAX_AMOUNT:  # no balance can cover it, and it would not fit the column
            raise ApiError("insufficient_balance")
        order_id = _insert_order(conn, account_id, req, charge, coupon, stamp, rid)
        if req.service.provider_id is not None:
            # The outbox: the hand-over commits with the charge, or neither does.
            conn.execute(_INSERT_HANDOVER, {"order_id": order_id, "stamp": stamp})
        if coupon is not None:
            coupons.redeem(conn, coupon, account_id, order_id, discount)
        try:
            balance = ledger.post(conn, account_id, -charge, "charge",
                                  f"order {present_order(order_id)}", order_id, rid)
        except ledger.InsufficientFunds:
            raise ApiError("insufficient_balance") from None
        response = {"order": format_order_id(order_id, numeric), "charge": format_amount(charge),
                    "currency": config["CURRENCY"], "balance": format_amount(balance)}
        if idem_key is not None:
            _remember(conn, account_id, idem_key, fingerprint, response,
                      stamp + config["IDEMPOTENCY_TTL_SECONDS"])
        return response

    return db.write_grouped(work)


# Built once with bound parameters, so each order only binds values: building a Core statement
# per request costs more than running it.
_INSERT_ORDER = insert(orders).values(
    {name: bindparam(name) for name in (
        "account_id", "service_id", "target", "target_key", "quantity", "inputs_json", "charge",
        "remains", "coupon_id", "runs", "interval_minutes", "runs_done", "provider_id",
        "request_id")},
).values(status="Pending", created_at=bindparam("stamp"), updated_at=bindparam("stamp"),
         ).returning(orders.c.id)
_INSERT_HANDOVER = insert(dispatches).values(
    order_id=bindparam("order_id"), kind="add", state="due", attempts=0,
    due_at=bindparam("stamp"), created_at=bindparam("stamp"), updated_at=bindparam("stamp"))


def _guard_statement(dialect_name: str):
    stmt = db.upsert(dialect_name, purchase_guards).values(
        {name: bindparam(name) for name in ("account_id", "service_id", "target_key", "quantity",
                                            "expires_at")})
    return stmt.on_conflict_do_update(
        index_elements=["account_id", "service_id", "target_key", "quantity"],
        set_={"expires_at": stmt.excluded.expires_at},
        where=purchase_guards.c.expires_at <= bindparam("stamp"),
    ).returning(purchase_guards.c.expires_at)


_LOCK_ACCOUNT = (select(accounts.c.id).where(accounts.c.id == bindparam("account_id"))
                 .with_for_update())
_GUARD = {name: _guard_statement(name) for name in ("sqlite", "postgresql")}


def _insert_order(conn, account_id, req, charge, coupon, stamp, rid) -> int:
    try:
        return conn.execute(_INSERT_ORDER, {
            "account_id": account_id, "service_id": req.service.id, "target": req.target,
            "target_key": req.target_key, "quantity": req.quantity,
            "inputs_json": req.inputs_json(), "charge": charge, "remains": req.quantity,
            "coupon_id": coupon.id if coupon else None, "runs": req.runs,
            "interval_minutes": req.interval, "runs_done": 0 if req.runs else None,
            "provider_id": req.service.provider_id, "request_id": rid,
            "stamp": stamp}).scalar_one()
    except IntegrityError:
        # The partial unique index: an active order for this service and target exists.
        # Raising rolls back the guard row written before, so nothing is left behind.
        raise ApiError("active_order_exists") from None


def _guard(conn, account_id, req, expires_at, stamp):
    """`duplicate_target`: the same account, service, target and quantity inside the window.
    One upsert decides: it refreshes an expired guard row or inserts a new one, and matches
    nothing when an unexpired one stands."""
    written = conn.execute(_GUARD[conn.dialect.name], {
        "account_id": account_id, "service_id": req.service.id, "target_key": req.target_key,
        "quantity": req.quantity, "expires_at": expires_at, "stamp": stamp}).first()
    if written is None:  # the upsert wrote no row: an unexpired guard stands
        raise ApiError("duplicate_target")


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
