"""Refill, cancel, drip-feed and fixed-quantity services (issue 10).

services: the yes/no `refill` becomes `refill_days` (0 = no refill); a service that had refill
gets a 30-day window (services.DEFAULT_REFILL_DAYS). New `dripfeed` and `fixed_quantity`.
orders: drip-feed `runs`, `interval_minutes`, `runs_done`; `cancel_requested_at`; and
`completed_at`, which an order already final takes from its last update (the best record of
when it became final). The `refills` table, one Pending/In progress refill per order.

Revision ID: refill_cancel_dripfeed
Revises: first_release
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'refill_cancel_dripfeed'
down_revision = 'first_release'
branch_labels = None
depends_on = None

DEFAULT_REFILL_DAYS = 30  # frozen here: the value this revision gave existing refill services
PENDING = "status IN ('Pending', 'In progress')"


def upgrade():
    # Plain ALTER TABLE (SQLite 3.35+ adds and drops columns in place; a batch copy of the
    # table would rewrite its DDL).
    op.add_column('services', sa.Column('refill_days', sa.Integer(), server_default='0',
                                        nullable=False))
    op.add_column('services', sa.Column('dripfeed', sa.Boolean(), server_default=sa.text('false'),
                                        nullable=False))
    op.add_column('services', sa.Column('fixed_quantity', sa.Integer(), nullable=True))
    op.execute(f"UPDATE services SET refill_days = {DEFAULT_REFILL_DAYS} WHERE refill")
    op.drop_column('services', 'refill')

    for name, type_ in (('runs', sa.Integer()), ('interval_minutes', sa.Integer()),
                        ('runs_done', sa.Integer()), ('cancel_requested_at', sa.BigInteger()),
                        ('completed_at', sa.BigInteger())):
        op.add_column('orders', sa.Column(name, type_, nullable=True))
    op.execute("UPDATE orders SET completed_at = updated_at "
               "WHERE status IN ('Completed', 'Partial', 'Canceled')")

    op.create_table('refills',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('order_id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='Pending', nullable=False),
    sa.Column('provider_refill_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.CheckConstraint("status IN ('Pending', 'In progress', 'Completed', 'Rejected')",
                       name='ck_refills_status'),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], ),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_refills_account', 'refills', ['account_id', 'id'], unique=False)
    op.create_index('ix_refills_status', 'refills', ['status', 'id'], unique=False)
    op.create_index('uq_refills_one_pending', 'refills', ['order_id'], unique=True,
                    sqlite_where=sa.text(PENDING), postgresql_where=sa.text(PENDING))


def downgrade():
    op.drop_index('uq_refills_one_pending', 'refills')
    op.drop_index('ix_refills_status', 'refills')
    op.drop_index('ix_refills_account', 'refills')
    op.drop_table('refills')

    for column in ('completed_at', 'cancel_requested_at', 'runs_done', 'interval_minutes', 'runs'):
        op.drop_column('orders', column)

    op.add_column('services', sa.Column('refill', sa.Boolean(), server_default=sa.text('false'),
                                        nullable=False))
    op.execute("UPDATE services SET refill = true WHERE refill_days > 0")
    for column in ('fixed_quantity', 'dripfeed', 'refill_days'):
        op.drop_column('services', column)
