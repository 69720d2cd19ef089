"""The console's pages and actions over plain HTTP forms: each change goes through the CLI's
domain function, refuses with the CLI's message, and writes its activity entry in the same
transaction; support staff are refused what their role may not do (403, logged)."""
import csv
import io
import json

from sqlalchemy import select, update

from serva import db, providers, services
from serva.cli import cli as serva_cli
from serva.ids import parse_order
from serva.schema import accounts, activity, dispatches, ledger, orders

from conftest import make_partner
from console_support import post, signed_in_owner, signed_in_support
from faulty_provider import KEY

LINK = "https://example.com/post/1"


def entries(app, action=None):
    with app.app_context(), db.read() as conn:
        query = select(activity).order_by(activity.c.id)
        if action:
            query = query.where(activity.c.action == action)
        return conn.execute(query).all()


def balance(app, account_id):
    with app.app_context(), db.read() as conn:
        return conn.execute(select(accounts.c.balance).where(accounts.c.id == account_id)).scalar()


def test_credit_is_one_ledger_row_and_one_activity_entry_in_one_request(app):
    client, _, _ = signed_in_owner(app)
    account_id, _ = make_partner(app, balance="0")
    page = f"/admin/accounts/{account_id}"
    response = post(client, f"{page}/credit", {"amount": "12.5", "note": "bank transfer"}, page=page,
                    follow_redirects=True)
    text = response.get_data(as_text=True)
    assert "partner@example.com: balance 12.5" in text and "bank transfer" in text
    assert balance(app, account_id) == 12_500_000
    with app.app_context(), db.read() as conn:
        row = conn.execute(select(ledger).where(ledger.c.account_id == account_id)).one()
    [entry] = entries(app, "account.credit")
    assert (row.amount, row.kind, row.note) == (12_500_000, "topup", "bank transfer")
    assert entry.actor == "operator:owner@example.com" and entry.request_id == row.request_id
    assert json.loads(entry.before_json) == {"balance": 0}
    assert row.request_id in client.get("/admin/activity").get_data(as_text=True)


def test_console_refuses_with_the_clis_message(app, runner):
    client, _, _ = signed_in_owner(app)
    account_id, _ = make_partner(app, balance="1")
    page = f"/admin/accounts/{account_id}"
    console = post(client, f"{page}/debit", {"amount": "5", "note": "fee"}, page=page,
                   follow_redirects=True).get_data(as_text=True)
    command = runner.invoke(serva_cli, ["account", "debit", "partner@example.com", "5", "--note", "fee"])
    message = command.stderr.removeprefix("error: ").strip()
    assert message == "the balance of partner@example.com is 1; it cannot go below 0"
    assert message in console
    console = post(client, f"{page}/credit", {"amount": "5", "note": " "}, page=page,
                   follow_redirects=True).get_data(as_text=True)
    assert "a note must say why the balance changes" in console
    console = post(client, f"{page}/credit", {"amount": "-5", "note": "x"}, page=page,
                   follow_redirects=True).get_data(as_text=True)
    assert "amount must be positive: -5" in console
    assert balance(app, account_id) == 1_000_000 and entries(app, "account.credit") == []


def test_support_is_refused_a_credit_with_403_and_it_is_logged(app, caplog):
    client = signed_in_support(app)
    account_id, _ = make_partner(app, balance="0")
    page = f"/admin/accounts/{account_id}"
    assert client.get(page).status_code == 200  # support reads everything
    response = post(client, f"{page}/credit", {"amount": "100", "note": "friend"}, page=page)
    assert response.status_code == 403 and "The attempt was logged" in response.get_data(as_text=True)
    assert balance(app, account_id) == 0
    [entry] = entries(app, "refused")
    assert entry.actor == "operator:support@example.com" and entry.subject == f"{page}/credit"
    assert json.loads(entry.after_json) == {"right": "account.money", "role": "support"}
    assert "refused account.money to operator support@example.com" in caplog.text
    for path in ("/admin/providers", "/admin/services", "/admin/coupons"):
        assert post(client, path, {"name": "x"}, page=page).status_code == 403


