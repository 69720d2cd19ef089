"""Every call to a provider about a hand-over, kept (`handover_attempts`): the hand-over's
`last_message` says only the latest, and the operator needs the whole story of an order the
provider answered oddly.

A row is written in the transaction that records the attempt's outcome (dispatch.record,
forwarding.record), so a row exists exactly when its outcome was recorded. One row per `add`,
`refill` or `cancel` call made, reached or not; none where no call was made (the order was
settled meanwhile, the provider is disabled). Status polls are not kept one by one (every
poll of every order would flood the table, and what they changed is in the status history):
only a poll whose reply flagged the order for the operator is, once per new flag.

The reply is the provider's text (its JSON, its error, or what went wrong on the way), with
the provider's key masked (a provider may echo it back: `providers.redact`) before it is cut
to HANDOVER_REPLY_LENGTH, so no part of a key is ever stored."""
import json
from collections import namedtuple

from sqlalchemy import insert, select

from .. import providers
from ..db import now
from ..schema import HANDOVER_REPLY_LENGTH, handover_attempts

SHOWN = 200  # the console shows this many, newest first

# What came back from one call: its HTTP status (None: no HTTP reply, or sim://) and text.
Exchange = namedtuple("Exchange", "http_status reply")


def answered(url: str, data) -> Exchange:
    """A call that gave a usable answer (decoded JSON)."""
    return Exchange(None if url.startswith("sim://") else 200,
                    json.dumps(data, default=str, ensure_ascii=False))


def failed(error) -> Exchange:
    """A call that raised a provider_client.ProviderError: the reply it carries, or its
    message when no reply (or an empty one) came."""
    return Exchange(error.status, error.reply or str(error))


def _reply(text, key):
    if text is None:
        return None
    text = providers.redact(str(text), key or "")
    return text if len(text) <= HANDOVER_REPLY_LENGTH else text[:HANDOVER_REPLY_LENGTH - 1] + "…"


def record(conn, order_id: int, dispatch_id, action: str, outcome: str, exchange, key) -> None:
    """One attempt; `exchange` None when no call was made (nothing is written)."""
    if exchange is None:
        return
    conn.execute(insert(handover_attempts).values(
        dispatch_id=dispatch_id, order_id=order_id, created_at=now(), action=action[:16],
        outcome=outcome[:16], http_status=exchange.http_status,
        reply=_reply(exchange.reply, key)))


def flagged_polls(conn, entries, key) -> int:
    """The status polls that flagged their order: (order id, the provider's entry for it)."""
    stamp = now()
    rows = [{"dispatch_id": None, "order_id": order_id, "created_at": stamp, "action": "status",
             "outcome": "flagged", "http_status": None,
             "reply": _reply(json.dumps(entry, default=str, ensure_ascii=False), key)}
            for order_id, entry in entries]
    if rows:
        conn.execute(insert(handover_attempts), rows)
    return len(rows)


def attempts_of(conn, order_id: int, limit: int = SHOWN):
    """The order's last `limit` attempts, newest first."""
    return conn.execute(select(handover_attempts)
                        .where(handover_attempts.c.order_id == order_id)
                        .order_by(handover_attempts.c.id.desc()).limit(limit)).all()
