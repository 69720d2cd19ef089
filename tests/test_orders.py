"""`add` and `status` through HTTP: every service kind, every fields encoding, the purchase
guard, idempotency, every order-related error row of docs/CONTRACT.md, and "any failure leaves
no trace"."""
import json
import re

import pytest
from freezegun import freeze_time
from sqlalchemy import event, func, select

from serva import create_app, db, orders as orders_repo, services
from serva.cli import cli as serva_cli
from serva.demo import CATALOG
from serva.ids import parse_order
from serva.schema import (
    accounts, coupon_redemptions, coupons, idempotency_keys, ledger, orders, purchase_guards,
)

from conftest import make_partner

FOLLOWERS, PACKAGE, COMMENTS, GAME = "1234", "1235", "1236", "7788"
LINK = "https://example.com/post/1"


# ---------------------------------------------------------------- helpers

def add_service(app, **values):
    with app.app_context(), db.write() as conn:
        return str(services.add(conn, **values))


def snapshot(app):
    """Everything a purchase may touch."""
    with app.app_context(), db.read() as conn:
        def count(table):
            return conn.execute(select(func.count()).select_from(table)).scalar()
        return {
            "balances": dict(conn.execute(select(accounts.c.id, accounts.c.balance)).all()),
            "orders": count(orders), "ledger": count(ledger),
            "redemptions": count(coupon_redemptions), "guards": count(purchase_guards),
            "idempotency": count(idempotency_keys),
            "coupon_uses": dict(conn.execute(select(coupons.c.code, coupons.c.uses)).all()),
        }


def balance_of(app, account_id):
    with app.app_context(), db.read() as conn:
        return conn.execute(select(accounts.c.balance).where(accounts.c.id == account_id)).scalar()


def order_row(app, order):
    with app.app_context(), db.read() as conn:
        return conn.execute(select(orders).where(orders.c.id == parse_order(order))).first()


def set_status(app, order, status, **kw):
    with app.app_context(), db.write() as conn:
        return orders_repo.set_status(conn, parse_order(order), status, **kw)


def post_json(client, key, action, **params):
    response = client.post("/api/v1", json={"action": action, "key": key, **params})
    assert response.status_code == 200
    return response.get_json()


def assert_error(body, code, message=None):
    assert set(body) == {"error", "code"}, body
    assert body["code"] == code, body
    if message is not None:
        assert body["error"] == message


def assert_order(body, charge, balance):
    assert set(body) == {"order", "charge", "currency", "balance"}, body
    assert re.fullmatch(r"ORD-\d+", body["order"])
    assert body["charge"] == charge
    assert body["currency"] == "USD"
    assert body["balance"] == balance


# ---------------------------------------------------------------- add: each kind

def test_add_link_service_charges_rate_times_quantity(app, api, catalog, partner):
    body = api("add", service=FOLLOWERS, link=LINK, quantity="1000")
    assert_order(body, "0.89", "99.11")
    assert api("balance") == {"balance": "99.11", "currency": "USD"}
    row = order_row(app, body["order"])
    assert (row.account_id, row.service_id, row.quantity, row.charge, row.status, row.remains) == \
        (partner[0], 1234, 1000, 890_000, "Pending", 1000)
    assert row.target == LINK
    with app.app_context(), db.read() as conn:
        entries = conn.execute(select(ledger.c.amount, ledger.c.kind, ledger.c.order_id)
                               .where(ledger.c.order_id == row.id)).all()
    assert [tuple(e) for e in entries] == [(-890_000, "charge", row.id)]


@pytest.mark.parametrize("name", ["link", "target", "target_link"])
def test_link_aliases(api, catalog, name):
    body = api("add", service=FOLLOWERS, quantity="100", **{name: "https://example.com/" + name})
    assert_order(body, "0.089", "99.911")


def test_charge_is_rounded_half_up_once(app, api, catalog):
    # 0.89 per 1000 x 101 = 0.08989 exactly; 0.000015 per 1000 x 100 = 0.0000015 -> 0.000002
    assert api("add", service=FOLLOWERS, link=LINK, quantity="101")["charge"] == "0.08989"
    tiny = add_service(app, name="Tiny", rate=15, min_quantity=1, max_quantity=1000)
    assert api("add", service=tiny, link=LINK, quantity="100")["charge"] == "0.000002"


def test_add_uses_the_accounts_effective_rate(app, runner, api, catalog, partner):
    assert runner.invoke(serva_cli, args=["account", "discount", "partner@example.com", "10"]).exit_code == 0
    assert api("add", service=FOLLOWERS, link=LINK, quantity="1000")["charge"] == "0.801"
    result = runner.invoke(serva_cli, args=["account", "rate", "partner@example.com", "1234", "0.5"])
    assert result.exit_code == 0, result.output
    assert api("add", service=FOLLOWERS, link=LINK + "x", quantity="1000")["charge"] == "0.5"


def test_service_created_with_the_cli_can_be_ordered(runner, api):
    result = runner.invoke(serva_cli, args=["service", "add", "--name", "TikTok Views", "--category", "TikTok",
                                 "--rate", "0.02", "--min", "10", "--max", "500"])
    assert result.exit_code == 0, result.output
    service_id = re.search(r"service (\d+) added", result.output).group(1)
    assert_order(api("add", service=service_id, link=LINK, quantity="500"), "0.01", "99.99")


