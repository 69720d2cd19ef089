"""Engine, transactions and schema lifecycle.

Writes run in `write()`: on SQLite that is a real `BEGIN IMMEDIATE` (the SQLAlchemy pysqlite
recipe: the driver's own transaction handling is switched off on connect and the BEGIN is
emitted on the engine's `begin` event), so two writers never both read and then both write.
Reads run in `read()`, where nothing is emitted: each SELECT is its own deferred transaction
and never takes the write lock.
"""
import threading
import time
from collections import namedtuple
from contextlib import contextmanager

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import create_engine, event, insert, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateIndex, CreateTable

from . import schema

READ_ONLY = "serva_read_only"
BUSY_TIMEOUT_SECONDS = 30


class SchemaMismatch(RuntimeError):
    """The database was made by another schema version of Serva."""


def now() -> int:
    """Unix seconds; the one clock of the app (freezegun moves it in tests)."""
    return int(time.time())


def make_engine(url: str, synchronous: str = "FULL"):
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False,
                                                  "timeout": BUSY_TIMEOUT_SECONDS},
                               pool_size=8, max_overflow=16)
        _sqlite_transactions(engine, synchronous)
        # SQLite has one writer at a time. Threads of this process queue for it on a lock
        # (woken the moment the writer commits) instead of in SQLite's busy handler, which
        # polls with sleeps of 1, 2, 5, 10… ms and so turns a burst of orders into latency.
        engine.serva_write_lock = threading.RLock()
        engine.serva_group_commit = GroupCommit(engine)
    else:
        engine = create_engine(url, pool_size=8, max_overflow=16, pool_pre_ping=True)
    return engine


def _sqlite_transactions(engine, synchronous):
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn):
        if not conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def get_engine():
    return current_app.extensions["serva.engine"]


@contextmanager
def read(engine=None):
    """A connection for reads only: no BEGIN, no write lock."""
    with (engine or get_engine()).connect() as conn:
        yield conn.execution_options(**{READ_ONLY: True})


@contextmanager
def write(engine=None):
    """A write transaction (BEGIN IMMEDIATE on SQLite); commits on success, rolls back on error."""
    engine = engine or get_engine()
    with _writer_turn(engine), engine.begin() as conn:
        yield conn


@contextmanager
def _writer_turn(engine):
    """This process's turn to write (SQLite): at most one thread at a time asks SQLite for the
    write lock. Waiting is bounded like SQLite's own busy timeout; past it the transaction goes
    ahead and SQLite decides (it raises "database is locked" as it would have anyway)."""
    lock = getattr(engine, "serva_write_lock", None)
    if lock is None:
        yield
        return
    acquired = lock.acquire(timeout=BUSY_TIMEOUT_SECONDS)
    try:
        yield
    finally:
        if acquired:
            lock.release()


class _Turn:
    """One thread's unit of work waiting for (or getting) a place in a group commit."""

    __slots__ = ("work", "done", "lead", "result", "error")

    def __init__(self, work):
        self.work = work
        self.done = threading.Event()
        self.lead = False
        self.result = self.error = None

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
    rolled back alone, and its error goes to its own thread), commits once and hands the
    results out. The next queued thread then leads the next group. Nothing is answered before
    the COMMIT that made it durable has returned; if that COMMIT fails, every work of the group
    fails. Works run one after another in one transaction, so each sees the ones before it
    exactly as in separate serial transactions: every database rule still decides."""

    MAX_GROUP = 64
    SAVEPOINT = "serva_group_work"

    def __init__(self, engine):
        self.engine = engine
        self.mutex = threading.Lock()
        self.queue = []
        self.leading = False

    def run(self, work):
        turn = _Turn(work)
        with self.mutex:
            self.queue.append(turn)
            lead = not self.leading
            self.leading = True
        if not lead:
            turn.done.wait()
            if not turn.lead:
                return turn.outcome()
            turn.done.clear()  # promoted: lead the next group (our work is first in the queue)
        group = []
        try:
            while not turn.done.is_set():
                with self.mutex:
                    group = self.queue[:self.MAX_GROUP]
                    del self.queue[:len(group)]
                self._commit(group)
                for member in group:
                    member.done.set()
                group = []
        finally:
            for member in group:  # only when _commit raised past its own handling
                if member.error is None and member.result is None:
                    member.error = RuntimeError("the group commit was interrupted")
                member.done.set()
            with self.mutex:
                successor = self.queue[0] if self.queue else None
                if successor is None:
                    self.leading = False
            if successor is not None:
                successor.lead = True
                successor.done.set()  # wakes it as the next leader
        return turn.outcome()

    def _commit(self, group):
        try:
            with write(self.engine) as conn:
                if len(group) == 1:
                    group[0].result = group[0].work(conn)
                    return
                dbapi = conn.connection.driver_connection
                for turn in group:
                    dbapi.execute(f"SAVEPOINT {self.SAVEPOINT}")
                    try:
                        turn.result = turn.work(conn)
                    except Exception as error:  # noqa: BLE001 - this work's own failure
                        dbapi.execute(f"ROLLBACK TO SAVEPOINT {self.SAVEPOINT}")
                        turn.error = error
                    dbapi.execute(f"RELEASE SAVEPOINT {self.SAVEPOINT}")
        except BaseException as error:  # noqa: BLE001 - nothing of the group was committed
            for turn in group:
                if turn.error is None:
                    turn.result, turn.error = None, error
            if not isinstance(error, Exception):
                raise


def write_grouped(work, engine=None):
    """`work(conn)` in a write transaction, returning its result: on SQLite grouped with other
    threads' concurrent works into one transaction and one commit (`GroupCommit`); elsewhere
    a transaction of its own."""
    engine = engine or get_engine()
    group = getattr(engine, "serva_group_commit", None)
    if group is None:
        with write(engine) as conn:
            return work(conn)
    return group.run(work)


def schema_version(engine):
    """The stored schema version, or None for a database without Serva's tables."""
    try:
        with read(engine) as conn:
            value = conn.execute(select(schema.serva_meta.c.value)
                                 .where(schema.serva_meta.c.key == "schema_version")).scalar()
    except DBAPIError:
        return None
    return int(value) if value is not None else None


