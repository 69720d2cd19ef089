"""Engine, transactions and schema lifecycle.

Writes run in `write()`: on SQLite that is a real `BEGIN IMMEDIATE` (the SQLAlchemy pysqlite
recipe: the driver's own transaction handling is switched off on connect and the BEGIN is
emitted on the engine's `begin` event), so two writers never both read and then both write.
Reads run in `read()`, where nothing is emitted: each SELECT is its own deferred transaction
and never takes the write lock.

A write never waits without bound (`WRITE_WAIT_SECONDS`): not for this process's writer lock or
group commit, not in SQLite's busy handler. Past the bound, or when the database cannot be
written at all (disk full, read-only, cannot be opened), it fails with an error that
`unavailable()` recognizes, and the app answers HTTP 503 `busy` (nothing was committed).

The engine is Flask-SQLAlchemy's (`sqla.engine`), built from SQLALCHEMY_DATABASE_URI and
SQLALCHEMY_ENGINE_OPTIONS with Serva's pool settings and SQLite events added; statements stay
SQLAlchemy Core on plain connections, no ORM session. Schema versions are Alembic revisions
(`serva/migrations`, driven by Flask-Migrate); `init_schema` is `serva init-db`.
"""
import math
import os
import select
import sqlite3
import threading
import time
from collections import namedtuple
from contextlib import contextmanager

import click
import orjson
from alembic import command
from flask import current_app
from flask.cli import with_appcontext
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Select, create_engine, event, func, insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.schema import CreateIndex, CreateTable

from . import migrations, schema, sqlite_held

READ_ONLY = "serva_read_only"
WRITE_WAIT_SECONDS = 5  # the default of SERVA_WRITE_WAIT_SECONDS
# How long a write waits for a writer place (`writer_places`) before it is refused: short,
# because it waits on a request thread; a place frees within milliseconds unless the
# database is stuck, and then the thread is better spent answering reads.
PLACE_WAIT_SECONDS = 0.5
# A BEGIN IMMEDIATE that has waited this long means another process holds the database (a
# group commit of another worker takes milliseconds): writers without a place are refused at
# once then, so that the threads they would hold keep answering reads.
STALL_SECONDS = 1.0
# SQLite result codes (primary, the low byte) meaning "cannot write now": SQLITE_BUSY,
# SQLITE_LOCKED, SQLITE_READONLY, SQLITE_FULL, SQLITE_CANTOPEN; and PostgreSQL's SQLSTATEs
# for disk full, a read-only transaction (a standby), a lock timeout.
_SQLITE_UNAVAILABLE = {5, 6, 8, 13, 14}
_PG_UNAVAILABLE = {"53100", "25006", "55P03"}
_SQLITE_BUSY, _PG_BUSY = {5, 6}, {"55P03"}


class Busy(Exception):
    """This process could not get its turn to write within the wait bound."""


