"""Delivering the outbox: the worker's pass claims due events under a lease, sends them
several at once, and records each attempt (those that finish within a tenth of a second in one
transaction, so that deliveries do not take the write lock from the API's orders). At least
once: an event is `delivered` only after a 2xx arrived, and a worker killed mid-delivery
leaves its claim to expire (the event's `next_attempt_at` is the lease's end), so the event is
sent again — with the same webhook-id, by which the receiver de-duplicates.

A failed attempt is tried again on Standard Webhooks' schedule (RETRY_DELAYS, each with a
little jitter so that a receiver coming back is not hit by every retry at once), or after the
receiver's Retry-After on 429 and 503; after the last, the event is `failed` (the operator or
the partner may resend it). A 410 disables the endpoint, as do three days of failures without
one success (endpoints.failed). Every attempt re-checks the destination (addresses), since a
name may resolve elsewhere than when it was registered, and is signed afresh: the timestamp
is the attempt's, which receivers check against their clock."""
import contextvars
import logging
import random
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import bindparam, insert, select, update
from standardwebhooks.webhooks import Webhook

from .. import db
from ..fulfilment.writing import write
from ..schema import webhook_attempts, webhook_endpoints, webhook_events
from . import addresses, endpoints, transport

log = logging.getLogger("serva.worker")

