"""A provider's `services` reply turned into local services: what `provider import` and
`provider sync` write, as plain functions over plain values (no HTTP, no database), so every
rule here is tested on its own.

Money stays exact. A provider's rate is read as a Decimal from the reply's text (a JSON number
arrives as a Decimal when the reply is parsed with `parse_float=Decimal`; a float, when one gets
here, is read back through its shortest text, which is the JSON text for any rate of up to 15
significant digits). The local rate is `provider rate × (1 + markup)` rounded half-up to the
micro-unit once, from the exact provider rate, and never below what the provider charges: the
provider's rate rounded *up* to the micro-unit, which is also what is kept as `provider_rate`.
"""
import json
from collections import namedtuple
from decimal import Decimal, InvalidOperation

from .money import BASIS_POINTS, MAX_AMOUNT, MICRO, div_half_up, format_amount
from .schema import services as services_table
from .services import COMMENTS_FIELD, DEFAULT_REFILL_DAYS

MAX_QUANTITY = 2 ** 31 - 1  # the quantity columns are 32-bit
MAX_TEXT = 255
MAX_PROVIDER_SERVICE = 64
MAX_NUMBER_TEXT = 64
MAX_DECIMALS = 18  # finer than this is not a price; it would also make the exact fraction huge
MAX_RATE = Decimal(MAX_AMOUNT).scaleb(-6)

# The ecosystem's service types Serva can carry: type (case-insensitive) -> (kind, type, fields).
TYPES = {
    "default": ("default", "Default", []),
    "package": ("package", "Package", []),
    "custom comments": ("lines", "Custom Comments", [COMMENTS_FIELD]),
}

# Flags copied from the provider, as far as the services table has them.
FLAGS = tuple(name for name in ("refill", "cancel", "dripfeed") if name in services_table.c)
# A provider says only whether it refills: its refill services get the default window.
REFILL_DAYS = ("refill_days",) if "refill_days" in services_table.c else ()

# What sync keeps equal to the provider (the name and category stay the operator's).
SYNCED = ("kind", "type", "fields_json", "min_quantity", "max_quantity") + FLAGS + REFILL_DAYS

Offer = namedtuple("Offer", "provider_service name category kind type fields_json min_quantity "
                            "max_quantity flags rate")
Step = namedtuple("Step", "action local_id provider_service name values changes reason")
# action: "add" (local_id None), "update", "unchanged", "skip" (reason), "deactivate" (reason)


class Unusable(ValueError):
    """A catalog entry Serva cannot carry; the message is the reason printed."""


class CatalogError(ValueError):
    """A reply that is not a catalog at all."""


# ---------------------------------------------------------------- one value at a time

def provider_rate(value) -> Decimal:
    """A provider's rate, exactly: a non-negative finite number below the largest amount."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise Unusable(f"the rate is not a number: {value!r}")
    text = repr(value) if isinstance(value, float) else str(value).strip()
    if len(text) > MAX_NUMBER_TEXT:
        raise Unusable("the rate is not a plain number")
    try:
        rate = Decimal(text)
    except InvalidOperation:
        raise Unusable(f"the rate is not a number: {text!r}") from None
    if not rate.is_finite() or rate < 0:
        raise Unusable(f"the rate is not a non-negative number: {text!r}")
    if rate > MAX_RATE:  # compared exactly, before any arithmetic
        raise Unusable(f"the rate is too large: {text!r}")
    if rate.as_tuple().exponent < -MAX_DECIMALS:
        raise Unusable(f"the rate has more than {MAX_DECIMALS} decimals: {text!r}")
    return rate


def _ratio(rate: Decimal):
    numerator, denominator = rate.as_integer_ratio()
    return numerator * MICRO, denominator  # micro-units as a fraction


def provider_micro(rate: Decimal) -> int:
    """What the provider charges per 1000, in micro-units rounded up: the floor of our rate."""
    numerator, denominator = _ratio(rate)
    return -(-numerator // denominator)


def marked_up(rate: Decimal, markup_bp: int) -> int:
    """provider rate × (1 + markup), half-up to the micro-unit once; never below the provider."""
    numerator, denominator = _ratio(rate)
    local = div_half_up(numerator * (BASIS_POINTS + markup_bp), denominator * BASIS_POINTS)
    local = max(local, provider_micro(rate))
    if local > MAX_AMOUNT:
        raise Unusable("the marked-up rate is too large")
    return local


def _quantity(value, what):
    if isinstance(value, bool):
        raise Unusable(f"{what} is not a whole number: {value!r}")
    try:
        number = Decimal(str(value).strip()) if isinstance(value, (str, int, Decimal)) else None
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite() or number != number.to_integral_value():
        raise Unusable(f"{what} is not a whole number: {value!r}")
    if number < 0:
        raise Unusable(f"{what} is negative: {value!r}")
    return int(min(number, MAX_QUANTITY))


def _flag(value) -> bool:
    """The ecosystem sends flags as true/false, 1/0 or their strings."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return value is True or (isinstance(value, int) and value == 1)


