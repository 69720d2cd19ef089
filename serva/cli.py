"""The operator CLI: `flask --app serva …` or the `serva` console script.

Every command is scriptable: results on stdout, a one-line `error: …` on stderr and exit
status 2 for arguments that cannot be applied; `audit` exits 1 when an invariant is broken."""
import json
import sys
from collections import Counter
from datetime import datetime, timezone

import click
from flask import current_app
from flask.cli import AppGroup, FlaskGroup, with_appcontext
from sqlalchemy import and_, delete, select

from . import accounts as accounts_repo
from . import audit as audit_checks
from . import coupons as coupons_repo
from . import db, fulfilment, keys, ledger, orders as orders_repo, provider_catalog
from . import providers as providers_repo, refills as refills_repo, services as services_repo
from . import sessions
from .fulfilment import provider_client
from .ids import id_format_name, numeric_ids, parse_order, parse_refill, present_order, present_refill
from .money import (BASIS_POINTS, AmountError, format_amount, format_percent, parse_amount,
                    parse_percent)
from .schema import (accounts, dispatches, idempotency_keys, ledger as ledger_table,
                     login_failures, orders, providers, purchase_guards, services)


def fail(message: str):
    click.echo(f"error: {message}", err=True)
    raise click.exceptions.Exit(2)


@with_appcontext
def require_schema():
    """Commands that use the data refuse a database behind or ahead of this Serva's schema
    (the app does not check it under the CLI, so that `init-db` and `db` can open one)."""
    message = db.schema_problem(db.get_engine())
    if message:
        fail(message)


account_cli = AppGroup("account", help="Partner accounts: access, bans, money and pricing.",
                       callback=require_schema)
key_cli = AppGroup("key", help="API keys (one active per account).", callback=require_schema)
service_cli = AppGroup("service", help="The service catalog.", callback=require_schema)
coupon_cli = AppGroup("coupon", help="Coupons for the add action.", callback=require_schema)
order_cli = AppGroup("order", help="Orders: list, inspect, move through statuses.",
                     callback=require_schema)
refill_cli = AppGroup("refill", help="Partners' refill requests: list and answer them.",
                      callback=require_schema)
provider_cli = AppGroup("provider", help="Upstream providers orders are handed over to.",
                        callback=require_schema)


def amount_arg(text: str, positive=True) -> int:
    try:
        value = parse_amount(text)
    except AmountError as error:
        fail(str(error))
    if positive and value <= 0:
        fail(f"amount must be positive: {text}")
    return value


def time_arg(text):
    """ISO 8601 (UTC when no zone is given) -> unix seconds."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        fail(f"not an ISO 8601 date/time: {text}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp())


def show_time(stamp) -> str:
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _account(conn, email):
    try:
        return accounts_repo.require(conn, email)
    except accounts_repo.AccountError as error:
        fail(str(error))


# ---------------------------------------------------------------- accounts

def check_password_length(password: str) -> None:
    if len(password) < accounts_repo.MIN_PASSWORD_LENGTH:
        fail(f"a password needs at least {accounts_repo.MIN_PASSWORD_LENGTH} characters")


@account_cli.command("create")
@click.argument("email")
@click.option("--password", help="Sign-in password for the dashboard.")
@click.option("--approve", is_flag=True, help="Approve API access right away.")
def account_create(email, password, approve):
    """Create a partner account."""
    if password is not None:
        check_password_length(password)
    try:
        with db.write() as conn:
            accounts_repo.create(conn, email, password, approved=approve)
    except accounts_repo.AccountError as error:
        fail(str(error))
    click.echo(f"created {accounts_repo.normalize_email(email)}"
               f"{' (API access approved)' if approve else ''}")


def _sign_out_all(email, password=None):
    """Every dashboard session of the account ends (after setting `password`, if given)."""
    with db.write() as conn:
        row = _account(conn, email)
        if password is not None:
            accounts_repo.set_password(conn, row.id, password)
        ended = sessions.revoke_all(conn, row.id)
    click.echo(f"{row.email}: {'password set, ' if password is not None else ''}"
               f"{ended} session{'s' if ended != 1 else ''} signed out")


@account_cli.command("password")
@click.argument("email")
@click.option("--password", prompt="New password", hide_input=True, confirmation_prompt=True,
              help="The new sign-in password (prompted when not given).")
def account_password(email, password):
    """Set the dashboard password and sign out every session of the account."""
    check_password_length(password)
    _sign_out_all(email, password)


@account_cli.command("sign-out")
@click.argument("email")
def account_sign_out(email):
    """End every dashboard session of the account (each browser must sign in again)."""
    _sign_out_all(email)


@account_cli.command("show")
@click.argument("email")
def account_show(email):
    """Print an account's state, balance, key and pricing."""
    with db.read() as conn:
        row = _account(conn, email)
        key = keys.active_key(conn, row.id)
        rates = accounts_repo.custom_rates(conn, row.id)
    click.echo(f"email:      {row.email}")
    click.echo(f"api access: {row.api_access}")
    click.echo(f"banned:     {'yes: ' + (row.ban_reason or '') if row.banned else 'no'}")
    click.echo(f"balance:    {format_amount(row.balance)} {current_app.config['CURRENCY']}")
    click.echo(f"discount:   {format_percent(row.discount_bp)}%")
    click.echo(f"id format:  {row.id_format if row.id_format else id_format_name(numeric_ids(row)) + ' (the default; not chosen)'}")
    click.echo(f"key:        {key.prefix + '… created ' + show_time(key.created_at) + ', last used ' + show_time(key.last_used_at) if key else 'none'}")
    for service_id, rate in rates:
        click.echo(f"rate:       service {service_id} at {format_amount(rate)} per 1000")


