"""The rules of `provider import` / `provider sync` on their own (serva/provider_catalog.py):
exact provider rates, markup rounded half-up to the micro-unit and never below the provider,
type mapping, and what import and sync plan for each entry. The CLI over real HTTP is in
tests/test_provider_cli.py."""
import json
from decimal import Decimal
from types import SimpleNamespace

import pytest

from serva import provider_catalog as pc
from serva.services import COMMENTS_FIELD


def entry(service=1, **values):
    base = {"service": service, "name": f"Service {service}", "category": "Instagram",
            "type": "Default", "rate": "0.89", "min": 100, "max": 10_000}
    return {**base, **values}


def row(id=1, provider_service="1", markup_bp=2000, active=True, **values):
    """A local service as the database holds it (what import/sync compare against)."""
    item = pc.offer(entry(int(provider_service)))
    base = {"name": item.name, "category": item.category, "kind": item.kind, "type": item.type,
            "fields_json": item.fields_json, "min_quantity": item.min_quantity,
            "max_quantity": item.max_quantity, "provider_rate": pc.provider_micro(item.rate),
            "rate": pc.marked_up(item.rate, markup_bp or 0), **item.flags}
    return SimpleNamespace(id=id, provider_service=provider_service, markup_bp=markup_bp,
                           active=active, **{**base, **values})


# ---------------------------------------------------------------- provider rates

@pytest.mark.parametrize("value, exact", [
    ("0.89", "0.89"), (Decimal("0.89"), "0.89"), (0.89, "0.89"), ("1.2e-3", "0.0012"),
    (3, "3"), ("0", "0"), (" 15.5 ", "15.5"), ("0.0000891", "0.0000891"), ("1E+2", "100"),
])
def test_provider_rates_are_read_exactly(value, exact):
    assert pc.provider_rate(value) == Decimal(exact)


@pytest.mark.parametrize("value", [
    "-0.5", -1, "abc", "", "NaN", "Infinity", "-Infinity", "sNaN", None, True, False, [1],
    {"rate": 1}, "1e999999999", "1e13", "1e-999999999", "0." + "0" * 30 + "1", "1" * 100,
    "0x10", "1,5",
])
def test_unusable_provider_rates_are_refused(value):
    with pytest.raises(pc.Unusable):
        pc.provider_rate(value)


def test_a_json_number_read_as_decimal_keeps_every_digit():
    reply = json.loads('[{"rate": 0.123456789012345678}]', parse_float=Decimal)
    assert pc.provider_rate(reply[0]["rate"]) == Decimal("0.123456789012345678")


@pytest.mark.parametrize("rate, markup_bp, local", [
    ("0.89", 2000, 1_068_000),        # 0.89 × 1.2 = 1.068
    ("0.89", 0, 890_000),
    ("1", 1250, 1_125_000),            # 12.5%
    ("0.000005", 5000, 8),             # 7.5 micro -> 8
    ("0.000003", 5000, 5),             # 4.5 -> 5 (banker's rounding would give 4)
    ("0.000001", 4999, 1),             # 1.4999 -> 1
    ("0.000001", 5000, 2),             # 1.5 -> 2
    ("0.0000891", 0, 90),              # 89.1 micro: never below what the provider charges
    ("0.0000891", 1000, 98),           # 98.01 -> 98
    ("0.0000895", 50, 90),             # 89.9475 -> 90
    ("1.2e-3", 3333, 1_600),           # 1599.96 -> 1600
    ("0", 5000, 0),
    ("123.456789", 100_000, 1_358_024_679),  # 1000% markup: ×11
])
def test_markup_is_rounded_half_up_once_from_the_exact_rate(rate, markup_bp, local):
    assert pc.marked_up(pc.provider_rate(rate), markup_bp) == local


@pytest.mark.parametrize("rate, micro", [("0.89", 890_000), ("0.0000891", 90), ("0.0000890", 89),
                                         ("0", 0), ("0.0000001", 1)])
def test_the_provider_rate_is_kept_rounded_up(rate, micro):
    assert pc.provider_micro(pc.provider_rate(rate)) == micro


def test_a_marked_up_rate_past_the_largest_amount_is_unusable():
    with pytest.raises(pc.Unusable, match="too large"):
        pc.marked_up(pc.provider_rate("999999999999"), 100_000)


# ---------------------------------------------------------------- types and fields