def test_add_package_charges_its_rate_with_fixed_quantity(app, api, catalog):
    body = api("add", service=PACKAGE, link="https://youtube.com/watch?v=abc")
    assert_order(body, "15", "85")
    assert order_row(app, body["order"]).quantity == 1
    assert api("status", order=body["order"])["remains"] == 1
    assert_order(api("add", service=PACKAGE, link="https://youtube.com/watch?v=def", quantity="1"),
                 "15", "70")
    assert_error(api("add", service=PACKAGE, link="https://youtube.com/watch?v=x", quantity="2"),
                 "invalid_quantity", "Incorrect quantity")


def test_lines_service_counts_non_empty_lines_of_top_level_comments(app, api, catalog):
    body = api("add", service=COMMENTS, link=LINK, comments="great pic\n\n  \nnice!\r\nwow\n")
    assert_order(body, "0.036", "99.964")  # 12 per 1000 x 3 lines
    row = order_row(app, body["order"])
    assert row.quantity == 3
    assert json.loads(row.inputs_json) == {"comments": "great pic\n\n  \nnice!\r\nwow"}


def test_lines_service_reads_comments_from_fields_too(client, partner, catalog):
    body = post_json(client, partner[1], "add", service=COMMENTS, link=LINK,
                     fields={"comments": "a\nb"}, quantity=2)
    assert_order(body, "0.024", "99.976")


def test_lines_service_accepts_an_agreeing_quantity_and_refuses_a_disagreeing_one(app, api, catalog):
    before = snapshot(app)
    assert_error(api("add", service=COMMENTS, link=LINK, comments="a\nb", quantity="3"),
                 "invalid_quantity", "Incorrect quantity")
    assert_error(api("add", service=COMMENTS, link=LINK, comments="a\nb", quantity="lots"),
                 "invalid_quantity", "Incorrect quantity")
    assert snapshot(app) == before
    assert_order(api("add", service=COMMENTS, link=LINK, comments="a\nb", quantity="2"),
                 "0.024", "99.976")


def test_lines_service_bounds_and_missing_lines(app, api):
    small = add_service(app, name="Comments", category="Instagram", kind="lines", rate=1_000_000,
                        min_quantity=2, max_quantity=3, fields_json=json.dumps(
                            [{"name": "comments", "required": True, "lines": True}]))
    assert_error(api("add", service=small, link=LINK, comments="a\nb\nc\nd"),
                 "invalid_quantity", "Quantity more than maximum 3")
    assert_error(api("add", service=small, link=LINK, comments="only one\n\n"),
                 "invalid_quantity", "Quantity less than minimal 2")
    assert_error(api("add", service=small, link=LINK, comments="\n \n"),
                 "invalid_fields", "Invalid fields: missing required field comments")
    assert_error(api("add", service=small, link=LINK), "invalid_fields",
                 "Invalid fields: missing required field comments")


def test_manual_bulk_field_derives_quantity_from_lines(app, client, partner):
    bulk = add_service(app, name="Game Gift", category="Game Top-up", kind="fields",
                       rate=2_000_000, min_quantity=1, max_quantity=50, fields_json=json.dumps(
                           [{"name": "server_id", "required": True},
                            {"name": "player_ids", "required": True, "lines": True}]))
    body = post_json(client, partner[1], "add", service=bulk,
                     fields={"server_id": "55", "player_ids": "111\n222\n\n333\n"})
    assert_order(body, "0.006", "99.994")
    assert order_row(app, body["order"]).quantity == 3
    # Another list of players on the same server is another target, not a repeat.
    other = post_json(client, partner[1], "add", service=bulk,
                      fields={"server_id": "55", "player_ids": "444\n555"})
    assert_order(other, "0.004", "99.99")
    # The same list again (whatever the blank lines) is the same target.
    assert_error(post_json(client, partner[1], "add", service=bulk,
                           fields={"server_id": "55", "player_ids": "444\n\n555\n"}),
                 "duplicate_target")
    assert_error(post_json(client, partner[1], "add", service=bulk,
                           fields={"server_id": "55", "player_ids": "444\n555"}, quantity=3),
                 "invalid_quantity", "Incorrect quantity")


# ---------------------------------------------------------------- manual fields encodings

GAME_INPUTS = {"player_id": "123456789", "server_id": "55"}


def _form(client, key, params):
    response = client.post("/api/v1", data={"action": "add", "key": key, "service": GAME,
                                            "quantity": "10", **params})
    assert response.status_code == 200
    return response.get_json()


def _json(client, key, params):
    return post_json(client, key, "add", service=int(GAME), quantity=10, **params)


