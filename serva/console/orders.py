"""Orders: the filtered list (keyset pages, CSV of the filtered rows), one order's page (with
its status history and its hand-over attempts, newest first), and what an operator does to an
order — set its status, settle a hand-over of unknown outcome, answer a cancel request —
through the CLI's own domain functions."""
import csv
import io

from flask import Response, abort, render_template, request, url_for

from .. import accounts, db, fulfilment, order_lookup, orders as orders_repo, providers
from ..ids import parse_order, present_order
from ..money import format_amount
from .base import actor, apply, back_to, bp, form, moment, needs, whole
from .formatting import utc_time

PAGE = 50
CSV_LIMIT = 10_000
FILTERS = ("status", "account", "service", "provider", "from", "to", "request_id", "link")


class FilterError(ValueError):
    pass


def _filters(args) -> dict:
    """The list's filters from the query string, as list_orders' arguments."""
    chosen = {}
    with db.read() as conn:
        if args.get("status"):
            if args["status"] not in orders_repo.ORDER_STATUSES:
                raise FilterError(f"status must be one of: {', '.join(orders_repo.ORDER_STATUSES)}")
            chosen["status"] = args["status"]
        if args.get("account"):
            row = accounts.get_by_email(conn, args["account"])
            if row is None:
                raise FilterError(f"no account with email {accounts.normalize_email(args['account'])}")
            chosen["account_id"] = row.id
        if args.get("provider"):
            row = providers.get(conn, args["provider"].strip())
            if row is None:
                raise FilterError(f"no provider named {args['provider'].strip()}")
            chosen["provider_id"] = row.id
    if args.get("service"):
        chosen["service_id"] = whole(args["service"], "service")
    for name, key in (("from", "created_from"), ("to", "created_to")):
        if args.get(name):
            chosen[key] = moment(args[name])
    if args.get("request_id"):
        chosen["request_id"] = args["request_id"].strip()
    if args.get("link"):
        chosen["link_contains"] = args["link"].strip()
    return chosen


@bp.route("/orders")
@needs("read")
def orders():
    error, rows = None, []
    try:
        chosen = _filters(request.args)
        before = whole(request.args.get("before"), "before")
    except ValueError as problem:
        error, chosen, before = str(problem), None, None
    if chosen is not None:
        with db.read() as conn:
            rows = order_lookup.list_orders(conn, limit=PAGE + 1, before_id=before, **chosen)
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    kept = {k: request.args[k] for k in FILTERS if request.args.get(k)}
    next_page = url_for("console.orders", before=rows[-1].id, **kept) if more else None
    return render_template("console/orders.html", rows=rows, error=error, args=kept,
                           statuses=orders_repo.ORDER_STATUSES, next_page=next_page,
                           csv_url=url_for("console.orders_csv", **kept)), 400 if error else 200


@bp.route("/orders.csv")
@needs("read")
def orders_csv():
    try:
        chosen = _filters(request.args)
    except ValueError as problem:
        return Response(f"error: {problem}\n", 400, mimetype="text/plain")
    with db.read() as conn:
        rows = order_lookup.list_orders(conn, limit=CSV_LIMIT, **chosen)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["order", "status", "account", "service", "quantity", "charge", "refunded",
                     "net", "target", "created", "request_id"])
    for row in rows:
        writer.writerow([present_order(row.id), row.status, row.email, row.service_id,
                         row.quantity, format_amount(row.charge), format_amount(row.refunded),
                         format_amount(row.charge - row.refunded), row.target,
                         utc_time(row.created_at), row.request_id or ""])
    return Response(out.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": "attachment; filename=orders.csv"})


def _order_id(text):
    order_id = parse_order(text)
    if order_id is None:
        abort(404)
    return order_id


@bp.route("/orders/<order>")
@needs("read")
def order(order):
    order_id = _order_id(order)
    with db.read() as conn:
        details = order_lookup.order_details(conn, order_id)
        provider = (providers.get_by_id(conn, details.order.provider_id)
                    if details and details.order.provider_id else None)
        history = orders_repo.history_of(conn, order_id)
        tried = fulfilment.attempts_of(conn, order_id)
    if details is None:
        abort(404)
    message = details.handover.last_message or ""
    if provider is not None:  # masked when stored too; the key may have changed since
        message = providers.redact(message, provider.api_key)
        tried = [{**row._mapping, "reply": providers.redact(row.reply or "", provider.api_key)}
                 for row in tried]
    return render_template("console/order.html", d=details, row=details.order,
                           handover=details.handover, last_message=message,
                           statuses=orders_repo.ORDER_STATUSES, history=history, attempts=tried,
                           shown=orders_repo.history.SHOWN)


def _back(order_id):
    return url_for("console.order", order=present_order(order_id))


@bp.route("/orders/<order>/status", methods=["POST"])
@needs("order.status")
def order_status(order):
    order_id = _order_id(order)

    def work(conn):
        status = form("status")
        before = orders_repo.status_fields(conn, order_id)
        refund = orders_repo.set_status(
            conn, order_id, status, whole(form("start_count"), "start count"),
            whole(form("remains"), "remains"), whole(form("runs_done"), "runs done"), by=actor())
        after = {**orders_repo.status_fields(conn, order_id), "refund": refund}
        return ("order.status", present_order(order_id), before, after,
                f"{present_order(order_id)}: {status}"
                + (f", refunded {format_amount(refund)}" if refund else ""))
    return apply(work, _back(order_id))


@bp.route("/orders/<order>/resolve", methods=["POST"])
@needs("order.resolve")
def order_resolve(order):
    order_id = _order_id(order)

    def work(conn):
        how = form("how")
        if how not in ("placed", "resend", "cancel"):
            raise ValueError("choose placed (with the provider's order id), resend or cancel")
        provider_order = form("provider_order") if how == "placed" else None
        done = fulfilment.resolve(conn, order_id, provider_order=provider_order,
                                  resend=how == "resend", cancel=how == "cancel", by=actor())
        return ("order.resolve", present_order(order_id), None,
                {"provider_order": provider_order, "resend": how == "resend",
                 "cancel": how == "cancel", "outcome": done}, f"{present_order(order_id)}: {done}")
    return apply(work, _back(order_id))


@bp.route("/orders/<order>/cancel-request", methods=["POST"])
@needs("order.cancel")
def order_cancel_answer(order):
    """Yes: Canceled with its refund (as `order set-status … Canceled`); no: the request goes."""
    order_id = _order_id(order)

    def work(conn):
        if form("answer") == "accept":
            before = orders_repo.status_fields(conn, order_id)
            refund = orders_repo.set_status(conn, order_id, "Canceled", by=actor())
            return ("order.cancel_accept", present_order(order_id), before,
                    {**orders_repo.status_fields(conn, order_id), "refund": refund},
                    f"{present_order(order_id)}: Canceled, refunded {format_amount(refund)}")
        orders_repo.refuse_cancel(conn, order_id)
        return ("order.cancel_refuse", present_order(order_id), None, None,
                f"{present_order(order_id)}: the cancel request was refused")
    return apply(work, back_to(_back(order_id)))
