"""The operator CLI: the `serva` console script (or `flask --app serva …`), one module per noun.

Every command is scriptable: results on stdout, a one-line `error: …` on stderr and exit
status 2 for arguments that cannot be applied; `audit` exits 1 when an invariant is broken."""
import sys

import click
from flask.cli import FlaskGroup

from .. import db
from ..backup import backup_command
from ..serve import serve_command
from . import account, coupon, key, order, provider, refill, service
from .database import init_db_command, schema_sql_command
from .demo import demo_command
from .upkeep import audit_command, prune_command
from .worker import worker_command

COMMANDS = (init_db_command, schema_sql_command, demo_command, audit_command, worker_command,
            prune_command, account.group, key.group, service.group, coupon.group, order.group,
            refill.group, provider.group, serve_command, backup_command)


def init_app(app):
    for command in COMMANDS:
        app.cli.add_command(command)


def main():
    """The `serva` console script: the same commands as `flask --app serva`. A database that
    cannot be written now (busy, full, read-only) is one line and exit status 2."""
    from .. import create_app
    try:
        FlaskGroup(create_app=create_app, help="Serva operator commands.").main(prog_name="serva")
    except Exception as error:
        if not db.unavailable(error):
            raise
        click.echo(f"error: the database cannot be written now: "
                   f"{getattr(error, 'orig', None) or error}", err=True)
        sys.exit(2)
