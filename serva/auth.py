"""The key resolver: where an API request's key comes from and what it may do.

A key may arrive in the body, the query string, `x-api-key` or `Authorization: Bearer`; all
of them must agree. Errors come in the contract's order: missing, invalid, revoked, banned,
not approved.

Resolving a key is one indexed SELECT and nothing else: a request never writes for its key,
and so never waits for the write lock (a `balance` is answered while another process holds it).
The key's "last used" time is kept at most once per KEY_LAST_USED_INTERVAL: uses are queued
in memory and written off the request path by a timer thread, together in one statement, at
most once a second (a key's first use included). While the database is busy the write is
skipped and tried again a second later; a use that cannot be written for a minute is dropped
(it is a convenience for the dashboard, not an account of money)."""
import atexit
import threading
import weakref

from flask import current_app, request

from . import db, keys
from .errors import ApiError
from .spec import KEY

TOUCH_FLUSH_SECONDS = 1
_TOUCHES = "serva.key_touches"


def _bearer(header: str) -> str | None:
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def raw_key(body_keys) -> str:
    """The one key this request carries, from any of the four places (the headers read from
    the WSGI environ as they arrived, the query string parsed only when there is one)."""
    environ = request.environ
    found = [*body_keys, environ.get("HTTP_X_API_KEY"),
             _bearer(environ.get("HTTP_AUTHORIZATION", "")),
             *(request.args.getlist(KEY.name) if environ.get("QUERY_STRING") else ())]
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
    row = keys.find_key(raw, statement, params)
    if row is None:
        raise ApiError("invalid_key")
    if row.revoked_at is not None:
        raise ApiError("key_revoked")
    if row.banned:
        raise ApiError("account_banned")
    if row.api_access != "approved":
        raise ApiError("api_access_not_approved")
    stamp = db.now()
    interval = current_app.config["KEY_LAST_USED_INTERVAL"]
    if row.last_used_at is None or stamp - row.last_used_at >= interval:
        _touches().add(row.key_id, stamp)
    return row


class _Touches:
    """Key uses waiting to be written, for one app (one engine) in this process."""

    WAIT_SECONDS = 0.1  # how long the timer's write waits for the lock before it skips
    MAX_ATTEMPTS = 60

    def __init__(self, engine, interval, logger):
        self.engine, self.interval, self.logger = engine, interval, logger
        self.lock = threading.Lock()
        self.pending = {}  # key_id -> stamp of the use to record
        self.timer = None
        self.attempts = 0

    def add(self, key_id, stamp):
        """Queue one use; the first of a batch starts the timer that writes them."""
        with self.lock:
            self.pending.setdefault(key_id, stamp)
            self._schedule()

    def _schedule(self):  # with self.lock held
        if self.timer is None and self.pending:
            self.timer = threading.Timer(TOUCH_FLUSH_SECONDS, self._on_timer)
            self.timer.daemon = True
            self.timer.start()

    def _on_timer(self):
        with self.lock:
            self.timer = None
        self.flush(wait=self.WAIT_SECONDS)

    def flush(self, wait=None):
        """Write every queued use; on failure (busy) keep them for the next try."""
        with self.lock:
            batch, self.pending = self.pending, {}
        if not batch:
            return
        try:
            with db.write(self.engine, wait) as conn:
                keys.touch_keys(conn, batch, self.interval)
            self.attempts = 0
        except Exception as error:  # noqa: BLE001 - logged, retried by the next timer
            self.attempts += 1
            with self.lock:
                keep = self.attempts < self.MAX_ATTEMPTS
                if keep:
                    for key_id, stamp in batch.items():
                        self.pending.setdefault(key_id, stamp)
                    self._schedule()
                else:
                    self.attempts = 0
            if not keep:
                self.logger.warning("dropped the last-used times of %d key(s): the database "
                                    "could not be written for a minute", len(batch))
            elif self.attempts == 1:
                # A busy database is expected here: one line; anything else with its traceback.
                self.logger.warning("could not record key use yet (retrying every %ds): %s",
                                    TOUCH_FLUSH_SECONDS, getattr(error, "orig", None) or error,
                                    exc_info=not db.unavailable(error))


def _touches() -> _Touches:
    app = current_app
    extensions = app.extensions
    touches = extensions.get(_TOUCHES)
    if touches is None:
        created = _Touches(db.get_engine(), app.config["KEY_LAST_USED_INTERVAL"], app.logger)
        touches = extensions.setdefault(_TOUCHES, created)
        if touches is created:
            _flush_at_exit(touches)
    return touches


def _flush_at_exit(touches):
    ref = weakref.ref(touches)

    def flush():
        alive = ref()
        if alive is not None:
            alive.flush(wait=1)
    atexit.register(flush)


def flush_key_uses(app=None) -> None:
    """Write the queued last-used times now (at shutdown; tests)."""
    touches = (app or current_app).extensions.get(_TOUCHES)
    if touches is not None:
        touches.flush()
