"""The SMM ecosystem's PHP client, `class Api` (tests/php/Api.php, as panels ship it: form POST
with curl, `json_decode`), run by php-cli against a live server at /api/v2 in both id formats:
every method, the way a panel script calls it. Skipped when php-cli (with curl) is missing."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from serva import db, services
from serva.demo import CATALOG
from serva.schema import orders
from serva.cli import cli as serva_cli

from conftest import make_partner

PHP_DIR = Path(__file__).resolve().parent / "php"
EMAIL = "panel@example.com"
LINK = "http://example.com/test"


@pytest.fixture(scope="module")
def php():
    path = shutil.which("php")
    if path is None:
        pytest.skip("php-cli is not installed")
    probe = subprocess.run([path, "-r", "echo function_exists('curl_init') ? 'yes' : 'no';"],
                           capture_output=True, text=True, timeout=30)
    if probe.stdout.strip() != "yes":
        pytest.skip("php-cli has no curl extension")
    return path


class Panel:
    """A panel script's view of the server: `class Api` called from PHP, one method at a time."""

    def __init__(self, php, url, key):
        self.php, self.url, self.key = php, url, key

    def call(self, method, *args):
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        result = subprocess.run([self.php, str(PHP_DIR / "call.php"), method, json.dumps(args)],
                                capture_output=True, text=True, timeout=60,
                                env={**env, "SERVA_URL": self.url, "SERVA_KEY": self.key})
        assert result.returncode == 0, result.stderr
        assert result.stderr == "", result.stderr  # no PHP warning or notice either
        return json.loads(result.stdout)

    def __getattr__(self, method):
        def call(*args):
            answer = self.call(method, *args)
            assert "type_error" not in answer, answer
            return answer["result"]
        return call


@pytest.fixture(params=["prefixed", "numeric"])
def id_format(request):
    return request.param


@pytest.fixture
def panel(app, runner, live_server, php, id_format):
    with app.app_context(), db.write() as conn:
        for entry in CATALOG:
            services.add(conn, **entry)
    _, key = make_partner(app, EMAIL)
    result = runner.invoke(serva_cli, args=["account", "id-format", EMAIL, id_format])
    assert result.exit_code == 0, result.output
    return Panel(php, f"{live_server}/api/v2", key)


def order_id(number: int, id_format: str):
    return number if id_format == "numeric" else f"ORD-{number}"


def test_balance_and_services(panel, id_format):
    assert panel.balance() == {"balance": "100", "currency": "USD"}
    catalog = panel.services()
    ids = [entry["service"] for entry in catalog]
    assert ids == ([1234, 1235, 1236, 7788] if id_format == "numeric" else ["1234", "1235", "1236", "7788"])
    followers = catalog[0]
    assert (followers["name"], followers["rate"], followers["min"], followers["max"]) == \
        ("Instagram Followers", "0.89", 100, 100000)


def test_order_status_and_multi_status(panel, id_format):
    # $api->order(['service' => 1, 'link' => 'http://example.com/test', 'quantity' => 100]);
    first = panel.order({"service": 1234, "link": LINK, "quantity": 100})
    assert first == {"order": order_id(100001, id_format), "charge": "0.089", "currency": "USD",
                     "balance": "99.911"}
    comments = panel.order({"service": 1236, "link": LINK, "comments": "good pic\ngreat photo\n:)"})
    assert comments["order"] == order_id(100002, id_format) and comments["charge"] == "0.036"

    status = panel.status(first["order"])
    assert status == {"charge": "0.089", "start_count": None, "status": "Pending", "remains": 100,
                      "currency": "USD"}
    # a panel that stored the number in an integer column asks with the number
    assert panel.status(100001) == status

    statuses = panel.multiStatus([first["order"], comments["order"], order_id(999999, id_format)])
    assert list(statuses) == [str(first["order"]), str(comments["order"]), str(order_id(999999, id_format))]
    assert statuses[str(first["order"])] == status
    assert statuses[str(comments["order"])]["remains"] == 3
    assert statuses[str(order_id(999999, id_format))] == {"error": "Incorrect order ID"}
    assert panel.balance()["balance"] == "99.875"


def test_errors_come_back_in_the_error_key(panel, id_format):
    assert panel.order({"service": 9999, "link": LINK, "quantity": 100}) == \
        {"error": "Incorrect service ID", "code": "service_unavailable"}
    assert panel.order({"service": 1234, "link": LINK, "quantity": 5})["error"] == \
        "Quantity less than minimal 100"
    assert panel.status(order_id(424242, id_format))["error"] == "Incorrect order ID"
    assert Panel(panel.php, panel.url, "sk_" + "x" * 43).balance()["error"] == "Invalid API key"


