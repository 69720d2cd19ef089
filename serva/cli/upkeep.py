"""`serva audit` and `serva prune`: checking the money invariants, and deleting rows that
can never be used again (both meant for cron)."""
import click
from flask import current_app
from flask.cli import with_appcontext

from .. import audit as audit_checks
from .. import db, pruning, reports
from .common import require_schema


@click.command("audit")
@click.option("--stale-after", type=click.IntRange(min=0), default=audit_checks.STALE_AFTER_SECONDS,
              show_default=True, metavar="SECONDS",
              help="warn about guard/idempotency rows expired longer than this")
@with_appcontext
def audit_command(stale_after):
    """Check the money invariants; exit 1 naming each violation.

    \b
    VIOLATION (exit 1): a balance that is not the sum of its ledger; a negative balance;
    an order whose charge or refund differs from its ledger rows; coupon uses that differ from
    its redemptions; a ledger row whose account or order does not exist, a charge or refund
    row that names no order, a ledger row for another account's order.
    WARNING (exit 0): purchase-guard or idempotency rows that expired more than --stale-after
    seconds ago (default a day) and are still there. Expired rows are ignored by the API, so
    money is safe, but `serva prune` is not running and the tables grow: cron it.
    The result is kept as the last audit, which the console's overview shows."""
    require_schema()
    with db.read() as conn:
        problems = list(audit_checks.violations(conn))
        warnings = list(audit_checks.stale_rows(conn, db.now(), stale_after))
    with db.write() as conn:  # the overview's "last audit", as the console's button keeps it
        reports.record_audit(conn, problems)
    for problem in problems:
        click.echo(f"VIOLATION {problem}")
    for warning in warnings:
        click.echo(f"WARNING {warning}")
    if problems:
        raise click.exceptions.Exit(1)
    click.echo("audit passed: balances equal their ledgers, orders match their ledger rows"
               + (f" ({len(warnings)} warning(s) above)" if warnings else ""))


@click.command("prune")
@with_appcontext
def prune_command():
    """Delete expired purchase-guard rows, idempotency records, old sign-in failures, ended
    dashboard sessions, and webhook events delivered or given up more than
    SERVA_WEBHOOK_RETENTION_DAYS ago with their delivery attempts (pending events are kept)."""
    require_schema()
    config = current_app.config
    pruned = pruning.prune(db.now(), config["LOGIN_FAILURE_WINDOW_SECONDS"],
                           int(current_app.permanent_session_lifetime.total_seconds()),
                           config["WEBHOOK_RETENTION_DAYS"])
    click.echo(f"pruned {pruned.guards} guard rows, {pruned.replays} idempotency records, "
               f"{pruned.failures} sign-in failures, {pruned.sessions} ended sessions, "
               f"{pruned.events} webhook events, {pruned.attempts} delivery attempts")
