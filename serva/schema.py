"""The one source of truth for the database schema. `schema.sql` is generated from it
(`serva schema-sql > schema.sql`) and a test keeps the two identical. Every change here is
also a new Alembic revision in serva/migrations/versions (README: "Adding a migration"); a
test compares this metadata with the database the revisions build.

Money columns are BigInteger micro-units. Invariants the database enforces by itself:
no negative balance (CHECK), one active key per account and one active order per
account+service+target (partial unique indexes), one guard row per repeated target. Every
balance change is `ledger.post`: a conditional UPDATE of the balance and its ledger row.
"""
from sqlalchemy import (
    BigInteger, Boolean, CheckConstraint, Column, ForeignKey, Index, Integer, MetaData,
    PrimaryKeyConstraint, String, Table, Text, UniqueConstraint, text,
)

ACTIVE_STATUSES = ("Pending", "In progress", "Processing")
FINAL_STATUSES = ("Completed", "Partial", "Canceled")
ORDER_STATUSES = ACTIVE_STATUSES + FINAL_STATUSES
PENDING_REFILL_STATUSES = ("Pending", "In progress")
REFILL_STATUSES = PENDING_REFILL_STATUSES + ("Completed", "Rejected")
SERVICE_KINDS = ("default", "package", "lines", "fields")
# A hand-over's life (table `dispatches`): due (waiting for its turn or a retry) -> sending
# (claimed by a worker under a lease) -> done (the provider took it) | unknown (sent, outcome
# not known: the operator resolves it) | canceled (refused; the order was refunded) | manual
# (its service lost its provider link; the operator handles the order).
DISPATCH_STATES = ("due", "sending", "done", "unknown", "canceled", "manual")
DISPATCH_KINDS = ("add", "refill", "cancel")  # an order; a refill or cancel request (forwarding)
API_ACCESS_STATES = ("none", "requested", "approved")
ID_FORMATS = ("prefixed", "numeric")  # an account's ids in API responses (serva.ids)
OPERATOR_ROLES = ("owner", "support")  # the console's people (serva/operators.py)
# Ledger kinds: an operator's top-up or adjustment, an order's charge or refund, a payment's
# credit, its deposit bonus, and what a refund or dispute of it took back (serva.payments).
LEDGER_KINDS = ("topup", "adjustment", "charge", "refund", "payment", "payment_bonus",
                "payment_reversal")
PAYMENT_GATEWAYS = ("stripe", "manual")
# A payment's life (table `payments`): created (the row; the gateway not asked yet, or its
# answer lost) -> pending (waiting for the gateway's webhook or the operator) -> paid (credited)
# | rejected (the operator) | expired | failed (the gateway); paid -> refunded | disputed.
CREDITED_PAYMENT_STATUSES = ("paid", "refunded", "disputed")
PAYMENT_STATUSES = ("created", "pending", "rejected", "expired", "failed") + CREDITED_PAYMENT_STATUSES

metadata = MetaData()


def _in(column, values):
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _partial(condition):
    """A WHERE clause for a partial index on both SQLite and PostgreSQL."""
    return {"sqlite_where": text(condition), "postgresql_where": text(condition)}


serva_meta = Table(
    "serva_meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(255), nullable=False),
)

accounts = Table(
    "accounts", metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(254), nullable=False, unique=True),
    Column("password_hash", String(255)),
    Column("api_access", String(16), nullable=False, server_default="none"),
    Column("access_requested_at", BigInteger),
    Column("banned", Boolean, nullable=False, server_default=text("false")),
    Column("ban_reason", String(255)),
    Column("balance", BigInteger, nullable=False, server_default="0"),
    Column("discount_bp", Integer, nullable=False, server_default="0"),
    Column("created_at", BigInteger, nullable=False),
    # NULL: the partner has not chosen; the deployment default (SERVA_INTEGER_IDS) applies.
    Column("id_format", String(16),
           CheckConstraint(_in("id_format", ID_FORMATS), name="ck_accounts_id_format")),
    # Set while the account is on hold: a payment was taken back (refund, dispute) beyond what
    # the balance covered; `add` answers account_on_hold until what is owed is settled.
    Column("hold_reason", String(255)),
    Column("held_at", BigInteger),
    CheckConstraint("balance >= 0", name="ck_accounts_balance_nonneg"),
    CheckConstraint("discount_bp BETWEEN 0 AND 10000", name="ck_accounts_discount"),
    CheckConstraint(_in("api_access", API_ACCESS_STATES), name="ck_accounts_api_access"),
)

