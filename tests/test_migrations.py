"""Schema revisions (Alembic through Flask-Migrate): the revisions build exactly what the
metadata describes (Alembic's autogenerate comparison) and, for the first one, exactly the
first release's schema; `serva init-db` creates, upgrades and adopts a first-release
database; the server and the data commands refuse a database behind or ahead of head; the
engine is Flask-SQLAlchemy's, with Serva's settings and no ORM session on the request path."""
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import click
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import BigInteger, Column, MetaData, inspect, select

from serva import create_app, db, migrations, schema
from serva.schema import accounts
from serva.cli import cli as serva_cli

from conftest import make_partner

DATA = Path(__file__).resolve().parent / "data"


def new_app(path, **config):
    return create_app({"TESTING": True, "SECRET_KEY": "t", "DATABASE_URL": f"sqlite:///{path}",
                       **config})


def cli_app(where):
    """The app as the CLI makes it (on a SQLite path or any URL): it opens a database behind
    or ahead of head (to upgrade it) and leaves the refusal to each data command."""
    url = where if "://" in str(where) else f"sqlite:///{where}"
    with click.Context(click.Command("serva")):
        return create_app({"TESTING": True, "SECRET_KEY": "t", "DATABASE_URL": url})


def upgrade_by_revisions(engine, revision="head"):
    """What `serva db upgrade` does: every revision in turn (no create_all)."""
    with db.migrating(engine) as conn:
        command.upgrade(migrations.config(conn), revision)


def differences(engine, metadata=schema.metadata):
    with db.read(engine) as conn:
        context = MigrationContext.configure(conn, opts={
            "compare_type": True, "compare_server_default": migrations.compare_server_default})
        return compare_metadata(context, metadata)


def sqlite_schema(path):
    """Every table and index of a SQLite file as (type, name, DDL with whitespace normalised)."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE "
                            "'sqlite_%' AND name != 'alembic_version' ORDER BY name").fetchall()
    finally:
        conn.close()
    return [(kind, name, re.sub(r"\s+", " ", sql or "")) for kind, name, sql in rows]


def make_first_release_db(path):
    """The first release's DDL (its schema.sql, kept in tests/data) and its version stamp."""
    conn = sqlite3.connect(path)
    conn.executescript((DATA / "first_release_schema.sql").read_text())
    conn.execute("INSERT INTO serva_meta (key, value) VALUES ('schema_version', '1')")
    conn.execute("INSERT INTO accounts (email, balance, created_at) VALUES ('old@example.com', 5, 1)")
    conn.execute("INSERT INTO ledger (account_id, amount, kind, created_at) VALUES (1, 5, 'topup', 1)")
    conn.commit()
    conn.close()


# ---------------------------------------------------------------- the revisions

def test_the_revisions_build_what_the_metadata_describes(tmp_path):
    """Alembic's autogenerate comparison: fails when schema.py and the head revision differ."""
    app = new_app(tmp_path / "revisions.sqlite")
    engine = app.extensions["serva.engine"]
    upgrade_by_revisions(engine)
    assert differences(engine) == []
    # the control: a column the revisions do not create is reported
    changed = MetaData()
    for table in schema.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["accounts"].append_column(Column("nickname", BigInteger))
    changed.tables["ledger"].c.note.server_default.arg = "-"
    found = sorted(diff[0] if isinstance(diff, tuple) else diff[0][0]
                   for diff in differences(engine, changed))
    assert found == ["add_column", "modify_default"]
    engine.dispose()


def test_a_new_database_from_init_db_matches_the_revisions(tmp_path):
    """init-db builds a new database from the metadata and stamps it: the same schema as the
    revisions build, DDL for DDL."""
    for name, build in (("by-revisions", upgrade_by_revisions), ("by-init", db.init_schema)):
        app = new_app(tmp_path / f"{name}.sqlite")
        build(app.extensions["serva.engine"])
        assert db.schema_revision(app.extensions["serva.engine"]) == migrations.head()
        app.extensions["serva.engine"].dispose()
    assert sqlite_schema(tmp_path / "by-revisions.sqlite") == sqlite_schema(tmp_path / "by-init.sqlite")


