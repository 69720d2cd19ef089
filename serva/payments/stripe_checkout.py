"""Stripe Checkout: Serva creates a Checkout Session for the amount and currency it fixed,
with the payment's and account's ids in its metadata, and sends the partner there. Money is
credited only from a webhook Stripe signed (`stripe.Webhook.construct_event` on the raw body
with the endpoint's secret), never from the browser's return, and only when the session's
amount and currency are the ones Serva asked for; anything else is flagged for the operator.

Stripe counts in the currency's minor unit (cents; yen have none; dinars have three
decimals), Serva in micro-units: an amount a card cannot be charged exactly is refused before
a session is made, so what Serva credits is what Stripe took."""
import logging


from .. import db
from ..money import MICRO, div_half_up, format_amount
from . import records
from .gateways import Gateway, Started

log = logging.getLogger(__name__)

# Stripe's currencies without minor unit, and with three decimals (Stripe's docs, "Currencies").
ZERO_DECIMAL = frozenset("BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF".split())
THREE_DECIMAL = frozenset("BHD JOD KWD OMR TND".split())
CONNECT_TIMEOUT, READ_TIMEOUT = 5.0, 30.0  # seconds, for every call to Stripe's API
NETWORK_RETRIES = 2  # the stripe package resends with the same Idempotency-Key
PAID_EVENTS = ("checkout.session.completed", "checkout.session.async_payment_succeeded")



def stripe_package():
    """The `stripe` package, imported the first time a Stripe key is used: it adds ~6 MiB to
    every process, and most deployments have no key."""
    import stripe
    return stripe


class GatewayUnavailable(Exception):
    """The gateway did not create the checkout (unreachable, refused): nothing was taken."""

class WebhookRefused(ValueError):
    """A webhook that is not Stripe's: no or a wrong signature, stale, or not JSON."""


class RetryLater(Exception):
    """An event Serva cannot apply yet (a refund of a payment whose credit has not arrived):
    answered with a status that makes Stripe send it again later."""


def minor_unit(currency: str) -> int:
    """Micro-units in one of the currency's smallest units (10_000 for cents)."""
    code = currency.upper()
    decimals = 0 if code in ZERO_DECIMAL else 3 if code in THREE_DECIMAL else 2
    return MICRO // 10 ** decimals


