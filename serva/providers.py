"""Upstream providers: the operator's list of panels orders are handed over to.

A provider's key is a secret Serva must send, so it is stored as given; it leaves this module
only masked (`mask_key`) — never printed in full, never logged."""
from urllib.parse import urlsplit

from sqlalchemy import and_, case, func, insert, select, update

from .db import now
from .schema import ACTIVE_STATUSES, dispatches, orders, providers

MAX_NAME = 64


class ProviderError(ValueError):
    """A provider definition or name the operator must fix."""


def mask_key(key: str) -> str:
    """'abcd…wxyz': enough to recognise a key, never enough to use it."""
    if not key:
        return "-"
    return f"{key[:4]}…{key[-4:]}" if len(key) >= 16 else "…" + key[-2:] if len(key) >= 8 else "…"


def redact(text: str, key: str) -> str:
    """Text from or about a provider (its messages, its catalog) with its key masked, in case
    the provider echoes it back (a key under 8 characters is no real secret; masking it would
    mangle every word that contains it)."""
    return text.replace(key, mask_key(key)) if key and len(key) >= 8 else text


def check_url(url: str) -> str:
    url = (url or "").strip()
    if url.startswith("sim://"):
        return url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProviderError(f"the URL must be the provider's http(s) API endpoint (or sim://), "
                            f"not {url!r}")
    return url


def check_name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > MAX_NAME or any(c.isspace() for c in name):
        raise ProviderError(f"a provider name is 1-{MAX_NAME} characters without spaces")
    return name


def add(conn, name: str, url: str, key: str) -> int:
    name, url = check_name(name), check_url(url)
    if not key or not key.strip():
        raise ProviderError("the provider's API key is required")
    if get(conn, name) is not None:
        raise ProviderError(f"a provider named {name} exists already")
    return conn.execute(insert(providers).values(name=name, url=url, api_key=key.strip(),
                                                 created_at=now())).inserted_primary_key[0]


def get(conn, name: str):
    return conn.execute(select(providers).where(providers.c.name == name)).first()


def get_by_id(conn, provider_id: int):
    return conn.execute(select(providers).where(providers.c.id == provider_id)).first()


def require(conn, name: str):
    row = get(conn, name)
    if row is None:
        raise ProviderError(f"no provider named {name}")
    return row


def list_all(conn):
    return conn.execute(select(providers).order_by(providers.c.name)).all()


def set_enabled(conn, name: str, enabled: bool) -> None:
    conn.execute(update(providers).where(providers.c.id == require(conn, name).id)
                 .values(enabled=enabled))


def record_balance(conn, provider_id: int, balance: int, currency: str, idempotent: bool) -> None:
    conn.execute(update(providers).where(providers.c.id == provider_id).values(
        balance=balance, balance_currency=(currency or "")[:8], balance_at=now(),
        idempotent=idempotent))


def record_error(conn, provider_id: int, message: str) -> None:
    conn.execute(update(providers).where(providers.c.id == provider_id).values(
        last_error=message[:255], last_error_at=now()))


def retry(conn, name: str) -> int:
    """Make the provider's waiting hand-overs due now (e.g. after topping it up)."""
    provider = require(conn, name)
    waiting = (select(orders.c.id).where(orders.c.provider_id == provider.id)
               .scalar_subquery())
    return conn.execute(update(dispatches)
                        .where(dispatches.c.state == "due", dispatches.c.order_id.in_(waiting))
                        .values(due_at=now(), updated_at=now())).rowcount


def counts(conn) -> dict:
    """provider id -> (waiting, in flight, unknown): hand-overs not yet accepted, accepted orders
    still active upstream, hand-overs whose outcome is unknown."""
    per_dispatch = conn.execute(
        select(orders.c.provider_id,
               func.sum(case((dispatches.c.state.in_(("due", "sending")), 1), else_=0)),
               func.sum(case((dispatches.c.state == "unknown", 1), else_=0)))
        .select_from(dispatches.join(orders, orders.c.id == dispatches.c.order_id))
        .where(dispatches.c.state.in_(("due", "sending", "unknown")))
        .group_by(orders.c.provider_id)).all()
    in_flight = dict(conn.execute(
        select(orders.c.provider_id, func.count())
        .where(and_(orders.c.provider_order.is_not(None), orders.c.status.in_(ACTIVE_STATUSES)))
        .group_by(orders.c.provider_id)).all())
    result = {}
    for provider_id, waiting, unknown in per_dispatch:
        result[provider_id] = (int(waiting or 0), in_flight.get(provider_id, 0), int(unknown or 0))
    for provider_id, flying in in_flight.items():
        result.setdefault(provider_id, (0, flying, 0))
    return result
