"""Money in: partners top up their own balance through a gateway (Stripe Checkout, or a
manual transfer the operator confirms), and every payment is credited exactly once.

The names below are what the rest of Serva (the CLI, the operator console, the partner
pages) calls; each takes a connection from `db.read()` / `db.write()` and leaves the
transaction to the caller. The web side is `serva.payments.views` (its `init_app`).
"""
from .choices import offered
from .gateways import Gateway, Manual, Started, amount_problem, clean_reference
from .holds import collect_owed, held_accounts, lift_hold, owed_by, put_on_hold, write_off
from .queries import event_ids, list_payments, overview, payment_detail, violations
from .records import (OPEN_STATUSES, PaymentError, approve, create, credit, decision_fields,
                      deposit_bonus, get, lock_account, parse_payment, present_payment, reject,
                      reverse, started)
from .stripe_checkout import RetryLater, StripeCheckout, WebhookRefused, handle


__all__ = [
    "Gateway", "Manual", "OPEN_STATUSES", "PaymentError", "RetryLater", "Started",
    "StripeCheckout", "WebhookRefused", "amount_problem", "approve", "clean_reference",
    "collect_owed", "create", "credit", "decision_fields", "deposit_bonus", "event_ids", "get",
    "handle", "held_accounts", "lift_hold", "list_payments", "lock_account", "offered",
    "overview", "owed_by", "parse_payment", "payment_detail", "present_payment", "put_on_hold",
    "reject", "reverse", "started", "violations", "write_off",
]
