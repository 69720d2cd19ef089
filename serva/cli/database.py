"""`serva init-db` and `serva schema-sql`: the database's schema, created or upgraded, and
its DDL as schema.sql holds it. (Alembic's own commands are `serva db …`.)"""
import click
from flask.cli import with_appcontext

from .. import db
from .common import fail


@click.command("init-db")
@with_appcontext
@click.option("--reset", is_flag=True, help="Drop every table first (destroys all data).")
def init_db_command(reset):
    """Create the database at the head schema revision, or upgrade it there (keeps data)."""
    try:
        click.echo(db.init_schema(db.get_engine(), reset=reset))
    except db.SchemaMismatch as error:
        fail(str(error))


@click.command("schema-sql")
def schema_sql_command():
    """Print the schema DDL (this is what schema.sql holds)."""
    click.echo(db.schema_sql(), nl=False)
