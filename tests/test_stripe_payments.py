"""Stripe Checkout end to end through the `stripe` package: the Checkout Session is created on
a local stand-in for Stripe's API (`stripe.api_base`), and webhook events are signed with
Stripe's scheme, so the production code path verifies and applies them. A payment is
credited once however its events arrive; forged or stale ones are refused; a mismatch is
flagged; money taken back beyond the balance puts the account on hold."""
import logging
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests
import stripe
from freezegun import freeze_time

from serva import db, payments
from serva.cli import cli as serva_cli

from conftest import serving, together
from fake_stripe import SECRET_KEY, WEBHOOK_SECRET, event, sign
from payment_helpers import (  # noqa: F401 - fake_stripe and papp are fixtures
    WEBHOOK, add_funds, add_service, api, balance_of, fake_stripe, ledger_rows, ledger_total, papp,
    partner_client, payment_app, payment_row, start_checkout, text_of)


def post_event(client, payload, stamp=None, secret=WEBHOOK_SECRET, signature=None):
    headers = {"Stripe-Signature": signature or sign(payload, secret, stamp)}
    return client.post(WEBHOOK, data=payload, headers=headers, content_type="application/json")


def audit_is_green(app):
    result = app.test_cli_runner().invoke(serva_cli, args=["audit"])
    assert result.exit_code == 0, result.output


def test_the_session_carries_serva_amount_and_ids_and_the_return_credits_nothing(papp, fake_stripe):
    client, account_id, _ = partner_client(papp)
    payment_id, session_id = start_checkout(client, fake_stripe, "25.50")
    session = fake_stripe.sessions[session_id]
    assert (session["amount_total"], session["currency"]) == (2550, "usd")
    assert session["metadata"] == {"serva_payment": str(payment_id), "serva_account": str(account_id)}
    assert session["success_url"].endswith(f"/profile/funds/PAY-{payment_id}")
    sent = [headers for method, path, headers in fake_stripe.requests if path == "/v1/checkout/sessions"]
    assert sent[0]["Idempotency-Key"] == f"serva-payment-{payment_id}"
    row = payment_row(papp, payment_id)
    assert (row.status, row.gateway_id, row.amount) == ("pending", session_id, 25_500_000)
    # The browser's return shows the state and credits nothing.
    page = client.get(session["success_url"])
    assert page.status_code == 200 and page.headers["Refresh"] == "3"
    assert text_of(page.text, "payment-state") == "Waiting for confirmation"
    assert balance_of(papp, account_id) == 0 and ledger_rows(papp, account_id) == []


def test_the_same_completed_event_20_times_from_10_threads_and_a_day_later_credits_once(
        papp, fake_stripe):
    client, account_id, _ = partner_client(papp)
    payment_id, session_id = start_checkout(client, fake_stripe, "25")
    payload = event("checkout.session.completed", fake_stripe.completed(session_id))
    with serving(papp) as url:
        def send_twice(_):
            return [requests.post(url + WEBHOOK, data=payload, timeout=30, headers={
                "Stripe-Signature": sign(payload), "Content-Type": "application/json"})
                for _ in range(2)]
        answers = [response for pair in together(10, send_twice) for response in pair]
    assert [r.status_code for r in answers] == [200] * 20
    outcomes = [r.json()["outcome"] for r in answers]
    assert outcomes.count("credited") == 1, outcomes
    # The async success of the same session (another event id) credits nothing either.
    async_ok = event("checkout.session.async_payment_succeeded", fake_stripe.completed(session_id))
    assert post_event(papp.test_client(), async_ok).get_json()["outcome"].startswith("not credited")
    later = datetime.now(timezone.utc) + timedelta(days=1)
    with freeze_time(later):  # Stripe's retry a day later is signed afresh
        assert post_event(papp.test_client(), payload).status_code == 200
    assert [row.amount for row in ledger_rows(papp, account_id)] == [25_000_000]
    assert balance_of(papp, account_id) == 25_000_000
    assert payment_row(papp, payment_id).status == "paid"
    page = client.get(f"/profile/funds/PAY-{payment_id}")
    assert text_of(page.text, "payment-state") == "Credited" and "Refresh" not in page.headers
    audit_is_green(papp)


