"""`serva service …`: the service catalog, by hand, from a file, or linked to a provider."""
import json

import click
from flask.cli import AppGroup

from .. import db, provider_catalog, service_file
from .. import providers as providers_repo, services as services_repo
from ..money import format_amount, format_percent
from .common import amount_arg, echo_lines, fail, record, require_schema
from .provider import catalog_change, provider_catalog_reply, provider_named, say

group = AppGroup("service", help="The service catalog.", callback=require_schema)


def field_specs(field_options, lines_field):
    specs = []
    for text in field_options:
        name, _, rest = text.partition(":")
        label, _, flag = rest.partition(":")
        if flag not in ("", "optional"):
            fail(f"--field takes NAME[:LABEL[:optional]], not {text!r}")
        specs.append({"name": name, "label": label or name, "required": flag != "optional"})
    if lines_field:
        specs.append({"name": lines_field, "label": f"{lines_field} (one per line)",
                      "required": True, "lines": True})
    return specs


def service_options(required):
    def decorate(command):
        for option in reversed([
            click.option("--name", required=required),
            click.option("--category"),
            click.option("--type", "type_", help="Display type (default from --kind)."),
            click.option("--kind", type=click.Choice(["default", "package", "lines", "fields"]),
                         help="default: link+quantity; package: fixed price; lines: quantity from "
                              "input lines; fields: manual fields, no link."),
            click.option("--rate", required=required, help="Price per 1000 (a package: its price)."),
            click.option("--min", "min_quantity", type=int),
            click.option("--max", "max_quantity", type=int),
            click.option("--field", "field_options", multiple=True,
                         help="Manual field NAME[:LABEL[:optional]] (repeatable)."),
            click.option("--lines-field", help="The bulk input counted by lines (e.g. comments)."),
            click.option("--refill-days", type=click.IntRange(0, services_repo.MAX_REFILL_DAYS),
                         help="Refill window in days after completion (0: no refill)."),
            click.option("--cancel/--no-cancel", default=None, help="Partners may ask to cancel."),
            click.option("--dripfeed/--no-dripfeed", default=None,
                         help="Orders may be split into runs (runs, interval)."),
            click.option("--fixed-quantity", type=click.IntRange(min=0),
                         help="Every order is this quantity; partners need not send one "
                              "(0: the partner chooses)."),
        ]):
            command = option(command)
        return command
    return decorate


def service_values(name, category, type_, kind, rate, min_quantity, max_quantity,
                   field_options, lines_field, refill_days, cancel, dripfeed, fixed_quantity):
    values = {"name": name, "category": category, "type": type_, "kind": kind,
              "rate": amount_arg(rate, positive=False) if rate is not None else None,
              "min_quantity": min_quantity, "max_quantity": max_quantity,
              "refill_days": refill_days, "cancel": cancel, "dripfeed": dripfeed}
    if field_options or lines_field:
        values["fields_json"] = json.dumps(field_specs(field_options, lines_field))
    values = {k: v for k, v in values.items() if v is not None}
    if fixed_quantity is not None:
        values["fixed_quantity"] = fixed_quantity or None
    return values


@group.command("add")
@click.option("--id", "service_id", type=int, help="API-facing id (default: next free).")
@service_options(required=True)
def service_add(service_id, **options):
    """Add a service to the catalog."""
    values = service_values(**options)
    if service_id is not None:
        values["id"] = service_id
    try:
        with db.write() as conn:
            new_id = services_repo.add(conn, **values)
            record(conn, "service.add", new_id, after=values)
    except (services_repo.ServiceError, ValueError) as error:
        fail(str(error))
    click.echo(f"service {new_id} added")


@group.command("update")
@click.argument("service_id", type=int)
@service_options(required=False)
def service_update(service_id, **options):
    """Change a service (only the options given). A rate set here drops the service's markup:
    `provider sync` then keeps it, raising it only if the provider's rate passes it."""
    values = service_values(**options)
    if "rate" in values:
        values["markup_bp"] = None
    try:
        with db.write() as conn:
            before = services_repo.get(conn, service_id)
            services_repo.update_service(conn, service_id, **values)
            record(conn, "service.update", service_id,
                   {k: getattr(before, k) for k in values}, values)
    except services_repo.ServiceError as error:
        fail(str(error))
    click.echo(f"service {service_id} updated")


