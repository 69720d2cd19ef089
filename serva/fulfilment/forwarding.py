"""Refills and cancels of provider orders, handed to the provider through the worker's outbox
(`dispatches` rows of kind `refill` and `cancel`, written in the partner's transaction, claimed
and leased like hand-overs), and the provider's refills polled like orders.

- A refill: the provider's `refill` with its order id; the provider's refill id is kept on the
  refill, whose status is then polled with `refill_status` (≤100 per call) until Completed or
  Rejected. A provider that refuses the refill (or refuses it for now, or cannot be reached,
  past the attempt limit) rejects it. No money moves either way.
- A cancel: the provider's `cancel`; its outcome arrives with the order's status sync
  (Canceled or Partial, refunded once through `orders.move`). An order whose hand-over was not
  sent yet is canceled at once: nothing reached the provider, so the full refund is certain.
- A reply that may or may not have been acted on (a timeout, an HTTP error status, a body
  that cannot be read): a cancel is asked again (asking twice cancels nothing twice); a
  refill is left `unknown` for the operator, who answers it with `serva refill set-status`
  (a refill asked twice may be refused the second time while the first one runs)."""
import logging

from sqlalchemy import bindparam, insert, select, update

from .. import db, orders as orders_repo, providers as providers_repo
from ..ids import present_order
from ..schema import ACTIVE_STATUSES, PENDING_REFILL_STATUSES, dispatches, orders, providers, refills
from ..webhooks import outbox
from . import attempts, provider_client as pc
from .claim import backoff, release
from .replies import refill_status, refused_for_now, usable_id
from .writing import any_of, write

log = logging.getLogger("serva.worker")

MAX_BATCH = 100


# ---------------------------------------------------------------- the partner's transaction

def enqueue(conn, order_id: int, kind: str, stamp: int) -> None:
    """A hand-over of a refill or cancel request, due now (in the request's transaction)."""
    conn.execute(insert(dispatches).values(order_id=order_id, kind=kind, state="due",
                                           due_at=stamp, created_at=stamp, updated_at=stamp))


def cancel_before_handover(conn, order_id: int, stamp: int, by: str) -> bool:
    """Cancel a provider order whose `add` hand-over is still due (never sent): one conditional
    UPDATE withdraws it (a worker claiming it at the same moment wins or loses cleanly), then
    the order is Canceled with a full refund. False when the hand-over already left. `by`:
    the partner (`api`) or the worker, for the status history."""
    withdrawn = conn.execute(update(dispatches).where(
        dispatches.c.order_id == order_id, dispatches.c.kind == "add",
        dispatches.c.state == "due").values(
            state="canceled", last_message="canceled by the partner before it was handed over",
            updated_at=stamp)).rowcount
    if not withdrawn:
        return False
    order = conn.execute(select(orders).where(orders.c.id == order_id)).first()
    orders_repo.move(conn, order, "Canceled", remains=order.quantity, next_sync_at=None, by=by)
    return True


# ---------------------------------------------------------------- the worker: hand-over

_PROVIDER_ORDER = select(orders.c.provider_order).where(orders.c.id == bindparam("order_id"))
_WAITING_REFILL = (select(refills.c.id)
                   .where(refills.c.order_id == bindparam("order_id"),
                          refills.c.status.in_(PENDING_REFILL_STATUSES),
                          refills.c.provider_refill_id.is_(None))
                   .order_by(refills.c.id.desc()))


def _ask(order, action, params, timeouts):
    """(outcome, reply or message, exchange): accepted / refused / for_now / unknown; the
    exchange (attempts) None when no call was made."""
    if not order.enabled:
        return "for_now", "provider disabled", None
    try:
        data = pc.call(order.url, order.api_key, action, params, timeouts=timeouts)
        return "accepted", data, attempts.answered(order.url, data)
    except pc.Refused as refusal:
        return ("for_now" if refused_for_now(refusal.message) else "refused"), refusal.message, \
            attempts.failed(refusal)
    except pc.NotSent as error:
        return "for_now", str(error), attempts.failed(error)
    except pc.OutcomeUnknown as error:  # an HTTP error status too
        return "unknown", str(error), attempts.failed(error)


def _answer_of(data, name):
    """The value of `name` in a single (`{name: v}`) or list (`[{"order": …, name: v}]`) reply."""
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
        data = data[0]
    return data.get(name) if isinstance(data, dict) else None


