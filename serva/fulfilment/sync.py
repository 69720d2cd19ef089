"""The status of orders a provider accepted, polled and applied: ≤ 100 orders per `status`
call, several calls in flight, each order at most once per pass, final orders never again.

Each order due is leased for the call (its `next_sync_at` moved to the lease end), so two
passes never poll it at once. A reply is applied only where it makes sense: an unknown
status changes nothing; remains outside 0..quantity, or a Partial whose remains cannot be
read, change nothing either and flag the order for the operator with the provider's reply,
logged once, since a refund computed from them would be a guess. A final status refunds
through `orders.move`, whose conditional UPDATE makes a refund happen at most once."""
import contextvars
import json
import logging
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Integer, bindparam, func, select, update

from .. import db, orders as orders_repo, providers as providers_repo
from ..ids import present_order
from ..schema import ACTIVE_STATUSES, FINAL_STATUSES, orders, providers
from ..webhooks import outbox
from . import attempts, provider_client as pc
from .replies import count, order_status
from .writing import any_of, write

log = logging.getLogger("serva.worker")

MAX_BATCH = 100
MAX_SYNC_INTERVAL_SECONDS = 3600
MAX_DUE_PER_PASS = 200_000
MAX_START_COUNT = 2 ** 31 - 1  # the column is 32-bit
MAX_ATTENTION = 255  # the column's length


