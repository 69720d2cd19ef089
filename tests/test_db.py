"""Storage: SQLite opened with WAL, foreign keys and a busy timeout; writes in real
BEGIN IMMEDIATE transactions (proved on the SQL that reaches SQLite), reads deferred; the
schema has one source (schema.sql is generated from it) and a revision check."""
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text, update
from sqlalchemy.exc import IntegrityError

from serva import create_app, db, migrations, schema
from serva.auth import flush_key_uses
from serva.schema import accounts, serva_meta
from serva.cli import cli as serva_cli


ROOT = Path(__file__).resolve().parent.parent


def db_path(app) -> str:
    return app.config["DATABASE_URL"].removeprefix("sqlite:///")


def normalized(statements):
    return [" ".join(s.split()).upper() for s in statements]


def _new_account(conn, email="w@example.com"):
    return conn.execute(insert(accounts).values(email=email, created_at=db.now())).inserted_primary_key[0]


# ---------------------------------------------------------------- BEGIN IMMEDIATE

def test_a_write_sends_begin_immediate_to_sqlite(app, sql_log):
    with app.app_context(), db.write() as conn:
        _new_account(conn)
    sent = normalized(sql_log)
    assert "BEGIN IMMEDIATE" in sent
    begin = sent.index("BEGIN IMMEDIATE")
    insert_at = next(i for i, s in enumerate(sent) if s.startswith("INSERT INTO ACCOUNTS"))
    assert begin < insert_at
    assert "COMMIT" in sent[insert_at:]
    assert not any(s in ("BEGIN", "BEGIN DEFERRED") for s in sent)  # no plain BEGIN anywhere


def test_a_failed_write_is_rolled_back(app, sql_log):
    with pytest.raises(RuntimeError):
        with app.app_context(), db.write() as conn:
            _new_account(conn)
            raise RuntimeError("abort")
    sent = [s for s in normalized(sql_log) if not s.startswith("PRAGMA")]
    assert sent[0] == "BEGIN IMMEDIATE"
    assert "ROLLBACK" in sent and "COMMIT" not in sent
    with app.app_context(), db.read() as conn:
        assert conn.execute(select(accounts)).first() is None


def test_an_api_write_uses_begin_immediate(app, client, partner, catalog, sql_log):
    body = client.post("/api/v1", data={"action": "add", "key": partner[1], "service": "1234",
                                        "link": "https://example.com/p", "quantity": "100"}).get_json()
    assert "order" in body, body
    assert "BEGIN IMMEDIATE" in normalized(sql_log)


def test_a_cli_write_uses_begin_immediate(app, runner, partner, sql_log):
    result = runner.invoke(serva_cli, args=["account", "credit", "partner@example.com", "5", "--note", "t"])
    assert result.exit_code == 0, result.output
    assert "BEGIN IMMEDIATE" in normalized(sql_log)


def test_a_pure_read_sends_no_begin(app, client, partner, sql_log):
    client.post("/api/v1", data={"action": "balance", "key": partner[1]})
    flush_key_uses(app)  # the first use, written off the request path
    del sql_log[:]
    for action in ("balance", "services", "balance"):
        assert "error" not in client.post("/api/v1", data={"action": action, "key": partner[1]}).get_json()
    sent = normalized(sql_log)
    assert any(s.startswith("SELECT") for s in sent), "nothing captured: the test would prove nothing"
    assert not any(s.startswith(("BEGIN", "COMMIT", "INSERT", "UPDATE", "DELETE")) for s in sent)


def test_read_blocks_send_no_begin(app, sql_log):
    with app.app_context(), db.read() as conn:
        conn.execute(select(accounts)).all()
        conn.execute(select(serva_meta)).all()
    sent = normalized(sql_log)
    assert len([s for s in sent if s.startswith("SELECT")]) == 2
    assert not any(s.startswith("BEGIN") for s in sent)


def _other_writer_is_locked_out(path) -> bool:
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as error:
        assert "locked" in str(error)
        return True
    else:
        other.execute("ROLLBACK")
        return False
    finally:
        other.close()


