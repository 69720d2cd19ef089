"""The ledger on SQLite: a ledger row moves its account's balance by the database's own trigger
(schema.LEDGER_MOVES_BALANCE), which refuses an overspend whoever writes the row."""
import sqlite3

import pytest
from sqlalchemy import select

from serva import db, ledger
from serva.money import parse_amount
from serva.schema import accounts


def _raw(app):
    """A plain sqlite3 connection, as the sqlite3 shell opens the file: no Serva code."""
    app.extensions["serva.engine"].dispose()
    return sqlite3.connect(app.config["DATABASE_URL"].removeprefix("sqlite:///"),
                           isolation_level=None)


def _money(raw, account_id):
    """(balance, ledger sum, ledger rows) of an account."""
    balance = raw.execute("SELECT balance FROM accounts WHERE id = ?", (account_id,)).fetchone()[0]
    total, rows = raw.execute("SELECT coalesce(sum(amount), 0), count(*) FROM ledger "
                              "WHERE account_id = ?", (account_id,)).fetchone()
    return balance, total, rows


def test_an_overspend_written_in_plain_sql_is_refused_by_the_database(app, partner):
    raw = _raw(app)
    try:
        before = _money(raw, partner[0])
        assert before[:2] == (parse_amount("100"), parse_amount("100"))
        with pytest.raises(sqlite3.IntegrityError, match="^insufficient_balance$"):
            raw.execute("INSERT INTO ledger (account_id, amount, kind, note, created_at) "
                        "VALUES (?, ?, 'adjustment', 'too much', 0)", (partner[0], -before[0] - 1))
        assert _money(raw, partner[0]) == before  # neither the row nor the balance change
        with pytest.raises(sqlite3.IntegrityError, match="^insufficient_balance$"):
            raw.execute("INSERT INTO ledger (account_id, amount, kind, created_at) "
                        "VALUES (999, 5, 'topup', 0)")  # a row for no account
        raw.execute("INSERT INTO ledger (account_id, amount, kind, note, created_at) "
                    "VALUES (?, ?, 'adjustment', 'all of it', 0)", (partner[0], -before[0]))
        assert _money(raw, partner[0]) == (0, 0, before[2] + 1)
    finally:
        raw.close()


def test_post_is_one_statement_and_returns_the_balance_the_trigger_left(app, partner, sql_log):
    with app.app_context(), db.write() as conn:
        del sql_log[:]
        assert ledger.post(conn, partner[0], -parse_amount("30"), "adjustment", "t") == \
            parse_amount("70")
        # one statement (sqlite3's trace repeats it for the trigger's steps), no UPDATE of ours
        assert {s.split()[0] for s in sql_log} == {"INSERT"}
        with pytest.raises(ledger.InsufficientFunds):
            ledger.post(conn, partner[0], -parse_amount("70.000001"), "adjustment", "t")
        assert ledger.ledger_sum(conn, partner[0]) == parse_amount("70")
        assert conn.execute(select(accounts.c.balance)
                            .where(accounts.c.id == partner[0])).scalar() == parse_amount("70")


def test_a_database_without_the_trigger_is_refused_until_init_db_puts_it_back(app):
    raw = _raw(app)
    raw.execute("DROP TRIGGER ledger_moves_balance")
    raw.close()
    engine = app.extensions["serva.engine"]
    assert db.schema_problem(engine) == ("the database lacks the trigger ledger_moves_balance "
                                         "of its schema revision: run `serva init-db` to "
                                         "re-create it")
    with pytest.raises(db.SchemaMismatch):
        db.require_schema(engine)
    result = app.test_cli_runner().invoke(args=["init-db"])
    assert result.exit_code == 0, result.output
    assert "re-created the trigger ledger_moves_balance" in result.output
    assert db.schema_problem(engine) is None
    assert app.test_cli_runner().invoke(args=["init-db"]).output.startswith(
        "the database is already at schema revision")
