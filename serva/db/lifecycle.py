"""The schema's lifecycle: create or upgrade a database to the head revision, refuse one this
Serva cannot use, print the DDL (schema.sql), and check that the database can be written.

Schema versions are Alembic revisions (`serva/migrations`, driven by Flask-Migrate); the
tables of a new database come from `serva/schema.py`, stamped at head."""
from contextlib import contextmanager

from alembic import command
from sqlalchemy import create_engine, insert, text
from sqlalchemy.schema import CreateIndex, CreateTable

from .. import migrations, schema
from .engine import get_engine, read, unavailable, write, write_lock


class SchemaMismatch(RuntimeError):
    """The database is not at the schema revision this Serva needs (the message says why)."""


class NotWritable(RuntimeError):
    """The database cannot be written: the server refuses to start on it."""


@contextmanager
def migrating(engine=None):
    """One connection and one transaction for a whole schema change (BEGIN IMMEDIATE and this
    process's writer lock on SQLite). SQLite's foreign keys are off while it runs, since batch
    operations copy a table, drop the original and rename the copy, and are checked before the
    commit: a violation rolls everything back."""
    engine = engine or get_engine()
    with write_lock(engine, engine.serva_write_wait), engine.connect() as conn:
        if conn.dialect.name != "sqlite":
            with conn.begin():
                yield conn
            return
        driver = conn.connection.driver_connection
        driver.execute("PRAGMA foreign_keys=OFF")  # only takes effect outside a transaction
        try:
            with conn.begin():
                yield conn
                if conn.exec_driver_sql("PRAGMA foreign_key_check").first():
                    raise SchemaMismatch("the schema change left rows that break a foreign key")
        finally:
            driver.execute("PRAGMA foreign_keys=ON")


def schema_state(engine):
    with read(engine) as conn:
        return migrations.state(conn)


def schema_revision(engine):
    """The database's schema revision: None when it is empty or not versioned by Alembic."""
    state = schema_state(engine)
    return state.revision if state.kind in ("current", "behind", "unknown") else None


def schema_problem(engine, empty_ok=False):
    """None when this Serva can use the database, else one line saying what to run."""
    return migrations.problem(schema_state(engine), empty_ok=empty_ok)


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
    ddl = "\n\n".join(parts) + "\n"
    return "\n".join(line.rstrip() for line in ddl.split("\n"))


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