@account_cli.command("requests")
def account_requests():
    """List accounts waiting for API access approval."""
    with db.read() as conn:
        for email, stamp in accounts_repo.access_requests(conn):
            click.echo(f"{email}\trequested {show_time(stamp)}")


def _set_state(email, change, done):
    with db.write() as conn:
        row = _account(conn, email)
        change(conn, row.id)
    click.echo(f"{row.email}: {done}")


@account_cli.command("approve")
@click.argument("email")
def account_approve(email):
    """Approve API access."""
    _set_state(email, lambda c, i: accounts_repo.set_api_access(c, i, "approved"), "API access approved")


@account_cli.command("unapprove")
@click.argument("email")
def account_unapprove(email):
    """Withdraw API access."""
    _set_state(email, lambda c, i: accounts_repo.set_api_access(c, i, "none"), "API access withdrawn")


@account_cli.command("ban")
@click.argument("email")
@click.option("--reason", default="", help="Shown to the partner at sign-in.")
def account_ban(email, reason):
    """Ban an account: its key and dashboard stop working."""
    _set_state(email, lambda c, i: accounts_repo.set_banned(c, i, True, reason), "banned")


@account_cli.command("unban")
@click.argument("email")
def account_unban(email):
    """Lift a ban."""
    _set_state(email, lambda c, i: accounts_repo.set_banned(c, i, False), "unbanned")


def _post(email, amount, kind, note):
    if not note.strip():
        fail("--note must say why the balance changes")
    with db.write() as conn:
        row = _account(conn, email)
        try:
            balance = ledger.post(conn, row.id, amount, kind, note.strip())
        except ledger.InsufficientFunds:
            fail(f"the balance of {row.email} is {format_amount(row.balance)}; it cannot go below 0")
    click.echo(f"{row.email}: balance {format_amount(balance)} {current_app.config['CURRENCY']}")


@account_cli.command("credit")
@click.argument("email")
@click.argument("amount")
@click.option("--note", required=True, help="Why (kept on the ledger row).")
def account_credit(email, amount, note):
    """Add AMOUNT (e.g. 25.50) to the balance."""
    _post(email, amount_arg(amount), "topup", note)


@account_cli.command("debit")
@click.argument("email")
@click.argument("amount")
@click.option("--note", required=True, help="Why (kept on the ledger row).")
def account_debit(email, amount, note):
    """Take AMOUNT from the balance (never below zero)."""
    _post(email, -amount_arg(amount), "adjustment", note)


@account_cli.command("discount")
@click.argument("email")
@click.argument("percent")
def account_discount(email, percent):
    """Set the account's discount on list rates, in percent (0-100, two decimals)."""
    try:
        bp = parse_percent(percent)
    except AmountError as error:
        fail(str(error))
    _set_state(email, lambda c, i: accounts_repo.set_discount(c, i, bp), f"discount {format_percent(bp)}%")


@account_cli.command("id-format")
@click.argument("email")
@click.argument("id_format", metavar="numeric|prefixed")
def account_id_format(email, id_format):
    """How the API shows this account's order, service and refill ids: prefixed ("ORD-100023",
    "1234") or numeric (100023, 1234, for panel scripts that store ids as numbers)."""
    with db.write() as conn:
        row = _account(conn, email)
        try:
            accounts_repo.set_id_format(conn, row.id, id_format)
        except accounts_repo.AccountError as error:
            fail(str(error))
    click.echo(f"{row.email}: id format {id_format}")


