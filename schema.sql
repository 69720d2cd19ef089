-- Serva schema at revision order_history. Generated from serva/schema.py by `serva schema-sql`; do not edit by hand.

CREATE TABLE accounts (
	id INTEGER NOT NULL,
	email VARCHAR(254) NOT NULL,
	password_hash VARCHAR(255),
	api_access VARCHAR(16) DEFAULT 'none' NOT NULL,
	access_requested_at BIGINT,
	banned BOOLEAN DEFAULT false NOT NULL,
	ban_reason VARCHAR(255),
	balance BIGINT DEFAULT '0' NOT NULL,
	discount_bp INTEGER DEFAULT '0' NOT NULL,
	created_at BIGINT NOT NULL,
	id_format VARCHAR(16) CONSTRAINT ck_accounts_id_format CHECK (id_format IN ('prefixed', 'numeric')),
	hold_reason VARCHAR(255),
	held_at BIGINT,
	PRIMARY KEY (id),
	CONSTRAINT ck_accounts_balance_nonneg CHECK (balance >= 0),
	CONSTRAINT ck_accounts_discount CHECK (discount_bp BETWEEN 0 AND 10000),
	CONSTRAINT ck_accounts_api_access CHECK (api_access IN ('none', 'requested', 'approved')),
	UNIQUE (email)
);

CREATE TABLE activity (
	id INTEGER NOT NULL,
	created_at BIGINT NOT NULL,
	actor VARCHAR(270) NOT NULL,
	action VARCHAR(64) NOT NULL,
	subject VARCHAR(255) DEFAULT '' NOT NULL,
	before_json TEXT,
	after_json TEXT,
	request_id VARCHAR(64),
	PRIMARY KEY (id)
);

CREATE TABLE login_failures (
	id INTEGER NOT NULL,
	email VARCHAR(254) NOT NULL,
	remote_addr VARCHAR(64) DEFAULT '' NOT NULL,
	created_at BIGINT NOT NULL,
	device_id VARCHAR(32),
	PRIMARY KEY (id)
);

CREATE INDEX ix_login_failures_addr ON login_failures (remote_addr, created_at);

CREATE INDEX ix_login_failures_email ON login_failures (email, created_at);

CREATE TABLE operators (
	id INTEGER NOT NULL,
	email VARCHAR(254) NOT NULL,
	password_hash VARCHAR(255) NOT NULL,
	role VARCHAR(16) NOT NULL,
	disabled BOOLEAN DEFAULT false NOT NULL,
	totp_secret VARCHAR(64),
	totp_confirmed_at BIGINT,
	totp_last_step BIGINT,
	created_at BIGINT NOT NULL,
	PRIMARY KEY (id),
	CONSTRAINT ck_operators_role CHECK (role IN ('owner', 'support')),
	UNIQUE (email)
);

CREATE TABLE providers (
	id INTEGER NOT NULL,
	name VARCHAR(64) NOT NULL,
	url VARCHAR(2048) NOT NULL,
	api_key VARCHAR(255) NOT NULL,
	enabled BOOLEAN DEFAULT true NOT NULL,
	idempotent BOOLEAN DEFAULT false NOT NULL,
	balance BIGINT,
	balance_currency VARCHAR(8),
	balance_at BIGINT,
	last_error VARCHAR(255),
	last_error_at BIGINT,
	created_at BIGINT NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (name)
);

CREATE TABLE serva_meta (
	"key" VARCHAR(64) NOT NULL,
	value VARCHAR(255) NOT NULL,
	PRIMARY KEY ("key")
);

CREATE TABLE services (
	id INTEGER NOT NULL,
	name VARCHAR(255) NOT NULL,
	category VARCHAR(255) DEFAULT '' NOT NULL,
	type VARCHAR(64) DEFAULT 'Default' NOT NULL,
	kind VARCHAR(16) DEFAULT 'default' NOT NULL,
	rate BIGINT NOT NULL,
	min_quantity INTEGER DEFAULT '1' NOT NULL,
	max_quantity INTEGER DEFAULT '1' NOT NULL,
	fields_json TEXT DEFAULT '[]' NOT NULL,
	cancel BOOLEAN DEFAULT false NOT NULL,
	active BOOLEAN DEFAULT true NOT NULL,
	created_at BIGINT NOT NULL,
	refill_days INTEGER DEFAULT '0' NOT NULL,
	dripfeed BOOLEAN DEFAULT false NOT NULL,
	fixed_quantity INTEGER,
	provider_id INTEGER,
	provider_service VARCHAR(64),
	provider_rate BIGINT,
	markup_bp INTEGER,
	PRIMARY KEY (id),
	CONSTRAINT ck_services_rate CHECK (rate >= 0),
	CONSTRAINT ck_services_quantity CHECK (min_quantity >= 1 AND max_quantity >= min_quantity),
	CONSTRAINT ck_services_kind CHECK (kind IN ('default', 'package', 'lines', 'fields'))
);

