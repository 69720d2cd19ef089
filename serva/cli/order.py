"""`serva order …`: orders listed, inspected, settled and moved through statuses.

Money is named the same way everywhere here: `charge` is what the order was charged when it
was placed, `refunded` what went back since, `net` the charge after refunds (what the API's
`status` calls its `charge`)."""
import click
from flask.cli import AppGroup

from .. import db, fulfilment, order_lookup, orders as orders_repo, providers as providers_repo
from ..ids import present_order, present_refill
from ..money import format_amount
from .common import (account_named, echo_lines, fail, order_id_arg, record, require_schema,
                     show_time, show_value)

group = AppGroup("order", help="Orders: list, inspect, move through statuses.",
                 callback=require_schema)


def money_columns(row) -> list:
    """(label, amount) of an order's charge, refunds and net, as both list and show name them."""
    return [("charge", format_amount(row.charge)), ("refunded", format_amount(row.refunded)),
            ("net", format_amount(row.charge - row.refunded))]


def order_line(row) -> str:
    extra = ""
    if row.runs is not None:
        extra += f"\truns {row.runs_done}/{row.runs} every {row.interval_minutes} min"
    if row.cancel_requested_at is not None:
        extra += f"\tcancel requested {show_time(row.cancel_requested_at)}"
    money = "\t".join(f"{label} {amount}" for label, amount in money_columns(row))
    return (f"{present_order(row.id)}\t{row.status}\t{row.email}\tservice {row.service_id}\t"
            f"qty {row.quantity}\t{money}\t{row.target}" + extra)


@group.command("list")
@click.option("--account", "email", help="Only this account's orders.")
@click.option("--status", type=click.Choice(orders_repo.ORDER_STATUSES))
@click.option("--service", "service_id", type=int)
@click.option("--cancel-requested", is_flag=True,
              help="Only active orders whose partner asked to cancel (answer with set-status).")