def unavailable(error, only_busy=False) -> bool:
    """True when `error` means the database cannot be written for now: busy past the wait
    bound, locked, disk full, read-only, cannot be opened. The one place that decides what
    becomes HTTP 503 `busy` (the app's error handler) and one line in the CLI. `only_busy`:
    only waits that ran out (someone else is writing; it passes by itself)."""
    if isinstance(error, Busy):
        return True
    original = getattr(error, "orig", None) or error  # SQLAlchemy wraps the driver's error
    if isinstance(original, sqlite3.Error):
        code = getattr(original, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF in (_SQLITE_BUSY if only_busy else _SQLITE_UNAVAILABLE)
        texts = ("locked",) if only_busy else ("locked", "readonly", "disk is full",
                                               "unable to open")
        return isinstance(original, sqlite3.OperationalError) and any(
            text in str(original) for text in texts)
    return getattr(original, "sqlstate", None) in (_PG_BUSY if only_busy else _PG_UNAVAILABLE)


def retry_after(engine) -> int:
    """The Retry-After (seconds) for a 503 `busy`: the wait bound, at least one second."""
    return max(1, math.ceil(getattr(engine, "serva_write_wait", WRITE_WAIT_SECONDS)))


# Flask-SQLAlchemy's extension object. Its docs call it `db`, but `serva.db` is this module
# (transactions, the home every caller already imports), so the extension is `db.sqla`.
sqla = SQLAlchemy(metadata=schema.metadata, add_models_to_shell=False)
migrate = Migrate()


class SchemaMismatch(RuntimeError):
    """The database is not at the schema revision this Serva needs (the message says why)."""


def now() -> int:
    """Unix seconds; the one clock of the app (freezegun moves it in tests)."""
    return int(time.time())


def engine_options(url, write_wait: float = WRITE_WAIT_SECONDS) -> dict:
    """Serva's engine settings for a URL: pool sizes; on SQLite the busy timeout and threads."""
    url = make_url(url)
    if url.get_backend_name() != "sqlite":
        return {"pool_size": 8, "max_overflow": 16, "pool_pre_ping": True}
    options = {"connect_args": {"check_same_thread": False, "timeout": write_wait}}
    if url.database not in (None, "", ":memory:"):  # in memory: one static connection
        options.update(pool_size=8, max_overflow=16)
    return options


def make_engine(url: str, synchronous: str = "FULL", write_wait: float = WRITE_WAIT_SECONDS,
                writers: int = 3):
    """An engine of Serva's kind outside an app (a second writer in tests, the bench data)."""
    return configure_engine(create_engine(url, **engine_options(url, write_wait)), synchronous,
                            write_wait, writers)


def configure_engine(engine, synchronous: str = "FULL", write_wait: float = WRITE_WAIT_SECONDS,
                     writers: int = 3):
    """Serva's behaviour on an engine nothing has connected through yet; on SQLite the
    PRAGMAs, BEGIN IMMEDIATE for writes, this process's writer lock, writer places and group
    commit. `write_wait`: the most a write waits for the lock (SERVA_WRITE_WAIT_SECONDS);
    `writers`: how many threads may wait to write at once (`writer_places`)."""
    if engine.dialect.name == "sqlite":
        _sqlite_transactions(engine, synchronous, write_wait)
        # SQLite has one writer at a time. Threads of this process queue for it on a lock
        # (woken the moment the writer commits) instead of in SQLite's busy handler, which
        # polls with sleeps of 1, 2, 5, 10… ms and so turns a burst of orders into latency.
        engine.serva_write_lock = threading.RLock()
        engine.serva_stalled_since = None
        engine.serva_group_commit = GroupCommit(engine)
        if engine.url.database not in (None, "", ":memory:"):  # in memory: one shared connection
            _per_thread_readers(engine)
        writer_places(engine, writers)
    elif engine.dialect.name == "postgresql":
        _bounded_lock_waits(engine, write_wait)
        _per_thread_readers(engine)
    engine.serva_write_wait = write_wait
    return engine


def _per_thread_readers(engine):
    """fast_read's connection per thread (on PostgreSQL also `one_call`'s); `engine.dispose()`
    lets go of them as of the pool's."""
    engine.serva_readers = threading.local()

    @event.listens_for(engine, "engine_disposed")
    def on_dispose(_engine):
        engine.serva_readers = threading.local()  # the old ones close when no thread holds them


def _bounded_lock_waits(engine, write_wait):
    """PostgreSQL's counterpart of the busy timeout: a statement that waits for a lock (an
    account row an order locks, say) longer than the bound fails with SQLSTATE 55P03, which
    `unavailable()` turns into 503 `busy`; the transaction rolls back, nothing is charged."""
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record):
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET lock_timeout = {int(write_wait * 1000)}")
        dbapi_connection.commit()  # a SET inside a rolled-back transaction would be undone


def writer_places(engine, count: int) -> None:
    """Let at most `count` threads of this process wait to write at once (SQLite). A thread
    waiting for the write lock is a server thread that answers nothing else; when the database
    is held by someone else, writers beyond these places are refused (503 `busy`) at once
    (STALL_SECONDS) instead of joining the wait, so the other threads keep answering reads;
    in normal operation a writer without a place waits for one (PLACE_WAIT_SECONDS at most).
    `serva serve` sizes it from its threads (`places_for`)."""
    engine.serva_writers = threading.BoundedSemaphore(max(1, count))


def places_for(threads: int) -> int:
    """Writer places for a server of `threads` request threads: three quarters, at least one
    thread always left for reads when there are two or more."""
    return max(1, min(threads - 1, threads * 3 // 4))


_PLACE = threading.local()
_BUSY_MS = "serva_busy_ms"  # the busy timeout a pooled connection has now


@contextmanager
def _writer_place(engine):
    """A writer place for this thread (nested writes reuse the one they have)."""
    places = getattr(engine, "serva_writers", None)
    if places is None or getattr(_PLACE, "held", 0):
        yield
        return
    if not places.acquire(blocking=False):
        give_up = time.monotonic() + min(PLACE_WAIT_SECONDS, engine.serva_write_wait)
        while not places.acquire(timeout=0.02):
            since = engine.serva_stalled_since
            if time.monotonic() >= give_up or (
                    since is not None and time.monotonic() - since > STALL_SECONDS):
                raise Busy("no writer place free: the database is busy")
    _PLACE.held = 1
    try:
        yield
    finally:
        _PLACE.held = 0
        places.release()


def _sqlite_transactions(engine, synchronous, write_wait):
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, record):
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(write_wait * 1000)}")
        record.info[_BUSY_MS] = int(write_wait * 1000)
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn):
        # A group commit begins on the driver (`_transaction(..., on_driver=True)`): a work
        # that then goes through SQLAlchemy joins that transaction.
        if (not conn.get_execution_options().get(READ_ONLY)
                and not conn.connection.driver_connection.in_transaction):
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def get_engine():
    """The app's engine. Here and on the API's other hot paths the app and the request are
    read through `_get_current_object()` (Flask's documented way to the proxied object): each
    attribute read through the `current_app` or `request` proxy costs ~8 k instructions, and
    ~7 of them were 7 % of a `balance` (bench/README.md, item 22)."""
    return current_app._get_current_object().extensions["serva.engine"]


