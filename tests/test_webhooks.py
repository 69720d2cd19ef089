"""Webhooks end to end against a real receiving HTTP server that misbehaves on purpose
(tests/webhook_receiver.py): the outbox written with each change (and not for one that rolled
back), Standard Webhooks signatures verified with the `standardwebhooks` library and the
secret the partner was shown, the retry schedule and Retry-After, 410, timeouts, a connection
closed mid-answer, a redirect not followed, three days of failures, secret rotation. Every
test runs on SQLite and on PostgreSQL (skipped when PostgreSQL is not reachable)."""
import json
import time
from contextlib import ExitStack

import pytest
from sqlalchemy import event as sqlalchemy_event, select, update
from standardwebhooks.webhooks import Webhook

from serva import db, orders as orders_repo, refills as refills_repo
from serva.auth import flush_key_uses
from serva.ids import parse_order, parse_refill
from serva.schema import services, webhook_attempts, webhook_endpoints, webhook_events
from serva.webhooks import delivery, endpoints, history, outbox, transport

from conftest import make_partner, pg_schema
from webhook_helpers import (deliver, events, listening_partner, make_due, place, set_status,
                             webhook_app)
from webhook_receiver import Receiver, receiver  # noqa: F401 - a fixture


@pytest.fixture(params=["sqlite", "postgresql"])
def app(request, tmp_path):
    with ExitStack() as stack:
        url = (f"sqlite:///{tmp_path / 'serva.sqlite'}" if request.param == "sqlite"
               else stack.enter_context(pg_schema()))
        app = webhook_app(url)
        try:
            yield app
        finally:
            flush_key_uses(app)  # the keys' last-used times, before the schema goes
            app.extensions["serva.engine"].dispose()


@pytest.fixture
def listening(app, catalog, receiver):
    return listening_partner(app, receiver.url)


def verified(secret, request):
    headers, body, _ = request
    return Webhook(secret).verify(body, headers)


def test_a_status_change_is_delivered_signed_in_the_shape_of_status(app, client, listening,
                                                                     receiver):
    _, key, secret = listening
    assert secret.startswith("whsec_")
    order = place(client, key)
    set_status(app, parse_order(order), "In progress", start_count=17, remains=40)
    assert deliver(app)["delivered"] == 1
    assert len(receiver.requests) == 1
    payload = verified(secret, receiver.requests[0])
    status = client.post("/api/v1", data={"action": "status", "key": key, "order": order}).get_json()
    assert payload["type"] == "order.updated"
    assert payload["data"] == {"order": order, **status}
    assert payload["data"]["status"] == "In progress" and payload["data"]["remains"] == 40
    headers = receiver.requests[0][0]
    assert headers["webhook-id"] == events(app)[0].msg_id
    assert headers["content-type"] == "application/json"
    assert events(app)[0].state == "delivered"
    assert deliver(app)["delivered"] == 0  # delivered once


def test_a_refund_reports_the_charge_after_refunds(app, client, listening, receiver):
    _, key, secret = listening
    order = place(client, key, quantity="100")
    set_status(app, parse_order(order), "Partial", remains=25)
    deliver(app)
    data = verified(secret, receiver.requests[0])["data"]
    status = client.post("/api/v1", data={"action": "status", "key": key, "order": order}).get_json()
    assert data["charge"] == status["charge"] and data["status"] == "Partial"


def test_a_rolled_back_status_change_sends_nothing(app, client, listening, receiver):
    _, key, _ = listening
    order = place(client, key)
    with pytest.raises(RuntimeError), app.app_context(), db.write() as conn:
        orders_repo.set_status(conn, parse_order(order), "Canceled")
        raise RuntimeError("the transaction fails after the move")
    assert events(app) == []
    assert deliver(app)["delivered"] == 0 and receiver.requests == []


def test_no_endpoint_no_event(app, client, catalog):
    _, key = make_partner(app, "quiet@example.com")
    set_status(app, parse_order(place(client, key)), "Completed")
    assert events(app) == []


