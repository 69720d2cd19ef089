"""accounts: id_format — the partner's id format in API responses ('prefixed' or 'numeric');
NULL for every existing account, which keeps the deployment default (SERVA_INTEGER_IDS).

Revision ID: account_id_format
Revises: refill_cancel_dripfeed
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'account_id_format'
down_revision = 'refill_cancel_dripfeed'
branch_labels = None
depends_on = None


def upgrade():
    # Plain ALTER TABLE with the CHECK on the column (SQLite adds such a column in place; a
    # batch copy of the table would rewrite its DDL).
    op.add_column('accounts', sa.Column(
        'id_format', sa.String(length=16),
        sa.CheckConstraint("id_format IN ('prefixed', 'numeric')", name='ck_accounts_id_format'),
        nullable=True))


def downgrade():
    op.drop_column('accounts', 'id_format')