@contextmanager
def read(engine=None):
    """A connection for reads only: no BEGIN, no write lock."""
    with (engine or get_engine()).connect() as conn:
        yield conn.execution_options(**{READ_ONLY: True})


@contextmanager
def write(engine=None):
    """A write transaction (BEGIN IMMEDIATE on SQLite); commits on success, rolls back on error.
    Waits for the write lock at most the engine's wait bound, then raises (`unavailable`)."""
    engine = engine or get_engine()
    with _writer_place(engine):
        with _transaction(engine, _deadline(engine)) as conn:
            yield conn


@contextmanager
def write_soon(engine, wait=None):
    """A write transaction off the request path (upkeep): no writer place, and a wait for the
    lock of `wait` seconds (default: the engine's bound)."""
    wait = engine.serva_write_wait if wait is None else wait
    with _transaction(engine, time.monotonic() + wait) as conn:
        yield conn


def _deadline(engine) -> float:
    return time.monotonic() + engine.serva_write_wait


@contextmanager
def _transaction(engine, deadline, on_driver=False):
    """BEGIN IMMEDIATE … COMMIT, waiting for the write lock until `deadline` (monotonic) at
    most: first for this process's writer lock (threads of one process queue on it, woken the
    moment the writer commits, instead of polling in SQLite's busy handler), then for SQLite's
    lock against other processes (the connection's busy timeout, cut to what is left).
    `on_driver` (SQLite): BEGIN and COMMIT go straight to the driver, ~45 µs less than
    SQLAlchemy's begin/commit machinery (the group commit's leader holds the lock meanwhile)."""
    lock = getattr(engine, "serva_write_lock", None)
    if lock is None:
        with engine.begin() as conn:
            yield conn
        return
    if not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
        raise Busy("another write of this process held the lock past the wait bound")
    try:
        with engine.connect() as conn:
            _busy_timeout(conn, deadline - time.monotonic())
            driver = conn.connection.driver_connection
            engine.serva_stalled_since = time.monotonic()  # while BEGIN IMMEDIATE waits
            try:
                transaction = None if on_driver else conn.begin()
                if on_driver:
                    driver.execute("BEGIN IMMEDIATE")
            finally:
                engine.serva_stalled_since = None
            if transaction is not None:
                with transaction:
                    yield conn
                return
            try:
                yield conn
                if conn.in_transaction():  # a work went through SQLAlchemy (see on_begin)
                    conn.commit()
                else:
                    driver.commit()
            except BaseException:
                if conn.in_transaction():
                    conn.rollback()
                elif driver.in_transaction:
                    driver.rollback()
                raise
    finally:
        lock.release()


def _busy_timeout(conn, seconds):
    """Cut the connection's SQLite busy timeout to the time left (only when it differs from
    what the connection has by more than a tenth of a second: usually nothing is sent)."""
    wanted = max(0, int(seconds * 1000))
    info = conn.connection.info
    if abs(info.get(_BUSY_MS, 0) - wanted) > 100:
        conn.connection.dbapi_connection.execute(f"PRAGMA busy_timeout={wanted}")
        info[_BUSY_MS] = wanted


class _Turn:
    """One thread's unit of work waiting for (or getting) a place in a group commit."""

    __slots__ = ("work", "deadline", "repeatable", "wake", "done", "lead", "result", "error")

    def __init__(self, work, deadline, repeatable=False):
        self.work = work
        self.deadline = deadline
        self.repeatable = repeatable
        # A plain lock held until the thread is woken: cheaper than an Event (a Condition,
        # its lock and a waiter lock per wait), and the leader wakes every member of a group.
        self.wake = threading.Lock()
        self.wake.acquire()
        self.done = False
        self.lead = False
        self.result = self.error = None

    def finish(self):
        self.done = True
        self.wake.release()

    def outcome(self):
        if self.error is not None:
            raise self.error
        return self.result


