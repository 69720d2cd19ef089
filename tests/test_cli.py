"""The operator CLI (`flask --app serva …` / `serva …`): every command, scriptable output, and
our own argument errors as one line `error: …` on stderr with exit status 2."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from serva import db
from serva.cli import cli as serva_cli
from serva.demo import CATALOG, DEMO_EMAIL, DEMO_PASSWORD
from serva.ledger import ledger_sum
from serva.schema import accounts, api_keys, ledger, services

from conftest import make_partner

KEY_RE = re.compile(r"sk_[A-Za-z0-9_-]{43}")


def run(runner, *args):
    """`serva ARGS…` on the test app (the console script's command group)."""
    result = runner.invoke(serva_cli, args=[str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def ok(runner, *args):
    result = run(runner, *args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def fails(runner, *args, match=None):
    """Our own argument error: exit 2, exactly one line `error: …` on stderr, nothing on stdout."""
    result = run(runner, *args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    if match:
        assert re.search(match, lines[0]), lines[0]
    return lines[0]


def api(client, key, action="balance", **params):
    response = client.post("/api/v1", data={"action": action, "key": key, **params})
    assert response.status_code == 200
    return response.get_json()


def account_row(app, email):
    with app.app_context(), db.read() as conn:
        return conn.execute(select(accounts).where(accounts.c.email == email)).first()


def ledger_rows(app, account_id):
    with app.app_context(), db.read() as conn:
        return conn.execute(select(ledger).where(ledger.c.account_id == account_id)
                            .order_by(ledger.c.id)).all()


def service_row(app, service_id):
    with app.app_context(), db.read() as conn:
        return conn.execute(select(services).where(services.c.id == service_id)).first()


def service_count(app):
    with app.app_context(), db.read() as conn:
        return conn.execute(select(func.count()).select_from(services)).scalar()


# ---------------------------------------------------------------- init-db

def test_init_db_is_safe_to_run_again(app, runner, partner):
    out = ok(runner, "init-db")
    assert "already at schema revision" in out and "nothing to do" in out
    assert account_row(app, "partner@example.com") is not None


def test_init_db_reset_wipes_the_data(app, runner, partner):
    ok(runner, "init-db", "--reset")
    assert account_row(app, "partner@example.com") is None
    assert db.schema_revision(app.extensions["serva.engine"]) is not None


def test_init_db_on_a_fresh_file(tmp_path):
    from serva import create_app
    app = create_app({"TESTING": True, "SECRET_KEY": "t",
                      "DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.sqlite'}"})
    assert db.schema_revision(app.extensions["serva.engine"]) is None
    result = app.test_cli_runner().invoke(serva_cli, args=["init-db"])
    assert result.exit_code == 0
    assert db.schema_revision(app.extensions["serva.engine"]) is not None
    app.extensions["serva.engine"].dispose()


# ---------------------------------------------------------------- demo

def test_demo_prints_the_sign_in_and_a_working_key_last(app, runner, client):
    out = ok(runner, "demo")
    lines = out.splitlines()
    assert DEMO_EMAIL in out and DEMO_PASSWORD in out
    assert KEY_RE.fullmatch(lines[-1])
    assert api(client, lines[-1]) == {"balance": "100", "currency": "USD"}
    catalog = api(client, lines[-1], "services")
    assert sorted(int(entry["service"]) for entry in catalog) == sorted(e["id"] for e in CATALOG)


def test_demo_is_idempotent(app, runner, client):
    first_key = ok(runner, "demo").splitlines()[-1]
    second_key = ok(runner, "demo").splitlines()[-1]
    assert first_key != second_key
    with app.app_context(), db.read() as conn:
        assert conn.execute(select(func.count()).select_from(accounts)).scalar() == 1
        assert conn.execute(select(func.count()).select_from(services)).scalar() == 4
        demo = conn.execute(select(accounts)).first()
        assert demo.balance == ledger_sum(conn, demo.id)
    assert api(client, second_key) == {"balance": "100", "currency": "USD"}  # not doubled
    assert api(client, first_key)["code"] == "key_revoked"


def test_demo_tops_the_balance_back_up_after_spending(app, runner, client):
    key = ok(runner, "demo").splitlines()[-1]
    order = api(client, key, "add", service="1234", link="https://example.com/p/1", quantity="1000")
    assert order["balance"] == "99.11"
    key = ok(runner, "demo").splitlines()[-1]
    assert api(client, key)["balance"] == "100"
    with app.app_context(), db.read() as conn:
        demo = conn.execute(select(accounts)).first()
        assert demo.balance == ledger_sum(conn, demo.id)


def test_demo_puts_a_broken_demo_back_in_working_order(app, runner, client):
    ok(runner, "demo")
    ok(runner, "account", "ban", DEMO_EMAIL, "--reason", "testing")
    ok(runner, "account", "unapprove", DEMO_EMAIL)
    ok(runner, "service", "disable", "1234")
    key = ok(runner, "demo").splitlines()[-1]
    assert api(client, key) == {"balance": "100", "currency": "USD"}
    assert "1234" in [entry["service"] for entry in api(client, key, "services")]
    row = account_row(app, DEMO_EMAIL)
    assert row.api_access == "approved" and not row.banned


def test_service_add_refuses_an_empty_name(runner):
    fails(runner, "service", "add", "--name", "  ", "--rate", "1", match="^error: a service needs a name$")


def test_demo_keeps_other_accounts_and_services(app, runner, partner):
    ok(runner, "service", "add", "--id", "42", "--name", "Mine", "--rate", "1")
    ok(runner, "demo")
    assert service_row(app, 42).name == "Mine"
    assert account_row(app, "partner@example.com").balance == 100_000_000


# ---------------------------------------------------------------- account

def test_account_create(app, runner, client):
    out = ok(runner, "account", "create", "New@Example.com", "--password", "long-enough")
    assert "new@example.com" in out
    row = account_row(app, "new@example.com")
    assert row.api_access == "none" and not row.banned and row.balance == 0
    assert row.password_hash and "long-enough" not in row.password_hash
    key = ok(runner, "key", "create", "new@example.com").strip()
    assert api(client, key)["code"] == "api_access_not_approved"


def test_account_create_approved(app, runner, client):
    ok(runner, "account", "create", "a@example.com", "--password", "long-enough", "--approve")
    assert account_row(app, "a@example.com").api_access == "approved"
    key = ok(runner, "key", "create", "a@example.com").strip()
    assert api(client, key) == {"balance": "0", "currency": "USD"}


def test_account_create_without_password(app, runner):
    ok(runner, "account", "create", "nopw@example.com")
    assert account_row(app, "nopw@example.com").password_hash is None


def test_account_create_errors(app, runner, partner):
    fails(runner, "account", "create", "partner@example.com", match="already exists")
    fails(runner, "account", "create", "PARTNER@example.com ", match="already exists")
    fails(runner, "account", "create", "not-an-email", match="email")
    fails(runner, "account", "create", "x@example.com", "--password", "short", match="8")
    assert account_row(app, "x@example.com") is None


def test_account_show(app, runner, partner):
    ok(runner, "account", "discount", "partner@example.com", "12.5")
    out = ok(runner, "account", "show", "partner@example.com")
    assert "partner@example.com" in out
    assert "approved" in out
    assert "100 USD" in out
    assert "12.5%" in out
    assert partner[1][:10] in out          # the key's display prefix...
    assert partner[1] not in out           # ...never the key


def test_account_requests_lists_pending_requests(app, runner):
    from serva import accounts as accounts_repo
    make_partner(app, email="waiting@example.com", approved=False)
    with app.app_context(), db.write() as conn:
        accounts_repo.request_api_access(conn, account_row(app, "waiting@example.com").id)
    assert "waiting@example.com" in ok(runner, "account", "requests")


def test_account_approve_and_unapprove(app, runner, client):
    _, key = make_partner(app, email="p@example.com", approved=False)
    assert api(client, key)["code"] == "api_access_not_approved"
    ok(runner, "account", "approve", "p@example.com")
    assert api(client, key)["balance"] == "100"
    ok(runner, "account", "unapprove", "p@example.com")
    assert api(client, key)["code"] == "api_access_not_approved"


def test_account_ban_and_unban(app, runner, client, partner):
    ok(runner, "account", "ban", "partner@example.com", "--reason", "chargebacks")
    assert api(client, partner[1])["code"] == "account_banned"
    assert "chargebacks" in ok(runner, "account", "show", "partner@example.com")
    ok(runner, "account", "unban", "partner@example.com")
    assert api(client, partner[1])["balance"] == "100"


@pytest.mark.parametrize("command", [["show"], ["approve"], ["unapprove"], ["ban"], ["unban"],
                                     ["credit", "nobody@example.com", "5", "--note", "x"],
                                     ["debit", "nobody@example.com", "5", "--note", "x"],
                                     ["discount", "nobody@example.com", "5"],
                                     ["rate", "nobody@example.com", "1", "5"]])
def test_account_commands_on_an_unknown_email(app, runner, command):
    args = ["account", *command] if len(command) > 1 else ["account", command[0], "nobody@example.com"]
    fails(runner, *args, match="nobody@example.com")


def test_account_credit_writes_a_ledger_row_with_the_note(app, runner, client, partner):
    out = ok(runner, "account", "credit", "partner@example.com", "25.50", "--note", "wire #123")
    assert "125.5" in out
    rows = ledger_rows(app, partner[0])
    assert rows[-1].amount == 25_500_000
    assert rows[-1].note == "wire #123"
    assert rows[-1].kind == "topup"
    assert account_row(app, "partner@example.com").balance == sum(r.amount for r in rows)
    assert api(client, partner[1])["balance"] == "125.5"


def test_account_debit_writes_a_ledger_row(app, runner, client, partner):
    ok(runner, "account", "debit", "partner@example.com", "0.000001", "--note", "correction")
    rows = ledger_rows(app, partner[0])
    assert (rows[-1].amount, rows[-1].note) == (-1, "correction")
    assert api(client, partner[1])["balance"] == "99.999999"
    assert account_row(app, "partner@example.com").balance == sum(r.amount for r in rows)


def test_account_debit_never_goes_below_zero(app, runner, partner):
    before = ledger_rows(app, partner[0])
    fails(runner, "account", "debit", "partner@example.com", "100.000001", "--note", "x", match="below 0")
    assert ledger_rows(app, partner[0]) == before
    ok(runner, "account", "debit", "partner@example.com", "100", "--note", "all of it")
    assert account_row(app, "partner@example.com").balance == 0


@pytest.mark.parametrize("amount", ["abc", "0", "0.0000001", "1e3", "1,5", "99999999999999999999",
                                    "", "NaN"])
def test_account_credit_bad_amounts(app, runner, partner, amount):
    before = ledger_rows(app, partner[0])
    fails(runner, "account", "credit", "partner@example.com", amount, "--note", "x")
    assert ledger_rows(app, partner[0]) == before


def test_account_credit_negative_amount_is_refused(app, runner, partner):
    result = run(runner, "account", "credit", "partner@example.com", "--note", "x", "--", "-5")
    assert result.exit_code == 2
    assert account_row(app, "partner@example.com").balance == 100_000_000


@pytest.mark.parametrize("note", ["", "   "])
def test_account_credit_needs_a_real_note(app, runner, partner, note):
    fails(runner, "account", "credit", "partner@example.com", "5", "--note", note, match="note")


def test_account_credit_without_note_is_a_usage_error(app, runner, partner):
    result = run(runner, "account", "credit", "partner@example.com", "5")
    assert result.exit_code == 2
    assert len(ledger_rows(app, partner[0])) == 1


def test_balance_equals_the_ledger_sum_after_many_changes(app, runner, partner):
    for amount in ("0.1", "0.2", "0.000003", "1000"):
        ok(runner, "account", "credit", "partner@example.com", amount, "--note", "t")
    ok(runner, "account", "debit", "partner@example.com", "0.3", "--note", "t")
    with app.app_context(), db.read() as conn:
        assert ledger_sum(conn, partner[0]) == 1100_000_003
    assert account_row(app, "partner@example.com").balance == 1100_000_003
    assert "audit passed" in ok(runner, "audit")


def test_account_discount(app, runner, client, partner):
    ok(runner, "service", "add", "--id", "1234", "--name", "F", "--rate", "0.89")
    out = ok(runner, "account", "discount", "partner@example.com", "10")
    assert "10%" in out
    assert account_row(app, "partner@example.com").discount_bp == 1000
    assert api(client, partner[1], "services")[0]["rate"] == "0.801"
    ok(runner, "account", "discount", "partner@example.com", "0")
    assert api(client, partner[1], "services")[0]["rate"] == "0.89"


@pytest.mark.parametrize("percent", ["101", "100.01", "12.345", "abc", "", "1e1"])
def test_account_discount_errors(app, runner, partner, percent):
    fails(runner, "account", "discount", "partner@example.com", percent)
    assert account_row(app, "partner@example.com").discount_bp == 0


def test_account_rate_and_clear(app, runner, client, partner):
    ok(runner, "service", "add", "--id", "1234", "--name", "F", "--rate", "0.89")
    ok(runner, "account", "discount", "partner@example.com", "50")
    out = ok(runner, "account", "rate", "partner@example.com", "1234", "0.5")
    assert "0.5" in out
    assert api(client, partner[1], "services")[0]["rate"] == "0.5"
    assert "service 1234 at 0.5" in ok(runner, "account", "show", "partner@example.com")
    ok(runner, "account", "rate", "partner@example.com", "1234", "--clear")
    assert api(client, partner[1], "services")[0]["rate"] == "0.445"


def test_account_rate_errors(app, runner, partner):
    ok(runner, "service", "add", "--id", "1234", "--name", "F", "--rate", "0.89")
    fails(runner, "account", "rate", "partner@example.com", "1234", match="RATE or --clear")
    fails(runner, "account", "rate", "partner@example.com", "1234", "1", "--clear", match="RATE or --clear")
    fails(runner, "account", "rate", "partner@example.com", "999", "1", match="999")
    fails(runner, "account", "rate", "partner@example.com", "1234", "abc")
    fails(runner, "account", "rate", "partner@example.com", "1234", "--", "-1", match="negative")


# ---------------------------------------------------------------- keys

def test_key_create_prints_only_the_key(app, runner, client, partner):
    result = run(runner, "key", "create", "partner@example.com")
    assert result.exit_code == 0
    assert KEY_RE.fullmatch(result.stdout.rstrip("\n"))
    assert result.stdout.count("\n") == 1
    assert result.stderr == ""
    new = result.stdout.strip()
    assert api(client, new)["balance"] == "100"
    assert api(client, partner[1])["code"] == "key_revoked"


def test_key_create_output_is_usable_in_a_shell_pipeline(app, runner, client, partner):
    keys_made = [ok(runner, "key", "create", "partner@example.com").strip() for _ in range(3)]
    assert len(set(keys_made)) == 3
    assert [api(client, k).get("code") for k in keys_made] == ["key_revoked", "key_revoked", None]


def test_key_create_for_an_unknown_account(app, runner):
    fails(runner, "key", "create", "nobody@example.com", match="nobody@example.com")


def test_key_revoke(app, runner, client, partner):
    out = ok(runner, "key", "revoke", "partner@example.com")
    assert "revoked" in out
    assert api(client, partner[1])["code"] == "key_revoked"
    fails(runner, "key", "revoke", "partner@example.com", match="no active key")


def test_key_revoke_unknown_account(app, runner):
    fails(runner, "key", "revoke", "nobody@example.com")


def test_keys_are_stored_hashed_by_the_cli(app, runner, partner):
    raw = ok(runner, "key", "create", "partner@example.com").strip()
    with app.app_context(), db.read() as conn:
        stored = conn.execute(select(api_keys.c.key_hash, api_keys.c.prefix)).all()
    assert all(raw not in (h, p) for h, p in stored)


# ---------------------------------------------------------------- services

def test_service_add_default(app, runner, client, partner):
    out = ok(runner, "service", "add", "--id", "1234", "--name", "Instagram Followers",
             "--category", "Instagram", "--rate", "0.89", "--min", "100", "--max", "100000",
             "--refill-days", "30")
    assert "1234" in out
    assert api(client, partner[1], "services") == [{
        "service": "1234", "name": "Instagram Followers", "category": "Instagram", "type": "Default",
        "rate": "0.89", "min": 100, "max": 100000, "fields": [], "refill": True, "cancel": False,
        "dripfeed": False}]
    assert service_row(app, 1234).refill_days == 30


def test_service_add_without_id_takes_the_next_one(app, runner):
    ok(runner, "service", "add", "--id", "500", "--name", "A", "--rate", "1")
    out = ok(runner, "service", "add", "--name", "B", "--rate", "1")
    assert "501" in out
    assert service_row(app, 501).name == "B"


def test_service_add_with_manual_fields(app, runner, client, partner):
    ok(runner, "service", "add", "--id", "7788", "--name", "Diamonds", "--kind", "fields",
       "--rate", "20", "--min", "10", "--max", "10000",
       "--field", "player_id:Player ID", "--field", "server_id:Server ID:optional")
    entry = api(client, partner[1], "services")[0]
    assert entry["fields"] == [{"name": "player_id", "label": "Player ID", "required": True},
                               {"name": "server_id", "label": "Server ID", "required": False}]
    assert entry["type"] == "Manual"


def test_service_add_lines_and_package(app, runner):
    ok(runner, "service", "add", "--id", "1", "--name", "Comments", "--kind", "lines",
       "--lines-field", "comments", "--rate", "12", "--max", "1000")
    ok(runner, "service", "add", "--id", "2", "--name", "Pack", "--kind", "package", "--rate", "15")
    assert service_row(app, 1).kind == "lines"
    assert (service_row(app, 2).min_quantity, service_row(app, 2).max_quantity) == (1, 1)


@pytest.mark.parametrize("args, match", [
    (["--id", "1234", "--name", "Again", "--rate", "1"], "1234"),           # duplicate id
    (["--name", "X", "--rate", "1", "--min", "10"], "min"),               # min above default max
    (["--name", "X", "--rate", "1", "--max", "0"], "min"),
    (["--name", "X", "--rate", "1", "--min", "5", "--max", "3"], "min"),
    (["--name", "X", "--rate", "1", "--min", "0", "--max", "3"], "min"),
    (["--name", "X", "--rate", "abc"], "amount"),
    (["--name", "X", "--rate", "1e3"], "amount"),
    (["--name", "X", "--rate=-1"], "negative"),
    (["--name", "X", "--rate", "1", "--kind", "lines"], "lines"),
    (["--name", "X", "--rate", "1", "--kind", "fields"], "field"),
    (["--name", "X", "--rate", "1", "--field", "a:b:c"], "field"),
    (["--id", "0", "--name", "X", "--rate", "1"], "id"),
    (["--id", "-5", "--name", "X", "--rate", "1"], "id"),
    (["--id", "99999999999999999999", "--name", "X", "--rate", "1"], "id"),
])
def test_service_add_errors(app, runner, args, match):
    ok(runner, "service", "add", "--id", "1234", "--name", "First", "--rate", "0.89")
    fails(runner, "service", "add", *args, match=match)
    assert service_count(app) == 1
    assert service_row(app, 1234).name == "First"


def test_service_add_needs_name_and_rate(app, runner):
    assert run(runner, "service", "add", "--name", "X").exit_code == 2
    assert run(runner, "service", "add", "--rate", "1").exit_code == 2
    assert service_count(app) == 0


def test_service_update(app, runner, client, partner):
    ok(runner, "service", "add", "--id", "1234", "--name", "Old", "--rate", "0.89", "--min", "100",
       "--max", "1000")
    ok(runner, "service", "update", "1234", "--name", "New", "--rate", "1.5", "--max", "5000", "--cancel")
    entry = api(client, partner[1], "services")[0]
    assert (entry["name"], entry["rate"], entry["min"], entry["max"], entry["cancel"]) == \
        ("New", "1.5", 100, 5000, True)


@pytest.mark.parametrize("args, match", [
    (["9999", "--name", "X"], "9999"),
    (["1234", "--max", "5"], "min"),
    (["1234", "--min", "0"], "min"),
    (["1234", "--rate", "x"], "amount"),
    (["1234", "--rate=-2"], "negative"),
    (["1234", "--kind", "fields"], "field"),
])
def test_service_update_errors(app, runner, args, match):
    ok(runner, "service", "add", "--id", "1234", "--name", "F", "--rate", "0.89", "--min", "100",
       "--max", "1000")
    fails(runner, "service", "update", *args, match=match)
    row = service_row(app, 1234)
    assert (row.name, row.rate, row.min_quantity, row.max_quantity, row.kind) == \
        ("F", 890_000, 100, 1000, "default")


def test_service_disable_and_enable(app, runner, client, partner):
    ok(runner, "service", "add", "--id", "1234", "--name", "F", "--rate", "0.89")
    ok(runner, "service", "add", "--id", "1235", "--name", "G", "--rate", "1")
    assert "disabled" in ok(runner, "service", "disable", "1234")
    assert [e["service"] for e in api(client, partner[1], "services")] == ["1235"]
    ok(runner, "service", "enable", "1234")
    assert sorted(e["service"] for e in api(client, partner[1], "services")) == ["1234", "1235"]


def test_service_disable_unknown(app, runner):
    fails(runner, "service", "disable", "9999", match="9999")
    fails(runner, "service", "enable", "9999", match="9999")


def test_service_list_shows_every_service(app, runner):
    ok(runner, "service", "add", "--id", "1234", "--name", "Followers", "--rate", "0.89")
    ok(runner, "service", "add", "--id", "7788", "--name", "Diamonds", "--kind", "fields", "--rate", "20",
       "--field", "player_id")
    ok(runner, "service", "disable", "7788")
    lines = ok(runner, "service", "list").splitlines()
    assert len(lines) == 2
    first, second = (line.split("\t") for line in lines)
    assert first[:2] == ["1234", "active"] and "0.89" in first and "Followers" in first
    assert second[:2] == ["7788", "disabled"] and "Diamonds" in second
    assert any("player_id" in column for column in second)


# ---------------------------------------------------------------- service import

SERVICES_FILE = [
    {"service": "1234", "name": "Instagram Followers", "category": "Instagram", "type": "Default",
     "rate": "0.89", "min": 100, "max": 100000, "fields": [], "refill": True, "cancel": False,
     "dripfeed": True},
    {"service": "7788", "name": "Diamonds", "category": "Game Top-up", "type": "Manual", "rate": "20",
     "min": 10, "max": 10000, "fields": [{"name": "player_id", "label": "Player ID", "required": True}],
     "refill": False, "cancel": False},
    {"service": "1236", "name": "Custom Comments", "category": "Instagram", "type": "Custom Comments",
     "rate": "12", "min": 1, "max": 1000, "fields": []},
]


def write_json(tmp_path, data, name="services.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_service_import_adds_services_in_the_services_shape(app, runner, client, partner, tmp_path):
    out = ok(runner, "service", "import", write_json(tmp_path, SERVICES_FILE))
    assert "3 added" in out
    catalog = {e["service"]: e for e in api(client, partner[1], "services")}
    assert catalog["1234"] == SERVICES_FILE[0]
    assert service_row(app, 1234).refill_days == 30  # `refill: true` gets the default window
    assert service_row(app, 7788).refill_days == 0
    assert catalog["7788"]["fields"] == SERVICES_FILE[1]["fields"]
    assert service_row(app, 7788).kind == "fields"
    assert service_row(app, 1236).kind == "lines"


def test_service_import_updates_existing_services(app, runner, client, partner, tmp_path):
    ok(runner, "service", "import", write_json(tmp_path, SERVICES_FILE))
    ok(runner, "service", "disable", "1234")
    changed = [dict(SERVICES_FILE[0], rate="0.95", name="Followers HQ"),
               {"service": "9", "name": "New", "rate": "1", "min": 1, "max": 10}]
    out = ok(runner, "service", "import", write_json(tmp_path, changed, "changed.json"))
    assert "1 added" in out and "1 updated" in out
    catalog = {e["service"]: e for e in api(client, partner[1], "services")}
    assert (catalog["1234"]["rate"], catalog["1234"]["name"]) == ("0.95", "Followers HQ")
    assert catalog["9"]["rate"] == "1"
    assert service_count(app) == 4


def test_service_import_round_trips_the_api_output(app, runner, client, partner, tmp_path):
    ok(runner, "service", "import", write_json(tmp_path, SERVICES_FILE))
    exported = api(client, partner[1], "services")
    ok(runner, "service", "import", write_json(tmp_path, exported, "exported.json"))
    assert api(client, partner[1], "services") == exported


@pytest.mark.parametrize("bad_entry", [
    {"service": "57"},                                                        # no name, no rate
    {"service": "57", "name": "x", "rate": "abc"},
    {"service": "57", "name": "x", "rate": "-1"},
    {"service": "57", "name": "x", "rate": "1", "min": 10, "max": 5},
    {"service": "57", "name": "x", "rate": "1", "min": "lots"},
    {"service": "abc", "name": "x", "rate": "1"},
    {"service": "0", "name": "x", "rate": "1"},
    {"service": "57", "name": "x", "rate": "1", "fields": "player_id"},
    {"service": "57", "name": "x", "rate": "1", "fields": [{"label": "no name"}]},
    {"service": "57", "name": "x", "rate": "1", "kind": "bogus"},
    "not an object",
    None,
])
def test_service_import_is_all_or_nothing(app, runner, tmp_path, bad_entry):
    ok(runner, "service", "add", "--id", "1234", "--name", "Before", "--rate", "0.5")
    entries = [dict(SERVICES_FILE[0]), {"service": "55", "name": "Fine", "rate": "1"}, bad_entry]
    fails(runner, "service", "import", write_json(tmp_path, entries))
    assert service_count(app) == 1
    assert (service_row(app, 1234).name, service_row(app, 1234).rate) == ("Before", 500_000)


@pytest.mark.parametrize("content, match", [
    ("not json at all", "JSON"),
    ('{"service": "1"}', "list"),
    ("", "JSON"),
])
def test_service_import_bad_files(app, runner, tmp_path, content, match):
    fails(runner, "service", "import", write_json(tmp_path, content), match=match)
    assert service_count(app) == 0


def test_service_import_missing_file(app, runner, tmp_path):
    result = run(runner, "service", "import", str(tmp_path / "nope.json"))
    assert result.exit_code == 2


# ---------------------------------------------------------------- empty lists

@pytest.mark.parametrize("command", [["account", "requests"], ["service", "list"], ["coupon", "list"],
                                     ["order", "list"], ["order", "unknown"], ["refill", "list"],
                                     ["provider", "list"]])
def test_an_empty_list_says_none(runner, command):
    assert ok(runner, *command) == "none\n"


def test_a_filter_that_matches_nothing_says_none(app, runner, partner):
    ok(runner, "service", "add", "--id", "1234", "--name", "F", "--rate", "0.89")
    assert ok(runner, "order", "list", "--status", "Completed") == "none\n"
    assert ok(runner, "refill", "list", "--status", "Rejected") == "none\n"


# ---------------------------------------------------------------- usage errors

@pytest.mark.parametrize("args, match", [
    (["order", "list", "--limit", "x"], r"^error: Invalid value for '--limit': 'x'"),
    (["order", "set-status", "ORD-100001", "Lost"], r"'Lost' is not one of"),
    (["service", "disable", "abc"], r"'abc' is not a valid integer"),
    (["account", "create"], r"^error: Missing argument 'EMAIL'\.$"),
    (["account", "credit", "partner@example.com", "5"], r"Missing option '--note'"),
    (["account", "requests", "--bogus"], r"^error: No such option '--bogus'"),
    (["--bogus"], r"No such option '--bogus'"),
    (["bogus"], r"^error: No such command 'bogus'\.$"),
    (["account", "bogus"], r"No such command 'bogus'"),
    (["db", "current", "--bogus"], r"No such option '--bogus'"),
])
def test_a_usage_error_is_one_error_line(app, runner, partner, args, match):
    fails(runner, *args, match=match)


def test_a_bare_group_still_shows_its_help(runner):
    result = run(runner, "account")
    assert "Commands:" in result.output and "credit" in result.output


# ---------------------------------------------------------------- settings the app refuses

@pytest.fixture
def refused_settings(monkeypatch):
    """create_app refusing a setting, as it does for a bad SERVA_* value."""
    def create_app(test_config=None):
        raise ValueError("SERVA_CURRENCY must be three letters, not 'dollars'")
    monkeypatch.setattr("serva.cli.create_app", create_app)


@pytest.mark.parametrize("args", [["account", "requests"], ["audit"], ["init-db"]])
def test_a_refused_setting_is_one_error_line(refused_settings, args):
    result = CliRunner().invoke(serva_cli, args)
    assert result.exit_code == 2, result.output
    assert result.stderr == "error: SERVA_CURRENCY must be three letters, not 'dollars'\n"
    assert result.stdout == ""


def test_help_needs_no_app(refused_settings):
    result = CliRunner().invoke(serva_cli, ["order", "--help"])
    assert result.exit_code == 0 and "set-status" in result.stdout


# ---------------------------------------------------------------- the console script

def _serva_script() -> Path:
    script = Path(sys.executable).parent / "serva"
    if not script.exists():
        pytest.skip("the serva console script is not installed next to this Python")
    return script


def test_the_serva_console_script(tmp_path):
    script = _serva_script()
    env = {**os.environ, "SERVA_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite'}",
           "SERVA_SECRET_KEY": "t"}
    env.pop("FLASK_APP", None)

    def serva(*args):
        return subprocess.run([str(script), *args], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)

    result = serva("init-db")
    assert result.returncode == 0, result.stderr
    result = serva("demo")
    assert result.returncode == 0, result.stderr
    key = result.stdout.splitlines()[-1]
    assert KEY_RE.fullmatch(key)

    result = serva("account", "credit", DEMO_EMAIL, "2.5", "--note", "console script")
    assert result.returncode == 0 and "102.5" in result.stdout

    result = serva("account", "credit", "nobody@example.com", "5", "--note", "x")
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: no account with email nobody@example.com"]
    assert result.stdout == ""

    result = serva("key", "create", DEMO_EMAIL)
    assert result.returncode == 0 and KEY_RE.fullmatch(result.stdout.strip())
    assert result.stdout.count("\n") == 1
    new_key = result.stdout.strip()

    result = serva("schema-sql")
    assert result.stdout == (Path(__file__).resolve().parent.parent / "schema.sql").read_text()

    # the key printed works against the same database through the app
    from serva import create_app
    app = create_app({"TESTING": True, "SECRET_KEY": "t", "DATABASE_URL": env["SERVA_DATABASE_URL"]})
    client = app.test_client()
    body = client.post("/api/v1", data={"action": "balance", "key": new_key}).get_json()
    assert body == {"balance": "102.5", "currency": "USD"}
    assert client.post("/api/v1", data={"action": "balance", "key": key}).get_json()["code"] == "key_revoked"
    app.extensions["serva.engine"].dispose()


SERVA_COMMANDS = {"account", "audit", "backup", "coupon", "db", "demo", "init-db", "key", "order",
                  "operator", "payment", "provider", "prune", "refill", "schema-sql", "serve",
                  "service", "webhook", "worker"}


def listed_commands(help_text: str) -> set:
    """The command names of a click help page's `Commands:` section."""
    section = help_text.split("\nCommands:\n", 1)[1]
    return {line.split()[0] for line in section.splitlines() if line.startswith("  ")
            and not line.startswith("   ")}


def test_serva_help_shows_servas_commands_only(tmp_path):
    """Not Flask's run/routes/shell/--version nor Flask-Limiter's `limiter` plugin."""
    env = {**os.environ, "SERVA_DATABASE_URL": f"sqlite:///{tmp_path / 'help.sqlite'}"}
    env.pop("FLASK_APP", None)
    result = subprocess.run([str(_serva_script()), "--help"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert listed_commands(result.stdout) == SERVA_COMMANDS
    assert "--version" not in result.stdout and "Flask" not in result.stdout
    assert "--app" not in result.stdout and "--env-file" not in result.stdout


def test_the_cli_help_lists_the_commands(runner):
    out = ok(runner, "--help")
    for command in ("init-db", "demo", "account", "key", "service", "schema-sql"):
        assert command in out
    account_help = ok(runner, "account", "--help")
    for command in ("create", "show", "approve", "unapprove", "ban", "unban", "credit", "discount", "rate"):
        assert command in account_help
    assert "import" in ok(runner, "service", "--help")