class StripeCheckout(Gateway):
    name = "stripe"
    label = "Card (Stripe Checkout)"

    def __init__(self, config):
        self.secret_key = config["STRIPE_SECRET_KEY"]
        self.webhook_secret = config["STRIPE_WEBHOOK_SECRET"]
        self.currency = config["CURRENCY"]

    def __repr__(self):  # never the keys
        return f"StripeCheckout(currency={self.currency!r})"

    def check_amount(self, amount):
        unit = minor_unit(self.currency)
        if amount % unit:
            decimals = len(str(MICRO // unit)) - 1
            return f"Card payments in {self.currency} take at most {decimals} decimals."
        return None

    def client(self):
        """A client for one request: the secret key per client (not the package's global),
        the API base the package is configured with, and bounded timeouts."""
        stripe = stripe_package()
        return stripe.StripeClient(
            self.secret_key, base_addresses={"api": stripe.api_base},
            http_client=stripe.RequestsClient(timeout=(CONNECT_TIMEOUT, READ_TIMEOUT)),
            max_network_retries=NETWORK_RETRIES)

    def start(self, payment, return_url, email):
        """Create the Checkout Session. Its Idempotency-Key is the payment's, so a retry after
        a lost answer gets the same session rather than a second one."""
        ids = {"serva_payment": str(payment.id), "serva_account": str(payment.account_id)}
        try:
            session = self._create_session(payment, return_url, email, ids)
        except stripe_package().StripeError as error:
            raise GatewayUnavailable(error.__class__.__name__) from error
        return Started(gateway_id=session.id, redirect_url=session.url)

    def _create_session(self, payment, return_url, email, ids):
        return self.client().v1.checkout.sessions.create(params={
            "mode": "payment",
            "line_items": [{"quantity": 1, "price_data": {
                "currency": self.currency.lower(),
                "unit_amount": payment.amount // minor_unit(self.currency),
                "product_data": {"name": f"Balance top-up {records.present_payment(payment.id)}"},
            }}],
            "client_reference_id": str(payment.id),
            "customer_email": email,
            "metadata": ids,
            "payment_intent_data": {"metadata": ids},
            "success_url": return_url,
            "cancel_url": return_url,
        }, options={"idempotency_key": f"serva-payment-{payment.id}"})

    def verify(self, payload: bytes, signature: str | None):
        """The event, if Stripe signed this very body recently (WebhookRefused otherwise)."""
        stripe = stripe_package()
        try:
            return stripe.Webhook.construct_event(payload, signature, self.webhook_secret)
        except stripe.SignatureVerificationError as error:
            raise WebhookRefused(f"signature not verified: {error.user_message or error}") from None
        except ValueError:
            raise WebhookRefused("the body is not a JSON event") from None


def handle(event) -> str:
    """Apply one verified event in one write transaction and record it; returns what it did.
    A replayed event id changes nothing. RetryLater rolls back and asks Stripe to resend."""
    handler = HANDLERS.get(event.type)
    if handler is None:
        return f"ignored: Serva does not act on {event.type}"
    obj = event.data.object.to_dict()
    with db.write() as conn:
        if records.seen_event(conn, "stripe", event.id):
            return "replay of an event already handled"
        payment_id, outcome = handler(conn, obj, event.type)
        records.record_event(conn, "stripe", event.id, event.type, payment_id, outcome)
    return outcome


def _payment_of_session(conn, session):
    payment_id = records.parse_payment((session.get("metadata") or {}).get("serva_payment", ""))
    row = records.get(conn, payment_id) if payment_id else None
    if row is None or row.gateway != "stripe":
        return None
    return row


def _mismatch(row, session) -> str | None:
    """Why a paid session is not the one Serva created for this payment, or None."""
    expected_minor = row.amount // minor_unit(row.currency)
    if str((session.get("metadata") or {}).get("serva_account")) != str(row.account_id):
        return "the session's account is not the payment's"
    if row.gateway_id is not None and session.get("id") != row.gateway_id:
        return f"the session {session.get('id')} is not the payment's {row.gateway_id}"
    if str(session.get("currency", "")).upper() != row.currency.upper():
        return f"currency {session.get('currency')} instead of {row.currency.lower()}"
    if session.get("amount_total") != expected_minor:
        return f"amount {session.get('amount_total')} instead of {expected_minor} (minor units)"
    return None


def _session_paid(conn, session, event_type):
    row = _payment_of_session(conn, session)
    if row is None:
        log.warning("Stripe %s for session %s names no Serva payment; ignored", event_type,
                    session.get("id"))
        return None, "ignored: no Serva payment in the session's metadata"
    if event_type == "checkout.session.completed" and session.get("payment_status") != "paid":
        return row.id, f"waiting: payment_status {session.get('payment_status')}"
    if row.flagged_reason:
        return row.id, f"not credited: flagged for the operator ({row.flagged_reason})"
    problem = _mismatch(row, session)
    if problem:
        if not records.flag(conn, row.id, problem):  # decided already: it stays as it is
            return row.id, f"not credited again: the payment is {row.status} ({problem})"
        log.warning("payment %s flagged, nothing credited: %s",
                    records.present_payment(row.id), problem)
        return row.id, f"flagged: {problem}"
    records.lock_account(conn, row.account_id)
    if row.gateway_id is None:  # the session's creation answer was lost; this is its id
        records.started(conn, row.id, session["id"])
    if records.credit(conn, row.id, charge=session.get("payment_intent")):
        return row.id, "credited"
    return row.id, f"not credited again: the payment is {records.get(conn, row.id).status}"


def _session_closed(conn, session, event_type):
    row = _payment_of_session(conn, session)
    if row is None:
        return None, "ignored: no Serva payment in the session's metadata"
    status = "expired" if event_type == "checkout.session.expired" else "failed"
    if records.close(conn, row.id, status):
        return row.id, status
    return row.id, f"ignored: the payment is {row.status}"


def _taken_back(conn, obj, event_type):
    """charge.refunded (a charge) or charge.dispute.created (a dispute): take back what the
    refund covers of the payment (all of it for a dispute), once."""
    intent = obj.get("payment_intent")
    row = records.by_charge(conn, "stripe", intent) if intent else None
    if row is None or row.status in records.OPEN_STATUSES:
        # Unknown, or its credit has not arrived yet (events come in any order): never guess.
        log.warning("Stripe %s for payment intent %s: no credited Serva payment yet; asked "
                    "Stripe to send it again", event_type, intent)
        raise RetryLater(f"no credited payment for payment intent {intent} yet")
    if row.status not in ("paid", "refunded", "disputed"):
        return row.id, f"ignored: the payment is {row.status}"
    credited = row.amount + row.bonus
    if event_type == "charge.dispute.created":
        total, status, why = credited, "disputed", "dispute"
    else:
        charged = obj.get("amount") or 0
        refunded = min(obj.get("amount_refunded") or 0, charged)
        total = div_half_up(credited * refunded, charged) if charged else 0
        status = "disputed" if row.status == "disputed" else "refunded"
        why = "refund"
    records.lock_account(conn, row.account_id)
    row = records.get(conn, row.id)  # as it is under the lock
    taken = records.reverse(conn, row, total, status, why)
    return row.id, f"{why}: reversed {format_amount(taken)}" if taken else f"{why}: nothing new"


HANDLERS = {
    "checkout.session.completed": _session_paid,
    "checkout.session.async_payment_succeeded": _session_paid,
    "checkout.session.async_payment_failed": _session_closed,
    "checkout.session.expired": _session_closed,
    "charge.refunded": _taken_back,
    "charge.dispute.created": _taken_back,
}
