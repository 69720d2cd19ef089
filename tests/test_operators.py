"""Operators from the CLI (`serva operator …`), the one permission table, and the activity
entry every changing CLI command writes in its own transaction."""
import json

import pyotp
import pytest
from sqlalchemy import select

from serva import db, operators, second_factor
from serva.cli import cli as serva_cli
from serva.schema import activity, ledger

from conftest import make_partner
from console_support import PASSWORD


def serva(app, *args, input=None):
    return app.test_cli_runner().invoke(serva_cli, args=[str(a) for a in args], input=input)


def entries(app):
    with app.app_context(), db.read() as conn:
        return conn.execute(select(activity).order_by(activity.c.id)).all()


def test_create_list_disable_enable(app):
    result = serva(app, "operator", "create", "Boss@Example.com", "--role", "owner",
                   "--password", PASSWORD)
    assert result.exit_code == 0 and result.stdout == "operator boss@example.com created (owner)\n"
    assert serva(app, "operator", "list").stdout == \
        "boss@example.com\towner\tactive\t2fa not enrolled\n"
    assert serva(app, "operator", "disable", "boss@example.com").exit_code == 0
    assert "\tdisabled\t" in serva(app, "operator", "list").stdout
    assert serva(app, "operator", "enable", "boss@example.com").exit_code == 0
    assert "\tactive\t" in serva(app, "operator", "list").stdout
    assert [(e.actor, e.action, e.subject) for e in entries(app)] == [
        ("cli", "operator.create", "boss@example.com"), ("cli", "operator.disable", "boss@example.com"),
        ("cli", "operator.enable", "boss@example.com")]


def test_create_prompts_for_the_password_and_refuses_bad_input(app):
    result = serva(app, "operator", "create", "a@example.com", "--role", "support",
                   input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    with app.app_context(), db.read() as conn:
        assert operators.check_password(operators.get_by_email(conn, "a@example.com"), PASSWORD)
    for args, message in [
            (["a@example.com", "--role", "owner", "--password", PASSWORD],
             "an operator with email a@example.com already exists"),
            (["b@example.com", "--role", "owner", "--password", "short"],
             "a password needs at least 8 characters"),
            (["not-an-email", "--role", "owner", "--password", PASSWORD], "not an email address")]:
        result = serva(app, "operator", "create", *args)
        assert result.exit_code == 2 and message in result.stderr
    assert serva(app, "operator", "create", "c@example.com", "--role", "boss",
                 "--password", PASSWORD).exit_code == 2
    assert serva(app, "operator", "disable", "nobody@example.com").stderr == \
        "error: no operator with email nobody@example.com\n"


def test_password_and_reset_2fa(app):
    serva(app, "operator", "create", "o@example.com", "--role", "owner", "--password", PASSWORD)
    assert serva(app, "operator", "password", "o@example.com", "--password", "another-pass").exit_code == 0
    with app.app_context(), db.write() as conn:
        row = operators.get_by_email(conn, "o@example.com")
        assert operators.check_password(row, "another-pass")
        secret = second_factor.pending_secret(conn, row)
        codes = second_factor.confirm(conn, operators.get_by_id(conn, row.id),
                                      pyotp.TOTP(secret).now())
        assert len(codes) == 10
    assert "2fa enrolled" in serva(app, "operator", "list").stdout
    assert serva(app, "operator", "reset-2fa", "o@example.com").exit_code == 0
    assert "2fa not enrolled" in serva(app, "operator", "list").stdout
    with app.app_context(), db.read() as conn:
        assert second_factor.recovery_codes_left(conn, row.id) == 0


def test_the_permission_table():
    assert all(operators.allowed("owner", right) for right in operators.RIGHTS)
    assert {r for r in operators.RIGHTS if operators.allowed("support", r)} == {
        "read", "order.status", "order.cancel", "refill.answer"}
    for right in ("account.money", "provider.edit", "key.revoke", "service.edit"):
        assert not operators.allowed("support", right)
    with pytest.raises(KeyError):
        operators.allowed("owner", "account.monye")


def test_a_cli_credit_records_its_activity_with_the_ledger_rows_request_id(app):
    make_partner(app, balance="0")
    assert serva(app, "account", "credit", "partner@example.com", "7.5", "--note", "wire").exit_code == 0
    [entry] = entries(app)
    assert (entry.actor, entry.action, entry.subject) == ("cli", "account.credit", "partner@example.com")
    assert json.loads(entry.before_json) == {"balance": 0}
    assert json.loads(entry.after_json) == {"balance": 7_500_000, "note": "wire"}
    with app.app_context(), db.read() as conn:
        row = conn.execute(select(ledger).order_by(ledger.c.id.desc())).first()
    assert row.request_id == entry.request_id and entry.request_id.startswith("cli:")


def test_a_refused_cli_change_records_nothing(app):
    make_partner(app, balance="1")
    result = serva(app, "account", "debit", "partner@example.com", "5", "--note", "oops")
    assert result.exit_code == 2 and "it cannot go below 0" in result.stderr
    result = serva(app, "account", "credit", "partner@example.com", "5", "--note", "  ")
    assert result.stderr == "error: a note must say why the balance changes\n"
    assert entries(app) == []


@pytest.mark.parametrize("args, action", [
    (["account", "approve", "partner@example.com"], "account.approve"),
    (["account", "ban", "partner@example.com", "--reason", "spam"], "account.ban"),
    (["account", "discount", "partner@example.com", "5"], "account.discount"),
    (["account", "id-format", "partner@example.com", "numeric"], "account.id_format"),
    (["account", "sign-out", "partner@example.com"], "account.sign_out"),
    (["key", "revoke", "partner@example.com"], "key.revoke"),
    (["key", "create", "partner@example.com"], "key.create"),
    (["coupon", "create", "SAVE10", "--percent", "10"], "coupon.create"),
    (["service", "add", "--name", "X", "--rate", "1"], "service.add"),
    (["provider", "add", "up", "--url", "sim://", "--key", "secret-key-123456"], "provider.add"),
])
def test_every_changing_command_records_its_activity(app, args, action):
    make_partner(app, approved=False)
    result = serva(app, *args)
    assert result.exit_code == 0, result.output
    assert [e.action for e in entries(app)] == [action]
    assert "secret-key-123456" not in (entries(app)[0].after_json or "")