class GroupCommit:
    """Group commit for SQLite: several threads' write work in one transaction, one fsync.

    With synchronous=FULL every commit waits for the disk (~0.2-1 ms here), and SQLite has one
    writer at a time, so orders placed one transaction each queue behind each other's fsync.
    Here the first thread to arrive leads: it takes the write lock, runs its own work and that
    of every thread that queued meanwhile, each inside its own SAVEPOINT (a work that raises is
    rolled back alone, and its error goes to its own thread; works that may run twice first
    share one SAVEPOINT, see `_all_at_once`), commits once and hands the results out. The next queued thread then leads the next group. Nothing is answered before
    the COMMIT that made it durable has returned; if that COMMIT fails, every work of the group
    fails. Works run one after another in one transaction, so each sees the ones before it
    exactly as in separate serial transactions: every database rule still decides.

    Each work waits at most the write bound from its arrival: a group goes to the database with
    the deadline of its oldest member, and members whose deadline has passed while queued get
    `Busy` without trying."""

    MAX_GROUP = 64
    SAVEPOINT = "serva_group_work"

    def __init__(self, engine):
        self.engine = engine
        self.mutex = threading.Lock()
        self.queue = []
        self.leading = False

    def run(self, work, deadline, repeatable=False):
        turn = _Turn(work, deadline, repeatable)
        with self.mutex:
            self.queue.append(turn)
            lead = not self.leading
            self.leading = True
        if not lead:
            turn.wake.acquire()
            if not turn.lead:
                return turn.outcome()
            # promoted: lead the next group (our work is first in the queue)
        group = []
        try:
            while not turn.done:
                with self.mutex:
                    group = self.queue[:self.MAX_GROUP]
                    del self.queue[:len(group)]
                self._commit(group)
                for member in group:
                    member.finish()
                group = []
        finally:
            for member in group:  # only when _commit raised past its own handling
                if member.error is None and member.result is None:
                    member.error = RuntimeError("the group commit was interrupted")
                member.finish()
            with self.mutex:
                successor = self.queue[0] if self.queue else None
                if successor is None:
                    self.leading = False
            if successor is not None:
                successor.lead = True
                successor.wake.release()  # wakes it as the next leader
        return turn.outcome()

    def _commit(self, group):
        now = time.monotonic()
        for turn in group:
            if turn.deadline <= now:
                turn.error = Busy("the write waited past its bound in the group-commit queue")
        group = [turn for turn in group if turn.error is None]
        if not group:
            return
        try:
            with _transaction(self.engine, group[0].deadline, on_driver=True) as conn:
                if len(group) == 1:
                    group[0].result = group[0].work(conn)
                    return
                dbapi = conn.connection.driver_connection
                if all(turn.repeatable for turn in group) and self._all_at_once(dbapi, group, conn):
                    return
                for turn in group:
                    dbapi.execute(f"SAVEPOINT {self.SAVEPOINT}")
                    try:
                        turn.result = turn.work(conn)
                    except Exception as error:  # noqa: BLE001 - this work's own failure
                        turn.error = error
                        # SQLite may have rolled the whole transaction back (disk full, I/O):
                        # then nothing of the group stands, and it must not go on outside one.
                        try:
                            dbapi.execute(f"ROLLBACK TO SAVEPOINT {self.SAVEPOINT}")
                        except sqlite3.Error:
                            raise error from None
                        if not dbapi.in_transaction:
                            raise error
                    dbapi.execute(f"RELEASE SAVEPOINT {self.SAVEPOINT}")
        except BaseException as error:  # noqa: BLE001 - nothing of the group was committed
            for turn in group:
                if turn.error is None:
                    turn.result, turn.error = None, error
            if not isinstance(error, Exception):
                raise

    def _all_at_once(self, dbapi, group, conn) -> bool:
        """Run the group's works inside one SAVEPOINT instead of one each (two statements a
        group instead of two a work: each is a step through the driver that hands the GIL
        over). True when all succeeded. When one raises, everything is rolled back to the
        savepoint and False returned: the caller runs them again, each in its own savepoint,
        so every work meets the same database as before and the one that failed fails alone.
        Only for works that may run twice (`repeatable`: no effect outside the transaction)."""
        dbapi.execute(f"SAVEPOINT {self.SAVEPOINT}")
        try:
            results = [turn.work(conn) for turn in group]
        except Exception as error:  # noqa: BLE001 - run again one by one, where it fails alone
            try:  # as in _commit: a transaction SQLite rolled back must not go on
                dbapi.execute(f"ROLLBACK TO SAVEPOINT {self.SAVEPOINT}")
            except sqlite3.Error:
                raise error from None
            if not dbapi.in_transaction:
                raise
            dbapi.execute(f"RELEASE SAVEPOINT {self.SAVEPOINT}")
            return False
        dbapi.execute(f"RELEASE SAVEPOINT {self.SAVEPOINT}")
        for turn, result in zip(group, results):
            turn.result = result
        return True


def write_grouped(work, engine=None, repeatable=False):
    """`work(conn)` in a write transaction, returning its result: on SQLite grouped with other
    threads' concurrent works into one transaction and one commit (`GroupCommit`); elsewhere
    a transaction of its own. `repeatable`: the work has no effect outside the transaction,
    so a group may run it twice (`GroupCommit._all_at_once`)."""
    engine = engine or get_engine()
    group = getattr(engine, "serva_group_commit", None)
    if group is None:
        with write(engine) as conn:
            return work(conn)
    with _writer_place(engine):
        return group.run(work, _deadline(engine), repeatable)