def _text(value, what, required=True):
    text = "" if value is None else str(value).strip() if isinstance(value, (str, int)) else None
    if text is None or (required and not text):
        raise Unusable(f"no {what}")
    return text[:MAX_TEXT]


def provider_service_id(entry) -> str:
    """The provider's service id as text (ids arrive as integers or strings)."""
    value = entry.get("service") if isinstance(entry, dict) else None
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise Unusable("no service id")
    text = str(value).strip()
    if len(text) > MAX_PROVIDER_SERVICE:
        raise Unusable("the service id is too long")
    return text


def offer(entry) -> Offer:
    """One entry of a provider's `services` reply as Serva would sell it, or Unusable."""
    provider_service = provider_service_id(entry)
    raw_type = entry.get("type")
    raw_type = "Default" if raw_type is None or raw_type == "" else raw_type
    mapped = TYPES.get(str(raw_type).strip().lower()) if isinstance(raw_type, str) else None
    if mapped is None:
        raise Unusable(f"type {str(raw_type)[:MAX_TEXT]!r} is not one Serva can carry "
                       f"(it carries {', '.join(t for _, t, _ in TYPES.values())})")
    kind, type_, fields = mapped
    if kind == "package":
        low = high = 1
    else:
        if entry.get("min") is None or entry.get("max") is None:
            raise Unusable("no min or max quantity")
        low, high = max(_quantity(entry["min"], "min"), 1), _quantity(entry["max"], "max")
        if high < low:
            raise Unusable(f"max {high} is below min {low}")
    if "rate" not in entry:
        raise Unusable("no rate")
    return Offer(provider_service=provider_service, name=_text(entry.get("name"), "name"),
                 category=_text(entry.get("category"), "category", required=False),
                 kind=kind, type=type_, fields_json=json.dumps(fields),
                 min_quantity=low, max_quantity=high,
                 flags={**{name: _flag(entry.get(name)) for name in FLAGS},
                        **{name: DEFAULT_REFILL_DAYS if _flag(entry.get("refill")) else 0
                           for name in REFILL_DAYS}},
                 rate=provider_rate(entry["rate"]))


def entries(reply) -> list:
    """The reply's list of services; anything else (e.g. {"error": …}) is a CatalogError."""
    if isinstance(reply, dict) and "error" in reply:
        raise CatalogError(f"the provider refused: {str(reply['error'])[:200]}")
    if not isinstance(reply, list):
        raise CatalogError("the provider's services reply is not a list")
    return reply


Listed = namedtuple("Listed", "provider_service offer reason name category")


def listed(reply):
    """Each entry of the reply once: its id (or None), its Offer or the reason there is none,
    and the name and category it shows (for the printed line and the category filter)."""
    seen = set()
    for entry in entries(reply):
        shown = entry if isinstance(entry, dict) else {}
        name, category = (_plain(shown.get(key)) for key in ("name", "category"))
        try:
            provider_service = provider_service_id(entry)
        except Unusable as why:
            yield Listed(None, None, str(why), name, category)
            continue
        if provider_service in seen:
            yield Listed(provider_service, None, "listed twice; the first entry counts",
                         name, category)
            continue
        seen.add(provider_service)
        try:
            yield Listed(provider_service, offer(entry), None, name, category)
        except Unusable as why:
            yield Listed(provider_service, None, str(why), name, category)