CREATE TABLE api_keys (
	id INTEGER NOT NULL,
	account_id INTEGER NOT NULL,
	key_hash VARCHAR(64) NOT NULL,
	prefix VARCHAR(16) NOT NULL,
	created_at BIGINT NOT NULL,
	last_used_at BIGINT,
	revoked_at BIGINT,
	PRIMARY KEY (id),
	FOREIGN KEY(account_id) REFERENCES accounts (id),
	UNIQUE (key_hash)
);

CREATE UNIQUE INDEX uq_api_keys_one_active ON api_keys (account_id) WHERE revoked_at IS NULL;

CREATE TABLE coupons (
	id INTEGER NOT NULL,
	code VARCHAR(64) NOT NULL,
	kind VARCHAR(8) NOT NULL,
	value BIGINT NOT NULL,
	starts_at BIGINT,
	expires_at BIGINT,
	max_uses INTEGER,
	uses INTEGER DEFAULT '0' NOT NULL,
	per_account_limit INTEGER,
	min_charge BIGINT DEFAULT '0' NOT NULL,
	service_id INTEGER,
	category VARCHAR(255),
	active BOOLEAN DEFAULT true NOT NULL,
	created_at BIGINT NOT NULL,
	PRIMARY KEY (id),
	CONSTRAINT ck_coupons_kind CHECK (kind IN ('percent', 'fixed')),
	CONSTRAINT ck_coupons_value CHECK (value >= 0),
	CONSTRAINT ck_coupons_uses CHECK (max_uses IS NULL OR uses <= max_uses),
	UNIQUE (code),
	FOREIGN KEY(service_id) REFERENCES services (id)
);

CREATE TABLE dashboard_sessions (
	id INTEGER NOT NULL,
	account_id INTEGER NOT NULL,
	token_hash VARCHAR(64) NOT NULL,
	created_at BIGINT NOT NULL,
	revoked_at BIGINT,
	PRIMARY KEY (id),
	FOREIGN KEY(account_id) REFERENCES accounts (id),
	UNIQUE (token_hash)
);

CREATE INDEX ix_dashboard_sessions_account ON dashboard_sessions (account_id);

CREATE TABLE idempotency_keys (
	account_id INTEGER NOT NULL,
	"key" VARCHAR(255) NOT NULL,
	request_hash VARCHAR(64) NOT NULL,
	response_json TEXT NOT NULL,
	expires_at BIGINT NOT NULL,
	PRIMARY KEY (account_id, "key"),
	FOREIGN KEY(account_id) REFERENCES accounts (id)
);

CREATE TABLE operator_sessions (
	id INTEGER NOT NULL,
	operator_id INTEGER NOT NULL,
	token_hash VARCHAR(64) NOT NULL,
	created_at BIGINT NOT NULL,
	seen_at BIGINT NOT NULL,
	verified_at BIGINT,
	revoked_at BIGINT,
	PRIMARY KEY (id),
	FOREIGN KEY(operator_id) REFERENCES operators (id),
	UNIQUE (token_hash)
);

CREATE INDEX ix_operator_sessions_operator ON operator_sessions (operator_id);