def test_the_first_revision_is_exactly_the_first_release_schema(tmp_path):
    app = new_app(tmp_path / "first.sqlite")
    upgrade_by_revisions(app.extensions["serva.engine"], migrations.FIRST_RELEASE)
    app.extensions["serva.engine"].dispose()
    reference = sqlite3.connect(tmp_path / "reference.sqlite")
    reference.executescript((DATA / "first_release_schema.sql").read_text())
    reference.close()
    shutil.copyfile(DATA / "first_release.sqlite", tmp_path / "made-by-the-release.sqlite")
    built = sqlite_schema(tmp_path / "first.sqlite")
    assert len(built) == 12 + 7  # the first release's 12 tables and 7 named indexes
    assert built == sqlite_schema(tmp_path / "reference.sqlite")
    assert built == sqlite_schema(tmp_path / "made-by-the-release.sqlite")


def test_downgrade_to_base_and_up_again(tmp_path):
    app = new_app(tmp_path / "down.sqlite")
    engine = app.extensions["serva.engine"]
    upgrade_by_revisions(engine)
    with db.migrating(engine) as conn:
        command.downgrade(migrations.config(conn), "base")
    with db.read(engine) as conn:
        assert set(inspect(conn).get_table_names()) == {"alembic_version"}
    upgrade_by_revisions(engine)
    assert differences(engine) == []
    engine.dispose()


def test_a_schema_change_that_breaks_a_foreign_key_is_rolled_back(app):
    """Foreign keys are off while a migration runs on SQLite (batch operations copy tables)
    and checked before its commit; afterwards they are on again."""
    from sqlalchemy import insert
    engine = app.extensions["serva.engine"]
    with pytest.raises(db.SchemaMismatch, match="foreign key"):
        with db.migrating(engine) as conn:
            conn.execute(insert(schema.api_keys).values(account_id=999, key_hash="h", prefix="p",
                                                        created_at=1))
    with db.read(engine) as conn:
        assert conn.execute(select(schema.api_keys)).first() is None
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_there_is_one_head():
    assert migrations.script().get_heads() == [migrations.head()]


# ---------------------------------------------------------------- serva init-db

def test_init_db_creates_then_does_nothing(tmp_path):
    app = new_app(tmp_path / "fresh.sqlite")
    runner = app.test_cli_runner()
    first = runner.invoke(serva_cli, args=["init-db"])
    assert first.exit_code == 0, first.output
    assert first.output == f"created a new database at schema revision {migrations.head()}\n"
    again = runner.invoke(serva_cli, args=["init-db"])
    assert again.exit_code == 0
    assert "nothing to do" in again.output
    app.extensions["serva.engine"].dispose()


def test_init_db_adopts_and_upgrades_a_first_release_database(tmp_path):
    path = tmp_path / "old.sqlite"
    make_first_release_db(path)
    app = cli_app(path)  # a server would refuse it (test_db)
    result = app.test_cli_runner().invoke(serva_cli, args=["init-db"])
    assert result.exit_code == 0, result.output
    assert "recognised a database of Serva's first release" in result.output
    assert f"upgraded it to {migrations.head()}" in result.output
    engine = app.extensions["serva.engine"]
    assert db.schema_revision(engine) == migrations.head()
    assert differences(engine) == []
    with db.read(engine) as conn:
        assert conn.execute(select(accounts.c.email, accounts.c.balance)).all() == [("old@example.com", 5)]
    engine.dispose()
    new_app(path).extensions["serva.engine"].dispose()  # a server accepts it now


def test_serva_db_upgrade_and_current_from_any_directory(tmp_path):
    """The console scripts, run elsewhere than the repository: the revisions ship inside
    the package. `serva db upgrade` adopts a first-release database too."""
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "serva").exists() or not (bin_dir / "flask").exists():
        pytest.skip("the console scripts are not installed next to this Python")
    path = tmp_path / "old.sqlite"
    make_first_release_db(path)
    env = {**os.environ, "SERVA_DATABASE_URL": f"sqlite:///{path}", "SERVA_SECRET_KEY": "t"}
    env.pop("FLASK_APP", None)

    def run(*args):
        return subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=120)

    assert run(str(bin_dir / "serva"), "db", "current").stdout.strip() == ""  # not versioned yet
    result = run(str(bin_dir / "flask"), "--app", "serva", "db", "upgrade")
    assert result.returncode == 0, result.stderr
    result = run(str(bin_dir / "serva"), "db", "current")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{migrations.head()} (head)"
    result = run(str(bin_dir / "serva"), "account", "show", "old@example.com")
    assert result.returncode == 0, result.stderr
    assert "balance:    0.000005 USD" in result.stdout


