"""What was delivered: the last attempts of an account (the dashboard, `serva webhook
deliveries`), sending an event again (`resend`), with its own webhook-id kept so that a
receiver that did get it the first time recognizes it, and forgetting old finished events
(`serva prune`)."""
from sqlalchemy import bindparam, delete, select, update

from ..db import now
from ..schema import webhook_attempts, webhook_events

_ATTEMPTS = (select(webhook_attempts.c.id, webhook_attempts.c.attempt,
                    webhook_attempts.c.status_code, webhook_attempts.c.duration_ms,
                    webhook_attempts.c.error, webhook_attempts.c.created_at,
                    webhook_attempts.c.url, webhook_events.c.msg_id, webhook_events.c.type,
                    webhook_events.c.state)
             .join(webhook_events, webhook_events.c.id == webhook_attempts.c.event_id))


class ResendError(ValueError):
    pass


def recent_attempts(conn, account_id: int, limit: int = 20):
    """The account's last attempts, newest first."""
    return conn.execute(_ATTEMPTS.where(webhook_attempts.c.account_id == account_id)
                        .order_by(webhook_attempts.c.id.desc()).limit(limit)).all()


def recent_events(conn, account_id: int, limit: int = 20):
    return conn.execute(select(webhook_events).where(webhook_events.c.account_id == account_id)
                        .order_by(webhook_events.c.id.desc()).limit(limit)).all()


def resend(conn, msg_id: str, account_id=None, only_failed=False):
    """Make the event due now with a fresh retry schedule; its row. ResendError when there is
    no such event (of this account), it is waiting already, or (`only_failed`) it was
    delivered."""
    mine = [webhook_events.c.msg_id == msg_id]
    if account_id is not None:
        mine.append(webhook_events.c.account_id == account_id)
    states = ("failed",) if only_failed else ("failed", "delivered")
    row = conn.execute(update(webhook_events).where(*mine, webhook_events.c.state.in_(states))
                       .values(state="pending", attempts=0, next_attempt_at=now(),
                               lease_owner=None, delivered_at=None)
                       .returning(webhook_events.c.id, webhook_events.c.msg_id)).first()
    if row is not None:
        return row
    current = conn.execute(select(webhook_events.c.state).where(*mine)).scalar()
    if current is None:
        raise ResendError(f"no event {msg_id}")
    if current == "pending":
        raise ResendError(f"event {msg_id} is waiting to be delivered already")
    raise ResendError(f"event {msg_id} was delivered; only a failed event can be sent again here")


# Finished: delivered, or given up (`failed`). A pending event may still be sent (retrying, or
# waiting for its disabled endpoint), so it is never pruned. The WHERE is the partial index
# ix_webhook_events_finished's range; FOR UPDATE (PostgreSQL) keeps a concurrent `resend`
# from making one pending between the choice and the delete.
_FINISHED = webhook_events.c.state != "pending"
_OLD_FINISHED = (select(webhook_events.c.id)
                 .where(_FINISHED, webhook_events.c.created_at <= bindparam("before"))
                 .limit(bindparam("limit")).with_for_update(skip_locked=True))


def prune_batch(conn, before: int, limit: int) -> tuple:
    """Delete at most `limit` finished events created at or before `before`, with their
    attempts; (events, attempts) deleted. Bounded so that one transaction stays short on a
    big outbox: the caller repeats while a batch comes back full."""
    ids = conn.execute(_OLD_FINISHED, {"before": before, "limit": limit}).scalars().all()
    if not ids:
        return 0, 0
    attempts = conn.execute(delete(webhook_attempts)
                            .where(webhook_attempts.c.event_id.in_(ids))).rowcount
    events = conn.execute(delete(webhook_events)
                          .where(webhook_events.c.id.in_(ids), _FINISHED)).rowcount
    return events, attempts
