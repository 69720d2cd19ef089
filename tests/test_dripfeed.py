"""Quantity that is not the partner's to choose (fixed-quantity services) and drip-feed
(`runs`, `interval`): docs/CONTRACT.md, add; the operator's side of both."""
import pytest
from sqlalchemy import select

from serva import db
from serva.ids import parse_order
from serva.schema import orders

from test_cli import fails as refused, ok as cli

FOLLOWERS, PACKAGE, COMMENTS, GAME = "1234", "1235", "1236", "7788"
LINK = "https://example.com/post/1"
GAME_FIELDS = {"fields[player_id]": "123456789", "fields[server_id]": "55"}


def row(app, order):
    with app.app_context(), db.read() as conn:
        return conn.execute(select(orders).where(orders.c.id == parse_order(order))).first()


def entry(api, service_id):
    return next(e for e in api("services") if e["service"] == service_id)


# ---------------------------------------------------------------- fixed quantity

def test_a_pack_needs_no_quantity(app, api, catalog):
    body = api("add", service=GAME, **GAME_FIELDS)
    assert (body["charge"], body["balance"]) == ("0.2", "99.8")  # 20 per 1000 x the pack's 10
    assert row(app, body["order"]).quantity == 10


def test_a_pack_accepts_its_own_quantity_and_refuses_another(app, api, catalog):
    assert api("add", service=GAME, quantity="10", **GAME_FIELDS)["charge"] == "0.2"
    body = api("add", service=GAME, quantity="100", **{**GAME_FIELDS, "fields[server_id]": "56"})
    assert body == {"error": "Incorrect quantity", "code": "invalid_quantity"}


def test_services_shows_a_packs_quantity_as_min_and_max(api, catalog):
    game = entry(api, GAME)
    assert (game["min"], game["max"]) == (10, 10)


def test_fixed_quantity_from_the_cli(app, runner, api):
    cli(runner, "service", "add", "--id", "900", "--name", "UC 60", "--kind", "fields", "--rate", "10",
        "--field", "player_id", "--fixed-quantity", "60")
    assert (entry(api, "900")["min"], entry(api, "900")["max"]) == (60, 60)
    assert api("add", service="900", **{"fields[player_id]": "1"})["charge"] == "0.6"
    assert "fixed 60" in cli(runner, "service", "list")
    # back to a quantity the partner chooses
    cli(runner, "service", "update", "900", "--fixed-quantity", "0", "--min", "1", "--max", "500")
    assert api("add", service="900", **{"fields[player_id]": "2"}) == \
        {"error": "Missing required parameter: quantity", "code": "missing_parameter"}
    assert api("add", service="900", quantity="7", **{"fields[player_id]": "2"})["charge"] == "0.07"


@pytest.mark.parametrize("kind,extra", [("lines", ["--lines-field", "comments"]), ("package", [])])
def test_fixed_quantity_makes_no_sense_for_lines_and_packages(runner, kind, extra):
    message = refused(runner, "service", "add", "--name", "X", "--rate", "1", "--kind", kind, *extra,
                      "--fixed-quantity", "5")
    assert "fixed quantity" in message


# ---------------------------------------------------------------- drip-feed

def test_dripfeed_charges_quantity_times_runs(app, api, catalog):
    body = api("add", service=FOLLOWERS, link=LINK, quantity="1000", runs="3", interval="10")
    assert (body["charge"], body["balance"]) == ("2.67", "97.33")  # 0.89 x 3
    order = row(app, body["order"])
    assert (order.quantity, order.runs, order.interval_minutes, order.runs_done, order.remains) == \
        (3000, 3, 10, 0, 3000)
    assert api("status", order=body["order"]) == {
        "charge": "2.67", "start_count": None, "status": "Pending", "remains": 3000,
        "currency": "USD", "runs": 3, "runs_done": 0}


def test_dripfeed_in_a_json_body_with_integers(app, client, partner, catalog):
    body = client.post("/api/v1", json={"action": "add", "key": partner[1], "service": 1234,
                                        "link": LINK, "quantity": 100, "runs": 1000,
                                        "interval": 1440}).get_json()
    assert body["charge"] == "89"
    assert (row(app, body["order"]).quantity, row(app, body["order"]).runs) == (100_000, 1000)


