"""The ledger: every balance change is `ledger.post`, a conditional UPDATE of the balance and
its ledger row in one transaction; the database's CHECK refuses a negative balance whoever
writes it."""
import sqlite3

import pytest
from sqlalchemy import func, select

from serva import db, ledger
from serva.money import parse_amount
from serva.schema import accounts, ledger as ledger_table


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


def test_a_negative_balance_written_in_plain_sql_is_refused_by_the_database(app, partner):
    raw = _raw(app)
    try:
        before = _money(raw, partner[0])
        assert before[:2] == (parse_amount("100"), parse_amount("100"))
        with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
            raw.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?",
                        (before[0] + 1, partner[0]))
        assert _money(raw, partner[0]) == before
        raw.execute("UPDATE accounts SET balance = 0 WHERE id = ?", (partner[0],))  # zero is fine
        assert _money(raw, partner[0])[0] == 0
    finally:
        raw.close()


def test_post_moves_the_balance_and_writes_its_row_in_the_callers_transaction(app, partner, sql_log):
    with app.app_context(), db.write() as conn:
        del sql_log[:]
        assert ledger.post(conn, partner[0], -parse_amount("30"), "adjustment", "t") == \
            parse_amount("70")
        # the conditional UPDATE of the balance, then its ledger row
        assert [" ".join(s.split()[:3]).upper() for s in sql_log] == \
            ["UPDATE ACCOUNTS SET", "INSERT INTO LEDGER"]
        assert ledger.ledger_sum(conn, partner[0]) == parse_amount("70")
        assert conn.execute(select(accounts.c.balance)
                            .where(accounts.c.id == partner[0])).scalar() == parse_amount("70")


def _rows(conn):
    return conn.execute(select(func.count()).select_from(ledger_table)).scalar()


def test_an_overspend_changes_nothing(app, partner):
    with app.app_context(), db.write() as conn:
        rows = _rows(conn)
        with pytest.raises(ledger.InsufficientFunds):
            ledger.post(conn, partner[0], -parse_amount("100.000001"), "adjustment", "t")
        assert _rows(conn) == rows
        assert ledger.post(conn, partner[0], -parse_amount("100"), "adjustment", "all of it") == 0
        with pytest.raises(ledger.InsufficientFunds):
            ledger.post(conn, partner[0], -1, "adjustment", "one too many")
        assert _rows(conn) == rows + 1
    with app.app_context(), db.read() as conn:
        assert ledger.balance_mismatches(conn) == []


def test_a_post_for_no_account_is_refused(app, partner):
    with app.app_context(), db.write() as conn:
        rows = _rows(conn)
        with pytest.raises(ledger.InsufficientFunds):
            ledger.post(conn, 999, 5, "topup", "nobody")
        assert _rows(conn) == rows


def test_each_row_keeps_the_request_id_of_what_caused_it(app, partner):
    with app.app_context():
        from serva import request_id
        with db.write() as conn:
            ledger.post(conn, partner[0], 7, "topup", "cli")
            rid = conn.execute(select(ledger_table.c.request_id)
                               .order_by(ledger_table.c.id.desc())).scalar()
        assert rid == request_id() and rid.startswith("cli:")