@contextmanager
def migrating(engine=None):
    """One connection and one transaction for a whole schema change (BEGIN IMMEDIATE and this
    process's writer lock on SQLite). SQLite's foreign keys are off while it runs, since batch
    operations copy a table, drop the original and rename the copy, and are checked before the
    commit: a violation rolls everything back. For the same reason ALTER TABLE works in its
    legacy mode: the rename must not check the triggers (the ledger's names `accounts`, which
    is missing between the drop and the rename; the copy takes its name back)."""
    engine = engine or get_engine()
    lock = getattr(engine, "serva_write_lock", None)
    if lock is None:
        with engine.begin() as conn:
            yield conn
        return
    if not lock.acquire(timeout=engine.serva_write_wait):
        raise Busy("another write of this process held the lock past the wait bound")
    try:
        with engine.connect() as conn:
            driver = conn.connection.driver_connection
            driver.execute("PRAGMA foreign_keys=OFF")  # only takes effect outside a transaction
            driver.execute("PRAGMA legacy_alter_table=ON")
            try:
                with conn.begin():
                    yield conn
                    if conn.exec_driver_sql("PRAGMA foreign_key_check").first():
                        raise SchemaMismatch("the schema change left rows that break a foreign key")
            finally:
                driver.execute("PRAGMA legacy_alter_table=OFF")
                driver.execute("PRAGMA foreign_keys=ON")
    finally:
        lock.release()


def schema_state(engine):
    with read(engine) as conn:
        return migrations.state(conn)


def schema_revision(engine):
    """The database's schema revision: None when it is empty or not versioned by Alembic."""
    state = schema_state(engine)
    return state.revision if state.kind in ("current", "behind", "unknown") else None


def schema_problem(engine, empty_ok=False):
    """None when this Serva can use the database, else one line saying what to run."""
    state = schema_state(engine)
    if state.kind == "current":
        with read(engine) as conn:
            missing = missing_triggers(conn)
        if missing:  # money would move without its checks (a restore that left them out?)
            return (f"the database lacks the trigger {', '.join(missing)} of its schema "
                    f"revision: run `serva init-db` to re-create it")
    return migrations.problem(state, empty_ok=empty_ok)


def missing_triggers(conn) -> list:
    """The SQLite triggers of the schema (schema.SQLITE_TRIGGERS) the database does not have."""
    if conn.dialect.name != "sqlite":
        return []
    present = set(conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'")
                  .scalars())
    return [name for name in _trigger_names() if name not in present]


def _trigger_names():
    return {sql.split()[2]: sql for triggers in schema.SQLITE_TRIGGERS.values() for sql in triggers}


def require_schema(engine=None, empty_ok=False):
    """Refuse a database behind or ahead of this Serva's head revision (never migrate it)."""
    message = schema_problem(engine or get_engine(), empty_ok=empty_ok)
    if message:
        raise SchemaMismatch(message)


def init_schema(engine=None, reset=False) -> str:
    """`serva init-db`: create a new database at the head revision, or upgrade an existing one
    to it (a first-release database is recognised and adopted as `first_release`); doing it
    again changes nothing. One transaction. Returns what it did, in one line."""
    head = migrations.head()
    with migrating(engine) as conn:
        if reset:
            schema.metadata.drop_all(conn)
            conn.execute(text(f"DROP TABLE IF EXISTS {migrations.VERSION_TABLE}"))
        kind, revision = migrations.state(conn)
        if kind == "empty":
            # Alembic's recipe for a new database: the tables from the metadata, stamped at
            # head (a test proves the revisions build the same schema).
            schema.metadata.create_all(conn)
            migrations.stamp(conn, head)
            return f"created a new database at schema revision {head}"
        if kind == "current":
            missing = missing_triggers(conn)
            for name in missing:
                conn.exec_driver_sql(_trigger_names()[name])
            if missing:
                return f"re-created the trigger {', '.join(missing)} (schema revision {head})"
            return f"the database is already at schema revision {head}: nothing to do"
        if kind not in ("behind", "first_release"):
            raise SchemaMismatch(migrations.problem(migrations.State(kind, revision)))
        command.upgrade(migrations.config(conn), "head")
    if kind == "first_release":
        return (f"recognised a database of Serva's first release (schema version "
                f"{migrations.FIRST_RELEASE_SCHEMA_VERSION}): adopted it as revision "
                f"{migrations.FIRST_RELEASE} and upgraded it to {head}")
    return f"upgraded the database from schema revision {revision} to {head}"


def schema_sql(dialect_engine=None) -> str:
    """The DDL of the schema for SQLite, as written to schema.sql."""
    engine = dialect_engine or create_engine("sqlite://")
    parts = [f"-- Serva schema at revision {migrations.head()}. Generated from serva/schema.py "
             f"by `serva schema-sql`; do not edit by hand."]
    for table in schema.metadata.sorted_tables:
        parts.append(str(CreateTable(table).compile(engine)).strip() + ";")
        for index in sorted(table.indexes, key=lambda i: i.name):
            parts.append(str(CreateIndex(index).compile(engine)).strip() + ";")
        parts.extend(trigger + ";" for trigger in schema.SQLITE_TRIGGERS.get(table.name, ()))
    text = "\n\n".join(parts) + "\n"
    return "\n".join(line.rstrip() for line in text.split("\n"))


