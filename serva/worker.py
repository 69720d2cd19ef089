"""The fulfilment worker: hands orders over to their providers and syncs their status.

One pass (`run_pass`):
1. expired leases: a hand-over whose worker died while sending goes back to `due` when its
   provider honours Idempotency-Key (a resend returns the first answer), else to `unknown`;
2. providers' balances (and whether each is a Serva) are refreshed;
3. due hand-overs are claimed (PostgreSQL `FOR UPDATE SKIP LOCKED`; SQLite a conditional
   UPDATE inside BEGIN IMMEDIATE) under a lease, sent by a few threads at once, and each
   outcome recorded: accepted / refused for now (backoff, then Canceled and refunded past
   DISPATCH_MAX_ATTEMPTS) / refused for good (Canceled, refunded) / unknown (never re-sent
   automatically unless the provider honours Idempotency-Key);
4. active provider orders that are due are polled, ≤ 100 per call, several calls in flight,
   and their status, start_count and remains applied; final orders are not polled again.
5. refill and cancel requests of provider orders go out the same way (serva.forwarding), and
   the provider's refills are polled after the orders.
Each hand-over is tried at most once per pass, each order polled at most once per pass, so
with both intervals at 0 a pass does everything due, once.

Refunds go through `orders.move`, whose conditional UPDATE makes them happen at most once.
`kind` on a hand-over keeps room for other requests (refill, cancel) beside `add`."""
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal

from flask import current_app
from sqlalchemy import Integer, and_, bindparam, func, select, text, update

from . import db, orders as orders_repo, provider_client as pc, providers as providers_repo
from . import forwarding
from .ids import order_number, present_order
from .money import AmountError, format_amount, parse_amount
from .schema import ACTIVE_STATUSES, DISPATCH_KINDS, dispatches, orders, providers, services

log = logging.getLogger("serva.worker")

MAX_BATCH = 100
MAX_BACKOFF_SECONDS = 6 * 3600
MAX_SYNC_INTERVAL_SECONDS = 3600
BALANCE_REFRESH_SECONDS = 300
MAX_DUE_PER_PASS = 200_000
# Provider messages that mean "not now" rather than "never" (docs/CONTRACT.md, Fulfilment): the
# provider's funds, its duplicate/active-order guards, its rate limits, its key or access.
FOR_NOW = ("not enough funds", "insufficient", "balance", "active order", "duplicate",
           "too many", "rate limit", "retry", "temporarily", "busy", "api key", "key",
           "banned", "not approved", "maintenance", "disabled")
STATUS_NAMES = {"pending": "Pending", "inprogress": "In progress", "processing": "Processing",
                "completed": "Completed", "partial": "Partial", "canceled": "Canceled",
                "cancelled": "Canceled", "refunded": "Canceled"}
FINAL = ("Completed", "Partial", "Canceled")


@dataclass
class Report:
    handed: int = 0
    retrying: int = 0
    canceled: int = 0
    unknown: int = 0
    synced: int = 0
    refunded: int = 0
    flagged: int = 0
    errors: list = field(default_factory=list)

    def line(self) -> str:
        return (f"handed over {self.handed}, retrying {self.retrying}, canceled {self.canceled}, "
                f"unknown {self.unknown}; synced {self.synced}, refunded {self.refunded}, "
                f"flagged {self.flagged}")


def settings():
    config = current_app.config
    return {name: config[name] for name in (
        "SYNC_INTERVAL_SECONDS", "DISPATCH_RETRY_SECONDS", "DISPATCH_MAX_ATTEMPTS",
        "DISPATCH_LEASE_SECONDS", "PROVIDER_CONNECT_TIMEOUT", "PROVIDER_READ_TIMEOUT",
        "WORKER_CONCURRENCY")}


def idempotency_key(order_id: int, created_at: int) -> str:
    """The same for every hand-over of one order, different for every order (and database)."""
    return f"serva-{order_number(order_id)}-{created_at}"


def backoff(base: int, attempts: int) -> int:
    return min(MAX_BACKOFF_SECONDS, base * 2 ** max(0, attempts - 1))


