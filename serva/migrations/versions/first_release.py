"""The first release's schema

Exactly what `serva init-db` of Serva 0.1 (commit 89138a3) created; that release stamped
`schema_version` = 1 in serva_meta instead of an Alembic version, and a database it made is
adopted as this revision (serva/migrations/env.py).

Revision ID: first_release
Revises:
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'first_release'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('accounts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=True),
    sa.Column('api_access', sa.String(length=16), server_default='none', nullable=False),
    sa.Column('access_requested_at', sa.BigInteger(), nullable=True),
    sa.Column('banned', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('ban_reason', sa.String(length=255), nullable=True),
    sa.Column('balance', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('discount_bp', sa.Integer(), server_default='0', nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.CheckConstraint('balance >= 0', name='ck_accounts_balance_nonneg'),
    sa.CheckConstraint('discount_bp BETWEEN 0 AND 10000', name='ck_accounts_discount'),
    sa.CheckConstraint("api_access IN ('none', 'requested', 'approved')", name='ck_accounts_api_access'),
    sa.UniqueConstraint('email')
    )
    op.create_table('login_failures',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('remote_addr', sa.String(length=64), server_default='', nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_login_failures_email', 'login_failures', ['email', 'created_at'], unique=False)

    op.create_table('serva_meta',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.String(length=255), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('services',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('category', sa.String(length=255), server_default='', nullable=False),
    sa.Column('type', sa.String(length=64), server_default='Default', nullable=False),
    sa.Column('kind', sa.String(length=16), server_default='default', nullable=False),
    sa.Column('rate', sa.BigInteger(), nullable=False),
    sa.Column('min_quantity', sa.Integer(), server_default='1', nullable=False),
    sa.Column('max_quantity', sa.Integer(), server_default='1', nullable=False),
    sa.Column('fields_json', sa.Text(), server_default='[]', nullable=False),
    sa.Column('refill', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('cancel', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('active', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.CheckConstraint('rate >= 0', name='ck_services_rate'),
    sa.CheckConstraint('min_quantity >= 1 AND max_quantity >= min_quantity', name='ck_services_quantity'),
    sa.CheckConstraint("kind IN ('default', 'package', 'lines', 'fields')", name='ck_services_kind')
    )
    op.create_table('api_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('last_used_at', sa.BigInteger(), nullable=True),
    sa.Column('revoked_at', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ),
    sa.UniqueConstraint('key_hash')
    )
    op.create_index('uq_api_keys_one_active', 'api_keys', ['account_id'], unique=True, sqlite_where=sa.text('revoked_at IS NULL'), postgresql_where=sa.text('revoked_at IS NULL'))

    op.create_table('coupons',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.Column('starts_at', sa.BigInteger(), nullable=True),
    sa.Column('expires_at', sa.BigInteger(), nullable=True),
    sa.Column('max_uses', sa.Integer(), nullable=True),
    sa.Column('uses', sa.Integer(), server_default='0', nullable=False),
    sa.Column('per_account_limit', sa.Integer(), nullable=True),
    sa.Column('min_charge', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('service_id', sa.Integer(), nullable=True),
    sa.Column('category', sa.String(length=255), nullable=True),
    sa.Column('active', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.CheckConstraint("kind IN ('percent', 'fixed')", name='ck_coupons_kind'),
    sa.CheckConstraint('value >= 0', name='ck_coupons_value'),
    sa.CheckConstraint('max_uses IS NULL OR uses <= max_uses', name='ck_coupons_uses'),
    sa.UniqueConstraint('code'),
    sa.ForeignKeyConstraint(['service_id'], ['services.id'], )
    )
    op.create_table('idempotency_keys',
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('response_json', sa.Text(), nullable=False),
    sa.Column('expires_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('account_id', 'key'),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], )
    )
    op.create_table('purchase_guards',
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('service_id', sa.Integer(), nullable=False),
    sa.Column('target_key', sa.String(length=64), nullable=False),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.Column('expires_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('account_id', 'service_id', 'target_key', 'quantity'),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ),
    sa.ForeignKeyConstraint(['service_id'], ['services.id'], )
    )
    op.create_table('service_rates',
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('service_id', sa.Integer(), nullable=False),
    sa.Column('rate', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('account_id', 'service_id'),
    sa.CheckConstraint('rate >= 0', name='ck_service_rates_rate'),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ),
    sa.ForeignKeyConstraint(['service_id'], ['services.id'], )
    )
    op.create_table('orders',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('service_id', sa.Integer(), nullable=False),
    sa.Column('target', sa.Text(), nullable=False),
    sa.Column('target_key', sa.String(length=64), nullable=False),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.Column('inputs_json', sa.Text(), nullable=True),
    sa.Column('charge', sa.BigInteger(), nullable=False),
    sa.Column('refunded', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('status', sa.String(length=16), server_default='Pending', nullable=False),
    sa.Column('start_count', sa.Integer(), nullable=True),
    sa.Column('remains', sa.Integer(), nullable=True),
    sa.Column('coupon_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.CheckConstraint("status IN ('Pending', 'In progress', 'Processing', 'Completed', 'Partial', 'Canceled')", name='ck_orders_status'),
    sa.CheckConstraint('charge >= 0 AND refunded >= 0 AND refunded <= charge', name='ck_orders_money'),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ),
    sa.ForeignKeyConstraint(['service_id'], ['services.id'], ),
    sa.ForeignKeyConstraint(['coupon_id'], ['coupons.id'], )
    )
    op.create_index('ix_orders_account', 'orders', ['account_id', 'id'], unique=False)
    op.create_index('uq_orders_one_active_per_target', 'orders', ['account_id', 'service_id', 'target_key'], unique=True, sqlite_where=sa.text("status IN ('Pending', 'In progress', 'Processing')"), postgresql_where=sa.text("status IN ('Pending', 'In progress', 'Processing')"))

    op.create_table('coupon_redemptions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('coupon_id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('order_id', sa.Integer(), nullable=False),
    sa.Column('discount', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.ForeignKeyConstraint(['coupon_id'], ['coupons.id'], ),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ),
    sa.UniqueConstraint('order_id'),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], )
    )
    op.create_index('ix_coupon_redemptions_account', 'coupon_redemptions', ['coupon_id', 'account_id'], unique=False)

    op.create_table('ledger',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('order_id', sa.Integer(), nullable=True),
    sa.Column('note', sa.String(length=255), server_default='', nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.CheckConstraint("kind IN ('topup', 'adjustment', 'charge', 'refund')", name='ck_ledger_kind'),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], )
    )
    op.create_index('ix_ledger_account', 'ledger', ['account_id'], unique=False)
    op.create_index('ix_ledger_order', 'ledger', ['order_id'], unique=False)


def downgrade():
    # Back to an empty database: every table and its data is dropped.
    op.drop_index('ix_ledger_order', 'ledger')
    op.drop_index('ix_ledger_account', 'ledger')

    op.drop_table('ledger')
    op.drop_index('ix_coupon_redemptions_account', 'coupon_redemptions')

    op.drop_table('coupon_redemptions')
    op.drop_index('uq_orders_one_active_per_target', 'orders', sqlite_where=sa.text("status IN ('Pending', 'In progress', 'Processing')"), postgresql_where=sa.text("status IN ('Pending', 'In progress', 'Processing')"))
    op.drop_index('ix_orders_account', 'orders')

    op.drop_table('orders')
    op.drop_table('service_rates')
    op.drop_table('purchase_guards')
    op.drop_table('idempotency_keys')
    op.drop_table('coupons')
    op.drop_index('uq_api_keys_one_active', 'api_keys', sqlite_where=sa.text('revoked_at IS NULL'), postgresql_where=sa.text('revoked_at IS NULL'))

    op.drop_table('api_keys')
    op.drop_table('services')
    op.drop_table('serva_meta')
    op.drop_index('ix_login_failures_email', 'login_failures')

    op.drop_table('login_failures')
    op.drop_table('accounts')