def check_writable(engine) -> None:
    """Refuse a database this process cannot write (read-only file or mount, no access): a
    probe row written and rolled back, so nothing changes. A database that is merely busy
    passes (that is transient, and answered with 503 `busy`)."""
    try:
        with write(engine) as conn:
            conn.execute(insert(schema.serva_meta).values(key="serva_write_probe", value="1"))
            raise _ProbeDone
    except _ProbeDone:
        pass
    except Exception as error:  # noqa: BLE001 - reported as one line by the caller
        if unavailable(error, only_busy=True):
            return
        raise NotWritable(f"cannot write the database {engine.url.database or engine.url}: "
                          f"{getattr(error, 'orig', None) or error}") from None


class _ProbeDone(Exception):
    """Rolls the write probe back."""


class NotWritable(RuntimeError):
    """The database cannot be written: the server refuses to start on it."""


def _database_uri(app):
    """SQLALCHEMY_DATABASE_URI as Flask-SQLAlchemy's users set it (a relative SQLite path is
    in the instance folder), else SERVA_DATABASE_URL / DATABASE_URL (relative to the working
    directory, as it always was)."""
    uri = app.config.get("SQLALCHEMY_DATABASE_URI")
    if uri:
        return uri
    url = make_url(app.config["DATABASE_URL"])
    if (url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
            and not url.database.startswith("file:") and not os.path.isabs(url.database)):
        url = url.set(database=os.path.abspath(url.database))
    return url.render_as_string(hide_password=False)