def test_an_http_500_is_retried_on_schedule_with_the_same_webhook_id(app, client, listening,
                                                                      receiver):
    _, key, secret = listening
    receiver.script = ["500", "500"]
    set_status(app, parse_order(place(client, key)), "Completed")
    before = db_now(app)
    assert deliver(app)["retrying"] == 1
    event = events(app)[0]
    assert event.attempts == 1 and 4 <= event.next_attempt_at - before <= 7  # 5 s, jittered
    make_due(app)
    assert deliver(app)["retrying"] == 1
    assert 250 <= events(app)[0].next_attempt_at - db_now(app) <= 340  # then 5 min
    make_due(app)
    assert deliver(app)["delivered"] == 1
    ids = [headers["webhook-id"] for headers, _, _ in receiver.requests]
    assert len(ids) == 3 and len(set(ids)) == 1
    assert all(verified(secret, request)["type"] == "order.updated" for request in receiver.requests)
    codes = attempt_codes(app)
    assert codes == [500, 500, 204]


@pytest.mark.parametrize("answer, wait", [("429 120", 120), ("503 7", 7)])
def test_retry_after_is_honoured_on_429_and_503(app, client, listening, receiver, answer, wait):
    _, key, _ = listening
    receiver.script = [answer]
    set_status(app, parse_order(place(client, key)), "Completed")
    deliver(app)
    assert events(app)[0].next_attempt_at - db_now(app) in (wait, wait - 1)


def test_410_disables_the_endpoint_and_the_partner_sees_why(app, client, listening, receiver):
    account_id, key, _ = listening
    receiver.script = ["410"]
    set_status(app, parse_order(place(client, key)), "Completed")
    assert deliver(app)["failed"] == 1
    with app.app_context(), db.read() as conn:
        endpoint = endpoints.get(conn, account_id)
    assert not endpoint.enabled and "410" in endpoint.disabled_reason
    set_status(app, parse_order(place(client, key)), "Completed")
    assert len(events(app)) == 1  # no events for a disabled endpoint


def test_three_days_of_failures_disable_the_endpoint(app, client, listening, receiver):
    account_id, key, _ = listening
    receiver.default = "500"
    set_status(app, parse_order(place(client, key)), "Completed")
    deliver(app)
    with app.app_context(), db.write() as conn:
        conn.execute(update(webhook_endpoints).values(failing_since=db.now() - 3 * 86_400))
    make_due(app)
    deliver(app)
    with app.app_context(), db.read() as conn:
        endpoint = endpoints.get(conn, account_id)
    assert not endpoint.enabled and "3 days" in endpoint.disabled_reason


def test_a_success_ends_the_failing_streak(app, client, listening, receiver):
    account_id, key, _ = listening
    receiver.script = ["500"]
    set_status(app, parse_order(place(client, key)), "Completed")
    deliver(app)
    make_due(app)
    deliver(app)
    with app.app_context(), db.read() as conn:
        assert endpoints.get(conn, account_id).failing_since is None


def test_an_answer_slower_than_the_total_timeout_fails_and_is_retried(app, client, listening,
                                                                       receiver, monkeypatch):
    _, key, _ = listening
    monkeypatch.setattr(transport, "TOTAL_TIMEOUT", 0.5)
    receiver.script = ["slow"]
    receiver.slow_seconds = 2
    set_status(app, parse_order(place(client, key)), "Completed")
    assert deliver(app)["retrying"] == 1
    with app.app_context(), db.read() as conn:
        row = conn.execute(select(webhook_attempts)).first()
    assert row.status_code is None and "timed out" in row.error.lower()


def test_a_connection_closed_mid_answer_is_a_failed_attempt(app, client, listening, receiver):
    _, key, _ = listening
    receiver.script = ["close"]
    set_status(app, parse_order(place(client, key)), "Completed")
    assert deliver(app)["retrying"] == 1
    make_due(app)
    assert deliver(app)["delivered"] == 1
    assert len(receiver.unique()) == 1 and len(receiver.requests) == 2
    assert receiver.peers[0] != receiver.peers[1]  # the cut connection was not used again


