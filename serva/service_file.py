"""A catalog file of the `services` action's shape (what `serva service import` reads): each
entry becomes the service with the entry's id, its kind inferred when the entry does not say,
added or updated in the caller's transaction, so a file is taken whole or not at all."""
import json

from sqlalchemy import select

from . import services as services_repo
from .money import parse_amount
from .schema import services


def refill_days(entry) -> int:
    """`refill_days` when the entry has it, else the `services` shape's boolean `refill`."""
    if entry.get("refill_days") is not None:
        return int(entry["refill_days"])
    return services_repo.DEFAULT_REFILL_DAYS if entry.get("refill") is True else 0


def service_values(entry) -> dict:
    """One entry -> the values of its service, `id` included (ServiceError when unusable)."""
    if not isinstance(entry, dict):
        raise services_repo.ServiceError("each entry must be an object")
    fields = services_repo.validate_fields(entry.get("fields") or [])
    kind = entry.get("kind")
    type_ = str(entry.get("type") or "Default")
    if kind is None:
        if "package" in type_.lower():
            kind = "package"
        elif any(spec.get("lines") for spec in fields):
            kind = "lines"
        elif "comments" in type_.lower():
            kind = "lines"
            fields.append(dict(services_repo.COMMENTS_FIELD))
        elif fields:
            kind = "fields"
        else:
            kind = "default"
    try:
        return {"id": int(entry["service"]), "name": str(entry["name"]),
                "category": str(entry.get("category") or ""), "type": type_, "kind": kind,
                "rate": parse_amount(str(entry["rate"])),
                "min_quantity": int(entry.get("min") or 1), "max_quantity": int(entry.get("max") or 1),
                "fields_json": json.dumps(fields), "refill_days": refill_days(entry),
                "cancel": bool(entry.get("cancel", False)),
                "dripfeed": bool(entry.get("dripfeed", False)), "active": True}
    except KeyError as error:
        raise services_repo.ServiceError(f"entry {entry.get('service')!r}: missing {error}") from None
    except (ValueError, TypeError) as error:
        raise services_repo.ServiceError(f"entry {entry.get('service')!r}: {error}") from None


def import_entries(conn, entries) -> tuple[int, int]:
    """Add or update the service of each entry: (added, updated)."""
    added = updated = 0
    for entry in entries:
        values = service_values(entry)
        service_id = values.pop("id")
        if conn.execute(select(services.c.id).where(services.c.id == service_id)).first():
            services_repo.update_service(conn, service_id, **values)
            updated += 1
        else:
            services_repo.add(conn, id=service_id, **values)
            added += 1
    return added, updated
