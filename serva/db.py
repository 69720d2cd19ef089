"""Engine, transactions and schema lifecycle.

Writes run in `write()`: on SQLite that is a real `BEGIN IMMEDIATE` (the SQLAlchemy pysqlite
recipe: the driver's own transaction handling is switched off on connect and the BEGIN is
emitted on the engine's `begin` event), so two writers never both read and then both write.
Reads run in `read()`, where nothing is emitted: each SELECT is its own deferred transaction
and never takes the write lock.
"""
import time
from contextlib import contextmanager

import click
from flask import current_app
from sqlalchemy import create_engine, event, insert, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateIndex, CreateTable

from . import schema

READ_ONLY = "serva_read_only"


class SchemaMismatch(RuntimeError):
    """The database was made by another schema version of Serva."""


def now() -> int:
    """Unix seconds; the one clock of the app (freezegun moves it in tests)."""
    return int(time.time())


def make_engine(url: str, synchronous: str = "FULL"):
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               pool_size=8, max_overflow=16)
        _sqlite_transactions(engine, synchronous)
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


def write(engine=None):
    """A write transaction (BEGIN IMMEDIATE on SQLite); commits on success, rolls back on error."""
    return (engine or get_engine()).begin()


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
@click.option("--reset", is_flag=True, help="Drop every table first (destroys all data).")
def init_db_command(reset):
    """Create the tables (existing data is kept unless --reset)."""
    init_schema(get_engine(), reset=reset)
    click.echo(f"Initialized the database (schema version {schema.SCHEMA_VERSION}).")


@click.command("schema-sql")
def schema_sql_command():
    """Print the schema DDL (this is what schema.sql holds)."""
    click.echo(schema_sql(), nl=False)


def upsert(conn, table):
    """INSERT … ON CONFLICT for the connection's dialect (SQLite and PostgreSQL share the shape)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert(table)
