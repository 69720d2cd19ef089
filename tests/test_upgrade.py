"""The proof on real data: a database made by the first release's own code (commit 89138a3,
rebuilt by tests/data/make_first_release_db.py) is upgraded in place by `serva init-db` and
keeps every row; the keys it printed still authenticate, balances and orders read the same,
new orders work and `serva audit` passes. The same on PostgreSQL, with the first release's
schema built there by the first revision and the same rows copied in."""
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import MetaData, select, text
from sqlalchemy.types import Boolean

from serva import create_app, db, keys, ledger, migrations, services
from serva.auth import flush_key_uses
from serva.ids import parse_order
from serva.money import format_amount, parse_amount
from serva.cli import cli as serva_cli

from test_migrations import cli_app, upgrade_by_revisions

DATA = Path(__file__).resolve().parent / "data"
FACTS = json.loads((DATA / "first_release.json").read_text())
DEMO, RESELLER = "demo@example.com", "reseller@example.com"


def _plain(value):
    return int(value) if isinstance(value, bool) else value  # SQLite keeps booleans as 0/1


def sqlite_rows(path) -> dict:
    """{table: (columns, sorted rows)} for every table of a first-release SQLite file."""
    conn = sqlite3.connect(path)
    try:
        tables = [name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "AND name != 'alembic_version' ORDER BY name")]
        found = {}
        for table in tables:
            cursor = conn.execute(f'SELECT * FROM "{table}"')
            columns = tuple(column[0] for column in cursor.description)
            found[table] = (columns, sorted(cursor.fetchall(), key=repr))
        return found
    finally:
        conn.close()


# What later revisions change on purpose in the first release's rows: (table, column) ->
# (the column now, its value from the old one). A revision that renames, drops or converts a
# column adds its line here; every other column must read back exactly as it was.
CHANGED = {
    ("services", "refill"): ("refill_days", lambda refill: 30 if refill else 0),  # refill_cancel_dripfeed
}


def _now(table, column):
    return CHANGED.get((table, column), (column, None))


def expected(before: dict) -> dict:
    """The first release's rows as the head revision must hold them."""
    found = {}
    for table, (columns, rows) in before.items():
        changes = [_now(table, column)[1] for column in columns]
        found[table] = (columns, sorted((tuple(change(v) if change else v
                                               for change, v in zip(changes, row))
                                         for row in rows), key=repr))
    return found


def rows_now(conn, before: dict) -> dict:
    """The first release's tables and columns, read back after the upgrade (later revisions
    may add columns and tables; the release's own values must all still be there)."""
    found = {}
    for table, (columns, _) in before.items():
        listed = ", ".join(f'"{_now(table, column)[0]}"' for column in columns)
        rows = conn.execute(text(f'SELECT {listed} FROM "{table}"')).all()
        found[table] = (columns, sorted((tuple(_plain(v) for v in row) for row in rows), key=repr))
    return found


def check_the_release_data_serves(app):
    """Keys, balances and orders as the first release left them; a new order; the audit."""
    client = app.test_client()

    def api(key, **params):
        response = client.post("/api/v1", data={"key": key, **params})
        assert response.status_code == 200
        return response.get_json()

    for email, key in FACTS["keys"].items():
        assert api(key, action="balance") == {"balance": FACTS["balances"][email], "currency": "USD"}
    with db.read(app.extensions["serva.engine"]) as conn:
        stored = dict(conn.execute(text("SELECT id, status FROM orders")).all())
    demo_orders = [FACTS["orders"][name] for name in ("completed", "partial", "canceled", "coupon", "fields")]
    statuses = api(FACTS["keys"][DEMO], action="status", orders=",".join(demo_orders))
    for order in demo_orders:
        assert statuses[order]["status"] == stored[parse_order(order)]
    assert statuses[FACTS["orders"]["partial"]]["status"] == "Partial"
    assert statuses[FACTS["orders"]["partial"]]["remains"] == 800
    assert statuses[FACTS["orders"]["canceled"]]["status"] == "Canceled"

    placed = api(FACTS["keys"][DEMO], action="add", service="1234",
                 link="https://instagram.com/p/after-the-upgrade", quantity="1000")
    assert placed["order"] == "ORD-100008"  # numbering goes on after the release's seven orders
    charge = parse_amount(placed["charge"])
    assert charge == 890_000
    expected = parse_amount(FACTS["balances"][DEMO]) - charge
    assert api(FACTS["keys"][DEMO], action="balance")["balance"] == format_amount(expected)
    again = api(FACTS["keys"][DEMO], action="add", service="1234",  # the guard still works
                link="https://instagram.com/p/after-the-upgrade", quantity="1000")
    assert again["code"] in ("duplicate_target", "active_order_exists")
    check_one_data_path(app.extensions["serva.engine"], charges_of=parse_order(placed["order"]))
    audit = app.test_cli_runner().invoke(serva_cli, args=["audit"])
    assert audit.exit_code == 0, audit.output
    assert "audit passed" in audit.output


