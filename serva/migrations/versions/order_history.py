"""order_history: an order's status history, and every hand-over attempt with its reply

New tables only; no existing row changes (orders changed before this revision have no history
rows: their history starts at their next change).

Revision ID: order_history
Revises: webhook_prune
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'order_history'
down_revision = 'webhook_prune'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'order_history',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('order_id', sa.Integer(), sa.ForeignKey('orders.id'), nullable=False),
        sa.Column('created_at', sa.BigInteger(), nullable=False),
        sa.Column('status_before', sa.String(length=16), nullable=False),
        sa.Column('status_after', sa.String(length=16), nullable=False),
        sa.Column('remains', sa.Integer()),
        sa.Column('start_count', sa.Integer()),
        sa.Column('actor', sa.String(length=270), nullable=False),
        sa.Column('request_id', sa.String(length=64)),
    )
    op.create_index('ix_order_history_order', 'order_history', ['order_id', 'created_at', 'id'])
    op.create_table(
        'handover_attempts',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('dispatch_id', sa.Integer(), sa.ForeignKey('dispatches.id')),
        sa.Column('order_id', sa.Integer(), sa.ForeignKey('orders.id'), nullable=False),
        sa.Column('created_at', sa.BigInteger(), nullable=False),
        sa.Column('action', sa.String(length=16), nullable=False),
        sa.Column('outcome', sa.String(length=16), nullable=False),
        sa.Column('http_status', sa.Integer()),
        sa.Column('reply', sa.String(length=1000)),
    )
    op.create_index('ix_handover_attempts_order', 'handover_attempts', ['order_id', 'id'])


def downgrade():
    op.drop_table('handover_attempts')
    op.drop_table('order_history')