def init_app(app):
    uri = app.config["SQLALCHEMY_DATABASE_URI"] = _database_uri(app)
    ours = engine_options(uri, app.config["WRITE_WAIT_SECONDS"])
    theirs = dict(app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    if "connect_args" in ours and "connect_args" in theirs:
        theirs["connect_args"] = {**ours["connect_args"], **theirs["connect_args"]}
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {**ours, **theirs}
    sqla.init_app(app)
    # Serva never uses the ORM session: drop its per-app-context cleanup from every request.
    app.teardown_appcontext_funcs.remove(sqla._teardown_session)
    with app.app_context():
        engine = configure_engine(sqla.engine, app.config["SQLITE_SYNCHRONOUS"],
                                  app.config["WRITE_WAIT_SECONDS"], app.config.get("WRITE_WAITERS", 3))
    app.config["DATABASE_URL"] = engine.url.render_as_string(hide_password=False)
    app.extensions["serva.engine"] = engine  # what get_engine() returns on the hot path
    migrate.init_app(app, sqla, directory=migrations.DIRECTORY)
    if click.get_current_context(silent=True) is None:
        # Serving: refuse a database behind or ahead of head. The CLI checks per command
        # instead, so `serva init-db` and `serva db upgrade` can open an old database.
        require_schema(engine, empty_ok=True)


@click.command("init-db")
@with_appcontext
@click.option("--reset", is_flag=True, help="Drop every table first (destroys all data).")
def init_db_command(reset):
    """Create the database at the head schema revision, or upgrade it there (keeps data)."""
    try:
        click.echo(init_schema(get_engine(), reset=reset))
    except SchemaMismatch as error:
        click.echo(f"error: {error}", err=True)
        raise click.exceptions.Exit(2)


@click.command("schema-sql")
def schema_sql_command():
    """Print the schema DDL (this is what schema.sql holds)."""
    click.echo(schema_sql(), nl=False)


def upsert(dialect_name: str, table):
    """INSERT … ON CONFLICT for a dialect (SQLite and PostgreSQL share the shape)."""
    if dialect_name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert(table)


# ---------------------------------------------------------------- the API's hot path

class Statement:
    """A Core statement compiled once per dialect and run straight on the DBAPI connection.

    The API's hot paths run a few known statements per request. Through a SQLAlchemy
    `Connection` each one costs ~60 µs of Python (execution context, result and row objects,
    events) around ~5 µs spent in SQLite. Here the SQL that SQLAlchemy compiled for the
    engine's dialect goes to the driver as is. Rows come back as named tuples (attribute access
    like Core rows) holding what the driver returns (SQLite booleans are 0 or 1). Statements
    must not use expanding (IN-list) parameters: build one per list length instead.
    `Statement.per_dialect(build)` takes a function of the dialect name instead, for
    statements built from dialect-specific constructs (an upsert).

    On SQLite a SELECT of several columns is sent as one column, `json_array(...)` of them,
    and unpacked here: Python 3.11's sqlite3 releases the GIL around each column it reads
    (sqlite3_column_type), and under load every release hands the GIL to another waiting
    thread — the API's key lookup (11 columns, 25 for `add`) made a third of a request's GIL
    hand-overs (bench/README.md). The values are the driver's (integers, text, NULL; the
    schema has no REAL or BLOB column); a column that is itself a JSON function's result
    (json_group_array) may arrive decoded, which its readers accept (PostgreSQL's driver
    decodes JSON too).

    A SELECT run by `fast_read` on SQLite keeps the GIL (serva.sqlite_held): the API's
    lookups of a row or a few by key. `held=False` is for one that reads many rows (the whole
    catalog, a batch of orders): through sqlite3, SQLite's work on it overlaps the Python of
    other threads on the other core (with the GIL kept, `status` with 100 ids lost 17 % of its
    req/s; bench/README.md, item 26)."""

    __slots__ = ("statement", "build", "held", "_compiled")

    def __init__(self, statement=None, build=None, held=True):
        self.statement = statement
        self.build = build
        self.held = held
        self._compiled = {}

    @classmethod
    def per_dialect(cls, build, held=True):
        return cls(build=build, held=held)

    def compiled(self, dialect):
        """[sql, default parameters, parameter order or None, row class or None, packed,
        held (a SELECT to run with the GIL kept)]."""
        entry = self._compiled.get(dialect.name)
        if entry is None:
            statement = self.build(dialect.name) if self.build else self.statement
            row_class, packed = None, False
            if (dialect.name == "sqlite" and isinstance(statement, Select)
                    and len(statement.selected_columns) > 1):
                row_class = namedtuple("Row", statement.selected_columns.keys(), rename=True)
                statement = statement.with_only_columns(
                    func.json_array(*statement.selected_columns), maintain_column_froms=True)
                packed = True
            compiled = statement.compile(dialect=dialect)
            defaults = {name: value for name, value in compiled.params.items() if value is not None}
            order = tuple(compiled.positiontup) if compiled.positional else None
            entry = self._compiled[dialect.name] = [compiled.string, defaults, order, row_class,
                                                    packed, self.held and isinstance(statement, Select)]
        return entry


_loads = orjson.loads  # a packed row (Statement): one JSON array


def _driver_params(entry, params):
    """A statement's parameters as the driver takes them: defaults filled in, in order."""
    defaults, order = entry[1], entry[2]
    if defaults:
        params = {**defaults, **params} if params else defaults
    if order is not None:
        return [params[name] for name in order]
    return params or ()


class FastConnection:
    """A DBAPI connection plus its dialect: runs `Statement`s, nothing else."""

    __slots__ = ("dbapi", "dialect")

    def __init__(self, dbapi_connection, dialect):
        self.dbapi = dbapi_connection
        self.dialect = dialect

    def _run(self, statement, params, first=False):
        """The compiled entry and a cursor of the statement run; `first`: only the first row
        will be read."""
        entry = statement.compiled(self.dialect)
        return entry, self._cursor(entry[0], _driver_params(entry, params))

    def _cursor(self, sql, params):
        cursor = self.dbapi.cursor()
        try:
            cursor.execute(sql, params)
        except BaseException:
            cursor.close()
            raise
        return cursor

    @staticmethod
    def _row_class(entry, cursor):
        if entry[3] is None:
            entry[3] = namedtuple("Row", [column[0] for column in cursor.description],
                                  rename=True)
        return entry[3]

    def execute(self, statement, params=None) -> int:
        """Run a statement without rows to return; the number of rows it changed."""
        _, cursor = self._run(statement, params)
        try:
            return cursor.rowcount
        finally:
            cursor.close()

    def first(self, statement, params=None):
        """The first row (a named tuple) or None; the cursor is closed either way."""
        entry, cursor = self._run(statement, params, first=True)
        try:
            row = cursor.fetchone()
            if row is None:
                return None
            return self._row_class(entry, cursor)._make(_loads(row[0]) if entry[4] else row)
        finally:
            cursor.close()

    def insert(self, statement, params=None) -> int:
        """Run an INSERT of one row built by `returning_id`; the new row's id."""
        _, cursor = self._run(statement, params)
        try:
            if self.dialect.name == "sqlite":
                return cursor.lastrowid
            return cursor.fetchone()[0]
        finally:
            cursor.close()

    def scalar(self, statement, params=None):
        entry, cursor = self._run(statement, params, first=True)
        try:
            row = cursor.fetchone()
            return None if row is None else _loads(row[0])[0] if entry[4] else row[0]
        finally:
            cursor.close()

    def all(self, statement, params=None) -> list:
        entry, cursor = self._run(statement, params)
        try:
            rows = cursor.fetchall()
            if not rows:
                return []
            make = self._row_class(entry, cursor)._make
            if entry[4]:
                return [make(_loads(row[0])) for row in rows]
            return [make(row) for row in rows]
        finally:
            cursor.close()


def returning_id(dialect_name, statement, column):
    """An INSERT for `FastConnection.insert`: on SQLite without RETURNING (the driver's
    lastrowid has the id; a RETURNING row costs a second step through the driver, which
    releases and takes back the GIL), elsewhere RETURNING `column`."""
    return statement if dialect_name == "sqlite" else statement.returning(column)


FAST_READ_CACHE_KIB = 1000  # each: half of SQLite's default page cache (2,000 KiB)


class _ThreadConnection(FastConnection):
    """A thread's own connection for `fast_read`, detached from the pool (autocommit on
    PostgreSQL). A statement that fails because the connection is broken (PostgreSQL
    restarted, backend terminated) runs once more on a new one: only SELECTs run here, so
    the retry cannot do anything twice. It replaces the pool's pre-ping, a round trip per use."""

    __slots__ = ("engine", "held")

    def __init__(self, engine):
        FastConnection.__init__(self, _detached(engine), engine.dialect)
        self.engine = engine
        # SQLite: the thread's SELECTs keep the GIL where they can (serva.sqlite_held), on a
        # second connection. The two share SQLite's default page cache between them, so the
        # process holds as much as with one (the bench's peak RSS rose by 15 MiB without it).
        self.held = None
        if engine.dialect.name == "sqlite":
            self.held = sqlite_held.reader(engine.url, FAST_READ_CACHE_KIB)
            if self.held is not None:
                self.dbapi.execute(f"PRAGMA cache_size=-{FAST_READ_CACHE_KIB}")

    def _run(self, statement, params, first=False):
        entry = statement.compiled(self.dialect)
        params = _driver_params(entry, params)
        if self.held is not None and entry[5]:
            rows = self.held.rows(entry[0], params, first, entry[4])
            if rows is not None:
                return entry, _Rows(rows, self.held.names(entry[0]) if entry[3] is None else None)
        try:
            return entry, self._cursor(entry[0], params)
        except self.dialect.dbapi.Error as error:
            if not self.dialect.is_disconnect(error, self.dbapi, None):
                raise
        _close_quietly(self.dbapi)
        self.dbapi = _detached(self.engine)
        return entry, self._cursor(entry[0], params)


class _Rows:
    """What FastConnection reads of a cursor, over the rows a HeldReader returned."""

    __slots__ = ("rows", "description")

    def __init__(self, rows, description):
        self.rows = rows
        self.description = description

    def fetchone(self):
        return self.rows.pop(0) if self.rows else None

    def fetchall(self):
        rows, self.rows = self.rows, []
        return rows

    def close(self):
        pass


def _detached(engine):
    """A new DBAPI connection of the engine's kind, no longer the pool's."""
    pooled = engine.raw_connection()  # runs the engine's on-connect settings
    dbapi = pooled.driver_connection
    if engine.dialect.name == "postgresql":
        dbapi.rollback()  # the pre-ping may have opened a transaction
        dbapi.autocommit = True  # each statement its own transaction: no BEGIN, no ROLLBACK
    pooled.detach()  # this thread's own from now on; it no longer counts in the pool
    return dbapi


def _close_quietly(dbapi_connection):
    try:
        dbapi_connection.close()
    except Exception:  # already broken: nothing left to release
        pass


def _has_input(fd) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def _thread_connection(engine):
    readers = engine.serva_readers
    fast = getattr(readers, "fast", None)
    if fast is None:
        fast = readers.fast = _ThreadConnection(engine)
    return readers, fast


@contextmanager
def fast_read(engine=None):
    """Like `read()` for `Statement`s: a DBAPI connection, no transaction of ours (each SELECT
    is its own).

    Each thread keeps one connection for these reads (`engine.serva_readers`), taken from the
    pool once and detached from it: the pool's checkout and return around every API request's
    one SELECT measured ~8 % of a `balance` on SQLite (bench/README.md); on PostgreSQL they
    were 3 of its 4 round trips (pre-ping, BEGIN, ROLLBACK). Nothing is left open between
    requests (the cursor is closed, so no read transaction lingers); a connection whose read
    failed is closed and the thread's next read opens a new one (a broken one is replaced at
    once, `_ThreadConnection`)."""
    engine = engine or get_engine()
    if getattr(engine, "serva_readers", None) is None:  # SQLite in memory: its one connection
        pooled = engine.raw_connection()
        try:
            yield FastConnection(pooled.driver_connection, engine.dialect)
        finally:
            pooled.close()
        return
    readers, fast = _thread_connection(engine)
    try:
        yield fast
    except engine.dialect.dbapi.Error:
        readers.fast = None
        _close_quietly(fast.dbapi)
        raise


@contextmanager
def one_call(engine):
    """PostgreSQL: the thread's `fast_read` connection (autocommit) for a write that is one
    statement, so one round trip (no pre-ping, no transaction around it). Never retried: a
    connection that breaks during the statement leaves its outcome unknown, so the error
    propagates and nothing is guessed. A connection the server has written to while idle (the
    end of a terminated backend or a restart; Serva does not LISTEN, so anything else is rare
    and costs only a new connection) is replaced before the statement is sent, as the pool's
    pre-ping would have done, without its round trip."""
    readers, fast = _thread_connection(engine)
    if fast.dbapi.closed or _has_input(fast.dbapi.fileno()):
        _close_quietly(fast.dbapi)
        readers.fast = None
        readers, fast = _thread_connection(engine)
    try:
        yield FastConnection(fast.dbapi, engine.dialect)  # no retry
    except engine.dialect.dbapi.Error as error:
        if engine.dialect.is_disconnect(error, fast.dbapi, None):  # else still idle, usable
            readers.fast = None
            _close_quietly(fast.dbapi)
        raise


def fast(conn) -> FastConnection:
    """Run `Statement`s inside an open `write()`/`read()` connection: same transaction."""
    return FastConnection(conn.connection.driver_connection, conn.dialect)
