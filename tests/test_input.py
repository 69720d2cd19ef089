"""Hostile parameters (issue 11, item 1): unicode digits, lone surrogates and NUL characters
are clean errors of the request, never a 500 — and never a number. Each reproducer of the
issue is here; tests/test_fuzz.py explores the rest of the request surface."""
import json

import pytest
from sqlalchemy import func, select

from serva.params import load_json, parse_digits, storable
from serva.schema import idempotency_keys, ledger, orders

from test_transport import assert_api_error, assert_json

FOLLOWERS, PACKAGE, GAME = "1234", "1235", "7788"
LINK = "https://example.com/post/1"
JSON = "application/json"
UNICODE_DIGITS = ["²", "١٠٠", "１００", "٣", "߁", "𝟙𝟘𝟘", "१००"]


def count(app, table):
    with app.app_context():
        from serva import db
        with db.read() as conn:
            return conn.execute(select(func.count()).select_from(table)).scalar()


def raw_json(client, body: str):
    """POST a JSON text as is (json= would refuse to encode a lone surrogate)."""
    return client.post("/api/v1", data=body.encode("utf-8", "surrogatepass"), content_type=JSON)


# ---------------------------------------------------------------- the one number reader

@pytest.mark.parametrize("text, number", [("0", 0), ("100", 100), (" 42\n", 42), (7, 7),
                                          ("9" * 18, 10**18 - 1)])
def test_parse_digits_reads_ascii_digits_and_json_integers(text, number):
    assert parse_digits(text) == number


@pytest.mark.parametrize("text", [*UNICODE_DIGITS, "", " ", "+1", "-1", "1.0", "1e3", "0x10",
                                  "1_000", "9" * 19, True, False, None, 1.0, [1], {"1": 1}])
def test_parse_digits_refuses_everything_else(text):
    assert parse_digits(text) is None


def test_storable_text():
    assert storable("plain") and storable("ünïcödé ✓ 😀")
    assert not storable("\ud800") and not storable("a\udfffb") and not storable("a\x00b")


def test_load_json_refuses_unstorable_text_anywhere():
    assert load_json('{"a": ["\\ud83d\\ude00"]}') == {"a": ["😀"]}  # a surrogate pair is fine
    for text in ('"\\ud800"', '{"\\udc00": 1}', '[[[{"a": "x\\u0000"}]]]',
                 b'{"a": "\xed\xa0\x80"}'):  # UTF-8 bytes of a surrogate: json lets them through
        with pytest.raises(ValueError):
            load_json(text)


# ---------------------------------------------------------------- the reproducers

def test_unicode_digit_service_without_a_key_is_not_a_500(client):
    assert_api_error(client.post("/api/v1", data={"action": "add", "service": "²"}), "missing_key")


@pytest.mark.parametrize("service", ["²", "１２３４", "١٢٣٤"])
def test_unicode_digit_service_is_incorrect_service(client, partner, catalog, service):
    assert_api_error(client.post("/api/v1", data={
        "action": "add", "key": partner[1], "service": service, "link": LINK, "quantity": "100"}),
        "service_unavailable")


def test_unicode_digit_php_array_key_is_not_a_500(client, partner):
    response = client.post("/api/v1", data={"action": "balance", "key": partner[1], "fields[²]": "x"})
    assert assert_json(response) == {"balance": "100", "currency": "USD"}


def test_unicode_digit_php_array_keys_stay_an_object(client, partner, catalog):
    # fields[0], fields[²]: not a list (² is not 1); the object's names are then unknown fields
    body = assert_api_error(client.post("/api/v1", data={
        "action": "add", "key": partner[1], "service": GAME, "quantity": "10",
        "fields[0]": "1", "fields[²]": "2"}), "invalid_fields")
    assert "unknown field" in body["error"]


@pytest.mark.parametrize("quantity", UNICODE_DIGITS)
def test_unicode_digit_quantity_is_incorrect_quantity(app, client, partner, catalog, quantity):
    assert_api_error(client.post("/api/v1", data={
        "action": "add", "key": partner[1], "service": FOLLOWERS, "link": LINK,
        "quantity": quantity}), "invalid_quantity")
    assert count(app, orders) == 0


@pytest.mark.parametrize("token", ["ORD-١٠٠٠٠١", "١٠٠٠٠١", "ORD-１０００００１", "ORD-10000¹"])
def test_unicode_digit_order_ids_are_not_ids(client, partner, catalog, api, token):
    assert api("add", service=FOLLOWERS, link=LINK, quantity="100")["order"] == "ORD-100001"
    assert_api_error(client.post("/api/v1", data={"action": "status", "key": partner[1],
                                                   "order": token}), "order_not_found")
    batch = assert_json(client.post("/api/v1", data={
        "action": "status", "key": partner[1], "orders": f"ORD-100001,{token}"}))
    assert batch[token] == {"error": "Incorrect order ID"}
    assert batch["ORD-100001"]["status"] == "Pending"


