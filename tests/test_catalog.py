"""The `balance` and `services` actions (docs/CONTRACT.md, Actions and Money): exact shapes,
account-aware rates per 1000 units, inactive services hidden, the INTEGER_IDS setting."""
import json

import pytest

from serva import accounts, create_app, db, ledger, services
from serva.money import parse_amount

from conftest import make_partner

SERVICE_KEYS = {"service", "name", "category", "type", "rate", "min", "max", "fields", "refill",
                "cancel", "dripfeed"}


def add_service(app, **values):
    values.setdefault("name", "Instagram Followers")
    values.setdefault("category", "Instagram")
    values.setdefault("min_quantity", 100)
    values.setdefault("max_quantity", 100_000)
    if isinstance(values.get("rate"), str):
        values["rate"] = parse_amount(values["rate"])
    with app.app_context(), db.write() as conn:
        return services.add(conn, **values)


def set_active(app, service_id, active):
    with app.app_context(), db.write() as conn:
        services.update_service(conn, service_id, active=active)


def set_discount(app, account_id, percent_bp):
    with app.app_context(), db.write() as conn:
        accounts.set_discount(conn, account_id, percent_bp)


def set_rate(app, account_id, service_id, rate):
    with app.app_context(), db.write() as conn:
        accounts.set_custom_rate(conn, account_id, service_id,
                                 None if rate is None else parse_amount(rate))


def catalog(api, key=None):
    body = api("services", key=key)
    assert isinstance(body, list)
    return {entry["service"]: entry for entry in body}


def rate_of(api, service_id, key=None):
    return catalog(api, key)[str(service_id)]["rate"]


# ---------------------------------------------------------------- balance

def test_balance_shape(api):
    assert api("balance") == {"balance": "100", "currency": "USD"}


@pytest.mark.parametrize("amount, shown", [("25.5", "25.5"), ("2.14", "2.14"), ("0.000089", "0.000089"),
                                           ("1000000", "1000000"), ("0", "0"), ("10.100000", "10.1")])
def test_balance_is_the_shortest_exact_decimal(app, client, amount, shown):
    _, key = make_partner(app, email="p@example.com", balance=amount)
    response = client.post("/api/v1", data={"action": "balance", "key": key})
    body = response.get_json()
    assert body == {"balance": shown, "currency": "USD"}
    assert isinstance(body["balance"], str)


def test_balance_follows_the_ledger(app, api, partner):
    with app.app_context(), db.write() as conn:
        ledger.post(conn, partner[0], parse_amount("0.000001"), "topup", "test")
        ledger.post(conn, partner[0], -parse_amount("50.5"), "adjustment", "test")
    assert api("balance")["balance"] == "49.500001"


def test_balance_is_the_callers_own(app, api, partner):
    _, other = make_partner(app, email="other@example.com", balance="3.3")
    assert api("balance")["balance"] == "100"
    assert api("balance", key=other)["balance"] == "3.3"


def test_currency_is_a_setting(tmp_path):
    app = create_app({"TESTING": True, "SECRET_KEY": "t", "CURRENCY": "EUR",
                      "DATABASE_URL": f"sqlite:///{tmp_path / 'eur.sqlite'}"})
    db.init_schema(app.extensions["serva.engine"])
    _, key = make_partner(app, balance="1.5")
    body = app.test_client().post("/api/v1", data={"action": "balance", "key": key}).get_json()
    assert body == {"balance": "1.5", "currency": "EUR"}
    app.extensions["serva.engine"].dispose()


def test_currency_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVA_CURRENCY", "GBP")
    app = create_app({"TESTING": True, "SECRET_KEY": "t",
                      "DATABASE_URL": f"sqlite:///{tmp_path / 'gbp.sqlite'}"})
    assert app.config["CURRENCY"] == "GBP"
    app.extensions["serva.engine"].dispose()


# ---------------------------------------------------------------- services: shape

def test_an_empty_catalog_is_an_empty_list(api):
    assert api("services") == []


def test_services_entry_shape(app, api):
    add_service(app, id=1234, rate="0.89", refill_days=30)
    assert api("services") == [{
        "service": "1234", "name": "Instagram Followers", "category": "Instagram",
        "type": "Default", "rate": "0.89", "min": 100, "max": 100000, "fields": [],
        "refill": True, "cancel": False, "dripfeed": False,
    }]