def check_one_data_path(engine, charges_of=None):
    """After the upgrade to head: no ledger trigger (SQLite), no serva_place_order
    (PostgreSQL), every balance equal to its ledger sum, and the order `charges_of` (placed
    after the upgrade) charged by exactly one ledger row."""
    with db.read(engine) as conn:
        if conn.dialect.name == "sqlite":
            assert conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")
                                ).all() == []
        else:
            assert conn.execute(text("SELECT proname FROM pg_proc p JOIN pg_namespace n "
                                     "ON n.oid = p.pronamespace WHERE n.nspname = "
                                     "current_schema()")).all() == []
        assert ledger.balance_mismatches(conn) == []
        if charges_of is not None:
            charge = conn.execute(text("SELECT charge FROM orders WHERE id = :id"),
                                  {"id": charges_of}).scalar()
            assert conn.execute(text("SELECT amount FROM ledger WHERE order_id = :id"),
                                {"id": charges_of}).scalars().all() == [-charge]


def test_the_committed_database_is_a_first_release_database():
    before = sqlite_rows(DATA / "first_release.sqlite")
    assert ("schema_version", "1") in before["serva_meta"][1]
    assert "alembic_version" not in before
    statuses = {row[before["orders"][0].index("status")] for row in before["orders"][1]}
    assert {"Completed", "Partial", "Canceled", "Pending", "In progress", "Processing"} <= statuses
    assert any(row[before["orders"][0].index("coupon_id")] for row in before["orders"][1])
    assert all(rows for _, rows in before.values()), "every table holds rows"


def test_a_first_release_database_upgrades_in_place_with_serva_init_db(tmp_path):
    path = tmp_path / "serva.sqlite"
    shutil.copyfile(DATA / "first_release.sqlite", path)
    before = sqlite_rows(path)
    url = f"sqlite:///{path}"

    with pytest.raises(db.SchemaMismatch, match="first release.*`serva init-db`"):
        create_app({"TESTING": True, "SECRET_KEY": "t", "DATABASE_URL": url})  # a server refuses

    script = Path(sys.executable).parent / "serva"
    if not script.exists():
        pytest.skip("the serva console script is not installed next to this Python")
    env = {**os.environ, "SERVA_DATABASE_URL": url, "SERVA_SECRET_KEY": "t"}
    env.pop("FLASK_APP", None)

    def serva(*args):
        return subprocess.run([str(script), *args], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)

    upgraded = serva("init-db")
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.startswith("recognised a database of Serva's first release")
    assert f"upgraded it to {migrations.head()}" in upgraded.stdout
    again = serva("init-db")
    assert again.returncode == 0 and "nothing to do" in again.stdout

    app = create_app({"TESTING": True, "SECRET_KEY": "t", "DATABASE_URL": url})
    engine = app.extensions["serva.engine"]
    try:
        assert db.schema_revision(engine) == migrations.head()
        with db.read(engine) as conn:
            assert rows_now(conn, before) == expected(before)
        # After the comparison: the audit keeps its result in serva_meta (the last audit).
        assert serva("audit").returncode == 0
        check_the_release_data_serves(app)
    finally:
        flush_key_uses(app)  # the keys' last-used times, written before the database goes
        engine.dispose()


