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
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation

from sqlalchemy import select

from . import services as services_repo
from .money import BASIS_POINTS, MAX_AMOUNT, MICRO, div_half_up, format_amount, format_percent
from .schema import services as services_table
from .services import COMMENTS_FIELD, DEFAULT_REFILL_DAYS, ServiceError

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

# Flags copied from the provider. Its `refill` (yes/no) becomes a refill window of
# DEFAULT_REFILL_DAYS days (`refill_days`; 0 = no refill): the ecosystem does not say how long.
FLAGS = ("cancel", "dripfeed")

# What sync keeps equal to the provider (the name and category stay the operator's).
SYNCED = ("kind", "type", "fields_json", "min_quantity", "max_quantity", "refill_days") + FLAGS

Offer = namedtuple("Offer", "provider_service name category kind type fields_json min_quantity "
                            "max_quantity flags rate")


@dataclass(frozen=True)
class Step:
    """One change of a plan. action: "add" (local_id None until written), "update",
    "unchanged", "skip" (reason, no rate), "deactivate" (reason). `values`: the columns to
    write; `changes`: them, for people."""
    action: str
    local_id: int | None
    provider_service: str | None
    name: str | None
    rate: int | None
    values: dict
    changes: list
    reason: str | None


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
    """A name or category: one line (a provider's tabs and newlines become spaces)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, type(None))):
        raise Unusable(f"no {what}")
    text = _plain("" if value is None else str(value))
    if required and not text:
        raise Unusable(f"no {what}")
    return text


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
                 flags={"refill_days": DEFAULT_REFILL_DAYS if _flag(entry.get("refill")) else 0,
                        **{name: _flag(entry.get(name)) for name in FLAGS}},
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
    return " ".join(value.split())[:MAX_TEXT] if isinstance(value, str) else ""


# ---------------------------------------------------------------- import and sync

def _synced_values(item: Offer) -> dict:
    return {"kind": item.kind, "type": item.type, "fields_json": item.fields_json,
            "min_quantity": item.min_quantity, "max_quantity": item.max_quantity,
            "provider_rate": provider_micro(item.rate), **item.flags}


def _show(column, value):
    if value is None:
        return "-"
    if column in ("rate", "provider_rate"):
        return format_amount(value)
    if column == "markup_bp":
        return f"{format_percent(value)}%"
    if column in FLAGS or column == "active":
        return "yes" if value else "no"
    return str(value)


def _differences(row, values) -> dict:
    return {column: value for column, value in values.items() if getattr(row, column) != value}


def _describe(row, changed) -> list:
    labels = {"min_quantity": "min", "max_quantity": "max", "provider_rate": "provider rate",
              "fields_json": "fields", "refill_days": "refill days", "markup_bp": "markup"}
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
            steps.append(Step("skip", None, provider_service, name, None, {}, [], reason))
            continue
        try:
            rate = marked_up(item.rate, markup_bp)
        except Unusable as why:
            steps.append(Step("skip", None, provider_service, item.name, None, {}, [], str(why)))
            continue
        values = {"name": item.name, "category": item.category, "rate": rate,
                  "markup_bp": markup_bp, **_synced_values(item)}
        row = existing.get(provider_service)
        if row is None:
            steps.append(Step("add", None, provider_service, item.name, rate,
                              {**values, "provider_service": provider_service}, [], None))
        else:
            changed = _differences(row, values)
            steps.append(Step("update" if changed else "unchanged", row.id, provider_service,
                              item.name, rate, changed, _describe(row, changed),
                              None if row.active else "disabled here"))
    return steps


def plan_sync(reply, linked) -> list:
    """Steps for `provider sync` over the local rows linked to this provider.

    Each keeps its name and category and follows the provider's limits, flags and type. Its
    rate: with a markup, provider rate × (1 + markup) again; linked by hand (no markup), it
    stays unless it is below the provider's rate, and is then raised to it. A service gone
    upstream, or one the provider now lists in a form Serva cannot carry, is deactivated."""
    if not entries(reply) and any(row.active for row in linked):
        # A panel that lists nothing is far more often broken (maintenance, a key without
        # access) than really empty; taking it at its word would switch off the whole catalog.
        raise CatalogError("the provider lists no services; nothing was changed (disable the "
                           "services by hand if it really sells nothing now)")
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
            steps.append(Step("deactivate" if row.active else "unchanged", row.id,
                              row.provider_service, row.name, row.rate,
                              {"active": False} if row.active else {}, [], reason))
            continue
        changed = _differences(row, {**_synced_values(item), "rate": rate})
        changes = _describe(row, changed)
        if row.markup_bp is None and "rate" in changed:
            changes[list(changed).index("rate")] += " (raised to the provider's rate)"
        steps.append(Step("update" if changed else "unchanged", row.id, row.provider_service,
                          row.name, rate, changed, changes, None))
    return steps


def plan_link(row, reply, provider_service: str) -> Step:
    """Linking a local service by hand (no markup): the provider must list the service in a
    form Serva carries, of the same kind, at a rate not above the local one. The service then
    follows the provider's limits and flags, as sync keeps it doing."""
    found = None
    for entry in listed(reply):
        if entry.provider_service == provider_service:
            found = entry
            break
    if found is None:
        raise ServiceError(f"the provider lists no service {provider_service}")
    if found.offer is None:
        raise ServiceError(f"provider service {provider_service}: {found.reason}")
    item = found.offer
    if item.kind != row.kind:
        raise ServiceError(f"service {row.id} is of kind {row.kind}; provider service "
                           f"{provider_service} ({item.type}) needs kind {item.kind}")
    floor = provider_micro(item.rate)
    if row.rate < floor:
        raise ServiceError(f"the rate of service {row.id} ({format_amount(row.rate)}) is below the "
                           f"provider's ({format_amount(floor)}); raise it first "
                           f"(serva service update {row.id} --rate …)")
    synced = _differences(row, _synced_values(item))
    return Step("update", row.id, provider_service, row.name, row.rate,
                {**synced, "provider_service": provider_service, "markup_bp": None},
                _describe(row, synced), None)