def test_a_write_transaction_holds_the_write_lock_from_its_start(app):
    """Behavioural proof of IMMEDIATE: a deferred transaction that has only read holds no
    write lock in WAL mode; ours has it from BEGIN, so another writer is kept out."""
    with app.app_context(), db.write() as conn:
        conn.execute(select(accounts)).all()          # only a read so far
        assert _other_writer_is_locked_out(db_path(app))
    assert not _other_writer_is_locked_out(db_path(app))


def test_a_read_does_not_take_the_write_lock(app):
    with app.app_context(), db.read() as conn:
        conn.execute(select(accounts)).all()
        assert not _other_writer_is_locked_out(db_path(app))


# ---------------------------------------------------------------- configuration

def test_database_url_and_secret_key_from_the_environment(monkeypatch, tmp_path):
    url = f"sqlite:///{tmp_path / 'env.sqlite'}"
    monkeypatch.setenv("SERVA_DATABASE_URL", url)
    monkeypatch.setenv("SERVA_SECRET_KEY", "from-the-environment")
    app = create_app({"TESTING": True})
    assert app.config["DATABASE_URL"] == url
    assert app.config["SECRET_KEY"] == "from-the-environment"
    assert str(app.extensions["serva.engine"].url) == url
    app.extensions["serva.engine"].dispose()


# ---------------------------------------------------------------- PRAGMAs

def _pragma(app, name):
    with app.app_context(), db.read() as conn:
        return conn.exec_driver_sql(f"PRAGMA {name}").scalar()


def test_journal_mode_is_wal(app):
    assert _pragma(app, "journal_mode").lower() == "wal"
    # and it is the database file's mode, seen by any other connection
    other = sqlite3.connect(db_path(app))
    assert other.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    other.close()


def test_foreign_keys_are_on(app):
    assert _pragma(app, "foreign_keys") == 1


def test_foreign_keys_are_enforced(app):
    from serva.schema import api_keys
    with pytest.raises(IntegrityError):
        with app.app_context(), db.write() as conn:
            conn.execute(insert(api_keys).values(account_id=999, key_hash="f" * 64, prefix="sk_x",
                                                 created_at=1))


def test_busy_timeout_is_set(app):
    assert _pragma(app, "busy_timeout") >= 1000


def test_each_connection_keeps_a_small_page_cache(app):
    """A worker's pool holds a connection per request thread; each one's cache is 1 MiB, not
    SQLite's default 2 MB (negative: KiB), which keeps a worker's memory bounded."""
    assert _pragma(app, "cache_size") == -1024


def test_synchronous_defaults_to_full(app):
    assert _pragma(app, "synchronous") == 2


def test_synchronous_is_a_setting(tmp_path):
    app = create_app({"TESTING": True, "SECRET_KEY": "t", "SQLITE_SYNCHRONOUS": "NORMAL",
                      "DATABASE_URL": f"sqlite:///{tmp_path / 'n.sqlite'}"})
    assert _pragma(app, "synchronous") == 1
    app.extensions["serva.engine"].dispose()


def test_a_bad_synchronous_setting_is_refused(tmp_path):
    with pytest.raises(ValueError, match="SYNCHRONOUS"):
        create_app({"TESTING": True, "SECRET_KEY": "t", "SQLITE_SYNCHRONOUS": "SOMETIMES",
                    "DATABASE_URL": f"sqlite:///{tmp_path / 'n.sqlite'}"})


def test_every_pooled_connection_gets_the_pragmas(app):
    engine = app.extensions["serva.engine"]
    connections = [engine.raw_connection() for _ in range(3)]
    try:
        for pooled in connections:
            cursor = pooled.cursor()
            assert cursor.execute("PRAGMA foreign_keys").fetchone()[0] == 1
            assert cursor.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
            cursor.close()
    finally:
        for pooled in connections:
            pooled.close()


# ---------------------------------------------------------------- schema

def test_schema_sql_file_is_generated_from_the_schema():
    assert (ROOT / "schema.sql").read_text() == db.schema_sql(), \
        "schema.sql is stale: run `serva schema-sql > schema.sql`"


def test_schema_sql_command_prints_the_same(runner):
    result = runner.invoke(serva_cli, args=["schema-sql"])
    assert result.exit_code == 0
    assert result.output == (ROOT / "schema.sql").read_text()