@pytest.mark.parametrize("how", ["forged", "stale", "missing", "tampered", "not json"])
def test_a_webhook_not_signed_by_stripe_is_400_credits_nothing_and_is_logged(
        papp, fake_stripe, caplog, how):
    client, account_id, _ = partner_client(papp)
    _, session_id = start_checkout(client, fake_stripe)
    payload = event("checkout.session.completed", fake_stripe.completed(session_id))
    signature = {
        "forged": sign(payload, "whsec_someone_else_entirely"),
        "stale": sign(payload, stamp=int(time.time()) - 3600),
        "missing": "",
        "tampered": sign(payload.replace(b'"paid"', b'"PAID"')),
        "not json": sign(b"not json"),
    }[how]
    body = b"not json" if how == "not json" else payload
    with caplog.at_level(logging.WARNING):
        response = papp.test_client().post(WEBHOOK, data=body, content_type="application/json",
                                           headers={"Stripe-Signature": signature})
    assert response.status_code == 400
    assert response.get_json()["code"] == "bad_signature"
    assert response.headers["x-serva-request-id"]
    assert "Stripe webhook refused" in caplog.text
    assert WEBHOOK_SECRET not in caplog.text and SECRET_KEY not in caplog.text
    assert balance_of(papp, account_id) == 0 and ledger_rows(papp, account_id) == []


def test_an_amount_or_currency_other_than_serva_asked_for_is_flagged_and_credits_nothing(
        papp, fake_stripe, caplog):
    client, account_id, _ = partner_client(papp)
    payment_id, session_id = start_checkout(client, fake_stripe, "25")
    wrong = event("checkout.session.completed", fake_stripe.completed(session_id, amount_total=2400))
    with caplog.at_level(logging.WARNING):
        body = post_event(papp.test_client(), wrong).get_json()
    assert body["outcome"] == "flagged: amount 2400 instead of 2500 (minor units)"
    assert "flagged, nothing credited" in caplog.text
    # Later events for it credit nothing while it is flagged, whatever they say.
    right = event("checkout.session.completed", fake_stripe.completed(session_id))
    assert post_event(papp.test_client(), right).get_json()["outcome"].startswith(
        "not credited: flagged")
    euro = event("checkout.session.completed", fake_stripe.completed(session_id, currency="eur"))
    post_event(papp.test_client(), euro)
    row = payment_row(papp, payment_id)
    assert row.status == "pending" and row.flagged_reason.startswith("amount 2400")
    assert ledger_rows(papp, account_id) == []
    runner = papp.test_cli_runner()
    listed = runner.invoke(serva_cli, args=["payment", "list", "--flagged"])
    assert f"PAY-{payment_id}\tpending\tstripe" in listed.output and "FLAGGED" in listed.output
    shown = runner.invoke(serva_cli, args=["payment", "show", f"PAY-{payment_id}"])
    assert shown.output.count("event:") == 3 and session_id in shown.output
    page = client.get(f"/profile/funds/PAY-{payment_id}")
    assert text_of(page.text, "payment-state") == "Under review"
    # The operator, having checked with Stripe, may credit Serva's amount, once.
    assert runner.invoke(serva_cli, args=["payment", "approve", f"PAY-{payment_id}"]).exit_code == 0
    again = runner.invoke(serva_cli, args=["payment", "approve", f"PAY-{payment_id}"])
    assert again.exit_code == 2 and "is paid, not pending" in again.output
    assert balance_of(papp, account_id) == 25_000_000
    audit_is_green(papp)


def spent_top_up(app, fake, amount="25"):
    """A partner who paid `amount` by card and spent 20 of it on an order."""
    client, account_id, key = partner_client(app)
    service = add_service(app)
    payment_id, session_id = start_checkout(client, fake, amount)
    completed = fake.completed(session_id)
    assert post_event(app.test_client(), event("checkout.session.completed", completed)
                      ).get_json()["outcome"] == "credited"
    placed = api(client, key, "add", service=str(service), link="https://example.com/a",
                 quantity="20000")
    assert placed["charge"] == "20", placed
    return client, account_id, key, payment_id, completed, service


def charge_refunded(completed, refunded=None):
    return event("charge.refunded", {
        "id": "ch_test_1", "object": "charge", "payment_intent": completed["payment_intent"],
        "amount": completed["amount_total"], "currency": completed["currency"],
        "amount_refunded": completed["amount_total"] if refunded is None else refunded,
        "refunded": True})


