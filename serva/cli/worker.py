"""`serva worker`: the fulfilment loop (hand-overs to providers, status sync) as a process."""
import os
import sys

import click
from flask import current_app
from flask.cli import with_appcontext

from .. import fulfilment
from .common import require_schema


@click.command("worker")
@with_appcontext
@click.option("--once", is_flag=True, help="One pass (hand-overs and status sync), then exit.")
def worker_command(once):
    """Hand orders over to providers and sync their status; runs until SIGTERM."""
    require_schema()
    if hasattr(os, "nice"):  # below the API in CPU priority (SERVA_WORKER_NICE)
        os.nice(current_app.config["WORKER_NICE"])
    if once:
        click.echo(fulfilment.run_pass().line())
        return
    fulfilment.run_forever(echo=lambda line: click.echo(line, nl=True) or sys.stdout.flush())