def test_one_run_is_an_ordinary_order(app, api, catalog):
    body = api("add", service=FOLLOWERS, link=LINK, quantity="1000", runs="1", interval="5")
    assert body["charge"] == "0.89"
    assert row(app, body["order"]).runs is None
    assert set(api("status", order=body["order"])) == \
        {"charge", "start_count", "status", "remains", "currency"}
    # and "1" on a service without drip-feed is not an error either
    assert "order" in api("add", service=GAME, runs="1", **GAME_FIELDS)


def test_runs_on_a_service_without_dripfeed_is_refused_and_costs_nothing(app, api, catalog, partner):
    body = api("add", service=PACKAGE, link=LINK, runs="2", interval="60")
    assert body == {"error": "Drip-feed is not available for this service",
                    "code": "dripfeed_not_available"}
    assert api("balance")["balance"] == "100"


def test_dripfeed_switched_on_and_off_by_the_operator(app, runner, api, catalog):
    assert entry(api, FOLLOWERS)["dripfeed"] is True
    cli(runner, "service", "update", FOLLOWERS, "--no-dripfeed")
    assert entry(api, FOLLOWERS)["dripfeed"] is False
    assert api("add", service=FOLLOWERS, link=LINK, quantity="100", runs="2", interval="1")["code"] == \
        "dripfeed_not_available"
    cli(runner, "service", "update", PACKAGE, "--dripfeed")
    assert entry(api, PACKAGE)["dripfeed"] is True
    body = api("add", service=PACKAGE, link=LINK, runs="2", interval="1")
    assert body["charge"] == "30"  # a package's price per run
    assert row(app, body["order"]).quantity == 2


def test_the_total_quantity_must_fit(app, api):
    with app.app_context(), db.write() as conn:
        from serva import services as services_repo
        services_repo.add(conn, id=5, name="Huge", rate=0, min_quantity=1, max_quantity=2**31 - 1,
                          dripfeed=True)
    body = api("add", service="5", link=LINK, quantity=str(2**30), runs="2", interval="1")
    assert body == {"error": "Incorrect quantity", "code": "invalid_quantity"}


def test_idempotency_key_tells_runs_apart(api, catalog):
    params = {"service": FOLLOWERS, "link": LINK, "quantity": "100", "interval": "5",
              "idempotency_key": "k1"}
    first = api("add", runs="2", **params)
    assert api("add", runs="2", **params) == first
    assert api("add", runs="3", **params)["code"] == "idempotency_conflict"


def test_operator_reports_runs_and_a_partial_dripfeed_refunds_the_undelivered_part(app, runner, api,
                                                                                      catalog):
    order = api("add", service=FOLLOWERS, link=LINK, quantity="1000", runs="3", interval="10")["order"]
    cli(runner, "order", "set-status", order, "In progress", "--runs-done", "1", "--remains", "2000")
    status = api("status", orders=order)[order]
    assert (status["status"], status["runs"], status["runs_done"], status["remains"]) == \
        ("In progress", 3, 1, 2000)
    assert "runs 1/3 every 10 min" in cli(runner, "order", "list")
    # two of three runs delivered: a third of the total back (2.67 x 1000 / 3000 = 0.89)
    out = cli(runner, "order", "set-status", order, "Partial", "--runs-done", "2", "--remains", "1000")
    assert "refunded 0.89" in out
    assert api("status", order=order)["charge"] == "1.78"
    assert api("balance")["balance"] == "98.22"


def test_a_completed_dripfeed_has_every_run_done(api, runner, catalog):
    order = api("add", service=FOLLOWERS, link=LINK, quantity="100", runs="4", interval="1")["order"]
    cli(runner, "order", "set-status", order, "Completed")
    assert api("status", order=order)["runs_done"] == 4


def test_runs_done_is_checked(api, runner, catalog):
    plain = api("add", service=FOLLOWERS, link=LINK, quantity="100")["order"]
    assert "not a drip-feed order" in refused(runner, "order", "set-status", plain, "In progress",
                                               "--runs-done", "1")
    drip = api("add", service=FOLLOWERS, link=LINK + "/2", quantity="100", runs="2", interval="1")["order"]
    assert "between 0 and" in refused(runner, "order", "set-status", drip, "In progress",
                                      "--runs-done", "3")
