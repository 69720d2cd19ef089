"""dashboard_sessions: server-side sign-in sessions

One row per dashboard sign-in (serva/sessions.py): the session cookie carries a random token
and the row its hash, so signing out (a revoked row) ends every copy of the cookie. Existing
rows of other tables are untouched; cookies signed before this revision carried the account
id and are refused, so partners sign in once more.

Revision ID: dashboard_sessions
Revises: fulfilment
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'dashboard_sessions'
down_revision = 'fulfilment'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('dashboard_sessions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('revoked_at', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    with op.batch_alter_table('dashboard_sessions', schema=None) as batch_op:
        batch_op.create_index('ix_dashboard_sessions_account', ['account_id'], unique=False)


def downgrade():
    with op.batch_alter_table('dashboard_sessions', schema=None) as batch_op:
        batch_op.drop_index('ix_dashboard_sessions_account')
    op.drop_table('dashboard_sessions')
