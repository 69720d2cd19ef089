"""Payments in the console over plain HTTP forms: the list with its filters and keyset pages,
flagged mismatches with the gateway's event ids, the overview's waiting payments and holds,
and the owner's approve / reject through the same domain functions as `serva payment …`:
the same refusals, the credit's ledger row and the activity entry in one transaction. Support
staff read payments but are refused a decision (403, logged); nobody signed out gets in."""
import json
import logging

from sqlalchemy import select

from serva import db, ledger as ledger_module, operators, payments
from serva.cli import cli as serva_cli
from serva.schema import activity

from console_support import csrf, post, signed_in_owner, signed_in_support
from fake_stripe import event
from payment_helpers import (  # noqa: F401 - fake_stripe and papp are fixtures
    add_funds, balance_of, fake_stripe, ledger_rows, papp, partner_client, payment_row,
    start_checkout, text_of)
from test_stripe_payments import post_event

PAGE = "/admin/payments/PAY-1"


def entries(app, action):
    with app.app_context(), db.read() as conn:
        return conn.execute(select(activity).where(activity.c.action == action)
                            .order_by(activity.c.id)).all()


def table(html, element_id) -> str:
    """The HTML of one table of a page (empty when the page has none)."""
    start = html.find(f'id="{element_id}"')
    return "" if start < 0 else html[start:html.index("</table>", start)]


def cli(app, *args):
    return app.test_cli_runner().invoke(serva_cli, args=list(args))


def manual_payment(app, amount="50", reference="TRX-1"):
    """The partner submits a transfer on the funds page: (partner client, account id)."""
    client, account_id, _ = partner_client(app)
    response = add_funds(client, amount, gateway="manual", reference=reference)
    assert response.headers["Location"].endswith("/profile/funds/PAY-1")
    return client, account_id


def test_approving_a_manual_payment_credits_once_with_its_ledger_row_and_activity_entry(papp):
    _, account_id = manual_payment(papp)
    owner, _, _ = signed_in_owner(papp)
    overview = owner.get("/admin/").text
    assert text_of(overview, "pending-manual") == "1"
    listed = owner.get("/admin/payments?gateway=manual&status=pending").text
    assert "PAY-1" in listed and "TRX-1" in listed and "partner@example.com" in listed
    text = post(owner, f"{PAGE}/approve", {"note": "bank ref 991"}, page=PAGE,
                follow_redirects=True).text
    assert "PAY-1: approved, credited (50 USD)" in text
    assert text_of(text, "status") == "paid" and text_of(text, "note") == "bank ref 991"
    [row] = ledger_rows(papp, account_id)
    [entry] = entries(papp, "payment.approve")
    assert (row.kind, row.amount, row.payment_id) == ("payment", 50_000_000, 1)
    assert balance_of(papp, account_id) == 50_000_000
    assert entry.actor == "operator:owner@example.com" and entry.subject == "PAY-1"
    assert entry.request_id == row.request_id  # one request, one transaction
    assert json.loads(entry.before_json)["status"] == "pending"
    assert json.loads(entry.after_json)["status"] == "paid"
    assert json.loads(entry.after_json)["note"] == "bank ref 991"
    assert text_of(owner.get("/admin/").text, "pending-manual") == "0"
    # Again, from the console and from the CLI: the same refusal, nothing more credited.
    again = post(owner, f"{PAGE}/approve", page=PAGE, follow_redirects=True).text
    command = cli(papp, "payment", "approve", "PAY-1")
    message = command.stderr.removeprefix("error: ").strip()
    assert command.exit_code == 2 and message == "payment PAY-1 is paid, not pending"
    assert message in again
    assert len(ledger_rows(papp, account_id)) == 1 and len(entries(papp, "payment.approve")) == 1
    assert cli(papp, "audit").exit_code == 0


