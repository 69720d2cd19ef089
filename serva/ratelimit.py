"""Rate limits of the API (docs/CONTRACT.md: HTTP 429 `rate_limited` with Retry-After).

Two limits, counted where the caller is known, so they cost one counter increment:
- per key (SERVA_RATE_LIMIT_PER_KEY, default 100/second), right after the key resolved, before
  the action does any work; counted by the key's row id, never by the key itself;
- failed authentications per client address (SERVA_RATE_LIMIT_INVALID_KEYS, default
  30/minute): an unknown, malformed or revoked key. Past the limit such requests get 429
  instead of an answer, while a valid key from the same address keeps working (partners behind
  one NAT or proxy are not locked out by a neighbour's broken script).

The counters live in the storage of Flask-Limiter's engine, `limits` (fixed windows):
`memory://` per process by default, `redis://host:port` via SERVA_RATELIMIT_STORAGE_URI so that
every process and machine shares them. Flask-Limiter's own request hooks are not installed on
the app: they evaluate route limits on every request of the app, measured at +25 % CPU per
`balance` (bench/README.md), for limits the API can only know after reading its parameters."""
import functools
import math
import threading
import time

from flask import current_app, request
from limits import parse
from limits.errors import StorageError
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from .errors import ApiError

_EXTENSION = "serva.ratelimit"


class _MemoryStorage(MemoryStorage):
    """limits' in-process storage, with a cheaper way to count (`count`) and its sweep of
    expired counters at most once a second. Its own sweep is a 10 ms one-shot timer thread
    restarted by the next hit, so under traffic it starts a thread a hundred times a second:
    +12-17 % CPU per `balance`, against +2-3 % with this (bench/README.md, Rate limits). A fixed
    window's count never depends on the sweep: reading a counter drops it once expired."""

    _next_sweep = 0.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._counting = threading.Lock()

    def _MemoryStorage__schedule_expiry(self):  # the parent's private __schedule_expiry
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + 1
            super()._MemoryStorage__schedule_expiry()

    def count(self, key: str, expiry: int) -> int:
        """`incr(key, expiry)` on the same counters, in one lock and a few dictionary reads.
        `incr` goes through limits' error wrapper twice (once per class), its `get`, a
        re-entrant lock per key and a second read: the limiter cost 42 k of a `balance`'s
        ~700 k instructions with it, 23 k with this (bench/README.md, item 20). Named apart
        because limits wraps every `incr` of a subclass in that wrapper again; nothing here
        raises what the wrapper translates."""
        now = time.time()
        with self._counting:
            if self.expirations.get(key, 0) > now:
                count = self.storage[key] + 1
            else:  # a new window: the counter starts again
                count = 1
                self.expirations[key] = now + expiry
            self.storage[key] = count
        self._MemoryStorage__schedule_expiry()
        return count


def _storage(uri: str):
    if uri.strip() in ("memory://", "memory"):
        return _MemoryStorage()
    return storage_from_string(uri, wrap_exceptions=True)


class Limits:
    """The parsed limits and their storage for one app; the storage is opened on first use."""

    def __init__(self, storage_uri: str, per_key: str, invalid_keys: str, prefix: str):
        self.storage_uri, self.prefix = storage_uri, prefix
        self.per_key = parse(per_key) if per_key.strip() else None
        self.invalid_keys = parse(invalid_keys) if invalid_keys.strip() else None
        self._strategy = self._count = None  # the storage's counting call, set with the strategy
        self._lock = threading.Lock()
        self._warned_at = 0.0

    @property
    def strategy(self) -> FixedWindowRateLimiter:
        if self._strategy is None:
            with self._lock:
                if self._strategy is None:
                    strategy = FixedWindowRateLimiter(_storage(self.storage_uri))
                    storage = strategy.storage
                    self._count = getattr(storage, "count", storage.incr)
                    self._strategy = strategy
        return self._strategy

    def hit(self, item, scope: str, identity: str | int) -> None:
        """Count one request; ApiError `rate_limited` (429, Retry-After) past the limit. An
        unreachable storage lets requests through (logged at most once a minute): the limits
        protect the API, they must not take it down with them."""
        strategy = self.strategy
        try:
            # FixedWindowRateLimiter.hit, with its key made once per caller (_key) instead of
            # joined anew on every request (~4 % of a `balance`, bench/README.md).
            key, expiry = _key(item, self.prefix, scope, identity)
            if self._count(key, expiry) <= item.amount:
                return
            reset = strategy.get_window_stats(item, self.prefix, scope, identity).reset_time
        except StorageError:
            if time.monotonic() - self._warned_at > 60:
                self._warned_at = time.monotonic()
                current_app.logger.warning("rate-limit storage unreachable; not limiting",
                                           exc_info=True)
            return
        raise ApiError("rate_limited", seconds=max(1, math.ceil(reset - time.time())))


@functools.lru_cache(maxsize=65536)
def _key(item, *identifiers) -> tuple[str, int]:
    """The storage key of a limit for one caller, and the limit's window in seconds."""
    return item.key_for(*identifiers), item.get_expiry()


def init_app(app):
    config = app.config
    app.extensions[_EXTENSION] = Limits(config["RATELIMIT_STORAGE_URI"], config["RATE_LIMIT_PER_KEY"],
                                        config["RATE_LIMIT_INVALID_KEYS"], config["RATELIMIT_KEY_PREFIX"])


def count_key(key_id: int) -> None:
    """One request of an authenticated key, counted by the key's row id."""
    limits = current_app._get_current_object().extensions[_EXTENSION]  # why: db.get_engine
    if limits.per_key is not None:
        limits.hit(limits.per_key, "key", key_id)


def count_failed_authentication() -> None:
    """One request whose key opened nothing, from this client address."""
    limits = current_app.extensions[_EXTENSION]
    if limits.invalid_keys is not None:
        limits.hit(limits.invalid_keys, "address", request.remote_addr or "unknown")
