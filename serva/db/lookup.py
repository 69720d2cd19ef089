"""The API's one lookup per request, compiled once and run on the pool's DBAPI connection.

Every API request reads its key (and what its action needs) in one SELECT. Through a
SQLAlchemy `Connection` that SELECT spends most of its time in SQLAlchemy's execution
machinery (execution context, result and row objects, events) around a few microseconds in
SQLite. Here the statement is compiled once per dialect (`compile(dialect=…)`, its SQL and
parameter order), and each call checks a connection out of the engine's pool
(`engine.raw_connection()`: the same connections, events and recycling as every other
statement), runs the SQL on its cursor and returns the first row as a named tuple, the
JSON-typed columns decoded as SQLAlchemy would. Only SELECTs without expanding (IN-list)
parameters qualify; everything else goes through `db.read()` as usual. `make bench-ab`
measured what this buys (bench/README.md)."""
import json
from collections import namedtuple

from sqlalchemy import JSON


class Lookup:
    """A Core SELECT for `first()`: one row or None."""

    def __init__(self, statement):
        self.statement = statement
        columns = statement.selected_columns
        self.row = namedtuple("Row", columns.keys(), rename=True)
        self.json_columns = [i for i, column in enumerate(columns) if isinstance(column.type, JSON)]
        self.compiled = {}  # dialect name -> (sql, parameter names in order or None, defaults)

    def _compiled(self, dialect):
        entry = self.compiled.get(dialect.name)
        if entry is None:
            compiled = self.statement.compile(dialect=dialect)
            order = tuple(compiled.positiontup) if compiled.positional else None
            entry = self.compiled[dialect.name] = (compiled.string, order, dict(compiled.params))
        return entry

    def first(self, engine, params: dict):
        sql, order, defaults = self._compiled(engine.dialect)
        values = {**defaults, **params}
        bound = [values[name] for name in order] if order is not None else values
        connection = engine.raw_connection()
        try:
            cursor = connection.cursor()
            try:
                cursor.execute(sql, bound)
                found = cursor.fetchone()
            finally:
                cursor.close()
        finally:
            connection.close()  # back to the pool
        if found is None:
            return None
        found = list(found)
        for i in self.json_columns:
            if isinstance(found[i], (str, bytes)):
                found[i] = json.loads(found[i])
        return self.row._make(found)