def test_deliveries_to_one_endpoint_reuse_the_open_connection(app, client, listening, receiver):
    """One after another, three events go over one connection (one TCP handshake, and one TLS
    handshake on https, instead of one per event)."""
    _, key, _ = listening
    for _ in range(3):
        set_status(app, parse_order(place(client, key)), "Completed")
        assert deliver(app)["delivered"] == 1
    assert len(receiver.requests) == 3 and len(set(receiver.peers)) == 1


def test_a_kept_connection_the_receiver_dropped_is_not_an_attempt_lost(app, client, listening,
                                                                      receiver):
    """The receiver closes each connection after its answer (as servers drop idle ones): the
    next event goes over a new connection and is delivered the first time."""
    _, key, _ = listening
    receiver.default = "hangup"
    for _ in range(3):
        set_status(app, parse_order(place(client, key)), "Completed")
        time.sleep(0.05)  # the close reaches this side before the next delivery
        assert deliver(app)["delivered"] == 1
    assert len(receiver.requests) == 3 and len(set(receiver.peers)) == 3


def test_a_redirect_to_a_private_address_is_not_followed(app, client, listening, receiver):
    _, key, _ = listening
    inside = Receiver().start()  # stands for the operator's own network
    try:
        receiver.script = [f"redirect {inside.url}", "redirect http://169.254.169.254/latest/"]
        set_status(app, parse_order(place(client, key)), "Completed")
        assert deliver(app)["retrying"] == 1
        make_due(app)
        assert deliver(app)["retrying"] == 1
        assert inside.requests == []
        assert attempt_codes(app) == [302, 302]
    finally:
        inside.stop()


def test_rotation_signs_with_both_secrets_for_a_day(app, client, listening, receiver):
    account_id, key, old = listening
    with app.app_context(), db.write() as conn:
        new = endpoints.rotate_secret(conn, account_id)
    set_status(app, parse_order(place(client, key)), "Completed")
    deliver(app)
    headers = receiver.requests[0][0]
    assert headers["webhook-signature"].count("v1,") == 2
    assert verified(old, receiver.requests[0]) and verified(new, receiver.requests[0])
    with app.app_context(), db.write() as conn:
        conn.execute(update(webhook_endpoints).values(previous_secret_until=db.now() - 1))
    set_status(app, parse_order(place(client, key)), "Completed")
    deliver(app)
    assert receiver.requests[1][0]["webhook-signature"].count("v1,") == 1
    verified(new, receiver.requests[1])
    with pytest.raises(Exception):
        verified(old, receiver.requests[1])


def test_a_refill_answer_is_a_refill_updated_event(app, client, listening, receiver):
    _, key, secret = listening
    order = place(client, key, service="1234")
    set_status(app, parse_order(order), "Completed")
    with app.app_context(), db.write() as conn:
        conn.execute(update(services).values(refill_days=30))
    refill = client.post("/api/v1", data={"action": "refill", "key": key,
                                          "order": order}).get_json()["refill"]
    with app.app_context(), db.write() as conn:
        refills_repo.set_refill_status(conn, parse_refill(refill), "Completed")
    deliver(app)
    payloads = {p["type"]: p for p in (verified(secret, request) for request in receiver.requests)}
    assert sorted(payloads) == ["order.updated", "refill.updated"]  # delivered concurrently
    assert payloads["refill.updated"]["data"] == {"refill": refill, "order": order,
                                                  "status": "Completed"}


def test_a_test_event_and_a_resend_keep_their_webhook_id(app, client, listening, receiver):
    account_id, _, secret = listening
    receiver.default = "500"
    with app.app_context(), db.write() as conn:
        assert outbox.test_event(conn, account_id)
        conn.execute(update(webhook_events).values(
            attempts=len(delivery.RETRY_DELAYS) - 1))
    assert deliver(app)["failed"] == 1
    receiver.default = "ok"
    msg_id = events(app)[0].msg_id
    with app.app_context(), db.write() as conn:
        history.resend(conn, msg_id, account_id, only_failed=True)
    assert deliver(app)["delivered"] == 1
    assert receiver.unique() == {msg_id}
    assert verified(secret, receiver.requests[-1])["type"] == "webhook.test"


