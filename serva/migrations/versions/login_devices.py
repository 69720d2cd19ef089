"""login_failures: device_id, index by address

Fair sign-in throttling (serva/login_throttle.py) counts failures per trusted browser as
well as per email+address and per address: the trusted device a failure came from, and an
index for the per-address count. Existing failure rows count as untrusted (NULL).

Revision ID: login_devices
Revises: request_ids
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'login_devices'
down_revision = 'request_ids'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('login_failures', schema=None) as batch_op:
        batch_op.add_column(sa.Column('device_id', sa.String(length=32), nullable=True))
        batch_op.create_index('ix_login_failures_addr', ['remote_addr', 'created_at'], unique=False)


def downgrade():
    with op.batch_alter_table('login_failures', schema=None) as batch_op:
        batch_op.drop_index('ix_login_failures_addr')
        batch_op.drop_column('device_id')
