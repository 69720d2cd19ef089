"""The API's GIL-holding SQLite reads (serva.sqlite_held): the same rows as sqlite3, only
reads, the sqlite3 module's own library, no wait, nothing left open, and the API on them."""
import ctypes
import _json
import _sqlite3
import math
import sqlite3
import threading

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from serva import db, sqlite_held
from serva.sqlite_held import HeldReader

pytestmark = pytest.mark.skipif(sqlite_held._LIB is None,
                                reason="this Python's sqlite3 links SQLite in statically")


@pytest.fixture
def path(tmp_path):
    file = str(tmp_path / "held.sqlite")
    conn = sqlite3.connect(file, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v)")
    conn.executemany("INSERT INTO t (v) VALUES (?)",
                     [(1,), (-2 ** 63,), ("text",), ("",), ("ünï €",), (None,), (2.5,),
                      (b"\x00bytes",), (b"",)])
    conn.close()
    return file


@pytest.fixture
def both(path):
    reader, plain = HeldReader(path, db.FAST_READ_CACHE_KIB), sqlite3.connect(path, isolation_level=None)
    yield reader, plain
    reader.close()
    plain.close()


def test_the_library_is_the_one_the_sqlite3_module_calls():
    maps = open("/proc/self/maps").read().splitlines()
    files = {line.split()[-1] for line in maps if "libsqlite3" in line}
    assert len(files) == 1, files  # one copy of SQLite in the process
    module = ctypes.CDLL(_sqlite3.__file__)
    assert (sqlite_held._address(sqlite_held._LIB.sqlite3_step)
            == sqlite_held._address(module.sqlite3_step))
    assert sqlite_held._LIB.sqlite3_libversion().decode() == sqlite3.sqlite_version


def test_a_module_that_does_not_call_the_library_is_refused(monkeypatch):
    """Where the module's own SQLite is not libsqlite3.so.0 (linked in statically), `_load`
    gives nothing rather than a second copy: here a module with no SQLite at all."""
    monkeypatch.setattr(sqlite_held._sqlite3, "__file__", _json.__file__)
    assert sqlite_held._load() is None


def test_every_stored_kind_reads_as_sqlite3_reads_it(both):
    reader, plain = both
    sql = "SELECT id, v FROM t ORDER BY id"
    assert reader.rows(sql, ()) == plain.execute(sql).fetchall()
    assert reader.names(sql) == [("id",), ("v",)]


def test_first_reads_one_row_and_packed_rows_read_as_text(both):
    reader, plain = both
    sql = "SELECT json_array(id, v) FROM t WHERE typeof(v) != 'blob' ORDER BY id"
    every = plain.execute(sql).fetchall()
    assert len(every) > 1
    assert reader.rows(sql, (), first=True) == every[:1]
    assert reader.rows(sql, (), packed=True) == every == reader.rows(sql, ())
    assert reader.rows(sql, (), first=True, packed=True) == every[:1]
    assert reader.rows("SELECT v FROM t WHERE id = -1", (), first=True) == []


_VALUES = st.one_of(st.integers(), st.text(), st.none(), st.booleans(), st.floats(),
                    st.binary(max_size=8))


def _held_kind(value) -> bool:
    """What the held read binds itself; anything else goes to sqlite3's own rules."""
    if type(value) in (int, bool):
        return -2 ** 63 <= value < 2 ** 63
    if type(value) is str:
        return value == value.encode("utf-8", "replace").decode()  # no lone surrogate
    return value is None or type(value) is float


# One reader and one sqlite3 connection for every example: they only read.
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(_VALUES, min_size=1, max_size=4))
def test_bound_values_come_back_as_sqlite3_gives_them(both, values):
    """Each value bound and read back, with SQLite's idea of its type: the held read returns
    what sqlite3 returns, or None where sqlite3 would adapt the value or refuse it."""
    reader, plain = both
    sql = "SELECT " + ", ".join("?, typeof(?)" for _ in values)
    params = [value for value in values for _ in (0, 1)]
    try:
        expected = plain.execute(sql, params).fetchall()
    except (sqlite3.Error, OverflowError, UnicodeError):
        expected = None
    got = reader.rows(sql, params)
    if all(_held_kind(value) for value in values):
        assert got is not None and got == expected
    else:
        assert got is None


def test_a_nan_binds_as_sqlite3_binds_it(both):
    reader, plain = both
    assert reader.rows("SELECT ?", [math.nan]) == plain.execute("SELECT ?", [math.nan]).fetchall()
    assert reader.rows("SELECT ?", [math.nan]) == [(None,)]


