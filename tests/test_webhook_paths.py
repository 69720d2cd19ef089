"""Every path that changes an order or a refill writes its webhook event in its own
transaction: the worker's status sync (progress and final), a cancel before the hand-over,
the provider's refill answers; `serva worker --once` delivers them; and the operator's
`serva webhook` commands."""
import re

import pytest
from sqlalchemy import update
from standardwebhooks.webhooks import Webhook

from serva import accounts, db, providers
from serva.cli import cli as serva_cli
from serva.schema import services
from serva.webhooks import outbox

from faulty_provider import KEY, FaultyProvider
from webhook_helpers import events, listening_partner, place, webhook_app
from webhook_receiver import receiver  # noqa: F401 - a fixture

FAST = {"SYNC_INTERVAL_SECONDS": 0, "DISPATCH_RETRY_SECONDS": 0, "DISPATCH_MAX_ATTEMPTS": 3,
        "PROVIDER_CONNECT_TIMEOUT": 1.0, "PROVIDER_READ_TIMEOUT": 0.5, "WORKER_CONCURRENCY": 4}


@pytest.fixture
def app(tmp_path):
    app = webhook_app(f"sqlite:///{tmp_path / 'serva.sqlite'}", **FAST)
    yield app
    app.extensions["serva.engine"].dispose()


@pytest.fixture
def linked(app, catalog):
    provider = FaultyProvider().start()
    with app.app_context(), db.write() as conn:
        providers.add(conn, "up", provider.url, KEY)
        up = providers.require(conn, "up")
        conn.execute(update(services).where(services.c.id == 1234).values(
            provider_id=up.id, provider_service="11", cancel=True, refill_days=30))
    yield provider
    provider.stop()


def cli(app, *args, code=0):
    result = app.test_cli_runner().invoke(serva_cli, args=[str(a) for a in args])
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result.stdout + result.stderr


def worker_once(app):
    return cli(app, "worker", "--once")


def received(receiver, secret):
    return [Webhook(secret).verify(body, headers) for headers, body, _ in receiver.requests]


def test_the_sync_reports_each_change_once_and_worker_once_delivers(app, client, linked, receiver):
    _, key, secret = listening_partner(app, receiver.url)
    order = place(client, key, quantity="1000")
    worker_once(app)  # handed over: no status change yet, no event
    assert events(app) == []
    linked.status_of["P5001"] = {"status": "In progress", "start_count": 10, "remains": 600}
    worker_once(app)
    worker_once(app)  # the same answer again: nothing new to report
    linked.status_of["P5001"] = {"status": "Partial", "start_count": 10, "remains": 300}
    out = worker_once(app)
    assert "webhooks delivered 1" in out
    payloads = received(receiver, secret)
    assert [(p["data"]["order"], p["data"]["status"], p["data"]["remains"]) for p in payloads] == [
        (order, "In progress", 600), (order, "Partial", 300)]


def test_a_cancel_before_the_hand_over_and_refill_answers_are_reported(app, client, linked,
                                                                       receiver):
    _, key, secret = listening_partner(app, receiver.url)
    canceled = place(client, key)
    client.post("/api/v1", data={"action": "cancel", "key": key, "order": canceled})
    refilled = place(client, key)
    worker_once(app)
    linked.status_of["P5001"] = {"status": "Completed", "start_count": 1, "remains": 0}
    worker_once(app)
    refill = client.post("/api/v1", data={"action": "refill", "key": key,
                                          "order": refilled}).get_json()["refill"]
    worker_once(app)  # the refill handed to the provider: still Pending, nothing to report
    linked.refill_status_of.update({str(k): "Completed" for k in range(9000, 9010)})
    worker_once(app)
    kinds = [(p["type"], p["data"].get("order"), p["data"]["status"])
             for p in received(receiver, secret)]
    assert kinds == [("order.updated", canceled, "Canceled"),
                     ("order.updated", refilled, "Completed"),
                     ("refill.updated", refilled, "Completed")]
    assert received(receiver, secret)[-1]["data"]["refill"] == refill


def test_the_operator_commands(app, client, catalog, receiver):
    cli(app, "account", "create", "p@example.com", "--approve")
    out = cli(app, "webhook", "set", "p@example.com", receiver.url)
    secret = re.search(r"secret: (whsec_\S+)", out).group(1)
    shown = cli(app, "webhook", "show", "p@example.com")
    assert secret not in shown and secret[:10] in shown and "enabled" in shown
    again = cli(app, "webhook", "set", "p@example.com", receiver.url)
    assert "whsec_" not in again and "unchanged" in again
    rotated = re.search(r"secret: (whsec_\S+)", cli(app, "webhook", "rotate-secret",
                                                       "p@example.com")).group(1)
    assert rotated != secret and "previous secret" in cli(app, "webhook", "show", "p@example.com")
    assert "disabled" in cli(app, "webhook", "disable", "p@example.com")
    assert "disabled by the operator" in cli(app, "webhook", "show", "p@example.com")
    cli(app, "webhook", "enable", "p@example.com")
    assert cli(app, "webhook", "deliveries", "p@example.com").strip() == "none"
    receiver.script = ["500"]
    with app.app_context(), db.write() as conn:
        outbox.test_event(conn, accounts.get_by_email(conn, "p@example.com").id)
    worker_once(app)
    msg_id = events(app)[0].msg_id
    lines = cli(app, "webhook", "deliveries", "p@example.com")
    assert msg_id in lines and "HTTP 500" in lines and "attempt 1" in lines
    assert "waiting" in cli(app, "webhook", "resend", msg_id, code=2)
    assert "no event" in cli(app, "webhook", "resend", "msg_nope", code=2)
    assert "no account" in cli(app, "webhook", "show", "nobody@example.com", code=2)
    cli(app, "account", "create", "q@example.com")
    assert "no webhook endpoint" in cli(app, "webhook", "rotate-secret", "q@example.com", code=2)