api_keys = Table(
    "api_keys", metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("last_used_at", BigInteger),
    Column("revoked_at", BigInteger),
    Index("uq_api_keys_one_active", "account_id", unique=True, **_partial("revoked_at IS NULL")),
)

# Upstream providers (panels speaking API v2, Serva included). `api_key` is a secret that must
# be sent, so it is stored as is: never printed in full (providers.mask_key), never logged.
providers = Table(
    "providers", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("url", String(2048), nullable=False),
    Column("api_key", String(255), nullable=False),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    # Set when the provider's replies show it is a Serva (it honours Idempotency-Key, so a
    # hand-over whose outcome is unknown can be sent again safely).
    Column("idempotent", Boolean, nullable=False, server_default=text("false")),
    Column("balance", BigInteger),
    Column("balance_currency", String(8)),
    Column("balance_at", BigInteger),
    Column("last_error", String(255)),
    Column("last_error_at", BigInteger),
    Column("created_at", BigInteger, nullable=False),
)

services = Table(
    "services", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(255), nullable=False),
    Column("category", String(255), nullable=False, server_default=""),
    Column("type", String(64), nullable=False, server_default="Default"),
    Column("kind", String(16), nullable=False, server_default="default"),
    Column("rate", BigInteger, nullable=False),
    Column("min_quantity", Integer, nullable=False, server_default="1"),
    Column("max_quantity", Integer, nullable=False, server_default="1"),
    Column("fields_json", Text, nullable=False, server_default="[]"),
    Column("cancel", Boolean, nullable=False, server_default=text("false")),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("created_at", BigInteger, nullable=False),
    Column("refill_days", Integer, nullable=False, server_default="0"),  # 0: no refill
    Column("dripfeed", Boolean, nullable=False, server_default=text("false")),
    Column("fixed_quantity", Integer),  # set: the quantity is not the partner's to choose
    # Fulfilment: none (manual) or an upstream provider's service, its rate per 1000 as last
    # seen, and the markup (basis points) the local rate was derived with. No foreign key on
    # provider_id: SQLite adds none to an existing table without rewriting it, and providers
    # are never deleted (only disabled).
    Column("provider_id", Integer),
    Column("provider_service", String(64)),
    Column("provider_rate", BigInteger),
    Column("markup_bp", Integer),
    CheckConstraint("rate >= 0", name="ck_services_rate"),
    CheckConstraint("min_quantity >= 1 AND max_quantity >= min_quantity", name="ck_services_quantity"),
    CheckConstraint(_in("kind", SERVICE_KINDS), name="ck_services_kind"),
)

service_rates = Table(
    "service_rates", metadata,
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("service_id", Integer, ForeignKey("services.id"), nullable=False),
    Column("rate", BigInteger, nullable=False),
    PrimaryKeyConstraint("account_id", "service_id"),
    CheckConstraint("rate >= 0", name="ck_service_rates_rate"),
)

coupons = Table(
    "coupons", metadata,
    Column("id", Integer, primary_key=True),
    Column("code", String(64), nullable=False, unique=True),
    Column("kind", String(8), nullable=False),
    Column("value", BigInteger, nullable=False),
    Column("starts_at", BigInteger),
    Column("expires_at", BigInteger),
    Column("max_uses", Integer),
    Column("uses", Integer, nullable=False, server_default="0"),
    Column("per_account_limit", Integer),
    Column("min_charge", BigInteger, nullable=False, server_default="0"),
    Column("service_id", Integer, ForeignKey("services.id")),
    Column("category", String(255)),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("created_at", BigInteger, nullable=False),
    CheckConstraint("kind IN ('percent', 'fixed')", name="ck_coupons_kind"),
    CheckConstraint("value >= 0", name="ck_coupons_value"),
    CheckConstraint("max_uses IS NULL OR uses <= max_uses", name="ck_coupons_uses"),
)

