"""Exact money: integer micro-units (1 USD = 1,000,000) in, shortest decimal strings out.

Every amount that crosses the API or the CLI goes through this module, so there is one
rounding rule (half-up, applied once) and one rendering rule (no exponent, no trailing zeros).
"""
import re

MICRO = 1_000_000
RATE_UNITS = 1000  # rates are quoted per 1000 units
BASIS_POINTS = 10_000  # 100% expressed in basis points

_AMOUNT_RE = re.compile(r"^(-?)([0-9]{1,24})(?:\.([0-9]{1,6}))?$")  # ASCII digits only
MAX_AMOUNT = 10 ** 18 - 1  # micro-units; fits the 64-bit integer money columns


class AmountError(ValueError):
    """A decimal string that is not an exact amount of at most six decimals."""


def div_half_up(numerator: int, denominator: int) -> int:
    """Integer division rounded half away from zero (exact, no floats)."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    sign = -1 if numerator < 0 else 1
    quotient, remainder = divmod(abs(numerator), denominator)
    if remainder * 2 >= denominator:
        quotient += 1
    return sign * quotient


def parse_amount(text) -> int:
    """'25.5' -> 25_500_000. Refuses floats, exponents and more than six decimals."""
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise AmountError(f"not an amount: {text!r}")
    match = _AMOUNT_RE.match(str(text).strip())
    if not match:
        raise AmountError(f"not an exact amount with at most 6 decimals: {text!r}")
    sign, whole, frac = match.groups()
    micro = int(whole) * MICRO + int((frac or "").ljust(6, "0"))
    if micro > MAX_AMOUNT:
        raise AmountError(f"amount too large: {text!r}")
    return -micro if sign else micro


def format_amount(micro: int) -> str:
    """25_500_000 -> '25.5'; 89 -> '0.000089'; 0 -> '0'. Never exponent form."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(int(micro)), MICRO)
    if not frac:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:06d}".rstrip("0")


def parse_percent(text, maximum_bp: int = BASIS_POINTS) -> int:
    """'12.5' (percent) -> 1250 basis points, 0..100% (or up to `maximum_bp`, e.g. a markup)."""
    micro = parse_amount(text)
    if micro % 10_000:
        raise AmountError(f"percentages take at most two decimals: {text!r}")
    bp = micro // 10_000
    if not 0 <= bp <= maximum_bp:
        raise AmountError(f"percentage must be between 0 and {format_percent(maximum_bp)}: {text!r}")
    return bp


def format_percent(bp: int) -> str:
    return format_amount(bp * 10_000)


def discounted(amount: int, discount_bp: int) -> int:
    """An amount less a percentage discount, rounded half-up once."""
    return div_half_up(amount * (BASIS_POINTS - discount_bp), BASIS_POINTS)


def charge_for(rate: int, quantity: int) -> int:
    """Charge for `quantity` units at `rate` micro-units per 1000, rounded half-up once."""
    return div_half_up(rate * quantity, RATE_UNITS)
