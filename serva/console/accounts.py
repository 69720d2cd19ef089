"""Accounts: search, create, and every operator change to one account — API access, ban,
credit and debit (one ledger row with its note), discount, custom rate, id format, sign out
everywhere, revoke the key — each through the same domain function as its CLI command."""
from flask import abort, render_template, request, url_for

from .. import accounts, db, keys, order_lookup, sessions
from ..money import AmountError, format_amount, parse_amount, parse_percent
from ..schema import ID_FORMATS
from .base import apply, bp, form, needs, whole

PAGE = 50
STATE = ("api_access", "banned", "ban_reason", "discount_bp", "id_format")


@bp.route("/accounts")
@needs("read")
def accounts_list():
    q = request.args.get("q", "")
    after = whole(request.args.get("after"), "after") if request.args.get("after", "").isdigit() else None
    with db.read() as conn:
        rows = accounts.search(conn, q, after, PAGE + 1)
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    next_page = url_for("console.accounts_list", q=q, after=rows[-1].id) if more else None
    return render_template("console/accounts.html", rows=rows, q=q, next_page=next_page)


def _account(account_id):
    with db.read() as conn:
        row = accounts.get_by_id(conn, account_id)
    if row is None:
        abort(404)
    return row


@bp.route("/accounts/<int:account_id>")
@needs("read")
def account(account_id):
    row = _account(account_id)
    with db.read() as conn:
        key = keys.active_key(conn, account_id)
        rates = accounts.custom_rates(conn, account_id)
        recent = order_lookup.list_orders(conn, account_id=account_id, limit=20)
        ledger_rows = accounts.statement(conn, account_id)
    return render_template("console/account.html", row=row, key=key, rates=rates,
                           orders=recent, ledger=ledger_rows, id_formats=ID_FORMATS)


@bp.route("/accounts", methods=["POST"])
@needs("account.create")
def account_create():
    def work(conn):
        email = accounts.normalize_email(form("email"))
        accounts.create(conn, email, None, approved=form("approve") == "yes")
        return ("account.create", email, None, {"api_access": "approved" if form("approve") == "yes"
                                                else "none"}, f"created {email}")
    return apply(work, url_for("console.accounts_list", q=form("email")))


def _existing(conn, account_id):
    """The account row, or the refusal the page shows."""
    row = accounts.get_by_id(conn, account_id)
    if row is None:
        raise accounts.AccountError(f"no account with id {account_id}")
    return row


def _change(account_id, action, change, message):
    """A state change of one account, its before and after in the activity entry."""
    def work(conn):
        row = _existing(conn, account_id)
        change(conn, row)
        after = accounts.get_by_id(conn, account_id)
        return (action, row.email, {c: getattr(row, c) for c in STATE},
                {c: getattr(after, c) for c in STATE}, f"{row.email}: {message}")
    return apply(work, url_for("console.account", account_id=account_id))


@bp.route("/accounts/<int:account_id>/approve", methods=["POST"])
@needs("account.access")
def account_approve(account_id):
    return _change(account_id, "account.approve",
                   lambda c, row: accounts.set_api_access(c, row.id, "approved"), "API access approved")


@bp.route("/accounts/<int:account_id>/unapprove", methods=["POST"])
@needs("account.access")
def account_unapprove(account_id):
    return _change(account_id, "account.unapprove",
                   lambda c, row: accounts.set_api_access(c, row.id, "none"), "API access withdrawn")


@bp.route("/accounts/<int:account_id>/ban", methods=["POST"])
@needs("account.ban")
def account_ban(account_id):
    return _change(account_id, "account.ban",
                   lambda c, row: accounts.set_banned(c, row.id, True, form("reason")), "banned")


@bp.route("/accounts/<int:account_id>/unban", methods=["POST"])
@needs("account.ban")
def account_unban(account_id):
    return _change(account_id, "account.unban",
                   lambda c, row: accounts.set_banned(c, row.id, False), "unbanned")


def _discount(conn, row):
    try:
        bp_value = parse_percent(form("percent"))
    except AmountError as error:
        raise accounts.AccountError(str(error)) from None
    accounts.set_discount(conn, row.id, bp_value)


@bp.route("/accounts/<int:account_id>/discount", methods=["POST"])
@needs("account.pricing")
def account_discount(account_id):
    return _change(account_id, "account.discount", _discount, "discount set")


@bp.route("/accounts/<int:account_id>/id-format", methods=["POST"])
@needs("account.pricing")
def account_id_format(account_id):
    return _change(account_id, "account.id_format",
                   lambda c, row: accounts.set_id_format(c, row.id, form("id_format")),
                   f"id format {form('id_format')}")


def _move(account_id, sign):
    def work(conn):
        row = _existing(conn, account_id)
        amount = sign * accounts.parse_amount_to_move(form("amount"))
        balance = accounts.move_balance(conn, row, amount, form("note"))
        return ("account.credit" if sign > 0 else "account.debit", row.email,
                {"balance": row.balance}, {"balance": balance, "note": form("note")},
                f"{row.email}: balance {format_amount(balance)}")
    return apply(work, url_for("console.account", account_id=account_id))


@bp.route("/accounts/<int:account_id>/credit", methods=["POST"])
@needs("account.money")
def account_credit(account_id):
    return _move(account_id, 1)


@bp.route("/accounts/<int:account_id>/debit", methods=["POST"])
@needs("account.money")
def account_debit(account_id):
    return _move(account_id, -1)


@bp.route("/accounts/<int:account_id>/rate", methods=["POST"])
@needs("account.pricing")
def account_rate(account_id):
    def work(conn):
        row = _existing(conn, account_id)
        service_id = whole(form("service_id"), "service", 1)
        if service_id is None:
            raise accounts.AccountError("give the service id")
        rate = None
        if form("rate"):
            try:
                rate = parse_amount(form("rate"))
            except AmountError as error:
                raise accounts.AccountError(str(error)) from None
            if rate < 0:
                raise accounts.AccountError("a rate cannot be negative")
        accounts.set_custom_rate(conn, row.id, service_id, rate)
        return ("account.rate", row.email, None, {"service_id": service_id, "rate": rate},
                f"{row.email}: service {service_id} "
                + ("custom rate cleared" if rate is None else f"at {format_amount(rate)} per 1000"))
    return apply(work, url_for("console.account", account_id=account_id))


@bp.route("/accounts/<int:account_id>/sign-out", methods=["POST"])
@needs("account.sessions")
def account_sign_out(account_id):
    def work(conn):
        row = _existing(conn, account_id)
        ended = sessions.revoke_all(conn, row.id)
        return ("account.sign_out", row.email, None, {"sessions_ended": ended},
                f"{row.email}: {ended} session{'s' if ended != 1 else ''} signed out")
    return apply(work, url_for("console.account", account_id=account_id))


@bp.route("/accounts/<int:account_id>/revoke-key", methods=["POST"])
@needs("key.revoke")
def account_revoke_key(account_id):
    def work(conn):
        row = _existing(conn, account_id)
        if not keys.revoke_key(conn, row.id):
            raise accounts.AccountError(f"{row.email} has no active key")
        return "key.revoke", row.email, None, None, f"{row.email}: key revoked"
    return apply(work, url_for("console.account", account_id=account_id))
