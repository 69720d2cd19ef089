"""What waits for an operator — refill requests, cancel requests — and the coupons and the
activity log, each change through the CLI's domain function with its activity entry."""
from flask import render_template, request, url_for

from .. import activity, coupons, db, order_lookup, refills
from ..ids import parse_refill, present_refill
from ..money import AmountError, parse_amount, parse_percent
from .base import apply, bp, form, moment, needs, whole


@bp.route("/refills")
@needs("read")
def refills_list():
    status = request.args.get("status") or None
    if status not in (None, *refills.REFILL_STATUSES):
        status = None
    with db.read() as conn:
        rows = refills.list_refills(conn, status, 200)
    return render_template("console/refills.html", rows=rows, status=status,
                           statuses=refills.REFILL_STATUSES)


@bp.route("/refills/<refill>", methods=["POST"])
@needs("refill.answer")
def refill_answer(refill):
    refill_id = parse_refill(refill)

    def work(conn):
        if refill_id is None:
            raise refills.RefillError(f"not a refill id: {refill}")
        refills.set_refill_status(conn, refill_id, form("status"))
        return ("refill.status", present_refill(refill_id), None, {"status": form("status")},
                f"{present_refill(refill_id)}: {form('status')}")
    return apply(work, url_for("console.refills_list"))


@bp.route("/cancels")
@needs("read")
def cancels_list():
    with db.read() as conn:
        rows = order_lookup.list_orders(conn, cancel_requested=True, limit=200)
    return render_template("console/cancels.html", rows=rows)


@bp.route("/coupons")
@needs("read")
def coupons_list():
    with db.read() as conn:
        rows = coupons.list_all(conn)
    return render_template("console/coupons.html", rows=rows)


@bp.route("/coupons", methods=["POST"])
@needs("coupon.edit")
def coupon_create():
    def work(conn):
        code = coupons.normalize_code(form("code"))
        try:
            if form("kind") == "percent":
                kind, value = "percent", parse_percent(form("value"))
            else:
                kind, value = "fixed", parse_amount(form("value"))
        except AmountError as error:
            raise ValueError(str(error)) from None
        options = {"max_uses": whole(form("max_uses"), "max uses", 1),
                   "expires_at": moment(form("expires")) if form("expires") else None}
        coupons.create(conn, code, kind, value, **options)
        return "coupon.create", code, None, {"kind": kind, "value": value, **options}, \
            f"coupon {code} created"
    return apply(work, url_for("console.coupons_list"))


@bp.route("/coupons/<code>/disable", methods=["POST"])
@needs("coupon.edit")
def coupon_disable(code):
    def work(conn):
        if not coupons.disable(conn, code):
            raise ValueError(f"no coupon {code}")
        return ("coupon.disable", coupons.normalize_code(code), None, None,
                f"coupon {coupons.normalize_code(code)} disabled")
    return apply(work, url_for("console.coupons_list"))


@bp.route("/activity")
@needs("read")
def activity_list():
    q = request.args.get("q", "")
    before = request.args.get("before", "")
    with db.read() as conn:
        rows = activity.search(conn, q, int(before) if before.isdigit() else None,
                               activity.PAGE + 1)
    more = len(rows) > activity.PAGE
    rows = rows[:activity.PAGE]
    next_page = url_for("console.activity_list", q=q, before=rows[-1].id) if more else None
    return render_template("console/activity.html", rows=rows, q=q, next_page=next_page)