FIELD_ENCODINGS = {
    "json object": (_json, {"fields": {"player_id": "123456789", "server_id": 55}}),
    "json list of name/value": (_json, {"fields": [{"name": "player_id", "value": "123456789"},
                                                   {"name": "server_id", "value": "55"}]}),
    "json body, JSON-encoded string": (_json, {"fields": json.dumps(GAME_INPUTS)}),
    "form, JSON-encoded object": (_form, {"fields": json.dumps(GAME_INPUTS)}),
    "form, JSON-encoded list": (_form, {"fields": json.dumps(
        [{"name": "player_id", "value": "123456789"}, {"name": "server_id", "value": 55}])}),
    "form, PHP-style keys": (_form, {"fields[player_id]": "123456789", "fields[server_id]": "55"}),
    "form, PHP-style list": (_form, {"fields[0][name]": "player_id", "fields[0][value]": "123456789",
                                     "fields[1][name]": "server_id", "fields[1][value]": "55"}),
    "inputs alias, json": (_json, {"inputs": GAME_INPUTS}),
    "inputs alias, PHP-style": (_form, {"inputs[player_id]": "123456789", "inputs[server_id]": "55"}),
    "custom_fields alias, json": (_json, {"custom_fields": GAME_INPUTS}),
    "custom_fields alias, form string": (_form, {"custom_fields": json.dumps(GAME_INPUTS)}),
}


@pytest.mark.parametrize("encoding", FIELD_ENCODINGS)
def test_manual_fields_in_every_encoding(app, client, partner, catalog, encoding):
    send, params = FIELD_ENCODINGS[encoding]
    body = send(client, partner[1], params)
    assert_order(body, "0.2", "99.8")  # 20 per 1000 x 10
    row = order_row(app, body["order"])
    assert json.loads(row.inputs_json) == GAME_INPUTS
    assert row.quantity == 10


def test_manual_fields_canonical_target_across_encodings(client, partner, catalog):
    """The guard compares the canonical form of the values, not the encoding."""
    assert "order" in _json(client, partner[1], {"fields": {"server_id": "55", "player_id": "123456789"}})
    for send, params in FIELD_ENCODINGS.values():
        assert_error(send(client, partner[1], params), "duplicate_target")
    assert "order" in _json(client, partner[1], {"fields": {"server_id": "56", "player_id": "123456789"}})


def test_manual_fields_target_is_not_ambiguous(app, client, partner):
    """Values containing the separator of the displayed target are still different targets."""
    svc = add_service(app, name="Two fields", kind="fields", rate=1_000_000, min_quantity=1,
                      max_quantity=10, fields_json=json.dumps(
                          [{"name": "a", "required": True}, {"name": "b", "required": False}]))
    assert "order" in post_json(client, partner[1], "add", service=svc, quantity=1,
                                fields={"a": "1; b=2"})
    assert "order" in post_json(client, partner[1], "add", service=svc, quantity=1,
                                fields={"a": "1", "b": "2"})


# ---------------------------------------------------------------- error rows