# ---------------------------------------------------------------- in the database

def linked_services(conn, provider_id: int) -> list:
    return conn.execute(select(services_table).where(services_table.c.provider_id == provider_id)
                        .order_by(services_table.c.id)).all()


def _write(conn, provider_id, steps) -> list:
    """Apply the steps (every write bumps the catalog version); the steps with local ids."""
    done = []
    for step in steps:
        if step.action == "add":
            new_id = services_repo.add(conn, provider_id=provider_id, **step.values)
            step = replace(step, local_id=new_id)
        elif step.values:
            services_repo.update_service(conn, step.local_id, **step.values)
        done.append(step)
    return done


def preview_import(conn, provider_id: int, reply, markup_bp: int, categories=()) -> list:
    """What `import_services` would do, written nowhere (the console's preview)."""
    existing = {}
    for row in linked_services(conn, provider_id):
        existing.setdefault(row.provider_service, row)
    return plan_import(reply, markup_bp, categories, existing)


def import_services(conn, provider_id: int, reply, markup_bp: int, categories=()) -> list:
    """`provider import`, inside the caller's write transaction."""
    return _write(conn, provider_id, preview_import(conn, provider_id, reply, markup_bp, categories))


def sync_services(conn, provider_id: int, reply) -> list:
    """`provider sync`, inside the caller's write transaction."""
    return _write(conn, provider_id, plan_sync(reply, linked_services(conn, provider_id)))


def _service(conn, service_id):
    row = conn.execute(select(services_table).where(services_table.c.id == service_id)).first()
    if row is None:
        raise ServiceError(f"no service with id {service_id}")
    return row


def link(conn, service_id: int, provider_id: int, reply, provider_service: str) -> Step:
    """`service link ID --provider NAME --provider-service PID`."""
    row = _service(conn, service_id)
    taken = conn.execute(select(services_table.c.id).where(
        services_table.c.provider_id == provider_id,
        services_table.c.provider_service == provider_service,
        services_table.c.id != service_id)).scalar()
    if taken is not None:
        raise ServiceError(f"provider service {provider_service} is linked to service {taken} "
                           f"already")
    step = plan_link(row, reply, provider_service)
    step = replace(step, values={**step.values, "provider_id": provider_id})
    return _write(conn, provider_id, [step])[0]


def unlink(conn, service_id: int):
    """`service link ID --manual`: the operator fulfils it; the row as it was before."""
    row = _service(conn, service_id)
    services_repo.update_service(conn, service_id, provider_id=None, provider_service=None,
                                 provider_rate=None, markup_bp=None)
    return row