CREATE TABLE payments (
	id INTEGER NOT NULL,
	account_id INTEGER NOT NULL,
	gateway VARCHAR(16) NOT NULL,
	gateway_id VARCHAR(255),
	gateway_charge VARCHAR(255),
	amount BIGINT NOT NULL,
	currency VARCHAR(10) NOT NULL,
	bonus BIGINT DEFAULT '0' NOT NULL,
	status VARCHAR(16) DEFAULT 'created' NOT NULL,
	reference VARCHAR(255),
	flagged_reason VARCHAR(255),
	note VARCHAR(255),
	reversed BIGINT DEFAULT '0' NOT NULL,
	owed BIGINT DEFAULT '0' NOT NULL,
	written_off BIGINT DEFAULT '0' NOT NULL,
	created_at BIGINT NOT NULL,
	updated_at BIGINT NOT NULL,
	paid_at BIGINT,
	PRIMARY KEY (id),
	CONSTRAINT uq_payments_gateway_id UNIQUE (gateway, gateway_id),
	CONSTRAINT ck_payments_gateway CHECK (gateway IN ('stripe', 'manual')),
	CONSTRAINT ck_payments_status CHECK (status IN ('created', 'pending', 'rejected', 'expired', 'failed', 'paid', 'refunded', 'disputed')),
	CONSTRAINT ck_payments_money CHECK (amount > 0 AND bonus >= 0 AND owed >= 0 AND written_off >= 0 AND owed + written_off <= reversed AND reversed <= amount + bonus),
	FOREIGN KEY(account_id) REFERENCES accounts (id)
);

CREATE INDEX ix_payments_account ON payments (account_id, id);

CREATE INDEX ix_payments_charge ON payments (gateway, gateway_charge);

CREATE INDEX ix_payments_status ON payments (status, id);

CREATE TABLE purchase_guards (
	account_id INTEGER NOT NULL,
	service_id INTEGER NOT NULL,
	target_key VARCHAR(64) NOT NULL,
	quantity INTEGER NOT NULL,
	expires_at BIGINT NOT NULL,
	PRIMARY KEY (account_id, service_id, target_key, quantity),
	FOREIGN KEY(account_id) REFERENCES accounts (id),
	FOREIGN KEY(service_id) REFERENCES services (id)
);

CREATE TABLE recovery_codes (
	id INTEGER NOT NULL,
	operator_id INTEGER NOT NULL,
	code_hash VARCHAR(64) NOT NULL,
	used_at BIGINT,
	PRIMARY KEY (id),
	FOREIGN KEY(operator_id) REFERENCES operators (id),
	UNIQUE (code_hash)
);

CREATE INDEX ix_recovery_codes_operator ON recovery_codes (operator_id);

CREATE TABLE service_rates (
	account_id INTEGER NOT NULL,
	service_id INTEGER NOT NULL,
	rate BIGINT NOT NULL,
	PRIMARY KEY (account_id, service_id),
	CONSTRAINT ck_service_rates_rate CHECK (rate >= 0),
	FOREIGN KEY(account_id) REFERENCES accounts (id),
	FOREIGN KEY(service_id) REFERENCES services (id)
);

CREATE TABLE webhook_endpoints (
	id INTEGER NOT NULL,
	account_id INTEGER NOT NULL,
	url VARCHAR(2048) NOT NULL,
	secret VARCHAR(128) NOT NULL,
	previous_secret VARCHAR(128),
	previous_secret_until BIGINT,
	enabled BOOLEAN DEFAULT true NOT NULL,
	disabled_reason VARCHAR(255),
	disabled_at BIGINT,
	failing_since BIGINT,
	created_at BIGINT NOT NULL,
	updated_at BIGINT NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (account_id),
	FOREIGN KEY(account_id) REFERENCES accounts (id)
);

CREATE TABLE webhook_events (
	id INTEGER NOT NULL,
	msg_id VARCHAR(40) NOT NULL,
	account_id INTEGER NOT NULL,
	type VARCHAR(32) NOT NULL,
	payload TEXT NOT NULL,
	created_at BIGINT NOT NULL,
	state VARCHAR(16) DEFAULT 'pending' NOT NULL,
	attempts INTEGER DEFAULT '0' NOT NULL,
	next_attempt_at BIGINT,
	lease_owner VARCHAR(64),
	delivered_at BIGINT,
	PRIMARY KEY (id),
	CONSTRAINT ck_webhook_events_state CHECK (state IN ('pending', 'delivered', 'failed')),
	UNIQUE (msg_id),
	FOREIGN KEY(account_id) REFERENCES accounts (id)
);

CREATE INDEX ix_webhook_events_account ON webhook_events (account_id, id);

CREATE INDEX ix_webhook_events_due ON webhook_events (next_attempt_at) WHERE state = 'pending';

CREATE INDEX ix_webhook_events_finished ON webhook_events (created_at) WHERE state <> 'pending';

