"""webhooks: webhook_endpoints, webhook_events (the outbox), webhook_attempts

New tables only; no existing row changes.

Revision ID: webhooks
Revises: one_data_path
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'webhooks'
down_revision = 'payments'
branch_labels = None
depends_on = None


def _partial(condition):
    return {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}


def upgrade():
    op.create_table(
        'webhook_endpoints',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('account_id', sa.Integer(), sa.ForeignKey('accounts.id'), nullable=False,
                  unique=True),
        sa.Column('url', sa.String(length=2048), nullable=False),
        sa.Column('secret', sa.String(length=128), nullable=False),
        sa.Column('previous_secret', sa.String(length=128)),
        sa.Column('previous_secret_until', sa.BigInteger()),
        sa.Column('enabled', sa.Boolean(), nullable=False, server_default=sa.text('true')),
        sa.Column('disabled_reason', sa.String(length=255)),
        sa.Column('disabled_at', sa.BigInteger()),
        sa.Column('failing_since', sa.BigInteger()),
        sa.Column('created_at', sa.BigInteger(), nullable=False),
        sa.Column('updated_at', sa.BigInteger(), nullable=False),
    )
    op.create_table(
        'webhook_events',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('msg_id', sa.String(length=40), nullable=False, unique=True),
        sa.Column('account_id', sa.Integer(), sa.ForeignKey('accounts.id'), nullable=False),
        sa.Column('type', sa.String(length=32), nullable=False),
        sa.Column('payload', sa.Text(), nullable=False),
        sa.Column('created_at', sa.BigInteger(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False, server_default='pending'),
        sa.Column('attempts', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('next_attempt_at', sa.BigInteger()),
        sa.Column('lease_owner', sa.String(length=64)),
        sa.Column('delivered_at', sa.BigInteger()),
        sa.CheckConstraint("state IN ('pending', 'delivered', 'failed')",
                           name='ck_webhook_events_state'),
    )
    op.create_index('ix_webhook_events_due', 'webhook_events', ['next_attempt_at'],
                    **_partial("state = 'pending'"))
    op.create_index('ix_webhook_events_account', 'webhook_events', ['account_id', 'id'])
    op.create_table(
        'webhook_attempts',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('event_id', sa.Integer(), sa.ForeignKey('webhook_events.id'), nullable=False),
        sa.Column('account_id', sa.Integer(), sa.ForeignKey('accounts.id'), nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('url', sa.String(length=2048), nullable=False),
        sa.Column('status_code', sa.Integer()),
        sa.Column('duration_ms', sa.Integer(), nullable=False),
        sa.Column('error', sa.String(length=255)),
        sa.Column('created_at', sa.BigInteger(), nullable=False),
    )
    op.create_index('ix_webhook_attempts_account', 'webhook_attempts', ['account_id', 'id'])
    op.create_index('ix_webhook_attempts_event', 'webhook_attempts', ['event_id'])


def downgrade():
    op.drop_table('webhook_attempts')
    op.drop_table('webhook_events')
    op.drop_table('webhook_endpoints')