def send(claimed, timeouts):
    """Hand one refill or cancel request to the provider: (outcome, detail, refill id,
    exchange: what came back, None when no call was made)."""
    order = claimed.order
    if order is None:
        return "done", "the order is gone", None, None
    with db.read() as conn:
        provider_order = conn.execute(_PROVIDER_ORDER, {"order_id": order.id}).scalar()
        refill_id = conn.execute(_WAITING_REFILL, {"order_id": order.id}).scalar() \
            if claimed.kind == "refill" else None
    if claimed.kind == "refill":
        if refill_id is None:
            return "done", "no refill of this order is waiting", None, None
        if provider_order is None or order.url is None:
            return ("manual", "the order has no provider order id; answer the refill by hand",
                    refill_id, None)
        outcome, reply, exchange = _ask(order, "refill", {"order": provider_order}, timeouts)
        if outcome != "accepted":
            return outcome, reply, refill_id, exchange
        value = _answer_of(reply, "refill")
        if isinstance(value, dict) and "error" in value:
            return "refused", str(value["error"])[:255], refill_id, exchange
        if not usable_id(value):
            return "unknown", "the reply carries no usable refill id", refill_id, exchange
        return "accepted", str(value).strip(), refill_id, exchange

    if order.status not in ACTIVE_STATUSES:
        return "done", f"the order is {order.status} already", None, None
    if provider_order is None:
        if write(lambda conn: cancel_before_handover(conn, order.id, db.now(),
                                                     orders_repo.WORKER)):
            return "done", "canceled before it was handed over", None, None
        return "for_now", "not handed over yet", None, None
    if order.url is None:
        return "manual", "the service lost its provider; answer the cancel by hand", None, None
    outcome, reply, exchange = _ask(order, "cancel", {"orders": provider_order}, timeouts)
    if outcome != "accepted":
        return outcome, reply, None, exchange
    value = _answer_of(reply, "cancel")
    if isinstance(value, dict) and "error" in value:
        return "refused", str(value["error"])[:255], None, exchange
    if value in (1, "1", True):
        return "accepted", None, None, exchange
    return "unknown", "the reply does not say whether the cancel was accepted", None, exchange


def hand_over(claimed, owner, config, timeouts) -> None:
    """Send one claimed refill or cancel request and record its outcome."""
    outcome, detail, refill_id, exchange = send(claimed, timeouts)
    record(claimed, owner, outcome, detail, refill_id, config, exchange)


def record(claimed, owner, outcome, detail, refill_id, config, exchange=None):
    """Apply one outcome, if this pass still holds the hand-over (its lease); the call's
    `exchange` is kept as one of the hand-over's attempts in the same transaction."""
    now = db.now()
    kind = claimed.kind
    if outcome == "unknown" and kind == "cancel" \
            and claimed.attempts < config["DISPATCH_MAX_ATTEMPTS"]:
        outcome, detail = "for_now", f"{detail}; asked again"  # a cancel asked twice is one
    if outcome == "for_now" and claimed.attempts >= config["DISPATCH_MAX_ATTEMPTS"]:
        outcome, detail = "refused", f"gave up after {claimed.attempts} attempts: {detail}"

    def work(conn):
        if claimed.order is not None:
            attempts.record(conn, claimed.order.id, claimed.dispatch_id, kind,
                            "retry" if outcome == "for_now" else outcome, exchange,
                            claimed.order.api_key)
        message = detail[:255] if detail else None
        if outcome == "accepted":
            if release(conn, claimed, owner, state="done", last_message=None):
                if kind == "refill":
                    conn.execute(update(refills).where(
                        refills.c.id == refill_id, refills.c.provider_refill_id.is_(None))
                        .values(provider_refill_id=detail, updated_at=now))
                else:  # the outcome comes with the next status sync: make it due now
                    conn.execute(update(orders).where(orders.c.id == claimed.order.id,
                                                      orders.c.next_sync_at.is_not(None))
                                 .values(next_sync_at=now))
        elif outcome == "for_now":
            if claimed.order is not None and claimed.order.provider_id is not None:
                providers_repo.record_error(conn, claimed.order.provider_id, f"{kind}: {detail}")
            release(conn, claimed, owner, state="due", last_message=message,
                    due_at=now + backoff(config["DISPATCH_RETRY_SECONDS"], claimed.attempts))
        elif outcome == "refused":
            if release(conn, claimed, owner, state="canceled", last_message=message) and kind == "refill" \
                    and conn.execute(update(refills).where(
                        refills.c.id == refill_id, refills.c.status.in_(PENDING_REFILL_STATUSES),
                        refills.c.provider_refill_id.is_(None))
                        .values(status="Rejected", updated_at=now)).rowcount:
                outbox.refill_updated(conn, [refill_id])
        else:  # done, manual, unknown
            release(conn, claimed, owner, state=outcome, last_message=message)
    write(work)
    if outcome in ("refused", "unknown", "manual") and claimed.order is not None:
        log.warning("order %s: %s not handed to the provider (%s): %s",
                    present_order(claimed.order.id), kind, outcome, detail)