@pytest.mark.slow
def test_a_first_release_database_upgrades_on_postgresql(pg_url):
    """The first release on PostgreSQL: its schema (the first revision's DDL), the committed
    file's rows copied in, sequences where that release would have left them, no Alembic
    table and `schema_version` 1; then `serva init-db`."""
    before = sqlite_rows(DATA / "first_release.sqlite")
    operator = cli_app(pg_url)
    engine = operator.extensions["serva.engine"]
    try:
        upgrade_by_revisions(engine, migrations.FIRST_RELEASE)
        with db.write(engine) as conn:
            conn.execute(text("DROP TABLE alembic_version"))
            tables = MetaData()
            tables.reflect(conn)
            for table in tables.sorted_tables:
                columns, rows = before[table.name]
                booleans = {c.name for c in table.columns if isinstance(c.type, Boolean)}
                if rows:
                    conn.execute(table.insert(), [
                        {column: (bool(value) if column in booleans and value is not None else value)
                         for column, value in zip(columns, row)} for row in rows])
                if "id" in table.c and rows:
                    conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                                      f"(SELECT max(id) FROM {table.name}))"))
        assert "first release" in db.schema_problem(engine)

        result = operator.test_cli_runner().invoke(serva_cli, args=["init-db"])
        assert result.exit_code == 0, result.output
        assert result.output.startswith("recognised a database of Serva's first release")
        with db.read(engine) as conn:
            assert rows_now(conn, before) == expected(before)
    finally:
        engine.dispose()

    app = create_app({"TESTING": True, "SECRET_KEY": "t", "DATABASE_URL": pg_url})
    try:
        check_the_release_data_serves(app)
    finally:
        flush_key_uses(app)
        app.extensions["serva.engine"].dispose()


def test_a_batch_migration_rebuilds_a_referenced_table_with_every_row(tmp_path):
    """What later revisions altering SQLite tables will do (`render_as_batch`): copy the table,
    drop the old one, rename the copy. `accounts` is referenced by every other table; inside
    `db.migrating` (foreign keys off, checked before the commit) the rebuild keeps every row.
    The control: with foreign keys on, the same rebuild fails."""
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import Column, String
    from sqlalchemy.exc import IntegrityError

    path = tmp_path / "serva.sqlite"
    shutil.copyfile(DATA / "first_release.sqlite", path)
    before = sqlite_rows(path)
    app = cli_app(path)
    engine = app.extensions["serva.engine"]

    def rebuild_accounts(conn):
        operations = Operations(MigrationContext.configure(conn))
        with operations.batch_alter_table("accounts", recreate="always") as batch:
            batch.add_column(Column("nickname", String(32), nullable=False, server_default="-"))

    try:
        db.init_schema(engine)
        with pytest.raises(IntegrityError, match="FOREIGN KEY"):
            with db.write(engine) as conn:  # foreign keys on, as a normal write has them
                rebuild_accounts(conn)
        with db.migrating(engine) as conn:
            rebuild_accounts(conn)
        with db.read(engine) as conn:
            assert rows_now(conn, before) == expected(before)
            assert conn.execute(text("SELECT DISTINCT nickname FROM accounts")).scalars().all() == ["-"]
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
    finally:
        engine.dispose()


# ---------------------------------------------------------------- from ledger_moves_balance

def all_rows(engine, like=None) -> dict:
    """{table: sorted rows} of every table but Alembic's; with `like` (an earlier answer),
    only its tables and columns, so that columns and tables a later revision adds do not hide
    whether every earlier row was kept."""
    with db.read(engine) as conn:
        tables = MetaData()
        tables.reflect(conn)
        found = {}
        for name, table in tables.tables.items():
            if name == migrations.VERSION_TABLE or (like is not None and name not in like):
                continue
            columns = [c for c in table.c if like is None or c.name in like[name]["columns"]]
            found[name] = {"columns": [c.name for c in columns],
                           "rows": sorted((tuple(_plain(v) for v in row) for row in
                                           conn.execute(select(*columns)).all()), key=repr)}
        return found


