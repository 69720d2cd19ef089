"""API keys: made random, shown once, stored only as a SHA-256 hash, one active per account.

A raw key has 256 bits of entropy, so a fast hash is enough to make a stolen table useless
(there is nothing to brute-force); lookups go by hash and the match is confirmed in constant time.
"""
import hashlib
import hmac
import re
import secrets

from sqlalchemy import bindparam, insert, select, update

from .db import get_engine, now, read
from .db.lookup import Lookup
from .schema import accounts, api_keys

RAW_PREFIX = "sk_"
RAW_KEY_RE = re.compile(r"^sk_[A-Za-z0-9_-]{43}$")
DISPLAY_PREFIX_LENGTH = 10  # "sk_" + 7 characters: enough to tell keys apart, useless to guess


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def looks_like_key(raw) -> bool:
    return isinstance(raw, str) and RAW_KEY_RE.match(raw) is not None


def create_key(conn, account_id: int) -> str:
    """Revoke the account's active key (if any) and make a new one; returns the raw key once."""
    raw = RAW_PREFIX + secrets.token_urlsafe(32)
    stamp = now()
    revoke_key(conn, account_id, stamp)
    conn.execute(insert(api_keys).values(
        account_id=account_id, key_hash=hash_key(raw), prefix=raw[:DISPLAY_PREFIX_LENGTH],
        created_at=stamp))
    return raw


def revoke_key(conn, account_id: int, stamp: int | None = None) -> bool:
    """Revoke the active key; False when there was none."""
    result = conn.execute(update(api_keys)
                          .where(api_keys.c.account_id == account_id, api_keys.c.revoked_at.is_(None))
                          .values(revoked_at=stamp or now()))
    return result.rowcount > 0


def active_key(conn, account_id: int):
    """The active key's metadata (prefix, created_at, last_used_at), never the key."""
    return conn.execute(select(api_keys.c.id, api_keys.c.prefix, api_keys.c.created_at,
                               api_keys.c.last_used_at)
                        .where(api_keys.c.account_id == account_id,
                               api_keys.c.revoked_at.is_(None))).first()


AUTH_COLUMNS = (api_keys.c.id.label("key_id"), api_keys.c.key_hash, api_keys.c.revoked_at,
                api_keys.c.last_used_at, accounts.c.id.label("account_id"), accounts.c.email,
                accounts.c.api_access, accounts.c.banned, accounts.c.balance, accounts.c.discount_bp,
                accounts.c.id_format, accounts.c.hold_reason)
AUTH_FROM = api_keys.join(accounts, accounts.c.id == api_keys.c.account_id)


def resolve_select(*extra_columns, from_=None):
    """The key lookup by hash, plus what an action needs in the same row: scalar subqueries
    correlated to `accounts`, or columns of tables outer-joined into `from_` (which must
    start from AUTH_FROM). One statement per API request instead of two or three."""
    return (select(*AUTH_COLUMNS, *extra_columns)
            .select_from(AUTH_FROM if from_ is None else from_)
            .where(api_keys.c.key_hash == bindparam("key_hash")))


_RESOLVE = Lookup(resolve_select())


def find_key(raw: str, statement=None, params=None):
    """The key row joined with its account, or None: one query by hash, the match confirmed
    in constant time. `statement` (built by `resolve_select`: a `Lookup`, or a Core SELECT
    for one with an IN-list) and its `params` add an action's data to the same row."""
    digest = hash_key(raw)
    statement = _RESOLVE if statement is None else statement
    params = {**(params or {}), "key_hash": digest}
    if isinstance(statement, Lookup):
        row = statement.first(get_engine(), params)
    else:
        with read() as conn:
            row = conn.execute(statement, params).first()
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        return None
    return row


_TOUCH = (update(api_keys)
          .where(api_keys.c.id == bindparam("key_id"),
                 (api_keys.c.last_used_at.is_(None)) | (api_keys.c.last_used_at <= bindparam("cutoff")))
          .values(last_used_at=bindparam("stamp")))


def touch_keys(conn, uses: dict, interval: int) -> None:
    """Record several keys' last use ({key_id: stamp}) in one statement (executemany); a key
    stamped less than `interval` seconds before keeps its time."""
    if uses:
        conn.execute(_TOUCH, [{"key_id": key_id, "stamp": stamp, "cutoff": stamp - interval}
                              for key_id, stamp in uses.items()])
