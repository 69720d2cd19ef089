"""Schema revisions: Alembic, driven by Flask-Migrate, with the revisions inside the package
(`serva/migrations/versions`) so `serva init-db` finds them from any directory.

A database is in one of these states (`state`): empty; at the head revision (current); at an
older revision (behind); at a revision this Serva does not know (a newer Serva made it); made
by the first release (its `serva_meta` row `schema_version` = 1 and no `alembic_version`
table: that is exactly revision `first_release`); or holding tables without any version
(foreign). `problem` turns a state into the one line the server and the CLI print."""
import os
import re
from collections import namedtuple
from functools import lru_cache

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import inspect, select, text

from .. import schema

DIRECTORY = os.path.dirname(os.path.abspath(__file__))
VERSION_TABLE = "alembic_version"
FIRST_RELEASE = "first_release"
FIRST_RELEASE_SCHEMA_VERSION = "1"  # what the first release wrote into serva_meta

State = namedtuple("State", "kind revision")


def config(connection=None) -> Config:
    """Alembic's configuration; with `connection`, env.py migrates on it (in its transaction)."""
    cfg = Config(os.path.join(DIRECTORY, "alembic.ini"))
    cfg.set_main_option("script_location", DIRECTORY)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@lru_cache(maxsize=1)
def script() -> ScriptDirectory:
    return ScriptDirectory.from_config(config())


def head() -> str:
    """The one head revision (Alembic raises if a merge left two)."""
    return script().get_current_head()


def _known(revision) -> bool:
    try:
        return script().get_revision(revision) is not None
    except CommandError:
        return False


def state(conn) -> State:
    tables = set(inspect(conn).get_table_names())
    if VERSION_TABLE in tables:
        revisions = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
        if len(revisions) == 1 and revisions[0] == head():
            return State("current", revisions[0])
        if len(revisions) == 1 and _known(revisions[0]):
            return State("behind", revisions[0])
        return State("unknown", ", ".join(revisions) or "(none)")
    if schema.serva_meta.name in tables:
        version = conn.execute(select(schema.serva_meta.c.value)
                               .where(schema.serva_meta.c.key == "schema_version")).scalar()
        if version == FIRST_RELEASE_SCHEMA_VERSION:
            return State("first_release", FIRST_RELEASE)
    if tables & set(schema.metadata.tables):
        return State("foreign", None)
    return State("empty", None)


NOT_INITIALIZED = ("the database is not initialized: run `serva init-db` "
                   "(and `serva demo` for demo data) first")
UPGRADE = "stop the server, back up the database, run `serva init-db`, then start it again"


def problem(current: State, empty_ok=False):
    """The one line that says what is wrong and what to run, or None when Serva can use it."""
    kind, revision = current
    if kind == "current" or (kind == "empty" and empty_ok):
        return None
    if kind == "empty":
        return NOT_INITIALIZED
    if kind == "behind":
        return (f"the database is at schema revision {revision} and this Serva needs "
                f"{head()}: {UPGRADE}")
    if kind == "first_release":
        return (f"the database was made by Serva's first release (schema version "
                f"{FIRST_RELEASE_SCHEMA_VERSION}) and this Serva needs schema revision {head()}: "
                f"{UPGRADE}")
    if kind == "unknown":
        return (f"the database is at schema revision {revision}, which this Serva does not know "
                f"(a newer Serva made it): run that Serva, or restore the backup taken before "
                f"it upgraded the database")
    return ("the database holds tables but no Serva schema version: point SERVA_DATABASE_URL "
            "at a Serva database or at a new, empty one")


_CAST = re.compile(r"::[a-z ]+(\(\d+\))?$")


def _bare(default):
    text_, before = (default or "").strip().lower(), None
    while text_ != before:
        before = text_
        text_ = _CAST.sub("", text_).strip()  # PostgreSQL: 'none'::character varying
        if len(text_) >= 2 and text_[0] + text_[-1] in ("()", "''"):
            text_ = text_[1:-1].strip()
    return text_


def compare_server_default(_context, _inspected_column, _metadata_column, inspected_default,
                           _metadata_default, rendered_metadata_default):
    """Alembic's server-default comparison without its false alarms: the database reports
    `'0'`, `(false)` or `'none'::character varying` where the metadata says `0`, `false` or
    `none`, so defaults are compared without brackets, quotes and casts (True: changed)."""
    if rendered_metadata_default is None or inspected_default is None:
        return None  # Alembic's own rule for a default added or dropped
    return _bare(inspected_default) != _bare(rendered_metadata_default)


def stamp(conn, revision):
    """Record `revision` in alembic_version (creating the table) without running anything."""
    MigrationContext.configure(conn).stamp(script(), revision)
