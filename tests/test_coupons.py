"""Coupons on `add` (through HTTP) and the operator's `coupon` commands."""
import pytest
from freezegun import freeze_time
from sqlalchemy import func, select

from serva import db, services
from serva.ids import parse_order
from serva.schema import accounts, coupon_redemptions, coupons, ledger, orders, purchase_guards
from serva.cli import cli as serva_cli

from conftest import make_partner

FOLLOWERS, PACKAGE, COMMENTS, GAME = "1234", "1235", "1236", "7788"
LINK = "https://example.com/post/1"


@pytest.fixture
def coupon(runner):
    """Create a coupon through the CLI; asserts it worked."""
    def create(code, *options):
        result = runner.invoke(serva_cli, args=["coupon", "create", code, *options])
        assert result.exit_code == 0, result.output
        assert result.output == f"coupon {code.strip().upper()} created\n"
    return create


def add(api, service=FOLLOWERS, link=LINK, quantity="1000", **params):
    if service != PACKAGE and quantity is not None:
        params["quantity"] = quantity
    return api("add", service=service, link=link, **params)


def state(app):
    with app.app_context(), db.read() as conn:
        def count(table):
            return conn.execute(select(func.count()).select_from(table)).scalar()
        return {"balances": dict(conn.execute(select(accounts.c.id, accounts.c.balance)).all()),
                "orders": count(orders), "ledger": count(ledger), "guards": count(purchase_guards),
                "redemptions": count(coupon_redemptions),
                "uses": dict(conn.execute(select(coupons.c.code, coupons.c.uses)).all())}


def redemptions(app):
    with app.app_context(), db.read() as conn:
        return [tuple(r) for r in conn.execute(
            select(coupons.c.code, coupon_redemptions.c.account_id, coupon_redemptions.c.order_id,
                   coupon_redemptions.c.discount)
            .join(coupons, coupons.c.id == coupon_redemptions.c.coupon_id)
            .order_by(coupon_redemptions.c.id))]


def assert_invalid(app, api, **params):
    before = state(app)
    body = add(api, **params)
    assert body == {"error": "Invalid coupon", "code": "invalid_coupon"}
    assert state(app) == before


def audit_passes(runner):
    result = runner.invoke(serva_cli, args=["audit"])
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------- discounts

def test_percent_coupon(app, api, catalog, coupon, partner, runner):
    coupon("TEN", "--percent", "10")
    body = add(api, coupon="TEN")
    assert body["charge"] == "0.801" and body["balance"] == "99.199"  # 0.89 less 10%
    order_id = parse_order(body["order"])
    assert redemptions(app) == [("TEN", partner[0], order_id, 89_000)]
    assert state(app)["uses"] == {"TEN": 1}
    assert api("status", order=body["order"])["charge"] == "0.801"
    audit_passes(runner)


def test_fractional_percent(api, catalog, coupon):
    coupon("HALFISH", "--percent", "12.5")
    assert add(api, service=PACKAGE, coupon="HALFISH")["charge"] == "13.125"


def test_fixed_coupon(app, api, catalog, coupon, runner):
    coupon("FIVE", "--amount", "5")
    assert add(api, service=PACKAGE, coupon_code="FIVE")["charge"] == "10"
    assert redemptions(app)[0][3] == 5_000_000
    audit_passes(runner)


def test_fixed_coupon_never_makes_a_negative_charge(app, api, catalog, coupon, runner):
    coupon("BIG", "--amount", "50")
    body = add(api, coupon="BIG")
    assert body["charge"] == "0" and body["balance"] == "100"
    assert redemptions(app)[0][3] == 890_000  # the discount is what was actually taken off
    audit_passes(runner)


def test_full_percent_coupon_charges_zero(app, api, catalog, coupon, runner):
    coupon("FREE", "--percent", "100")
    body = add(api, coupon="FREE")
    assert body["charge"] == "0" and body["balance"] == "100"
    assert api("status", order=body["order"])["charge"] == "0"
    assert state(app)["uses"] == {"FREE": 1}
    audit_passes(runner)


def test_percent_is_rounded_once(app, api, coupon):
    """0.000015 per 1000 x 100 units = 0.0000015; less 10% = 0.00000135 -> 0.000001 (once).
    Rounding the base first (0.000002) and then the discount would give 0.000002."""
    with app.app_context(), db.write() as conn:
        tiny = services.add(conn, name="Tiny", rate=15, min_quantity=1, max_quantity=1000)
    coupon("TEN", "--percent", "10")
    assert add(api, service=str(tiny), quantity="100")["charge"] == "0.000002"  # without coupon
    assert add(api, service=str(tiny), link=LINK + "/2", quantity="100", coupon="TEN")["charge"] == "0.000001"