def test_a_refund_after_the_balance_was_spent_holds_the_account(papp, fake_stripe):
    client, account_id, key, payment_id, completed, service = spent_top_up(papp, fake_stripe)
    refund = charge_refunded(completed)
    body = post_event(papp.test_client(), refund).get_json()
    assert body["outcome"] == "refund: reversed 25"
    assert balance_of(papp, account_id) == 0 == ledger_total(papp, account_id)
    row = payment_row(papp, payment_id)
    assert (row.status, row.reversed, row.owed) == ("refunded", 25_000_000, 20_000_000)
    assert [r.amount for r in ledger_rows(papp, account_id, "payment_reversal")] == [-5_000_000]
    held = api(client, key, "add", service=str(service), link="https://example.com/b",
               quantity="10")
    assert held == {"error": "Account is on hold: a payment was taken back; contact the operator",
                    "code": "account_on_hold"}
    assert api(client, key, "balance") == {"balance": "0", "currency": "USD"}
    assert 'id="error-account_on_hold"' in client.get("/api").text  # the public error table
    runner = papp.test_cli_runner()
    shown = runner.invoke(serva_cli, args=["account", "show", "partner@example.com"])
    assert f"on hold:    yes: refund of payment PAY-{payment_id}: 20 owed" in shown.output
    holds = runner.invoke(serva_cli, args=["payment", "holds"])
    assert "partner@example.com\tbalance 0\towes 20" in holds.output
    audit_is_green(papp)
    # The same refund again, and a dispute of the same charge: nothing more is taken.
    assert post_event(papp.test_client(), refund).get_json()["outcome"].startswith("replay")
    dispute = event("charge.dispute.created", {
        "id": "dp_test_1", "object": "dispute", "payment_intent": completed["payment_intent"],
        "amount": completed["amount_total"], "currency": "usd"})
    assert post_event(papp.test_client(), dispute).get_json()["outcome"] == "dispute: nothing new"
    assert payment_row(papp, payment_id).owed == 20_000_000
    page = client.get("/profile/funds/")
    assert "account_on_hold" in text_of(page.text, "hold") or "on hold" in page.text
    # A later top-up settles what is owed first, and lifts the hold.
    second, session_id = start_checkout(client, fake_stripe, "30")
    post_event(papp.test_client(), event("checkout.session.completed",
                                         fake_stripe.completed(session_id)))
    assert balance_of(papp, account_id) == 10_000_000 == ledger_total(papp, account_id)
    assert "ORD-" in api(client, key, "add", service=str(service), link="https://example.com/c",
                         quantity="10")["order"]
    audit_is_green(papp)


def test_a_partial_refund_takes_back_its_share_once(papp, fake_stripe):
    client, account_id, _ = partner_client(papp)
    payment_id, session_id = start_checkout(client, fake_stripe, "40")
    completed = fake_stripe.completed(session_id)
    post_event(papp.test_client(), event("checkout.session.completed", completed))
    for refunded in (1000, 1000, 2500):  # cumulative, as Stripe's charge says it
        post_event(papp.test_client(), charge_refunded(completed, refunded))
    assert balance_of(papp, account_id) == 15_000_000
    assert payment_row(papp, payment_id).reversed == 25_000_000
    audit_is_green(papp)


def test_a_refund_before_its_credit_is_sent_again_later_and_then_applied(papp, fake_stripe):
    client, account_id, _ = partner_client(papp)
    payment_id, session_id = start_checkout(client, fake_stripe, "25")
    completed = fake_stripe.completed(session_id)
    refund = charge_refunded(completed)
    early = post_event(papp.test_client(), refund)
    assert early.status_code == 409 and early.get_json()["code"] == "retry_later"
    assert post_event(papp.test_client(), event("checkout.session.completed", completed)
                      ).get_json()["outcome"] == "credited"
    assert post_event(papp.test_client(), refund).get_json()["outcome"] == "refund: reversed 25"
    assert balance_of(papp, account_id) == 0
    assert payment_row(papp, payment_id).owed == 0
    audit_is_green(papp)


def test_events_of_no_serva_payment_or_unknown_types_are_answered_and_ignored(papp, fake_stripe):
    foreign = event("checkout.session.completed", {"id": "cs_other", "object": "checkout.session",
                                                   "metadata": {}, "payment_status": "paid"})
    assert post_event(papp.test_client(), foreign).get_json()["outcome"].startswith("ignored")
    other = event("customer.created", {"id": "cus_1", "object": "customer"})
    assert post_event(papp.test_client(), other).get_json()["outcome"].startswith("ignored")


