"""The key resolver: where an API request's key comes from and what it may do.

A key may arrive in the body, the query string, `x-api-key` or `Authorization: Bearer`; all
of them must agree. Errors come in the contract's order: missing, invalid, revoked, banned,
not approved.

Resolving a key is one indexed SELECT and nothing else: a read-only request stays a read. The
key's "last used" time is kept at most once per KEY_LAST_USED_INTERVAL, and even those updates
are collected per process and written together, in one transaction at most once a second
(a key's very first use is written at once). However many partners poll, last-used upkeep
costs one small write a second, not one write per partner per interval."""
import atexit
import threading
import weakref

from flask import current_app, request

from . import db, keys
from .errors import ApiError

TOUCH_FLUSH_SECONDS = 1
_TOUCHES = "serva.key_touches"


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def raw_key(body_keys) -> str:
    """The one key this request carries, from any of the four places."""
    found = [*body_keys, *request.args.getlist("key"), request.headers.get("X-Api-Key"), _bearer()]
    distinct = {k.strip() if isinstance(k, str) else repr(k) for k in found if k is not None}
    distinct.discard("")
    if not distinct:
        raise ApiError("missing_key")
    if len(distinct) > 1:
        raise ApiError("ambiguous_key")
    return distinct.pop()


def authenticate(body_keys, statement=None, params=None):
    """The key+account row of the caller; raises the first applicable auth error. With a
    `statement` (keys.resolve_select + an action's columns) the row carries the action's
    data as well: one round trip to the database for the whole request."""
    raw = raw_key(body_keys)
    if not keys.looks_like_key(raw):
        raise ApiError("invalid_key")
    with db.fast_read() as conn:
        row = keys.find_key_fast(conn, raw, statement, params)
    if row is None:
        raise ApiError("invalid_key")
    if row.revoked_at is not None:
        raise ApiError("key_revoked")
    if row.banned:
        raise ApiError("account_banned")
    if row.api_access != "approved":
        raise ApiError("api_access_not_approved")
    interval = current_app.config["KEY_LAST_USED_INTERVAL"]
    stamp = db.now()
    if row.last_used_at is None or stamp - row.last_used_at >= interval:
        _record_use(row.key_id, stamp, interval, first=row.last_used_at is None)
    return row


class _Touches:
    """Key uses waiting to be written, for one app (one engine) in this process."""

    def __init__(self, engine):
        self.engine = engine
        self.lock = threading.Lock()
        self.pending = {}  # key_id -> stamp of the use to record
        self.flushed_at = 0

    def take(self, key_id, stamp, first) -> dict:
        """Queue one use; returns the batch to write now (empty when it can wait)."""
        with self.lock:
            if key_id in self.pending and not first:
                return {}
            self.pending[key_id] = stamp
            if not first and stamp - self.flushed_at < TOUCH_FLUSH_SECONDS:
                return {}
            batch, self.pending = self.pending, {}
            self.flushed_at = stamp
            return batch

    def put_back(self, batch):
        with self.lock:
            for key_id, stamp in batch.items():
                self.pending.setdefault(key_id, stamp)

    def flush(self, interval, logger=None):
        """Write every queued use (best effort: a busy database must not fail a request)."""
        with self.lock:
            batch, self.pending = self.pending, {}
        self.write(batch, interval, logger)

    def write(self, batch, interval, logger=None):
        if not batch:
            return
        try:
            with db.write(self.engine) as conn:
                keys.touch_keys(conn, batch, interval)
        except Exception:  # noqa: BLE001 - logged, retried with the next batch
            self.put_back(batch)
            if logger is not None:
                logger.warning("could not record key use", exc_info=True)


def _touches() -> _Touches:
    extensions = current_app.extensions
    touches = extensions.get(_TOUCHES)
    if touches is None:
        created = _Touches(db.get_engine())
        touches = extensions.setdefault(_TOUCHES, created)
        if touches is created:
            _flush_at_exit(touches, current_app.config["KEY_LAST_USED_INTERVAL"])
    return touches


def _flush_at_exit(touches, interval):
    ref = weakref.ref(touches)

    def flush():
        alive = ref()
        if alive is not None:
            alive.flush(interval)
    atexit.register(flush)


def _record_use(key_id, stamp, interval, first):
    touches = _touches()
    batch = touches.take(key_id, stamp, first)
    if batch:
        touches.write(batch, interval, current_app.logger)


def flush_key_uses(app=None) -> None:
    """Write the queued last-used times now (at shutdown; tests)."""
    app = app or current_app
    touches = app.extensions.get(_TOUCHES)
    if touches is not None:
        touches.flush(app.config["KEY_LAST_USED_INTERVAL"], app.logger)