@account_cli.command("rate")
@click.argument("email")
@click.argument("service_id", type=int)
@click.argument("rate", required=False)
@click.option("--clear", is_flag=True, help="Remove the custom rate.")
def account_rate(email, service_id, rate, clear):
    """Set a custom RATE (per 1000) for one service, replacing the discounted list rate."""
    if clear == (rate is not None):
        fail("give either a RATE or --clear")
    value = None if clear else amount_arg(rate, positive=False)
    if value is not None and value < 0:
        fail("a rate cannot be negative")
    with db.write() as conn:
        row = _account(conn, email)
        try:
            accounts_repo.set_custom_rate(conn, row.id, service_id, value)
        except accounts_repo.AccountError as error:
            fail(str(error))
    click.echo(f"{row.email}: service {service_id} "
               f"{'custom rate cleared' if clear else 'at ' + format_amount(value) + ' per 1000'}")


# ---------------------------------------------------------------- keys

@key_cli.command("create")
@click.argument("email")
def key_create(email):
    """Make a new key (revoking the old one) and print only the raw key."""
    with db.write() as conn:
        raw = keys.create_key(conn, _account(conn, email).id)
    click.echo(raw)


@key_cli.command("revoke")
@click.argument("email")
def key_revoke(email):
    """Revoke the account's active key."""
    with db.write() as conn:
        row = _account(conn, email)
        if not keys.revoke_key(conn, row.id):
            fail(f"{row.email} has no active key")
    click.echo(f"{row.email}: key revoked")


# ---------------------------------------------------------------- services

def _field_specs(field_options, lines_field):
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


def _service_values(name, category, type_, kind, rate, min_quantity, max_quantity,
                    field_options, lines_field, refill_days, cancel, dripfeed, fixed_quantity):
    values = {"name": name, "category": category, "type": type_, "kind": kind,
              "rate": amount_arg(rate, positive=False) if rate is not None else None,
              "min_quantity": min_quantity, "max_quantity": max_quantity,
              "refill_days": refill_days, "cancel": cancel, "dripfeed": dripfeed}
    if field_options or lines_field:
        values["fields_json"] = json.dumps(_field_specs(field_options, lines_field))
    values = {k: v for k, v in values.items() if v is not None}
    if fixed_quantity is not None:
        values["fixed_quantity"] = fixed_quantity or None
    return values


@service_cli.command("add")
@click.option("--id", "service_id", type=int, help="API-facing id (default: next free).")
@service_options(required=True)
def service_add(service_id, **options):
    """Add a service to the catalog."""
    values = _service_values(**options)
    if service_id is not None:
        values["id"] = service_id
    try:
        with db.write() as conn:
            new_id = services_repo.add(conn, **values)
    except (services_repo.ServiceError, ValueError) as error:
        fail(str(error))
    click.echo(f"service {new_id} added")


@service_cli.command("update")
@click.argument("service_id", type=int)
@service_options(required=False)
def service_update(service_id, **options):
    """Change a service (only the options given). A rate set here drops the service's markup:
    `provider sync` then keeps it, raising it only if the provider's rate passes it."""
    values = _service_values(**options)
    if "rate" in values:
        values["markup_bp"] = None
    try:
        with db.write() as conn:
            services_repo.update_service(conn, service_id, **values)
    except services_repo.ServiceError as error:
        fail(str(error))
    click.echo(f"service {service_id} updated")


def _set_active(service_id, active):
    try:
        with db.write() as conn:
            services_repo.update_service(conn, service_id, active=active)
    except services_repo.ServiceError as error:
        fail(str(error))
    click.echo(f"service {service_id} {'enabled' if active else 'disabled'}")


@service_cli.command("disable")
@click.argument("service_id", type=int)
def service_disable(service_id):
    """Take a service out of the catalog (existing orders keep it)."""
    _set_active(service_id, False)


@service_cli.command("enable")
@click.argument("service_id", type=int)
def service_enable(service_id):
    """Put a disabled service back."""
    _set_active(service_id, True)


@service_cli.command("list")
def service_list():
    """Every service, active or not, with its list rate."""
    with db.read() as conn:
        rows = services_repo.list_all(conn)
        names = {provider.id: provider.name for provider in providers_repo.list_all(conn)}
    for row in rows:
        fields = ",".join(spec["name"] for spec in services_repo.field_specs(row))
        quantity = (f"fixed {row.fixed_quantity}" if row.fixed_quantity is not None
                    else f"{row.min_quantity}-{row.max_quantity}")
        options = [f"refill {row.refill_days}d" if row.refill_days else "",
                   "cancel" if row.cancel else "", "dripfeed" if row.dripfeed else "",
                   f"fields={fields}" if fields else ""]
        if row.provider_id is not None:
            options.append(f"provider={names.get(row.provider_id, row.provider_id)}:"
                           f"{row.provider_service} at {format_amount(row.provider_rate or 0)}"
                           + (f" +{format_percent(row.markup_bp)}%" if row.markup_bp is not None
                              else ""))
        click.echo("\t".join([str(row.id), "active" if row.active else "disabled", row.kind,
                              format_amount(row.rate), quantity, row.category, row.name,
                              *filter(None, options)]))