def check_schema(engine):
    """Refuse to run on a database of another schema version; an empty one is fine."""
    version = schema_version(engine)
    if version is not None and version != schema.SCHEMA_VERSION:
        raise SchemaMismatch(
            f"database schema version {version} does not match this Serva's version "
            f"{schema.SCHEMA_VERSION}; use a database made by this version (serva init-db on a "
            f"new file) or migrate it first")
    return version


def init_schema(engine, reset=False):
    """Create every table (keeping existing data unless `reset`) and stamp the version."""
    if reset:
        schema.metadata.drop_all(engine)
    elif check_schema(engine) is not None:
        return
    schema.metadata.create_all(engine)
    with write(engine) as conn:
        conn.execute(insert(schema.serva_meta).values(
            key="schema_version", value=str(schema.SCHEMA_VERSION)))


def schema_sql(dialect_engine=None) -> str:
    """The DDL of the schema for SQLite, as written to schema.sql."""
    engine = dialect_engine or create_engine("sqlite://")
    parts = [f"-- Serva schema version {schema.SCHEMA_VERSION}. Generated from serva/schema.py "
             f"by `serva schema-sql`; do not edit by hand."]
    for table in schema.metadata.sorted_tables:
        parts.append(str(CreateTable(table).compile(engine)).strip() + ";")
        for index in sorted(table.indexes, key=lambda i: i.name):
            parts.append(str(CreateIndex(index).compile(engine)).strip() + ";")
    text = "\n\n".join(parts) + "\n"
    return "\n".join(line.rstrip() for line in text.split("\n"))


def init_app(app):
    engine = make_engine(app.config["DATABASE_URL"], app.config["SQLITE_SYNCHRONOUS"])
    app.extensions["serva.engine"] = engine
    check_schema(engine)


@click.command("init-db")
@with_appcontext
@click.option("--reset", is_flag=True, help="Drop every table first (destroys all data).")
def init_db_command(reset):
    """Create the tables (existing data is kept unless --reset)."""
    init_schema(get_engine(), reset=reset)
    click.echo(f"Initialized the database (schema version {schema.SCHEMA_VERSION}).")


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
    statements built from dialect-specific constructs (an upsert)."""

    __slots__ = ("statement", "build", "_compiled")

    def __init__(self, statement=None, build=None):
        self.statement = statement
        self.build = build
        self._compiled = {}

    @classmethod
    def per_dialect(cls, build):
        return cls(build=build)

    def compiled(self, dialect):
        entry = self._compiled.get(dialect.name)
        if entry is None:
            statement = self.build(dialect.name) if self.build else self.statement
            compiled = statement.compile(dialect=dialect)
            defaults = {name: value for name, value in compiled.params.items() if value is not None}
            order = tuple(compiled.positiontup) if compiled.positional else None
            entry = self._compiled[dialect.name] = [compiled.string, defaults, order, None]
        return entry


class FastConnection:
    """A DBAPI connection plus its dialect: runs `Statement`s, nothing else."""

    __slots__ = ("dbapi", "dialect")

    def __init__(self, dbapi_connection, dialect):
        self.dbapi = dbapi_connection
        self.dialect = dialect

    def _run(self, statement, params):
        entry = statement.compiled(self.dialect)
        sql, defaults, order = entry[0], entry[1], entry[2]
        if defaults:
            params = {**defaults, **params} if params else defaults
        if order is not None:
            params = [params[name] for name in order]
        cursor = self.dbapi.cursor()
        try:
            cursor.execute(sql, params or ())
        except BaseException:
            cursor.close()
            raise
        return entry, cursor

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
        entry, cursor = self._run(statement, params)
        try:
            row = cursor.fetchone()
            return None if row is None else self._row_class(entry, cursor)._make(row)
        finally:
            cursor.close()

    def scalar(self, statement, params=None):
        _, cursor = self._run(statement, params)
        try:
            row = cursor.fetchone()
            return None if row is None else row[0]
        finally:
            cursor.close()

    def all(self, statement, params=None) -> list:
        entry, cursor = self._run(statement, params)
        try:
            rows = cursor.fetchall()
            if not rows:
                return []
            make = self._row_class(entry, cursor)._make
            return [make(row) for row in rows]
        finally:
            cursor.close()


@contextmanager
def fast_read(engine=None):
    """Like `read()` for `Statement`s: a pooled DBAPI connection, no transaction of ours (each
    SELECT is its own on SQLite; elsewhere the pool rolls back on return)."""
    engine = engine or get_engine()
    pooled = engine.raw_connection()
    try:
        yield FastConnection(pooled.driver_connection, engine.dialect)
    finally:
        pooled.close()


def fast(conn) -> FastConnection:
    """Run `Statement`s inside an open `write()`/`read()` connection: same transaction."""
    return FastConnection(conn.connection.driver_connection, conn.dialect)
