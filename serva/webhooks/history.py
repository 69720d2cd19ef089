"""What was delivered: the last attempts of an account (the dashboard, `serva webhook
deliveries`), and sending an event again (`resend`), with its own webhook-id kept so that a
receiver that did get it the first time recognizes it."""
from sqlalchemy import select, update

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
