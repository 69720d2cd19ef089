"""`serva coupon …`: coupons partners send with the add action."""
import click
from flask.cli import AppGroup

from .. import coupons as coupons_repo
from .. import db
from ..money import AmountError, format_amount, format_percent, parse_percent
from .common import amount_arg, echo_lines, fail, record, require_schema, show_time, time_arg

group = AppGroup("coupon", help="Coupons for the add action.", callback=require_schema)


@group.command("create")
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
            record(conn, "coupon.create", coupons_repo.normalize_code(code),
                   after={"kind": kind, "value": value, **options})
    except ValueError as error:
        fail(str(error))
    click.echo(f"coupon {coupons_repo.normalize_code(code)} created")


def coupon_line(row) -> str:
    off = f"{format_percent(row.value)}%" if row.kind == "percent" else format_amount(row.value)
    return (f"{row.code}\t{'active' if row.active else 'disabled'}\t{off} off\t"
            f"uses {row.uses}/{row.max_uses or '∞'}\t"
            f"{show_time(row.starts_at)} .. {show_time(row.expires_at)}")


@group.command("list")
def coupon_list():
    """Every coupon with its use count."""
    with db.read() as conn:
        rows = coupons_repo.list_all(conn)
    echo_lines(coupon_line(row) for row in rows)


@group.command("disable")
@click.argument("code")
def coupon_disable(code):
    """Stop a coupon from being used."""
    with db.write() as conn:
        if not coupons_repo.disable(conn, code):
            fail(f"no coupon {code}")
        record(conn, "coupon.disable", coupons_repo.normalize_code(code))
    click.echo(f"coupon {coupons_repo.normalize_code(code)} disabled")