def test_coupon_applies_after_the_accounts_effective_rate(api, runner, catalog, coupon):
    assert runner.invoke(serva_cli, args=["account", "rate", "partner@example.com", "1234", "2"]).exit_code == 0
    coupon("TEN", "--percent", "10")
    assert add(api, coupon="TEN")["charge"] == "1.8"


def test_code_is_case_insensitive(api, catalog, coupon, runner):
    coupon("Summer10", "--percent", "10")
    assert "SUMMER10" in runner.invoke(serva_cli, args=["coupon", "list"]).output
    assert add(api, coupon="summer10")["charge"] == "0.801"
    assert add(api, link=LINK + "/2", coupon=" SUMMER10 ")["charge"] == "0.801"


def test_empty_coupon_is_no_coupon(api, catalog):
    assert add(api, coupon="")["charge"] == "0.89"


# ---------------------------------------------------------------- rules

def test_unknown_coupon(app, api, catalog, coupon):
    coupon("REAL", "--percent", "10")
    assert_invalid(app, api, coupon="FAKE")
    assert_invalid(app, api, coupon_code="REAL1")


def test_validity_window(app, api, catalog, coupon):
    coupon("SPRING", "--percent", "10", "--starts", "2031-03-01T00:00:00",
           "--expires", "2031-03-31T00:00:00+00:00")
    with freeze_time("2031-02-28 23:59:59"):
        assert_invalid(app, api, coupon="SPRING")
    with freeze_time("2031-03-01 00:00:00"):
        assert add(api, coupon="SPRING")["charge"] == "0.801"
    with freeze_time("2031-03-30 23:59:59"):
        assert add(api, link=LINK + "/2", coupon="SPRING")["charge"] == "0.801"
    with freeze_time("2031-03-31 00:00:00"):
        assert_invalid(app, api, link=LINK + "/3", coupon="SPRING")


def test_start_and_expiry_with_time_zones(app, api, catalog, coupon):
    coupon("TZ", "--amount", "0.1", "--starts", "2031-03-01T02:00:00+02:00")  # = 00:00 UTC
    with freeze_time("2031-02-28 23:59:00"):
        assert_invalid(app, api, coupon="TZ")
    with freeze_time("2031-03-01 00:00:01"):
        assert add(api, coupon="TZ")["charge"] == "0.79"


def test_max_uses(app, api, catalog, coupon, runner):
    coupon("TWICE", "--percent", "50", "--max-uses", "2")
    other_id, other_key = make_partner(app, "other@example.com")
    assert add(api, coupon="TWICE")["charge"] == "0.445"
    assert add(api, key=other_key, coupon="TWICE")["charge"] == "0.445"
    assert_invalid(app, api, link=LINK + "/3", coupon="TWICE")
    assert state(app)["uses"] == {"TWICE": 2}
    assert "uses 2/2" in runner.invoke(serva_cli, args=["coupon", "list"]).output
    audit_passes(runner)


def test_per_account_limit(app, api, catalog, coupon):
    coupon("ONCE", "--percent", "10", "--per-account", "1")
    _, other_key = make_partner(app, "other@example.com")
    assert "order" in add(api, coupon="ONCE")
    assert_invalid(app, api, link=LINK + "/2", coupon="ONCE")
    assert "order" in add(api, key=other_key, coupon="ONCE")
    assert state(app)["uses"] == {"ONCE": 2}


def test_min_charge(app, api, catalog, coupon):
    coupon("BIGSPENDER", "--amount", "0.5", "--min-charge", "1")
    assert_invalid(app, api, quantity="1000", coupon="BIGSPENDER")  # 0.89 < 1
    assert add(api, quantity="2000", coupon="BIGSPENDER")["charge"] == "1.28"  # 1.78 - 0.5
    # The minimum is on the charge before the discount, exactly.
    coupon("EXACT", "--percent", "50", "--min-charge", "0.89")
    assert add(api, link=LINK + "/2", quantity="1000", coupon="EXACT")["charge"] == "0.445"


def test_service_restriction(app, api, catalog, coupon):
    coupon("ONLYPKG", "--percent", "10", "--service", PACKAGE)
    assert_invalid(app, api, service=FOLLOWERS, coupon="ONLYPKG")
    assert add(api, service=PACKAGE, coupon="ONLYPKG")["charge"] == "13.5"


def test_category_restriction(app, api, catalog, coupon):
    coupon("INSTA", "--percent", "10", "--category", "Instagram")
    assert_invalid(app, api, service=PACKAGE, coupon="INSTA")  # YouTube
    assert add(api, service=COMMENTS, comments="a\nb", quantity=None, coupon="INSTA")["charge"] == "0.0216"
    assert add(api, service=FOLLOWERS, coupon="INSTA")["charge"] == "0.801"