def _plain(value) -> str:
    return value.strip()[:MAX_TEXT] if isinstance(value, str) else ""


# ---------------------------------------------------------------- import and sync

def _synced_values(item: Offer) -> dict:
    return {"kind": item.kind, "type": item.type, "fields_json": item.fields_json,
            "min_quantity": item.min_quantity, "max_quantity": item.max_quantity,
            "provider_rate": provider_micro(item.rate), **item.flags}


def _show(column, value):
    if column in ("rate", "provider_rate"):
        return format_amount(value)
    if column in FLAGS or column == "active":
        return "yes" if value else "no"
    return str(value)


def _differences(row, values) -> dict:
    return {column: value for column, value in values.items() if getattr(row, column) != value}


def _describe(row, changed) -> list:
    labels = {"min_quantity": "min", "max_quantity": "max", "provider_rate": "provider rate",
              "fields_json": "fields", "refill_days": "refill days"}
    return [f"{labels.get(c, c)} {_show(c, getattr(row, c))} -> {_show(c, v)}"
            for c, v in changed.items()]


def plan_import(reply, markup_bp: int, categories, existing) -> list:
    """Steps for `provider import`: add or update one local service per provider service.

    `existing` maps provider service id -> the local row already linked to it (this provider),
    so running the import again updates those rows instead of adding new ones. `categories`
    (case-insensitive; empty = all) limits which entries are imported."""
    wanted = {c.strip().casefold() for c in categories}
    steps = []
    for provider_service, item, reason, name, category in listed(reply):
        if wanted and category.casefold() not in wanted:
            continue
        if item is None:
            steps.append(Step("skip", None, provider_service, name, {}, [], reason))
            continue
        try:
            rate = marked_up(item.rate, markup_bp)
        except Unusable as why:
            steps.append(Step("skip", None, provider_service, item.name, {}, [], str(why)))
            continue
        values = {"name": item.name, "category": item.category, "rate": rate,
                  "markup_bp": markup_bp, **_synced_values(item)}
        row = existing.get(provider_service)
        if row is None:
            steps.append(Step("add", None, provider_service, item.name,
                              {**values, "provider_service": provider_service}, [], None))
        else:
            changed = _differences(row, values)
            steps.append(Step("update" if changed else "unchanged", row.id, provider_service,
                              item.name, changed, _describe(row, changed), None))
    return steps


def plan_sync(reply, linked) -> list:
    """Steps for `provider sync` over the local rows linked to this provider.

    Each keeps its name and category and follows the provider's limits, flags and type. Its
    rate: with a markup, provider rate × (1 + markup) again; linked by hand (no markup), it
    stays unless it is below the provider's rate, and is then raised to it. A service gone
    upstream, or one the provider now lists in a form Serva cannot carry, is deactivated."""
    found = {}
    for entry in listed(reply):  # a repeated id keeps its first entry
        if entry.provider_service is not None:
            found.setdefault(entry.provider_service, (entry.offer, entry.reason))
    steps = []
    for row in sorted(linked, key=lambda r: r.id):
        item, reason = found.get(row.provider_service, (None, "gone upstream"))
        if item is not None:
            try:
                rate = (marked_up(item.rate, row.markup_bp) if row.markup_bp is not None
                        else max(row.rate, provider_micro(item.rate)))
            except Unusable as why:
                item, reason = None, str(why)
        if item is None:
            if row.active:
                steps.append(Step("deactivate", row.id, row.provider_service, row.name,
                                  {"active": False}, ["deactivated"], reason))
            continue
        changed = _differences(row, {**_synced_values(item), "rate": rate})
        changes = _describe(row, changed)
        if row.markup_bp is None and "rate" in changed:
            changes[list(changed).index("rate")] += " (raised to the provider's rate)"
        steps.append(Step("update" if changed else "unchanged", row.id, row.provider_service,
                          row.name, changed, changes, None))
    return steps

