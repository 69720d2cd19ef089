"""A partner's webhook endpoint: one per account, its URL and its signing secret.

The secret signs (HMAC-SHA256, Standard Webhooks), so Serva must be able to read it back: it
cannot be hashed like an API key. It is stored as is, like a provider's API key, and not
encrypted: the key to decrypt it would have to sit on the same host (the instance's secret),
so encryption would only move it next to its key, and Serva adds no cipher of its own. It is
shown once — in the answer that created it (`serva webhook set`, `rotate-secret`, the
dashboard's reveal) — never logged, and afterwards only as its first characters. A leaked
secret is replaced with a rotation; the old one still signs for ROTATION_OVERLAP_SECONDS
(two `v1,` signatures), so the partner can switch without losing an event."""
import base64
import secrets

from sqlalchemy import insert, select, update

from ..db import now
from ..schema import webhook_endpoints
from . import addresses

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
ROTATION_OVERLAP_SECONDS = 24 * 3600
FAILING_DISABLES_AFTER_SECONDS = 3 * 86_400
MAX_REASON = 255


def new_secret() -> str:
    """`whsec_` and 32 random bytes in base64: the form the standardwebhooks libraries read."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def masked(secret: str) -> str:
    """A secret as shown after its one reveal: enough to tell two apart, not to sign."""
    return secret[:len(SECRET_PREFIX) + 4] + "…"


def get(conn, account_id: int):
    return conn.execute(select(webhook_endpoints)
                        .where(webhook_endpoints.c.account_id == account_id)).first()


def check_url(url: str, allow_private: bool) -> str:
    """The URL as it will be stored, or addresses.DestinationError saying why it may not be
    used (checked now, and again at every connection)."""
    addresses.resolve(url, allow_private)
    return url.strip()


def set_url(conn, account_id: int, url: str, allow_private: bool):
    """Point the account's endpoint at `url` (checked) and enable it. Returns the new secret
    when the endpoint is created, None when it existed (its secret is kept: the partner's
    receiver goes on verifying)."""
    url = check_url(url, allow_private)
    stamp = now()
    changed = conn.execute(update(webhook_endpoints)
                           .where(webhook_endpoints.c.account_id == account_id)
                           .values(url=url, enabled=True, disabled_reason=None, disabled_at=None,
                                   failing_since=None, updated_at=stamp)).rowcount
    if changed:
        return None
    secret = new_secret()
    conn.execute(insert(webhook_endpoints).values(account_id=account_id, url=url, secret=secret,
                                                  enabled=True, created_at=stamp,
                                                  updated_at=stamp))
    return secret


def disable(conn, account_id: int, reason: str) -> bool:
    """Stop deliveries (events are no longer written for it); False when there is none."""
    return bool(conn.execute(update(webhook_endpoints)
                             .where(webhook_endpoints.c.account_id == account_id)
                             .values(enabled=False, disabled_reason=reason[:MAX_REASON],
                                     disabled_at=now(), updated_at=now())).rowcount)


def enable(conn, account_id: int) -> bool:
    """Deliveries again, the failure count started afresh; False when there is none."""
    return bool(conn.execute(update(webhook_endpoints)
                             .where(webhook_endpoints.c.account_id == account_id)
                             .values(enabled=True, disabled_reason=None, disabled_at=None,
                                     failing_since=None, updated_at=now())).rowcount)


def rotate_secret(conn, account_id: int):
    """A new secret (returned, shown once); the current one keeps signing beside it for a
    day. None when the account has no endpoint."""
    row = get(conn, account_id)
    if row is None:
        return None
    secret = new_secret()
    stamp = now()
    conn.execute(update(webhook_endpoints).where(webhook_endpoints.c.id == row.id).values(
        secret=secret, previous_secret=row.secret,
        previous_secret_until=stamp + ROTATION_OVERLAP_SECONDS, updated_at=stamp))
    return secret


def signing_secrets(row, stamp: int) -> list:
    """The secrets that sign a delivery at `stamp`: the current one, and the previous one
    during its day of overlap."""
    current = [row.secret]
    if row.previous_secret and (row.previous_secret_until or 0) > stamp:
        current.append(row.previous_secret)
    return current


def delivered(conn, endpoint_id: int) -> None:
    """A success: the endpoint is no longer failing."""
    conn.execute(update(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id,
                                                 webhook_endpoints.c.failing_since.is_not(None))
                 .values(failing_since=None))


def failed(conn, endpoint_id: int, stamp: int, gone: bool = False):
    """A failed attempt; disables the endpoint when it answered 410 Gone, or has failed since
    FAILING_DISABLES_AFTER_SECONDS ago without one success. Returns the reason it was
    disabled, or None."""
    conn.execute(update(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id,
                                                 webhook_endpoints.c.failing_since.is_(None))
                 .values(failing_since=stamp))
    row = conn.execute(select(webhook_endpoints.c.failing_since, webhook_endpoints.c.enabled)
                       .where(webhook_endpoints.c.id == endpoint_id)).first()
    if row is None or not row.enabled:
        return None
    if gone:
        reason = "the endpoint answered 410 Gone"
    elif stamp - row.failing_since >= FAILING_DISABLES_AFTER_SECONDS:
        reason = "every delivery failed for 3 days without one success"
    else:
        return None
    conn.execute(update(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id)
                 .values(enabled=False, disabled_reason=reason, disabled_at=stamp,
                         updated_at=stamp))
    return reason