SURROGATE_ADDS = {
    "link": {"service": FOLLOWERS, "quantity": 100, "link": "https://example.com/\ud800"},
    "coupon": {"service": FOLLOWERS, "quantity": 100, "link": LINK, "coupon": "\ud800"},
    "coupon_code": {"service": FOLLOWERS, "quantity": 100, "link": LINK, "coupon_code": "X\udfff"},
    "idempotency_key": {"service": FOLLOWERS, "quantity": 100, "link": LINK,
                        "idempotency_key": "\ud800"},
    "manual field value": {"service": GAME, "quantity": 10,
                           "fields": {"player_id": "\ud800", "server_id": "1"}},
    "manual field name": {"service": GAME, "quantity": 10, "fields": {"\ud800": "1"}},
    "fields as a list": {"service": GAME, "quantity": 10,
                         "inputs": [{"name": "player_id", "value": "1\ud800"},
                                    {"name": "server_id", "value": "1"}]},
    "service": {"service": "\ud800", "quantity": 100, "link": LINK},
    "quantity": {"service": FOLLOWERS, "quantity": "\ud800", "link": LINK},
    "an unused parameter": {"service": FOLLOWERS, "quantity": 100, "link": LINK, "x\ud800": "y"},
    "a NUL in a field": {"service": GAME, "quantity": 10,
                         "fields": {"player_id": "1\x00", "server_id": "1"}},
    "a NUL in the idempotency key": {"service": FOLLOWERS, "quantity": 100, "link": LINK,
                                     "idempotency_key": "a\x00b"},
}


@pytest.mark.parametrize("case", SURROGATE_ADDS)
def test_unstorable_text_in_a_json_add_is_invalid_request(app, client, partner, catalog, case):
    body = json.dumps({"action": "add", "key": partner[1], **SURROGATE_ADDS[case]})
    error = assert_api_error(raw_json(client, body), "invalid_request")
    assert "not valid Unicode" in error["error"]
    assert count(app, orders) == 0 and count(app, idempotency_keys) == 0
    assert count(app, ledger) == 1  # the top-up only


@pytest.mark.parametrize("body", [
    '{"action": "\\ud800", "key": "%s"}', '{"action": "balance", "key": "%s\\ud800"}',
    '{"action": "status", "key": "%s", "order": "ORD-10000\\udc01"}',
    '{"action": "status", "key": "%s", "orders": ["1\\ud800", "ORD-100001"]}',
    '{"action": "balance", "key": "%s", "nested": {"a": [{"\\udbff": 1}]}}',
])
def test_unstorable_text_anywhere_in_a_json_body_is_invalid_request(client, partner, body):
    assert_api_error(raw_json(client, body % partner[1]), "invalid_request")


def test_a_surrogate_in_json_text_inside_a_form_field_is_invalid_fields(app, client, partner, catalog):
    fields = '{"player_id": "\\ud800", "server_id": "1"}'  # JSON text, as a form value
    body = assert_api_error(client.post("/api/v1", data={
        "action": "add", "key": partner[1], "service": GAME, "quantity": "10", "fields": fields}),
        "invalid_fields")
    assert "not valid Unicode" in body["error"]
    assert count(app, orders) == 0


@pytest.mark.parametrize("where", ["form", "query", "multipart"])
def test_a_nul_in_a_form_or_query_is_invalid_request(app, client, partner, catalog, where):
    params = {"action": "add", "key": partner[1], "service": GAME, "quantity": "10",
              "fields[player_id]": "1\x00", "fields[server_id]": "1"}
    if where == "query":
        response = client.post("/api/v1", query_string=params)
    else:
        response = client.post("/api/v1", data=params,
                               content_type="multipart/form-data" if where == "multipart" else None)
    assert_api_error(response, "invalid_request")
    assert count(app, orders) == 0


@pytest.mark.parametrize("where", ["form", "query"])
def test_percent_encoded_surrogates_in_a_form_are_kept_as_text(client, partner, catalog, where):
    # %ED%A0%80 is the UTF-8 form of a surrogate: not valid UTF-8, so it stays escaped text
    params = {"action": "add", "key": partner[1], "service": GAME, "quantity": "10",
              "fields[player_id]": "1", "fields[server_id]": "1"}
    query = "&".join(f"{k}={v}" for k, v in params.items()) + "&coupon=%ED%A0%80"
    if where == "query":
        response = client.post("/api/v1?" + query)
    else:
        response = client.post("/api/v1", data=query,
                               content_type="application/x-www-form-urlencoded")
    assert_api_error(response, "invalid_coupon")