def test_rejecting_needs_a_note_credits_nothing_and_the_partner_sees_why(papp):
    partner, account_id = manual_payment(papp)
    owner, _, _ = signed_in_owner(papp)
    text = post(owner, f"{PAGE}/reject", {"note": "  "}, page=PAGE, follow_redirects=True).text
    command = cli(papp, "payment", "reject", "PAY-1", "--note", " ")
    assert command.stderr == "error: a note must say why the payment is rejected\n"
    assert "a note must say why the payment is rejected" in text
    assert payment_row(papp, 1).status == "pending" and entries(papp, "payment.reject") == []
    text = post(owner, f"{PAGE}/reject", {"note": "no such transfer arrived"}, page=PAGE,
                follow_redirects=True).text
    assert "PAY-1: rejected (50 USD)" in text and text_of(text, "status") == "rejected"
    assert 'id="approve"' not in text and 'id="reject"' not in text  # decided: no more forms
    [entry] = entries(papp, "payment.reject")
    assert json.loads(entry.after_json)["note"] == "no such transfer arrived"
    again = post(owner, f"{PAGE}/approve", page=PAGE, follow_redirects=True).text
    assert "payment PAY-1 is rejected, not pending" in again
    assert ledger_rows(papp, account_id) == []
    assert "no such transfer arrived" in partner.get("/profile/funds/PAY-1").text


def test_the_clis_approve_and_reject_write_the_same_activity_entries(papp):
    client, account_id = manual_payment(papp)
    add_funds(client, "20", gateway="manual", reference="TRX-2")
    assert cli(papp, "payment", "approve", "PAY-1", "--note", "seen").exit_code == 0
    assert cli(papp, "payment", "reject", "PAY-2", "--note", "twice").exit_code == 0
    [approved], [rejected] = entries(papp, "payment.approve"), entries(papp, "payment.reject")
    [credit] = ledger_rows(papp, account_id)
    assert (approved.actor, approved.subject, rejected.subject) == ("cli", "PAY-1", "PAY-2")
    assert approved.request_id == credit.request_id and approved.request_id.startswith("cli:")
    assert json.loads(rejected.before_json)["status"] == "pending"
    assert json.loads(rejected.after_json) == {**json.loads(rejected.before_json),
                                               "status": "rejected", "note": "twice"}


def test_support_reads_payments_but_is_refused_a_decision_with_403_logged(papp, caplog):
    _, account_id = manual_payment(papp)
    client = signed_in_support(papp)
    assert client.get("/admin/payments").status_code == 200
    assert client.get(PAGE).status_code == 200
    assert not operators.allowed("support", "payment.decide")
    with caplog.at_level(logging.WARNING):
        for action in ("approve", "reject"):
            response = post(client, f"{PAGE}/{action}", {"note": "a favour"}, page=PAGE)
            assert response.status_code == 403 and "The attempt was logged" in response.text
    refused = entries(papp, "refused")
    assert [entry.subject for entry in refused] == [f"{PAGE}/approve", f"{PAGE}/reject"]
    assert json.loads(refused[0].after_json) == {"right": "payment.decide", "role": "support"}
    assert "refused payment.decide to operator support@example.com" in caplog.text
    assert payment_row(papp, 1).status == "pending" and balance_of(papp, account_id) == 0


def test_nobody_signed_out_sees_or_decides_a_payment(papp):
    _, account_id = manual_payment(papp)
    client = papp.test_client()
    for path in ("/admin/payments", PAGE):
        response = client.get(path)
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/admin/login")
    response = client.post(f"{PAGE}/approve", data={"csrf_token": csrf(client)})
    assert response.status_code == 401
    assert payment_row(papp, 1).status == "pending" and balance_of(papp, account_id) == 0