def test_init_db_refuses_a_database_of_unknown_origin(tmp_path):
    path = tmp_path / "foreign.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY)")
    conn.close()
    app = cli_app(path)
    result = app.test_cli_runner().invoke(serva_cli, args=["init-db"])
    assert result.exit_code == 2
    assert "no Serva schema version" in result.output
    app.extensions["serva.engine"].dispose()


def test_data_commands_refuse_a_database_behind_head(tmp_path):
    path = tmp_path / "old.sqlite"
    make_first_release_db(path)
    app = cli_app(path)
    runner = app.test_cli_runner()
    for args in (["account", "show", "old@example.com"], ["audit"], ["order", "list"]):
        result = runner.invoke(serva_cli, args=args)
        assert result.exit_code == 2, args
        assert result.output.startswith("error: the database was made by Serva's first release")
        assert "`serva init-db`" in result.output
    app.extensions["serva.engine"].dispose()


def test_data_commands_refuse_an_uninitialised_database(tmp_path):
    app = new_app(tmp_path / "blank.sqlite")
    result = app.test_cli_runner().invoke(serva_cli, args=["account", "show", "x@example.com"])
    assert result.exit_code == 2
    assert "not initialized" in result.output
    app.extensions["serva.engine"].dispose()


def test_init_db_reset_builds_a_new_database(app, runner, partner):
    result = runner.invoke(serva_cli, args=["init-db", "--reset"])
    assert result.exit_code == 0
    assert "created a new database" in result.output
    with app.app_context(), db.read() as conn:
        assert conn.execute(select(accounts)).first() is None


# ---------------------------------------------------------------- Flask-SQLAlchemy

def test_the_engine_is_flask_sqlalchemys(app):
    engine = app.extensions["serva.engine"]
    with app.app_context():
        assert db.sqla.engine is engine
        assert db.get_engine() is engine
        assert db.sqla.metadata is schema.metadata
    assert app.config["SQLALCHEMY_DATABASE_URI"] == app.config["DATABASE_URL"]
    assert engine.pool.size() == 8
    assert engine.serva_write_lock is not None  # this process's writers queue on it


def test_flask_sqlalchemy_settings_are_honoured(tmp_path):
    # a relative SQLite path is in the instance folder, as Flask-SQLAlchemy documents
    app = create_app({"TESTING": True, "SECRET_KEY": "t",
                      "SQLALCHEMY_DATABASE_URI": "sqlite:///relative.sqlite",
                      "SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": 3, "connect_args": {"timeout": 7}}})
    engine = app.extensions["serva.engine"]
    try:
        assert engine.url.database == str(Path(app.instance_path) / "relative.sqlite")
        assert app.config["DATABASE_URL"] == f"sqlite:///{engine.url.database}"
        assert engine.pool.size() == 3
        with db.read(engine) as conn:  # Serva's PRAGMAs still apply to its connections
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == \
                app.config["WRITE_WAIT_SECONDS"] * 1000
    finally:
        engine.dispose()
        for suffix in ("", "-wal", "-shm"):
            Path(engine.url.database + suffix).unlink(missing_ok=True)


def test_a_relative_serva_database_url_stays_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = create_app({"TESTING": True, "SECRET_KEY": "t", "DATABASE_URL": "sqlite:///here.sqlite"})
    assert app.extensions["serva.engine"].url.database == str(tmp_path / "here.sqlite")
    app.extensions["serva.engine"].dispose()


def test_the_api_path_opens_no_orm_session(app, client, partner):
    response = client.post("/api/v1", data={"action": "balance", "key": partner[1]})
    assert response.get_json() == {"balance": "100", "currency": "USD"}
    with app.app_context():
        assert not db.sqla.session.registry.has()


def test_two_apps_have_their_own_engines(app, tmp_path):
    other = new_app(tmp_path / "other.sqlite")
    db.init_schema(other.extensions["serva.engine"])
    make_partner(other, "other@example.com")
    assert other.extensions["serva.engine"] is not app.extensions["serva.engine"]
    with app.app_context(), db.read() as conn:
        assert conn.execute(select(accounts)).first() is None
    other.extensions["serva.engine"].dispose()


