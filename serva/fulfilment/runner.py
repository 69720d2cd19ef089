"""The worker's pass, and the loop that runs passes until it is told to stop.

One pass (`run_pass`):
1. expired leases: a hand-over whose worker died while sending goes back to `due` when its
   provider honours Idempotency-Key (a resend returns the first answer), else to `unknown`;
2. providers' balances (and whether each is a Serva) are refreshed;
3. due hand-overs are claimed, sent by a few threads at once, and each outcome recorded
   (`dispatch`; refill and cancel requests through `forwarding`);
4. active provider orders that are due are polled and their status applied (`sync`);
5. the provider's refills are polled (`forwarding`);
6. the partners' webhook events that are due are delivered (serva.webhooks.delivery).
Each hand-over is tried at most once per pass, each order polled at most once per pass, so
with both intervals at 0 a pass does everything due, once."""
import logging
import os
import signal
import socket
import threading
import uuid
from dataclasses import dataclass, fields

from flask import current_app
from sqlalchemy import select

from .. import db, providers as providers_repo
from ..money import AmountError, parse_amount
from ..schema import providers
from ..webhooks import delivery as webhook_delivery
from . import forwarding, provider_client as pc
from .claim import reap_expired_leases
from .dispatch import dispatch_pass
from .sync import sync_pass
from .writing import write

log = logging.getLogger("serva.worker")

BALANCE_REFRESH_SECONDS = 300


@dataclass
class Report:
    """What one pass did, for the operator's one line."""
    handed: int = 0
    retrying: int = 0
    canceled: int = 0
    unknown: int = 0
    synced: int = 0
    refunded: int = 0
    flagged: int = 0
    delivered: int = 0  # webhook events
    retrying_webhooks: int = 0
    failed_webhooks: int = 0

    def add(self, counts) -> None:
        for item in fields(self):
            setattr(self, item.name, getattr(self, item.name) + counts.get(item.name, 0))

    def line(self) -> str:
        return (f"handed over {self.handed}, retrying {self.retrying}, canceled {self.canceled}, "
                f"unknown {self.unknown}; synced {self.synced}, refunded {self.refunded}, "
                f"flagged {self.flagged}; webhooks delivered {self.delivered}, retrying "
                f"{self.retrying_webhooks}, failed {self.failed_webhooks}")


def settings() -> dict:
    config = current_app.config
    return {name: config[name] for name in (
        "SYNC_INTERVAL_SECONDS", "DISPATCH_RETRY_SECONDS", "DISPATCH_MAX_ATTEMPTS",
        "DISPATCH_LEASE_SECONDS", "PROVIDER_CONNECT_TIMEOUT", "PROVIDER_READ_TIMEOUT",
        "WORKER_CONCURRENCY", "WEBHOOK_CONCURRENCY", "WEBHOOK_ALLOW_PRIVATE",
        "WEBHOOK_LEASE_SECONDS")}


def refresh_balances(config: dict, force=False) -> None:
    """Ask each enabled provider for its balance (every few minutes, or every pass when the
    sync interval is 0); learn from the reply whether it is a Serva (honours Idempotency-Key)."""
    now = db.now()
    every = min(BALANCE_REFRESH_SECONDS, config["SYNC_INTERVAL_SECONDS"])
    timeouts = (config["PROVIDER_CONNECT_TIMEOUT"], config["PROVIDER_READ_TIMEOUT"])
    with db.read() as conn:
        rows = conn.execute(select(providers).where(providers.c.enabled.is_(True))).all()
    for row in rows:
        if not force and row.balance_at is not None and now - row.balance_at < every:
            continue
        try:
            reply = pc.request(row.url, row.api_key, "balance", timeouts=timeouts)
            balance = parse_amount(str(reply.data.get("balance")))
            currency = str(reply.data.get("currency") or "")
        except (pc.ProviderError, AmountError, AttributeError) as error:
            message = f"balance: {error}"
            write(lambda conn: providers_repo.record_error(conn, row.id, message))
            continue
        write(lambda conn: providers_repo.record_balance(conn, row.id, balance, currency,
                                                         reply.serva))


def run_pass(stop: threading.Event | None = None) -> Report:
    stop = stop or threading.Event()
    config = settings()
    owner = f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    report = Report()
    reap_expired_leases(db.now())
    refresh_balances(config)
    report.add(dispatch_pass(owner, config, stop))
    if not stop.is_set():
        report.add(sync_pass(config, stop))
    if not stop.is_set():
        forwarding.sync_refills(config, stop)
    if not stop.is_set():
        counts = webhook_delivery.delivery_pass(owner, config, stop)
        report.add({"delivered": counts["delivered"], "retrying_webhooks": counts["retrying"],
                    "failed_webhooks": counts["failed"]})
    return report


def run_forever(idle_seconds: float = 1.0, echo=print) -> None:
    """Passes until SIGTERM/SIGINT; the calls in flight finish and are recorded first."""
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("signal %s: finishing the calls in flight", signum)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    echo("worker running (SIGTERM or Ctrl-C stops it after the calls in flight)")
    while not stop.is_set():
        try:
            report = run_pass(stop)
        except Exception:  # noqa: BLE001 - a failed pass (database busy…) is tried again
            log.exception("worker pass failed")
            stop.wait(5)
            continue
        if report.handed or report.synced or report.canceled or report.unknown or report.retrying \
                or report.delivered or report.retrying_webhooks or report.failed_webhooks:
            echo(report.line())
        stop.wait(idle_seconds)
