"""Delivering the outbox: the worker's pass claims due events under a lease, sends them
several at once, and records each attempt (those that finish together in one transaction and
one commit, so that deliveries do not queue the API's orders behind a commit each). At least
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
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

from sqlalchemy import bindparam, insert, select, update
from standardwebhooks.webhooks import Webhook

from .. import db
from ..fulfilment.writing import write, write_grouped
from ..schema import webhook_attempts, webhook_endpoints, webhook_events
from . import addresses, endpoints, transport

log = logging.getLogger("serva.worker")

# Before attempt n+1: at once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h.
RETRY_DELAYS = (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
JITTER = 0.1
CLAIM_PER_THREAD = 4
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


def _claim_statement():
    listening = select(webhook_endpoints.c.account_id).where(webhook_endpoints.c.enabled.is_(True))
    due = (select(webhook_events.c.id)
           .where(webhook_events.c.state == "pending",
                  webhook_events.c.next_attempt_at <= bindparam("now"),
                  webhook_events.c.account_id.in_(listening))
           .order_by(webhook_events.c.next_attempt_at, webhook_events.c.id)
           .limit(bindparam("limit")).with_for_update(skip_locked=True))
    return (update(webhook_events).where(webhook_events.c.id.in_(due.scalar_subquery()))
            .values(next_attempt_at=bindparam("lease_until"), lease_owner=bindparam("owner"))
            .returning(webhook_events.c.id, webhook_events.c.msg_id, webhook_events.c.account_id,
                       webhook_events.c.payload, webhook_events.c.attempts))


_CLAIM = _claim_statement()
_ENDPOINT = select(webhook_endpoints).where(webhook_endpoints.c.account_id == bindparam("account_id"))


def claim(owner: str, now: int, limit: int, lease_seconds: int) -> list:
    return write(lambda conn: conn.execute(_CLAIM, {"owner": owner, "now": now, "limit": limit,
                                                    "lease_until": now + lease_seconds}).all())


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


def record(conn, event, endpoint, outcome, url, owner: str) -> str:
    """Write one attempt and its consequence; 'delivered', 'retrying', 'failed' or 'lost'
    (the lease passed to another worker, which records its own attempt)."""
    stamp = db.now()
    number = event.attempts + 1
    conn.execute(insert(webhook_attempts).values(
        event_id=event.id, account_id=event.account_id, attempt=number, url=url[:2048],
        status_code=outcome.status, duration_ms=outcome.duration_ms,
        error=None if outcome.error is None else outcome.error[:MAX_ERROR], created_at=stamp))
    mine = (webhook_events.c.id == event.id, webhook_events.c.lease_owner == owner,
            webhook_events.c.state == "pending")
    if outcome.ok:
        endpoints.delivered(conn, endpoint.id)
        values, result = {"state": "delivered", "delivered_at": stamp,
                          "next_attempt_at": None}, "delivered"
    else:
        disabled = endpoints.failed(conn, endpoint.id, stamp, gone=outcome.status == 410)
        if disabled:
            log.warning("webhook endpoint of account %s disabled: %s", event.account_id, disabled)
        delay = None if outcome.status == 410 else next_delay(number, outcome.retry_after)
        if delay is None:
            values, result = {"state": "failed", "next_attempt_at": None}, "failed"
        else:
            values, result = {"next_attempt_at": stamp + delay}, "retrying"
    changed = conn.execute(update(webhook_events).where(*mine)
                           .values(attempts=number, lease_owner=None, **values)).rowcount
    return result if changed else "lost"


def deliver(event, owner: str, allow_private: bool) -> str:
    with db.read() as conn:
        endpoint = conn.execute(_ENDPOINT, {"account_id": event.account_id}).first()
    if endpoint is None or not endpoint.enabled:
        return "lost"  # disabled meanwhile: the event waits for the endpoint to be enabled
    outcome, url = attempt(event, endpoint, allow_private)
    return write_grouped(lambda conn: record(conn, event, endpoint, outcome, url, owner))


def delivery_pass(owner: str, config: dict, stop) -> Counter:
    """Deliver every event due now, WEBHOOK_CONCURRENCY at a time; counts per result."""
    threads = max(1, config["WEBHOOK_CONCURRENCY"])
    allow_private = config["WEBHOOK_ALLOW_PRIVATE"]
    counts = Counter()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="serva-webhook") as pool:
        while not stop.is_set():
            claimed = claim(owner, db.now(), threads * CLAIM_PER_THREAD,
                            config["WEBHOOK_LEASE_SECONDS"])
            if not claimed:
                break
            futures = [pool.submit(contextvars.copy_context().run, deliver, event, owner,
                                   allow_private) for event in claimed]
            for future in futures:
                counts[future.result()] += 1
    return counts
