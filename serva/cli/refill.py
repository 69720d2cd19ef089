"""`serva refill …`: partners' refill requests, listed and answered."""
import click
from flask.cli import AppGroup

from .. import db, refills as refills_repo
from ..ids import parse_refill, present_order, present_refill
from .common import echo_lines, fail, record, require_schema, show_time

group = AppGroup("refill", help="Partners' refill requests: list and answer them.",
                 callback=require_schema)


@group.command("list")
@click.option("--status", type=click.Choice(refills_repo.REFILL_STATUSES))
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
def refill_list(status, limit):
    """Newest refill requests first (answer them with set-status)."""
    with db.read() as conn:
        rows = refills_repo.list_refills(conn, status, limit)
    echo_lines(f"{present_refill(row.id)}\t{row.status}\t{present_order(row.order_id)}\t{row.email}\t"
               f"service {row.service_id}\trequested {show_time(row.created_at)}\t{row.target}"
               for row in rows)


@group.command("set-status")
@click.argument("refill")
@click.argument("status", type=click.Choice(refills_repo.REFILL_STATUSES))
def refill_set_status(refill, status):
    """Move a refill to STATUS (Completed and Rejected are final)."""
    refill_id = parse_refill(refill)
    if refill_id is None:
        fail(f"not a refill id: {refill}")
    try:
        with db.write() as conn:
            refills_repo.set_refill_status(conn, refill_id, status)
            record(conn, "refill.status", present_refill(refill_id), after={"status": status})
    except refills_repo.RefillError as error:
        fail(str(error))
    click.echo(f"{present_refill(refill_id)}: {status}")