BAD_ADDS = [
    ({"link": LINK, "quantity": "1000"}, "missing_parameter", "Missing required parameter: service"),
    ({"service": FOLLOWERS, "quantity": "1000"}, "missing_parameter", "Missing required parameter: link"),
    ({"service": FOLLOWERS, "link": "", "quantity": "1000"}, "missing_parameter",
     "Missing required parameter: link"),
    ({"service": FOLLOWERS, "link": LINK}, "missing_parameter", "Missing required parameter: quantity"),
    ({"service": COMMENTS, "comments": "a\nb"}, "missing_parameter", "Missing required parameter: link"),
    ({"service": "9999", "link": LINK, "quantity": "1000"}, "service_unavailable", "Incorrect service ID"),
    ({"service": "abc", "link": LINK, "quantity": "1000"}, "service_unavailable", "Incorrect service ID"),
    ({"service": "-1234", "link": LINK, "quantity": "1000"}, "service_unavailable", "Incorrect service ID"),
    ({"service": "999999999999999999", "link": LINK, "quantity": "1000"}, "service_unavailable",
     "Incorrect service ID"),
    ({"service": FOLLOWERS, "link": "ftp://example.com/file", "quantity": "1000"}, "invalid_link", "Incorrect link"),
    ({"service": FOLLOWERS, "link": "javascript:alert(1)", "quantity": "1000"}, "invalid_link", "Incorrect link"),
    ({"service": FOLLOWERS, "link": "https://", "quantity": "1000"}, "invalid_link", "Incorrect link"),
    ({"service": FOLLOWERS, "link": "https:///no-host", "quantity": "1000"}, "invalid_link", "Incorrect link"),
    ({"service": FOLLOWERS, "link": "example.com/post/1", "quantity": "1000"}, "invalid_link", "Incorrect link"),
    ({"service": FOLLOWERS, "link": "https://exa mple.com/", "quantity": "1000"}, "invalid_link", "Incorrect link"),
    ({"service": FOLLOWERS, "link": "https://example.com:99999/", "quantity": "1000"}, "invalid_link", "Incorrect link"),
    ({"service": FOLLOWERS, "target": "mailto:a@example.com", "quantity": "1000"}, "invalid_link", "Incorrect link"),
    ({"service": FOLLOWERS, "link": LINK, "quantity": "abc"}, "invalid_quantity", "Incorrect quantity"),
    ({"service": FOLLOWERS, "link": LINK, "quantity": "1.5"}, "invalid_quantity", "Incorrect quantity"),
    ({"service": FOLLOWERS, "link": LINK, "quantity": "-100"}, "invalid_quantity", "Incorrect quantity"),
    ({"service": FOLLOWERS, "link": LINK, "quantity": "99"}, "invalid_quantity", "Quantity less than minimal 100"),
    ({"service": FOLLOWERS, "link": LINK, "quantity": "0"}, "invalid_quantity", "Quantity less than minimal 100"),
    ({"service": FOLLOWERS, "link": LINK, "quantity": "100001"}, "invalid_quantity",
     "Quantity more than maximum 100000"),
    ({"service": GAME, "quantity": "10", "fields[player_id]": "1", "fields[server_id]": "2",
      "fields[zone]": "3"}, "invalid_fields", "Invalid fields: unknown field zone"),
    ({"service": FOLLOWERS, "link": LINK, "quantity": "1000", "fields[note]": "x"}, "invalid_fields",
     "Invalid fields: unknown field note"),
    ({"service": GAME, "quantity": "10", "fields[player_id]": "1"}, "invalid_fields",
     "Invalid fields: missing required field server_id"),
    ({"service": GAME, "quantity": "10", "fields[player_id]": "1", "fields[server_id]": "  "},
     "invalid_fields", "Invalid fields: missing required field server_id"),
    ({"service": GAME, "quantity": "10"}, "invalid_fields", "Invalid fields: missing required field player_id"),
    ({"service": GAME, "quantity": "10", "fields": "{not json"}, "invalid_fields", None),
    ({"service": GAME, "quantity": "10", "fields": "42"}, "invalid_fields", None),
    ({"service": GAME, "quantity": "10", "fields": '[{"value": "1"}]'}, "invalid_fields", None),
    ({"service": GAME, "quantity": "10", "fields": '{"player_id": {"x": 1}, "server_id": "2"}'},
     "invalid_fields", None),
    # 7788 is a pack of 10: any other quantity is wrong, not a bound to report
    ({"service": GAME, "quantity": "5", "fields[player_id]": "1", "fields[server_id]": "2"},
     "invalid_quantity", "Incorrect quantity"),
    ({"service": GAME, "quantity": "11", "fields[player_id]": "1", "fields[server_id]": "2"},
     "invalid_quantity", "Incorrect quantity"),
    # drip-feed: never silently dropped, ranges checked (1234 has drip-feed, 1235/7788 not)
    ({"service": PACKAGE, "link": LINK, "runs": "3", "interval": "10"}, "dripfeed_not_available",
     "Drip-feed is not available for this service"),
    ({"service": GAME, "fields[player_id]": "1", "fields[server_id]": "2", "runs": "2",
      "interval": "5"}, "dripfeed_not_available", "Drip-feed is not available for this service"),
    ({"service": FOLLOWERS, "link": LINK, "quantity": "100", "runs": "1001", "interval": "5"},
     "dripfeed_not_available", "Incorrect runs"),
    ({"service": FOLLOWERS, "link": LINK, "quantity": "100", "runs": "0", "interval": "5"},
     "dripfeed_not_available", "Incorrect runs"),
    ({"service": FOLLOWERS, "link": LINK, "quantity": "100", "runs": "2.5", "interval": "5"},
     "invalid_request", "Incorrect request: runs must be a whole number (digits 0-9)"),
    ({"service": FOLLOWERS, "link": LINK, "quantity": "100", "runs": "3"}, "missing_parameter",
     "Missing required parameter: interval"),
    ({"service": FOLLOWERS, "link": LINK, "quantity": "100", "runs": "3", "interval": "0"},
     "dripfeed_not_available", "Incorrect interval"),
    ({"service": FOLLOWERS, "link": LINK, "quantity": "100", "runs": "3", "interval": "1441"},
     "dripfeed_not_available", "Incorrect interval"),
    ({"service": FOLLOWERS, "link": LINK, "quantity": "99", "runs": "3", "interval": "5"},
     "invalid_quantity", "Quantity less than minimal 100"),
    ({"service": FOLLOWERS, "link": LINK, "quantity": "1000", "coupon": "NOPE"}, "invalid_coupon",
     "Invalid coupon"),
    ({"service": FOLLOWERS, "link": LINK, "quantity": "1000", "coupon_code": "NOPE"}, "invalid_coupon",
     "Invalid coupon"),
]


@pytest.mark.parametrize("params,code,message", BAD_ADDS,
                         ids=[f"{c}-{i}" for i, (_, c, _m) in enumerate(BAD_ADDS)])
def test_add_errors_leave_no_trace(app, api, catalog, params, code, message):
    before = snapshot(app)
    body = api("add", **params)
    assert_error(body, code, message)
    if code == "invalid_fields":
        assert body["error"].startswith("Invalid fields: ")
    assert snapshot(app) == before


def test_add_error_through_a_json_body(app, client, partner, catalog):
    body = post_json(client, partner[1], "add", service=int(FOLLOWERS), link=LINK, quantity=10.5)
    assert_error(body, "invalid_quantity", "Incorrect quantity")
    body = post_json(client, partner[1], "add", service=int(FOLLOWERS), link=42, quantity=100)
    assert_error(body, "invalid_link", "Incorrect link")
    body = post_json(client, partner[1], "add", service=int(GAME), quantity=10,
                     fields={"player_id": ["1"], "server_id": "2"})
    assert_error(body, "invalid_fields")