# Before attempt n+1: at once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h.
RETRY_DELAYS = (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
JITTER = 0.1
CLAIM_PER_THREAD = 4
CLAIM_TRIES = 3
RECORD_EVERY_SECONDS = 0.1
RECORD_AT_MOST = 256
MAX_ERROR = 255


def next_delay(attempts: int, asked=None):
    """Seconds until the next attempt after `attempts` failed ones (None: no attempt left);
    the receiver's Retry-After when it gave one."""
    if attempts >= len(RETRY_DELAYS):
        return None
    if asked is not None:
        return asked
    delay = RETRY_DELAYS[attempts]
    return round(delay * random.uniform(1 - JITTER, 1 + JITTER))


# Claiming takes three statements so that the write between them is one short UPDATE: the due
# events are chosen by a read, taken by a conditional UPDATE (an event another worker took
# meanwhile is no longer due, so it is left out), and what this worker took is read back.
_LISTENING = select(webhook_endpoints.c.account_id).where(webhook_endpoints.c.enabled.is_(True))
_DUE = (select(webhook_events.c.id)
        .where(webhook_events.c.state == "pending",
               webhook_events.c.next_attempt_at <= bindparam("now"),
               webhook_events.c.account_id.in_(_LISTENING))
        .order_by(webhook_events.c.next_attempt_at, webhook_events.c.id)
        .limit(bindparam("limit")))
_IDS = bindparam("ids", expanding=True)
_TAKE = (update(webhook_events)
         .where(webhook_events.c.id.in_(_IDS), webhook_events.c.state == "pending",
                webhook_events.c.next_attempt_at <= bindparam("now"))
         .values(next_attempt_at=bindparam("lease_until"), lease_owner=bindparam("owner")))
_TAKEN = (select(webhook_events.c.id, webhook_events.c.msg_id, webhook_events.c.account_id,
                 webhook_events.c.attempts, webhook_events.c.payload)
          .where(webhook_events.c.id.in_(_IDS), webhook_events.c.state == "pending",
                 webhook_events.c.lease_owner == bindparam("owner"),
                 webhook_events.c.next_attempt_at == bindparam("lease_until")))
_ENDPOINT = select(webhook_endpoints).where(webhook_endpoints.c.account_id == bindparam("account_id"))


def claim(owner: str, now: int, limit: int, lease_seconds: int) -> list:
    """Lease up to `limit` due events to `owner` until `now + lease_seconds`; the events.
    When another worker took every event this one chose, it chooses again (a few times)."""
    for _ in range(CLAIM_TRIES):
        with db.read() as conn:
            ids = conn.execute(_DUE, {"now": now, "limit": limit}).scalars().all()
        if not ids:
            return []
        lease = {"ids": ids, "now": now, "owner": owner, "lease_until": now + lease_seconds}
        write(lambda conn, lease=lease: conn.execute(_TAKE, lease))
        with db.read() as conn:
            taken = conn.execute(_TAKEN, lease).all()
        if taken:
            return taken
    return []


def signature(secrets, msg_id: str, stamp: int, body: str) -> str:
    """The webhook-signature header: one `v1,…` per signing secret, space-separated."""
    moment = datetime.fromtimestamp(stamp, timezone.utc)
    return " ".join(Webhook(secret).sign(msg_id, moment, body) for secret in secrets)


def attempt(event, endpoint, allow_private: bool) -> tuple:
    """Send one event once: (Outcome, the URL it went to)."""
    stamp = db.now()
    try:
        destination = addresses.resolve(endpoint.url, allow_private)
    except addresses.DestinationError as refusal:
        return transport.Outcome(None, f"refused: {refusal}"[:MAX_ERROR], None, 0), endpoint.url
    headers = {"webhook-id": event.msg_id, "webhook-timestamp": str(stamp),
               "webhook-signature": signature(endpoints.signing_secrets(endpoint, stamp),
                                              event.msg_id, stamp, event.payload)}
    return transport.send(destination, headers, event.payload.encode()), endpoint.url


# A finished attempt's consequence for its event, only while this worker still holds the
# lease (a worker whose lease passed to another changes nothing: the other records its own
# attempt). Delivered and given-up events are settled by one statement each; a retried one
# has a time of its own (jitter), so those are many rows of one statement (executemany).
_MINE = (webhook_events.c.lease_owner == bindparam("owner"), webhook_events.c.state == "pending")
_SETTLE_ALL = (update(webhook_events).where(webhook_events.c.id.in_(_IDS), *_MINE)
               .values(attempts=webhook_events.c.attempts + 1, lease_owner=None,
                       state=bindparam("new_state"), delivered_at=bindparam("delivered"),
                       next_attempt_at=None))
_ATTEMPT = insert(webhook_attempts)
_RETRY = (update(webhook_events).where(webhook_events.c.id == bindparam("event_id"), *_MINE)
          .values(attempts=webhook_events.c.attempts + 1, lease_owner=None,
                  next_attempt_at=bindparam("next")))


def consequence(event, outcome, stamp: int) -> tuple:
    """What an attempt makes of its event: ('delivered' | 'failed', None), or ('retrying',
    the next attempt's time)."""
    if outcome.ok:
        return "delivered", None
    delay = None if outcome.status == 410 else next_delay(event.attempts + 1, outcome.retry_after)
    if delay is None:
        return "failed", None
    return "retrying", stamp + delay


@dataclass
class Settlement:
    """What a batch of finished attempts writes, made before the write transaction so that
    the transaction only runs its few statements."""
    owner: str
    stamp: int
    attempts: list  # webhook_attempts rows
    finished: dict  # ids per final state: 'delivered', 'failed'
    retries: list  # _RETRY rows: each retried event and its next attempt time
    endpoint_runs: dict
    counts: Counter


def settlement(finished, owner: str, stamp: int) -> Settlement:
    """The rows for attempts that finished (in the order they finished) and their
    consequences for the events and endpoints; counts per result ('lost': the endpoint was
    disabled before the attempt, which was not made)."""
    sent = [attempted for attempted in finished if attempted is not None]
    settled = Settlement(owner, stamp, [], {"delivered": [], "failed": []}, [],
                         endpoint_runs(sent), Counter(lost=len(finished) - len(sent)))
    for event, _endpoint, outcome, url in sent:
        result, next_at = consequence(event, outcome, stamp)
        settled.counts[result] += 1
        settled.attempts.append({
            "event_id": event.id, "account_id": event.account_id, "attempt": event.attempts + 1,
            "url": url[:2048], "status_code": outcome.status, "duration_ms": outcome.duration_ms,
            "error": None if outcome.error is None else outcome.error[:MAX_ERROR],
            "created_at": stamp})
        if result == "retrying":
            settled.retries.append({"event_id": event.id, "owner": owner, "next": next_at})
        else:
            settled.finished[result].append(event.id)
    return settled


def record(conn, settled: Settlement) -> Counter:
    """Write a settlement; its counts."""
    if settled.attempts:
        conn.execute(_ATTEMPT, settled.attempts)
    for state, ids in settled.finished.items():
        if ids:
            conn.execute(_SETTLE_ALL, {"ids": ids, "owner": settled.owner, "new_state": state,
                                       "delivered": settled.stamp if state == "delivered"
                                       else None})
    if settled.retries:
        conn.execute(_RETRY, settled.retries)
    for endpoint_id, runs in settled.endpoint_runs.items():
        for run in runs:
            if run["ok"]:
                endpoints.delivered(conn, endpoint_id)
                continue
            disabled = endpoints.failed(conn, endpoint_id, settled.stamp, gone=run["gone"])
            if disabled:
                log.warning("webhook endpoint of account %s disabled: %s", run["account_id"],
                            disabled)
    return settled.counts


def endpoint_runs(sent) -> dict:
    """Each endpoint's successes and failures in the order they came, a run of like outcomes
    as one entry (a success ends a run of failures; endpoints.failed may disable it)."""
    runs = {}
    for event, endpoint, outcome, _url in sent:
        own = runs.setdefault(endpoint.id, [])
        if own and own[-1]["ok"] == outcome.ok:
            own[-1]["gone"] |= outcome.status == 410
        else:
            own.append({"ok": outcome.ok, "gone": outcome.status == 410,
                        "account_id": event.account_id})
    return runs


def deliver(event, allow_private: bool):
    """Send `event` once; what `settlement` needs, or None when its endpoint was disabled meanwhile
    (the event then waits for the endpoint to be enabled)."""
    with db.read() as conn:
        endpoint = conn.execute(_ENDPOINT, {"account_id": event.account_id}).first()
    if endpoint is None or not endpoint.enabled:
        return None
    outcome, url = attempt(event, endpoint, allow_private)
    return event, endpoint, outcome, url


def delivery_pass(owner: str, config: dict, stop) -> Counter:
    """Deliver every event due now, WEBHOOK_CONCURRENCY at a time; counts per result.

    The pool is kept fed as deliveries finish, and what finished is recorded together at most
    every RECORD_EVERY_SECONDS (and when nothing is left in flight): a few short transactions a
    second instead of one per delivery, which would otherwise take the write lock from the
    API's orders hundreds of times a second. An attempt not yet recorded when the worker dies
    is sent again once its lease passes, with the same webhook-id."""
    threads = max(1, config["WEBHOOK_CONCURRENCY"])
    allow_private = config["WEBHOOK_ALLOW_PRIVATE"]
    counts, in_flight, finished = Counter(), set(), []
    recorded_at, drained = time.monotonic(), False
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="serva-webhook") as pool:
        while True:
            if not stop.is_set() and not drained and len(in_flight) <= threads:
                claimed = claim(owner, db.now(), threads * CLAIM_PER_THREAD - len(in_flight),
                                config["WEBHOOK_LEASE_SECONDS"])
                in_flight.update(pool.submit(contextvars.copy_context().run, deliver, event,
                                             allow_private) for event in claimed)
                drained = not claimed  # claimed again once what is in flight is recorded
            if in_flight:
                done, in_flight = wait(in_flight, timeout=RECORD_EVERY_SECONDS,
                                       return_when=FIRST_COMPLETED)
                finished.extend(future.result() for future in done)
            if finished and (not in_flight or len(finished) >= RECORD_AT_MOST
                             or time.monotonic() - recorded_at >= RECORD_EVERY_SECONDS):
                settled = settlement(finished, owner, db.now())
                counts += write(lambda conn: record(conn, settled))
                finished, recorded_at, drained = [], time.monotonic(), drained and bool(in_flight)
            elif not in_flight and (drained or stop.is_set()):
                return counts
