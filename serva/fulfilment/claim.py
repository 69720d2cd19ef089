"""Hand-overs (`dispatches` rows: an order's `add`, a refill or a cancel request) claimed
under a lease, released by the pass that holds them, and reaped when their worker died.

A claim moves due rows to `sending` with the pass's name and a lease end, in one statement
(PostgreSQL: `FOR UPDATE SKIP LOCKED`, so two workers never wait on each other's rows; SQLite:
the conditional UPDATE inside BEGIN IMMEDIATE decides), so two passes never hold one row.
Every later change of the row is conditional on the lease still being the pass's: a pass
that was too slow and lost its lease changes nothing."""
import logging
from collections import namedtuple

from sqlalchemy import and_, bindparam, select, update

from .. import db
from ..schema import DISPATCH_KINDS, dispatches, orders, providers, services
from .writing import write

log = logging.getLogger("serva.worker")

MAX_BACKOFF_SECONDS = 6 * 3600

Claimed = namedtuple("Claimed", "dispatch_id kind attempts order")


def backoff(base: int, attempts: int) -> int:
    """Seconds before a hand-over refused for now is due again: doubling from `base`."""
    return min(MAX_BACKOFF_SECONDS, base * 2 ** max(0, attempts - 1))


def _claim_statement():
    due = (select(dispatches.c.id)
           .where(dispatches.c.state == "due", dispatches.c.due_at <= bindparam("now"),
                  dispatches.c.kind.in_(DISPATCH_KINDS),  # the kinds this worker can send
                  (dispatches.c.lease_owner.is_(None)) | (dispatches.c.lease_owner != bindparam("owner")))
           .order_by(dispatches.c.due_at, dispatches.c.id).limit(bindparam("limit"))
           .with_for_update(skip_locked=True))
    return (update(dispatches).where(dispatches.c.id.in_(due.scalar_subquery()))
            .values(state="sending", lease_owner=bindparam("owner"),
                    lease_until=bindparam("lease_until"), attempts=dispatches.c.attempts + 1,
                    updated_at=bindparam("now"))
            .returning(dispatches.c.id, dispatches.c.order_id, dispatches.c.kind,
                       dispatches.c.attempts))


_CLAIM = _claim_statement()
# What sending needs: the order, its service's mapping and its provider (the order's provider
# and the service's are compared: a service relinked since the order was placed is not sent).
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


def claim(owner: str, now: int, lease_seconds: int, limit: int = 1) -> list:
    """Claim up to `limit` due hand-overs for `owner` (a pass) under a lease."""
    rows = write(lambda conn: conn.execute(_CLAIM, {
        "owner": owner, "now": now, "limit": limit, "lease_until": now + lease_seconds}).all())
    if not rows:
        return []
    with db.read() as conn:
        return [Claimed(row.id, row.kind, row.attempts,
                        conn.execute(_DETAILS, {"order_id": row.order_id}).first())
                for row in rows]


def release(conn, claimed: Claimed, owner: str, **values) -> bool:
    """Update the hand-over if this pass still holds it; False when it lost its lease."""
    return conn.execute(update(dispatches)
                        .where(dispatches.c.id == claimed.dispatch_id,
                               dispatches.c.lease_owner == owner,
                               dispatches.c.state.in_(("sending", "unknown")))
                        .values(lease_until=None, updated_at=db.now(), **values)).rowcount == 1


def reap_expired_leases(now: int) -> tuple:
    """Hand-overs whose worker died mid-call: back to due where a resend is safe (the provider
    honours Idempotency-Key), otherwise unknown for the operator. (resent, unknown)."""
    safe = select(orders.c.id).join(providers, providers.c.id == orders.c.provider_id) \
        .where(providers.c.idempotent.is_(True))
    expired = and_(dispatches.c.state == "sending", dispatches.c.lease_until < now)

    def work(conn):
        resent = conn.execute(update(dispatches).where(expired, dispatches.c.order_id.in_(safe))
                              .values(state="due", due_at=now, lease_owner=None, lease_until=None,
                                      updated_at=now,
                                      last_message="worker stopped mid-call; resent with the same "
                                                   "idempotency key")).rowcount
        unknown = conn.execute(update(dispatches).where(expired)
                               .values(state="unknown", lease_until=None, updated_at=now,
                                       last_message="worker stopped while handing it over; "
                                                    "outcome unknown")).rowcount
        return resent, unknown
    resent, unknown = write(work)
    if unknown:
        log.warning("%d hand-overs interrupted by a stopped worker are now unknown", unknown)
    return resent, unknown