def test_disabled_service_is_unavailable(app, runner, api, catalog):
    assert_order(api("add", service=FOLLOWERS, link=LINK, quantity="100"), "0.089", "99.911")
    result = runner.invoke(serva_cli, args=["service", "disable", FOLLOWERS])
    assert result.exit_code == 0, result.output
    before = snapshot(app)
    assert_error(api("add", service=FOLLOWERS, link=LINK + "/2", quantity="100"),
                 "service_unavailable", "Incorrect service ID")
    assert snapshot(app) == before
    assert FOLLOWERS not in [s["service"] for s in api("services")]


def test_insufficient_balance(app, client, catalog):
    account_id, key = make_partner(app, "poor@example.com", balance="0.89")
    form = {"action": "add", "key": key, "service": FOLLOWERS, "link": LINK}
    before = snapshot(app)
    body = client.post("/api/v1", data={**form, "quantity": "1001"}).get_json()
    assert_error(body, "insufficient_balance", "Not enough funds on balance")
    assert snapshot(app) == before
    # Exactly the whole balance is enough.
    assert_order(client.post("/api/v1", data={**form, "quantity": "1000"}).get_json(), "0.89", "0")
    assert balance_of(app, account_id) == 0
    body = client.post("/api/v1", data={**form, "link": LINK + "/2", "quantity": "100"}).get_json()
    assert_error(body, "insufficient_balance", "Not enough funds on balance")


def test_insufficient_balance_with_a_coupon_leaves_no_trace(app, runner, client, catalog):
    assert runner.invoke(serva_cli, args=["coupon", "create", "TEN", "--percent", "10"]).exit_code == 0
    _, key = make_partner(app, "poor@example.com", balance="0.8")
    before = snapshot(app)
    body = client.post("/api/v1", data={"action": "add", "key": key, "service": FOLLOWERS,
                                        "link": LINK, "quantity": "1000", "coupon": "TEN"}).get_json()
    assert_error(body, "insufficient_balance")  # 0.801 > 0.8
    after = snapshot(app)
    assert after == before and after["coupon_uses"] == {"TEN": 0}


# ---------------------------------------------------------------- purchase guard

def test_duplicate_target_on_the_normalized_link(app, api, catalog):
    assert "order" in api("add", service=FOLLOWERS, link="https://EXAMPLE.com:443/p/#frag", quantity="1000")
    assert order_row(app, "ORD-100001").target == "https://example.com/p"
    before = snapshot(app)
    for same in ("https://example.com/p", "https://example.com/p/", "HTTPS://example.COM/p#x",
                 " https://example.com:443/p "):
        assert_error(api("add", service=FOLLOWERS, link=same, quantity="1000"), "duplicate_target",
                     "Duplicate order for this target is blocked")
    assert snapshot(app) == before
    # Different scheme, path case, query, service or account: a different target.
    assert "order" in api("add", service=FOLLOWERS, link="http://example.com/p", quantity="1000")
    assert "order" in api("add", service=FOLLOWERS, link="https://example.com/P", quantity="1000")
    assert "order" in api("add", service=FOLLOWERS, link="https://example.com/p?x=1", quantity="1000")
    assert "order" in api("add", service=PACKAGE, link="https://example.com/p")


def test_http_default_port_is_dropped(app, api, catalog):
    assert "order" in api("add", service=FOLLOWERS, link="http://Example.com:80/a/", quantity="100")
    assert order_row(app, "ORD-100001").target == "http://example.com/a"
    assert "order" in api("add", service=FOLLOWERS, link="http://example.com:8080/a", quantity="100")
    assert order_row(app, "ORD-100002").target == "http://example.com:8080/a"


def test_guard_is_per_account(app, client, api, catalog):
    assert "order" in api("add", service=FOLLOWERS, link=LINK, quantity="1000")
    _, other = make_partner(app, "other@example.com")
    body = client.post("/api/v1", data={"action": "add", "key": other, "service": FOLLOWERS,
                                        "link": LINK, "quantity": "1000"}).get_json()
    assert_order(body, "0.89", "99.11")


def test_duplicate_target_whatever_the_first_orders_status(app, api, catalog):
    with freeze_time("2031-03-01 12:00:00") as clock:
        first = api("add", service=FOLLOWERS, link=LINK, quantity="1000")["order"]
        set_status(app, first, "Completed")
        clock.tick(299)
        before = snapshot(app)
        assert_error(api("add", service=FOLLOWERS, link=LINK, quantity="1000"), "duplicate_target")
        assert snapshot(app) == before
        # A different quantity is not a repeat, and the first order is no longer active.
        assert "order" in api("add", service=FOLLOWERS, link=LINK, quantity="2000")


def test_duplicate_target_of_a_canceled_order_within_the_window(app, api, catalog):
    with freeze_time("2031-03-01 12:00:00") as clock:
        first = api("add", service=FOLLOWERS, link=LINK, quantity="1000")["order"]
        set_status(app, first, "Canceled")
        clock.tick(60)
        assert_error(api("add", service=FOLLOWERS, link=LINK, quantity="1000"), "duplicate_target")


def test_guard_window_expires(app, api, catalog):
    with freeze_time("2031-03-01 12:00:00") as clock:
        first = api("add", service=FOLLOWERS, link=LINK, quantity="1000")["order"]
        set_status(app, first, "Completed")
        clock.tick(300)  # the default window is 5 minutes
        assert_order(api("add", service=FOLLOWERS, link=LINK, quantity="1000"), "0.89", "98.22")


