"""serva.money: exact amounts in micro-units, one half-up rounding rule, shortest decimal strings."""
import pytest

from serva.money import (
    MICRO, AmountError, charge_for, discounted, div_half_up, format_amount, format_percent,
    parse_amount, parse_percent,
)


@pytest.mark.parametrize("text, micro", [
    ("25.5", 25_500_000),
    ("25.50", 25_500_000),
    ("0.89", 890_000),
    ("0.000089", 89),
    ("0.000001", 1),
    ("0", 0),
    ("0.0", 0),
    ("100", 100 * MICRO),
    ("007.5", 7_500_000),
    (" 2.14 ", 2_140_000),
    ("-1.5", -1_500_000),
    ("999999999999.999999", 999_999_999_999_999_999),
    (12, 12 * MICRO),
])
def test_parse_amount(text, micro):
    assert parse_amount(text) == micro


@pytest.mark.parametrize("text", [
    "", " ", "abc", "1.0000001", "0.0000005", "1e3", "1E-6", "1,5", ".5", "5.", "+5", "--1",
    "1.2.3", "0x10", "inf", "nan", "١٢", "５", "1_000", "1 000",
])
def test_parse_amount_refuses_anything_but_a_plain_decimal(text):
    with pytest.raises(AmountError):
        parse_amount(text)


@pytest.mark.parametrize("value", [1.5, 0.1, None, True, False, [1], {"a": 1}, b"1"])
def test_parse_amount_refuses_non_text_values(value):
    # floats would smuggle binary rounding in; booleans are ints in Python but not amounts
    with pytest.raises(AmountError):
        parse_amount(value)


def test_parse_amount_refuses_amounts_a_64_bit_column_cannot_hold():
    with pytest.raises(AmountError):
        parse_amount("99999999999999999999")
    with pytest.raises(AmountError):
        parse_amount(10 ** 20)
    with pytest.raises(AmountError):  # not Python's int() digit-limit ValueError
        parse_amount("1" * 5000)


def test_amount_error_is_a_value_error():
    assert issubclass(AmountError, ValueError)


@pytest.mark.parametrize("micro, text", [
    (0, "0"),
    (1, "0.000001"),
    (89, "0.000089"),
    (890_000, "0.89"),
    (2_140_000, "2.14"),
    (25_500_000, "25.5"),
    (100 * MICRO, "100"),
    (10_000_000 * MICRO, "10000000"),
    (123_456_789, "123.456789"),
    (-1, "-0.000001"),
    (-25_500_000, "-25.5"),
    (10 ** 18, "1000000000000"),
])
def test_format_amount_is_the_shortest_plain_decimal(micro, text):
    assert format_amount(micro) == text


@pytest.mark.parametrize("micro", [1, 10, 100, 10 ** 6, 10 ** 12, 10 ** 17 + 1, 5 * 10 ** 18])
def test_format_amount_never_uses_exponent_form(micro):
    text = format_amount(micro)
    assert "e" not in text.lower()
    assert not text.endswith("0") or "." not in text  # no trailing zeros after a point


@pytest.mark.parametrize("micro", [0, 1, 9, 10, 99, 100_000, 999_999, 1_000_000, 1_000_001,
                                   25_500_000, 123_456_789_012, -7, -2_140_000])
def test_parse_and_format_round_trip(micro):
    assert parse_amount(format_amount(micro)) == micro


@pytest.mark.parametrize("numerator, denominator, expected", [
    (0, 10, 0),
    (4, 10, 0),
    (5, 10, 1),      # exactly half goes up
    (6, 10, 1),
    (14, 10, 1),
    (15, 10, 2),
    (25, 10, 3),     # half-up, not banker's rounding (which would give 2)
    (35, 10, 4),
    (1, 3, 0),
    (2, 3, 1),
    (1, 2, 1),
    (499, 1000, 0),
    (500, 1000, 1),
    (-4, 10, 0),
    (-5, 10, -1),    # half away from zero for negatives
    (-15, 10, -2),
    (10 ** 30 + 5, 10, 10 ** 29 + 1),  # exact for any size: no floats
])
def test_div_half_up(numerator, denominator, expected):
    assert div_half_up(numerator, denominator) == expected


@pytest.mark.parametrize("denominator", [0, -1])
def test_div_half_up_needs_a_positive_denominator(denominator):
    with pytest.raises(ValueError):
        div_half_up(10, denominator)


@pytest.mark.parametrize("rate, quantity, charge", [
    (890_000, 1000, 890_000),         # rate is per 1000 units
    (890_000, 100, 89_000),
    (890_000, 1, 890),
    (2_140_000, 1000, 2_140_000),
    (1, 500, 1),                      # 0.5 micro rounds up
    (1, 499, 0),
    (1, 1500, 2),                     # 1.5 -> 2
    (3, 2500, 8),                     # 7.5 -> 8
    (333_333, 3, 1_000),              # 999.999 -> 1000
    (0, 1000, 0),
])
def test_charge_for_is_rate_per_1000_rounded_half_up_once(rate, quantity, charge):
    assert charge_for(rate, quantity) == charge


@pytest.mark.parametrize("amount, discount_bp, expected", [
    (890_000, 0, 890_000),
    (890_000, 1000, 801_000),         # 10%
    (890_000, 10_000, 0),             # 100%
    (1, 5000, 1),                     # 0.5 -> 1
    (3, 5000, 2),                     # 1.5 -> 2
    (5, 5000, 3),                     # 2.5 -> 3 (not banker's 2)
    (1, 4999, 1),                     # 0.5001 -> 1
    (1, 5001, 0),                     # 0.4999 -> 0
    (999_999, 1250, 874_999),         # 874999.125 -> 874999
    (1_000_003, 1250, 875_003),       # 875002.625 -> 875003
])
def test_discounted_rounds_half_up_once(amount, discount_bp, expected):
    assert discounted(amount, discount_bp) == expected


@pytest.mark.parametrize("text, bp", [
    ("0", 0), ("10", 1000), ("12.5", 1250), ("12.34", 1234), ("0.01", 1), ("100", 10_000),
    ("100.00", 10_000),
])
def test_parse_percent(text, bp):
    assert parse_percent(text) == bp


@pytest.mark.parametrize("text", ["-1", "100.01", "101", "12.345", "0.001", "abc", "1e1", ""])
def test_parse_percent_refuses(text):
    with pytest.raises(AmountError):
        parse_percent(text)


@pytest.mark.parametrize("bp, text", [(0, "0"), (1, "0.01"), (1000, "10"), (1250, "12.5"),
                                      (10_000, "100")])
def test_format_percent(bp, text):
    assert format_percent(bp) == text