def fill_as_ledger_moves_balance_did(app):
    """Rows as the Serva of revision ledger_moves_balance wrote them: on SQLite a ledger row
    moved its balance by the trigger (one INSERT); on PostgreSQL a posting was the UPDATE and
    the INSERT, and an order was one call of serva_place_order. Returns (key, service id)."""
    engine = app.extensions["serva.engine"]
    sqlite = engine.dialect.name == "sqlite"
    with app.app_context(), db.write(engine) as conn:
        account_id, other_id = (conn.execute(text(
            "INSERT INTO accounts (email, api_access, created_at) VALUES (:email, 'approved', 1) "
            "RETURNING id"), {"email": email}).scalar() for email in ("before@example.com",
                                                                       "other@example.com"))
        key = keys.create_key(conn, account_id)
        service_id = services.add(conn, name="Followers", category="Test", rate=890_000,
                                  min_quantity=10, max_quantity=100_000)

        def post(account, amount, kind, order_id=None):
            if not sqlite:
                conn.execute(text("UPDATE accounts SET balance = balance + :amount "
                                  "WHERE id = :id"), {"amount": amount, "id": account})
            conn.execute(text("INSERT INTO ledger (account_id, amount, kind, note, order_id, "
                              "created_at) VALUES (:account, :amount, :kind, 'before', "
                              ":order_id, 1)"),
                         {"account": account, "amount": amount, "kind": kind, "order_id": order_id})

        post(account_id, 100_000_000, "topup")
        post(other_id, 5_000_000, "topup")
        post(other_id, -1_000_000, "adjustment")
        if sqlite:
            order_id = conn.execute(text(
                "INSERT INTO orders (account_id, service_id, target, target_key, quantity, "
                "charge, remains, status, created_at, updated_at) VALUES (:account, :service, "
                "'https://example.com/old', :target_key, 1000, 890000, 1000, 'Pending', 1, 1)"),
                {"account": account_id, "service": service_id, "target_key": "k" * 64}).lastrowid
            post(account_id, -890_000, "charge", order_id)
        else:
            conn.execute(text(
                "SELECT placed_id FROM serva_place_order(:account, :service, "
                "'https://example.com/old', :target_key, 1000, NULL, 890000, NULL, NULL, NULL, "
                "'old-request', 1, 2, 'order ORD-', 100000)"),
                {"account": account_id, "service": service_id, "target_key": "k" * 64})
    return key, service_id


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'serva.sqlite'}"
        return
    from conftest import pg_schema
    with pg_schema() as url:
        yield url


@pytest.mark.slow
def test_a_database_at_ledger_moves_balance_upgrades_keeping_every_row(database_url):
    """Today's head before one_data_path, with accounts, ledger rows and an order as that
    Serva wrote them: `serva init-db` keeps every row, drops the trigger and the function,
    every balance still equals its ledger sum, and an order placed afterwards is charged
    exactly once (no trigger left to move the balance a second time)."""
    operator = cli_app(database_url)
    engine = operator.extensions["serva.engine"]
    try:
        upgrade_by_revisions(engine, "ledger_moves_balance")
        key, service_id = fill_as_ledger_moves_balance_did(operator)
        with db.read(engine) as conn:
            assert ledger.balance_mismatches(conn) == []
        before = all_rows(engine)
        result = operator.test_cli_runner().invoke(serva_cli, args=["init-db"])
        assert result.exit_code == 0, result.output
        assert result.output.startswith(
            f"upgraded the database from schema revision ledger_moves_balance to {migrations.head()}")
        assert db.schema_revision(engine) == migrations.head()
        assert all_rows(engine, like=before) == before
        check_one_data_path(engine)
    finally:
        engine.dispose()

    app = create_app({"TESTING": True, "SECRET_KEY": "t", "DATABASE_URL": database_url})
    try:
        client = app.test_client()
        placed = client.post("/api/v1", data={
            "key": key, "action": "add", "service": str(service_id), "quantity": "1000",
            "link": "https://example.com/after"}).get_json()
        assert placed["charge"] == "0.89" and placed["balance"] == "98.22", placed
        assert client.post("/api/v1", data={"key": key, "action": "balance"}).get_json() == \
            {"balance": "98.22", "currency": "USD"}
        check_one_data_path(app.extensions["serva.engine"], charges_of=parse_order(placed["order"]))
        audit = app.test_cli_runner().invoke(serva_cli, args=["audit"])
        assert audit.exit_code == 0, audit.output
    finally:
        flush_key_uses(app)
        app.extensions["serva.engine"].dispose()