def test_guard_window_is_a_setting(tmp_path):
    app = create_app({"TESTING": True, "SECRET_KEY": "t", "GUARD_WINDOW_SECONDS": 10,
                      "DATABASE_URL": f"sqlite:///{tmp_path / 'w.sqlite'}"})
    db.init_schema(app.extensions["serva.engine"])
    try:
        with app.app_context(), db.write() as conn:
            services.add(conn, **CATALOG[0])
        _, key = make_partner(app)
        client = app.test_client()
        params = {"action": "add", "key": key, "service": FOLLOWERS, "link": LINK, "quantity": "100"}
        with freeze_time("2031-03-01 12:00:00") as clock:
            first = client.post("/api/v1", data=params).get_json()["order"]
            set_status(app, first, "Completed")
            clock.tick(9)
            assert_error(client.post("/api/v1", data=params).get_json(), "duplicate_target")
            clock.tick(1)
            assert "order" in client.post("/api/v1", data=params).get_json()
    finally:
        app.extensions["serva.engine"].dispose()


def test_active_order_exists(app, api, catalog):
    with freeze_time("2031-03-01 12:00:00") as clock:
        first = api("add", service=FOLLOWERS, link=LINK, quantity="1000")["order"]
        message = "You have active order with this link. Please wait until order being completed."
        for status in ("Pending", "In progress", "Processing"):
            set_status(app, first, status)
            before = snapshot(app)
            assert_error(api("add", service=FOLLOWERS, link=LINK + "/", quantity="2000"),
                         "active_order_exists", message)
            assert snapshot(app) == before
        # After the window the same quantity is no longer a double submit, but still active.
        clock.tick(301)
        before = snapshot(app)
        assert_error(api("add", service=FOLLOWERS, link=LINK, quantity="1000"), "active_order_exists", message)
        assert snapshot(app) == before
        # Once the first order is done, both are allowed.
        set_status(app, first, "Partial", remains=10)
        assert "order" in api("add", service=FOLLOWERS, link=LINK, quantity="1000")


def test_active_order_exists_for_manual_fields(app, client, partner):
    svc = add_service(app, name="Gems", kind="fields", rate=1_000_000, min_quantity=1,
                      max_quantity=100, fields_json=json.dumps([{"name": "player_id"}]))
    assert "order" in post_json(client, partner[1], "add", service=svc, quantity=10,
                                fields={"player_id": "1"})
    body = post_json(client, partner[1], "add", service=svc, quantity=20, fields={"player_id": "1"})
    assert_error(body, "active_order_exists")


# ---------------------------------------------------------------- idempotency

def test_idempotency_key_header_replays_the_first_response(app, client, partner, catalog):
    params = {"action": "add", "key": partner[1], "service": FOLLOWERS, "link": LINK, "quantity": "1000"}
    first = client.post("/api/v1", data=params, headers={"Idempotency-Key": "abc-1"})
    after_first = snapshot(app)
    again = client.post("/api/v1", data=params, headers={"Idempotency-Key": "abc-1"})
    assert again.data == first.data
    assert_order(first.get_json(), "0.89", "99.11")
    assert snapshot(app) == after_first
    assert after_first["orders"] == 1 and after_first["balances"][partner[0]] == 99_110_000


def test_idempotency_key_parameter(app, client, partner, catalog):
    body = {"action": "add", "key": partner[1], "service": int(FOLLOWERS), "link": LINK,
            "quantity": 1000, "idempotency_key": "k-9"}
    first = client.post("/api/v1", json=body)
    # The same request as a form, same key: same response, no second order.
    again = client.post("/api/v1", data={**body, "service": FOLLOWERS, "quantity": "1000"})
    assert again.data == first.data
    assert snapshot(app)["orders"] == 1


def test_idempotency_replay_survives_later_balance_changes(app, client, partner, catalog):
    params = {"action": "add", "key": partner[1], "service": FOLLOWERS, "link": LINK, "quantity": "1000"}
    first = client.post("/api/v1", data=params, headers={"Idempotency-Key": "x"}).get_json()
    client.post("/api/v1", data={**params, "link": LINK + "/2"})
    assert client.post("/api/v1", data=params, headers={"Idempotency-Key": "x"}).get_json() == first


def test_idempotency_key_with_different_parameters_is_an_error(app, client, partner, catalog):
    params = {"action": "add", "key": partner[1], "service": FOLLOWERS, "link": LINK, "quantity": "1000"}
    client.post("/api/v1", data=params, headers={"Idempotency-Key": "same"})
    before = snapshot(app)
    for changed in ({"quantity": "2000"}, {"link": LINK + "/other"}, {"service": PACKAGE, "quantity": "1"}):
        body = client.post("/api/v1", data={**params, **changed},
                           headers={"Idempotency-Key": "same"}).get_json()
        assert_error(body, "idempotency_conflict")
    assert snapshot(app) == before


def test_idempotency_key_expires_after_24_hours(app, client, partner, catalog):
    params = {"action": "add", "key": partner[1], "service": FOLLOWERS, "link": LINK, "quantity": "1000"}
    headers = {"Idempotency-Key": "daily"}
    with freeze_time("2031-03-01 12:00:00") as clock:
        first = client.post("/api/v1", data=params, headers=headers).get_json()
        set_status(app, first["order"], "Completed")
        clock.tick(24 * 3600 - 1)
        assert client.post("/api/v1", data=params, headers=headers).get_json() == first
        clock.tick(1)
        second = client.post("/api/v1", data=params, headers=headers).get_json()
        assert_order(second, "0.89", "98.22")
        assert second["order"] != first["order"]
        assert client.post("/api/v1", data=params, headers=headers).get_json() == second