def test_approving_an_api_access_request(app, client):
    owner, _, _ = signed_in_owner(app)
    account_id, _ = make_partner(app, approved=False)
    with app.app_context(), db.write() as conn:
        conn.execute(update(accounts).values(api_access="requested", access_requested_at=1))
    assert "partner@example.com" in owner.get("/admin/").get_data(as_text=True)
    page = f"/admin/accounts/{account_id}"
    text = post(owner, f"{page}/approve", page=page, follow_redirects=True).get_data(as_text=True)
    assert "API access approved" in text and 'id="api-access">approved<' in text
    [entry] = entries(app, "account.approve")
    assert json.loads(entry.before_json)["api_access"] == "requested"
    assert json.loads(entry.after_json)["api_access"] == "approved"


def test_accounts_search_by_q(app):
    client, _, _ = signed_in_owner(app)
    make_partner(app, "alice@shop.test")
    make_partner(app, "bob@other.test")
    text = client.get("/admin/accounts?q=SHOP").get_data(as_text=True)
    assert "alice@shop.test" in text and "bob@other.test" not in text


def place(client_api, quantity="1000", link=LINK):
    body = client_api("add", service="1234", link=link, quantity=quantity)
    assert "order" in body, body
    return body["order"]


def test_orders_found_by_request_id_and_filtered(app, client, api, catalog):
    owner, _, _ = signed_in_owner(app)
    first = client.post("/api/v1", data={"action": "add", "key": make_partner(app, "x@y.z")[1],
                                         "service": "1234", "link": LINK, "quantity": "100"})
    request_id = first.headers["x-serva-request-id"]
    other = place(api, link="https://example.com/other")
    text = owner.get(f"/admin/orders?request_id={request_id}").get_data(as_text=True)
    assert first.get_json()["order"] in text and other not in text
    text = owner.get("/admin/orders?link=other").get_data(as_text=True)
    assert other in text and first.get_json()["order"] not in text
    assert owner.get("/admin/orders?status=Nonsense").status_code == 400
    rows = list(csv.reader(io.StringIO(owner.get("/admin/orders.csv?account=x@y.z").get_data(as_text=True))))
    assert rows[0][0] == "order" and [r[0] for r in rows[1:]] == [first.get_json()["order"]]


def test_order_pages_are_keyset_paginated(app, api, catalog):
    owner, _, _ = signed_in_owner(app)
    made = [place(api, quantity="100", link=f"https://example.com/p/{i}") for i in range(55)]
    first = owner.get("/admin/orders").get_data(as_text=True)
    assert made[-1] in first and made[4] not in first and "before=" in first
    older = owner.get(f"/admin/orders?before={parse_order(made[5])}").get_data(as_text=True)
    assert made[4] in older and made[0] in older and made[5] not in older


def test_set_status_refunds_once_and_is_recorded(app, api, catalog):
    owner, _, _ = signed_in_owner(app)
    order = place(api)
    page = f"/admin/orders/{order}"
    text = post(owner, f"{page}/status", {"status": "Partial", "remains": "500"}, page=page,
                follow_redirects=True).get_data(as_text=True)
    assert "Partial, refunded" in text
    text = post(owner, f"{page}/status", {"status": "Canceled"}, page=page,
                follow_redirects=True).get_data(as_text=True)
    assert "is Partial and was refunded; its status is final" in text
    [entry] = entries(app, "order.status")
    assert json.loads(entry.after_json)["status"] == "Partial"


def test_support_answers_a_cancel_request(app, api, catalog):
    client = signed_in_support(app)
    order = place(api)
    assert api("cancel", order=order) == {"cancel": 1}
    assert order in client.get("/admin/cancels").get_data(as_text=True)
    text = post(client, f"/admin/orders/{order}/cancel-request", {"answer": "accept"},
                page="/admin/cancels", follow_redirects=True).get_data(as_text=True)
    assert "Canceled, refunded" in text
    assert entries(app, "order.cancel_accept")[0].actor == "operator:support@example.com"


def test_resolving_an_unknown_handover(app, api, catalog, fake_provider):
    owner, _, _ = signed_in_owner(app)
    with app.app_context(), db.write() as conn:
        provider_id = providers.add(conn, "up", fake_provider.url, KEY)
        services.update_service(conn, 1234, provider_id=provider_id, provider_service="1")
    order = place(api)
    with app.app_context(), db.write() as conn:
        conn.execute(update(dispatches).where(dispatches.c.order_id == parse_order(order))
                     .values(state="unknown", last_message=f"read timed out (key {KEY})"))
    page = f"/admin/orders/{order}"
    text = owner.get(page).get_data(as_text=True)
    assert 'id="handover-state">unknown<' in text and KEY not in text
    text = post(owner, f"{page}/resolve", {"how": "placed", "provider_order": "P-77"}, page=page,
                follow_redirects=True).get_data(as_text=True)
    assert "placed as provider order P-77" in text and 'id="handover-state">done<' in text
    with app.app_context(), db.read() as conn:
        assert conn.execute(select(orders.c.provider_order)
                            .where(orders.c.id == parse_order(order))).scalar() == "P-77"
    assert entries(app, "order.resolve")


