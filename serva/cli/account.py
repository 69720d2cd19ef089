"""`serva account …`: partner accounts, their access, bans, money and pricing."""
import click
from flask import current_app
from flask.cli import AppGroup

from .. import accounts as accounts_repo
from .. import db, keys, sessions
from ..ids import id_format_name, numeric_ids
from ..money import AmountError, format_amount, format_percent, parse_percent
from .common import (account_named, amount_arg, echo_lines, fail, record, require_schema,
                     show_time)

group = AppGroup("account", help="Partner accounts: access, bans, money and pricing.",
                 callback=require_schema)


def check_password_length(password: str) -> None:
    if len(password) < accounts_repo.MIN_PASSWORD_LENGTH:
        fail(f"a password needs at least {accounts_repo.MIN_PASSWORD_LENGTH} characters")


@group.command("create")
@click.argument("email")
@click.option("--password", help="Sign-in password for the dashboard.")
@click.option("--approve", is_flag=True, help="Approve API access right away.")
def account_create(email, password, approve):
    """Create a partner account."""
    if password is not None:
        check_password_length(password)
    try:
        with db.write() as conn:
            accounts_repo.create(conn, email, password, approved=approve)
            record(conn, "account.create", accounts_repo.normalize_email(email),
                   after={"api_access": "approved" if approve else "none"})
    except accounts_repo.AccountError as error:
        fail(str(error))
    click.echo(f"created {accounts_repo.normalize_email(email)}"
               f"{' (API access approved)' if approve else ''}")


def sign_out_all(email, password=None):
    """Every dashboard session of the account ends (after setting `password`, if given)."""
    with db.write() as conn:
        row = account_named(conn, email)
        if password is not None:
            accounts_repo.set_password(conn, row.id, password)
        ended = sessions.revoke_all(conn, row.id)
        record(conn, "account.password" if password is not None else "account.sign_out",
               row.email, after={"sessions_ended": ended})
    click.echo(f"{row.email}: {'password set, ' if password is not None else ''}"
               f"{ended} session{'s' if ended != 1 else ''} signed out")


@group.command("password")
@click.argument("email")
@click.option("--password", prompt="New password", hide_input=True, confirmation_prompt=True,
              help="The new sign-in password (prompted when not given).")
def account_password(email, password):
    """Set the dashboard password and sign out every session of the account."""
    check_password_length(password)
    sign_out_all(email, password)


@group.command("sign-out")
@click.argument("email")
def account_sign_out(email):
    """End every dashboard session of the account (each browser must sign in again)."""
    sign_out_all(email)


@group.command("show")
@click.argument("email")
def account_show(email):
    """Print an account's state, balance, key and pricing."""
    with db.read() as conn:
        row = account_named(conn, email)
        key = keys.active_key(conn, row.id)
        rates = accounts_repo.custom_rates(conn, row.id)
    id_format = row.id_format or f"{id_format_name(numeric_ids(row))} (the default; not chosen)"
    key_line = (f"{key.prefix}… created {show_time(key.created_at)}, last used "
                f"{show_time(key.last_used_at)}" if key else "none")
    click.echo(f"email:      {row.email}")
    click.echo(f"api access: {row.api_access}")
    click.echo(f"banned:     {'yes: ' + (row.ban_reason or '') if row.banned else 'no'}")
    click.echo(f"on hold:    {'yes: ' + row.hold_reason if row.hold_reason else 'no'}")
    click.echo(f"balance:    {format_amount(row.balance)} {current_app.config['CURRENCY']}")
    click.echo(f"discount:   {format_percent(row.discount_bp)}%")
    click.echo(f"id format:  {id_format}")
    click.echo(f"key:        {key_line}")
    for service_id, rate in rates:
        click.echo(f"rate:       service {service_id} at {format_amount(rate)} per 1000")


@group.command("requests")
def account_requests():
    """List accounts waiting for API access approval."""
    with db.read() as conn:
        requests = accounts_repo.access_requests(conn)
    echo_lines(f"{email}\trequested {show_time(stamp)}" for email, stamp in requests)


STATE_COLUMNS = ("api_access", "banned", "ban_reason", "discount_bp")


