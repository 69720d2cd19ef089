"""What `serva prune` deletes: rows that can never be used again. Expired purchase guards and
idempotency records are already ignored by the API; removing them keeps the tables small."""
from collections import namedtuple

from sqlalchemy import delete

from . import sessions
from .schema import idempotency_keys, login_failures, purchase_guards

Pruned = namedtuple("Pruned", "guards replays failures sessions")


def prune(conn, stamp: int, failure_window: int, session_lifetime: int) -> Pruned:
    """Delete what expired by `stamp`: sign-in failures older than `failure_window` seconds
    (they no longer count), sessions revoked or older than `session_lifetime`."""
    guards = conn.execute(delete(purchase_guards)
                          .where(purchase_guards.c.expires_at <= stamp)).rowcount
    replays = conn.execute(delete(idempotency_keys)
                           .where(idempotency_keys.c.expires_at <= stamp)).rowcount
    failures = conn.execute(delete(login_failures)
                            .where(login_failures.c.created_at <= stamp - failure_window)).rowcount
    return Pruned(guards, replays, failures, sessions.prune(conn, session_lifetime))