# ---------------------------------------------------------------- the worker: refill status

_DUE_REFILLS = (select(refills.c.id, refills.c.provider_refill_id, refills.c.status,
                       orders.c.provider_id)
                .join(orders, orders.c.id == refills.c.order_id)
                .where(refills.c.status.in_(PENDING_REFILL_STATUSES),
                       refills.c.provider_refill_id.is_not(None),
                       refills.c.updated_at <= bindparam("cutoff"))
                .order_by(refills.c.updated_at, refills.c.id).limit(10_000))
_REFILL_MOVES = (update(refills)  # executemany
                 .where(refills.c.id == bindparam("b_id"),
                        any_of(refills.c.status, PENDING_REFILL_STATUSES))
                 .values(status=bindparam("b_status"), updated_at=bindparam("b_now")))
_REFILL_SEEN = (update(refills).where(refills.c.id == bindparam("b_id"))
                .values(updated_at=bindparam("b_now")))


def _statuses(reply, tokens) -> dict:
    """provider refill id -> its status text, from a list (`[{"refill", "status"}]`), a map
    keyed by id, or a single `{"status"}` reply to one id."""
    if isinstance(reply, list):
        return {str(e.get("refill")): e.get("status") for e in reply if isinstance(e, dict)}
    if isinstance(reply, dict):
        if "status" in reply and len(tokens) == 1:
            return {tokens[0]: reply["status"]}
        return {str(k): (v.get("status") if isinstance(v, dict) else v) for k, v in reply.items()}
    return {}


def sync_refills(config, stop=None) -> int:
    """Poll the provider's refills that are due (every SYNC_INTERVAL_SECONDS), ≤100 per call;
    returns how many changed status."""
    now = db.now()
    timeouts = (config["PROVIDER_CONNECT_TIMEOUT"], config["PROVIDER_READ_TIMEOUT"])
    with db.read() as conn:
        due = conn.execute(_DUE_REFILLS, {"cutoff": now - config["SYNC_INTERVAL_SECONDS"]}).all()
        if not due:
            return 0
        known = {p.id: p for p in conn.execute(select(providers)
                                               .where(providers.c.enabled.is_(True)))}
    by_provider = {}
    for row in due:
        if row.provider_id in known:
            by_provider.setdefault(row.provider_id, []).append(row)
    changed = 0
    for provider_id, rows in by_provider.items():
        provider = known[provider_id]
        for i in range(0, len(rows), MAX_BATCH):
            if stop is not None and stop.is_set():
                return changed
            batch = rows[i:i + MAX_BATCH]
            tokens = [row.provider_refill_id for row in batch]
            try:
                reply = pc.call(provider.url, provider.api_key, "refill_status",
                                {"refills": ",".join(tokens)}, timeouts=timeouts)
            except pc.ProviderError as error:
                log.warning("provider %s: refill_status failed: %s", provider.name, error)
                reply = None
            found = _statuses(reply, tokens)
            moves, seen, news = [], [], []
            for row in batch:
                status = refill_status(found.get(row.provider_refill_id))
                (moves if status else seen).append(
                    {"b_id": row.id, "b_status": status, "b_now": now})
                if status and status != row.status:
                    news.append(row.id)

            def work(conn, moves=moves, seen=seen, news=news):
                moved = conn.execute(_REFILL_MOVES, moves).rowcount if moves else 0
                outbox.refill_updated(conn, news)  # the partners' webhooks, in this transaction
                if seen:
                    conn.execute(_REFILL_SEEN, [{"b_id": s["b_id"], "b_now": s["b_now"]} for s in seen])
                return moved
            changed += write(work) or 0
    return changed
