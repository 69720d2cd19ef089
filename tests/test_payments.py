"""Manual payments (the partner's reference, the operator's approve/reject), the payment
settings, holds settled by later top-ups or written off, the audit's payment checks, and the
database's own guards: one credit and one bonus per payment."""
import pytest
from sqlalchemy import insert, update
from sqlalchemy.exc import IntegrityError

from serva import db, ledger as ledger_module, payments, settings
from serva.cli import cli as serva_cli
from serva.schema import ledger, payments as payments_table
from serva.settings import SettingsError

from fake_stripe import SECRET_KEY, WEBHOOK_SECRET
from test_dashboard import make_account, sign_in
from payment_helpers import (  # noqa: F401 - papp is a fixture
    MANUAL_TEXT, add_funds, balance_of, ledger_rows, papp, partner_client, payment_row, text_of)


def cli(app, *args):
    return app.test_cli_runner().invoke(serva_cli, args=list(args))


def submit_manual(client, amount="50", reference="TRX-1"):
    return add_funds(client, amount, gateway="manual", reference=reference)


def test_a_manual_payment_is_credited_once_when_the_operator_approves(papp):
    client, account_id, _ = partner_client(papp)
    page = client.get("/profile/funds/")
    assert MANUAL_TEXT in text_of(page.text, "manual-instructions")
    response = submit_manual(client)
    assert response.status_code == 302 and response.headers["Location"].endswith("/profile/funds/PAY-1")
    assert text_of(client.get("/profile/funds/PAY-1").text, "payment-state") == \
        "Waiting for confirmation"
    assert balance_of(papp, account_id) == 0
    # The same reference again (a double click, a second tab) is refused by the unique key.
    submit_manual(client)
    assert "already submitted" in client.get("/profile/funds/").text
    assert len(cli(papp, "payment", "list", "--gateway", "manual").output.splitlines()) == 1
    approved = cli(papp, "payment", "approve", "PAY-1", "--note", "bank ref 991")
    assert approved.exit_code == 0 and approved.output == "PAY-1: approved, credited (50 USD)\n"
    assert cli(papp, "payment", "approve", "1").exit_code == 2
    assert cli(papp, "payment", "reject", "1", "--note", "late").exit_code == 2
    assert [(row.kind, row.amount, row.payment_id) for row in ledger_rows(papp, account_id)] == \
        [("payment", 50_000_000, 1)]
    assert "payment PAY-1" in ledger_rows(papp, account_id)[0].note
    assert ledger_rows(papp, account_id)[0].request_id.startswith("cli:")
    listing = client.get("/profile/funds/").text
    assert text_of(listing, "balance") == "50 USD" and "Credited" in listing
    assert cli(papp, "audit").exit_code == 0


def test_a_rejected_manual_payment_credits_nothing_and_the_partner_sees_why(papp):
    client, account_id, _ = partner_client(papp)
    submit_manual(client, reference="my transfer")
    rejected = cli(papp, "payment", "reject", "PAY-1", "--note", "no such transfer arrived")
    assert rejected.exit_code == 0
    assert cli(papp, "payment", "approve", "PAY-1").exit_code == 2
    page = client.get("/profile/funds/PAY-1").text
    assert text_of(page, "payment-state") == "Rejected" and "no such transfer arrived" in page
    assert balance_of(papp, account_id) == 0


def test_one_partner_cannot_see_anothers_payment(papp):
    client, _, _ = partner_client(papp)
    submit_manual(client)
    make_account(papp, email="other@example.com")
    other = papp.test_client()
    sign_in(other, email="other@example.com")
    assert other.get("/profile/funds/PAY-1").status_code == 404
    assert other.get("/profile/funds/nonsense").status_code == 404
    assert papp.test_client().get("/profile/funds/").status_code == 302  # signed out: sign in


def test_the_funds_form_needs_its_csrf_token(papp):
    client, _, _ = partner_client(papp)
    response = client.post("/profile/funds/", data={"gateway": "manual", "amount": "50",
                                                    "reference": "x"})
    assert response.status_code == 400 and "The form expired" in response.text


def test_a_manual_payment_needs_a_reference_and_the_bounds(papp):
    client, _, _ = partner_client(papp)
    submit_manual(client, reference="  ")
    assert "Enter the reference" in client.get("/profile/funds/").text
    submit_manual(client, amount="0.5")
    assert "The smallest top-up is 5 USD" in client.get("/profile/funds/").text
    assert cli(papp, "payment", "list").output == "none\n"


def test_the_ledger_refuses_a_second_credit_or_bonus_for_one_payment(papp):
    client, account_id, _ = partner_client(papp)
    submit_manual(client)
    cli(papp, "payment", "approve", "PAY-1")
    for kind in ("payment", "payment_bonus"):
        row = {"account_id": account_id, "amount": 1, "kind": kind, "payment_id": 1,
               "note": "", "created_at": 1}
        with papp.app_context():
            if kind == "payment_bonus":
                with db.write() as conn:
                    conn.execute(insert(ledger).values(**row))
            with pytest.raises(IntegrityError):
                with db.write() as conn:
                    conn.execute(insert(ledger).values(**row))


