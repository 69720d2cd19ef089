"""The `services` action's response, rendered once per catalog version, discount and id format.

The catalog is the same for every partner except for the rate: the list rate less the
account's discount, or the account's custom rate for a few services (and the service id is a
string or a number, by the account's id format). Rendering 500 services for every request cost
~7 ms of Python, so each service's JSON is rendered once per (catalog version, discount, id
format) and kept; an account's custom rates re-render only their own entries.
Per request that leaves the version and the account's custom rates, read in the key lookup's
statement (`lookup`), and a join of ready-made strings.

The catalog version is a `serva_meta` row that every change to the services table through
`serva.services` (add, update_service, so the CLI, the import and the demo) replaces inside
the changing transaction. Every process reads it on every request, so a change is visible to
all workers on their next request. The version is read before the services, so a cache entry
is never labelled with a version newer than its rows.
"""
import json
import threading

from flask import current_app
from sqlalchemy import bindparam, func, select

from . import db, keys
from .ids import format_service_id, numeric_ids
from .schema import accounts, serva_meta, service_rates, services as services_table
from .services import CATALOG_COLUMNS, CATALOG_VERSION_KEY, effective_rate, entry as services_entry

MAX_DISCOUNTS = 64  # distinct (discount, id format) pairs kept rendered (each ~100 KB for 500 services)
_EXTENSION = "serva.catalog"

_VERSION = select(serva_meta.c.value).where(serva_meta.c.key == CATALOG_VERSION_KEY)
_CUSTOM_RATES = (select(service_rates.c.service_id, service_rates.c.rate)
                 .where(service_rates.c.account_id == bindparam("account_id")))
_ACTIVE = (select(*CATALOG_COLUMNS).where(services_table.c.active.is_(True))
           .order_by(services_table.c.id))
# The account's custom rates as one JSON value of [service id, rate] pairs, so that they fit
# in the key lookup's one row.
_CUSTOM_RATES_JSON = (select(db.json_rows(service_rates.c.service_id, service_rates.c.rate))
                      .where(service_rates.c.account_id == accounts.c.id).scalar_subquery())
_LOOKUP = db.Lookup(keys.resolve_select(_VERSION.scalar_subquery().label("catalog_version"),
                                        _CUSTOM_RATES_JSON.label("custom_rates_json")))


def lookup(params):
    """What `services` reads with the key: the catalog version and the account's custom rates."""
    return _LOOKUP, {}


def service_entry(row, rate: int, numeric: bool) -> dict:
    """One service as the `services` action shows it, at `rate` (the caller's effective rate),
    its id in the caller's format. The dashboard and the API page show the same entries."""
    return services_entry(row, rate, format_service_id(row.id, numeric))


def render_entry(row, rate: int, numeric: bool) -> str:
    return json.dumps(service_entry(row, rate, numeric), separators=(",", ":"))


def public_entries() -> list:
    """The catalog without a caller (the public API page): every active service at its list
    rate, ids in the prefixed form."""
    with db.read() as conn:
        rows = conn.execute(_ACTIVE).all()
    return [service_entry(row, row.rate, numeric=False) for row in rows]


class _Rendered:
    """The active services of one catalog version, and their JSON per discount."""

    def __init__(self, version, rows):
        self.version = version
        self.rows = rows
        self.position = {row.id: i for i, row in enumerate(rows)}
        self.by_discount = {}  # (discount_bp, numeric ids) -> (entries, body)
        self.lock = threading.Lock()

    def for_discount(self, discount_bp: int, numeric: bool):
        rendered = self.by_discount.get((discount_bp, numeric))
        if rendered is None:
            entries = [render_entry(row, effective_rate(row.rate, None, discount_bp), numeric)
                       for row in self.rows]
            rendered = (entries, ("[" + ",".join(entries) + "]").encode())
            with self.lock:
                if len(self.by_discount) >= MAX_DISCOUNTS:
                    self.by_discount.clear()
                self.by_discount[discount_bp, numeric] = rendered
        return rendered


def response_body(account) -> bytes:
    """The `services` JSON for this account: every active service at its effective rate."""
    extensions = current_app.extensions
    numeric = numeric_ids(account)
    if hasattr(account, "catalog_version"):  # read with the key (lookup)
        version, custom = account.catalog_version, account.custom_rates_json
        rendered = extensions.get(_EXTENSION)
        if rendered is None or rendered.version != version:
            with db.read() as conn:
                rendered = _Rendered(version, conn.execute(_ACTIVE).all())
            extensions[_EXTENSION] = rendered
    else:
        with db.read() as conn:
            version = conn.execute(_VERSION).scalar()
            custom = conn.execute(_CUSTOM_RATES, {"account_id": account.account_id}).all()
            rendered = extensions.get(_EXTENSION)
            if rendered is None or rendered.version != version:
                rendered = _Rendered(version, conn.execute(_ACTIVE).all())
                extensions[_EXTENSION] = rendered
    entries, body = rendered.for_discount(account.discount_bp, numeric)
    if custom:
        position = rendered.position
        mine = [(position[sid], rate) for sid, rate in custom if sid in position]
        if mine:
            entries = list(entries)
            for i, rate in mine:
                entries[i] = render_entry(rendered.rows[i], rate, numeric)
            body = ("[" + ",".join(entries) + "]").encode()
    return body
