"""The database: the engine and its transactions (`read`, `write`), the schema's lifecycle,
and the Flask extension that holds the engine. Callers write `from . import db` and then
`db.write()`, `db.read()`, `db.now()`, `db.init_schema()`…"""
from .engine import (READ_ONLY, WRITE_WAIT_SECONDS, Busy, configure_engine, engine_options,
                     get_engine, json_rows, make_engine, now, read, retry_after, unavailable, upsert, write,
                     write_lock)
from .group_commit import write_grouped
from .lookup import Lookup
from .extension import database_uri, init_app, migrate, sqla
from .lifecycle import (NotWritable, SchemaMismatch, check_writable, init_schema, migrating,
                        require_schema, schema_problem, schema_revision, schema_sql,
                        schema_state)

__all__ = [
    "READ_ONLY", "WRITE_WAIT_SECONDS", "Lookup", "Busy", "NotWritable", "SchemaMismatch", "check_writable",
    "configure_engine", "database_uri", "engine_options", "get_engine", "init_app",
    "init_schema", "json_rows", "make_engine", "migrate", "migrating", "now", "read", "require_schema",
    "retry_after", "schema_problem", "schema_revision", "schema_sql", "schema_state", "sqla",
    "unavailable", "upsert", "write", "write_grouped", "write_lock",
]
