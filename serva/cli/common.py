"""What the command modules share: the one `error: …` line with exit status 2, the schema
check, reading amounts, times and ids from arguments, and the way times and empty lists show."""
from datetime import datetime, timezone

import click
from flask.cli import with_appcontext

from .. import accounts as accounts_repo
from .. import activity, db
from ..ids import parse_order
from ..money import AmountError, parse_amount


def fail(message: str):
    """An argument that cannot be applied: one line on stderr, exit status 2 (scripts test it)."""
    click.echo(f"error: {message}", err=True)
    raise click.exceptions.Exit(2)


@with_appcontext
def require_schema():
    """Commands that use the data refuse a database behind or ahead of this Serva's schema
    (the app does not check it under the CLI, so that `init-db` and `db` can open one)."""
    message = db.schema_problem(db.get_engine())
    if message:
        fail(message)


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


def order_id_arg(text: str) -> int:
    order_id = parse_order(text)
    if order_id is None:
        fail(f"not an order id: {text}")
    return order_id


def show_time(stamp) -> str:
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def show_value(value) -> str:
    """A field of a record as shown: `-` when it has no value (never `None`)."""
    return "-" if value is None else str(value)


def echo_lines(lines) -> None:
    """A list command's output: one line per item, or `none`, so that an empty list is told
    apart from a command that printed nothing."""
    empty = True
    for line in lines:
        click.echo(line)
        empty = False
    if empty:
        click.echo("none")


def account_named(conn, email):
    try:
        return accounts_repo.require(conn, email)
    except accounts_repo.AccountError as error:
        fail(str(error))


def record(conn, action: str, subject, before=None, after=None) -> None:
    """The activity entry of a command's change, in the command's transaction."""
    activity.record(conn, activity.CLI, action, subject, before, after)
