"""SELECTs on SQLite that keep the GIL: the API's per-request reads without the hand-overs.

Python's sqlite3 releases the GIL around its SQLite calls, trivial ones included: 8 times for
a one-row SELECT on 3.11 (9 on 3.12 and 3.13). Under load another request thread is always
waiting for the GIL, so each release hands it over, at the price of context switches: a
`balance` went from ~41 to ~24 per request without them (bench/README.md, item 26). Here
the API's reads (`db.fast_read`) call the very SQLite library the sqlite3 module loaded
through ctypes' `PyDLL`, which keeps the GIL for the call: an indexed lookup takes
microseconds. A statement that reads many rows is not held (`db.Statement`'s `held`): its
SQLite work is better overlapped with other threads' Python on the other core.

- Never a second copy of SQLite in the process: two copies break each other's POSIX locks
  (sqlite.org/howtocorrupt.html, 2.2.1). The library is taken only if it is already loaded
  and its functions are the ones the sqlite3 module calls; otherwise nothing runs here.
- Only reads: the thread's own connection is opened read-only, and a statement SQLite does
  not call read-only is refused.
- No waiting with the GIL held: the connection has no busy timeout. Anything unusual (busy,
  an error, a value or a parameter type sqlite3 would adapt or refuse) returns None, and the
  caller runs the statement through sqlite3 as before, which then waits or raises as it
  always did.
- A read that has to go to the disk holds the GIL for its page reads; the API's statements
  are indexed lookups of a few pages."""
import ctypes
import os
import sqlite3
import _sqlite3

_OK, _ROW, _DONE = 0, 100, 101
_INTEGER, _FLOAT, _TEXT, _BLOB, _NULL = 1, 2, 3, 4, 5
_OPEN_READONLY, _OPEN_NOMUTEX = 0x1, 0x8000
_TRANSIENT = ctypes.c_void_p(-1)  # SQLite copies what is bound before the call returns
_INT64 = range(-2 ** 63, 2 ** 63)

_SIGNATURES = (
    ("sqlite3_libversion", ctypes.c_char_p, ()),
    ("sqlite3_open_v2", ctypes.c_int, (ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p),
                                       ctypes.c_int, ctypes.c_void_p)),
    ("sqlite3_close_v2", ctypes.c_int, (ctypes.c_void_p,)),
    ("sqlite3_exec", ctypes.c_int, (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p,
                                    ctypes.c_void_p, ctypes.c_void_p)),
    ("sqlite3_prepare_v2", ctypes.c_int, (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int,
                                          ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)),
    ("sqlite3_finalize", ctypes.c_int, (ctypes.c_void_p,)),
    ("sqlite3_stmt_readonly", ctypes.c_int, (ctypes.c_void_p,)),
    ("sqlite3_bind_parameter_count", ctypes.c_int, (ctypes.c_void_p,)),
    ("sqlite3_column_count", ctypes.c_int, (ctypes.c_void_p,)),
    ("sqlite3_column_name", ctypes.c_char_p, (ctypes.c_void_p, ctypes.c_int)),
    ("sqlite3_bind_int64", ctypes.c_int, (ctypes.c_void_p, ctypes.c_int, ctypes.c_int64)),
    ("sqlite3_bind_double", ctypes.c_int, (ctypes.c_void_p, ctypes.c_int, ctypes.c_double)),
    ("sqlite3_bind_text", ctypes.c_int, (ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p,
                                         ctypes.c_int, ctypes.c_void_p)),
    ("sqlite3_bind_null", ctypes.c_int, (ctypes.c_void_p, ctypes.c_int)),
    ("sqlite3_step", ctypes.c_int, (ctypes.c_void_p,)),
    ("sqlite3_reset", ctypes.c_int, (ctypes.c_void_p,)),
    ("sqlite3_column_type", ctypes.c_int, (ctypes.c_void_p, ctypes.c_int)),
    ("sqlite3_column_int64", ctypes.c_int64, (ctypes.c_void_p, ctypes.c_int)),
    ("sqlite3_column_double", ctypes.c_double, (ctypes.c_void_p, ctypes.c_int)),
    ("sqlite3_column_text", ctypes.c_void_p, (ctypes.c_void_p, ctypes.c_int)),
    ("sqlite3_column_blob", ctypes.c_void_p, (ctypes.c_void_p, ctypes.c_int)),
    ("sqlite3_column_bytes", ctypes.c_int, (ctypes.c_void_p, ctypes.c_int)),
    ("sqlite3_expanded_sql", ctypes.c_void_p, (ctypes.c_void_p,)),
    ("sqlite3_free", None, (ctypes.c_void_p,)),
)


def _address(function) -> int:
    return ctypes.cast(function, ctypes.c_void_p).value


def _load():
    """The sqlite3 module's own SQLite library (GIL kept on each call), or None: when the
    module links SQLite in statically, `libsqlite3.so.0` would be a second copy."""
    try:
        lib = ctypes.PyDLL("libsqlite3.so.0", mode=os.RTLD_NOLOAD | os.RTLD_NOW)
        module = ctypes.CDLL(_sqlite3.__file__, mode=os.RTLD_NOLOAD | os.RTLD_NOW)
        # dlsym through the module's handle finds the SQLite the module itself calls.
        same = _address(module.sqlite3_step) == _address(lib.sqlite3_step)
    except (OSError, AttributeError):  # not loaded, not a shared library, no such symbol
        return None
    if not same:
        return None
    for name, restype, argtypes in _SIGNATURES:
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib


