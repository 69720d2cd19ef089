"""ledger: on SQLite a ledger row moves its account's balance (trigger)

Inserting a ledger row applies it to `accounts.balance` by a conditional UPDATE in the same
statement, and refuses it (`insufficient_balance`) when the balance would go below zero or
the account does not exist (serva/schema.py, LEDGER_MOVES_BALANCE). Existing balances already
equal their ledger sums (`serva audit`), so nothing is recomputed. PostgreSQL is unchanged:
serva/ledger.py posts there with the UPDATE and the INSERT as before.

Revision ID: ledger_moves_balance
Revises: pg_place_order
Create Date: 2026-11-27
"""
from alembic import op


# revision identifiers, used by Alembic.
revision = 'ledger_moves_balance'
down_revision = 'pg_place_order'
branch_labels = None
depends_on = None

# As serva/schema.py had it at this revision (a test compares the two databases).
LEDGER_MOVES_BALANCE = """CREATE TRIGGER ledger_moves_balance BEFORE INSERT ON ledger
BEGIN
    UPDATE accounts SET balance = balance + NEW.amount
    WHERE id = NEW.account_id AND balance + NEW.amount >= 0;
    SELECT RAISE(ABORT, 'insufficient_balance') WHERE changes() = 0;
END"""


def upgrade():
    if op.get_bind().dialect.name == 'sqlite':
        op.execute(LEDGER_MOVES_BALANCE)


def downgrade():
    if op.get_bind().dialect.name == 'sqlite':
        op.execute('DROP TRIGGER IF EXISTS ledger_moves_balance')
