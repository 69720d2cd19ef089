"""The partner's orders and statement in the dashboard (/profile/orders/, /profile/statement/):
filters, keyset pages, CSV exports, other accounts' rows never shown, and a statement that
reconciles to `balance` to the micro-unit for every account after top-ups, charges with
coupons, refunds and adjustments."""
import csv
import io
import re

from sqlalchemy import func, select

from serva import db, ledger, orders as orders_repo
from serva.cli import cli as serva_cli
from serva.ids import parse_order
from serva.money import parse_amount
from serva.schema import coupon_redemptions

from test_dashboard import make_account, sign_in

LINK = "https://example.com/p/"


def add(client, key, quantity, link=LINK + "1", service="1234", **extra):
    body = client.post("/api/v1", data={"action": "add", "key": key, "service": service,
                                        "link": link, "quantity": str(quantity), **extra}).get_json()
    assert "order" in body, body
    return body["order"]


def signed_in_partner(app, client, email="partner@example.com", balance="100"):
    account_id, key = make_account(app, email=email, balance=balance, key=True)
    sign_in(client, email=email)
    return account_id, key


def csv_rows(response):
    assert response.status_code == 200 and response.mimetype == "text/csv"
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))


def test_orders_need_a_sign_in(client):
    assert client.get("/profile/orders/").status_code == 302
    assert client.get("/profile/statement.csv").status_code == 302


def test_orders_list_filters_and_csv(app, client, catalog):
    _, key = signed_in_partner(app, client)
    first = add(client, key, 100, LINK + "alpha")
    second = add(client, key, 200, LINK + "beta")
    third = add(client, key, 1, "https://example.com/ch/gamma", service="1235")
    with app.app_context(), db.write() as conn:
        orders_repo.set_status(conn, parse_order(second), "Partial", remains=50)
    page = client.get("/profile/orders/").text
    assert page.index(third) < page.index(second) < page.index(first)  # newest first
    assert "Partial" in page and 'id="nav-orders"' in page
    only = client.get("/profile/orders/?status=Partial").text
    assert second in only and first not in only and third not in only
    assert third in client.get("/profile/orders/?service=1235").text
    assert first not in client.get("/profile/orders/?service=1235").text
    linked = client.get("/profile/orders/?link=alp").text
    assert first in linked and second not in linked
    assert "No orders match" in client.get("/profile/orders/?from=2099-01-01").text
    assert first in client.get("/profile/orders/?from=2000-01-01&to=2099-12-31").text
    bad = client.get("/profile/orders/?from=yesterday&status=Nope")
    assert bad.status_code == 200 and "a date such as" in bad.text and "from the list" in bad.text
    rows = csv_rows(client.get("/profile/orders.csv?status=Partial"))
    assert [(r["order"], r["status"], r["remains"]) for r in rows] == [(second, "Partial", "50")]
    assert float(rows[0]["refunded"]) > 0 and rows[0]["refills"] == "0"


def test_orders_keyset_pages(app, client, catalog):
    _, key = signed_in_partner(app, client, balance="1000")
    placed = [add(client, key, 100 + i, LINK + str(i)) for i in range(53)]
    first = client.get("/profile/orders/").text
    assert placed[-1] in first and placed[3] in first and placed[2] not in first
    older = re.search(r'href="([^"]+)" id="older"', first).group(1).replace("&amp;", "&")
    second = client.get(older).text
    assert all(p in second for p in placed[:3]) and placed[3] not in second
    assert 'id="older"' not in second and 'id="first-page"' in second
    assert len(csv_rows(client.get("/profile/orders.csv"))) == 53


def test_another_accounts_orders_are_never_shown(app, client, catalog):
    _, other_key = make_account(app, email="other@example.com", key=True)
    theirs = add(client, other_key, 100)
    signed_in_partner(app, client)
    assert theirs not in client.get("/profile/orders/").text
    assert csv_rows(client.get("/profile/orders.csv")) == []


def test_csv_cells_are_not_formulas(app, client, catalog):
    _, key = signed_in_partner(app, client)
    with app.app_context(), db.write() as conn:
        ledger.post(conn, 1, -parse_amount("1.5"), "adjustment", "=HYPERLINK(\"x\")")
    rows = csv_rows(client.get("/profile/statement.csv"))
    assert rows[0]["note"].startswith("'=") and rows[0]["amount"] == "-1.5"


def statement_total(client) -> int:
    rows = csv_rows(client.get("/profile/statement.csv"))
    assert rows == sorted(rows, key=lambda r: -int(r["id"]))  # newest first
    total = 0
    for row in reversed(rows):
        total += parse_amount(row["amount"])
        assert parse_amount(row["balance_after"]) == total  # the running balance
    return total


def test_every_statement_reconciles_to_the_balance(app, catalog):
    """Top-ups, charges with and without coupons, Partial and Canceled refunds, an operator's
    adjustment, on three accounts; each statement's rows sum to its `balance`, the newest
    row's running balance is that balance, and the page says so."""
    runner = app.test_cli_runner()
    assert runner.invoke(serva_cli, ["coupon", "create", "TEN", "--percent", "10"]).exit_code == 0
    assert runner.invoke(serva_cli, ["coupon", "create", "FIX", "--amount", "0.05"]).exit_code == 0
    accounts = []
    for number, balance in enumerate(("100", "33.333333", "7.000001")):
        email = f"p{number}@example.com"
        client = app.test_client()
        account_id, key = signed_in_partner(app, client, email=email, balance=balance)
        placed = [add(client, key, 100 + number, LINK + "a"),
                  add(client, key, 137, LINK + "b", coupon="TEN"),
                  add(client, key, 333, LINK + "c", coupon="FIX"),
                  add(client, key, 500, LINK + "d")]
        with app.app_context(), db.write() as conn:
            orders_repo.set_status(conn, parse_order(placed[0]), "Partial", remains=33)
            orders_repo.set_status(conn, parse_order(placed[1]), "Canceled")
            orders_repo.set_status(conn, parse_order(placed[2]), "Partial", remains=1)
            ledger.post(conn, account_id, 1, "adjustment", "one micro-unit")
        assert runner.invoke(serva_cli, ["account", "credit", email, "2.000003", "--note", "bank transfer"]).exit_code == 0
        accounts.append((client, key))
    with app.app_context(), db.read() as conn:
        assert conn.execute(select(func.count()).select_from(coupon_redemptions)).scalar() == 6
    for client, key in accounts:
        balance = client.post("/api/v1", data={"action": "balance", "key": key}).get_json()
        total = statement_total(client)
        assert total == parse_amount(balance["balance"])
        page = client.get("/profile/statement/").text
        assert f'id="statement-balance">{balance["balance"]} USD' in page
        newest = re.search(r'class="num running">([^<]+)<', page).group(1)
        assert parse_amount(newest) == total
        kinds = {row["kind"] for row in csv_rows(client.get("/profile/statement.csv"))}
        assert kinds == {"topup", "charge", "refund", "adjustment"}
        assert all(row["request_id"] for row in csv_rows(client.get("/profile/statement.csv")))


def test_statement_keyset_pages(app, client):
    account_id, _ = signed_in_partner(app, client, balance="1")
    with app.app_context(), db.write() as conn:
        for i in range(60):
            ledger.post(conn, account_id, 1, "adjustment", f"row {i}")
    first = client.get("/profile/statement/").text
    assert first.count('class="ledger-row"') == 50 and "row 59" in first
    older = re.search(r'href="([^"]+)" id="older"', first).group(1)
    second = client.get(older).text
    assert second.count('class="ledger-row"') == 11 and "row 9<" in second and "row 10<" not in second
