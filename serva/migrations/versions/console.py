"""console: operators, their second factor and sessions, the activity table, and the indexes
the console's pages read by

New tables only (operators, recovery_codes, operator_sessions, activity) and new indexes on
orders and ledger: every existing row is kept as it is.

Revision ID: console
Revises: one_data_path
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'console'
down_revision = 'one_data_path'
branch_labels = None
depends_on = None

ORDER_INDEXES = {
    'ix_orders_status': ['status', 'id'],
    'ix_orders_service': ['service_id', 'id'],
    'ix_orders_provider': ['provider_id', 'id'],
    'ix_orders_request': ['request_id'],
    'ix_orders_created': ['created_at', 'charge', 'refunded', 'status', 'service_id', 'quantity'],
}


def upgrade():
    op.create_table('operators',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('disabled', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('totp_secret', sa.String(length=64), nullable=True),
    sa.Column('totp_confirmed_at', sa.BigInteger(), nullable=True),
    sa.Column('totp_last_step', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.CheckConstraint("role IN ('owner', 'support')", name='ck_operators_role'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('email')
    )
    op.create_table('recovery_codes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('operator_id', sa.Integer(), nullable=False),
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('used_at', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['operator_id'], ['operators.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('code_hash')
    )
    op.create_index('ix_recovery_codes_operator', 'recovery_codes', ['operator_id'])
    op.create_table('operator_sessions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('operator_id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('seen_at', sa.BigInteger(), nullable=False),
    sa.Column('verified_at', sa.BigInteger(), nullable=True),
    sa.Column('revoked_at', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['operator_id'], ['operators.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    op.create_index('ix_operator_sessions_operator', 'operator_sessions', ['operator_id'])
    op.create_table('activity',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('actor', sa.String(length=270), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('subject', sa.String(length=255), server_default='', nullable=False),
    sa.Column('before_json', sa.Text(), nullable=True),
    sa.Column('after_json', sa.Text(), nullable=True),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    for name, columns in ORDER_INDEXES.items():
        op.create_index(name, 'orders', columns)
    op.create_index('ix_ledger_request', 'ledger', ['request_id'])


def downgrade():
    op.drop_index('ix_ledger_request', table_name='ledger')
    for name in ORDER_INDEXES:
        op.drop_index(name, table_name='orders')
    op.drop_table('activity')
    op.drop_index('ix_operator_sessions_operator', table_name='operator_sessions')
    op.drop_table('operator_sessions')
    op.drop_index('ix_recovery_codes_operator', table_name='recovery_codes')
    op.drop_table('recovery_codes')
    op.drop_table('operators')