def test_services_entry_types(app, api):
    add_service(app, id=1234, rate="0.89")
    (entry,) = api("services")
    assert set(entry) == SERVICE_KEYS
    assert isinstance(entry["service"], str) and isinstance(entry["rate"], str)
    assert type(entry["min"]) is int and type(entry["max"]) is int
    assert type(entry["refill"]) is bool and type(entry["cancel"]) is bool
    assert type(entry["dripfeed"]) is bool
    assert isinstance(entry["fields"], list)


def test_manual_fields_are_listed(app, api):
    specs = [{"name": "player_id", "label": "Player ID", "required": True},
             {"name": "server_id", "label": "Server ID", "required": False}]
    add_service(app, id=7788, name="Diamonds", category="Game Top-up", kind="fields", type="Manual",
                rate="20", min_quantity=10, max_quantity=10_000, fields_json=json.dumps(specs))
    entry = catalog(api)["7788"]
    assert entry["fields"] == specs
    assert entry["type"] == "Manual"
    assert (entry["min"], entry["max"]) == (10, 10_000)


def test_every_active_service_is_listed_once(app, api):
    ids = [add_service(app, id=n, name=f"S{n}", rate="1") for n in (5, 3, 900, 41)]
    body = api("services")
    assert sorted(entry["service"] for entry in body) == sorted(str(i) for i in ids)


@pytest.mark.parametrize("rate, shown", [("0.89", "0.89"), ("15", "15"), ("0.000089", "0.000089"),
                                         ("1234.5", "1234.5"), ("0", "0"), ("2.100000", "2.1")])
def test_list_rates_are_exact_decimal_strings(app, api, rate, shown):
    add_service(app, id=1, rate=rate)
    assert rate_of(api, 1) == shown


# ---------------------------------------------------------------- services: pricing

@pytest.mark.parametrize("rate, discount_bp, shown", [
    ("0.89", 1000, "0.801"),          # 10%
    ("0.89", 0, "0.89"),
    ("0.89", 10_000, "0"),            # 100%
    ("0.000005", 5000, "0.000003"),   # 2.5 micro -> 3 (half-up, not banker's 2)
    ("0.000003", 5000, "0.000002"),   # 1.5 -> 2
    ("0.000001", 5000, "0.000001"),   # 0.5 -> 1
    ("0.000001", 5001, "0"),          # 0.4999 -> 0
    ("0.999999", 1250, "0.874999"),   # 874999.125 -> 874999
    ("1.000003", 1250, "0.875003"),   # 875002.625 -> 875003
    ("20", 333, "19.334"),            # 3.33%
])
def test_discount_is_applied_and_rounded_half_up_once(app, api, partner, rate, discount_bp, shown):
    add_service(app, id=1234, rate=rate)
    set_discount(app, partner[0], discount_bp)
    assert rate_of(api, 1234) == shown


def test_a_custom_rate_overrides_the_discount(app, api, partner):
    add_service(app, id=1234, rate="0.89")
    add_service(app, id=1235, name="Other", rate="2")
    set_discount(app, partner[0], 1000)
    set_rate(app, partner[0], 1234, "0.5")
    assert rate_of(api, 1234) == "0.5"        # not 0.45: the custom rate is final
    assert rate_of(api, 1235) == "1.8"        # the discount still applies elsewhere


def test_a_custom_rate_may_be_above_the_list_rate(app, api, partner):
    add_service(app, id=1234, rate="0.89")
    set_rate(app, partner[0], 1234, "1.000001")
    assert rate_of(api, 1234) == "1.000001"


def test_a_custom_rate_of_zero(app, api, partner):
    add_service(app, id=1234, rate="0.89")
    set_rate(app, partner[0], 1234, "0")
    assert rate_of(api, 1234) == "0"


def test_clearing_a_custom_rate_restores_the_discounted_rate(app, api, partner):
    add_service(app, id=1234, rate="0.89")
    set_discount(app, partner[0], 1000)
    set_rate(app, partner[0], 1234, "0.5")
    assert rate_of(api, 1234) == "0.5"
    set_rate(app, partner[0], 1234, None)
    assert rate_of(api, 1234) == "0.801"


def test_pricing_is_per_account(app, api, partner):
    add_service(app, id=1234, rate="0.89")
    add_service(app, id=1235, name="Other", rate="10")
    other_id, other = make_partner(app, email="other@example.com")
    third_id, third = make_partner(app, email="third@example.com")
    set_discount(app, partner[0], 1000)
    set_discount(app, other_id, 2500)
    set_rate(app, other_id, 1235, "9.99")
    assert {k: v["rate"] for k, v in catalog(api).items()} == {"1234": "0.801", "1235": "9"}
    assert {k: v["rate"] for k, v in catalog(api, other).items()} == {"1234": "0.6675", "1235": "9.99"}
    assert {k: v["rate"] for k, v in catalog(api, third).items()} == {"1234": "0.89", "1235": "10"}


