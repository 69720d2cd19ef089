"""The per-account id format (docs/CONTRACT.md, Ids): `prefixed` ("ORD-100023",
"1234") or `numeric` (100023, 1234 as JSON integers), chosen by the partner in the dashboard or
by the operator (`serva account id-format`); accounts that have not chosen follow the deployment
default (SERVA_INTEGER_IDS). Ids are accepted in either form whatever the format."""
import re

import pytest
from sqlalchemy import select

from serva import db
from serva.ids import format_order_id, format_refill_id, format_service_id, parse_order, parse_refill
from serva.schema import accounts
from serva.cli import cli as serva_cli

from conftest import make_partner
from test_dashboard import csrf_token, make_account, sign_in, EMAIL

LINK = "https://example.com/post/1"


def call(client, key, action, **params):
    response = client.post("/api/v1", data={"action": action, "key": key, **params})
    assert response.status_code == 200
    return response.get_json()


def set_format(runner, email, id_format):
    result = runner.invoke(serva_cli, args=["account", "id-format", email, id_format])
    assert result.exit_code == 0, result.output
    return result.output


def stored_format(app, email):
    with app.app_context(), db.read() as conn:
        return conn.execute(select(accounts.c.id_format).where(accounts.c.email == email)).scalar()


# ---------------------------------------------------------------- ids.py

def test_formatting_and_parsing_round_trip():
    assert format_order_id(23, numeric=False) == "ORD-100023"
    assert format_order_id(23, numeric=True) == 100023
    assert format_service_id(1234, numeric=False) == "1234"
    assert format_service_id(1234, numeric=True) == 1234
    assert format_refill_id(1, numeric=False) == "REF-5001"
    assert format_refill_id(1, numeric=True) == 5001
    for value in ("ORD-100023", "ord-100023", "100023", 100023, " 100023 "):
        assert parse_order(value) == 23
    for value in ("REF-5001", "ref-5001", "5001", 5001):
        assert parse_refill(value) == 1
    for value in ("REF-5000", "5000", "ORD-5001", True, None, 5001.0, "REF-"):
        assert parse_refill(value) is None


# ---------------------------------------------------------------- per account

@pytest.fixture
def two_partners(app, catalog):
    """Same discount, different formats: the rendered catalog must not leak between them."""
    _, prefixed = make_partner(app, "prefixed@example.com")
    _, numeric = make_partner(app, "numeric@example.com")
    return prefixed, numeric


def test_an_account_without_a_choice_follows_the_deployment_default(app, client, runner, two_partners):
    prefixed, numeric = two_partners
    assert stored_format(app, "prefixed@example.com") is None
    assert call(client, prefixed, "services")[0]["service"] == "1234"
    app.config["INTEGER_IDS"] = True
    assert call(client, prefixed, "services")[0]["service"] == 1234
    assert call(client, prefixed, "add", service="1234", link=LINK, quantity="100")["order"] == 100001


def test_numeric_and_prefixed_accounts_side_by_side(app, client, runner, two_partners):
    prefixed, numeric = two_partners
    assert "numeric@example.com: id format numeric" in set_format(runner, "numeric@example.com", "numeric")
    for _ in range(2):  # the second round comes from the rendered catalog
        assert [s["service"] for s in call(client, prefixed, "services")] == ["1234", "1235", "1236", "7788"]
        assert [s["service"] for s in call(client, numeric, "services")] == [1234, 1235, 1236, 7788]

    mine = call(client, numeric, "add", service=1234, link=LINK, quantity=100)
    theirs = call(client, prefixed, "add", service=1234, link=LINK, quantity=100)
    assert mine["order"] == 100001 and type(mine["order"]) is int
    assert theirs["order"] == "ORD-100002"
    # accepted in either form, whatever the format
    for order in (100001, "100001", "ORD-100001"):
        assert call(client, numeric, "status", order=order)["status"] == "Pending"
    for order in (100002, "ORD-100002"):
        assert call(client, prefixed, "status", order=order)["status"] == "Pending"
    # a batch is keyed by the ids exactly as sent
    batch = call(client, numeric, "status", orders="100001,ORD-100001,ORD-100002")
    assert batch["100001"]["status"] == batch["ORD-100001"]["status"] == "Pending"
    assert batch["ORD-100002"] == {"error": "Incorrect order ID"}  # not this account's


def test_a_prefixed_choice_overrides_an_integer_deployment(app, client, runner, catalog):
    app.config["INTEGER_IDS"] = True
    _, default = make_partner(app, "default@example.com")
    _, chosen = make_partner(app, "chosen@example.com")
    set_format(runner, "chosen@example.com", "prefixed")
    assert call(client, default, "services")[0]["service"] == 1234
    assert call(client, chosen, "services")[0]["service"] == "1234"
    assert call(client, chosen, "add", service=1234, link=LINK, quantity=100)["order"] == "ORD-100001"
    assert call(client, default, "add", service=1234, link=LINK, quantity=100)["order"] == 100002


def test_a_custom_rate_entry_follows_the_format_too(app, client, runner, partner, catalog):
    assert runner.invoke(serva_cli, args=["account", "rate", "partner@example.com", "1235", "12"]).exit_code == 0
    set_format(runner, "partner@example.com", "numeric")
    entries = {s["service"]: s for s in call(client, partner[1], "services")}
    assert entries[1235]["rate"] == "12" and set(entries) == {1234, 1235, 1236, 7788}


