"""Orders handed over to their providers: the `add` call, what its reply means, and the
outcome recorded with the order.

A hand-over is sent again only when it is known not to have been acted on, or when asking
again cannot act twice:
- not sent: the connection was refused or timed out before the request went out, or the
  provider is disabled here;
- refused for now: the provider answered with a refusal that means "not now" (its funds, its
  rate limit, a duplicate guard);
- a provider that honours Idempotency-Key (a Serva: its replies carry `x-serva-request-id`),
  whatever went wrong: it answers a repeated key with its first answer.
Every other reply that is not an order id (a read timeout, a broken connection, an HTTP error
status, 5xx and 429 included, a body that is not JSON or carries no order id) may have placed
the order: the hand-over becomes `unknown` and waits for the operator (`serva order unknown`,
`serva order resolve`). A refusal for good cancels the order with a full refund; a refusal for
now that lasts past DISPATCH_MAX_ATTEMPTS too, since nothing was placed."""
import contextvars
import json
import logging
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import and_, select, update

from .. import db, orders as orders_repo, providers as providers_repo
from ..ids import order_number, present_order
from ..money import format_amount
from ..schema import ACTIVE_STATUSES, dispatches, orders
from . import attempts, forwarding, provider_client as pc
from .claim import Claimed, backoff, claim, release
from .replies import refused_for_now, usable_id
from .sync import sync_interval
from .writing import write

log = logging.getLogger("serva.worker")


def idempotency_key(order_id: int, created_at: int) -> str:
    """The same for every hand-over of one order, different for every order (and database)."""
    return f"serva-{order_number(order_id)}-{created_at}"


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


def send(claimed: Claimed, timeouts):
    """Call the provider; (outcome, detail, exchange: what came back, None when no call was
    made). Outcomes: accepted (detail: the provider's order id), refused (for good),
    refused_for_now, not_sent, resend (no usable answer, but the provider replays its first
    answer to the same key), unknown, skip (not sent: the order no longer waits for a
    provider)."""
    order = claimed.order
    if order is None or order.status != "Pending":
        return "skip", f"order is {order.status if order else 'gone'}; not handed over", None
    if order.service_provider is None or order.service_provider != order.provider_id \
            or order.url is None:
        return "skip", "the service is no longer linked to this provider; handle it by hand", None
    if not order.enabled:
        return "not_sent", "provider disabled", None
    unknown = "resend" if order.idempotent else "unknown"
    try:
        data = pc.call(order.url, order.api_key, "add", handover_params(order),
                       idempotency_key=idempotency_key(order.id, order.created_at),
                       timeouts=timeouts)
    except pc.Refused as refusal:
        return ("refused_for_now" if refused_for_now(refusal.message) else "refused"), \
            refusal.message, attempts.failed(refusal)
    except pc.NotSent as error:
        return "not_sent", str(error), attempts.failed(error)
    except pc.HttpError as error:
        if error.serva:
            unknown = "resend"
        if 400 <= error.status < 500 and error.status != 429:
            return unknown, f"{error} (check the provider's URL)", attempts.failed(error)
        return unknown, str(error), attempts.failed(error)
    except pc.OutcomeUnknown as error:
        return unknown, str(error), attempts.failed(error)
    exchange = attempts.answered(order.url, data)
    provider_order = data.get("order") if isinstance(data, dict) else None
    if not usable_id(provider_order):
        return unknown, "the reply carries no usable order id", exchange
    return "accepted", str(provider_order).strip(), exchange


def _final_outcome(claimed: Claimed, outcome: str, detail: str, limit: int):
    """Past the attempt limit: refused for now becomes refused (nothing was placed, so the
    refund is certain); not sent too, unless an earlier attempt to a provider that replays may
    have reached it (then only the operator knows); a resend becomes unknown."""
    if claimed.attempts < limit:
        if outcome == "resend":
            return "refused_for_now", f"{detail}; resent with the same idempotency key"
        return outcome, detail
    given_up = f"gave up after {claimed.attempts} attempts: {detail}"
    if outcome == "refused_for_now" or (outcome == "not_sent" and not claimed.order.idempotent):
        return "refused", given_up
    if outcome in ("not_sent", "resend"):
        return "unknown", given_up
    return outcome, detail


