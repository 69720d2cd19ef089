"""`serva key …`: API keys (one active per account)."""
import click
from flask.cli import AppGroup

from .. import db, keys
from .common import account_named, fail, record, require_schema

group = AppGroup("key", help="API keys (one active per account).", callback=require_schema)


@group.command("create")
@click.argument("email")
def key_create(email):
    """Make a new key (revoking the old one) and print only the raw key."""
    with db.write() as conn:
        row = account_named(conn, email)
        raw = keys.create_key(conn, row.id)
        record(conn, "key.create", row.email, after={"prefix": raw[:keys.DISPLAY_PREFIX_LENGTH]})
    click.echo(raw)


@group.command("revoke")
@click.argument("email")
def key_revoke(email):
    """Revoke the account's active key."""
    with db.write() as conn:
        row = account_named(conn, email)
        if not keys.revoke_key(conn, row.id):
            fail(f"{row.email} has no active key")
        record(conn, "key.revoke", row.email)
    click.echo(f"{row.email}: key revoked")