def test_schema_sql_builds_the_same_tables(tmp_path):
    conn = sqlite3.connect(tmp_path / "from-file.sqlite")
    conn.executescript((ROOT / "schema.sql").read_text())
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    indexes = {row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='index' AND name NOT LIKE 'sqlite_autoindex%'")}
    conn.close()
    assert tables == set(schema.metadata.tables)
    assert indexes == {index.name for table in schema.metadata.tables.values()
                       for index in table.indexes}


def test_schema_sql_names_its_revision():
    assert f"revision {migrations.head()}" in db.schema_sql().splitlines()[0]


def test_init_stamps_the_head_revision(app):
    assert db.schema_revision(app.extensions["serva.engine"]) == migrations.head()


def _stamp(path, revision):
    conn = sqlite3.connect(path)
    conn.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    conn.commit()
    conn.close()


def test_a_database_at_an_unknown_revision_is_refused(app, tmp_path):
    path = db_path(app)
    app.extensions["serva.engine"].dispose()
    _stamp(path, "from_a_newer_serva")
    with pytest.raises(db.SchemaMismatch) as raised:
        create_app({"TESTING": True, "SECRET_KEY": "t", "DATABASE_URL": f"sqlite:///{path}"})
    message = str(raised.value)
    assert "from_a_newer_serva" in message and "does not know" in message
    assert "\n" not in message


def test_a_database_behind_head_is_refused_with_what_to_run(app):
    """A first-release database (no alembic_version, schema_version 1) is behind head."""
    path = db_path(app)
    app.extensions["serva.engine"].dispose()
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE alembic_version")
    conn.execute("INSERT INTO serva_meta (key, value) VALUES ('schema_version', '1')")
    conn.commit()
    conn.close()
    with pytest.raises(db.SchemaMismatch) as raised:
        create_app({"TESTING": True, "SECRET_KEY": "t", "DATABASE_URL": f"sqlite:///{path}"})
    message = str(raised.value)
    assert "first release" in message and "`serva init-db`" in message and "back up" in message
    assert "\n" not in message


@pytest.mark.parametrize("existing", [False, True])
def test_an_empty_database_is_fine(tmp_path, existing):
    path = tmp_path / "empty.sqlite"
    if existing:
        path.write_bytes(b"")
    app = create_app({"TESTING": True, "SECRET_KEY": "t", "DATABASE_URL": f"sqlite:///{path}"})
    engine = app.extensions["serva.engine"]
    assert db.schema_revision(engine) is None
    assert "created a new database" in db.init_schema(engine)
    assert db.schema_revision(engine) == migrations.head()
    engine.dispose()


def test_init_schema_keeps_data(app, partner):
    engine = app.extensions["serva.engine"]
    assert "nothing to do" in db.init_schema(engine)
    with app.app_context(), db.read() as conn:
        assert conn.execute(select(accounts.c.email)).scalars().all() == ["partner@example.com"]


def test_init_schema_refuses_an_unknown_revision(app):
    engine = app.extensions["serva.engine"]
    with app.app_context(), db.write() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '99'"))
    with pytest.raises(db.SchemaMismatch, match="99"):
        db.init_schema(engine)


# ---------------------------------------------------------------- wsgi

def _run_wsgi_import(tmp_path, database):
    env = {**os.environ, "SERVA_DATABASE_URL": f"sqlite:///{database}", "SERVA_SECRET_KEY": "t"}
    return subprocess.run([sys.executable, "-c", "import wsgi; print('imported', wsgi.app.name)"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_wsgi_refuses_an_uninitialised_database(tmp_path):
    database = tmp_path / "blank.sqlite"
    database.write_bytes(b"")
    result = _run_wsgi_import(tmp_path, database)
    assert result.returncode != 0
    assert "imported" not in result.stdout
    assert "not initialized" in result.stderr and "init-db" in result.stderr
    assert "Traceback" not in result.stderr


def test_wsgi_refuses_a_database_at_another_revision(app, tmp_path):
    path = db_path(app)
    app.extensions["serva.engine"].dispose()
    _stamp(path, "99")
    result = _run_wsgi_import(tmp_path, path)
    assert result.returncode != 0
    assert "imported" not in result.stdout
    assert "revision 99" in result.stderr
    assert "Traceback" not in result.stderr


def test_wsgi_starts_on_an_initialised_database(app, tmp_path):
    path = db_path(app)
    app.extensions["serva.engine"].dispose()
    result = _run_wsgi_import(tmp_path, path)
    assert result.returncode == 0, result.stderr
    assert "imported serva" in result.stdout


# ---------------------------------------------------------------- concurrency

def test_two_writers_in_two_threads_never_see_database_is_locked(app):
    """Two engines (like two worker processes) doing read-then-write transactions on one
    file: with BEGIN IMMEDIATE they queue instead of failing, and no increment is lost."""
    url = app.config["DATABASE_URL"]
    with app.app_context(), db.write() as conn:
        conn.execute(insert(serva_meta).values(key="counter", value="0"))
    engines = [db.make_engine(url), db.make_engine(url)]
    rounds = 60
    errors = []
    start = threading.Barrier(2)

    def work(engine):
        try:
            start.wait()
            for _ in range(rounds):
                with db.write(engine) as conn:
                    value = int(conn.execute(select(serva_meta.c.value)
                                             .where(serva_meta.c.key == "counter")).scalar())
                    conn.execute(update(serva_meta).where(serva_meta.c.key == "counter")
                                 .values(value=str(value + 1)))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for engine in engines:
        engine.dispose()
    assert errors == []
    with app.app_context(), db.read() as conn:
        assert conn.execute(select(serva_meta.c.value).where(serva_meta.c.key == "counter")).scalar() \
            == str(2 * rounds)


def test_concurrent_credits_through_one_app_all_land(app, partner):
    from serva import ledger
    errors = []

    def work():
        try:
            for _ in range(40):
                with app.app_context(), db.write() as conn:
                    ledger.post(conn, partner[0], 1, "topup", "thread")
        except Exception as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    with app.app_context(), db.read() as conn:
        balance = conn.execute(select(accounts.c.balance).where(accounts.c.id == partner[0])).scalar()
        assert balance == 100_000_000 + 160
        assert ledger.ledger_sum(conn, partner[0]) == balance


def test_a_deferred_read_then_write_would_fail_without_immediate(app):
    """The control experiment for the test above: the same interleaving with plain deferred
    transactions hits SQLITE_BUSY at once (busy_timeout cannot help a stale snapshot), so the
    two-writer test really depends on BEGIN IMMEDIATE."""
    path = db_path(app)
    a = sqlite3.connect(path, timeout=5, isolation_level=None)
    b = sqlite3.connect(path, timeout=5, isolation_level=None)
    try:
        a.execute("BEGIN")
        a.execute("SELECT count(*) FROM accounts").fetchone()       # a's snapshot
        b.execute("INSERT INTO accounts (email, created_at) VALUES ('b@example.com', 1)")
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            a.execute("INSERT INTO accounts (email, created_at) VALUES ('a@example.com', 1)")
        a.execute("ROLLBACK")
    finally:
        a.close()
        b.close()


def test_a_write_waits_at_most_its_own_bound_and_the_connection_keeps_its_default(app):
    """A write given a shorter wait (an upkeep write off the request path) fails with an
    error `unavailable` recognizes while another process holds the write lock; the pooled
    connection's busy timeout is the engine's bound again afterwards, and nothing was written."""
    engine = app.extensions["serva.engine"]
    holder = sqlite3.connect(db_path(app), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(Exception) as raised:
            with db.write(engine, wait=0.05) as conn:
                _new_account(conn, "never@example.com")
        assert db.unavailable(raised.value, only_busy=True)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with db.read(engine) as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == \
            app.config["WRITE_WAIT_SECONDS"] * 1000
        assert conn.execute(select(accounts.c.id)
                            .where(accounts.c.email == "never@example.com")).first() is None
    with db.write(engine, wait=0.05) as conn:  # free again: the short wait is enough
        _new_account(conn, "now@example.com")


def test_writes_of_one_process_wait_for_each_other_on_its_lock(app):
    """While one thread of this process writes, another's write waits on the process's lock
    (not in SQLite): with a wait shorter than the first write it gets `Busy`, which is the
    503 `busy` of the API."""
    engine = app.extensions["serva.engine"]
    inside, release = threading.Event(), threading.Event()

    def long_write():
        with db.write(engine) as conn:
            _new_account(conn, "first@example.com")
            inside.set()
            release.wait(10)

    first = threading.Thread(target=long_write)
    first.start()
    try:
        assert inside.wait(10)
        with pytest.raises(db.Busy):
            with db.write(engine, wait=0.05):
                pass
    finally:
        release.set()
        first.join(10)
    with db.read(engine) as conn:
        assert conn.execute(select(accounts.c.email)).scalars().all() == ["first@example.com"]


def test_json_rows_aggregates_rows_into_lists(app):
    """db.json_rows: the rows' columns as one JSON value, decoded to lists of the columns'
    values (what the key lookup carries for `status` and `services`)."""
    with app.app_context(), db.write() as conn:
        _new_account(conn, "a@example.com")
        _new_account(conn, "b@example.com")
    with app.app_context(), db.read() as conn:
        rows = conn.execute(select(db.json_rows(accounts.c.id, accounts.c.email,
                                                accounts.c.balance))).scalar()
        assert sorted(rows) == [[1, "a@example.com", 0], [2, "b@example.com", 0]]
        empty = conn.execute(select(db.json_rows(accounts.c.id))
                             .where(accounts.c.id > 100)).scalar()
        assert not empty


def test_a_group_commit_runs_each_work_in_its_own_savepoint_and_commits_once(app, sql_log):
    """Works queued while another group commits go in one transaction: one that raises is
    rolled back alone and gets its own error, the others are committed with one COMMIT."""
    import threading

    from serva.db.group_commit import GroupCommit
    from serva.schema import accounts as accounts_table

    with app.app_context(), db.write() as conn:
        ids = [_new_account(conn, f"g{i}@example.com") for i in range(6)]
    with app.app_context():
        group = GroupCommit(db.get_engine())
    hold, results = threading.Event(), {}

    def first(conn):
        hold.wait(5)  # the others queue meanwhile: they form the next group
        return "first"

    def work(i):
        def run(conn):
            conn.execute(accounts_table.update().where(accounts_table.c.id == ids[i])
                         .values(discount_bp=i + 1))
            if i == 3:
                raise ValueError("refused")
            return i
        return run

    def call(name, fn):
        with app.app_context():
            try:
                results[name] = group.run(fn)
            except ValueError as error:
                results[name] = str(error)

    leader = threading.Thread(target=call, args=("first", first))
    leader.start()
    while not group.leading:
        pass
    others = [threading.Thread(target=call, args=(i, work(i))) for i in range(6)]
    for thread in others:
        thread.start()
    while len(group.queue) < 6:
        pass
    sql_log.clear()
    hold.set()
    for thread in [leader, *others]:
        thread.join(10)
    assert results == {"first": "first", 0: 0, 1: 1, 2: 2, 3: "refused", 4: 4, 5: 5}
    assert normalized(sql_log).count("COMMIT") == 2  # the leader's own, then the group's
    with app.app_context(), db.read() as conn:
        discounts = dict(conn.execute(select(accounts_table.c.id, accounts_table.c.discount_bp)
                                      .where(accounts_table.c.id.in_(ids))).all())
    assert [discounts[ids[i]] for i in range(6)] == [1, 2, 3, 0, 5, 6]


def test_a_write_gets_the_lock_soon_after_another_process_lets_go(app):
    """Another process's write (a connection of its own) holds the lock for 340 ms: the write
    waiting for it begins within a few milliseconds of the release. SQLite's busy handler
    sleeps in growing steps (…, 50, 100 ms) and would begin only at 428 ms."""
    engine = app.extensions["serva.engine"]
    holder = sqlite3.connect(db_path(app), isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    released = []

    def let_go():
        time.sleep(0.34)
        holder.execute("ROLLBACK")
        released.append(time.monotonic())

    releaser = threading.Thread(target=let_go)
    releaser.start()
    try:
        with db.write(engine) as conn:
            began = time.monotonic()
            _new_account(conn, "after@example.com")
    finally:
        releaser.join()
        holder.close()
    assert began - released[0] < 0.045, began - released[0]
