"""`serva worker`: the fulfilment loop (hand-overs to providers, status sync) as a process."""
import sys

import click
from flask.cli import with_appcontext

from .. import fulfilment
from .common import require_schema


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
