"""The engine and its transactions.

Writes run in `write()`: on SQLite a real `BEGIN IMMEDIATE` (SQLAlchemy's documented pysqlite
recipe: the driver's own transaction handling is switched off on connect and the BEGIN is
emitted on the engine's `begin` event), so two writers never both read and then both write.
Reads run in `read()`, where nothing is emitted: each SELECT is its own deferred transaction
and never takes the write lock.

A write never waits without bound: on SQLite the busy timeout is the bound, on PostgreSQL
`lock_timeout`. Past it, or when the database cannot be written at all (disk full, read-only,
cannot be opened), it fails with an error that `unavailable()` recognizes, and the app answers
HTTP 503 `busy` (nothing was committed).
"""
import math
import sqlite3
import threading
import time
from contextlib import contextmanager

from flask import current_app
from sqlalchemy import JSON, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import GenericFunction

READ_ONLY = "serva_read_only"
WRITE_WAIT_SECONDS = 5  # the default of SERVA_WRITE_WAIT_SECONDS
# SQLite result codes (primary, the low byte) meaning "cannot write now": SQLITE_BUSY,
# SQLITE_LOCKED, SQLITE_READONLY, SQLITE_FULL, SQLITE_CANTOPEN; and PostgreSQL's SQLSTATEs
# for disk full, a read-only transaction (a standby), a lock timeout.
SQLITE_UNAVAILABLE = {5, 6, 8, 13, 14}
PG_UNAVAILABLE = {"53100", "25006", "55P03"}
# Each SQLite connection's page cache, KiB (SQLite's default is 2,000). A server process holds
# up to a pool of them, and a status lookup on a million orders rarely finds its page in any
# one of them (the operating system's cache serves it either way): with the default, eight
# request threads' caches were a tenth of a worker's memory (bench/README.md).
SQLITE_CACHE_KIB = 1024
SQLITE_BUSY, PG_BUSY = {5, 6}, {"55P03"}
WRITE_POLL_SECONDS = 0.0005  # how often a write waiting for another process's tries again
WRITE_DEADLINE = "serva_write_deadline"  # the connection's info: when the next BEGIN gives up
BUSY_TIMEOUT_OFF = "serva_busy_timeout_off"  # the connection's info: put it back at check-in


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
            return code & 0xFF in (SQLITE_BUSY if only_busy else SQLITE_UNAVAILABLE)
        texts = ("locked",) if only_busy else ("locked", "readonly", "disk is full",
                                               "unable to open")
        return isinstance(original, sqlite3.OperationalError) and any(
            text in str(original) for text in texts)
    return getattr(original, "sqlstate", None) in (PG_BUSY if only_busy else PG_UNAVAILABLE)


def retry_after(engine) -> int:
    """The Retry-After (seconds) for a 503 `busy`: the wait bound, at least one second."""
    return max(1, math.ceil(getattr(engine, "serva_write_wait", WRITE_WAIT_SECONDS)))


def now() -> int:
    """Unix seconds; the one clock of the app (freezegun moves it in tests)."""
    return int(time.time())


def engine_options(url, write_wait: float = WRITE_WAIT_SECONDS) -> dict:
    """Serva's engine settings for a URL: pool sizes; on SQLite the busy timeout and threads."""
    url = make_url(url)
    if url.get_backend_name() != "sqlite":
        return {"pool_size": 8, "max_overflow": 16, "pool_pre_ping": True}
    # The pool's reset on return is a ROLLBACK per checkout; the driver here opens no
    # transaction by itself (we emit BEGIN), so `_sqlite_transactions` rolls back on check-in
    # only a connection that is still in one.
    options = {"connect_args": {"check_same_thread": False, "timeout": write_wait},
               "pool_reset_on_return": None}
    if url.database not in (None, "", ":memory:"):  # in memory: one static connection
        options.update(pool_size=8, max_overflow=16)
    return options


def make_engine(url: str, synchronous: str = "FULL", write_wait: float = WRITE_WAIT_SECONDS):
    """An engine of Serva's kind outside an app (a second writer in tests, the bench data)."""
    return configure_engine(create_engine(url, **engine_options(url, write_wait)), synchronous,
                            write_wait)


def configure_engine(engine, synchronous: str = "FULL", write_wait: float = WRITE_WAIT_SECONDS):
    """Serva's behaviour on an engine nothing has connected through yet: on SQLite the PRAGMAs
    and BEGIN IMMEDIATE for writes, on PostgreSQL the bounded lock wait. `write_wait`: the most
    a write waits for the lock (SERVA_WRITE_WAIT_SECONDS)."""
    engine.serva_write_wait = write_wait
    engine.serva_write_lock = None
    if engine.dialect.name == "sqlite":
        _sqlite_transactions(engine, synchronous, write_wait)
        engine.serva_write_lock = threading.Lock()  # this process's writers queue on it (write)
    elif engine.dialect.name == "postgresql":
        _bounded_lock_waits(engine, write_wait)
    return engine


