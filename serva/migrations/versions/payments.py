"""payments: money in from gateways (Stripe Checkout, manual transfers), credited once

New tables `payments` (one row per top-up, unique per gateway and the gateway's id) and
`payment_events` (every verified gateway event, once per event id). The ledger learns the
kinds payment, payment_bonus and payment_reversal and the payment a row belongs to, with one
credit and one bonus per payment as partial unique indexes. Accounts get a hold (reason and
time), set when a refund or dispute takes back more than the balance covers. Existing rows
keep their values: no ledger row names a payment, no account is on hold.

Revision ID: payments
Revises: one_data_path
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'payments'
down_revision = 'console'
branch_labels = None
depends_on = None

# Frozen here: the kinds before and after this revision.
OLD_KINDS = "kind IN ('topup', 'adjustment', 'charge', 'refund')"
NEW_KINDS = ("kind IN ('topup', 'adjustment', 'charge', 'refund', 'payment', 'payment_bonus', "
             "'payment_reversal')")


def _ledger_kinds(old, new):
    """The ledger's kind CHECK from `old` to `new`. PostgreSQL alters the constraint; SQLite
    cannot, so the table is rebuilt from its own DDL with only the CHECK's text changed (the
    table's other DDL kept word for word), its rows copied and its indexes made again. The
    migration's transaction has foreign keys off and checks them before the commit."""
    bind = op.get_bind()
    if bind.dialect.name != 'sqlite':
        op.drop_constraint('ck_ledger_kind', 'ledger', type_='check')
        op.create_check_constraint('ck_ledger_kind', 'ledger', new)
        return
    table_sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'ledger'").scalar()
    if old not in table_sql:
        raise RuntimeError(f"the ledger's DDL has no CHECK ({old}): {table_sql}")
    index_sql = [row[0] for row in bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'ledger' "
        "AND sql IS NOT NULL ORDER BY name")]
    op.execute('ALTER TABLE ledger RENAME TO ledger_before_payments')
    op.execute(table_sql.replace(old, new))
    op.execute('INSERT INTO ledger SELECT * FROM ledger_before_payments')
    op.execute('DROP TABLE ledger_before_payments')
    for statement in index_sql:
        op.execute(statement)


def upgrade():
    op.add_column('accounts', sa.Column('hold_reason', sa.String(length=255), nullable=True))
    op.add_column('accounts', sa.Column('held_at', sa.BigInteger(), nullable=True))
    _ledger_kinds(OLD_KINDS, NEW_KINDS)
    op.add_column('ledger', sa.Column('payment_id', sa.Integer(), nullable=True))
    op.create_index('ix_ledger_payment', 'ledger', ['payment_id'], unique=False,
                    sqlite_where=sa.text('payment_id IS NOT NULL'),
                    postgresql_where=sa.text('payment_id IS NOT NULL'))
    for name, kind in (('uq_ledger_one_credit_per_payment', 'payment'),
                       ('uq_ledger_one_bonus_per_payment', 'payment_bonus')):
        op.create_index(name, 'ledger', ['payment_id'], unique=True,
                        sqlite_where=sa.text(f"kind = '{kind}'"),
                        postgresql_where=sa.text(f"kind = '{kind}'"))
    op.create_table('payments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('gateway', sa.String(length=16), nullable=False),
    sa.Column('gateway_id', sa.String(length=255), nullable=True),
    sa.Column('gateway_charge', sa.String(length=255), nullable=True),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=10), nullable=False),
    sa.Column('bonus', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('status', sa.String(length=16), server_default='created', nullable=False),
    sa.Column('reference', sa.String(length=255), nullable=True),
    sa.Column('flagged_reason', sa.String(length=255), nullable=True),
    sa.Column('note', sa.String(length=255), nullable=True),
    sa.Column('reversed', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('owed', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('written_off', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.Column('paid_at', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('gateway', 'gateway_id', name='uq_payments_gateway_id'),
    sa.CheckConstraint("gateway IN ('stripe', 'manual')", name='ck_payments_gateway'),
    sa.CheckConstraint("status IN ('created', 'pending', 'rejected', 'expired', 'failed', "
                       "'paid', 'refunded', 'disputed')", name='ck_payments_status'),
    sa.CheckConstraint("amount > 0 AND bonus >= 0 AND owed >= 0 AND written_off >= 0 "
                       "AND owed + written_off <= reversed AND reversed <= amount + bonus",
                       name='ck_payments_money'),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ),
    )
    op.create_index('ix_payments_account', 'payments', ['account_id', 'id'], unique=False)
    op.create_index('ix_payments_status', 'payments', ['status', 'id'], unique=False)
    op.create_index('ix_payments_charge', 'payments', ['gateway', 'gateway_charge'], unique=False)
    op.create_table('payment_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('gateway', sa.String(length=16), nullable=False),
    sa.Column('event_id', sa.String(length=255), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('payment_id', sa.Integer(), nullable=True),
    sa.Column('outcome', sa.String(length=255), nullable=False),
    sa.Column('received_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('gateway', 'event_id', name='uq_payment_events_event'),
    sa.ForeignKeyConstraint(['payment_id'], ['payments.id'], ),
    )
    op.create_index('ix_payment_events_payment', 'payment_events', ['payment_id'], unique=False)


def downgrade():
    op.drop_index('ix_payment_events_payment', table_name='payment_events')
    op.drop_table('payment_events')
    for name in ('ix_payments_charge', 'ix_payments_status', 'ix_payments_account'):
        op.drop_index(name, table_name='payments')
    op.drop_table('payments')
    for name in ('uq_ledger_one_bonus_per_payment', 'uq_ledger_one_credit_per_payment',
                 'ix_ledger_payment'):
        op.drop_index(name, table_name='ledger')
    op.drop_column('ledger', 'payment_id')
    # Rows of the new kinds cannot stay under the old CHECK: the downgrade refuses them.
    _ledger_kinds(NEW_KINDS, OLD_KINDS)
    op.drop_column('accounts', 'held_at')
    op.drop_column('accounts', 'hold_reason')
