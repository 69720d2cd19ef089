"""Fulfilment through upstream providers (issue 9): the `providers` table; a service's link to
a provider's service (provider_id, provider_service, provider_rate, markup_bp); an order's
provider, provider order id, next poll and operator flag (+ index ix_orders_sync); the
`dispatches` outbox (one `add` hand-over per order).

Plain ALTER TABLE (a batch copy would rewrite the tables' DDL); for the same reason
`provider_id` has no foreign key (SQLite cannot add one to an existing table in place;
providers are never deleted, only disabled).

Revision ID: fulfilment
Revises: account_id_format
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa


revision = 'fulfilment'
down_revision = 'account_id_format'
branch_labels = None
depends_on = None

SERVICE_COLUMNS = (('provider_id', sa.Integer()), ('provider_service', sa.String(length=64)),
                   ('provider_rate', sa.BigInteger()), ('markup_bp', sa.Integer()))
ORDER_COLUMNS = (('provider_id', sa.Integer()), ('provider_order', sa.String(length=64)),
                 ('next_sync_at', sa.BigInteger()), ('attention', sa.String(length=255)))


def upgrade():
    op.create_table('providers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('url', sa.String(length=2048), nullable=False),
    sa.Column('api_key', sa.String(length=255), nullable=False),
    sa.Column('enabled', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('idempotent', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('balance', sa.BigInteger(), nullable=True),
    sa.Column('balance_currency', sa.String(length=8), nullable=True),
    sa.Column('balance_at', sa.BigInteger(), nullable=True),
    sa.Column('last_error', sa.String(length=255), nullable=True),
    sa.Column('last_error_at', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    for name, type_ in SERVICE_COLUMNS:
        op.add_column('services', sa.Column(name, type_, nullable=True))
    for name, type_ in ORDER_COLUMNS:
        op.add_column('orders', sa.Column(name, type_, nullable=True))
    op.create_index('ix_orders_sync', 'orders', ['provider_id', 'next_sync_at'], unique=False,
                    sqlite_where=sa.text('next_sync_at IS NOT NULL'),
                    postgresql_where=sa.text('next_sync_at IS NOT NULL'))
    op.create_table('dispatches',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('order_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), server_default='add', nullable=False),
    sa.Column('state', sa.String(length=16), server_default='due', nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('due_at', sa.BigInteger(), nullable=False),
    sa.Column('lease_owner', sa.String(length=64), nullable=True),
    sa.Column('lease_until', sa.BigInteger(), nullable=True),
    sa.Column('last_message', sa.String(length=255), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.CheckConstraint("state IN ('due', 'sending', 'done', 'unknown', 'canceled', 'manual')", name='ck_dispatches_state'),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], )
    )
    op.create_index('ix_dispatches_due', 'dispatches', ['state', 'due_at'], unique=False)
    op.create_index('uq_dispatches_one_add_per_order', 'dispatches', ['order_id'], unique=True,
                    sqlite_where=sa.text("kind = 'add'"), postgresql_where=sa.text("kind = 'add'"))


def downgrade():
    op.drop_index('uq_dispatches_one_add_per_order', 'dispatches')
    op.drop_index('ix_dispatches_due', 'dispatches')
    op.drop_table('dispatches')
    op.drop_index('ix_orders_sync', 'orders')
    for name, _ in reversed(ORDER_COLUMNS):
        op.drop_column('orders', name)
    for name, _ in reversed(SERVICE_COLUMNS):
        op.drop_column('services', name)
    op.drop_table('providers')