def sync_interval(base: int, age: int) -> int:
    """The first poll after `base` seconds, then less often as the order ages (an hour old:
    twice the base, a day old: ~50x), never more than an hour apart (nor less than `base`)."""
    if base <= 0:
        return 0
    return min(max(base, MAX_SYNC_INTERVAL_SECONDS), base * (1 + max(0, age) // 1800))


_SYNC_DUE = (select(orders.c.id)
             .where(orders.c.provider_id == bindparam("provider_id"),
                    orders.c.next_sync_at <= bindparam("now"))
             .order_by(orders.c.next_sync_at, orders.c.id).limit(MAX_DUE_PER_PASS))
_SYNC_CLAIM = (update(orders)
               .where(orders.c.id.in_(bindparam("ids", expanding=True)),
                      orders.c.next_sync_at <= bindparam("now"))
               .values(next_sync_at=bindparam("lease_until"))
               .returning(orders.c.id, orders.c.account_id, orders.c.provider_order,
                          orders.c.quantity, orders.c.charge, orders.c.status,
                          orders.c.created_at, orders.c.start_count, orders.c.remains,
                          orders.c.runs, orders.c.runs_done, orders.c.attention))
# The batch statements below run with several rows at once (executemany): no IN lists.
_PROGRESS = (update(orders)
             .where(orders.c.id == bindparam("b_id"), any_of(orders.c.status, ACTIVE_STATUSES))
             .values(status=bindparam("b_status"), start_count=bindparam("b_start_count"),
                     remains=bindparam("b_remains"), next_sync_at=bindparam("b_next"),
                     updated_at=bindparam("b_now"),
                     runs_done=func.coalesce(bindparam("b_runs_done", type_=Integer),
                                             orders.c.runs_done)))
_RESCHEDULE = (update(orders).where(orders.c.id == bindparam("b_id"))
               .values(next_sync_at=bindparam("b_next")))
_FLAG = (update(orders).where(orders.c.id == bindparam("b_id"))
         .values(attention=bindparam("b_attention"), next_sync_at=bindparam("b_next")))


def _fitted(text: str) -> str:
    return text if len(text) <= MAX_ATTENTION else text[:MAX_ATTENTION - 1] + "…"


def _senseless(row, status, remains):
    """Why the remains of a reply make no sense for this order, or None."""
    if status in ("Completed", "Canceled"):
        return None  # they say everything / nothing was delivered: remains are not used
    if remains is not None and not 0 <= remains <= row.quantity:
        return f"remains {remains} outside 0-{row.quantity}"
    if status == "Partial" and remains is None:
        return "a Partial without readable remains"
    return None


def _plan(rows, reply, now, base, key=""):
    """Sort one batch reply (provider order id -> status object) into the batch statements'
    rows, the final moves, and the flags to write (those the order does not carry yet; the
    reply they quote with the provider's `key` masked, should it echo it back)."""
    progress, reschedule, flags, finals = [], [], [], []
    for row in rows:
        next_at = now + sync_interval(base, now - row.created_at)
        entry = reply.get(row.provider_order) if isinstance(reply, dict) else None
        if not isinstance(entry, dict):
            reschedule.append({"b_id": row.id, "b_next": next_at})
            continue
        attention = None
        if "error" in entry:
            message = providers_repo.redact(str(entry["error"]), key)[:200]
            if "incorrect order" in message.lower():
                attention = f"provider: {message}"
            else:
                log.warning("order %s: provider status error %r", present_order(row.id), message)
            status = None
        else:
            status = order_status(entry.get("status"))
            if status is None:
                log.warning("order %s: unknown provider status %r; nothing changed",
                            present_order(row.id), entry.get("status"))
        remains = count(entry.get("remains"))
        why = None if status is None else _senseless(row, status, remains)
        if why is not None:
            attention = _fitted(providers_repo.redact(
                f"provider reply makes no sense ({why}): "
                f"{json.dumps(entry, default=str, ensure_ascii=False)}", key))
        if attention is not None and attention != row.attention:
            flags.append({"b_id": row.id, "b_next": next_at, "b_attention": attention})
            continue
        if status is None or attention is not None:
            reschedule.append({"b_id": row.id, "b_next": next_at})
            continue
        remains = row.remains if remains is None else remains
        start_count = count(entry.get("start_count"))
        if start_count is None or not 0 <= start_count <= MAX_START_COUNT:
            start_count = row.start_count
        runs_done = count(entry.get("runs_done")) if row.runs else None  # drip-feed progress
        runs_done = None if runs_done is None else min(max(runs_done, 0), row.runs)
        if status in FINAL_STATUSES:
            finals.append((row, status, start_count, remains, runs_done))
        else:
            progress.append({"b_id": row.id, "b_status": status, "b_start_count": start_count,
                             "b_remains": remains, "b_next": next_at, "b_now": now,
                             "b_runs_done": runs_done})
    return progress, reschedule, flags, finals


def _settle(conn, row, status, start_count, remains, runs_done) -> int:
    """Move one order to its final status; the refund (0 when it was settled meanwhile)."""
    if status == "Completed":
        remains = 0
        runs_done = row.runs or runs_done
    elif status == "Canceled":
        remains = row.quantity
    extra = {} if runs_done is None else {"runs_done": runs_done}
    try:
        return orders_repo.move(conn, row, status, start_count, remains, next_sync_at=None,
                                by=orders_repo.WORKER, **extra)
    except orders_repo.OrderError as error:  # refunded meanwhile, or the unique index
        log.info("%s", error)
        conn.execute(_RESCHEDULE, {"b_id": row.id, "b_next": None})
        return 0


def _changed(rows, progress) -> list:
    """The orders a progress batch changes for the partner (status, counts): those get an
    order.updated webhook event; a poll that finds nothing new sends none."""
    before = {row.id: (row.status, row.start_count, row.remains, row.runs_done) for row in rows}
    return [item["b_id"] for item in progress
            if before[item["b_id"]] != (item["b_status"], item["b_start_count"], item["b_remains"],
                                        item["b_runs_done"] if item["b_runs_done"] is not None
                                        else before[item["b_id"]][3])]


def _history(conn, before, progress) -> int:
    """The status history of a progress batch, one batch insert: `before` is the orders as
    read (and locked: orders.history.before_change) ahead of the batch's UPDATE, so a row is
    written for each order whose status, remains or start count the UPDATE really changed (it
    matches active orders only), from what it really was, even if the operator moved it since
    the lease."""
    after = {item["b_id"]: (item["b_status"], item["b_remains"], item["b_start_count"])
             for item in progress
             if item["b_id"] in before and before[item["b_id"]][0] in ACTIVE_STATUSES}
    return orders_repo.history.record(conn, before, after, orders_repo.WORKER)


def apply_statuses(rows, reply, config, key=None) -> Counter:
    """Apply one batch reply to its orders; counts synced, refunded and flagged. The
    webhook events and status history of the changes are written in the same transaction
    (final moves write theirs in orders.move); so are the attempts of polls that flagged an
    order (only those: see attempts), their reply masked with the provider's `key`."""
    now = db.now()
    progress, reschedule, flags, finals = _plan(rows, reply, now, config["SYNC_INTERVAL_SECONDS"],
                                                key or "")
    changed = _changed(rows, progress)

    def work(conn):
        before = orders_repo.history.before_change(conn, [item["b_id"] for item in progress])
        for statement, batch in ((_PROGRESS, progress), (_RESCHEDULE, reschedule), (_FLAG, flags)):
            if batch:
                conn.execute(statement, batch)
        _history(conn, before, progress)
        outbox.order_updated(conn, changed)
        if flags:
            entries = {row.id: reply.get(row.provider_order) for row in rows}
            attempts.flagged_polls(conn, [(flag["b_id"], entries[flag["b_id"]]) for flag in flags],
                                   key)
        return sum(1 for final in finals if _settle(conn, *final))
    refunded = write(work)
    for flag in flags:
        log.warning("order %s: %s; flagged for the operator", present_order(flag["b_id"]),
                    flag["b_attention"])
    return Counter(synced=len(progress) + len(finals), refunded=refunded, flagged=len(flags))


def sync_batch(provider, ids, config, timeouts) -> Counter:
    """Lease up to 100 due orders of one provider, ask for their status in one call, apply it."""
    now = db.now()
    rows = write(lambda conn: conn.execute(_SYNC_CLAIM, {
        "ids": ids, "now": now, "lease_until": now + config["DISPATCH_LEASE_SECONDS"]}).all())
    if not rows:
        return Counter()
    tokens = ",".join(row.provider_order for row in rows)
    try:
        reply = pc.call(provider.url, provider.api_key, "status", {"orders": tokens},
                        timeouts=timeouts)
        if not isinstance(reply, dict):
            raise pc.OutcomeUnknown("the status reply is not an object")
    except pc.ProviderError as error:
        log.warning("provider %s: status call failed: %s", provider.name, error)
        reply, message = None, f"status: {error}"
        write(lambda conn: providers_repo.record_error(conn, provider.id, message))
    return apply_statuses(rows, reply, config, provider.api_key)


def sync_pass(config: dict, stop: threading.Event) -> Counter:
    """Poll every due active order once: per provider, batches of ≤100, several in flight."""
    timeouts = (config["PROVIDER_CONNECT_TIMEOUT"], config["PROVIDER_READ_TIMEOUT"])
    now = db.now()
    with db.read() as conn:
        active = conn.execute(select(providers).where(providers.c.enabled.is_(True))).all()
        due = {provider.id: conn.execute(_SYNC_DUE, {"provider_id": provider.id, "now": now})
               .scalars().all() for provider in active}

    def task(provider, ids):
        return Counter() if stop.is_set() else sync_batch(provider, ids, config, timeouts)

    counts = Counter()
    threads = max(1, config["WORKER_CONCURRENCY"])
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="serva-sync") as pool:
        # Each task runs in a copy of this context: the app context comes along.
        futures = [pool.submit(contextvars.copy_context().run, task, provider,
                               due[provider.id][i:i + MAX_BATCH])
                   for provider in active for i in range(0, len(due[provider.id]), MAX_BATCH)]
        for future in futures:
            counts += future.result()
    return counts