def _refill_days(entry) -> int:
    """`refill_days` when the entry has it, else the `services` shape's boolean `refill`."""
    if entry.get("refill_days") is not None:
        return int(entry["refill_days"])
    return services_repo.DEFAULT_REFILL_DAYS if entry.get("refill") is True else 0


@service_cli.command("link")
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
        except services_repo.ServiceError as error:
            fail(str(error))
        click.echo(f"service {service_id} is fulfilled by hand"
                   + (f" (was provider {was.name} service {before.provider_service})" if was else ""))
        return
    if not (provider_name and provider_service and provider_service.strip()):
        fail("give both --provider NAME and --provider-service PID")
    provider = _provider_named(provider_name)
    reply = _provider_catalog(provider)
    step = _catalog_change(provider, provider_catalog.link, service_id, provider.id, reply,
                           provider_service.strip())
    _say(provider, f"service {service_id} linked to provider {provider.name} "
                   f"service {step.provider_service}")
    for change in step.changes:
        _say(provider, step.local_id, step.provider_service, step.name, change)


def _imported(entry) -> dict:
    """One entry of the `services` shape -> catalog values (kind inferred when not given)."""
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
                "fields_json": json.dumps(fields), "refill_days": _refill_days(entry),
                "cancel": bool(entry.get("cancel", False)),
                "dripfeed": bool(entry.get("dripfeed", False)), "active": True}
    except KeyError as error:
        raise services_repo.ServiceError(f"entry {entry.get('service')!r}: missing {error}") from None
    except (ValueError, TypeError) as error:
        raise services_repo.ServiceError(f"entry {entry.get('service')!r}: {error}") from None


@service_cli.command("import")
@click.argument("path", type=click.File("r"))
def service_import(path):
    """Add or update services from a JSON file of the `services` action's shape."""
    try:
        entries = json.load(path)
    except ValueError as error:
        fail(f"not JSON: {error}")
    if not isinstance(entries, list):
        fail("the file must hold a JSON list of services")
    added = updated = 0
    try:
        with db.write() as conn:  # all or nothing
            for entry in entries:
                values = _imported(entry)
                service_id = values.pop("id")
                if conn.execute(select(services.c.id).where(services.c.id == service_id)).first():
                    services_repo.update_service(conn, service_id, **values)
                    updated += 1
                else:
                    services_repo.add(conn, id=service_id, **values)
                    added += 1
    except services_repo.ServiceError as error:
        fail(str(error))
    click.echo(f"imported {added + updated} services ({added} added, {updated} updated)")


# ---------------------------------------------------------------- coupons

@coupon_cli.command("create")
@click.argument("code")
@click.option("--percent", help="Percent off (e.g. 10 or 12.5).")
@click.option("--amount", help="Fixed amount off (e.g. 2.50).")
@click.option("--starts", help="Valid from (ISO 8601, UTC by default).")
@click.option("--expires", help="Valid until (ISO 8601, UTC by default).")
@click.option("--max-uses", type=click.IntRange(min=1), help="Total redemptions allowed.")
@click.option("--per-account", type=click.IntRange(min=1), help="Redemptions allowed per account.")
@click.option("--min-charge", help="Smallest order charge it applies to.")
@click.option("--service", "service_id", type=int, help="Only for this service id.")
@click.option("--category", help="Only for services of this category.")
def coupon_create(code, percent, amount, starts, expires, max_uses, per_account, min_charge,
                  service_id, category):
    """Create a coupon (exactly one of --percent and --amount)."""
    if (percent is None) == (amount is None):
        fail("give exactly one of --percent and --amount")
    try:
        kind, value = ("percent", parse_percent(percent)) if percent else ("fixed", amount_arg(amount))
    except AmountError as error:
        fail(str(error))
    options = {"starts_at": time_arg(starts), "expires_at": time_arg(expires),
               "max_uses": max_uses, "per_account_limit": per_account,
               "min_charge": amount_arg(min_charge, positive=False) if min_charge else 0,
               "service_id": service_id, "category": category}
    try:
        with db.write() as conn:
            coupons_repo.create(conn, code, kind, value, **options)
    except ValueError as error:
        fail(str(error))
    click.echo(f"coupon {coupons_repo.normalize_code(code)} created")


@coupon_cli.command("list")
def coupon_list():
    """Every coupon with its use count."""
    with db.read() as conn:
        for row in coupons_repo.list_all(conn):
            off = f"{format_percent(row.value)}%" if row.kind == "percent" else format_amount(row.value)
            click.echo(f"{row.code}\t{'active' if row.active else 'disabled'}\t{off} off\t"
                       f"uses {row.uses}/{row.max_uses or '∞'}\t"
                       f"{show_time(row.starts_at)} .. {show_time(row.expires_at)}")


