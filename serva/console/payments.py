"""Payments: the filtered list (keyset pages, each payment's gateway event ids, flagged
mismatches), one payment's page with its events, and the owner's approve / reject of a
manual or flagged payment through the same domain functions as `serva payment approve|reject`."""
from flask import abort, render_template, request, url_for

from .. import accounts, db, payments as payments_repo
from ..money import format_amount
from ..schema import PAYMENT_GATEWAYS, PAYMENT_STATUSES
from .base import apply, bp, form, needs, whole

PAGE = 50
FILTERS = ("status", "gateway", "account", "flagged")
# "open" is every status still waiting for a decision (the overview's counts link to it).
STATUS_CHOICES = ("open",) + PAYMENT_STATUSES
FLAGGED_CHOICES = {"yes": True, "no": False}


def _filters(args) -> dict:
    """The list's filters from the query string, as list_payments' arguments."""
    chosen = {}
    status = args.get("status")
    if status:
        if status not in STATUS_CHOICES:
            raise ValueError(f"status must be one of: {', '.join(STATUS_CHOICES)}")
        chosen["status"] = payments_repo.OPEN_STATUSES if status == "open" else status
    if args.get("gateway"):
        if args["gateway"] not in PAYMENT_GATEWAYS:
            raise ValueError(f"gateway must be one of: {', '.join(PAYMENT_GATEWAYS)}")
        chosen["gateway"] = args["gateway"]
    if args.get("flagged"):
        if args["flagged"] not in FLAGGED_CHOICES:
            raise ValueError("flagged must be yes or no")
        chosen["flagged"] = FLAGGED_CHOICES[args["flagged"]]
    if args.get("account"):
        with db.read() as conn:
            chosen["account_id"] = accounts.require(conn, args["account"]).id
    return chosen


@bp.route("/payments")
@needs("read")
def payments():
    error, rows, events = None, [], {}
    try:
        chosen = _filters(request.args)
        before = whole(request.args.get("before"), "before")
    except ValueError as problem:
        error, chosen, before = str(problem), None, None
    if chosen is not None:
        with db.read() as conn:
            rows = payments_repo.list_payments(conn, limit=PAGE + 1, before_id=before, **chosen)
            events = payments_repo.event_ids(conn, [row.id for row in rows[:PAGE]])
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    kept = {k: request.args[k] for k in FILTERS if request.args.get(k)}
    next_page = url_for("console.payments", before=rows[-1].id, **kept) if more else None
    return render_template("console/payments.html", rows=rows, events=events, error=error,
                           args=kept, statuses=STATUS_CHOICES, gateways=PAYMENT_GATEWAYS,
                           next_page=next_page), 400 if error else 200


def _payment_id(text):
    payment_id = payments_repo.parse_payment(text)
    if payment_id is None:
        abort(404)
    return payment_id


@bp.route("/payments/<payment>")
@needs("read")
def payment(payment):
    with db.read() as conn:
        found = payments_repo.payment_detail(conn, _payment_id(payment))
    if found is None:
        abort(404)
    row, events = found
    return render_template("console/payment.html", row=row, events=events,
                           is_open=row.status in payments_repo.OPEN_STATUSES)


def _decide(payment_id, action, change, done):
    """Approve or reject; the payment's fields before and after go to the activity entry."""
    label = payments_repo.present_payment(payment_id)

    def work(conn):
        before = payments_repo.decision_fields(conn, payment_id)
        change(conn, payment_id)
        after = payments_repo.decision_fields(conn, payment_id)
        return (action, label, before, after,
                f"{label}: {done} ({format_amount(after['amount'])} {after['currency']})")
    return apply(work, url_for("console.payment", payment=label))


@bp.route("/payments/<payment>/approve", methods=["POST"])
@needs("payment.decide")
def payment_approve(payment):
    return _decide(_payment_id(payment), "payment.approve",
                   lambda conn, i: payments_repo.approve(conn, i, form("note")),
                   "approved, credited")


@bp.route("/payments/<payment>/reject", methods=["POST"])
@needs("payment.decide")
def payment_reject(payment):
    return _decide(_payment_id(payment), "payment.reject",
                   lambda conn, i: payments_repo.reject(conn, i, form("note")), "rejected")