# ---------------------------------------------------------------- refill, refill status, cancel

def operator(runner, *args):
    result = runner.invoke(serva_cli, args=list(args))
    assert result.exit_code == 0, (args, result.output)
    return result.output


def refill_id(number: int, id_format: str):
    return number if id_format == "numeric" else f"REF-{number}"


def test_refill_refill_status_and_cancel(app, runner, panel, id_format):
    """refill, multiRefill, refillStatus, multiRefillStatus and cancel as a panel script calls
    them: with the numeric format the ids the server returns go straight into the int-typed
    methods; with the prefixed format PHP refuses them (TypeError), as the ecosystem's panels
    found, and a script passes the number, which the server accepts whatever the format."""
    followers = panel.order({"service": 1234, "link": LINK, "quantity": 100})  # refill 30 days
    comments = panel.order({"service": 1236, "link": LINK, "comments": "a\nb"})  # no refill, no cancel
    operator(runner, "order", "set-status", "ORD-100001", "Completed")
    operator(runner, "order", "set-status", "ORD-100002", "Completed")

    if id_format == "prefixed":
        assert "type_error" in panel.call("refill", followers["order"])  # int $orderId
    refill = panel.refill(100001 if id_format == "prefixed" else followers["order"])
    assert refill == {"refill": refill_id(5001, id_format)}
    if id_format == "prefixed":
        assert "type_error" in panel.call("refillStatus", refill["refill"])  # int $refillId
    first_refill = 5001 if id_format == "prefixed" else refill["refill"]
    assert panel.refillStatus(first_refill) == {"status": "Pending"}

    # a second refill while one is pending, one on a service without refill
    assert panel.refill(100001)["code"] == "refill_not_available"
    assert panel.refill(100002)["code"] == "refill_not_available"
    operator(runner, "refill", "set-status", "REF-5001", "Completed")
    assert panel.refillStatus(first_refill) == {"status": "Completed"}

    # multiRefill: a list in the order sent, keyed by the ids as sent
    third = panel.order({"service": 1234, "link": LINK + "/3", "quantity": 100})
    operator(runner, "order", "set-status", "ORD-100003", "Completed")
    with app.app_context(), db.write() as conn:  # the first order completed 31 days ago
        conn.execute(orders.update().where(orders.c.id == 1)
                     .values(completed_at=orders.c.completed_at - 31 * 86400))
    refills = panel.multiRefill([100003, 100001, 100002, 100999])
    assert [entry["order"] for entry in refills] == ["100003", "100001", "100002", "100999"]
    assert refills[0]["refill"] == refill_id(5002, id_format)
    assert "window" in refills[1]["refill"]["error"]
    assert refills[2]["refill"]["error"].startswith("Refill is not available for this order")
    assert refills[3]["refill"] == {"error": "Incorrect order ID"}

    statuses = panel.multiRefillStatus([5001, 5002, 9])
    assert statuses == [{"refill": "5001", "status": "Completed"},
                        {"refill": "5002", "status": "Pending"},
                        {"refill": "9", "status": {"error": "Refill not found"}}]

    # cancel: accepted (1), then the operator's Canceled refunds the whole charge
    active = panel.order({"service": 1234, "link": LINK + "/4", "quantity": 200})
    assert panel.balance()["balance"] == "99.62"  # 100 - 0.089 - 0.024 - 0.089 - 0.178
    answer = panel.cancel([active["order"], comments["order"], third["order"]])
    assert answer == [{"order": str(active["order"]), "cancel": 1},
                      {"order": str(comments["order"]),
                       "cancel": {"error": "Cancel is not available for this order"}},
                      {"order": str(third["order"]),
                       "cancel": {"error": "Cancel is not available for this order"}}]
    assert "ORD-100004" in operator(runner, "order", "list", "--cancel-requested")
    assert panel.status(active["order"])["status"] == "Pending"  # accepted, not canceled yet
    operator(runner, "order", "set-status", "ORD-100004", "Canceled")
    assert panel.status(active["order"]) == {"charge": "0", "start_count": None,
                                             "status": "Canceled", "remains": 200,
                                             "currency": "USD"}
    assert panel.balance()["balance"] == "99.798"  # the 0.178 back, once