def test_bodies_stay_under_20_kb(app, client, listening, receiver):
    _, key, _ = listening
    order = place(client, key)
    set_status(app, parse_order(order), "In progress", start_count=2**31 - 1, remains=99)
    deliver(app)
    assert len(receiver.requests[0][1]) <= outbox.MAX_BODY_BYTES


def db_now(app):
    with app.app_context():
        return db.now()


def attempt_codes(app):
    with app.app_context(), db.read() as conn:
        return conn.execute(select(webhook_attempts.c.status_code)
                            .order_by(webhook_attempts.c.id)).scalars().all()


def test_many_deliveries_are_recorded_in_a_few_transactions(app, client, listening, receiver):
    """A pass records what finished together in one transaction, not one per delivery (which
    would take the write lock from the API's orders hundreds of times a second)."""
    _, key, _ = listening
    for _ in range(12):
        set_status(app, parse_order(place(client, key)), "Completed")
    commits = []
    engine = app.extensions["serva.engine"]

    def on_commit(conn):
        commits.append(conn)

    sqlalchemy_event.listen(engine, "commit", on_commit)
    try:
        counts = deliver(app)
    finally:
        sqlalchemy_event.remove(engine, "commit", on_commit)
    assert counts["delivered"] == 12
    assert {row.state for row in events(app)} == {"delivered"}
    with app.app_context(), db.read() as conn:
        attempts = conn.execute(select(webhook_attempts.c.event_id)).scalars().all()
    assert sorted(attempts) == sorted(row.id for row in events(app))
    assert len(commits) <= 6, len(commits)  # the claims and a record or two


def _claimed(app, owner):
    """The due events claimed by `owner`, and the endpoint."""
    with app.app_context():
        claimed = delivery.claim(owner, db.now(), 10, 60)
        with db.read() as conn:
            return claimed, conn.execute(select(webhook_endpoints)).first()


def _record(app, finished, owner):
    with app.app_context(), db.write() as conn:
        return delivery.record(conn, delivery.settlement(finished, owner, db.now()))


def test_an_attempt_whose_lease_passed_to_another_worker_changes_nothing(app, client, listening):
    _, key, _ = listening
    set_status(app, parse_order(place(client, key)), "Completed")
    (event,), endpoint = _claimed(app, "first")
    make_due(app)  # the lease ran out: another worker claims the event
    assert len(_claimed(app, "second")[0]) == 1
    ok = transport.Outcome(204, None, None, 3)
    _record(app, [(event, endpoint, ok, endpoint.url)], "first")
    (row,) = events(app)
    assert (row.state, row.lease_owner, row.attempts) == ("pending", "second", 0)
    with app.app_context(), db.read() as conn:
        assert conn.execute(select(webhook_attempts.c.status_code)).scalars().all() == [204]


@pytest.mark.parametrize("last_ok", [True, False])
def test_outcomes_recorded_together_count_in_the_order_they_came(app, client, listening,
                                                                 last_ok):
    account_id, key, _ = listening
    for _ in range(2):
        set_status(app, parse_order(place(client, key)), "Completed")
    (first, second), endpoint = _claimed(app, "worker")
    ok, failed = transport.Outcome(204, None, None, 3), transport.Outcome(500, "HTTP 500", None, 3)
    outcomes = (failed, ok) if last_ok else (ok, failed)
    counts = _record(app, [(first, endpoint, outcomes[0], endpoint.url),
                           (second, endpoint, outcomes[1], endpoint.url)], "worker")
    assert (counts["delivered"], counts["retrying"]) == (1, 1)
    with app.app_context(), db.read() as conn:
        failing_since = endpoints.get(conn, account_id).failing_since
    assert (failing_since is None) is last_ok
    assert sorted(row.state for row in events(app)) == ["delivered", "pending"]