def _sqlite_transactions(engine, synchronous, write_wait):
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(write_wait * 1000)}")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cursor.close()

    @event.listens_for(engine, "checkin")
    def on_checkin(dbapi_connection, record):
        if dbapi_connection is None:
            return
        if dbapi_connection.in_transaction:
            dbapi_connection.rollback()
        if record.info.pop(BUSY_TIMEOUT_OFF, False):
            dbapi_connection.execute(f"PRAGMA busy_timeout={int(write_wait * 1000)}")

    @event.listens_for(engine, "begin")
    def on_begin(conn):
        if not conn.get_execution_options().get(READ_ONLY):
            deadline = conn.info.pop(WRITE_DEADLINE, None) or time.monotonic() + write_wait
            begin_immediate(conn.connection.driver_connection, deadline, conn.info)


def begin_immediate(driver, deadline: float, info: dict) -> None:
    """BEGIN IMMEDIATE, waiting for another process's write to end until `deadline`.

    SQLite's own busy handler sleeps between its tries (1, 2, 5, 10 … up to 100 ms), so a
    writer that finds the worker or another server process writing for a millisecond or two
    would sleep several times that while its orders queue behind it. Here the BEGIN tries
    again every WRITE_POLL_SECONDS instead: it gets the lock within that of its release. The
    busy timeout is off for the transaction and back to the engine's bound when the
    connection returns to the pool (`on_checkin`), for everything else (a reader during a
    checkpoint, say)."""
    driver.execute("PRAGMA busy_timeout=0")
    info[BUSY_TIMEOUT_OFF] = True
    while True:
        try:
            driver.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as error:
            if not unavailable(error, only_busy=True) \
                    or time.monotonic() + WRITE_POLL_SECONDS > deadline:
                raise
        time.sleep(WRITE_POLL_SECONDS)


def _bounded_lock_waits(engine, write_wait):
    """PostgreSQL's counterpart of the busy timeout: a statement that waits for a lock (an
    account row an order locks, say) longer than the bound fails with SQLSTATE 55P03, which
    `unavailable()` turns into 503 `busy`; the transaction rolls back, nothing is charged."""
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record):
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET lock_timeout = {int(write_wait * 1000)}")
        dbapi_connection.commit()  # a SET inside a rolled-back transaction would be undone


def get_engine():
    """The app's engine (Flask-SQLAlchemy's, configured by `init_app`)."""
    return current_app.extensions["serva.engine"]


@contextmanager
def read(engine=None):
    """A connection for reads only: no BEGIN, no write lock."""
    with (engine or get_engine()).connect() as conn:
        yield conn.execution_options(**{READ_ONLY: True})


@contextmanager
def write(engine=None, wait=None):
    """A write transaction (BEGIN IMMEDIATE on SQLite); commits on success, rolls back on error.
    Waits for the write lock at most `wait` seconds in all (default: the engine's bound), then
    raises an error `unavailable()` recognizes.

    On SQLite the threads of this process first take turns on one lock (`write_lock`), so a
    writer is woken the moment the one before it commits; then one of them at a time waits
    for other processes' writes (`begin_immediate`), until what the lock's wait left of the
    bound."""
    engine = engine or get_engine()
    default = engine.serva_write_wait
    wait = default if wait is None else wait
    deadline = time.monotonic() + wait
    with write_lock(engine, wait), engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.info[WRITE_DEADLINE] = deadline
        with conn.begin():
            if wait != default and conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = {max(1, int(wait * 1000))}")
            yield conn


@contextmanager
def write_lock(engine, wait):
    """This process's SQLite writer lock, `wait` seconds at most (nothing on PostgreSQL)."""
    lock = engine.serva_write_lock
    if lock is None:
        yield
        return
    if not lock.acquire(timeout=wait):
        raise Busy("another write of this process held the lock past the wait bound")
    try:
        yield
    finally:
        lock.release()


def upsert(dialect_name: str, table):
    """INSERT … ON CONFLICT for a dialect (SQLite and PostgreSQL share the shape)."""
    return (postgresql if dialect_name == "postgresql" else sqlite).insert(table)


class json_rows(GenericFunction):  # noqa: N801 - used like SQLAlchemy's `func.*` functions
    """An aggregate: the rows' columns as one JSON array of arrays (a list of lists in Python;
    NULL or [] when there are no rows). It lets the key lookup carry an action's rows (the
    orders of a `status`, the custom rates of `services`) in its one row."""
    type = JSON()
    inherit_cache = True


@compiles(json_rows, "sqlite")
def _json_rows_sqlite(element, compiler, **kw):
    return f"json_group_array(json_array({compiler.process(element.clauses, **kw)}))"


@compiles(json_rows, "postgresql")
def _json_rows_postgresql(element, compiler, **kw):
    return f"json_agg(json_build_array({compiler.process(element.clauses, **kw)}))"
