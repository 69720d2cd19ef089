"""orders, ledger: request_id

The `x-serva-request-id` that caused an order or ledger row (`cli:<id>` for an operator
command). Rows from before this revision keep NULL: nothing recorded their request then.

Revision ID: request_ids
Revises: dashboard_sessions
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'request_ids'
down_revision = 'dashboard_sessions'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('request_id', sa.String(length=64), nullable=True))
    with op.batch_alter_table('ledger', schema=None) as batch_op:
        batch_op.add_column(sa.Column('request_id', sa.String(length=64), nullable=True))


def downgrade():
    with op.batch_alter_table('ledger', schema=None) as batch_op:
        batch_op.drop_column('request_id')
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_column('request_id')