def record(claimed: Claimed, owner: str, outcome: str, detail: str, config: dict,
           exchange=None):
    """Record one outcome if this pass still holds the hand-over; what happened: handed,
    retrying, canceled, unknown, flagged or None. The call's `exchange` is kept as one of the
    hand-over's attempts in the same transaction (see attempts), whoever holds the lease now:
    the call was made either way."""
    order = claimed.order
    now = db.now()
    outcome, detail = _final_outcome(claimed, outcome, detail, config["DISPATCH_MAX_ATTEMPTS"])

    def work(conn):
        if order is not None:
            attempts.record(conn, order.id, claimed.dispatch_id, "add",
                            "placed" if outcome == "accepted" else outcome, exchange,
                            order.api_key)
        if outcome == "accepted":
            # Conditional on the hand-over still being this pass's and the order still active:
            # an order settled meanwhile (which set-status and resolve refuse while it is in
            # flight) is never "accepted" silently; it is flagged for the operator instead.
            if release(conn, claimed, owner, state="done", last_message=None) and conn.execute(
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
        if outcome in ("refused_for_now", "not_sent"):
            if order is not None and order.provider_id is not None:
                providers_repo.record_error(conn, order.provider_id, detail)
            if release(conn, claimed, owner, state="due", last_message=detail[:255],
                       due_at=now + backoff(config["DISPATCH_RETRY_SECONDS"], claimed.attempts)):
                return "retrying"
        elif outcome == "refused":
            if release(conn, claimed, owner, state="canceled", last_message=detail[:255]):
                try:
                    orders_repo.move(conn, order, "Canceled", remains=order.quantity,
                                     next_sync_at=None, by=orders_repo.WORKER)
                except orders_repo.OrderError:
                    pass  # refunded meanwhile (the operator): nothing more to give back
                return "canceled"
        elif outcome == "unknown":
            if release(conn, claimed, owner, state="unknown", last_message=detail[:255]):
                return "unknown"
        elif outcome == "skip":
            release(conn, claimed, owner, state="manual", last_message=detail[:255])
        return None

    result = write(work)
    if result == "canceled":
        log.info("order %s canceled and refunded: %s", present_order(order.id), detail)
    elif result == "flagged":
        log.error("order %s: the provider placed it (%s) after it was settled here; flagged for "
                  "the operator", present_order(order.id), detail)
    elif result == "unknown":
        log.warning("order %s: hand-over outcome unknown (%s); resolve it with "
                    "`serva order resolve`", present_order(order.id), detail)
    return result


def dispatch_pass(owner: str, config: dict, stop: threading.Event) -> Counter:
    """Every due hand-over, once, by WORKER_CONCURRENCY threads: each claims one, sends it
    at once (a claimed hand-over never waits in a queue) and records the outcome. Counts
    what happened to the orders' hand-overs."""
    timeouts = (config["PROVIDER_CONNECT_TIMEOUT"], config["PROVIDER_READ_TIMEOUT"])
    counts = Counter()
    lock = threading.Lock()

    def loop():
        while not stop.is_set():
            claimed = claim(owner, db.now(), config["DISPATCH_LEASE_SECONDS"])
            if not claimed:
                return
            if claimed[0].kind != "add":
                forwarding.hand_over(claimed[0], owner, config, timeouts)
                continue
            outcome, detail, exchange = send(claimed[0], timeouts)
            result = record(claimed[0], owner, outcome, detail, config, exchange)
            if result:
                with lock:
                    counts[result] += 1

    threads = max(1, config["WORKER_CONCURRENCY"])
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="serva-dispatch") as pool:
        # Each thread runs in a copy of this context: the app context comes along.
        for future in [pool.submit(contextvars.copy_context().run, loop) for _ in range(threads)]:
            future.result()
    return counts


# ---------------------------------------------------------------- the operator's resolution

class ResolveError(ValueError):
    """A resolution that cannot be applied (no such order, nothing unknown, a bad id)."""


def resolve(conn, order_id: int, provider_order=None, resend=False, cancel=False,
            by: str = orders_repo.CLI) -> str:
    """Settle a hand-over of unknown outcome: it was placed (`provider_order`), it was not
    (`resend`), or give up (`cancel`: Canceled with a full refund). Conditional on the state,
    so two operators cannot both settle it. `by`: the operator (the status history's actor)."""
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
        # A fresh hand-over: the operator found nothing placed, so earlier attempts count no more.
        settle("due", "resolved by the operator: resend", due_at=now, lease_owner=None, attempts=0)
        return "will be handed over again by the next worker pass"
    settle("canceled", "resolved by the operator: canceled")
    try:
        refund = orders_repo.move(conn, order, "Canceled", remains=order.quantity, next_sync_at=None,
                                  by=by)
    except orders_repo.OrderError as error:
        raise ResolveError(str(error)) from None
    return f"Canceled, refunded {format_amount(refund)}"
