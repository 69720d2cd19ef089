"""`serva prune` and the webhook history: an event delivered or given up (`failed`) longer ago
than SERVA_WEBHOOK_RETENTION_DAYS goes, with its delivery attempts; a recent one stays, and a
pending one (retrying, or never sent) stays whatever its age. The partner's last deliveries
(dashboard, `serva webhook deliveries`) show what is left. SQLite and PostgreSQL (skipped
when PostgreSQL is not reachable)."""
import sqlite3
from contextlib import ExitStack

import pytest
from sqlalchemy import event, func, select, update

from serva import db, pruning
from serva.auth import flush_key_uses
from serva.cli import cli as serva_cli
from serva.schema import webhook_attempts, webhook_events
from serva.webhooks import delivery, endpoints, outbox

from conftest import pg_schema
from test_dashboard import make_account, sign_in
from webhook_helpers import deliver, events, make_due, webhook_app
from webhook_receiver import receiver  # noqa: F401 - a fixture

DAY = 86_400
RETENTION_DAYS = 7


@pytest.fixture(params=["sqlite", "postgresql"])
def app(request, tmp_path):
    with ExitStack() as stack:
        url = (f"sqlite:///{tmp_path / 'serva.sqlite'}" if request.param == "sqlite"
               else stack.enter_context(pg_schema()))
        app = webhook_app(url, WEBHOOK_RETENTION_DAYS=RETENTION_DAYS)
        try:
            yield app
        finally:
            flush_key_uses(app)
            app.extensions["serva.engine"].dispose()


@pytest.fixture
def partner(app, receiver):
    account_id, _ = make_account(app)
    with app.app_context(), db.write() as conn:
        endpoints.set_url(conn, account_id, receiver.url, allow_private=True)
    return account_id


def new_event(app, account_id) -> str:
    """A test event, due now; its webhook-id."""
    with app.app_context(), db.write() as conn:
        assert outbox.test_event(conn, account_id)
    return events(app)[-1].msg_id


def age(app, msg_id, days):
    """The event was made `days` ago (time passes for it alone)."""
    with app.app_context(), db.write() as conn:
        conn.execute(update(webhook_events).where(webhook_events.c.msg_id == msg_id)
                     .values(created_at=webhook_events.c.created_at - days * DAY))


def attempts_of(app):
    """msg_id -> how many attempts are recorded."""
    with app.app_context(), db.read() as conn:
        return dict(conn.execute(
            select(webhook_events.c.msg_id, func.count(webhook_attempts.c.id))
            .select_from(webhook_events.outerjoin(
                webhook_attempts, webhook_attempts.c.event_id == webhook_events.c.id))
            .group_by(webhook_events.c.msg_id)).all())


def prune(app):
    result = app.test_cli_runner().invoke(serva_cli, args=["prune"])
    assert result.exit_code == 0, result.output
    return result.output


def test_old_finished_events_go_with_their_attempts_pending_ones_stay(app, partner, receiver):
    delivered = new_event(app, partner)
    assert deliver(app)["delivered"] == 1
    given_up = new_event(app, partner)
    receiver.script = ["500", "500"]
    assert deliver(app)["retrying"] == 1
    with app.app_context(), db.write() as conn:  # its last attempt next
        conn.execute(update(webhook_events).where(webhook_events.c.msg_id == given_up)
                     .values(attempts=len(delivery.RETRY_DELAYS) - 1))
    make_due(app)
    assert deliver(app)["failed"] == 1
    retrying = new_event(app, partner)
    receiver.script = ["503 60"]
    assert deliver(app)["retrying"] == 1
    recent = new_event(app, partner)
    assert deliver(app)["delivered"] == 1  # `retrying` is not due yet (Retry-After: 60)
    never_sent = new_event(app, partner)  # pending, no attempt yet
    for msg_id in (delivered, given_up, retrying, never_sent):
        age(app, msg_id, 400)  # far past the retention, pending or not
    age(app, recent, RETENTION_DAYS - 1)
    assert {e.msg_id: e.state for e in events(app)} == {
        delivered: "delivered", given_up: "failed", retrying: "pending",
        never_sent: "pending", recent: "delivered"}
    before = attempts_of(app)
    assert (before[delivered], before[given_up]) == (1, 2)

    out = prune(app)
    assert out.startswith("pruned 0 guard rows, 0 idempotency records, 0 sign-in failures, "
                          "0 ended sessions, ")
    assert out.strip().endswith("2 webhook events, 3 delivery attempts")
    after = attempts_of(app)
    assert after == {msg_id: before[msg_id] for msg_id in (retrying, never_sent, recent)}
    assert "0 webhook events, 0 delivery attempts" in prune(app)

    age(app, recent, 2)  # now past the retention too
    assert "1 webhook events, 1 delivery attempts" in prune(app)
    assert set(attempts_of(app)) == {retrying, never_sent}


