"""`serva backup PATH`: a consistent copy of the SQLite database, taken while it serves.

SQLite's online backup API copies the database in one step, i.e. inside one read snapshot:
in WAL mode writers go on meanwhile, and the copy is the database exactly as it was at one
commit (never half an order). The copy is written beside PATH under a temporary name, made a
self-contained file (rollback journal instead of WAL), checked with `PRAGMA integrity_check`
and with the same invariants as `serva audit`, and only then renamed to PATH: a file at PATH
is a backup that passed. On PostgreSQL, `pg_dump` is the tool (README, Backups)."""
import os
import sqlite3

import click
from flask.cli import with_appcontext
from sqlalchemy import create_engine, func, select

from . import audit, db
from .schema import accounts, ledger, orders


class BackupError(Exception):
    """The backup cannot be taken where asked (exit status 2; nothing written)."""

    status = 2


class CheckFailed(BackupError):
    """The copy did not pass its checks (exit status 1; nothing left at PATH)."""

    status = 1


def take(engine, path: str) -> str:
    """Copy the database behind `engine` to `path`, check it; returns a one-line summary."""
    if os.path.exists(path):
        raise BackupError(f"{path} exists: give a new file name")
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise BackupError(f"no directory for {path}")
    partial = f"{path}.partial-{os.getpid()}"
    try:
        _copy(engine, partial)
        summary = _check(partial)
        os.rename(partial, path)
    finally:
        for leftover in (partial, f"{partial}-journal", f"{partial}-wal", f"{partial}-shm"):
            if os.path.exists(leftover):
                os.unlink(leftover)
    return summary


def _copy(engine, target_path: str) -> None:
    target = sqlite3.connect(target_path)
    try:
        pooled = engine.raw_connection()
        try:
            pooled.driver_connection.backup(target)  # pages=-1: all of it in one step
        finally:
            pooled.close()
        target.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal beside it
    finally:
        target.close()


def _check(path: str) -> str:
    """PRAGMA integrity_check and the audit's invariants on the copy; a summary if both pass."""
    copy = create_engine(f"sqlite:///{path}")
    try:
        with copy.connect() as conn:
            integrity = [row[0] for row in conn.exec_driver_sql("PRAGMA integrity_check")]
            if integrity != ["ok"]:
                raise CheckFailed("the copy failed PRAGMA integrity_check: " + "; ".join(integrity[:5]))
            problems = list(audit.violations(conn))
            if problems:
                raise CheckFailed("the copy failed the audit: " + "; ".join(problems[:5]))
            counts = [conn.execute(select(func.count()).select_from(table)).scalar()
                      for table in (accounts, orders, ledger)]
    finally:
        copy.dispose()
    size = os.path.getsize(path)
    return (f"{size / 1_048_576:.1f} MiB, integrity ok, audit passed ({counts[0]} accounts, "
            f"{counts[1]} orders, {counts[2]} ledger rows)")


@click.command("backup")
@click.argument("path", type=click.Path(dir_okay=False))
@with_appcontext
def backup_command(path):
    """Copy the (SQLite) database to PATH while serving; checked and audited before it counts."""
    engine = db.get_engine()
    if engine.dialect.name != "sqlite":
        click.echo(f"error: serva backup copies SQLite databases; for {engine.dialect.name} use "
                   f"pg_dump (README, Backups)", err=True)
        raise click.exceptions.Exit(2)
    try:
        problem = db.schema_problem(engine)
        if problem:
            raise BackupError(problem)
        summary = take(engine, path)
    except BackupError as error:
        click.echo(f"error: {error}", err=True)
        raise click.exceptions.Exit(error.status)
    click.echo(f"backup written to {path}: {summary}")
