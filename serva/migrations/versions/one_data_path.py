"""one data path: drop the SQLite ledger trigger and the PostgreSQL function serva_place_order

Every balance change is `ledger.post` on both databases (the conditional UPDATE of the
balance and the ledger row, in the caller's transaction) and an order is placed by one Python
function on both, so the trigger `ledger_moves_balance` (SQLite) and the function
`serva_place_order` (PostgreSQL) go. No row changes: balances already equal their ledger sums.
The database still refuses a negative balance (CHECK) and a second active order per target
(partial unique index).

Revision ID: one_data_path
Revises: ledger_moves_balance
Create Date: 2026-12-07
"""
from alembic import op

from serva import migrations


# revision identifiers, used by Alembic.
revision = 'one_data_path'
down_revision = 'ledger_moves_balance'
branch_labels = None
depends_on = None


def _created_by(revision_id, name):
    """A statement as the revision that first ran it has it (the downgrade restores it)."""
    return getattr(migrations.script().get_revision(revision_id).module, name)


def upgrade():
    if op.get_bind().dialect.name == 'sqlite':
        op.execute('DROP TRIGGER IF EXISTS ledger_moves_balance')
    elif op.get_bind().dialect.name == 'postgresql':
        op.execute('DROP FUNCTION IF EXISTS serva_place_order')


def downgrade():
    if op.get_bind().dialect.name == 'sqlite':
        op.execute(_created_by('ledger_moves_balance', 'LEDGER_MOVES_BALANCE'))
    elif op.get_bind().dialect.name == 'postgresql':
        op.execute(_created_by('pg_place_order', 'PLACE_ORDER_FUNCTION'))