@coupon_cli.command("disable")
@click.argument("code")
def coupon_disable(code):
    """Stop a coupon from being used."""
    with db.write() as conn:
        if not coupons_repo.disable(conn, code):
            fail(f"no coupon {code}")
    click.echo(f"coupon {coupons_repo.normalize_code(code)} disabled")


# ---------------------------------------------------------------- orders

def _order_id(text):
    order_id = parse_order(text)
    if order_id is None:
        fail(f"not an order id: {text}")
    return order_id


@order_cli.command("list")
@click.option("--account", "email", help="Only this account's orders.")
@click.option("--status", type=click.Choice(orders_repo.ORDER_STATUSES))
@click.option("--service", "service_id", type=int)
@click.option("--cancel-requested", is_flag=True,
              help="Only active orders whose partner asked to cancel (answer with set-status).")
@click.option("--provider", "provider_name", help="Only orders fulfilled by this provider.")
@click.option("--unknown", is_flag=True, help="Only orders whose hand-over outcome is unknown.")
@click.option("--attention", is_flag=True, help="Only orders flagged for the operator.")
@click.option("--request-id", help="Orders placed, charged or refunded by this request "
                                   "(its x-serva-request-id, or a cli: id).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
def order_list(email, status, service_id, cancel_requested, provider_name, unknown, attention,
               request_id, limit):
    """Newest orders first."""
    query = (select(orders, accounts.c.email).join(accounts, accounts.c.id == orders.c.account_id)
             .order_by(orders.c.id.desc()).limit(limit))
    if request_id:
        rid = request_id.strip()
        by_ledger = select(ledger_table.c.order_id).where(ledger_table.c.request_id == rid)
        query = query.where((orders.c.request_id == rid) | orders.c.id.in_(by_ledger))
    with db.read() as conn:
        if email:
            query = query.where(orders.c.account_id == _account(conn, email).id)
        if status:
            query = query.where(orders.c.status == status)
        if service_id is not None:
            query = query.where(orders.c.service_id == service_id)
        if cancel_requested:
            query = query.where(orders.c.cancel_requested_at.is_not(None),
                                orders.c.status.in_(orders_repo.ACTIVE_STATUSES))
        if provider_name:
            try:
                provider = providers_repo.require(conn, provider_name)
            except providers_repo.ProviderError as error:
                fail(str(error))
            query = query.where(orders.c.provider_id == provider.id)
        if unknown:
            query = query.where(orders.c.id.in_(select(dispatches.c.order_id)
                                                .where(dispatches.c.state == "unknown")))
        if attention:
            query = query.where(orders.c.attention.is_not(None))
        for row in conn.execute(query):
            extra = ""
            if row.runs is not None:
                extra += f"\truns {row.runs_done}/{row.runs} every {row.interval_minutes} min"
            if row.cancel_requested_at is not None:
                extra += f"\tcancel requested {show_time(row.cancel_requested_at)}"
            click.echo(f"{present_order(row.id)}\t{row.status}\t{row.email}\tservice {row.service_id}\t"
                       f"qty {row.quantity}\t{format_amount(row.charge - row.refunded)}\t{row.target}"
                       + extra)


@order_cli.command("unknown")
def order_unknown():
    """Hand-overs whose outcome is unknown (sent, no usable answer): resolve each by hand."""
    with db.read() as conn:
        rows = conn.execute(
            select(orders.c.id, orders.c.quantity, orders.c.target, dispatches.c.attempts,
                   dispatches.c.last_message, dispatches.c.updated_at,
                   providers.c.name.label("provider"))
            .select_from(dispatches.join(orders, orders.c.id == dispatches.c.order_id)
                         .outerjoin(providers, providers.c.id == orders.c.provider_id))
            .where(dispatches.c.state == "unknown").order_by(orders.c.id)).all()
    for row in rows:
        click.echo(f"{present_order(row.id)}\t{row.provider or '-'}\tqty {row.quantity}\t"
                   f"{row.target}\tsince {show_time(row.updated_at)}\t{row.last_message or ''}")


@order_cli.command("resolve")
@click.argument("order")
@click.option("--provider-order", help="It was placed: the provider's order id.")
@click.option("--resend", is_flag=True, help="It was not placed: hand it over again.")
@click.option("--cancel", is_flag=True, help="Give up: Canceled, full refund.")
def order_resolve(order, provider_order, resend, cancel):
    """Settle a hand-over whose outcome is unknown, after checking at the provider."""
    if sum((provider_order is not None, resend, cancel)) != 1:
        fail("give exactly one of --provider-order PID, --resend and --cancel")
    order_id = _order_id(order)
    try:
        with db.write() as conn:
            done = fulfilment.resolve(conn, order_id, provider_order=provider_order,
                                      resend=resend, cancel=cancel)
    except fulfilment.ResolveError as error:
        fail(str(error))
    click.echo(f"{present_order(order_id)}: {done}")


@order_cli.command("show")
@click.argument("order")
def order_show(order):
    """Everything about one order, with its ledger rows."""
    order_id = _order_id(order)
    with db.read() as conn:
        row = conn.execute(select(orders, accounts.c.email)
                           .join(accounts, accounts.c.id == orders.c.account_id)
                           .where(orders.c.id == order_id)).first()
        if row is None:
            fail(f"no order {order}")
        entries = conn.execute(select(ledger_table).where(ledger_table.c.order_id == order_id)
                               .order_by(ledger_table.c.id)).all()
        refill_rows = refills_repo.refills_of(conn, order_id)
        handover = conn.execute(
            select(providers.c.name.label("provider"), dispatches.c.state, dispatches.c.attempts,
                   dispatches.c.last_message)
            .select_from(orders.outerjoin(providers, providers.c.id == orders.c.provider_id)
                         .outerjoin(dispatches, and_(dispatches.c.order_id == orders.c.id,
                                                     dispatches.c.kind == "add")))
            .where(orders.c.id == order_id)).first()
    for label, value in [("order", present_order(row.id)), ("account", row.email),
                         ("service", row.service_id), ("target", row.target),
                         ("inputs", row.inputs_json or "-"), ("quantity", row.quantity),
                         ("status", row.status), ("start_count", row.start_count),
                         ("remains", row.remains), ("charge", format_amount(row.charge)),
                         ("refunded", format_amount(row.refunded)),
                         *([("runs", f"{row.runs_done}/{row.runs} done, every "
                                     f"{row.interval_minutes} min")] if row.runs is not None else []),
                         *([("cancel", f"requested {show_time(row.cancel_requested_at)}")]
                           if row.cancel_requested_at is not None else []),
                         ("created", show_time(row.created_at)), ("updated", show_time(row.updated_at)),
                         ("completed", show_time(row.completed_at)),
                         ("request_id", row.request_id or "-")]:
        click.echo(f"{label + ':':12} {value}")
    if row.provider_id is not None or handover.state is not None:
        for label, value in [("provider", handover.provider if handover else "-"),
                             ("provider order", row.provider_order or "-"),
                             ("hand-over", f"{handover.state}, {handover.attempts} attempts"
                              if handover and handover.state else "-"),
                             ("last provider message", handover.last_message or "-"
                              if handover else "-"),
                             ("attention", row.attention or "-")]:
            click.echo(f"{label}: {value}")
    for entry in entries:
        click.echo(f"ledger:      {show_time(entry.created_at)} {entry.kind} {format_amount(entry.amount)} "
                   f"request_id={entry.request_id or '-'}")
    for refill in refill_rows:
        click.echo(f"refill:      {present_refill(refill.id)} {refill.status} requested "
                   f"{show_time(refill.created_at)}")


@order_cli.command("set-status")
@click.argument("order")
@click.argument("status", type=click.Choice(orders_repo.ORDER_STATUSES))
@click.option("--start-count", type=click.IntRange(min=0, max=2**31 - 1))
@click.option("--remains", type=click.IntRange(min=0))
@click.option("--runs-done", type=click.IntRange(min=0), help="Drip-feed runs delivered so far.")
def order_set_status(order, status, start_count, remains, runs_done):
    """Move an order to STATUS; Partial and Canceled refund through the ledger, once."""
    order_id = _order_id(order)
    try:
        with db.write() as conn:
            refund = orders_repo.set_status(conn, order_id, status, start_count, remains, runs_done)
    except orders_repo.OrderError as error:
        fail(str(error))
    click.echo(f"{present_order(order_id)}: {status}"
               + (f", refunded {format_amount(refund)}" if refund else ""))


# ---------------------------------------------------------------- refills

@refill_cli.command("list")
@click.option("--status", type=click.Choice(refills_repo.REFILL_STATUSES))
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
def refill_list(status, limit):
    """Newest refill requests first (answer them with set-status)."""
    with db.read() as conn:
        rows = refills_repo.list_refills(conn, status, limit)
    for row in rows:
        click.echo(f"{present_refill(row.id)}\t{row.status}\t{present_order(row.order_id)}\t{row.email}\t"
                   f"service {row.service_id}\trequested {show_time(row.created_at)}\t{row.target}")


@refill_cli.command("set-status")
@click.argument("refill")
@click.argument("status", type=click.Choice(refills_repo.REFILL_STATUSES))
def refill_set_status(refill, status):
    """Move a refill to STATUS (Completed and Rejected are final)."""
    refill_id = parse_refill(refill)
    if refill_id is None:
        fail(f"not a refill id: {refill}")
    try:
        with db.write() as conn:
            refills_repo.set_refill_status(conn, refill_id, status)
    except refills_repo.RefillError as error:
        fail(str(error))
    click.echo(f"{present_refill(refill_id)}: {status}")


# ---------------------------------------------------------------- providers

def _provider_change(change, *args):
    try:
        with db.write() as conn:
            return change(conn, *args)
    except providers_repo.ProviderError as error:
        fail(str(error))


@provider_cli.command("add")
@click.argument("name")
@click.option("--url", required=True, help="The provider's API endpoint (or sim:// for the simulator).")
@click.option("--key", required=True, help="Your API key at the provider (stored; shown masked).")
def provider_add(name, url, key):
    """Add an upstream provider."""
    _provider_change(providers_repo.add, name, url, key)
    click.echo(f"provider {name.strip()} added (key {providers_repo.mask_key(key.strip())})")


@provider_cli.command("list")
def provider_list():
    """Every provider: state, balance it reports, orders waiting / in flight / unknown, last error."""
    currency = current_app.config["CURRENCY"]
    with db.read() as conn:
        rows = providers_repo.list_all(conn)
        counts = providers_repo.counts(conn)
    for row in rows:
        waiting, in_flight, unknown = counts.get(row.id, (0, 0, 0))
        balance = ("balance ?" if row.balance is None else
                   f"balance {format_amount(row.balance)} {row.balance_currency or currency} "
                   f"at {show_time(row.balance_at)}")
        error = (f"last error {row.last_error} at {show_time(row.last_error_at)}"
                 if row.last_error else "no error")
        click.echo(f"{row.name}\t{'enabled' if row.enabled else 'disabled'}\t{row.url}\t"
                   f"key {providers_repo.mask_key(row.api_key)}\t{balance}\twaiting {waiting}\t"
                   f"in flight {in_flight}\tunknown {unknown}\t{error}")


@provider_cli.command("disable")
@click.argument("name")
def provider_disable(name):
    """Stop handing orders over to a provider (they wait, and are retried)."""
    _provider_change(providers_repo.set_enabled, name, False)
    click.echo(f"provider {name} disabled")


@provider_cli.command("enable")
@click.argument("name")
def provider_enable(name):
    """Hand orders over to a provider again."""
    _provider_change(providers_repo.set_enabled, name, True)
    click.echo(f"provider {name} enabled")


@provider_cli.command("retry")
@click.argument("name")
def provider_retry(name):
    """Make the provider's waiting hand-overs due now (e.g. after topping it up)."""
    count = _provider_change(providers_repo.retry, name)
    click.echo(f"provider {name}: {count} waiting hand-overs due now")


MAX_MARKUP_BP = 1000 * BASIS_POINTS // 100  # 1000 %


def _provider_named(name):
    with db.read() as conn:
        try:
            return providers_repo.require(conn, name)
        except providers_repo.ProviderError as error:
            fail(str(error))


def _say(provider, *columns):
    """One tab-separated line of output about a provider; its key masked if it shows up."""
    click.echo(providers_repo.redact("\t".join(str(c) for c in columns), provider.api_key))


def _provider_catalog(provider):
    """The provider's `services` reply (its numbers read exactly: Decimal, never float)."""
    try:
        return provider_client.call(provider.url, provider.api_key, "services")
    except provider_client.ProviderError as error:
        fail(providers_repo.redact(f"provider {provider.name}: {error}", provider.api_key))


def _catalog_change(provider, change, *args):
    """Plan and write in one transaction: all of it, or (on an error) none of it."""
    try:
        with db.write() as conn:
            return change(conn, *args)
    except (provider_catalog.CatalogError, services_repo.ServiceError) as error:
        fail(providers_repo.redact(str(error), provider.api_key))


@provider_cli.command("import")
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
    provider = _provider_named(name)
    reply = _provider_catalog(provider)
    steps = _catalog_change(provider, provider_catalog.import_services, provider.id, reply,
                            markup_bp, categories)
    done = {"add": "added", "update": "updated", "unchanged": "unchanged"}
    for step in steps:
        if step.action == "skip":
            _say(provider, "skipped", step.provider_service or "-", step.name or "-", step.reason)
        else:
            _say(provider, step.local_id, step.provider_service, step.name,
                 format_amount(step.rate),
                 done[step.action] + (": " + ", ".join(step.changes) if step.changes else "")
                 + (f" ({step.reason}: serva service enable {step.local_id})" if step.reason else ""))
    count = Counter(step.action for step in steps)
    click.echo(f"provider {provider.name}: {count['add']} added, {count['update']} updated, "
               f"{count['unchanged']} unchanged, {count['skip']} skipped")


@provider_cli.command("sync")
@click.argument("name")
def provider_sync(name):
    """Re-read the provider's catalog: rates (markup kept; never below the provider's),
    limits and flags follow it, services gone upstream are deactivated; prints each change."""
    provider = _provider_named(name)
    reply = _provider_catalog(provider)
    steps = _catalog_change(provider, provider_catalog.sync_services, provider.id, reply)
    for step in steps:
        if step.action == "deactivate":
            _say(provider, step.local_id, step.provider_service, step.name,
                 f"deactivated: {step.reason}")
        for change in step.changes if step.action == "update" else ():
            _say(provider, step.local_id, step.provider_service, step.name, change)
    count = Counter(step.action for step in steps)
    click.echo(f"provider {provider.name}: {len(steps)} linked services, {count['update']} "
               f"changed, {count['deactivate']} deactivated, {count['unchanged']} unchanged")


# ---------------------------------------------------------------- checks and upkeep

@click.command("audit")
@click.option("--stale-after", type=click.IntRange(min=0), default=audit_checks.STALE_AFTER_SECONDS,
              show_default=True, metavar="SECONDS",
              help="warn about guard/idempotency rows expired longer than this")
@with_appcontext
def audit_command(stale_after):
    """Check the money invariants; exit 1 naming each violation.

    \b
    VIOLATION (exit 1): a balance that is not the sum of its ledger; a negative balance;
    an order whose charge or refund differs from its ledger rows; coupon uses that differ from
    its redemptions; a ledger row whose account or order does not exist, a charge or refund
    row that names no order, a ledger row for another account's order.
    WARNING (exit 0): purchase-guard or idempotency rows that expired more than --stale-after
    seconds ago (default a day) and are still there. Expired rows are ignored by the API, so
    money is safe, but `serva prune` is not running and the tables grow: cron it."""
    require_schema()
    with db.read() as conn:
        problems = list(audit_checks.violations(conn))
        warnings = list(audit_checks.stale_rows(conn, db.now(), stale_after))
    for problem in problems:
        click.echo(f"VIOLATION {problem}")
    for warning in warnings:
        click.echo(f"WARNING {warning}")
    if problems:
        raise click.exceptions.Exit(1)
    click.echo("audit passed: balances equal their ledgers, orders match their ledger rows"
               + (f" ({len(warnings)} warning(s) above)" if warnings else ""))


@click.command("prune")
@with_appcontext
def prune_command():
    """Delete expired purchase-guard rows, idempotency records, old sign-in failures and
    ended dashboard sessions."""
    require_schema()
    stamp = db.now()
    with db.write() as conn:
        guards = conn.execute(delete(purchase_guards).where(purchase_guards.c.expires_at <= stamp)).rowcount
        replays = conn.execute(delete(idempotency_keys).where(idempotency_keys.c.expires_at <= stamp)).rowcount
        failures = conn.execute(delete(login_failures).where(
            login_failures.c.created_at <= stamp - current_app.config["LOGIN_FAILURE_WINDOW_SECONDS"])).rowcount
        ended = sessions.prune(conn, int(current_app.permanent_session_lifetime.total_seconds()))
    click.echo(f"pruned {guards} guard rows, {replays} idempotency records, {failures} sign-in failures, "
               f"{ended} ended sessions")


@click.command("worker")
@with_appcontext
@click.option("--once", is_flag=True, help="One pass (hand-overs and status sync), then exit.")
def worker_command(once):
    """Hand orders over to providers and sync their status; runs until SIGTERM."""
    require_schema()
    if once:
        click.echo(fulfilment.run_pass().line())
        return
    fulfilment.run_forever(echo=lambda line: click.echo(line, nl=True) or sys.stdout.flush())


@click.command("demo")
@with_appcontext
def demo_command():
    """Create (or refresh) the demo account, catalog and coupon; the last line is a new demo key."""
    require_schema()
    from .demo import seed
    email, password, summary = seed()
    click.echo(f"demo account: {email} / password {password} (sign in at /profile/api/)")
    click.echo(summary)
    with db.write() as conn:
        click.echo(keys.create_key(conn, accounts_repo.require(conn, email).id))


def init_app(app):
    for command in (db.init_db_command, db.schema_sql_command, demo_command, audit_command,
                    worker_command,
                    prune_command, account_cli, key_cli, service_cli, coupon_cli, order_cli,
                    refill_cli, provider_cli):
        app.cli.add_command(command)
    from .serve import serve_command  # `serva serve --workers N`: every core (serva/serve.py)
    app.cli.add_command(serve_command)
    from .backup import backup_command
    app.cli.add_command(backup_command)


def main():
    """The `serva` console script: the same commands as `flask --app serva`. A database that
    cannot be written now (busy, full, read-only) is one line and exit status 2."""
    from . import create_app
    try:
        FlaskGroup(create_app=create_app, help="Serva operator commands.").main(prog_name="serva")
    except Exception as error:
        if not db.unavailable(error):
            raise
        click.echo(f"error: the database cannot be written now: "
                   f"{getattr(error, 'orig', None) or error}", err=True)
        sys.exit(2)
