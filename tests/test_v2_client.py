"""The SMM ecosystem's standard "API v2" client, translated line for line from its PHP
(`class Api { order, status, multiStatus, services, balance, … }`), run unchanged against
the server under waitress. It form-encodes `key` + `action` + parameters into one POST body
(`name=urlencode(value)` joined by `&`), `json_decode`s the reply into objects and reads
`order`, `status`, the batch map and `error`."""
import json
from types import SimpleNamespace
from urllib.parse import quote_plus

import pytest
import requests

from serva import create_app, db, services
from serva.demo import CATALOG

from conftest import make_partner


def json_decode(text):
    """PHP's json_decode($s): objects become stdClass (attribute access), null on bad JSON."""
    try:
        return json.loads(text, object_hook=lambda d: SimpleNamespace(**d))
    except ValueError:
        return None


def isset(obj, name):
    return getattr(obj, name, None) is not None


class Api:
    """class Api — as shipped by SMM panels (the API v2 convention), in Python."""

    def __init__(self, api_url, api_key):
        self.api_url = api_url
        self.api_key = api_key

    def order(self, data):  # add order
        post = {"key": self.api_key, "action": "add", **data}
        return json_decode(self.connect(post))

    def status(self, order_id):  # get order status
        return json_decode(self.connect({"key": self.api_key, "action": "status", "order": order_id}))

    def multiStatus(self, order_ids):  # get order statuses
        return json_decode(self.connect({"key": self.api_key, "action": "status",
                                         "orders": ",".join(str(i) for i in order_ids)}))

    def services(self):  # get services
        return json_decode(self.connect({"key": self.api_key, "action": "services"}))

    def balance(self):  # get balance
        return json_decode(self.connect({"key": self.api_key, "action": "balance"}))

    def connect(self, post):
        # foreach ($post as $name => $value) $_post[] = $name . '=' . urlencode($value);
        _post = [f"{name}={quote_plus(str(value))}" for name, value in post.items()]
        # curl_setopt($ch, CURLOPT_POSTFIELDS, join('&', $_post)): a string body, so curl sends
        # Content-Type: application/x-www-form-urlencoded
        response = requests.post(self.api_url, data="&".join(_post), timeout=30, headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "Mozilla/4.0 (compatible; MSIE 5.01; Windows NT 5.0)"})
        # curl_exec returns the body whatever the HTTP status
        return response.text


@pytest.fixture
def api_client(app, live_server):
    with app.app_context(), db.write() as conn:
        for entry in CATALOG:
            services.add(conn, **entry)
    _, key = make_partner(app)
    return Api(f"{live_server}/api/v1", key)


def test_balance_and_services(api_client):
    balance = api_client.balance()
    assert balance.balance == "100" and balance.currency == "USD"
    catalog = api_client.services()
    assert [s.service for s in catalog] == ["1234", "1235", "1236", "7788"]
    followers = catalog[0]
    assert (followers.name, followers.type, followers.rate, followers.min, followers.max) == \
        ("Instagram Followers", "Default", "0.89", 100, 100000)


def test_order_then_status_then_multi_status(api_client):
    # $order = $api->order(['service' => 1, 'link' => 'http://example.com/test', 'quantity' => 100]);
    order = api_client.order({"service": 1234, "link": "http://example.com/test", "quantity": 100})
    assert not isset(order, "error")
    assert order.order == "ORD-100001"
    # Custom comments: one per line, urlencoded with their newlines.
    comments = api_client.order({"service": 1236, "link": "http://example.com/test",
                                 "comments": "good pic\ngreat photo\n:)\n;)"})
    assert comments.order == "ORD-100002" and comments.charge == "0.048"
    package = api_client.order({"service": 1235, "link": "http://example.com/test"})
    assert package.charge == "15"
    # Manual fields as PHP's http_build_query would nest them.
    manual = api_client.order({"service": 7788, "quantity": 10, "fields[player_id]": "123456789",
                               "fields[server_id]": "55"})
    assert manual.order == "ORD-100004"

    status = api_client.status(order.order)
    assert (status.charge, status.start_count, status.status, status.remains, status.currency) == \
        ("0.089", None, "Pending", 100, "USD")

    statuses = api_client.multiStatus([order.order, comments.order, "ORD-999999"])
    assert getattr(statuses, "ORD-100001").status == "Pending"
    assert getattr(statuses, "ORD-100002").remains == 4
    assert getattr(statuses, "ORD-999999").error == "Incorrect order ID"

    assert api_client.balance().balance == "84.663"  # 100 - 0.089 - 0.048 - 15 - 0.2


def test_numeric_order_ids_work_too(api_client):
    order = api_client.order({"service": 1234, "link": "http://example.com/test", "quantity": 100})
    number = int(order.order.removeprefix("ORD-"))
    assert api_client.status(number).status == "Pending"
    assert vars(api_client.multiStatus([number]))[str(number)].status == "Pending"


def test_errors_are_read_from_the_error_key(api_client):
    for data, message in [
        ({"service": 9999, "link": "http://example.com/test", "quantity": 100}, "Incorrect service ID"),
        ({"service": 1234, "link": "not a link", "quantity": 100}, "Incorrect link"),
        ({"service": 1234, "link": "http://example.com/test", "quantity": 5}, "Quantity less than minimal 100"),
        ({"service": 1234, "link": "http://example.com/test", "quantity": 10**9},
         "Quantity more than maximum 100000"),
        ({"service": 1235, "link": "http://example.com/a"}, None),
        ({"service": 1235, "link": "http://example.com/a"}, "Duplicate order for this target is blocked"),
    ]:
        order = api_client.order(data)
        if message is None:
            assert not isset(order, "error")
        else:
            assert order.error == message
            assert not isset(order, "order")
    assert api_client.status("ORD-424242").error == "Incorrect order ID"
    broke = Api(api_client.api_url, "sk_" + "x" * 43)
    assert broke.balance().error == "Invalid API key"


def test_insufficient_funds_is_an_error_not_an_order(app, api_client):
    _, key = make_partner(app, "poor@example.com", balance="10")
    poor = Api(api_client.api_url, key)
    order = poor.order({"service": 1235, "link": "http://example.com/test"})
    assert order.error == "Not enough funds on balance"
    assert poor.balance().balance == "10"


class TestIntegerIds:
    """With the compatibility setting, `int(order)` and numeric service comparisons hold."""

    @pytest.fixture
    def app(self, tmp_path):  # overrides conftest's app (and so live_server) for this class
        app = create_app({"TESTING": True, "SECRET_KEY": "t", "INTEGER_IDS": True,
                          "DATABASE_URL": f"sqlite:///{tmp_path / 'int.sqlite'}"})
        db.init_schema(app.extensions["serva.engine"])
        yield app
        app.extensions["serva.engine"].dispose()

    def test_integer_ids_for_clients_that_compare_numbers(self, api_client):
        assert [s.service for s in api_client.services()] == [1234, 1235, 1236, 7788]
        order = api_client.order({"service": 1234, "link": "http://example.com/test", "quantity": 100})
        assert order.order == 100001
        assert int(order.order) == 100001
        assert api_client.status(order.order).status == "Pending"
        assert vars(api_client.multiStatus([order.order]))["100001"].remains == 100
        catalog = {s.service: s for s in api_client.services()}
        assert catalog[1235].rate == "15"
