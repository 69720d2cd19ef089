"""What `serva prune` deletes: rows that can never be used again, and webhook history past
its retention. Expired purchase guards and idempotency records are already ignored by the
API; removing them keeps the tables small. Old webhook events go in bounded batches, each its
own transaction, so a large outbox never holds the write lock for long."""
from collections import namedtuple

from sqlalchemy import delete

from . import db, sessions
from .schema import idempotency_keys, login_failures, purchase_guards
from .webhooks import history

Pruned = namedtuple("Pruned", "guards replays failures sessions events attempts")
DAY = 86_400
WEBHOOK_BATCH = 500  # events per transaction (and bound parameters per IN list)


def prune(stamp: int, failure_window: int, session_lifetime: int, webhook_retention_days: int,
          batch: int = WEBHOOK_BATCH) -> Pruned:
    """Delete what expired by `stamp`: sign-in failures older than `failure_window` seconds
    (they no longer count), sessions revoked or older than `session_lifetime`, webhook events
    delivered or given up more than `webhook_retention_days` after they were made, with their
    attempts (a pending event is kept whatever its age)."""
    with db.write() as conn:
        guards = conn.execute(delete(purchase_guards)
                              .where(purchase_guards.c.expires_at <= stamp)).rowcount
        replays = conn.execute(delete(idempotency_keys)
                               .where(idempotency_keys.c.expires_at <= stamp)).rowcount
        failures = conn.execute(delete(login_failures).where(
            login_failures.c.created_at <= stamp - failure_window)).rowcount
        ended = sessions.prune(conn, session_lifetime)
    events = attempts = 0
    before = stamp - webhook_retention_days * DAY
    while True:
        with db.write() as conn:
            deleted = history.prune_batch(conn, before, batch)
        events, attempts = events + deleted[0], attempts + deleted[1]
        if deleted[0] < batch:
            return Pruned(guards, replays, failures, ended, events, attempts)
