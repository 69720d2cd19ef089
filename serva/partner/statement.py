"""The partner's statement: every ledger row (charge, refund, top-up, adjustment) with the
balance after it and the id of the request that caused it, newest first, and as CSV.

The running balance is the sum of the account's ledger up to and including each row (a
window sum in the database), so the newest row's running balance is the balance itself —
the statement reconciles to `balance` to the micro-unit because balance == sum(ledger) is
what ledger.post keeps true."""
from flask import current_app, render_template, request
from flask_login import current_user, login_required
from sqlalchemy import func, select

from .. import accounts, db
from ..ids import format_order_id, numeric_ids
from ..money import format_amount
from ..schema import ledger
from .blueprint import CSV_CHUNK, PAGE_SIZE, bp, csv_response, cursor, iso_time

CSV_HEADER = ("id", "time", "kind", "amount", "balance_after", "order", "note", "request_id")


def _running(account_id):
    return (select(ledger.c.id, ledger.c.created_at, ledger.c.kind, ledger.c.amount,
                   ledger.c.order_id, ledger.c.note, ledger.c.request_id,
                   func.sum(ledger.c.amount).over(order_by=ledger.c.id).label("running"))
            .where(ledger.c.account_id == account_id).subquery())


def rows(conn, account_id, before=None, limit=PAGE_SIZE):
    """The account's ledger rows newest first, each with the balance after it."""
    running = _running(account_id)
    query = select(running)
    if before is not None:
        query = query.where(running.c.id < before)
    return conn.execute(query.order_by(running.c.id.desc()).limit(limit)).all()


def entry(row, numeric) -> dict:
    return {"id": row.id, "time": row.created_at, "kind": row.kind,
            "amount": format_amount(row.amount), "credit": row.amount > 0,
            "balance": format_amount(row.running),
            "order": None if row.order_id is None else format_order_id(row.order_id, numeric),
            "note": row.note, "request_id": row.request_id}


@bp.route("/statement/")
@login_required
def statement_page():
    before = cursor(request.args.get("before"))
    numeric = numeric_ids(current_user.row)
    with db.read() as conn:
        found = rows(conn, current_user.id, before, PAGE_SIZE + 1)
        balance = accounts.get_by_id(conn, current_user.id).balance
    more = len(found) > PAGE_SIZE
    found = found[:PAGE_SIZE]
    return render_template("statement.html", rows=[entry(row, numeric) for row in found],
                           balance=format_amount(balance), currency=current_app.config["CURRENCY"],
                           next_before=found[-1].id if more else None, paged=before is not None)


@bp.route("/statement.csv")
@login_required
def statement_csv():
    account_id, numeric = current_user.id, numeric_ids(current_user.row)

    def chunks():
        before = None
        while True:
            with db.read() as conn:
                found = rows(conn, account_id, before, CSV_CHUNK)
            if not found:
                return
            yield [_csv_row(entry(row, numeric)) for row in found]
            before = found[-1].id
    return csv_response("statement.csv", CSV_HEADER, chunks())


def _csv_row(item):
    return [item["id"], iso_time(item["time"]), item["kind"], item["amount"], item["balance"],
            item["order"], item["note"], item["request_id"]]
