"""`serva operator …`: the people who sign in to the console at /admin/ (not partners)."""
import click
from flask.cli import AppGroup

from .. import db, operators
from .. import second_factor
from ..schema import OPERATOR_ROLES
from .common import echo_lines, fail, record, require_schema, show_time

group = AppGroup("operator", help="Console operators: owners and support staff.",
                 callback=require_schema)


def change(action, work, *args):
    """Apply one operator change and its activity entry in one transaction."""
    try:
        with db.write() as conn:
            row = work(conn, *args)
            record(conn, action, row.email)
            return row
    except operators.OperatorError as error:
        fail(str(error))


@group.command("create")
@click.argument("email")
@click.option("--role", type=click.Choice(OPERATOR_ROLES), required=True,
              help="owner: everything; support: reads, answers orders, refills and cancels.")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              help="The sign-in password (prompted when not given).")
def operator_create(email, role, password):
    """Create an operator (an owner enrols a second factor at the first sign-in)."""
    try:
        with db.write() as conn:
            operators.create(conn, email, role, password)
            row = operators.get_by_email(conn, email)
            record(conn, "operator.create", row.email, after={"role": role})
    except operators.OperatorError as error:
        fail(str(error))
    click.echo(f"operator {row.email} created ({role})")


@group.command("list")
def operator_list():
    """Every operator: role, state, second factor."""
    with db.read() as conn:
        rows = operators.list_all(conn)
    echo_lines(f"{row.email}\t{row.role}\t{'disabled' if row.disabled else 'active'}\t"
               f"2fa {'enrolled ' + show_time(row.totp_confirmed_at) if second_factor.enrolled(row) else 'not enrolled'}"
               for row in rows)


@group.command("disable")
@click.argument("email")
def operator_disable(email):
    """Stop an operator from signing in; their sessions end now."""
    row = change("operator.disable", operators.set_disabled, email, True)
    click.echo(f"{row.email}: disabled")


@group.command("enable")
@click.argument("email")
def operator_enable(email):
    """Let a disabled operator sign in again."""
    row = change("operator.enable", operators.set_disabled, email, False)
    click.echo(f"{row.email}: enabled")


@group.command("password")
@click.argument("email")
@click.option("--password", prompt="New password", hide_input=True, confirmation_prompt=True,
              help="The new password (prompted when not given).")
def operator_password(email, password):
    """Set an operator's password; their sessions end."""
    row = change("operator.password", operators.set_password, email, password)
    click.echo(f"{row.email}: password set, signed out everywhere")


@group.command("reset-2fa")
@click.argument("email")
def operator_reset_2fa(email):
    """Forget the operator's second factor and recovery codes (a lost phone): they enrol again
    at the next sign-in."""
    row = change("operator.reset_2fa", operators.reset_second_factor, email)
    click.echo(f"{row.email}: second factor reset; enrols again at the next sign-in")
