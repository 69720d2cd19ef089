"""The operator CLI: the `serva` console script, one module per noun (`flask --app serva …`
is Flask's own CLI, for `run` and Flask-Migrate's `db` while developing).

Every command is scriptable: results on stdout, a one-line `error: …` on stderr and exit
status 2 for arguments that cannot be applied (under `serva`, click's usage errors too);
`audit` exits 1 when an invariant is broken."""
import sys
from contextlib import contextmanager

import click
from flask.cli import ScriptInfo
from flask_migrate.cli import db as migrate_commands

from .. import create_app, db
from ..backup import backup_command
from ..serve import serve_command
from . import (account, coupon, key, operator, order, payment, provider, refill, service,
               webhook)
from .common import fail
from .database import init_db_command, schema_sql_command
from .demo import demo_command
from .upkeep import audit_command, prune_command
from .worker import worker_command

COMMANDS = (init_db_command, schema_sql_command, demo_command, audit_command, worker_command,
            prune_command, account.group, key.group, service.group, coupon.group, order.group,
            refill.group, provider.group, operator.group, payment.group, webhook.group,
            serve_command, backup_command)


def load_app():
    """The app `serva`'s commands run in, made here and nowhere else, when the first command
    that needs it runs (so `--help` works whatever the settings). A setting the app refuses
    is one line naming it, and exit status 2."""
    try:
        return create_app()
    except ValueError as error:
        fail(str(error))


@contextmanager
def one_line_usage_errors():
    """Click's usage errors (a bad option value, a missing argument, an unknown option or
    command) as our own one `error: …` line; a bare group still shows its help."""
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:
        raise
    except click.UsageError as error:
        fail(" ".join(error.format_message().split("\n")))


class ServaGroup(click.Group):
    """Serva's commands only: none of Flask's (`run`, `routes`, `shell`, `--version`) nor the
    plugins' that FlaskGroup would load. Commands get their app from `load_app` through the
    ScriptInfo that Flask's `with_appcontext` reads (a test runner passes its own)."""

    def make_context(self, info_name, args, parent=None, **extra):
        if parent is None and "obj" not in extra:
            extra["obj"] = ScriptInfo(create_app=load_app)
        with one_line_usage_errors():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx):
        with one_line_usage_errors():
            return super().invoke(ctx)


cli = ServaGroup("serva", help="Serva operator commands.",
                 commands=[*COMMANDS, migrate_commands])


def main():
    """The `serva` console script. A database that cannot be written now (busy, full,
    read-only) is one line and exit status 2."""
    try:
        cli.main(prog_name="serva")
    except Exception as error:
        if not db.unavailable(error):
            raise
        click.echo(f"error: the database cannot be written now: "
                   f"{getattr(error, 'orig', None) or error}", err=True)
        sys.exit(2)