CREATE TABLE orders (
	id INTEGER NOT NULL,
	account_id INTEGER NOT NULL,
	service_id INTEGER NOT NULL,
	target TEXT NOT NULL,
	target_key VARCHAR(64) NOT NULL,
	quantity INTEGER NOT NULL,
	inputs_json TEXT,
	charge BIGINT NOT NULL,
	refunded BIGINT DEFAULT '0' NOT NULL,
	status VARCHAR(16) DEFAULT 'Pending' NOT NULL,
	start_count INTEGER,
	remains INTEGER,
	coupon_id INTEGER,
	created_at BIGINT NOT NULL,
	updated_at BIGINT NOT NULL,
	runs INTEGER,
	interval_minutes INTEGER,
	runs_done INTEGER,
	cancel_requested_at BIGINT,
	completed_at BIGINT,
	provider_id INTEGER,
	provider_order VARCHAR(64),
	next_sync_at BIGINT,
	attention VARCHAR(255),
	request_id VARCHAR(64),
	PRIMARY KEY (id),
	CONSTRAINT ck_orders_status CHECK (status IN ('Pending', 'In progress', 'Processing', 'Completed', 'Partial', 'Canceled')),
	CONSTRAINT ck_orders_money CHECK (charge >= 0 AND refunded >= 0 AND refunded <= charge),
	FOREIGN KEY(account_id) REFERENCES accounts (id),
	FOREIGN KEY(service_id) REFERENCES services (id),
	FOREIGN KEY(coupon_id) REFERENCES coupons (id)
);

CREATE INDEX ix_orders_account ON orders (account_id, id);

CREATE INDEX ix_orders_created ON orders (created_at, charge, refunded, status, service_id, quantity);

CREATE INDEX ix_orders_provider ON orders (provider_id, id);

CREATE INDEX ix_orders_request ON orders (request_id);

CREATE INDEX ix_orders_service ON orders (service_id, id);

CREATE INDEX ix_orders_status ON orders (status, id);

CREATE INDEX ix_orders_sync ON orders (provider_id, next_sync_at) WHERE next_sync_at IS NOT NULL;

CREATE UNIQUE INDEX uq_orders_one_active_per_target ON orders (account_id, service_id, target_key) WHERE status IN ('Pending', 'In progress', 'Processing');

CREATE TABLE payment_events (
	id INTEGER NOT NULL,
	gateway VARCHAR(16) NOT NULL,
	event_id VARCHAR(255) NOT NULL,
	type VARCHAR(64) NOT NULL,
	payment_id INTEGER,
	outcome VARCHAR(255) NOT NULL,
	received_at BIGINT NOT NULL,
	PRIMARY KEY (id),
	CONSTRAINT uq_payment_events_event UNIQUE (gateway, event_id),
	FOREIGN KEY(payment_id) REFERENCES payments (id)
);

CREATE INDEX ix_payment_events_payment ON payment_events (payment_id);

CREATE TABLE webhook_attempts (
	id INTEGER NOT NULL,
	event_id INTEGER NOT NULL,
	account_id INTEGER NOT NULL,
	attempt INTEGER NOT NULL,
	url VARCHAR(2048) NOT NULL,
	status_code INTEGER,
	duration_ms INTEGER NOT NULL,
	error VARCHAR(255),
	created_at BIGINT NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(event_id) REFERENCES webhook_events (id),
	FOREIGN KEY(account_id) REFERENCES accounts (id)
);

CREATE INDEX ix_webhook_attempts_account ON webhook_attempts (account_id, id);

CREATE INDEX ix_webhook_attempts_event ON webhook_attempts (event_id);

CREATE TABLE coupon_redemptions (
	id INTEGER NOT NULL,
	coupon_id INTEGER NOT NULL,
	account_id INTEGER NOT NULL,
	order_id INTEGER NOT NULL,
	discount BIGINT NOT NULL,
	created_at BIGINT NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(coupon_id) REFERENCES coupons (id),
	FOREIGN KEY(account_id) REFERENCES accounts (id),
	UNIQUE (order_id),
	FOREIGN KEY(order_id) REFERENCES orders (id)
);

CREATE INDEX ix_coupon_redemptions_account ON coupon_redemptions (coupon_id, account_id);