def test_pricing_changes_show_on_the_next_call(app, api, partner):
    service_id = add_service(app, id=1234, rate="0.89")
    assert rate_of(api, 1234) == "0.89"
    set_discount(app, partner[0], 5000)
    assert rate_of(api, 1234) == "0.445"
    with app.app_context(), db.write() as conn:
        services.update_service(conn, service_id, rate=parse_amount("2"))
    assert rate_of(api, 1234) == "1"
    set_rate(app, partner[0], 1234, "0.3")
    assert rate_of(api, 1234) == "0.3"


def test_rates_are_per_1000_units(app, api, partner):
    add_service(app, id=1234, rate="0.89", min_quantity=1, max_quantity=100_000)
    set_discount(app, partner[0], 1000)   # 0.801 per 1000
    assert rate_of(api, 1234) == "0.801"
    first = api("add", service="1234", link="https://example.com/p/1", quantity="1000")
    assert first["charge"] == "0.801"
    second = api("add", service="1234", link="https://example.com/p/2", quantity="1500")
    assert second["charge"] == "1.2015"
    third = api("add", service="1234", link="https://example.com/p/3", quantity="1")
    assert third["charge"] == "0.000801"
    assert parse_amount(api("balance")["balance"]) == parse_amount("100") - 801_000 - 1_201_500 - 801


# ---------------------------------------------------------------- inactive services

def test_inactive_services_never_appear(app, api, partner):
    add_service(app, id=1, name="On", rate="1")
    add_service(app, id=2, name="Off", rate="1", active=False)
    add_service(app, id=3, name="Disabled later", rate="1")
    set_rate(app, partner[0], 2, "0.5")        # a custom rate does not bring it back
    set_active(app, 3, False)
    assert set(catalog(api)) == {"1"}


def test_a_re_enabled_service_appears_again(app, api):
    add_service(app, id=1, rate="1")
    set_active(app, 1, False)
    assert api("services") == []
    set_active(app, 1, True)
    assert set(catalog(api)) == {"1"}


def test_a_disabled_service_disappears_from_a_catalog_seen_before(app, api):
    add_service(app, id=1, rate="1")
    add_service(app, id=2, name="B", rate="1")
    assert set(catalog(api)) == {"1", "2"}
    set_active(app, 2, False)
    assert set(catalog(api)) == {"1"}


def test_an_inactive_service_cannot_be_ordered(app, api):
    add_service(app, id=1, rate="1", min_quantity=1)
    set_active(app, 1, False)
    body = api("add", service="1", link="https://example.com/x", quantity="10")
    assert body["code"] == "service_unavailable"


# ---------------------------------------------------------------- INTEGER_IDS

def test_service_ids_are_strings_by_default(app, api):
    add_service(app, id=1234, rate="0.89")
    assert api("services")[0]["service"] == "1234"


def test_integer_ids_setting_makes_service_ids_json_integers(tmp_path):
    app = create_app({"TESTING": True, "SECRET_KEY": "t", "INTEGER_IDS": True,
                      "DATABASE_URL": f"sqlite:///{tmp_path / 'int.sqlite'}"})
    db.init_schema(app.extensions["serva.engine"])
    _, key = make_partner(app)
    add_service(app, id=1234, rate="0.89")
    add_service(app, id=7, name="Other", rate="1")
    response = app.test_client().post("/api/v1", data={"action": "services", "key": key})
    body = response.get_json()
    assert sorted(entry["service"] for entry in body) == [7, 1234]
    assert all(type(entry["service"]) is int for entry in body)
    assert b'"service":1234' in response.get_data().replace(b" ", b"")
    # amounts stay strings
    assert all(isinstance(entry["rate"], str) for entry in body)
    app.extensions["serva.engine"].dispose()


def test_integer_ids_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVA_INTEGER_IDS", "1")
    app = create_app({"TESTING": True, "SECRET_KEY": "t",
                      "DATABASE_URL": f"sqlite:///{tmp_path / 'int.sqlite'}"})
    assert app.config["INTEGER_IDS"] is True
    app.extensions["serva.engine"].dispose()