def test_default_maps_to_link_and_quantity():
    item = pc.offer(entry(type="Default", refill=True, cancel="1"))
    assert (item.kind, item.type, json.loads(item.fields_json)) == ("default", "Default", [])
    assert (item.min_quantity, item.max_quantity) == (100, 10_000)
    assert item.flags["refill_days"] == 30 and item.flags["cancel"] is True


def test_package_maps_to_a_fixed_price_of_one():
    item = pc.offer(entry(type="Package", min=1, max=1, rate="15"))
    assert (item.kind, item.type, item.min_quantity, item.max_quantity) == ("package", "Package", 1, 1)
    assert item.rate == Decimal("15")


def test_custom_comments_map_to_lines():
    item = pc.offer(entry(type="custom comments", min=5, max=500))
    assert (item.kind, item.type) == ("lines", "Custom Comments")
    assert json.loads(item.fields_json) == [COMMENTS_FIELD]


def test_a_missing_type_is_default():
    values = entry()
    del values["type"]
    assert pc.offer(values).kind == "default"


@pytest.mark.parametrize("type_", ["Mentions with Hashtags", "Poll", "Subscriptions",
                                   "Custom Comments Package", "Comment Likes", 7, ["Default"]])
def test_a_type_serva_cannot_carry_is_unusable_with_the_reason(type_):
    with pytest.raises(pc.Unusable, match="not one Serva can carry"):
        pc.offer(entry(type=type_))


@pytest.mark.parametrize("values, reason", [
    ({"min": 500, "max": 100}, "below min"),
    ({"min": None}, "no min or max"),
    ({"max": "lots"}, "not a whole number"),
    ({"min": 1.5}, "not a whole number"),
    ({"min": -1}, "negative"),
    ({"name": "  "}, "no name"),
    ({"service": None}, "no service id"),
    ({"service": True}, "no service id"),
    ({"rate": "-1"}, "non-negative"),
])
def test_unusable_entries_say_why(values, reason):
    with pytest.raises(pc.Unusable, match=reason):
        pc.offer(entry(**values))


def test_quantities_are_read_from_text_and_clamped():
    item = pc.offer(entry(min="0", max="99999999999"))
    assert (item.min_quantity, item.max_quantity) == (1, 2 ** 31 - 1)


@pytest.mark.parametrize("value, flag", [(True, True), (1, True), ("1", True), ("true", True),
                                         (False, False), (0, False), ("0", False), (None, False),
                                         ("false", False), (2, False)])
def test_flags_in_the_ecosystems_forms(value, flag):
    assert pc.offer(entry(cancel=value)).flags["cancel"] is flag
    assert pc.offer(entry(refill=value)).flags["refill_days"] == (30 if flag else 0)


@pytest.mark.parametrize("reply", [{"error": "Invalid API key"}, {"services": []}, "nope", None])
def test_a_reply_that_is_not_a_catalog(reply):
    with pytest.raises(pc.CatalogError):
        pc.plan_import(reply, 0, [], {})


# ---------------------------------------------------------------- import

def test_import_adds_what_it_can_and_skips_the_rest_with_reasons():
    reply = [entry(1), entry("2", type="Poll"), entry(3, category="YouTube"), "junk", entry(1)]
    steps = pc.plan_import(reply, 2000, [], {})
    assert [(s.action, s.provider_service) for s in steps] == [
        ("add", "1"), ("skip", "2"), ("add", "3"), ("skip", None), ("skip", "1")]
    add = steps[0]
    assert add.values["rate"] == 1_068_000 and add.values["markup_bp"] == 2000
    assert add.values["provider_rate"] == 890_000 and add.values["provider_service"] == "1"
    assert "Poll" in steps[1].reason and steps[1].name == "Service 2"
    assert "twice" in steps[4].reason


def test_import_filters_by_category_case_insensitively():
    reply = [entry(1, category="Instagram"), entry(2, category="YouTube"),
             entry(3, category="TikTok", type="Poll"), entry(4, category="tiktok")]
    steps = pc.plan_import(reply, 0, ["instagram", "TIKTOK "], {})
    assert [(s.action, s.provider_service) for s in steps] == [
        ("add", "1"), ("skip", "3"), ("add", "4")]


