"""`serva payment …`: payments partners made (Stripe Checkout, manual transfers), their
gateway events, the operator's approve/reject of manual or flagged ones, and holds."""
import click
from flask.cli import AppGroup

from .. import db, payments
from ..money import format_amount
from ..schema import PAYMENT_GATEWAYS, PAYMENT_STATUSES
from .common import (account_named, echo_lines, fail, record, require_schema, show_time,
                     show_value)

group = AppGroup("payment", help="Payments: list, inspect, approve or reject, holds.",
                 callback=require_schema)


def payment_line(row) -> str:
    flag = f"\tFLAGGED: {row.flagged_reason}" if row.flagged_reason else ""
    return (f"{payments.present_payment(row.id)}\t{row.status}\t{row.gateway}\t{row.email}\t"
            f"{format_amount(row.amount)} {row.currency}\tbonus {format_amount(row.bonus)}\t"
            f"{show_time(row.created_at)}{flag}")


def payment_arg(text) -> int:
    payment_id = payments.parse_payment(text)
    if payment_id is None:
        fail(f"not a payment id: {text}")
    return payment_id


@group.command("list")
@click.option("--status", type=click.Choice(PAYMENT_STATUSES))
@click.option("--gateway", type=click.Choice(PAYMENT_GATEWAYS))
@click.option("--account", "email", help="Only this account's payments.")
@click.option("--flagged", is_flag=True, help="Only payments flagged for the operator.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
def payment_list(status, gateway, email, flagged, limit):
    """Newest payments first: id, status, gateway, account, amount, bonus, created."""
    with db.read() as conn:
        account_id = account_named(conn, email).id if email else None
        rows = payments.list_payments(conn, status=status, gateway=gateway, account_id=account_id,
                                      flagged=True if flagged else None, limit=limit)
    echo_lines(payment_line(row) for row in rows)


@group.command("show")
@click.argument("payment")
def payment_show(payment):
    """One payment with every gateway event it received."""
    with db.read() as conn:
        found = payments.payment_detail(conn, payment_arg(payment))
    if found is None:
        fail(f"no payment {payment}")
    row, events = found
    for label, value in (
            ("payment", payments.present_payment(row.id)), ("account", row.email),
            ("gateway", row.gateway), ("gateway id", show_value(row.gateway_id)),
            ("charge", show_value(row.gateway_charge)), ("status", row.status),
            ("amount", f"{format_amount(row.amount)} {row.currency}"),
            ("bonus", format_amount(row.bonus)), ("reference", show_value(row.reference)),
            ("flagged", show_value(row.flagged_reason)), ("note", show_value(row.note)),
            ("reversed", format_amount(row.reversed)), ("owed", format_amount(row.owed)),
            ("written off", format_amount(row.written_off)),
            ("created", show_time(row.created_at)), ("updated", show_time(row.updated_at)),
            ("paid", show_time(row.paid_at))):
        click.echo(f"{label + ':':<12} {value}")
    for event in events:
        click.echo(f"event:       {event.event_id}\t{event.type}\t{show_time(event.received_at)}"
                   f"\t{event.outcome}")


def decide(payment, action, change, done):
    """Approve or reject, with its activity entry in the same transaction."""
    payment_id = payment_arg(payment)
    label = payments.present_payment(payment_id)
    try:
        with db.write() as conn:
            before = payments.decision_fields(conn, payment_id)
            change(conn, payment_id)
            after = payments.decision_fields(conn, payment_id)
            record(conn, action, label, before, after)
    except payments.PaymentError as error:
        fail(str(error))
    click.echo(f"{label}: {done} ({format_amount(after['amount'])} {after['currency']})")


@group.command("approve")
@click.argument("payment")
@click.option("--note", default="", help="Kept on the payment (e.g. the bank's reference).")
def payment_approve(payment, note):
    """Credit a pending manual payment (or a flagged one checked with its gateway)."""
    decide(payment, "payment.approve", lambda conn, i: payments.approve(conn, i, note.strip()),
           "approved, credited")


@group.command("reject")
@click.argument("payment")
@click.option("--note", required=True, help="Why (the partner sees it).")
def payment_reject(payment, note):
    """Reject a pending payment: nothing is credited."""
    decide(payment, "payment.reject", lambda conn, i: payments.reject(conn, i, note.strip()),
           "rejected")


@group.command("holds")
def payment_holds():
    """Accounts on hold: email, balance, owed, since, why."""
    with db.read() as conn:
        rows = payments.held_accounts(conn)
    echo_lines(f"{row.email}\tbalance {format_amount(row.balance)}\towes {format_amount(row.owed)}"
               f"\tsince {show_time(row.held_at)}\t{row.hold_reason}" for row in rows)


@group.command("release")
@click.argument("email")
@click.option("--write-off", is_flag=True,
              help="Forgive what the balance does not cover (else the hold stays until paid).")
def payment_release(email, write_off):
    """Settle an account's hold: take what it owes from its balance, and lift the hold once
    nothing is owed (or, with --write-off, forgive the rest)."""
    with db.write() as conn:
        row = account_named(conn, email)
        payments.lock_account(conn, row.id)
        if row.hold_reason is None:
            fail(f"{row.email} is not on hold")
        collected = payments.collect_owed(conn, row.id)
        forgiven = payments.write_off(conn, row.id) if write_off else 0
        owed = payments.owed_by(conn, row.id)
    state = "still on hold" if owed else "hold lifted"
    click.echo(f"{row.email}: collected {format_amount(collected)}, written off "
               f"{format_amount(forgiven)}, owes {format_amount(owed)}: {state}")
