"""The partner's orders: filters (status, service, dates, link contains), newest first in
pages cut by id (keyset: a page is as fast deep in the list as at its start, and an order
placed meanwhile does not shift the next page), and the same list as CSV."""
from flask import current_app, render_template, request
from flask_login import current_user, login_required
from sqlalchemy import func, select

from .. import db
from ..ids import format_order_id, numeric_ids
from ..money import format_amount
from ..schema import ORDER_STATUSES, orders, refills, services
from .blueprint import (CSV_CHUNK, PAGE_SIZE, bp, csv_response, cursor, day_start, iso_time)

DAY = 86_400
MAX_LINK_FILTER = 200

_REFILL_COUNT = (select(func.count(refills.c.id)).where(refills.c.order_id == orders.c.id)
                 .scalar_subquery().label("refill_count"))
_LIST = (select(orders.c.id, orders.c.created_at, orders.c.service_id, services.c.name,
                orders.c.target, orders.c.quantity, orders.c.charge, orders.c.refunded,
                orders.c.status, orders.c.start_count, orders.c.remains, _REFILL_COUNT)
         .join(services, services.c.id == orders.c.service_id))
CSV_HEADER = ("order", "created", "service", "service_name", "link", "quantity", "charge",
              "refunded", "status", "start_count", "remains", "refills")


def filters(args):
    """(the filters as given, for the form; the WHERE conditions; an error message)."""
    shown = {name: args.get(name, "").strip() for name in ("status", "service", "from", "to", "link")}
    conditions, errors = [], []
    if shown["status"]:
        if shown["status"] in ORDER_STATUSES:
            conditions.append(orders.c.status == shown["status"])
        else:
            errors.append("Choose a status from the list.")
    if shown["service"]:
        if shown["service"].isdigit() and len(shown["service"]) < 10:
            conditions.append(orders.c.service_id == int(shown["service"]))
        else:
            errors.append("A service is its number, such as 1234.")
    for name, compare in (("from", lambda s: orders.c.created_at >= s),
                          ("to", lambda s: orders.c.created_at < s + DAY)):
        try:
            stamp = day_start(shown[name])
        except ValueError:
            errors.append(f"“{name.title()}” is a date such as 2026-12-31.")
            continue
        if stamp is not None:
            conditions.append(compare(stamp))
    if shown["link"]:
        conditions.append(orders.c.target.contains(shown["link"][:MAX_LINK_FILTER], autoescape=True))
    return shown, conditions, " ".join(errors) or None


def rows(conn, account_id, conditions, before=None, limit=PAGE_SIZE):
    query = _LIST.where(orders.c.account_id == account_id, *conditions)
    if before is not None:
        query = query.where(orders.c.id < before)
    return conn.execute(query.order_by(orders.c.id.desc()).limit(limit)).all()


def entry(row, numeric) -> dict:
    return {"id": row.id, "order": format_order_id(row.id, numeric), "created": row.created_at,
            "service": row.service_id, "service_name": row.name, "link": row.target,
            "quantity": row.quantity, "charge": format_amount(row.charge),
            "refunded": format_amount(row.refunded), "status": row.status,
            "start_count": row.start_count, "remains": row.remains, "refills": row.refill_count}


@bp.route("/orders/")
@login_required
def orders_page():
    shown, conditions, error = filters(request.args)
    before = cursor(request.args.get("before"))
    numeric = numeric_ids(current_user.row)
    found = []
    if error is None:
        with db.read() as conn:
            found = rows(conn, current_user.id, conditions, before, PAGE_SIZE + 1)
    more = len(found) > PAGE_SIZE
    found = found[:PAGE_SIZE]
    query = {name: value for name, value in shown.items() if value}
    return render_template("orders.html", orders=[entry(row, numeric) for row in found],
                           shown=shown, error=error, statuses=ORDER_STATUSES, query=query,
                           next_before=found[-1].id if more else None, paged=before is not None,
                           currency=current_app.config["CURRENCY"])


@bp.route("/orders.csv")
@login_required
def orders_csv():
    """Every order that matches the filters (all pages), read a chunk at a time."""
    _, conditions, error = filters(request.args)
    if error is not None:
        conditions = [orders.c.id.is_(None)]  # nothing matches what cannot be read
    account_id, numeric = current_user.id, numeric_ids(current_user.row)

    def chunks():
        before = None
        while True:
            with db.read() as conn:
                found = rows(conn, account_id, conditions, before, CSV_CHUNK)
            if not found:
                return
            yield [_csv_row(entry(row, numeric)) for row in found]
            before = found[-1].id
    return csv_response("orders.csv", CSV_HEADER, chunks())


def _csv_row(item):
    return [item["order"], iso_time(item["created"]), item["service"], item["service_name"],
            item["link"], item["quantity"], item["charge"], item["refunded"], item["status"],
            item["start_count"], item["remains"], item["refills"]]

