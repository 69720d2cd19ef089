"""The overview: the business at a glance, and the audit on demand."""
from flask import current_app, render_template, url_for

from .. import accounts, db, payments, providers, reports
from .base import apply, bp, needs
from .chart import bars


@bp.route("/")
@needs("read")
def overview():
    stamp = db.now()
    with db.read() as conn:
        summaries = reports.summaries(conn, stamp)
        days = reports.per_day(conn, stamp)
        provider_rows = providers.list_all(conn)
        counts = providers.counts(conn)
        queues = reports.queues(conn)
        requests = accounts.access_requests(conn)
        last_audit = reports.last_audit(conn)
        money_in = payments.overview(conn)
        held = payments.held_accounts(conn)
    totals = [sum(c[i] for c in counts.values()) for i in range(3)] if counts else [0, 0, 0]
    return render_template("console/overview.html", summaries=summaries, chart=bars(days),
                           providers=provider_rows, counts=counts, handovers=totals,
                           queues=queues, requests=requests, last_audit=last_audit,
                           money_in=money_in, held=held,
                           low_balance=current_app.config["CONSOLE_LOW_BALANCE"])


@bp.route("/audit", methods=["POST"])
@needs("audit.run")
def run_audit():
    def work(conn):
        result = reports.run_audit(conn)
        verdict = "passed" if result["passed"] else f"found {result['count']} violation(s)"
        return "audit.run", "", None, result, f"The audit {verdict}."
    return apply(work, url_for("console.overview"))
