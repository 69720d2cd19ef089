"""Group commit on SQLite: the orders of concurrent request threads in one transaction, one
fsync.

With synchronous=FULL every commit waits for the disk (about a millisecond here) and SQLite
has one writer at a time, so orders committed one by one queue behind each other's fsync
(`make bench-ab`: `add` 1.26× with the group commit; bench/README.md). The first thread to arrive leads: it opens one `write()` transaction,
runs its own work and that of every thread that queued meanwhile, each inside its own
SAVEPOINT (SQLAlchemy's `begin_nested`: a work that raises is rolled back alone and its error
goes to its own thread), commits once and hands the results out; the next queued thread then
leads the next group. Nothing is answered before the COMMIT that made it durable returned, and
if that COMMIT fails every work of the group fails. Works run one after another in one
transaction, so each sees the ones before it exactly as serial transactions would: every rule
of the database still decides. Each work waits at most the engine's write bound from its
arrival; one still queued past it gets `Busy` without running."""
import threading
import time

from .engine import Busy, get_engine, write

MAX_GROUP = 64


class _Turn:
    """One thread's work, waiting for (or leading) a group."""

    __slots__ = ("work", "deadline", "wake", "lead", "result", "error")

    def __init__(self, work, deadline):
        self.work, self.deadline = work, deadline
        self.wake = threading.Lock()  # held until the thread is woken
        self.wake.acquire()
        self.lead = False
        self.result = self.error = None

    def outcome(self):
        if self.error is not None:
            raise self.error
        return self.result


class GroupCommit:
    def __init__(self, engine):
        self.engine = engine
        self.mutex = threading.Lock()
        self.queue = []
        self.leading = False

    def run(self, work):
        turn = _Turn(work, time.monotonic() + self.engine.serva_write_wait)
        with self.mutex:
            self.queue.append(turn)
            lead, self.leading = not self.leading, True
        if not lead:
            turn.wake.acquire()  # woken with the outcome, or to lead the next group
            if not turn.lead:
                return turn.outcome()
        try:
            with self.mutex:  # this turn is first in the queue: it goes in this group
                group = self.queue[:MAX_GROUP]
                del self.queue[:len(group)]
            self.commit(group)
        finally:
            for member in group:
                if member is not turn:
                    member.wake.release()
            with self.mutex:
                successor = self.queue[0] if self.queue else None
                self.leading = successor is not None
            if successor is not None:
                successor.lead = True
                successor.wake.release()
        return turn.outcome()

    def commit(self, group) -> None:
        """Run the group's works in one transaction; each member gets its result or error."""
        now = time.monotonic()
        for turn in group:
            if turn.deadline <= now:
                turn.error = Busy("the write waited past its bound in the group-commit queue")
        live = [turn for turn in group if turn.error is None]
        if not live:
            return
        try:
            with write(self.engine, wait=live[0].deadline - now) as conn:
                if len(live) == 1:  # alone: its error rolls the transaction back
                    live[0].result = live[0].work(conn)
                    return
                for turn in live:
                    try:
                        with conn.begin_nested():
                            turn.result = turn.work(conn)
                    except Exception as error:  # noqa: BLE001 - this work's own failure
                        turn.error = error
        except BaseException as error:  # nothing of the group was committed
            for turn in live:
                if turn.error is None:
                    turn.result, turn.error = None, error
            if not isinstance(error, Exception):
                raise


def write_grouped(work, engine=None):
    """`work(conn)` in a write transaction, returning its result: on SQLite grouped with other
    threads' concurrent works into one transaction and one commit (`GroupCommit`); elsewhere
    a transaction of its own. The work must have no effect outside the transaction and must
    not read the request (it may run in another request's thread)."""
    engine = engine or get_engine()
    if engine.dialect.name != "sqlite":
        with write(engine) as conn:
            return work(conn)
    group = getattr(engine, "serva_group_commit", None)
    if group is None:
        with _MAKING:
            group = getattr(engine, "serva_group_commit", None)
            if group is None:
                group = engine.serva_group_commit = GroupCommit(engine)
    return group.run(work)


_MAKING = threading.Lock()