def test_import_again_updates_the_linked_row_instead_of_adding():
    existing = {"1": row(id=7, provider_service="1", markup_bp=2000),
                "2": row(id=8, provider_service="2", markup_bp=2000)}
    reply = [entry(1), entry(2, max=20_000, name="Renamed")]
    steps = pc.plan_import(reply, 2000, [], existing)
    assert [(s.action, s.local_id) for s in steps] == [("unchanged", 7), ("update", 8)]
    assert steps[1].values == {"name": "Renamed", "max_quantity": 20_000}
    assert steps[1].changes == ["name Service 2 -> Renamed", "max 10000 -> 20000"]


def test_import_with_another_markup_reprices():
    steps = pc.plan_import([entry(1)], 5000, [], {"1": row(id=7, markup_bp=2000)})
    assert steps[0].values == {"rate": 1_335_000, "markup_bp": 5000}


# ---------------------------------------------------------------- sync

def test_sync_follows_rates_limits_and_flags_keeping_the_markup():
    linked = [row(id=7, provider_service="1", markup_bp=2000, name="My name")]
    reply = [entry(1, rate="1.1", min=50, max=5000, refill=True, name="Upstream name")]
    (step,) = pc.plan_sync(reply, linked)
    assert step.action == "update"
    assert step.values == {"min_quantity": 50, "max_quantity": 5000, "provider_rate": 1_100_000,
                           "refill_days": 30, "rate": 1_320_000}
    assert step.changes == ["min 100 -> 50", "max 10000 -> 5000", "provider rate 0.89 -> 1.1",
                            "refill days 0 -> 30", "rate 1.068 -> 1.32"]


def test_sync_leaves_an_unchanged_service_alone():
    (step,) = pc.plan_sync([entry(1)], [row(id=7)])
    assert (step.action, step.values, step.changes) == ("unchanged", {}, [])


def test_sync_deactivates_services_gone_upstream_or_no_longer_carried():
    linked = [row(id=7, provider_service="1"), row(id=8, provider_service="2"),
              row(id=9, provider_service="3"), row(id=10, provider_service="4", active=False)]
    reply = [entry(1), entry(2, type="Poll")]
    steps = pc.plan_sync(reply, linked)
    assert [(s.action, s.local_id) for s in steps] == [
        ("unchanged", 7), ("deactivate", 8), ("deactivate", 9), ("unchanged", 10)]
    assert "Poll" in steps[1].reason and steps[2].reason == "gone upstream"
    assert steps[1].values == {"active": False}


def test_sync_keeps_a_hand_set_rate_above_the_provider():
    linked = [row(id=7, markup_bp=None, rate=2_000_000)]
    (step,) = pc.plan_sync([entry(1, rate="1.5")], linked)
    assert step.values == {"provider_rate": 1_500_000}


def test_sync_raises_a_hand_set_rate_below_the_provider_to_its_rate():
    linked = [row(id=7, markup_bp=None, rate=1_000_000)]
    (step,) = pc.plan_sync([entry(1, rate="1.0000005")], linked)
    assert step.values == {"provider_rate": 1_000_001, "rate": 1_000_001}
    assert step.changes[-1] == "rate 1 -> 1.000001 (raised to the provider's rate)"


def test_sync_never_prices_below_the_provider():
    linked = [row(id=n, provider_service=str(n), markup_bp=bp, rate=r)
              for n, bp, r in [(1, 0, 0), (2, None, 0), (3, 1, 5), (4, None, 10 ** 9)]]
    reply = [entry(n, rate=rate) for n, rate in [(1, "0.0000891"), (2, "3.3333333"),
                                                 (3, "0.0000001"), (4, "0.5")]]
    for step, upstream in zip(pc.plan_sync(reply, linked), reply):
        new_rate = step.values.get("rate", linked[int(step.provider_service) - 1].rate)
        assert new_rate >= Decimal(upstream["rate"]) * 1_000_000


def test_sync_uses_the_first_of_a_repeated_entry():
    (step,) = pc.plan_sync([entry(1), entry(1, rate="5")], [row(id=7)])
    assert step.action == "unchanged"


def test_names_from_a_provider_are_one_line():
    item = pc.offer(entry(name="Likes\t\nfast ", category=" Insta\r\ngram"))
    assert (item.name, item.category) == ("Likes fast", "Insta gram")


def test_import_says_when_an_updated_service_is_disabled_here():
    (step,) = pc.plan_import([entry(1)], 2000, [], {"1": row(id=7, active=False)})
    assert (step.action, step.reason) == ("unchanged", "disabled here")