def test_disabled_coupon(app, api, catalog, coupon, runner):
    coupon("GONE", "--percent", "10")
    assert "order" in add(api, coupon="GONE")
    result = runner.invoke(serva_cli, args=["coupon", "disable", "gone"])
    assert result.exit_code == 0 and result.output == "coupon GONE disabled\n"
    assert_invalid(app, api, link=LINK + "/2", coupon="GONE")
    assert "GONE\tdisabled" in runner.invoke(serva_cli, args=["coupon", "list"]).output


def test_invalid_coupon_releases_the_purchase_guard(app, api, catalog, coupon):
    """The guard row written before the coupon check is rolled back with it: the corrected
    request is not a 'duplicate'."""
    assert_invalid(app, api, coupon="TYPO")
    coupon("REAL", "--percent", "10")
    assert add(api, coupon="REAL")["charge"] == "0.801"


# ---------------------------------------------------------------- CLI

def test_cli_list(runner, coupon):
    assert runner.invoke(serva_cli, args=["coupon", "list"]).output == "none\n"
    coupon("A10", "--percent", "10", "--max-uses", "5", "--starts", "2031-01-01", "--expires", "2031-02-01T12:30:00")
    coupon("B2", "--amount", "2.5")
    lines = runner.invoke(serva_cli, args=["coupon", "list"]).output.splitlines()
    assert lines == ["A10\tactive\t10% off\tuses 0/5\t2031-01-01 00:00:00Z .. 2031-02-01 12:30:00Z",
                     "B2\tactive\t2.5 off\tuses 0/∞\t- .. -"]


def test_cli_create_stores_every_option(app, runner, catalog, coupon):
    coupon("ALL", "--percent", "7.25", "--starts", "2031-01-01T00:00:00Z", "--expires", "2031-01-02",
           "--max-uses", "9", "--per-account", "3", "--min-charge", "1.5", "--service", "1234",
           "--category", "Instagram")
    with app.app_context(), db.read() as conn:
        row = conn.execute(select(coupons)).one()
    assert (row.code, row.kind, row.value, row.starts_at, row.expires_at, row.max_uses,
            row.per_account_limit, row.min_charge, row.service_id, row.category, row.active, row.uses) == \
        ("ALL", "percent", 725, 1924992000, 1925078400, 9, 3, 1_500_000, 1234, "Instagram", True, 0)


@pytest.mark.parametrize("args", [
    ["X1"],                                              # neither --percent nor --amount
    ["X1", "--percent", "10", "--amount", "1"],          # both
    ["X1", "--percent", "150"],
    ["X1", "--percent", "-5"],
    ["X1", "--percent", "ten"],
    ["X1", "--percent", "10.555"],
    ["X1", "--amount", "0"],
    ["X1", "--amount", "-1"],
    ["X1", "--amount", "1.0000001"],
    ["X1", "--amount", "1e3"],
    ["X1", "--percent", "10", "--starts", "next tuesday"],
    ["X1", "--percent", "10", "--expires", "2031-13-01"],
    ["X1", "--percent", "10", "--min-charge", "abc"],
    ["X1", "--percent", "10", "--service", "9999"],     # no such service
    ["X1", "--percent", "10", "--starts", "2031-02-01", "--expires", "2031-01-01"],  # never valid
    ["   ", "--percent", "10"],
    ["X" * 65, "--percent", "10"],
])
def test_cli_create_errors(app, runner, catalog, args):
    result = runner.invoke(serva_cli, args=["coupon", "create", *args])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    with app.app_context(), db.read() as conn:
        assert conn.execute(select(func.count()).select_from(coupons)).scalar() == 0


def test_cli_create_duplicate_code(runner, coupon):
    coupon("DUP", "--percent", "10")
    result = runner.invoke(serva_cli, args=["coupon", "create", "dup", "--amount", "1"])
    assert result.exit_code == 2
    assert result.stderr == "error: coupon DUP already exists\n"


def test_cli_disable_unknown(runner):
    result = runner.invoke(serva_cli, args=["coupon", "disable", "NOPE"])
    assert result.exit_code == 2
    assert result.stderr == "error: no coupon NOPE\n"


@pytest.mark.parametrize("option", ["--max-uses", "--per-account"])
def test_cli_limits_must_be_positive(runner, option):
    result = runner.invoke(serva_cli, args=["coupon", "create", "X", "--percent", "10", option, "0"])
    assert result.exit_code == 2