def test_an_expired_session_closes_the_payment_and_a_late_completion_credits_nothing(
        papp, fake_stripe):
    client, account_id, _ = partner_client(papp)
    payment_id, session_id = start_checkout(client, fake_stripe, "25")
    expired = dict(fake_stripe.sessions[session_id], status="expired")
    post_event(papp.test_client(), event("checkout.session.expired", expired))
    assert payment_row(papp, payment_id).status == "expired"
    post_event(papp.test_client(), event("checkout.session.completed",
                                         fake_stripe.completed(session_id)))
    assert balance_of(papp, account_id) == 0


def test_stripe_unreachable_is_a_clear_message_and_the_payment_stays_open(papp, monkeypatch):
    monkeypatch.setattr(stripe, "api_base", "http://127.0.0.1:9")  # nothing listens there
    client, account_id, _ = partner_client(papp)
    response = add_funds(client, "25")
    assert response.status_code == 302
    page = client.get(response.headers["Location"])
    assert "could not be opened just now" in page.text
    with papp.app_context(), db.read() as conn:
        (row,) = payments.list_payments(conn, account_id=account_id)
    assert (row.status, row.gateway_id) == ("created", None)


def test_amounts_a_card_cannot_take_exactly_or_outside_the_bounds_are_refused(papp, fake_stripe):
    client, _, _ = partner_client(papp)
    for amount, message in (("25.555", "at most 2 decimals"), ("1", "The smallest top-up is 5"),
                            ("20000", "The largest top-up is 10000"), ("abc", "as a number")):
        response = add_funds(client, amount)
        assert response.status_code == 302
        assert message in client.get("/profile/funds/").text
    assert fake_stripe.sessions == {}


def test_a_deposit_bonus_is_its_own_ledger_row(tmp_path, fake_stripe):
    with payment_app(f"sqlite:///{tmp_path / 'b.sqlite'}", DEPOSIT_BONUS_BP="10",
                     DEPOSIT_BONUS_FROM="100") as app:
        client, account_id, _ = partner_client(app)
        for amount in ("100", "50"):
            _, session_id = start_checkout(client, fake_stripe, amount)
            post_event(app.test_client(), event("checkout.session.completed",
                                                fake_stripe.completed(session_id)))
        kinds = [(row.kind, row.amount) for row in ledger_rows(app, account_id)]
        assert kinds == [("payment", 100_000_000), ("payment_bonus", 10_000_000),
                         ("payment", 50_000_000)]
        audit_is_green(app)


def test_without_a_stripe_key_there_is_no_stripe_option(app, fake_stripe):
    client, _, _ = partner_client(app)
    page = client.get("/profile/funds/")
    assert page.status_code == 200 and 'id="gateway-stripe"' not in page.text
    assert "No payment method is set up" in page.text
    assert add_funds(client, "25").status_code == 302 and fake_stripe.sessions == {}
    payload = event("checkout.session.completed", {"id": "cs_1"})
    assert post_event(app.test_client(), payload).status_code == 404


@pytest.mark.slow
def test_postgresql_the_same_event_from_10_threads_credits_once(pg_url, fake_stripe):
    with payment_app(pg_url) as app:
        client, account_id, _ = partner_client(app)
        payment_id, session_id = start_checkout(client, fake_stripe, "25")
        completed = fake_stripe.completed(session_id)
        payload = event("checkout.session.completed", completed)
        with serving(app) as url:
            def send(i):
                body = payload if i % 2 else event(  # half replays, half new event ids
                    "checkout.session.async_payment_succeeded", completed)
                return requests.post(url + WEBHOOK, data=body, timeout=30, headers={
                    "Stripe-Signature": sign(body), "Content-Type": "application/json"})
            answers = together(10, send) + together(10, send)
        assert {r.status_code for r in answers} == {200}
        assert [r.json()["outcome"] for r in answers].count("credited") == 1
        assert [row.amount for row in ledger_rows(app, account_id)] == [25_000_000]
        assert balance_of(app, account_id) == 25_000_000
        refund = charge_refunded(completed)
        with serving(app) as url:
            together(5, lambda i: requests.post(url + WEBHOOK, data=refund, timeout=30, headers={
                "Stripe-Signature": sign(refund), "Content-Type": "application/json"}))
        assert balance_of(app, account_id) == 0 == payment_row(app, payment_id).owed
        audit_is_green(app)
        assert payment_row(app, payment_id).status == "refunded"