def test_a_flagged_mismatch_shows_with_its_event_ids_and_the_owner_may_credit_it(
        papp, fake_stripe):
    client, account_id, _ = partner_client(papp)
    payment_id, session_id = start_checkout(client, fake_stripe, "25")
    wrong = event("checkout.session.completed",
                  fake_stripe.completed(session_id, amount_total=2400), event_id="evt_wrong_1")
    assert post_event(papp.test_client(), wrong).get_json()["outcome"].startswith("flagged")
    owner, _, _ = signed_in_owner(papp)
    assert text_of(owner.get("/admin/").text, "flagged-count") == "1"
    listed = owner.get("/admin/payments?flagged=yes&status=open").text
    listed = table(listed, "payments")
    assert f"PAY-{payment_id}" in listed and "evt_wrong_1" in listed and session_id in listed
    assert "flagged: amount 2400 instead of 2500 (minor units)" in listed
    assert f"PAY-{payment_id}" not in owner.get("/admin/payments?flagged=no").text
    page = f"/admin/payments/PAY-{payment_id}"
    shown = owner.get(page).text
    events = table(shown, "events")
    assert "evt_wrong_1" in events and "checkout.session.completed" in events
    assert "flagged: amount 2400 instead of 2500" in events
    assert text_of(shown, "flagged").startswith("Flagged: amount 2400 instead of 2500")
    text = post(owner, f"{page}/approve", {"note": "checked in Stripe"}, page=page,
                follow_redirects=True).text
    assert f"PAY-{payment_id}: approved, credited (25 USD)" in text
    assert balance_of(papp, account_id) == 25_000_000
    assert text_of(owner.get("/admin/").text, "flagged-count") == "0"


def test_a_stripe_payment_waiting_for_its_webhook_is_not_approved_by_hand(papp, fake_stripe):
    client, account_id, _ = partner_client(papp)
    payment_id, _ = start_checkout(client, fake_stripe, "25")
    owner, _, _ = signed_in_owner(papp)
    page = f"/admin/payments/PAY-{payment_id}"
    assert 'id="approve"' not in owner.get(page).text
    text = post(owner, f"{page}/approve", page=page, follow_redirects=True).text
    assert "is credited by its gateway&#39;s webhook; only a flagged one may be approved" in text
    assert balance_of(papp, account_id) == 0 and entries(papp, "payment.approve") == []


def test_payments_are_filtered_and_keyset_paginated(papp):
    client, account_id = manual_payment(papp, reference="ref-0")
    with papp.app_context(), db.write() as conn:
        for number in range(1, 55):
            payments.create(conn, account_id, "manual", 5_000_000, "USD",
                            gateway_id=f"{account_id}/ref-{number}", reference=f"ref-{number}",
                            status="pending")
    owner, _, _ = signed_in_owner(papp)
    first = owner.get("/admin/payments").text
    assert ">PAY-55<" in first and ">PAY-6<" in first and ">PAY-5<" not in first
    assert '<a href="/admin/payments?before=6" id="next">' in first
    older = owner.get("/admin/payments?before=6").text
    assert ">PAY-5<" in older and ">PAY-1<" in older and ">PAY-6<" not in older
    kept = owner.get("/admin/payments?gateway=manual&account=partner@example.com").text
    assert "before=6&amp;gateway=manual&amp;account=partner@example.com" in kept
    assert ">PAY-1<" not in owner.get("/admin/payments?status=paid").text
    for query, message in (("status=nonsense", "status must be one of: open, created"),
                           ("gateway=paypal", "gateway must be one of: stripe, manual"),
                           ("flagged=maybe", "flagged must be yes or no"),
                           ("account=nobody@x.test", "no account with email nobody@x.test"),
                           ("before=x", "before must be a whole number")):
        response = owner.get(f"/admin/payments?{query}")
        assert response.status_code == 400 and message in response.text, query
    assert owner.get("/admin/payments/nonsense").status_code == 404
    assert owner.get("/admin/payments/PAY-999").status_code == 404


def test_the_overview_shows_accounts_on_hold_and_what_they_owe(papp):
    _, account_id = manual_payment(papp)
    assert cli(papp, "payment", "approve", "PAY-1").exit_code == 0
    with papp.app_context(), db.write() as conn:
        payments.lock_account(conn, account_id)
        ledger_module.post(conn, account_id, -40_000_000, "adjustment", "spent")
        payments.reverse(conn, payments.get(conn, 1), 50_000_000, "refunded", "refund")
    owner, _, _ = signed_in_owner(papp)
    text = owner.get("/admin/").text
    assert text_of(text, "held-count") == "1" and text_of(text, "owed-total") == "40"
    held = table(text, "held-accounts")
    assert "partner@example.com" in held and "refund of payment PAY-1: 40 owed" in held
    assert "<td>40</td><td>0</td>" in held  # owes 40, balance 0