# ---------------------------------------------------------------- PostgreSQL

@pytest.mark.slow
def test_postgresql_revisions_match_the_metadata(pg_url):
    app = cli_app(pg_url)
    engine = app.extensions["serva.engine"]
    try:
        upgrade_by_revisions(engine)
        assert db.schema_revision(engine) == migrations.head()
        assert differences(engine) == []
        assert "nothing to do" in db.init_schema(engine)
    finally:
        engine.dispose()


def pg_functions(engine):
    """The functions of the database's schema, as PostgreSQL prints them (schema name left
    out, so two schemas compare)."""
    from sqlalchemy import text
    with db.read(engine) as conn:
        return [(name, definition.replace(f"{namespace}.", "")) for name, definition, namespace
                in conn.execute(text(
                    "SELECT p.proname, pg_get_functiondef(p.oid), n.nspname FROM pg_proc p "
                    "JOIN pg_namespace n ON n.oid = p.pronamespace "
                    "WHERE n.nspname = current_schema() ORDER BY p.proname"))]


@pytest.mark.slow
def test_postgresql_init_db_and_the_revisions_leave_no_function():
    """Placing an order is Python on both databases: neither init-db nor the revisions leave
    a function in the schema (one_data_path dropped serva_place_order)."""
    from conftest import pg_schema
    with pg_schema() as by_revisions, pg_schema() as by_init:
        for url, build in ((by_revisions, upgrade_by_revisions), (by_init, db.init_schema)):
            engine = cli_app(url).extensions["serva.engine"]
            try:
                build(engine)
                assert pg_functions(engine) == []
            finally:
                engine.dispose()


@pytest.mark.slow
def test_postgresql_one_data_path_down_and_up(pg_url):
    """one_data_path drops serva_place_order; its downgrade puts back the function exactly as
    pg_place_order created it."""
    app = cli_app(pg_url)
    engine = app.extensions["serva.engine"]
    try:
        upgrade_by_revisions(engine, "ledger_moves_balance")
        created = pg_functions(engine)
        assert [name for name, _ in created] == ["serva_place_order"]
        upgrade_by_revisions(engine)
        assert pg_functions(engine) == []
        with db.migrating(engine) as conn:
            command.downgrade(migrations.config(conn), "ledger_moves_balance")
        assert db.schema_revision(engine) == "ledger_moves_balance"
        assert pg_functions(engine) == created
        upgrade_by_revisions(engine)
        assert pg_functions(engine) == []
        assert differences(engine) == []
    finally:
        engine.dispose()


def sqlite_triggers(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall()
    finally:
        conn.close()


def test_sqlite_one_data_path_down_and_up(tmp_path):
    """one_data_path drops the ledger's trigger; its downgrade puts it back exactly as
    ledger_moves_balance created it."""
    path = tmp_path / "trigger.sqlite"
    engine = new_app(path).extensions["serva.engine"]
    try:
        upgrade_by_revisions(engine, "ledger_moves_balance")
        created = sqlite_triggers(path)
        assert [name for name, _ in created] == ["ledger_moves_balance"]
        upgrade_by_revisions(engine)
        assert sqlite_triggers(path) == []
        with db.migrating(engine) as conn:
            command.downgrade(migrations.config(conn), "ledger_moves_balance")
        assert sqlite_triggers(path) == created
        upgrade_by_revisions(engine)
        assert sqlite_triggers(path) == [] and differences(engine) == []
    finally:
        engine.dispose()


@pytest.mark.slow
def test_postgresql_first_release_database_is_adopted(pg_url):
    from sqlalchemy import insert, text
    app = cli_app(pg_url)
    engine = app.extensions["serva.engine"]
    try:
        upgrade_by_revisions(engine, migrations.FIRST_RELEASE)
        with db.write(engine) as conn:  # what the first release left: no alembic_version
            conn.execute(text("DROP TABLE alembic_version"))
            conn.execute(insert(schema.serva_meta).values(key="schema_version", value="1"))
        assert "first release" in db.schema_problem(engine)
        assert "recognised a database of Serva's first release" in db.init_schema(engine)
        assert db.schema_problem(engine) is None
        assert differences(engine) == []
    finally:
        engine.dispose()