def sync_interval(base: int, age: int) -> int:
    """The first poll after `base` seconds, then less often as the order ages (an hour old:
    twice the base, a day old: ~50x), never more than an hour apart (nor less than `base`)."""
    if base <= 0:
        return 0
    return min(max(base, MAX_SYNC_INTERVAL_SECONDS), base * (1 + max(0, age) // 1800))


# ---------------------------------------------------------------- writes

WRITE_PATIENCE_SECONDS = 60


def _patiently(attempt):
    """A worker has no one waiting for an answer: a busy database is waited out (up to a
    minute) rather than failing a write that records what a provider already did."""
    deadline = time.monotonic() + WRITE_PATIENCE_SECONDS
    while True:
        try:
            return attempt()
        except Exception as error:  # noqa: BLE001 - only "busy" is retried
            if not db.unavailable(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def write(work):
    """`work(conn)` in a write transaction (grouped with other threads' on SQLite)."""
    return _patiently(lambda: db.write_grouped(work))


@contextmanager
def writing():
    """A write transaction for a block of code; `busy` before it starts is waited out."""
    engine = db.get_engine()
    deadline = time.monotonic() + WRITE_PATIENCE_SECONDS
    while True:
        try:
            context = db.write(engine)
            conn = context.__enter__()
            break
        except Exception as error:  # noqa: BLE001
            if not db.unavailable(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        yield conn
    except BaseException:
        if not context.__exit__(*sys.exc_info()):
            raise
    else:
        context.__exit__(None, None, None)


def make_room(concurrency: int) -> None:
    """The worker's threads all write: give each a writer place (SQLite)."""
    engine = db.get_engine()
    if getattr(engine, "serva_writers", None) is not None:
        db.writer_places(engine, concurrency + 2)


# ---------------------------------------------------------------- statements

def _claim_statement():
    due = (select(dispatches.c.id)
           .where(dispatches.c.state == "due", dispatches.c.due_at <= bindparam("now"),
                  dispatches.c.kind.in_(DISPATCH_KINDS),  # the kinds this worker can send
                  (dispatches.c.lease_owner.is_(None)) | (dispatches.c.lease_owner != bindparam("owner")))
           .order_by(dispatches.c.due_at, dispatches.c.id).limit(bindparam("limit"))
           .with_for_update(skip_locked=True))  # PostgreSQL; SQLite: BEGIN IMMEDIATE decides
    return (update(dispatches).where(dispatches.c.id.in_(due.scalar_subquery()))
            .values(state="sending", lease_owner=bindparam("owner"),
                    lease_until=bindparam("lease_until"), attempts=dispatches.c.attempts + 1,
                    updated_at=bindparam("now"))
            .returning(dispatches.c.id, dispatches.c.order_id, dispatches.c.kind,
                       dispatches.c.attempts))


_CLAIM = _claim_statement()
_DETAILS = (select(orders.c.id, orders.c.account_id, orders.c.status, orders.c.target,
                   orders.c.quantity, orders.c.inputs_json, orders.c.charge, orders.c.created_at,
                   orders.c.runs, orders.c.interval_minutes,
                   orders.c.provider_id, services.c.kind, services.c.fields_json,
                   services.c.provider_id.label("service_provider"), services.c.provider_service,
                   providers.c.name.label("provider_name"), providers.c.url, providers.c.api_key,
                   providers.c.enabled, providers.c.idempotent)
            .select_from(orders.join(services, services.c.id == orders.c.service_id)
                         .outerjoin(providers, providers.c.id == orders.c.provider_id))
            .where(orders.c.id == bindparam("order_id")))

Claimed = namedtuple("Claimed", "dispatch_id kind attempts order")


def claim(owner: str, now: int, lease_seconds: int, limit: int = 1) -> list:
    """Claim up to `limit` due hand-overs for `owner` (a pass) under a lease."""
    def work(conn):
        return conn.execute(_CLAIM, {"owner": owner, "now": now, "limit": limit,
                                     "lease_until": now + lease_seconds}).all()
    rows = write(work)
    claimed = []
    if rows:
        with db.read() as conn:
            for row in rows:
                order = conn.execute(_DETAILS, {"order_id": row.order_id}).first()
                claimed.append(Claimed(row.id, row.kind, row.attempts, order))
    return claimed


def reap_expired_leases(now: int) -> tuple:
    """Hand-overs whose worker died mid-call: back to due where a resend is safe (the provider
    honours Idempotency-Key), otherwise unknown for the operator. (resent, unknown)."""
    safe = select(orders.c.id).join(providers, providers.c.id == orders.c.provider_id) \
        .where(providers.c.idempotent.is_(True))
    expired = and_(dispatches.c.state == "sending", dispatches.c.lease_until < now)
    with writing() as conn:
        resent = conn.execute(update(dispatches).where(expired, dispatches.c.order_id.in_(safe))
                              .values(state="due", due_at=now, lease_owner=None, lease_until=None,
                                      updated_at=now,
                                      last_message="worker stopped mid-call; resent with the same "
                                                   "idempotency key")).rowcount
        unknown = conn.execute(update(dispatches).where(expired)
                               .values(state="unknown", lease_until=None, updated_at=now,
                                       last_message="worker stopped while handing it over; "
                                                    "outcome unknown")).rowcount
    if unknown:
        log.warning("%d hand-overs interrupted by a stopped worker are now unknown", unknown)
    return resent, unknown


# ---------------------------------------------------------------- hand-over

def handover_params(order) -> dict:
    """The provider's `add` parameters for an order, by the service's kind. A drip-feed order
    keeps its total quantity; the provider is sent the quantity per run, `runs` and `interval`."""
    params = {"service": order.provider_service}
    quantity = order.quantity
    if order.runs:
        params.update(runs=order.runs, interval=order.interval_minutes)
        quantity = order.quantity // order.runs
    inputs = json.loads(order.inputs_json) if order.inputs_json else {}
    if order.kind == "fields":
        params["fields"] = inputs
        params["quantity"] = quantity
        return params
    params["link"] = order.target
    if order.kind == "default":
        params["quantity"] = quantity
    elif order.kind == "lines":
        specs = json.loads(order.fields_json or "[]")
        lines = next((spec["name"] for spec in specs if spec.get("lines")), "comments")
        params[lines] = inputs.get(lines, "")
    return params


def classify_refusal(message: str) -> str:
    text = message.lower()
    return "for_now" if any(marker in text for marker in FOR_NOW) else "for_good"


def send(claimed: Claimed, timeouts):
    """Call the provider; (outcome, detail): accepted (provider order id) / for_now / for_good /
    unknown (message) / skip (not sent: the order no longer waits for a provider)."""
    order = claimed.order
    if order is None or order.status != "Pending":
        return "skip", f"order is {order.status if order else 'gone'}; not handed over"
    if order.service_provider is None or order.service_provider != order.provider_id \
            or order.url is None:
        return "skip", "the service is no longer linked to this provider; handle it by hand"
    if not order.enabled:
        return "for_now", "provider disabled"
    try:
        data = pc.call(order.url, order.api_key, "add", handover_params(order),
                       idempotency_key=idempotency_key(order.id, order.created_at),
                       timeouts=timeouts)
    except pc.Refused as refusal:
        return classify_refusal(refusal.message), refusal.message
    except pc.NotSent as error:
        return "for_now", str(error)
    except pc.HttpError as error:
        if error.status >= 500 or error.status == 429:
            return "for_now", str(error)
        return "for_now", f"{error} (check the provider's URL)"
    except pc.OutcomeUnknown as error:
        return "unknown", str(error)
    provider_order = data.get("order") if isinstance(data, dict) else None
    if isinstance(provider_order, bool) or not isinstance(provider_order, (str, int)) \
            or not str(provider_order).strip() or len(str(provider_order)) > 64:
        return "unknown", "the reply carries no usable order id"
    return "accepted", str(provider_order).strip()


def _release(conn, claimed, owner, **values):
    """Update the hand-over if this pass still holds it; False when it lost its lease."""
    return conn.execute(update(dispatches)
                        .where(dispatches.c.id == claimed.dispatch_id,
                               dispatches.c.lease_owner == owner,
                               dispatches.c.state.in_(("sending", "unknown")))
                        .values(lease_until=None, updated_at=db.now(), **values)).rowcount == 1


def record(claimed: Claimed, owner: str, outcome: str, detail: str, config: dict, report: Report):
    order = claimed.order
    now = db.now()
    if outcome == "unknown" and order is not None and order.idempotent \
            and claimed.attempts < config["DISPATCH_MAX_ATTEMPTS"]:
        # A resend can only replay the first answer; past the limit it stays unknown (it may
        # have been placed: never refunded without the provider's word).
        outcome, detail = "for_now", f"{detail}; resent with the same idempotency key"
    elif outcome == "for_now" and claimed.attempts >= config["DISPATCH_MAX_ATTEMPTS"]:
        outcome, detail = "for_good", f"gave up after {claimed.attempts} attempts: {detail}"

    def work(conn):
        if outcome == "accepted":
            # Conditional on the hand-over still being this pass's and the order still active:
            # an order settled meanwhile (which set-status and resolve refuse while it is in
            # flight) is never "accepted" silently; it is flagged for the operator instead.
            if _release(conn, claimed, owner, state="done", last_message=None) and conn.execute(
                    update(orders).where(orders.c.id == order.id,
                                         orders.c.status.in_(ACTIVE_STATUSES))
                    .values(provider_order=detail, attention=None, updated_at=now,
                            next_sync_at=now + sync_interval(config["SYNC_INTERVAL_SECONDS"], 0))
                    ).rowcount:
                return "handed"
            if conn.execute(update(orders).where(orders.c.id == order.id,
                                                 orders.c.status.not_in(ACTIVE_STATUSES))
                            .values(provider_order=detail, updated_at=now,
                                    attention=f"the provider placed it as {detail} after it was "
                                              f"settled here; cancel it at the provider")).rowcount:
                return "flagged"
            return None  # the lease passed to another pass, which records the same reply
        elif outcome == "for_now":
            if order is not None and order.provider_id is not None:
                providers_repo.record_error(conn, order.provider_id, detail)
            if _release(conn, claimed, owner, state="due", last_message=detail[:255],
                        due_at=now + backoff(config["DISPATCH_RETRY_SECONDS"], claimed.attempts)):
                return "retrying"
        elif outcome == "for_good":
            if _release(conn, claimed, owner, state="canceled", last_message=detail[:255]):
                try:
                    orders_repo.move(conn, order, "Canceled", remains=order.quantity,
                                     next_sync_at=None)
                except orders_repo.OrderError:
                    pass  # refunded meanwhile (the operator): nothing more to give back
                return "canceled"
        elif outcome == "unknown":
            if _release(conn, claimed, owner, state="unknown", last_message=detail[:255]):
                return "unknown"
        elif outcome == "skip":
            if _release(conn, claimed, owner, state="manual", last_message=detail[:255]):
                return None
        return None

    result = write(work)
    if result == "handed":
        report.handed += 1
    elif result == "retrying":
        report.retrying += 1
    elif result == "canceled":
        report.canceled += 1
        log.info("order %s canceled and refunded: %s", present_order(order.id), detail)
    elif result == "flagged":
        report.flagged += 1
        log.error("order %s: the provider placed it (%s) after it was settled here; flagged for "
                  "the operator", present_order(order.id), detail)
    elif result == "unknown":
        report.unknown += 1
        log.warning("order %s: hand-over outcome unknown (%s); resolve it with "
                    "`serva order resolve`", present_order(order.id), detail)


def dispatch_pass(owner: str, config: dict, report: Report, stop: threading.Event):
    """Every due hand-over, once, by WORKER_CONCURRENCY threads: each claims one, sends it
    at once (a claimed hand-over never waits in a queue) and records the outcome."""
    timeouts = (config["PROVIDER_CONNECT_TIMEOUT"], config["PROVIDER_READ_TIMEOUT"])
    app = current_app._get_current_object()
    lock = threading.Lock()

    def loop():
        with app.app_context():
            while not stop.is_set():
                claimed = claim(owner, db.now(), config["DISPATCH_LEASE_SECONDS"])
                if not claimed:
                    return
                if claimed[0].kind != "add":  # a refill or cancel request (serva.forwarding)
                    outcome, detail, refill_id = forwarding.send(claimed[0], timeouts)
                    forwarding.record(claimed[0], owner, outcome, detail, refill_id, config)
                    continue
                outcome, detail = send(claimed[0], timeouts)
                local = Report()
                record(claimed[0], owner, outcome, detail, config, local)
                with lock:
                    for name in ("handed", "retrying", "canceled", "unknown", "flagged"):
                        setattr(report, name, getattr(report, name) + getattr(local, name))

    threads = max(1, config["WORKER_CONCURRENCY"])
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="serva-dispatch") as pool:
        for future in [pool.submit(loop) for _ in range(threads)]:
            future.result()


# ---------------------------------------------------------------- status sync

def normalize_status(value):
    if not isinstance(value, str):
        return None
    return STATUS_NAMES.get(value.replace(" ", "").replace("_", "").lower())


def _count(value):
    """An integer count from a provider (int or numeric string), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    return None


_SYNC_DUE = (select(orders.c.id)
             .where(orders.c.provider_id == bindparam("provider_id"),
                    orders.c.next_sync_at <= bindparam("now"))
             .order_by(orders.c.next_sync_at, orders.c.id).limit(MAX_DUE_PER_PASS))
_SYNC_COLUMNS = (orders.c.id, orders.c.account_id, orders.c.provider_order, orders.c.quantity,
                 orders.c.charge, orders.c.status, orders.c.created_at, orders.c.start_count,
                 orders.c.remains, orders.c.runs)


def _sync_claim_statement(n):
    return (update(orders)
            .where(orders.c.id.in_([bindparam(f"id{i}") for i in range(n)]),
                   orders.c.next_sync_at <= bindparam("now"))
            .values(next_sync_at=bindparam("lease_until"))
            .returning(*_SYNC_COLUMNS))


_SYNC_CLAIMS = {}
_STILL_ACTIVE = text("orders.status IN (" + ", ".join(f"'{s}'" for s in ACTIVE_STATUSES) + ")")
_PROGRESS = (update(orders)  # executemany: no expanding IN
             .where(orders.c.id == bindparam("b_id"), _STILL_ACTIVE)
             .values(status=bindparam("b_status"), start_count=bindparam("b_start_count"),
                     remains=bindparam("b_remains"), next_sync_at=bindparam("b_next"),
                     updated_at=bindparam("b_now"),
                     runs_done=func.coalesce(bindparam("b_runs_done", type_=Integer),
                                             orders.c.runs_done)))
_RESCHEDULE = (update(orders).where(orders.c.id == bindparam("b_id"))
               .values(next_sync_at=bindparam("b_next")))
_FLAG = (update(orders).where(orders.c.id == bindparam("b_id"))
         .values(attention=bindparam("b_attention"), next_sync_at=bindparam("b_next")))


def _claim_sync(ids, now, lease_until):
    n = len(ids)
    statement = _SYNC_CLAIMS.get(n)
    if statement is None:
        statement = _SYNC_CLAIMS[n] = _sync_claim_statement(n)
    params = {f"id{i}": order_id for i, order_id in enumerate(ids)}
    params.update(now=now, lease_until=lease_until)
    with writing() as conn:
        return conn.execute(statement, params).all()


def apply_statuses(rows, reply, config, report: Report):
    """Apply one batch reply (provider order id -> status object) to its orders."""
    now = db.now()
    base = config["SYNC_INTERVAL_SECONDS"]
    progress, reschedule, flags, finals = [], [], [], []
    for row in rows:
        next_at = now + sync_interval(base, now - row.created_at)
        entry = reply.get(row.provider_order) if isinstance(reply, dict) else None
        if not isinstance(entry, dict):
            reschedule.append({"b_id": row.id, "b_next": next_at})
            continue
        if "error" in entry:
            message = str(entry["error"])[:200]
            if "incorrect order" in message.lower():
                flags.append({"b_id": row.id, "b_next": next_at,
                              "b_attention": f"provider: {message}"})
            else:
                log.warning("order %s: provider status error %r", present_order(row.id), message)
                reschedule.append({"b_id": row.id, "b_next": next_at})
            continue
        status = normalize_status(entry.get("status"))
        if status is None:
            log.warning("order %s: unknown provider status %r; nothing changed",
                        present_order(row.id), entry.get("status"))
            reschedule.append({"b_id": row.id, "b_next": next_at})
            continue
        remains = _count(entry.get("remains"))
        remains = row.remains if remains is None else min(max(remains, 0), row.quantity)
        start_count = _count(entry.get("start_count"))
        if start_count is not None and not 0 <= start_count <= 2**31 - 1:
            start_count = None
        start_count = row.start_count if start_count is None else start_count
        runs_done = _count(entry.get("runs_done")) if row.runs else None  # drip-feed progress
        runs_done = None if runs_done is None else min(max(runs_done, 0), row.runs)
        if status in FINAL:
            finals.append((row, status, start_count, remains, runs_done))
        else:
            progress.append({"b_id": row.id, "b_status": status, "b_start_count": start_count,
                             "b_remains": remains, "b_next": next_at, "b_now": now,
                             "b_runs_done": runs_done})
    with writing() as conn:
        if progress:
            conn.execute(_PROGRESS, progress)
        if reschedule:
            conn.execute(_RESCHEDULE, reschedule)
        if flags:
            conn.execute(_FLAG, flags)
        for row, status, start_count, remains, runs_done in finals:
            if status == "Completed":
                remains = 0
                runs_done = row.runs or runs_done
            elif status == "Canceled":
                remains = row.quantity
            extra = {} if runs_done is None else {"runs_done": runs_done}
            try:
                refund = orders_repo.move(conn, row, status, start_count, remains, next_sync_at=None,
                                          **extra)
            except orders_repo.OrderError as error:  # refunded meanwhile, or the unique index
                log.info("%s", error)
                conn.execute(_RESCHEDULE, {"b_id": row.id, "b_next": None})
                continue
            report.refunded += 1 if refund else 0
    report.synced += len(progress) + len(finals)
    report.flagged += len(flags)


def sync_batch(provider, ids, config, report, lock, timeouts):
    now = db.now()
    rows = _claim_sync(ids, now, now + config["DISPATCH_LEASE_SECONDS"])
    if not rows:
        return
    tokens = ",".join(row.provider_order for row in rows)
    local = Report()
    try:
        reply = pc.call(provider.url, provider.api_key, "status", {"orders": tokens},
                        timeouts=timeouts)
        if not isinstance(reply, dict):
            raise pc.OutcomeUnknown("the status reply is not an object")
    except pc.ProviderError as error:
        log.warning("provider %s: status call failed: %s", provider.name, error)
        reply = None
        with writing() as conn:
            providers_repo.record_error(conn, provider.id, f"status: {error}")
    apply_statuses(rows, reply, config, local)
    with lock:
        report.synced += local.synced
        report.refunded += local.refunded
        report.flagged += local.flagged


def sync_pass(config: dict, report: Report, stop: threading.Event):
    """Poll every due active order once: per provider, batches of ≤100, several in flight."""
    timeouts = (config["PROVIDER_CONNECT_TIMEOUT"], config["PROVIDER_READ_TIMEOUT"])
    now = db.now()
    with db.read() as conn:
        active = conn.execute(select(providers).where(providers.c.enabled.is_(True))).all()
        due = {provider.id: conn.execute(_SYNC_DUE, {"provider_id": provider.id, "now": now})
               .scalars().all() for provider in active}
    app = current_app._get_current_object()
    lock = threading.Lock()

    def task(provider, ids):
        if stop.is_set():
            return
        with app.app_context():
            sync_batch(provider, ids, config, report, lock, timeouts)

    threads = max(1, config["WORKER_CONCURRENCY"])
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="serva-sync") as pool:
        futures = []
        for provider in active:
            ids = due[provider.id]
            futures += [pool.submit(task, provider, ids[i:i + MAX_BATCH])
                        for i in range(0, len(ids), MAX_BATCH)]
        for future in futures:
            future.result()


# ---------------------------------------------------------------- the operator's resolution

class ResolveError(ValueError):
    pass


def resolve(conn, order_id: int, provider_order=None, resend=False, cancel=False) -> str:
    """Settle a hand-over of unknown outcome: it was placed (`provider_order`), it was not
    (`resend`), or give up (`cancel`: Canceled with a full refund). Conditional on the state,
    so two operators cannot both settle it."""
    order = conn.execute(select(orders).where(orders.c.id == order_id)).first()
    if order is None:
        raise ResolveError(f"no order {present_order(order_id)}")
    now = db.now()
    unknown = and_(dispatches.c.order_id == order_id, dispatches.c.kind == "add",
                   dispatches.c.state == "unknown")

    def settle(state, message, **values):
        changed = conn.execute(update(dispatches).where(unknown).values(
            state=state, last_message=message, updated_at=now, lease_until=None, **values)).rowcount
        if not changed:
            raise ResolveError(f"order {present_order(order_id)} has no hand-over of unknown outcome")

    if provider_order is not None:
        provider_order = provider_order.strip()
        if not provider_order or len(provider_order) > 64:
            raise ResolveError("a provider order id is 1-64 characters")
        settle("done", "resolved by the operator: placed")
        conn.execute(update(orders).where(orders.c.id == order_id).values(
            provider_order=provider_order, next_sync_at=now, updated_at=now))
        return f"placed as provider order {provider_order}; its status will be synced"
    if resend:
        settle("due", "resolved by the operator: resend", due_at=now, lease_owner=None)
        return "will be handed over again by the next worker pass"
    settle("canceled", "resolved by the operator: canceled")
    try:
        refund = orders_repo.move(conn, order, "Canceled", remains=order.quantity, next_sync_at=None)
    except orders_repo.OrderError as error:
        raise ResolveError(str(error)) from None
    return f"Canceled, refunded {format_amount(refund)}"


# ---------------------------------------------------------------- balances and the pass

def refresh_balances(config: dict, force=False):
    """Ask each enabled provider for its balance (every few minutes, or every pass when the
    sync interval is 0); learn from the reply whether it is a Serva (honours Idempotency-Key)."""
    now = db.now()
    every = min(BALANCE_REFRESH_SECONDS, config["SYNC_INTERVAL_SECONDS"])
    timeouts = (config["PROVIDER_CONNECT_TIMEOUT"], config["PROVIDER_READ_TIMEOUT"])
    with db.read() as conn:
        rows = conn.execute(select(providers).where(providers.c.enabled.is_(True))).all()
    for row in rows:
        if not force and row.balance_at is not None and now - row.balance_at < every:
            continue
        try:
            reply = pc.request(row.url, row.api_key, "balance", timeouts=timeouts)
            balance = parse_amount(str(reply.data.get("balance")))
            currency = str(reply.data.get("currency") or "")
        except (pc.ProviderError, AmountError, AttributeError) as error:
            with writing() as conn:
                providers_repo.record_error(conn, row.id, f"balance: {error}")
            continue
        with writing() as conn:
            providers_repo.record_balance(conn, row.id, balance, currency, reply.serva)


def run_pass(stop: threading.Event | None = None) -> Report:
    stop = stop or threading.Event()
    config = settings()
    owner = f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    report = Report()
    make_room(config["WORKER_CONCURRENCY"])
    reap_expired_leases(db.now())
    refresh_balances(config)
    dispatch_pass(owner, config, report, stop)
    if not stop.is_set():
        sync_pass(config, report, stop)
    if not stop.is_set():
        forwarding.sync_refills(config, stop)
    return report


def run_forever(idle_seconds: float = 1.0, echo=print):
    """Passes until SIGTERM/SIGINT; the calls in flight finish and are recorded first."""
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("signal %s: finishing the calls in flight", signum)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    echo("worker running (SIGTERM or Ctrl-C stops it after the calls in flight)")
    while not stop.is_set():
        try:
            report = run_pass(stop)
        except Exception:  # noqa: BLE001 - a pass that failed (database busy…) is tried again
            log.exception("worker pass failed")
            stop.wait(5)
            continue
        if report.handed or report.synced or report.canceled or report.unknown or report.retrying:
            echo(report.line())
        stop.wait(idle_seconds)