def test_a_resent_event_is_pending_again_and_kept(app, partner, receiver):
    receiver.script = ["410"]  # gone: given up at once
    msg_id = new_event(app, partner)
    assert deliver(app)["failed"] == 1
    age(app, msg_id, 400)
    app.test_cli_runner().invoke(serva_cli, args=["webhook", "enable", "partner@example.com"])
    result = app.test_cli_runner().invoke(serva_cli, args=["webhook", "resend", msg_id])
    assert result.exit_code == 0, result.output
    assert "0 webhook events" in prune(app)
    assert deliver(app)["delivered"] == 1
    assert "1 webhook events, 2 delivery attempts" in prune(app)
    assert events(app) == []


def test_many_old_events_go_in_bounded_batches(app, partner):
    stamp = db.now()
    for _ in range(7):
        new_event(app, partner)
    with app.app_context(), db.write() as conn:
        conn.execute(update(webhook_events).values(state="delivered", next_attempt_at=None,
                                                   delivered_at=stamp, created_at=stamp - 40 * DAY))
    with app.app_context():
        pruned = pruning.prune(db.now(), 900, 3600, RETENTION_DAYS, batch=3)
    assert (pruned.events, pruned.attempts) == (7, 0)
    assert events(app) == []


def test_the_last_deliveries_show_what_is_left(app, partner, receiver, client):
    old = new_event(app, partner)
    deliver(app)
    age(app, old, 400)
    kept = new_event(app, partner)
    receiver.script = ["500"]
    deliver(app)
    prune(app)
    listed = app.test_cli_runner().invoke(serva_cli, args=["webhook", "deliveries",
                                                           "partner@example.com"])
    assert listed.exit_code == 0, listed.output
    assert kept in listed.output and old not in listed.output and "HTTP 500" in listed.output
    sign_in(client)
    page = client.get("/profile/webhook/")
    assert page.status_code == 200
    assert kept in page.text and old not in page.text and ">500<" in page.text


def test_the_prune_reads_a_range_of_an_index(app, partner):
    """On a big outbox the prune must not scan it: its statements, as SQLite ran them, use
    the partial index of finished events and the attempts' index by event."""
    if not app.config["DATABASE_URL"].startswith("sqlite"):
        pytest.skip("SQLite's query plan")
    age(app, new_event(app, partner), 400)
    deliver(app)
    engine, statements = app.extensions["serva.engine"], []
    engine.dispose()

    def trace(dbapi_connection, _record, _proxy):
        dbapi_connection.set_trace_callback(statements.append)
    event.listen(engine, "checkout", trace)
    try:
        assert "1 webhook events, 1 delivery attempts" in prune(app)
    finally:
        event.remove(engine, "checkout", trace)
        engine.dispose()
    touching = [s for s in statements if "webhook_" in s]
    assert len(touching) >= 3, statements
    con = sqlite3.connect(app.config["DATABASE_URL"].removeprefix("sqlite:///"))
    try:
        plans = {s: " ".join(row[3] for row in con.execute("EXPLAIN QUERY PLAN " + s))
                 for s in touching}
    finally:
        con.close()
    for statement, plan in plans.items():
        assert "SCAN webhook_" not in plan, (statement, plan)
    assert any("USING INDEX ix_webhook_events_finished (created_at<?)" in plan
               for plan in plans.values()), plans
    assert any("ix_webhook_attempts_event" in plan for plan in plans.values()), plans