def test_idempotency_keys_are_per_account(app, client, partner, catalog):
    _, other = make_partner(app, "other@example.com")
    headers = {"Idempotency-Key": "shared"}
    params = {"action": "add", "service": FOLLOWERS, "link": LINK, "quantity": "1000"}
    mine = client.post("/api/v1", data={**params, "key": partner[1]}, headers=headers).get_json()
    theirs = client.post("/api/v1", data={**params, "key": other}, headers=headers).get_json()
    assert mine["order"] != theirs["order"]
    assert snapshot(app)["orders"] == 2


def test_idempotent_retry_after_a_failure_places_the_order(app, client, catalog):
    account_id, key = make_partner(app, "poor@example.com", balance="0.5")
    params = {"action": "add", "key": key, "service": FOLLOWERS, "link": LINK, "quantity": "1000"}
    headers = {"Idempotency-Key": "retry"}
    assert_error(client.post("/api/v1", data=params, headers=headers).get_json(), "insufficient_balance")
    assert snapshot(app)["idempotency"] == 0
    with app.app_context(), db.write() as conn:
        from serva import ledger as ledger_repo
        ledger_repo.post(conn, account_id, 1_000_000, "topup", "more")
    assert_order(client.post("/api/v1", data=params, headers=headers).get_json(), "0.89", "0.61")


# ---------------------------------------------------------------- status

@pytest.fixture
def placed(api, catalog):
    """Three orders of the partner: ORD-100001..ORD-100003."""
    return [api("add", service=FOLLOWERS, link=f"{LINK}/{i}", quantity="1000")["order"] for i in range(3)]


def test_status_single_in_both_id_forms(app, api, client, partner, placed):
    expected = {"charge": "0.89", "start_count": None, "status": "Pending", "remains": 1000,
                "currency": "USD"}
    assert api("status", order="ORD-100001") == expected
    assert api("status", order="100001") == expected
    assert api("status", order="ord-100001") == expected
    assert post_json(client, partner[1], "status", order=100001) == expected
    set_status(app, "ORD-100002", "In progress", start_count=1500, remains=450)
    assert api("status", order="100002") == {"charge": "0.89", "start_count": 1500,
                                            "status": "In progress", "remains": 450, "currency": "USD"}


@pytest.mark.parametrize("order", ["ORD-999999", "999999", "garbage", "ORD-", "100000", "0", "-1",
                                   "ORD-999999999999999999", "99999999999999999999"])
def test_status_unknown_order(api, placed, order):
    assert_error(api("status", order=order), "order_not_found", "Incorrect order ID")


def test_status_missing_order(api, placed):
    assert_error(api("status"), "missing_parameter", "Missing required parameter: order")
    assert_error(api("status", order=""), "missing_parameter", "Missing required parameter: order")


def test_other_accounts_orders_look_missing(app, client, api, placed):
    _, other = make_partner(app, "other@example.com")
    body = client.post("/api/v1", data={"action": "status", "key": other, "order": placed[0]}).get_json()
    assert_error(body, "order_not_found", "Incorrect order ID")
    body = client.post("/api/v1", data={"action": "status", "key": other,
                                        "orders": f"{placed[0]},ORD-999999"}).get_json()
    assert body == {placed[0]: {"error": "Incorrect order ID"}, "ORD-999999": {"error": "Incorrect order ID"}}


def test_status_batch_keyed_by_ids_as_sent(app, api, placed):
    set_status(app, "ORD-100003", "Canceled")
    body = api("status", orders="ORD-100001,100002,ord-100003,ORD-100001,,garbage,ORD-999999")
    ok = {"charge": "0.89", "start_count": None, "status": "Pending", "remains": 1000, "currency": "USD"}
    assert body == {
        "ORD-100001": ok,
        "100002": ok,
        "ord-100003": {"charge": "0", "start_count": None, "status": "Canceled", "remains": 1000,
                       "currency": "USD"},
        "garbage": {"error": "Incorrect order ID"},
        "ORD-999999": {"error": "Incorrect order ID"},
    }


def test_status_batch_as_a_json_list(client, partner, placed):
    body = post_json(client, partner[1], "status", orders=["ORD-100001", 100002])
    assert set(body) == {"ORD-100001", "100002"}
    assert body["100002"]["status"] == "Pending"


def test_status_batch_limit(app, api, placed):
    ids = [f"ORD-{100001 + i}" for i in range(100)]
    body = api("status", orders=",".join(ids))
    assert list(body) == ids
    assert sum("status" in v for v in body.values()) == 3
    assert_error(api("status", orders=",".join(ids + ["ORD-200000"])), "too_many_orders",
                 "Too many orders in one request (max 100)")


