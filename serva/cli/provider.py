"""`serva provider …`: the upstream providers orders are handed over to, and their catalogs."""
from collections import Counter

import click
from flask import current_app
from flask.cli import AppGroup

from .. import db, provider_catalog
from ..fulfilment import provider_client
from .. import providers as providers_repo, services as services_repo
from ..money import BASIS_POINTS, AmountError, format_amount, parse_percent
from .common import echo_lines, fail, record, require_schema, show_time

group = AppGroup("provider", help="Upstream providers orders are handed over to.",
                 callback=require_schema)

MAX_MARKUP_BP = 1000 * BASIS_POINTS // 100  # 1000 %


def provider_change(action, change, name, *args):
    try:
        with db.write() as conn:
            result = change(conn, name, *args)
            record(conn, action, name.strip(), after={"result": result} if result else None)
            return result
    except providers_repo.ProviderError as error:
        fail(str(error))


def provider_named(name):
    with db.read() as conn:
        try:
            return providers_repo.require(conn, name)
        except providers_repo.ProviderError as error:
            fail(str(error))


def say(provider, *columns):
    """One tab-separated line of output about a provider; its key masked if it shows up."""
    click.echo(providers_repo.redact("\t".join(str(c) for c in columns), provider.api_key))


def provider_catalog_reply(provider):
    """The provider's `services` reply (its numbers read exactly: Decimal, never float)."""
    try:
        return provider_client.call(provider.url, provider.api_key, "services")
    except provider_client.ProviderError as error:
        fail(providers_repo.redact(f"provider {provider.name}: {error}", provider.api_key))


def catalog_change(provider, change, *args, record_as):
    """Plan and write in one transaction: all of it, or (on an error) none of it, with its
    activity entry (the number of steps of each kind)."""
    try:
        with db.write() as conn:
            steps = change(conn, *args)
            listed = steps if isinstance(steps, list) else [steps]
            record(conn, record_as, provider.name,
                   after=dict(Counter(step.action for step in listed)))
            return steps
    except (provider_catalog.CatalogError, services_repo.ServiceError) as error:
        fail(providers_repo.redact(str(error), provider.api_key))


@group.command("add")
@click.argument("name")
@click.option("--url", required=True, help="The provider's API endpoint (or sim:// for the simulator).")
@click.option("--key", required=True, help="Your API key at the provider (stored; shown masked).")
def provider_add(name, url, key):
    """Add an upstream provider."""
    provider_change("provider.add", lambda conn, name: providers_repo.add(conn, name, url, key),
                    name)
    click.echo(f"provider {name.strip()} added (key {providers_repo.mask_key(key.strip())})")


def provider_line(row, counts, currency) -> str:
    waiting, in_flight, unknown = counts.get(row.id, (0, 0, 0))
    balance = ("balance ?" if row.balance is None else
               f"balance {format_amount(row.balance)} {row.balance_currency or currency} "
               f"at {show_time(row.balance_at)}")
    error = (f"last error {row.last_error} at {show_time(row.last_error_at)}"
             if row.last_error else "no error")
    return (f"{row.name}\t{'enabled' if row.enabled else 'disabled'}\t{row.url}\t"
            f"key {providers_repo.mask_key(row.api_key)}\t{balance}\twaiting {waiting}\t"
            f"in flight {in_flight}\tunknown {unknown}\t{error}")


@group.command("list")
def provider_list():
    """Every provider: state, balance it reports, orders waiting / in flight / unknown, last error."""
    currency = current_app.config["CURRENCY"]
    with db.read() as conn:
        rows = providers_repo.list_all(conn)
        counts = providers_repo.counts(conn)
    echo_lines(provider_line(row, counts, currency) for row in rows)


@group.command("disable")
@click.argument("name")
def provider_disable(name):
    """Stop handing orders over to a provider (they wait, and are retried)."""
    provider_change("provider.disable", providers_repo.set_enabled, name, False)
    click.echo(f"provider {name} disabled")


@group.command("enable")
@click.argument("name")
def provider_enable(name):
    """Hand orders over to a provider again."""
    provider_change("provider.enable", providers_repo.set_enabled, name, True)
    click.echo(f"provider {name} enabled")


@group.command("retry")
@click.argument("name")
def provider_retry(name):
    """Make the provider's waiting hand-overs due now (e.g. after topping it up)."""
    count = provider_change("provider.retry", providers_repo.retry, name)
    click.echo(f"provider {name}: {count} waiting hand-overs due now")


@group.command("import")
@click.argument("name")
@click.option("--markup", required=True,
              help="Percent over the provider's rate (0-1000, two decimals; e.g. 20 or 12.5).")
@click.option("--category", "categories", multiple=True,
              help="Only services of this category (repeatable; case-insensitive).")
def provider_import(name, markup, categories):
    """Add the provider's services (or update those imported before) at its rate plus the
    markup; one line each: local id, provider service id, name, rate."""
    try:
        markup_bp = parse_percent(markup, maximum_bp=MAX_MARKUP_BP)
    except AmountError as error:
        fail(str(error))
    provider = provider_named(name)
    reply = provider_catalog_reply(provider)
    steps = catalog_change(provider, provider_catalog.import_services, provider.id, reply,
                           markup_bp, categories, record_as="provider.import")
    done = {"add": "added", "update": "updated", "unchanged": "unchanged"}
    for step in steps:
        if step.action == "skip":
            say(provider, "skipped", step.provider_service or "-", step.name or "-", step.reason)
        else:
            say(provider, step.local_id, step.provider_service, step.name,
                format_amount(step.rate),
                done[step.action] + (": " + ", ".join(step.changes) if step.changes else "")
                + (f" ({step.reason}: serva service enable {step.local_id})" if step.reason else ""))
    count = Counter(step.action for step in steps)
    click.echo(f"provider {provider.name}: {count['add']} added, {count['update']} updated, "
               f"{count['unchanged']} unchanged, {count['skip']} skipped")


@group.command("sync")
@click.argument("name")
def provider_sync(name):
    """Re-read the provider's catalog: rates (markup kept; never below the provider's),
    limits and flags follow it, services gone upstream are deactivated; prints each change."""
    provider = provider_named(name)
    reply = provider_catalog_reply(provider)
    steps = catalog_change(provider, provider_catalog.sync_services, provider.id, reply,
                           record_as="provider.sync")
    for step in steps:
        if step.action == "deactivate":
            say(provider, step.local_id, step.provider_service, step.name,
                f"deactivated: {step.reason}")
        for change in step.changes if step.action == "update" else ():
            say(provider, step.local_id, step.provider_service, step.name, change)
    count = Counter(step.action for step in steps)
    click.echo(f"provider {provider.name}: {len(steps)} linked services, {count['update']} "
               f"changed, {count['deactivate']} deactivated, {count['unchanged']} unchanged")