def test_valid_unicode_still_places_an_order(app, client, partner, catalog):
    response = client.post("/api/v1", json={
        "action": "add", "key": partner[1], "service": GAME, "quantity": 10,
        "fields": {"player_id": "игрок 😀", "server_id": "١"}})
    assert assert_json(response)["order"] == "ORD-100001"
    assert count(app, orders) == 1



def test_a_multipart_part_without_a_name_is_ignored(client, partner):
    body = (b'--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b\r\nContent-Disposition: '
            b'form-data; name="action"\r\n\r\nbalance\r\n--b\r\nContent-Disposition: form-data; '
            b'name="key"\r\n\r\n' + partner[1].encode() + b"\r\n--b--\r\n")
    response = client.post("/api/v1", data=body, content_type="multipart/form-data; boundary=b")
    assert assert_json(response) == {"balance": "100", "currency": "USD"}


# ---------------------------------------------------------------- empty and unreadable values

@pytest.mark.parametrize("action, batch, single", [
    ("status", "orders", "order"), ("refill", "orders", "order"), ("cancel", "orders", "order"),
    ("refill_status", "refills", "refill")])
@pytest.mark.parametrize("sent", ["", " ", ",", " , ,"])
def test_a_batch_that_names_no_id_is_missing_by_its_own_name(api, action, batch, single, sent):
    assert api(action, **{batch: sent}) == {
        "error": f"Missing required parameter: {batch}", "code": "missing_parameter"}
    # nothing sent at all: the single id is what is asked for
    assert api(action) == {"error": f"Missing required parameter: {single}",
                           "code": "missing_parameter"}


def test_a_json_batch_that_names_no_id_is_missing_by_its_own_name(client, partner):
    for action in ("status", "refill", "cancel"):
        body = assert_api_error(client.post("/api/v1", json={
            "action": action, "key": partner[1], "orders": []}), "missing_parameter")
        assert body["error"] == "Missing required parameter: orders"


@pytest.mark.parametrize("action, single", [("status", "order"), ("refill", "order"),
                                            ("cancel", "order"), ("refill_status", "refill")])
def test_a_single_id_that_is_a_list_is_invalid_request(client, partner, action, single):
    for request in (dict(data={"action": action, "key": partner[1], f"{single}[]": "1"}),
                    dict(json={"action": action, "key": partner[1], single: ["1"]}),
                    dict(json={"action": action, "key": partner[1], single: {"a": "1"}})):
        body = assert_api_error(client.post("/api/v1", **request), "invalid_request")
        assert body["error"] == f"Incorrect request: {single} must be one id, not a list"


@pytest.mark.parametrize("action", ["status", "refill", "cancel"])
def test_an_empty_batch_beside_a_single_id_reads_the_single_id(api, catalog, action):
    order = api("add", service=FOLLOWERS, link=LINK, quantity="100")["order"]
    body = api(action, order=order, orders="")
    assert "code" not in body or body["code"] != "missing_parameter", body


DRIP_FEED = {"service": FOLLOWERS, "link": LINK, "quantity": "100"}
NO_DRIP_FEED = {"service": PACKAGE, "link": LINK}  # a package: the service sets the quantity
UNREADABLE = ["abc", "-2", "2.5", "³", "1e3"]


@pytest.mark.parametrize("order, extra, name", [
    *[(DRIP_FEED, {"runs": runs, "interval": "5"}, "runs") for runs in UNREADABLE],
    *[(NO_DRIP_FEED, {"runs": runs}, "runs") for runs in UNREADABLE],
    *[(DRIP_FEED, {"runs": "3", "interval": interval}, "interval") for interval in UNREADABLE],
])
def test_unreadable_dripfeed_numbers_are_invalid_request(app, api, catalog, order, extra, name):
    assert api("add", **order, **extra) == {
        "error": f"Incorrect request: {name} must be a whole number (digits 0-9)",
        "code": "invalid_request"}
    assert count(app, orders) == 0


def test_readable_dripfeed_numbers_keep_their_own_errors(api, catalog):
    assert api("add", service=PACKAGE, link=LINK, runs="3", interval="abc") == {
        "error": "Drip-feed is not available for this service", "code": "dripfeed_not_available"}
    assert api("add", service=FOLLOWERS, link=LINK, quantity="100", runs="0", interval="5") == {
        "error": "Incorrect runs", "code": "dripfeed_not_available"}
    assert api("add", service=FOLLOWERS, link=LINK, quantity="100", runs="1", interval="x") \
        .get("order") == "ORD-100001"  # one run is an ordinary order: interval is not read