def test_the_audit_names_a_payment_whose_ledger_rows_disagree(papp):
    client, account_id, _ = partner_client(papp)
    submit_manual(client)
    cli(papp, "payment", "approve", "PAY-1")
    with papp.app_context(), db.write() as conn:
        conn.execute(update(payments_table).values(amount=60_000_000))
    result = cli(papp, "audit")
    assert result.exit_code == 1 and "payment PAY-1 (paid): amount 60" in result.output


def test_a_hold_is_settled_by_a_top_up_or_written_off_by_the_operator(papp):
    client, account_id, key = partner_client(papp)
    submit_manual(client, "50", "first")
    cli(papp, "payment", "approve", "PAY-1")
    with papp.app_context(), db.write() as conn:
        conn.execute(update(payments_table).where(payments_table.c.id == 1)
                     .values(status="refunded"))
        payments.lock_account(conn, account_id)
        ledger_module.post(conn, account_id, -40_000_000, "adjustment", "spent")
        row = payments.get(conn, 1)
        assert payments.reverse(conn, row, 50_000_000, "refunded", "refund") == 50_000_000
    assert balance_of(papp, account_id) == 0
    assert payment_row(papp, 1).owed == 40_000_000
    assert cli(papp, "audit").exit_code == 0
    with papp.app_context(), db.read() as conn:
        assert payments.overview(conn) == {"pending_manual": 0, "flagged": 0, "held_accounts": 1,
                                           "owed": 40_000_000}
    not_yet = cli(papp, "payment", "release", "partner@example.com")
    assert not_yet.output.endswith("owes 40: still on hold\n")
    submit_manual(client, "30", "second")  # settles 30 of the 40
    cli(papp, "payment", "approve", "PAY-2")
    assert balance_of(papp, account_id) == 0 and payment_row(papp, 1).owed == 10_000_000
    forgiven = cli(papp, "payment", "release", "partner@example.com", "--write-off")
    assert forgiven.output == ("partner@example.com: collected 0, written off 10, owes 0: "
                               "hold lifted\n")
    assert cli(papp, "payment", "holds").output == "none\n"
    assert "on hold:    no" in cli(papp, "account", "show", "partner@example.com").output
    assert cli(papp, "audit").exit_code == 0


def test_payment_settings_are_checked_and_keys_never_shown():
    keys = {"SERVA_STRIPE_SECRET_KEY": SECRET_KEY, "SERVA_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET}
    loaded = settings.load({**keys, "SERVA_TOPUP_MIN": "10", "SERVA_TOPUP_MAX": "500",
                            "SERVA_DEPOSIT_BONUS_PERCENT": "2.5",
                            "SERVA_DEPOSIT_BONUS_FROM": "100"})
    assert (loaded.topup_minimum, loaded.topup_maximum) == (10_000_000, 500_000_000)
    assert (loaded.deposit_bonus_bp, loaded.deposit_bonus_from) == (250, 100_000_000)
    assert SECRET_KEY not in repr(loaded) and WEBHOOK_SECRET not in repr(loaded)
    refused = {
        "SERVA_STRIPE_SECRET_KEY": {"SERVA_STRIPE_SECRET_KEY": "pk_live_publishable_key_1"},
        "SERVA_STRIPE_WEBHOOK_SECRET": {"SERVA_STRIPE_SECRET_KEY": SECRET_KEY},
        "SERVA_TOPUP_MAX": {"SERVA_TOPUP_MIN": "100", "SERVA_TOPUP_MAX": "50"},
        "SERVA_TOPUP_MIN": {"SERVA_TOPUP_MIN": "0"},
        "SERVA_DEPOSIT_BONUS_PERCENT": {"SERVA_DEPOSIT_BONUS_PERCENT": "150"},
        "SERVA_CURRENCY": {**keys, "SERVA_CURRENCY": "USDT"},
    }
    for name, environ in refused.items():
        with pytest.raises(SettingsError) as error:
            settings.load(environ)
        assert str(error.value).startswith(f"{name} must be"), str(error.value)
        assert "pk_live_publishable_key_1" not in str(error.value)
        assert SECRET_KEY not in str(error.value)


def test_the_deposit_bonus_rule():
    assert payments.deposit_bonus(100_000_000, 250, 100_000_000) == 2_500_000
    assert payments.deposit_bonus(99_999_999, 250, 100_000_000) == 0
    assert payments.deposit_bonus(100_000_000, 0, 0) == 0
    assert payments.deposit_bonus(3, 5000, 0) == 2  # half-up, once