def test_import_is_a_preview_then_a_confirm(app, fake_provider):
    owner, _, _ = signed_in_owner(app)
    fake_provider.services.append({"service": 2, "name": "Fake likes", "type": "Default",
                                   "rate": "1.00", "min": 10, "max": 500, "category": "Fake"})
    with app.app_context(), db.write() as conn:
        providers.add(conn, "up", fake_provider.url, KEY)
    preview = post(owner, "/admin/providers/up/import", {"markup": "25"}, page="/admin/providers")
    text = preview.get_data(as_text=True)
    assert preview.status_code == 200 and "2 to add" in text and "Confirm the import" in text
    assert "1.25" in text and KEY not in text
    with app.app_context(), db.read() as conn:
        assert services.list_all(conn) == []  # the preview wrote nothing
    done = post(owner, "/admin/providers/up/import", {"markup": "25", "confirm": "yes"},
                page="/admin/providers").get_data(as_text=True)
    assert "2 added" in done
    with app.app_context(), db.read() as conn:
        assert sorted(row.rate for row in services.list_all(conn)) == [500_000, 1_250_000]
    assert json.loads(entries(app, "provider.import")[0].after_json)["add"] == 2
    assert KEY not in owner.get("/admin/providers").get_data(as_text=True)


def test_a_rate_below_the_providers_is_refused_with_the_reason(app, fake_provider):
    owner, _, _ = signed_in_owner(app)
    with app.app_context(), db.write() as conn:
        providers.add(conn, "up", fake_provider.url, KEY)
    post(owner, "/admin/providers/up/import", {"markup": "0", "confirm": "yes"}, page="/admin/providers")
    with app.app_context(), db.read() as conn:
        [service] = services.list_all(conn)
    text = post(owner, f"/admin/services/{service.id}", {"rate": "0.1"}, page="/admin/services",
                follow_redirects=True).get_data(as_text=True)
    assert "below what the provider" in text


def test_overview_sums_and_the_audit_button(app, api, catalog):
    owner, _, _ = signed_in_owner(app)
    place(api)  # 1000 Followers at 0.89 per 1000
    text = owner.get("/admin/").get_data(as_text=True)
    assert "<svg" in text and "<td>0.89</td>" in text
    text = post(owner, "/admin/audit", page="/admin/", follow_redirects=True).get_data(as_text=True)
    assert "The audit passed." in text and "Last run" in text


def test_coupons_and_refills_pages(app, api, catalog):
    owner, _, _ = signed_in_owner(app)
    text = post(owner, "/admin/coupons", {"code": "save10", "kind": "percent", "value": "10"},
                page="/admin/coupons", follow_redirects=True).get_data(as_text=True)
    assert "coupon SAVE10 created" in text
    text = post(owner, "/admin/coupons/SAVE10/disable", page="/admin/coupons",
                follow_redirects=True).get_data(as_text=True)
    assert "coupon SAVE10 disabled" in text
    assert owner.get("/admin/refills").status_code == 200
    assert [e.action for e in entries(app) if e.action.startswith("coupon")] == [
        "coupon.create", "coupon.disable"]


def test_a_service_edited_and_disabled(app, catalog):
    owner, _, _ = signed_in_owner(app)
    text = post(owner, "/admin/services/1234", {"rate": "1.5", "cancel": "no",
                                                "fixed_quantity": "1000"},
                page="/admin/services", follow_redirects=True).get_data(as_text=True)
    assert "service 1234 updated" in text
    post(owner, "/admin/services/1234/active", {"active": "no"}, page="/admin/services")
    with app.app_context(), db.read() as conn:
        row = services.get(conn, 1234)
    assert (row.rate, row.cancel, row.fixed_quantity, row.active) == (1_500_000, False, 1000, False)
    [entry] = entries(app, "service.update")
    assert json.loads(entry.before_json)["rate"] == 890_000
    text = post(owner, "/admin/services/1234", {"refill_days": "99999"}, page="/admin/services",
                follow_redirects=True).get_data(as_text=True)
    assert "refill days must be between 0 (no refill) and 3650" in text
