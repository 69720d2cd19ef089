"""The service catalog and each account's effective rate (per 1000 units).

Effective rate: a per-account custom rate when the operator set one, otherwise the list rate
less the account's discount (rounded half-up once, to the micro-unit)."""
import json
import uuid

from sqlalchemy import and_, bindparam, insert, select, text, update

from .db import now, upsert
from .ids import MAX_ID
from .money import discounted, format_amount
from .schema import SERVICE_KINDS, serva_meta, service_rates, services

# A serva_meta row replaced by every change of the services table made here, in the changing
# transaction: the `services` action keeps its rendered catalog until this value changes.
CATALOG_VERSION_KEY = "catalog_version"

# The bulk input of the ecosystem's "Custom Comments" services (`comments`, one per line).
COMMENTS_FIELD = {"name": "comments", "label": "Comments (one per line)", "required": True,
                  "lines": True}

# `service import` and the old boolean `refill` flag: a refill service without a window of its
# own gets this many days (the common refill guarantee of the ecosystem's services).
DEFAULT_REFILL_DAYS = 30
MAX_REFILL_DAYS = 3650

DEFAULT_TYPE = {"default": "Default", "package": "Package", "lines": "Custom Comments",
                "fields": "Manual"}


class ServiceError(ValueError):
    """A service definition the catalog cannot hold."""


def effective_rate(list_rate: int, custom_rate: int | None, discount_bp: int) -> int:
    if custom_rate is not None:
        return custom_rate
    return discounted(list_rate, discount_bp)


CATALOG_COLUMNS = (services.c.id, services.c.name, services.c.category, services.c.type,
            services.c.kind, services.c.rate, services.c.min_quantity, services.c.max_quantity,
            services.c.fields_json, services.c.refill_days, services.c.cancel,
            services.c.dripfeed, services.c.fixed_quantity, services.c.provider_id)

_CATALOG = (select(*CATALOG_COLUMNS, service_rates.c.rate.label("custom_rate"))
            .select_from(services.outerjoin(service_rates, and_(
                service_rates.c.service_id == services.c.id,
                service_rates.c.account_id == bindparam("account_id"))))
            .where(services.c.active.is_(True))
            .order_by(services.c.id))

_ONE_FOR_ACCOUNT = _CATALOG.where(services.c.id == bindparam("service_id"))


def catalog(conn, account_id: int):
    """Active services with the account's custom rate (or None) in one query."""
    return conn.execute(_CATALOG, {"account_id": account_id}).all()


def one_for_account(conn, account_id: int, service_id: int):
    """One active service with the account's custom rate (or None), or None when the service
    does not exist or is not active."""
    return conn.execute(_ONE_FOR_ACCOUNT, {"account_id": account_id,
                                           "service_id": service_id}).first()


def field_specs(row) -> list:
    return json.loads(row.fields_json or "[]")


def entry(row, rate: int, service_id) -> dict:
    """One service as the `services` action shows it; `service_id` already presented."""
    return {
        "service": service_id,
        "name": row.name,
        "category": row.category,
        "type": row.type,
        "rate": format_amount(rate),
        "min": row.min_quantity,
        "max": row.max_quantity,
        "fields": field_specs(row),
        "refill": row.refill_days > 0,
        "cancel": bool(row.cancel),
        "dripfeed": bool(row.dripfeed),
    }


def validate_fields(specs) -> list:
    """Manual field definitions: [{"name", "label", "required", "lines"?}]."""
    if not isinstance(specs, list):
        raise ServiceError("fields must be a list")
    clean, seen = [], set()
    for spec in specs:
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
            raise ServiceError(f"each field needs a name: {spec!r}")
        if spec["name"] in seen:
            raise ServiceError(f"field {spec['name']!r} is listed twice")
        seen.add(spec["name"])
        entry = {"name": spec["name"], "label": str(spec.get("label") or spec["name"]),
                 "required": bool(spec.get("required", True))}
        if spec.get("lines"):
            entry["lines"] = True
        clean.append(entry)
    return clean