def set_active(service_id, active):
    try:
        with db.write() as conn:
            services_repo.update_service(conn, service_id, active=active)
            record(conn, "service.enable" if active else "service.disable", service_id)
    except services_repo.ServiceError as error:
        fail(str(error))
    click.echo(f"service {service_id} {'enabled' if active else 'disabled'}")


@group.command("disable")
@click.argument("service_id", type=int)
def service_disable(service_id):
    """Take a service out of the catalog (existing orders keep it)."""
    set_active(service_id, False)


@group.command("enable")
@click.argument("service_id", type=int)
def service_enable(service_id):
    """Put a disabled service back."""
    set_active(service_id, True)


def service_line(row, provider_names) -> str:
    fields = ",".join(spec["name"] for spec in services_repo.field_specs(row))
    quantity = (f"fixed {row.fixed_quantity}" if row.fixed_quantity is not None
                else f"{row.min_quantity}-{row.max_quantity}")
    options = [f"refill {row.refill_days}d" if row.refill_days else "",
               "cancel" if row.cancel else "", "dripfeed" if row.dripfeed else "",
               f"fields={fields}" if fields else ""]
    if row.provider_id is not None:
        options.append(f"provider={provider_names.get(row.provider_id, row.provider_id)}:"
                       f"{row.provider_service} at {format_amount(row.provider_rate or 0)}"
                       + (f" +{format_percent(row.markup_bp)}%" if row.markup_bp is not None
                          else ""))
    return "\t".join([str(row.id), "active" if row.active else "disabled", row.kind,
                      format_amount(row.rate), quantity, row.category, row.name,
                      *filter(None, options)])


@group.command("list")
def service_list():
    """Every service, active or not, with its list rate."""
    with db.read() as conn:
        rows = services_repo.list_all(conn)
        names = {provider.id: provider.name for provider in providers_repo.list_all(conn)}
    echo_lines(service_line(row, names) for row in rows)


@group.command("link")
@click.argument("service_id", type=int)
@click.option("--provider", "provider_name", help="The provider that fulfils it.")
@click.option("--provider-service", help="The provider's service id.")
@click.option("--manual", is_flag=True, help="Fulfilled by the operator (no provider).")
def service_link(service_id, provider_name, provider_service, manual):
    """Fulfil a service through a provider's service (same kind, its rate at least the
    provider's; it then follows the provider's limits and flags), or by hand with --manual."""
    if manual == bool(provider_name or provider_service):
        fail("give --provider NAME --provider-service PID, or --manual")
    if manual:
        try:
            with db.write() as conn:
                before = provider_catalog.unlink(conn, service_id)
                was = before.provider_id and providers_repo.get_by_id(conn, before.provider_id)
                record(conn, "service.manual", service_id,
                       {"provider_id": before.provider_id,
                        "provider_service": before.provider_service}, {"provider_id": None})
        except services_repo.ServiceError as error:
            fail(str(error))
        click.echo(f"service {service_id} is fulfilled by hand"
                   + (f" (was provider {was.name} service {before.provider_service})" if was else ""))
        return
    if not (provider_name and provider_service and provider_service.strip()):
        fail("give both --provider NAME and --provider-service PID")
    provider = provider_named(provider_name)
    reply = provider_catalog_reply(provider)
    step = catalog_change(provider, provider_catalog.link, service_id, provider.id, reply,
                          provider_service.strip(), record_as="service.link")
    say(provider, f"service {service_id} linked to provider {provider.name} "
                  f"service {step.provider_service}")
    for change in step.changes:
        say(provider, step.local_id, step.provider_service, step.name, change)


@group.command("import")
@click.argument("path", type=click.File("r"))
def service_import(path):
    """Add or update services from a JSON file of the `services` action's shape."""
    try:
        entries = json.load(path)
    except ValueError as error:
        fail(f"not JSON: {error}")
    if not isinstance(entries, list):
        fail("the file must hold a JSON list of services")
    try:
        with db.write() as conn:  # all or nothing
            added, updated = service_file.import_entries(conn, entries)
            record(conn, "service.import", path.name, after={"added": added, "updated": updated})
    except services_repo.ServiceError as error:
        fail(str(error))
    click.echo(f"imported {added + updated} services ({added} added, {updated} updated)")