def test_status_batch_is_one_query(app, api, placed):
    """Counted twice: by SQLAlchemy's before_cursor_execute and by SQLite's own statement
    trace (which also sees statements run straight on the driver connection)."""
    engine = app.extensions["serva.engine"]
    statements, traced = [], []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    def trace(dbapi_connection, _record):
        dbapi_connection.set_trace_callback(traced.append)

    api("balance")  # the key's last use is recorded now, not during the batch
    engine.dispose()  # new connections, so each one gets the trace
    event.listen(engine, "connect", trace)
    event.listen(engine, "before_cursor_execute", record)
    try:
        body = api("status", orders=",".join(str(100001 + i) for i in range(100)))
    finally:
        event.remove(engine, "before_cursor_execute", record)
        event.remove(engine, "connect", trace)
        engine.dispose()
    assert len(body) == 100
    assert sum("status" in entry for entry in body.values()) == 3

    def on_orders(sqls):
        return [s for s in sqls if re.search(r"\bFROM\s+\"?orders\b", s, re.IGNORECASE)]

    assert len(on_orders(traced)) == 1, traced
    assert len(on_orders(statements)) <= 1, statements
    selects = [s for s in traced if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) <= 3, traced  # the key lookup, the batch: nothing per id


def test_status_charge_after_partial_and_cancel(app, api, placed):
    set_status(app, placed[0], "Partial", start_count=10, remains=400)
    set_status(app, placed[1], "Canceled")
    set_status(app, placed[2], "Completed", start_count=5)
    assert api("status", order=placed[0]) == {"charge": "0.534", "start_count": 10, "status": "Partial",
                                              "remains": 400, "currency": "USD"}
    assert api("status", order=placed[1]) == {"charge": "0", "start_count": None, "status": "Canceled",
                                              "remains": 1000, "currency": "USD"}
    assert api("status", order=placed[2]) == {"charge": "0.89", "start_count": 5, "status": "Completed",
                                              "remains": 0, "currency": "USD"}
    assert api("balance")["balance"] == "98.576"  # 100 - 3 x 0.89 + 0.356 + 0.89


def test_success_bodies_never_carry_an_error_key(api, placed):
    assert "error" not in api("status", order=placed[0])
    assert "error" not in api("add", service=FOLLOWERS, link=LINK + "/x", quantity="100")


# ---------------------------------------------------------------- integer ids

@pytest.fixture
def int_app(tmp_path):
    app = create_app({"TESTING": True, "SECRET_KEY": "t", "INTEGER_IDS": True,
                      "DATABASE_URL": f"sqlite:///{tmp_path / 'int.sqlite'}"})
    db.init_schema(app.extensions["serva.engine"])
    with app.app_context(), db.write() as conn:
        for entry in CATALOG:
            services.add(conn, **entry)
    yield app
    app.extensions["serva.engine"].dispose()


def test_integer_ids_setting(int_app):
    _, key = make_partner(int_app)
    client = int_app.test_client()
    catalog_ids = [s["service"] for s in client.post("/api/v1", data={"action": "services", "key": key}).get_json()]
    assert catalog_ids == [1234, 1235, 1236, 7788]
    body = client.post("/api/v1", data={"action": "add", "key": key, "service": 1234, "link": LINK,
                                        "quantity": 1000}).get_json()
    assert body == {"order": 100001, "charge": "0.89", "currency": "USD", "balance": "99.11"}
    assert type(body["order"]) is int
    status = client.post("/api/v1", json={"action": "status", "key": key, "order": body["order"]}).get_json()
    assert status["status"] == "Pending"
    assert client.post("/api/v1", data={"action": "status", "key": key, "order": "100001"}).get_json() == status
    assert client.post("/api/v1", data={"action": "status", "key": key, "order": "ORD-100001"}).get_json() == status
    batch = client.post("/api/v1", json={"action": "status", "key": key, "orders": [100001, 100002]}).get_json()
    assert batch == {"100001": status, "100002": {"error": "Incorrect order ID"}}


def test_string_ids_by_default(api, catalog):
    assert all(isinstance(s["service"], str) for s in api("services"))
    assert isinstance(api("add", service=FOLLOWERS, link=LINK, quantity="100")["order"], str)


def test_a_charge_beyond_any_balance_is_insufficient_balance_not_a_crash(app, api):
    service = add_service(app, name="Huge", rate=10 ** 18 - 1, min_quantity=1,
                          max_quantity=2_000_000_000)
    result = api("add", service=service, link="https://example.com/huge", quantity="2000000000")
    assert result == {"error": "Not enough funds on balance", "code": "insufficient_balance"}
    assert api("balance")["balance"] == "100"


def test_an_order_is_four_statements_in_its_transaction(app, client, partner, catalog, sql_log):
    """The guard's upsert, the order, the conditional balance UPDATE and its ledger row: the
    whole transaction of an order, every rule still decided by one of them."""
    body = client.post("/api/v1", data={"action": "add", "key": partner[1], "service": "1234",
                                        "link": "https://example.com/three", "quantity": "100"}).get_json()
    assert "order" in body, body
    sent = [" ".join(s.split()).upper() for s in sql_log]
    begin = sent.index("BEGIN IMMEDIATE")
    inside = sent[begin + 1:sent.index("COMMIT", begin)]
    assert [" ".join(s.split()[:3]) for s in inside] == \
        ["INSERT INTO PURCHASE_GUARDS", "INSERT INTO ORDERS", "UPDATE ACCOUNTS SET", "INSERT INTO LEDGER"]