def set_state(email, change, done, action):
    with db.write() as conn:
        row = account_named(conn, email)
        change(conn, row.id)
        after = accounts_repo.get_by_id(conn, row.id)
        record(conn, action, row.email, {c: getattr(row, c) for c in STATE_COLUMNS},
               {c: getattr(after, c) for c in STATE_COLUMNS})
    click.echo(f"{row.email}: {done}")


@group.command("approve")
@click.argument("email")
def account_approve(email):
    """Approve API access."""
    set_state(email, lambda c, i: accounts_repo.set_api_access(c, i, "approved"),
              "API access approved", "account.approve")


@group.command("unapprove")
@click.argument("email")
def account_unapprove(email):
    """Withdraw API access."""
    set_state(email, lambda c, i: accounts_repo.set_api_access(c, i, "none"),
              "API access withdrawn", "account.unapprove")


@group.command("ban")
@click.argument("email")
@click.option("--reason", default="", help="Shown to the partner at sign-in.")
def account_ban(email, reason):
    """Ban an account: its key and dashboard stop working."""
    set_state(email, lambda c, i: accounts_repo.set_banned(c, i, True, reason), "banned",
              "account.ban")


@group.command("unban")
@click.argument("email")
def account_unban(email):
    """Lift a ban."""
    set_state(email, lambda c, i: accounts_repo.set_banned(c, i, False), "unbanned",
              "account.unban")


def post(email, amount, note):
    with db.write() as conn:
        row = account_named(conn, email)
        try:
            balance = accounts_repo.move_balance(conn, row, amount, note)
        except accounts_repo.AccountError as error:
            fail(str(error))
        record(conn, "account.credit" if amount > 0 else "account.debit", row.email,
               {"balance": row.balance}, {"balance": balance, "note": note.strip()})
    click.echo(f"{row.email}: balance {format_amount(balance)} {current_app.config['CURRENCY']}")


@group.command("credit")
@click.argument("email")
@click.argument("amount")
@click.option("--note", required=True, help="Why (kept on the ledger row).")
def account_credit(email, amount, note):
    """Add AMOUNT (e.g. 25.50) to the balance."""
    post(email, amount_arg(amount), note)


@group.command("debit")
@click.argument("email")
@click.argument("amount")
@click.option("--note", required=True, help="Why (kept on the ledger row).")
def account_debit(email, amount, note):
    """Take AMOUNT from the balance (never below zero)."""
    post(email, -amount_arg(amount), note)


@group.command("discount")
@click.argument("email")
@click.argument("percent")
def account_discount(email, percent):
    """Set the account's discount on list rates, in percent (0-100, two decimals)."""
    try:
        bp = parse_percent(percent)
    except AmountError as error:
        fail(str(error))
    set_state(email, lambda c, i: accounts_repo.set_discount(c, i, bp),
              f"discount {format_percent(bp)}%", "account.discount")


@group.command("id-format")
@click.argument("email")
@click.argument("id_format", metavar="numeric|prefixed")
def account_id_format(email, id_format):
    """How the API shows this account's order, service and refill ids: prefixed ("ORD-100023",
    "1234") or numeric (100023, 1234, for panel scripts that store ids as numbers)."""
    with db.write() as conn:
        row = account_named(conn, email)
        try:
            accounts_repo.set_id_format(conn, row.id, id_format)
        except accounts_repo.AccountError as error:
            fail(str(error))
        record(conn, "account.id_format", row.email, {"id_format": row.id_format},
               {"id_format": id_format})
    click.echo(f"{row.email}: id format {id_format}")


@group.command("rate")
@click.argument("email")
@click.argument("service_id", type=int)
@click.argument("rate", required=False)
@click.option("--clear", is_flag=True, help="Remove the custom rate.")
def account_rate(email, service_id, rate, clear):
    """Set a custom RATE (per 1000) for one service, replacing the discounted list rate."""
    if clear == (rate is not None):
        fail("give either a RATE or --clear")
    value = None if clear else amount_arg(rate, positive=False)
    if value is not None and value < 0:
        fail("a rate cannot be negative")
    with db.write() as conn:
        row = account_named(conn, email)
        try:
            accounts_repo.set_custom_rate(conn, row.id, service_id, value)
        except accounts_repo.AccountError as error:
            fail(str(error))
        record(conn, "account.rate", row.email, None, {"service_id": service_id, "rate": value})
    click.echo(f"{row.email}: service {service_id} "
               f"{'custom rate cleared' if clear else 'at ' + format_amount(value) + ' per 1000'}")
