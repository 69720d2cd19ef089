"""How the worker writes: each write is one transaction, and a busy database is waited out.

A worker has no one waiting for an answer, and what it writes usually records what a provider
already did, so a write that finds the database busy (or locked, or briefly unwritable) is
tried again for up to a minute instead of failing the pass. Trying again is safe: a write
that failed was rolled back, and a write's work touches nothing outside its transaction."""
from sqlalchemy import or_
from tenacity import retry, retry_if_exception, stop_after_delay, wait_fixed

from .. import db

WRITE_PATIENCE_SECONDS = 60
_patient = retry(retry=retry_if_exception(db.unavailable),
                 stop=stop_after_delay(WRITE_PATIENCE_SECONDS), wait=wait_fixed(0.05),
                 reraise=True)


@_patient
def write(work):
    """`work(conn)` in a write transaction (BEGIN IMMEDIATE on SQLite); its result."""
    with db.write() as conn:
        return work(conn)


def any_of(column, values):
    """`column` equal to one of `values`, as plain comparisons: an IN list is an expanding
    parameter, which a statement run with several rows at once (executemany) cannot have."""
    return or_(*(column == value for value in values))