@pytest.mark.parametrize("sql", [
    "UPDATE t SET v = 0", "INSERT INTO t (v) VALUES (1)", "DELETE FROM t",
    "PRAGMA journal_mode=DELETE", "CREATE TABLE u (x)", "BEGIN IMMEDIATE"])
def test_only_reads_run_here(both, sql):
    reader, plain = both
    before = plain.execute("SELECT id, v FROM t").fetchall()
    assert reader.rows(sql, ()) is None  # sent to sqlite3 instead
    assert plain.execute("SELECT id, v FROM t").fetchall() == before
    assert plain.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_bad_statement_goes_to_sqlite3_for_its_error(both):
    reader, plain = both
    assert reader.rows("SELECT nope FROM t", ()) is None
    assert reader.rows("SELECT ?", ()) is None  # a parameter missing
    with pytest.raises(sqlite3.OperationalError):
        plain.execute("SELECT nope FROM t")


def test_no_read_transaction_is_left_open(both, path):
    """After a read, a writer can checkpoint the whole WAL and truncate it; a sqlite3 cursor
    left mid-SELECT (the control) holds its snapshot and blocks that."""
    reader, plain = both
    plain.execute("INSERT INTO t (v) VALUES ('more')")
    assert reader.rows("SELECT v FROM t ORDER BY id", ())[-1] == ("more",)
    assert plain.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    other = sqlite3.connect(path, isolation_level=None)
    cursor = other.execute("SELECT v FROM t")
    cursor.fetchone()
    plain.execute("INSERT INTO t (v) VALUES ('again')")
    assert plain.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 1  # blocked
    cursor.close()
    other.close()


def test_a_locked_database_is_not_waited_for_with_the_gil(tmp_path):
    """Another connection holding the database exclusively (a rollback-journal database, where
    a writer's EXCLUSIVE lock keeps readers out): the read gives up at once, as a wait here
    would stop every thread of the process, and sqlite3 takes it over, waiting with the GIL
    released; once the lock is gone the read runs here again."""
    path = str(tmp_path / "journal.sqlite")
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("CREATE TABLE t (v)")
    reader = HeldReader(path, db.FAST_READ_CACHE_KIB)
    assert reader.rows("SELECT count(*) FROM t", ()) == [(0,)]
    locker.execute("BEGIN EXCLUSIVE")
    locker.execute("INSERT INTO t (v) VALUES ('locked')")
    done = threading.Event()
    results = []

    def read():
        results.append(reader.rows("SELECT count(*) FROM t", ()))
        done.set()
    threading.Thread(target=read).start()
    assert done.wait(2), "the read waited for the lock"
    assert results == [None]
    locker.execute("COMMIT")
    locker.close()
    assert reader.rows("SELECT count(*) FROM t", ()) == [(1,)]
    reader.close()


def test_the_api_reads_through_it_with_the_same_answers(client, catalog, partner, monkeypatch):
    """balance, services, add's key and a single status are read with the GIL kept; a batch of
    orders goes through sqlite3 (Statement's held=False); the answers are the same when every
    read goes through sqlite3."""
    served = []
    rows = HeldReader.rows

    def counted(self, sql, params, *how):
        got = rows(self, sql, params, *how)
        served.append(got is not None)
        return got
    monkeypatch.setattr(HeldReader, "rows", counted)

    def ask(**params):
        del served[:]
        response = client.post("/api/v1", data={"key": partner[1], **params})
        assert response.status_code == 200
        return response.get_json()

    order = ask(action="add", service="1234", link="https://example.com/p/1", quantity=100)["order"]
    assert served == [True]  # the key with the service (the rest is the write)
    asks = [({"action": "balance"}, [True]), ({"action": "services"}, [True]),
            ({"action": "status", "order": order}, [True]),
            ({"action": "status", "orders": f"{order},ORD-999999"}, [])]
    answers = []
    for params, held in asks:
        answers.append(ask(**params))
        assert served == held, params
    monkeypatch.setattr(HeldReader, "rows", lambda self, sql, params, *how: None)
    assert [ask(**params) for params, _ in asks] == answers
    assert "error" not in str(answers[:3])


def test_a_threads_two_connections_share_one_default_page_cache(app):
    """fast_read's connection and its held reader each get half of SQLite's default cache."""
    default = sqlite3.connect(":memory:").execute("PRAGMA cache_size").fetchone()[0]  # -KiB
    assert 2 * db.FAST_READ_CACHE_KIB == -default
    with app.app_context(), db.fast_read() as conn:
        assert conn.held.rows("PRAGMA cache_size", ()) == [(-db.FAST_READ_CACHE_KIB,)]
        assert conn.dbapi.execute("PRAGMA cache_size").fetchone() == (-db.FAST_READ_CACHE_KIB,)
