"""webhook_prune: an index of the finished webhook events by age, for `serva prune`

A new partial index only; no row changes.

Revision ID: webhook_prune
Revises: webhooks
Create Date: 2026-12-08
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'webhook_prune'
down_revision = 'webhooks'
branch_labels = None
depends_on = None

FINISHED = "state <> 'pending'"


def upgrade():
    op.create_index('ix_webhook_events_finished', 'webhook_events', ['created_at'],
                    sqlite_where=sa.text(FINISHED), postgresql_where=sa.text(FINISHED))


def downgrade():
    op.drop_index('ix_webhook_events_finished', table_name='webhook_events')