def test_an_idempotent_retry_answers_in_the_current_format(app, client, runner, partner, catalog):
    first = client.post("/api/v1", headers={"Idempotency-Key": "k1"}, data={
        "action": "add", "key": partner[1], "service": "1234", "link": LINK, "quantity": "100"}).get_json()
    assert first["order"] == "ORD-100001"
    set_format(runner, "partner@example.com", "numeric")
    again = client.post("/api/v1", headers={"Idempotency-Key": "k1"}, data={
        "action": "add", "key": partner[1], "service": "1234", "link": LINK, "quantity": "100"}).get_json()
    assert again == {**first, "order": 100001}


def test_the_format_is_read_with_the_key_not_by_another_query(app, client, runner, partner, catalog,
                                                              sql_log):
    set_format(runner, "partner@example.com", "numeric")
    call(client, partner[1], "balance")  # the key's first use is written once
    call(client, partner[1], "services")  # the catalog rows are read once per version
    for action, params in (("balance", {}), ("services", {}),
                           ("status", {"order": "100001"})):
        del sql_log[:]
        assert "error" not in call(client, partner[1], action, **params) or action == "status"
        selects = [s for s in sql_log if s.lstrip().upper().startswith("SELECT")]
        assert len(selects) == 1, (action, sql_log)
        assert "id_format" in selects[0]


# ---------------------------------------------------------------- the operator

def test_cli_sets_and_shows_the_format(app, runner, partner):
    show = runner.invoke(serva_cli, args=["account", "show", "partner@example.com"]).output
    assert re.search(r"id format: +prefixed \(the default; not chosen\)", show)
    set_format(runner, "partner@example.com", "numeric")
    assert stored_format(app, "partner@example.com") == "numeric"
    assert re.search(r"id format: +numeric\n", runner.invoke(serva_cli, args=["account", "show", "partner@example.com"]).output)
    set_format(runner, "partner@example.com", "prefixed")
    assert stored_format(app, "partner@example.com") == "prefixed"


@pytest.mark.parametrize("args, message", [
    (["partner@example.com", "integer"], "id format must be one of: prefixed, numeric"),
    (["nobody@example.com", "numeric"], "nobody@example.com")])
def test_cli_refuses_a_bad_format_or_account(app, runner, partner, args, message):
    result = runner.invoke(serva_cli, args=["account", "id-format", *args])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: ") and message in result.output
    assert stored_format(app, "partner@example.com") is None


def test_the_database_refuses_an_unknown_format(app, partner):
    with pytest.raises(Exception, match="ck_accounts_id_format|CHECK"):
        with app.app_context(), db.write() as conn:
            conn.execute(accounts.update().values(id_format="hex"))


# ---------------------------------------------------------------- the dashboard

@pytest.fixture
def signed(app, client, catalog):
    """A signed-in partner with a key: (client, raw key)."""
    _, raw = make_account(app, key=True)
    assert sign_in(client).status_code == 302
    return client, raw


def test_the_dashboard_shows_the_choice_next_to_the_key(signed):
    page = signed[0].get("/profile/api/").text
    section = page[page.index('id="key"'):page.index('id="examples"')]
    assert 'action="/profile/api/id-format"' in section
    assert "for panel scripts that store ids as numbers" in section
    assert re.search(r'value="prefixed" checked', section) and "Not chosen yet" in section


def test_the_partner_chooses_numeric_ids(app, signed):
    client, raw = signed
    make_partner(app, "other@example.com")
    response = client.post("/profile/api/id-format",
                           data={"csrf_token": csrf_token(client), "id_format": "numeric"})
    assert response.status_code == 302
    page = client.get("/profile/api/").text
    assert "Ids are now numeric" in page and re.search(r'value="numeric" checked', page)
    assert "Not chosen yet" not in page
    assert stored_format(app, EMAIL) == "numeric"
    assert stored_format(app, "other@example.com") is None  # only the signed-in account
    assert call(client, raw, "services")[0]["service"] == 1234
    assert call(client, raw, "add", service="1234", link=LINK, quantity="100")["order"] == 100001
    client.post("/profile/api/id-format", data={"csrf_token": csrf_token(client), "id_format": "prefixed"})
    assert call(client, raw, "services")[0]["service"] == "1234"


def test_the_choice_needs_the_csrf_token_and_a_known_format(app, signed):
    client, _ = signed
    assert client.post("/profile/api/id-format", data={"id_format": "numeric"}).status_code == 400
    assert stored_format(app, EMAIL) is None
    response = client.post("/profile/api/id-format",
                           data={"csrf_token": csrf_token(client), "id_format": "hex"})
    assert response.status_code == 302
    assert "Choose prefixed or numeric ids." in client.get("/profile/api/").text
    assert stored_format(app, EMAIL) is None


# ---------------------------------------------------------------- the revision

def test_an_earlier_database_upgrades_with_no_format_chosen_and_downgrades(tmp_path):
    from alembic import command
    from serva import migrations
    from test_migrations import cli_app, make_first_release_db
    path = tmp_path / "old.sqlite"
    make_first_release_db(path)
    app = cli_app(path)
    assert app.test_cli_runner().invoke(serva_cli, args=["init-db"]).exit_code == 0
    engine = app.extensions["serva.engine"]
    with db.read(engine) as conn:
        assert conn.execute(select(accounts.c.email, accounts.c.id_format)).all() == \
            [("old@example.com", None)]
    with db.migrating(engine) as conn:
        command.downgrade(migrations.config(conn), "first_release")
    with db.read(engine) as conn:
        assert conn.exec_driver_sql("SELECT email, balance FROM accounts").all() == \
            [("old@example.com", 5)]
    engine.dispose()