orders = Table(
    "orders", metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("service_id", Integer, ForeignKey("services.id"), nullable=False),
    Column("target", Text, nullable=False),
    Column("target_key", String(64), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("inputs_json", Text),
    Column("charge", BigInteger, nullable=False),
    Column("refunded", BigInteger, nullable=False, server_default="0"),
    Column("status", String(16), nullable=False, server_default="Pending"),
    Column("start_count", Integer),
    Column("remains", Integer),
    Column("coupon_id", Integer, ForeignKey("coupons.id")),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("runs", Integer),  # drip-feed: `quantity` is the total, delivered in `runs` runs
    Column("interval_minutes", Integer),  # between drip-feed runs
    Column("runs_done", Integer),
    Column("cancel_requested_at", BigInteger),  # the partner asked to cancel (CONTRACT: cancel)
    Column("completed_at", BigInteger),  # when it became Completed/Partial/Canceled (refill window)
    # Fulfilment: the provider (set when the order is placed on a provider's service), the
    # provider's order id once it accepted, when the worker polls it next (NULL: not polled,
    # e.g. manual, not handed over yet, or final), and a note that needs the operator.
    Column("provider_id", Integer),  # providers.id (no foreign key: see services)
    Column("provider_order", String(64)),
    Column("next_sync_at", BigInteger),
    Column("attention", String(255)),
    # The x-serva-request-id of the `add` that placed it (see ledger.request_id).
    Column("request_id", String(64)),
    CheckConstraint(_in("status", ORDER_STATUSES), name="ck_orders_status"),
    CheckConstraint("charge >= 0 AND refunded >= 0 AND refunded <= charge", name="ck_orders_money"),
    Index("ix_orders_account", "account_id", "id"),
    Index("uq_orders_one_active_per_target", "account_id", "service_id", "target_key",
          unique=True, **_partial(_in("status", ACTIVE_STATUSES))),
    Index("ix_orders_sync", "provider_id", "next_sync_at", **_partial("next_sync_at IS NOT NULL")),
    # The console's order filters, each newest first (keyset pagination on id), and the
    # overview's sums over a time window (covering: no table lookups).
    Index("ix_orders_status", "status", "id"),
    Index("ix_orders_service", "service_id", "id"),
    Index("ix_orders_provider", "provider_id", "id"),
    Index("ix_orders_request", "request_id"),
    Index("ix_orders_created", "created_at", "charge", "refunded", "status", "service_id",
          "quantity"),
)

# The outbox: an order's hand-over to its provider, written in the transaction that charged
# it, so no order is ever charged and then forgotten. Workers claim due rows (a lease:
# `lease_owner` until `lease_until`); the partial unique index makes one hand-over per order.
dispatches = Table(
    "dispatches", metadata,
    Column("id", Integer, primary_key=True),
    Column("order_id", Integer, ForeignKey("orders.id"), nullable=False),
    Column("kind", String(16), nullable=False, server_default="add"),
    Column("state", String(16), nullable=False, server_default="due"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("due_at", BigInteger, nullable=False),
    Column("lease_owner", String(64)),
    Column("lease_until", BigInteger),
    Column("last_message", String(255)),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    CheckConstraint(_in("state", DISPATCH_STATES), name="ck_dispatches_state"),
    Index("uq_dispatches_one_add_per_order", "order_id", unique=True, **_partial("kind = 'add'")),
    Index("ix_dispatches_due", "state", "due_at"),
)

# An order's status history (serva/orders/history.py): one row per change of its status,
# remains or start count, written in the transaction of the change (its creation is the
# order's `created_at`). `actor` names who: worker, cli, operator:EMAIL, api (the partner).
order_history = Table(
    "order_history", metadata,
    Column("id", Integer, primary_key=True),
    Column("order_id", Integer, ForeignKey("orders.id"), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("status_before", String(16), nullable=False),
    Column("status_after", String(16), nullable=False),
    Column("remains", Integer),
    Column("start_count", Integer),
    Column("actor", String(270), nullable=False),
    Column("request_id", String(64)),
    Index("ix_order_history_order", "order_id", "created_at", "id"),
)

# Every call to a provider about a hand-over (serva/fulfilment/attempts.py): what was asked
# (add, refill, cancel; status for a poll that flagged the order), what came of it, and the
# reply, with the provider's key masked and cut to HANDOVER_REPLY_LENGTH. `last_message` on the
# hand-over keeps only the latest; this keeps them all.
HANDOVER_REPLY_LENGTH = 1000
handover_attempts = Table(
    "handover_attempts", metadata,
    Column("id", Integer, primary_key=True),
    Column("dispatch_id", Integer, ForeignKey("dispatches.id")),  # NULL: a status poll
    Column("order_id", Integer, ForeignKey("orders.id"), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("action", String(16), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("http_status", Integer),
    Column("reply", String(HANDOVER_REPLY_LENGTH)),
    Index("ix_handover_attempts_order", "order_id", "id"),
)

# One refill request per row; at most one still Pending/In progress per order (the partial
# unique index), so two concurrent refill requests cannot both be accepted.
refills = Table(
    "refills", metadata,
    Column("id", Integer, primary_key=True),
    Column("order_id", Integer, ForeignKey("orders.id"), nullable=False),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("status", String(16), nullable=False, server_default="Pending"),
    Column("provider_refill_id", String(64)),  # the provider's id, when a provider does it
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    CheckConstraint(_in("status", REFILL_STATUSES), name="ck_refills_status"),
    Index("ix_refills_account", "account_id", "id"),
    Index("ix_refills_status", "status", "id"),
    Index("uq_refills_one_pending", "order_id", unique=True,
          **_partial(_in("status", PENDING_REFILL_STATUSES))),
)

ledger = Table(
    "ledger", metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("order_id", Integer, ForeignKey("orders.id")),
    Column("note", String(255), nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
    # The x-serva-request-id of the request that caused the row, or `cli:<id>` for an
    # operator command (one id per command); the console finds orders by it.
    Column("request_id", String(64)),
    # The payment a payment, payment_bonus or payment_reversal row belongs to (no foreign key:
    # SQLite adds none to an existing table without rewriting it; payments are never deleted).
    Column("payment_id", Integer),
    CheckConstraint(_in("kind", LEDGER_KINDS), name="ck_ledger_kind"),
    Index("ix_ledger_account", "account_id"),
    Index("ix_ledger_order", "order_id"),
    Index("ix_ledger_request", "request_id"),
    Index("ix_ledger_payment", "payment_id", **_partial("payment_id IS NOT NULL")),
    # A payment is credited once, and its bonus given once, whatever its webhooks do.
    Index("uq_ledger_one_credit_per_payment", "payment_id", unique=True,
          **_partial("kind = 'payment'")),
    Index("uq_ledger_one_bonus_per_payment", "payment_id", unique=True,
          **_partial("kind = 'payment_bonus'")),
)

# Money in (serva.payments): one row per top-up a partner starts, unique per gateway and the
# gateway's id for it (a Stripe Checkout Session's id; a manual payment's account/reference).
# Amounts are micro-units of `currency`; `bonus` is the deposit bonus promised when it was
# made; `reversed` is what refunds and disputes take back in all, `owed` the part of that the
# balance did not cover (the account is on hold while any is owed) and `written_off` what of
# that the operator forgave.
payments = Table(
    "payments", metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("gateway", String(16), nullable=False),
    Column("gateway_id", String(255)),
    Column("gateway_charge", String(255)),  # Stripe: the PaymentIntent refunds and disputes name
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(10), nullable=False),
    Column("bonus", BigInteger, nullable=False, server_default="0"),
    Column("status", String(16), nullable=False, server_default="created"),
    Column("reference", String(255)),  # manual: what the partner says identifies the transfer
    Column("flagged_reason", String(255)),  # set: needs the operator (e.g. an amount mismatch)
    Column("note", String(255)),  # the operator's word on approving or rejecting
    Column("reversed", BigInteger, nullable=False, server_default="0"),
    Column("owed", BigInteger, nullable=False, server_default="0"),
    Column("written_off", BigInteger, nullable=False, server_default="0"),  # owed, forgiven
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("paid_at", BigInteger),
    UniqueConstraint("gateway", "gateway_id", name="uq_payments_gateway_id"),
    CheckConstraint(_in("gateway", PAYMENT_GATEWAYS), name="ck_payments_gateway"),
    CheckConstraint(_in("status", PAYMENT_STATUSES), name="ck_payments_status"),
    CheckConstraint("amount > 0 AND bonus >= 0 AND owed >= 0 AND written_off >= 0 "
                    "AND owed + written_off <= reversed AND reversed <= amount + bonus",
                    name="ck_payments_money"),
    Index("ix_payments_account", "account_id", "id"),
    Index("ix_payments_status", "status", "id"),
    Index("ix_payments_charge", "gateway", "gateway_charge"),
)

# Every gateway event Serva verified, once per event id: what the operator reads when a
# payment's history is in question, and what tells a replay from a new event.
payment_events = Table(
    "payment_events", metadata,
    Column("id", Integer, primary_key=True),
    Column("gateway", String(16), nullable=False),
    Column("event_id", String(255), nullable=False),
    Column("type", String(64), nullable=False),
    Column("payment_id", Integer, ForeignKey("payments.id")),
    Column("outcome", String(255), nullable=False),
    Column("received_at", BigInteger, nullable=False),
    UniqueConstraint("gateway", "event_id", name="uq_payment_events_event"),
    Index("ix_payment_events_payment", "payment_id"),
)

coupon_redemptions = Table(
    "coupon_redemptions", metadata,
    Column("id", Integer, primary_key=True),
    Column("coupon_id", Integer, ForeignKey("coupons.id"), nullable=False),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("order_id", Integer, ForeignKey("orders.id"), nullable=False, unique=True),
    Column("discount", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_coupon_redemptions_account", "coupon_id", "account_id"),
)

# The purchase guard: one row per account+service+target+quantity; a repeat inside the
# window finds the row unexpired and is refused (the upsert's WHERE does not match).
purchase_guards = Table(
    "purchase_guards", metadata,
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("service_id", Integer, ForeignKey("services.id"), nullable=False),
    Column("target_key", String(64), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("account_id", "service_id", "target_key", "quantity"),
)

idempotency_keys = Table(
    "idempotency_keys", metadata,
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("key", String(255), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("response_json", Text, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("account_id", "key"),
)

# Dashboard sign-ins (serva/sessions.py): the cookie carries a random token, this row its
# hash; a revoked row ends that session for every copy of the cookie.
dashboard_sessions = Table(
    "dashboard_sessions", metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger),
    Index("ix_dashboard_sessions_account", "account_id"),
)

login_failures = Table(
    "login_failures", metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(254), nullable=False),
    Column("remote_addr", String(64), nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
    # The trusted device (signed cookie) the attempt came from, if any (serva/login_throttle.py).
    Column("device_id", String(32)),
    Index("ix_login_failures_email", "email", "created_at"),
    Index("ix_login_failures_addr", "remote_addr", "created_at"),
)


# The console's people (serva/operators.py), separate from partner accounts. The TOTP secret
# must be read to check a code, so it is stored as is (like a provider's key) and never shown
# after enrolment; `totp_last_step` refuses a code already used.
operators = Table(
    "operators", metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(254), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("role", String(16), nullable=False),
    Column("disabled", Boolean, nullable=False, server_default=text("false")),
    Column("totp_secret", String(64)),
    Column("totp_confirmed_at", BigInteger),  # NULL: not enrolled yet
    Column("totp_last_step", BigInteger),
    Column("created_at", BigInteger, nullable=False),
    CheckConstraint(_in("role", OPERATOR_ROLES), name="ck_operators_role"),
)

# Ten per enrolment, each stored as its hash and good once (the UPDATE matches it unused).
recovery_codes = Table(
    "recovery_codes", metadata,
    Column("id", Integer, primary_key=True),
    Column("operator_id", Integer, ForeignKey("operators.id"), nullable=False),
    Column("code_hash", String(64), nullable=False, unique=True),
    Column("used_at", BigInteger),
    Index("ix_recovery_codes_operator", "operator_id"),
)

# Console sign-ins (serva/operator_sessions.py): as dashboard_sessions, plus the idle clock
# (`seen_at`) and the second factor passed (`verified_at`; NULL: only the password so far).
operator_sessions = Table(
    "operator_sessions", metadata,
    Column("id", Integer, primary_key=True),
    Column("operator_id", Integer, ForeignKey("operators.id"), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("seen_at", BigInteger, nullable=False),
    Column("verified_at", BigInteger),
    Column("revoked_at", BigInteger),
    Index("ix_operator_sessions_operator", "operator_id"),
)

# Every change made by an operator, in the console (`operator:EMAIL`) or the CLI (`cli`),
# written in the transaction of the change itself (serva/activity.py).
activity = Table(
    "activity", metadata,
    Column("id", Integer, primary_key=True),
    Column("created_at", BigInteger, nullable=False),
    Column("actor", String(270), nullable=False),
    Column("action", String(64), nullable=False),
    Column("subject", String(255), nullable=False, server_default=""),
    Column("before_json", Text),
    Column("after_json", Text),
    Column("request_id", String(64)),
)

# Webhooks (serva/webhooks): one endpoint per account. The signing secret must be usable to
# sign, so it cannot be hashed like an API key; it is stored as the partner was shown it, never
# logged and never shown again (serva/webhooks/endpoints.py says why not encrypted). After a
# rotation the previous secret still signs until `previous_secret_until` (two signatures).
WEBHOOK_EVENT_STATES = ("pending", "delivered", "failed")
webhook_endpoints = Table(
    "webhook_endpoints", metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, unique=True),
    Column("url", String(2048), nullable=False),
    Column("secret", String(128), nullable=False),
    Column("previous_secret", String(128)),
    Column("previous_secret_until", BigInteger),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    Column("disabled_reason", String(255)),
    Column("disabled_at", BigInteger),
    # The first failure since the last success (NULL: the last delivery succeeded); three days
    # of failures without one success disable the endpoint.
    Column("failing_since", BigInteger),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

# The webhook outbox: an event row written in the transaction of the change it reports, so an
# event exists exactly when its change committed. `msg_id` is the webhook-id header (the same
# on every attempt); the worker leases a row by moving `next_attempt_at` to the lease's end
# (`lease_owner` says whose), so a worker killed mid-delivery leaves it due again.
webhook_events = Table(
    "webhook_events", metadata,
    Column("id", Integer, primary_key=True),
    Column("msg_id", String(40), nullable=False, unique=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("type", String(32), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("state", String(16), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", BigInteger),
    Column("lease_owner", String(64)),
    Column("delivered_at", BigInteger),
    CheckConstraint(_in("state", WEBHOOK_EVENT_STATES), name="ck_webhook_events_state"),
    Index("ix_webhook_events_due", "next_attempt_at", **_partial("state = 'pending'")),
    Index("ix_webhook_events_account", "account_id", "id"),
    # `serva prune`: the finished events older than the retention, a range of this index
    # (pending events, the outbox's busy part, are not in it).
    Index("ix_webhook_events_finished", "created_at", **_partial("state <> 'pending'")),
)

# One row per delivery attempt, for the partner's "last deliveries" and the operator.
webhook_attempts = Table(
    "webhook_attempts", metadata,
    Column("id", Integer, primary_key=True),
    Column("event_id", Integer, ForeignKey("webhook_events.id"), nullable=False),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("url", String(2048), nullable=False),
    Column("status_code", Integer),
    Column("duration_ms", Integer, nullable=False),
    Column("error", String(255)),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_webhook_attempts_account", "account_id", "id"),
    Index("ix_webhook_attempts_event", "event_id"),
)
