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
    result = runner.invoke(args=["account", "id-format", EMAIL, id_format])
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
