"""`serva demo`: a working demo account, catalog and coupon, and a fresh key to try them."""
import click
from flask.cli import with_appcontext

from .. import accounts as accounts_repo
from .. import db, demo, keys
from .common import require_schema


@click.command("demo")
@with_appcontext
def demo_command():
    """Create (or refresh) the demo account, catalog and coupon; the last line is a new demo key."""
    require_schema()
    email, password, summary = demo.seed()
    click.echo(f"demo account: {email} / password {password} (sign in at /profile/api/)")
    click.echo(summary)
    with db.write() as conn:
        click.echo(keys.create_key(conn, accounts_repo.require(conn, email).id))
