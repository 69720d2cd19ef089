"""The per-process counters behind `memory://`: a `limits` storage (its documented extension
point, a `Storage` subclass) that expires counts when they are next read.

`limits`' own MemoryStorage expires counts from a timer thread that it starts again whenever
the last one has finished: under a steady load that is a new thread every ~10 ms, whose start
the request thread waits for, and which measured 13 % of a `balance` request. Here a count
carries its window's end and a request past it starts a new window; expired counts are swept
when the table has doubled since the last sweep, so memory stays bounded by the keys seen in a
window."""
import threading
import time

from limits.storage import Storage


class LocalStorage(Storage):
    STORAGE_SCHEME = ["serva-local"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **_options):
        super().__init__(uri, wrap_exceptions=wrap_exceptions)
        self.lock = threading.Lock()
        self.counts = {}  # key -> [count, expires_at (time.time())]
        self.swept_at_size = 1024

    @property
    def base_exceptions(self):
        return ValueError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        with self.lock:
            entry = self.counts.get(key)
            if entry is None or entry[1] <= now:
                entry = self.counts[key] = [0, now + expiry]
                if len(self.counts) > self.swept_at_size:
                    self.sweep(now)
            entry[0] += amount
            return entry[0]

    def sweep(self, now: float) -> None:
        """Drop expired counts (the caller holds the lock)."""
        self.counts = {key: entry for key, entry in self.counts.items() if entry[1] > now}
        self.swept_at_size = max(1024, 2 * len(self.counts))

    def get(self, key: str) -> int:
        entry = self.counts.get(key)
        return entry[0] if entry is not None and entry[1] > time.time() else 0

    def get_expiry(self, key: str) -> float:
        entry = self.counts.get(key)
        return entry[1] if entry is not None and entry[1] > time.time() else time.time()

    def check(self) -> bool:
        return True

    def reset(self) -> int | None:
        with self.lock:
            count, self.counts = len(self.counts), {}
        return count

    def clear(self, key: str) -> None:
        with self.lock:
            self.counts.pop(key, None)