def check_definition(values: dict) -> dict:
    """Validate a full or partial service definition before it is written."""
    kind = values.get("kind")
    if kind is not None and kind not in SERVICE_KINDS:
        raise ServiceError(f"kind must be one of {', '.join(SERVICE_KINDS)}")
    if "fields_json" in values:
        specs = validate_fields(json.loads(values["fields_json"]))
        if kind == "lines" and sum(1 for s in specs if s.get("lines")) != 1:
            raise ServiceError("a 'lines' service needs exactly one field marked lines "
                               "(e.g. comments)")
        if kind == "fields" and not specs:
            raise ServiceError("a 'fields' service needs at least one field")
        values["fields_json"] = json.dumps(specs)
    if "name" in values and not str(values["name"] or "").strip():
        raise ServiceError("a service needs a name")
    if values.get("rate") is not None and values["rate"] < 0:
        raise ServiceError("a rate cannot be negative")
    days = values.get("refill_days")
    if days is not None and (isinstance(days, bool) or not 0 <= days <= MAX_REFILL_DAYS):
        raise ServiceError(f"refill days must be between 0 (no refill) and {MAX_REFILL_DAYS}")
    fixed = values.get("fixed_quantity")
    if fixed is not None:
        if isinstance(fixed, bool) or not 1 <= fixed <= MAX_ID:
            raise ServiceError("a fixed quantity must be at least 1")
        if kind in ("package", "lines"):
            raise ServiceError(f"a '{kind}' service cannot have a fixed quantity "
                               f"(a package is one unit; lines count the input)")
        values["min_quantity"] = values["max_quantity"] = fixed
    if values.get("provider_rate") is not None and values.get("rate") is not None \
            and values["rate"] < values["provider_rate"]:
        raise ServiceError(f"a rate of {format_amount(values['rate'])} is below what the provider "
                           f"charges ({format_amount(values['provider_rate'])})")
    if kind == "package":
        values["min_quantity"] = values["max_quantity"] = 1
    low, high = values.get("min_quantity"), values.get("max_quantity")
    if low is not None and low < 1 or (low is not None and high is not None and high < low):
        raise ServiceError("quantities need 1 <= min <= max")
    return values


def add(conn, **values) -> int:
    values.setdefault("kind", "default")
    values.setdefault("type", DEFAULT_TYPE[values["kind"]] if values["kind"] in DEFAULT_TYPE
                      else "Default")
    values.setdefault("fields_json", "[]")
    values.setdefault("min_quantity", 1)  # the column defaults, so check_definition sees them
    values.setdefault("max_quantity", 1)
    values = check_definition(values)
    service_id = values.get("id")
    if service_id is not None:
        if isinstance(service_id, bool) or not 0 < service_id <= MAX_ID:
            raise ServiceError(f"a service id must be between 1 and {MAX_ID}")
        if conn.execute(select(services.c.id).where(services.c.id == service_id)).first():
            raise ServiceError(f"a service with id {service_id} already exists")
    new_id = conn.execute(insert(services).values(created_at=now(), **values)).inserted_primary_key[0]
    if "id" in values and conn.dialect.name == "postgresql":
        # An explicit id does not advance PostgreSQL's sequence: move it past the highest id,
        # or the next service added without an id would collide with this one.
        conn.execute(text("SELECT setval(pg_get_serial_sequence('services', 'id'), "
                          "(SELECT max(id) FROM services))"))
    bump_catalog_version(conn)
    return new_id


def update_service(conn, service_id: int, **values) -> None:
    current = conn.execute(select(services).where(services.c.id == service_id)).first()
    if current is None:
        raise ServiceError(f"no service with id {service_id}")
    merged = {"kind": current.kind, "fields_json": current.fields_json,
              "min_quantity": current.min_quantity, "max_quantity": current.max_quantity,
              "fixed_quantity": current.fixed_quantity, **values}
    if "rate" in values or "provider_rate" in values:  # a price is never below the provider's
        merged = {"rate": current.rate, "provider_rate": current.provider_rate, **merged}
    conn.execute(update(services).where(services.c.id == service_id)
                 .values(**check_definition(merged)))
    bump_catalog_version(conn)


def bump_catalog_version(conn) -> None:
    """Mark the catalog as changed; call it in the transaction of any write to `services`."""
    stmt = upsert(conn.dialect.name, serva_meta).values(key=CATALOG_VERSION_KEY, value=uuid.uuid4().hex)
    conn.execute(stmt.on_conflict_do_update(index_elements=["key"],
                                            set_={"value": stmt.excluded.value}))


def list_all(conn):
    return conn.execute(select(services).order_by(services.c.id)).all()


def get(conn, service_id: int):
    return conn.execute(select(services).where(services.c.id == service_id)).first()