CREATE TABLE dispatches (
	id INTEGER NOT NULL,
	order_id INTEGER NOT NULL,
	kind VARCHAR(16) DEFAULT 'add' NOT NULL,
	state VARCHAR(16) DEFAULT 'due' NOT NULL,
	attempts INTEGER DEFAULT '0' NOT NULL,
	due_at BIGINT NOT NULL,
	lease_owner VARCHAR(64),
	lease_until BIGINT,
	last_message VARCHAR(255),
	created_at BIGINT NOT NULL,
	updated_at BIGINT NOT NULL,
	PRIMARY KEY (id),
	CONSTRAINT ck_dispatches_state CHECK (state IN ('due', 'sending', 'done', 'unknown', 'canceled', 'manual')),
	FOREIGN KEY(order_id) REFERENCES orders (id)
);

CREATE INDEX ix_dispatches_due ON dispatches (state, due_at);

CREATE UNIQUE INDEX uq_dispatches_one_add_per_order ON dispatches (order_id) WHERE kind = 'add';

CREATE TABLE ledger (
	id INTEGER NOT NULL,
	account_id INTEGER NOT NULL,
	amount BIGINT NOT NULL,
	kind VARCHAR(16) NOT NULL,
	order_id INTEGER,
	note VARCHAR(255) DEFAULT '' NOT NULL,
	created_at BIGINT NOT NULL,
	request_id VARCHAR(64),
	payment_id INTEGER,
	PRIMARY KEY (id),
	CONSTRAINT ck_ledger_kind CHECK (kind IN ('topup', 'adjustment', 'charge', 'refund', 'payment', 'payment_bonus', 'payment_reversal')),
	FOREIGN KEY(account_id) REFERENCES accounts (id),
	FOREIGN KEY(order_id) REFERENCES orders (id)
);

CREATE INDEX ix_ledger_account ON ledger (account_id);

CREATE INDEX ix_ledger_order ON ledger (order_id);

CREATE INDEX ix_ledger_payment ON ledger (payment_id) WHERE payment_id IS NOT NULL;

CREATE INDEX ix_ledger_request ON ledger (request_id);

CREATE UNIQUE INDEX uq_ledger_one_bonus_per_payment ON ledger (payment_id) WHERE kind = 'payment_bonus';

CREATE UNIQUE INDEX uq_ledger_one_credit_per_payment ON ledger (payment_id) WHERE kind = 'payment';

CREATE TABLE order_history (
	id INTEGER NOT NULL,
	order_id INTEGER NOT NULL,
	created_at BIGINT NOT NULL,
	status_before VARCHAR(16) NOT NULL,
	status_after VARCHAR(16) NOT NULL,
	remains INTEGER,
	start_count INTEGER,
	actor VARCHAR(270) NOT NULL,
	request_id VARCHAR(64),
	PRIMARY KEY (id),
	FOREIGN KEY(order_id) REFERENCES orders (id)
);

CREATE INDEX ix_order_history_order ON order_history (order_id, created_at, id);

CREATE TABLE refills (
	id INTEGER NOT NULL,
	order_id INTEGER NOT NULL,
	account_id INTEGER NOT NULL,
	status VARCHAR(16) DEFAULT 'Pending' NOT NULL,
	provider_refill_id VARCHAR(64),
	created_at BIGINT NOT NULL,
	updated_at BIGINT NOT NULL,
	PRIMARY KEY (id),
	CONSTRAINT ck_refills_status CHECK (status IN ('Pending', 'In progress', 'Completed', 'Rejected')),
	FOREIGN KEY(order_id) REFERENCES orders (id),
	FOREIGN KEY(account_id) REFERENCES accounts (id)
);

CREATE INDEX ix_refills_account ON refills (account_id, id);

CREATE INDEX ix_refills_status ON refills (status, id);

CREATE UNIQUE INDEX uq_refills_one_pending ON refills (order_id) WHERE status IN ('Pending', 'In progress');

CREATE TABLE handover_attempts (
	id INTEGER NOT NULL,
	dispatch_id INTEGER,
	order_id INTEGER NOT NULL,
	created_at BIGINT NOT NULL,
	action VARCHAR(16) NOT NULL,
	outcome VARCHAR(16) NOT NULL,
	http_status INTEGER,
	reply VARCHAR(1000),
	PRIMARY KEY (id),
	FOREIGN KEY(dispatch_id) REFERENCES dispatches (id),
	FOREIGN KEY(order_id) REFERENCES orders (id)
);

CREATE INDEX ix_handover_attempts_order ON handover_attempts (order_id, id);
