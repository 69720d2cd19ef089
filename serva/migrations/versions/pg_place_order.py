"""PostgreSQL: function serva_place_order (`add` in one statement)

One account's orders queue on its row lock; `add` without a coupon or idempotency key runs on
PostgreSQL as one call of this function in its own transaction, so the lock is held for the
statements and the commit, not across round trips (serva/schema.py says what it decides;
bench/README.md, PostgreSQL, measures it). SQLite: nothing changes.

Revision ID: pg_place_order
Revises: login_devices
Create Date: 2026-11-27
"""
from alembic import op


# revision identifiers, used by Alembic.
revision = 'pg_place_order'
down_revision = 'login_devices'
branch_labels = None
depends_on = None

# The function as this revision creates it (serva/schema.py holds the current one).
PLACE_ORDER_FUNCTION = """\
CREATE OR REPLACE FUNCTION serva_place_order(
    p_account_id integer, p_service_id integer, p_target text, p_target_key varchar,
    p_quantity integer, p_inputs_json text, p_charge bigint, p_runs integer,
    p_interval_minutes integer, p_provider_id integer, p_request_id varchar, p_stamp bigint,
    p_guard_expires_at bigint, p_note_prefix varchar, p_number_base integer,
    OUT placed_id integer, OUT new_balance bigint)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM accounts WHERE id = p_account_id FOR UPDATE;
    INSERT INTO purchase_guards AS g (account_id, service_id, target_key, quantity, expires_at)
    VALUES (p_account_id, p_service_id, p_target_key, p_quantity, p_guard_expires_at)
    ON CONFLICT (account_id, service_id, target_key, quantity)
    DO UPDATE SET expires_at = excluded.expires_at WHERE g.expires_at <= p_stamp;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'SV000', MESSAGE = 'duplicate_target';
    END IF;
    IF p_charge IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'SV000', MESSAGE = 'insufficient_balance';
    END IF;
    INSERT INTO orders (account_id, service_id, target, target_key, quantity, inputs_json,
                        charge, remains, runs, interval_minutes, runs_done, provider_id,
                        request_id, status, created_at, updated_at)
    VALUES (p_account_id, p_service_id, p_target, p_target_key, p_quantity, p_inputs_json,
            p_charge, p_quantity, p_runs, p_interval_minutes,
            CASE WHEN p_runs IS NULL THEN NULL ELSE 0 END, p_provider_id, p_request_id,
            'Pending', p_stamp, p_stamp)
    RETURNING id INTO placed_id;
    IF p_provider_id IS NOT NULL THEN
        INSERT INTO dispatches (order_id, kind, state, attempts, due_at, created_at, updated_at)
        VALUES (placed_id, 'add', 'due', 0, p_stamp, p_stamp, p_stamp);
    END IF;
    UPDATE accounts SET balance = accounts.balance - p_charge
    WHERE id = p_account_id AND accounts.balance - p_charge >= 0
    RETURNING accounts.balance INTO new_balance;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'SV000', MESSAGE = 'insufficient_balance';
    END IF;
    INSERT INTO ledger (account_id, amount, kind, note, order_id, request_id, created_at)
    VALUES (p_account_id, -p_charge, 'charge', p_note_prefix || (placed_id + p_number_base),
            placed_id, p_request_id, p_stamp);
END
$$"""


def upgrade():
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(PLACE_ORDER_FUNCTION)


def downgrade():
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('DROP FUNCTION IF EXISTS serva_place_order')
