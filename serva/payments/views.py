"""The partner's "Add funds" pages under /profile/funds/ and Stripe's webhook endpoint.

The funds pages are the dashboard's kind (signed in, a CSRF token on every form, private
headers: the dashboard's own hooks run for them). The webhook has no cookie and no CSRF
token: Stripe signs it, and that signature over the raw body is what it is checked by. The
page a partner returns to from Stripe only shows the payment's state: a credit comes from
the webhook alone."""
import logging

from flask import (Blueprint, abort, current_app, flash, redirect, render_template, request,
                   url_for)
from flask_login import current_user, login_required
from flask_wtf.csrf import CSRFError

from .. import dashboard, db
from ..api import json_response
from ..money import AmountError, format_amount, parse_amount
from ..request_ids import request_id
from . import holds, queries, records
from .choices import offered
from .gateways import amount_problem, clean_reference
from .stripe_checkout import GatewayUnavailable, RetryLater, WebhookRefused, handle

log = logging.getLogger(__name__)

bp = Blueprint("funds", __name__, url_prefix="/profile/funds")
webhook_bp = Blueprint("stripe_webhook", __name__)
bp.before_request(dashboard.check_csrf)
bp.before_request(dashboard.sign_out_banned)
bp.after_request(dashboard.private_pages)
bp.register_error_handler(CSRFError, dashboard.csrf_failed)

STATUS_TEXT = {
    "created": "Not started", "pending": "Waiting for confirmation", "paid": "Credited",
    "rejected": "Rejected", "expired": "Expired", "failed": "Failed", "refunded": "Refunded",
    "disputed": "Disputed",
}
PAGE_SIZE = 50


def status_text(row) -> str:
    if row.flagged_reason and row.status in records.OPEN_STATUSES:
        return "Under review"
    return STATUS_TEXT[row.status]


def _bounds():
    config = current_app.config
    return config["TOPUP_MINIMUM"], config["TOPUP_MAXIMUM"], config["CURRENCY"]


@bp.route("/")
@login_required
def index():
    with db.read() as conn:
        account = current_user.row
        rows = queries.list_payments(conn, account_id=account.id, limit=PAGE_SIZE)
        owed = holds.owed_by(conn, account.id)
    minimum, maximum, currency = _bounds()
    config = current_app.config
    return render_template(
        "funds.html", gateways=offered(config), payments=rows, currency=currency,
        balance=format_amount(account.balance), hold_reason=account.hold_reason,
        owed=format_amount(owed), minimum=format_amount(minimum),
        maximum=format_amount(maximum), bonus_bp=config["DEPOSIT_BONUS_BP"],
        bonus_from=format_amount(config["DEPOSIT_BONUS_FROM"]), status_text=status_text,
        present=records.present_payment, format_amount=format_amount)


def _refuse(message: str):
    flash(message, "error")
    return redirect(url_for(".index"))


@bp.route("/", methods=["POST"])
@login_required
def add_funds():
    """Make the payment row (amount, bonus and currency fixed here), then hand the partner to
    the gateway: Stripe's checkout page, or the payment's page to wait for the operator."""
    gateway = offered(current_app.config).get(request.form.get("gateway", ""))
    if gateway is None:
        return _refuse("Choose one of the payment methods offered.")
    try:
        amount = parse_amount(request.form.get("amount", ""))
    except AmountError:
        return _refuse("Enter the amount as a number such as 25 or 25.50.")
    minimum, maximum, currency = _bounds()
    problem = amount_problem(amount, minimum, maximum, currency) or gateway.check_amount(amount)
    if problem:
        return _refuse(problem)
    reference = None
    if gateway.needs_reference:
        reference = clean_reference(request.form.get("reference"))
        if reference is None:
            return _refuse("Enter the reference of your transfer (at most 120 characters).")
    config = current_app.config
    bonus = records.deposit_bonus(amount, config["DEPOSIT_BONUS_BP"], config["DEPOSIT_BONUS_FROM"])
    try:
        with db.write() as conn:
            payment_id = records.create(
                conn, current_user.id, gateway.name, amount, currency, bonus,
                gateway_id=gateway.claim(current_user.id, reference), reference=reference,
                status="pending" if gateway.needs_reference else "created")
            payment = records.get(conn, payment_id)
    except records.PaymentError as error:
        return _refuse(f"{error}.")
    if gateway.needs_reference:
        flash("Thank you: the operator credits your balance once the payment has arrived.", "info")
        return redirect(url_for(".show", payment=records.present_payment(payment_id)))
    return_url = url_for(".show", payment=records.present_payment(payment_id), _external=True)
    try:
        started = gateway.start(payment, return_url, current_user.row.email)
    except GatewayUnavailable as error:
        # Nothing was taken: the partner never saw a checkout page. The row stays `created`,
        # so a session Stripe did make (its answer lost) is still credited by its webhook.
        log.warning("Stripe Checkout Session for %s not created: %s rid=%s",
                    records.present_payment(payment_id), error, request_id())
        return _refuse("The card payment page could not be opened just now. Nothing was "
                       "charged; please try again in a minute.")
    with db.write() as conn:
        records.started(conn, payment_id, started.gateway_id)
    # A page that moves on by itself (HTTP Refresh), not a redirect: browsers hold a form's
    # redirects to the page's CSP form-action ('self'), and Stripe's page is elsewhere.
    response = current_app.make_response(render_template(
        "funds_redirect.html", url=started.redirect_url, label=records.present_payment(payment_id)))
    response.headers["Refresh"] = f"0; url={started.redirect_url}"
    return response


@bp.route("/<payment>")
@login_required
def show(payment):
    """One payment's state: where the partner lands back from Stripe. While it waits for the
    webhook the page refreshes itself (an HTTP Refresh header: no script needed)."""
    payment_id = records.parse_payment(payment)
    with db.read() as conn:
        found = queries.payment_detail(conn, payment_id) if payment_id else None
    if found is None or found[0].account_id != current_user.id:
        abort(404)
    row = found[0]
    response = current_app.make_response(render_template(
        "funds_payment.html", payment=row, label=records.present_payment(row.id),
        state=status_text(row), currency=row.currency, format_amount=format_amount,
        gateways=offered(current_app.config)))
    if row.status == "pending" and row.gateway == "stripe" and not row.flagged_reason:
        response.headers["Refresh"] = "3"
    return response


@webhook_bp.route("/payments/stripe/webhook", methods=["POST"])
def stripe_webhook():
    """Stripe's events: verified on the raw body, then applied once. 400 for anything not
    signed by Stripe (logged), 409 for an event to send again later, else 200."""
    gateway = offered(current_app.config).get("stripe")
    if gateway is None:
        abort(404)
    try:
        event = gateway.verify(request.get_data(cache=False),
                               request.headers.get("Stripe-Signature"))
    except WebhookRefused as error:
        log.warning("Stripe webhook refused from %s: %s rid=%s", request.remote_addr, error,
                    request_id())
        return json_response({"error": "signature not verified", "code": "bad_signature"}, 400)
    try:
        outcome = handle(event)
    except RetryLater as error:
        return json_response({"error": str(error), "code": "retry_later"}, 409)
    log.info("Stripe %s %s: %s", event.type, event.id, outcome)
    return json_response({"received": True, "outcome": outcome})


def init_app(app):
    app.register_blueprint(bp)
    app.register_blueprint(webhook_bp)