_LIB = _load()
if _LIB is not None:  # a text column as bytes up to its first NUL: for packed rows only
    _PACKED_TEXT = _LIB["sqlite3_column_text"]
    _PACKED_TEXT.restype, _PACKED_TEXT.argtypes = ctypes.c_char_p, (ctypes.c_void_p, ctypes.c_int)


def _bytes(pointer, size) -> bytes:
    return ctypes.string_at(pointer, size) if size else b""


class HeldReader:
    """One thread's read-only connection to the database file and its prepared statements."""

    trace = None  # tests: called with each statement's SQL, as sqlite3's trace callback is

    def __init__(self, path: str, cache_kib: int):
        self.db = ctypes.c_void_p()
        self.statements = {}  # sql -> (statement, column count, parameter count) or None
        if _LIB.sqlite3_open_v2(os.fsencode(path), ctypes.byref(self.db),
                                _OPEN_READONLY | _OPEN_NOMUTEX, None) != _OK or _LIB.sqlite3_exec(
                self.db, f"PRAGMA cache_size=-{int(cache_kib)}".encode(), None, None, None) != _OK:
            self.close()
            raise sqlite3.OperationalError(f"cannot open {path} to read")

    def _prepared(self, sql: str):
        if sql in self.statements:
            return self.statements[sql]
        handle = ctypes.c_void_p()
        found = None
        if _LIB.sqlite3_prepare_v2(self.db, sql.encode(), -1, ctypes.byref(handle), None) != _OK:
            _LIB.sqlite3_finalize(handle)
            return None  # not cached: sqlite3 gives the error, and a later call may succeed
        if _LIB.sqlite3_stmt_readonly(handle):
            found = (handle, _LIB.sqlite3_column_count(handle),
                     _LIB.sqlite3_bind_parameter_count(handle))
        else:
            _LIB.sqlite3_finalize(handle)
        self.statements[sql] = found
        return found

    def rows(self, sql: str, params, first=False, packed=False) -> list | None:
        """Every row of a SELECT (the first only, with `first`) as tuples of what sqlite3 would
        return, or None: run it through sqlite3 instead. `packed`: each row is one column of
        `json_array` text (db.Statement), never NULL and with no NUL byte in it, so it is
        read in one call."""
        found = self._prepared(sql)
        if found is None or found[2] != len(params):
            return None
        handle, width, _ = found
        lib = _LIB
        try:
            for index, value in enumerate(params, 1):
                kind = type(value)
                if kind is int or kind is bool:
                    if value not in _INT64:  # sqlite3 raises OverflowError; ctypes would wrap
                        return None
                    rc = lib.sqlite3_bind_int64(handle, index, value)
                elif kind is str:
                    data = value.encode()
                    rc = lib.sqlite3_bind_text(handle, index, data, len(data), _TRANSIENT)
                elif value is None:
                    rc = lib.sqlite3_bind_null(handle, index)
                elif kind is float:
                    rc = lib.sqlite3_bind_double(handle, index, value)
                else:  # bytes, dates, subclasses: sqlite3's own adapters and rules apply
                    return None
                if rc != _OK:
                    return None
            if self.trace is not None:
                self._trace(handle)
            out = []
            while True:
                rc = lib.sqlite3_step(handle)
                if rc == _DONE:
                    return out
                if rc != _ROW:  # busy, or an error sqlite3 will report
                    return None
                if packed:
                    text = _PACKED_TEXT(handle, 0)
                    if text is None:
                        return None
                    out.append((text.decode(),))
                    if first:
                        return out
                    continue
                row = []
                for column in range(width):
                    kind = lib.sqlite3_column_type(handle, column)
                    if kind == _INTEGER:
                        row.append(lib.sqlite3_column_int64(handle, column))
                    elif kind == _TEXT:
                        text = _bytes(lib.sqlite3_column_text(handle, column),
                                      lib.sqlite3_column_bytes(handle, column))
                        row.append(text.decode())
                    elif kind == _NULL:
                        row.append(None)
                    elif kind == _FLOAT:
                        row.append(lib.sqlite3_column_double(handle, column))
                    else:
                        row.append(_bytes(lib.sqlite3_column_blob(handle, column),
                                          lib.sqlite3_column_bytes(handle, column)))
                out.append(tuple(row))
                if first:
                    return out
        except UnicodeError:  # text that is not UTF-8 either way: sqlite3's error
            return None
        finally:
            lib.sqlite3_reset(handle)  # ends the read transaction: nothing lingers

    def _trace(self, handle):
        expanded = _LIB.sqlite3_expanded_sql(handle)
        try:
            self.trace(ctypes.string_at(expanded).decode())
        finally:
            _LIB.sqlite3_free(expanded)

    def names(self, sql: str) -> list:
        """The column names of a statement `rows` ran, as a cursor's description has them."""
        handle, width, _ = self.statements[sql]
        return [(_LIB.sqlite3_column_name(handle, i).decode(),) for i in range(width)]

    def close(self):
        for found in self.statements.values():
            if found is not None:
                _LIB.sqlite3_finalize(found[0])
        self.statements = {}
        if self.db:
            _LIB.sqlite3_close_v2(self.db)
            self.db = ctypes.c_void_p()

    def __del__(self):
        self.close()


def reader(url, cache_kib: int) -> HeldReader | None:
    """A HeldReader for the engine URL's database file, with a page cache of `cache_kib`, or
    None: no such library, a database in memory, or URL options (`?mode=ro`, `uri=true`...)
    only sqlite3 knows to apply."""
    if _LIB is None or url.query or url.database in (None, "", ":memory:"):
        return None
    try:
        return HeldReader(url.database, cache_kib)
    except sqlite3.OperationalError:  # this thread's reads go through sqlite3
        return None