@click.option("--provider", "provider_name", help="Only orders fulfilled by this provider.")
@click.option("--unknown", is_flag=True, help="Only orders whose hand-over outcome is unknown.")
@click.option("--attention", is_flag=True, help="Only orders flagged for the operator.")
@click.option("--request-id", help="Orders placed, charged or refunded by this request "
                                   "(its x-serva-request-id, or a cli: id).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
def order_list(email, status, service_id, cancel_requested, provider_name, unknown, attention,
               request_id, limit):
    """Newest orders first: id, status, account, service, quantity, charge, refunded, net,
    target."""
    with db.read() as conn:
        account_id = account_named(conn, email).id if email else None
        provider_id = None
        if provider_name:
            try:
                provider_id = providers_repo.require(conn, provider_name).id
            except providers_repo.ProviderError as error:
                fail(str(error))
        rows = order_lookup.list_orders(
            conn, account_id=account_id, status=status, service_id=service_id,
            cancel_requested=cancel_requested, provider_id=provider_id, unknown=unknown,
            attention=attention, request_id=request_id.strip() if request_id else None,
            limit=limit)
    echo_lines(order_line(row) for row in rows)


@group.command("unknown")
def order_unknown():
    """Hand-overs whose outcome is unknown (sent, no usable answer): resolve each by hand."""
    with db.read() as conn:
        rows = order_lookup.unknown_handovers(conn)
    echo_lines(f"{present_order(row.id)}\t{row.provider or '-'}\tqty {row.quantity}\t"
               f"{row.target}\tsince {show_time(row.updated_at)}\t{row.last_message or ''}"
               for row in rows)


@group.command("resolve")
@click.argument("order")
@click.option("--provider-order", help="It was placed: the provider's order id.")
@click.option("--resend", is_flag=True, help="It was not placed: hand it over again.")
@click.option("--cancel", is_flag=True, help="Give up: Canceled, full refund.")
def order_resolve(order, provider_order, resend, cancel):
    """Settle a hand-over whose outcome is unknown, after checking at the provider."""
    if sum((provider_order is not None, resend, cancel)) != 1:
        fail("give exactly one of --provider-order PID, --resend and --cancel")
    order_id = order_id_arg(order)
    try:
        with db.write() as conn:
            done = fulfilment.resolve(conn, order_id, provider_order=provider_order,
                                  resend=resend, cancel=cancel)
            record(conn, "order.resolve", present_order(order_id),
                   after={"provider_order": provider_order, "resend": resend, "cancel": cancel,
                          "outcome": done})
    except fulfilment.ResolveError as error:
        fail(str(error))
    click.echo(f"{present_order(order_id)}: {done}")


@group.command("show")
@click.argument("order")
def order_show(order):
    """Everything about one order, with its ledger rows and status history."""
    order_id = order_id_arg(order)
    with db.read() as conn:
        details = order_lookup.order_details(conn, order_id)
        changes = orders_repo.history_of(conn, order_id)[::-1]  # oldest first, as the ledger
    if details is None:
        fail(f"no order {order}")
    row, handover = details.order, details.handover
    fields = [("order", present_order(row.id)), ("account", row.email),
              ("service", row.service_id), ("target", row.target),
              ("inputs", row.inputs_json or "-"), ("quantity", row.quantity),
              ("status", row.status), ("start_count", show_value(row.start_count)),
              ("remains", show_value(row.remains)), *money_columns(row)]
    if row.runs is not None:
        fields.append(("runs", f"{row.runs_done}/{row.runs} done, every "
                               f"{row.interval_minutes} min"))
    if row.cancel_requested_at is not None:
        fields.append(("cancel", f"requested {show_time(row.cancel_requested_at)}"))
    fields += [("created", show_time(row.created_at)), ("updated", show_time(row.updated_at)),
               ("completed", show_time(row.completed_at)), ("request_id", row.request_id or "-")]
    for label, value in fields:
        click.echo(f"{label + ':':12} {value}")
    if row.provider_id is not None or handover.state is not None:
        for label, value in [("provider", handover.provider or "-"),
                             ("provider order", row.provider_order or "-"),
                             ("hand-over", f"{handover.state}, {handover.attempts} attempts"
                              if handover.state else "-"),
                             ("last provider message", handover.last_message or "-"),
                             ("attention", row.attention or "-")]:
            click.echo(f"{label}: {value}")
    for entry in details.entries:
        click.echo(f"ledger:      {show_time(entry.created_at)} {entry.kind} "
                   f"{format_amount(entry.amount)} request_id={entry.request_id or '-'}")
    for change in changes:
        click.echo(f"history:     {show_time(change.created_at)} {change.status_before} -> "
                   f"{change.status_after} remains={show_value(change.remains)} "
                   f"start_count={show_value(change.start_count)} by={change.actor} "
                   f"request_id={change.request_id or '-'}")
    for refill in details.refills:
        click.echo(f"refill:      {present_refill(refill.id)} {refill.status} requested "
                   f"{show_time(refill.created_at)}")


@group.command("set-status")
@click.argument("order")
@click.argument("status", type=click.Choice(orders_repo.ORDER_STATUSES))
@click.option("--start-count", type=click.IntRange(min=0, max=2**31 - 1))
@click.option("--remains", type=click.IntRange(min=0))
@click.option("--runs-done", type=click.IntRange(min=0), help="Drip-feed runs delivered so far.")
def order_set_status(order, status, start_count, remains, runs_done):
    """Move an order to STATUS; Partial and Canceled refund through the ledger, once."""
    order_id = order_id_arg(order)
    try:
        with db.write() as conn:
            before = orders_repo.status_fields(conn, order_id)
            refund = orders_repo.set_status(conn, order_id, status, start_count, remains, runs_done)
            record(conn, "order.status", present_order(order_id), before,
                   {**orders_repo.status_fields(conn, order_id), "refund": refund})
    except orders_repo.OrderError as error:
        fail(str(error))
    click.echo(f"{present_order(order_id)}: {status}"
               + (f", refunded {format_amount(refund)}" if refund else ""))
