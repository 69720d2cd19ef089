"""Rate limits of the API (docs/CONTRACT.md: HTTP 429 `rate_limited` with Retry-After).

Two limits, counted where the caller is known:
- per key (SERVA_RATE_LIMIT_PER_KEY, default 100/second), right after the key resolved, before
  the action does any work; counted by the key's row id, never by the key itself;
- failed authentications per client address (SERVA_RATE_LIMIT_INVALID_KEYS, default
  30/minute): an unknown, malformed or revoked key. Past the limit such requests get 429
  instead of an answer, while a valid key from the same address keeps working (partners behind
  one NAT or proxy are not locked out by a neighbour's broken script).

Both are fixed windows of the `limits` package (the engine under Flask-Limiter), used through
its public API: `parse`, `storage_from_string`, `FixedWindowRateLimiter`. The counters live in
SERVA_RATELIMIT_STORAGE_URI: `redis://host:port` shares them between every worker process and
machine, so a limit is one total however many workers serve; the default `memory://` keeps
them in each worker process (serva.ratelimit_memory), which then enforces the limit on the requests it serves, on its
own (N workers let up to N times the limit through). Flask-Limiter's route decorators do not
fit: the key is only known once the action's parameters are read.
"""
import math
import time

from flask import current_app, request
from limits import parse
from limits.errors import ConfigurationError, StorageError
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

from .errors import ApiError
from .ratelimit_memory import LocalStorage
from .settings import SettingsError, env_name

EXTENSION = "serva.ratelimit"


class Limits:
    """The parsed limits of one app and the limiter counting them."""

    def __init__(self, storage_uri: str, per_key: str, invalid_keys: str, prefix: str):
        self.prefix = prefix
        self.per_key = parse(per_key) if per_key.strip() else None
        self.invalid_keys = parse(invalid_keys) if invalid_keys.strip() else None
        try:
            storage = (LocalStorage() if storage_uri.strip() == "memory://"
                       else storage_from_string(storage_uri, wrap_exceptions=True))
        except ConfigurationError:  # an unknown scheme, or its client library is missing
            raise SettingsError(env_name("RATELIMIT_STORAGE_URI"),
                                "a storage URI that `limits` supports, with its client "
                                "installed: memory://, or redis://host:6379 with the redis "
                                "package", show_value=False) from None
        self.limiter = FixedWindowRateLimiter(storage)
        self.warned_at = 0.0

    def hit(self, item, scope: str, identity) -> None:
        """Count one request; ApiError `rate_limited` (429, Retry-After) past the limit. An
        unreachable storage lets requests through (logged at most once a minute): the limits
        protect the API, they must not take it down with them."""
        identifiers = (self.prefix, scope, str(identity))
        try:
            if self.limiter.hit(item, *identifiers):
                return
            reset = self.limiter.get_window_stats(item, *identifiers).reset_time
        except StorageError:
            if time.monotonic() - self.warned_at > 60:
                self.warned_at = time.monotonic()
                current_app.logger.warning("rate-limit storage unreachable; not limiting",
                                           exc_info=True)
            return
        raise ApiError("rate_limited", seconds=max(1, math.ceil(reset - time.time())))


def init_app(app):
    config = app.config
    app.extensions[EXTENSION] = Limits(config["RATELIMIT_STORAGE_URI"], config["RATE_LIMIT_PER_KEY"],
                                       config["RATE_LIMIT_INVALID_KEYS"], config["RATELIMIT_KEY_PREFIX"])


def count_key(key_id: int) -> None:
    """One request of an authenticated key, counted by the key's row id."""
    limits = current_app.extensions[EXTENSION]
    if limits.per_key is not None:
        limits.hit(limits.per_key, "key", key_id)


def count_failed_authentication() -> None:
    """One request whose key opened nothing, from this client address."""
    limits = current_app.extensions[EXTENSION]
    if limits.invalid_keys is not None:
        limits.hit(limits.invalid_keys, "address", request.remote_addr or "unknown")
