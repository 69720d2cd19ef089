"""Alembic's environment for Serva: the app's own engine (Flask-SQLAlchemy's, with Serva's
SQLite settings), one transaction for a whole run (`serva.db.migrating`: on SQLite foreign keys
are off while batch operations copy tables, and checked before the commit), batch mode so
that revisions altering SQLite tables work, and the first release's database adopted as
revision `first_release` before an upgrade (or downgrade, or stamp) moves it on."""
from alembic import context

from serva import db, migrations, schema

config = context.config


def _configure(**options):
    context.configure(target_metadata=schema.metadata, render_as_batch=True, compare_type=True,
                      compare_server_default=migrations.compare_server_default,
                      version_table=migrations.VERSION_TABLE,
                      process_revision_directives=_no_empty_revision, **options)


def _no_empty_revision(_context, _revision, directives):
    """`serva db migrate` with nothing to change writes no empty revision file."""
    if getattr(config.cmd_opts, "autogenerate", False) and directives[0].upgrade_ops.is_empty():
        directives[:] = []
        print("No changes in schema detected.")


def _moves_the_version() -> bool:
    """upgrade, downgrade and stamp name a destination; current, check, revision do not."""
    try:
        return context.get_revision_argument() is not None
    except KeyError:
        return False


def _run(connection):
    _configure(connection=connection)
    with context.begin_transaction():
        if _moves_the_version() and migrations.state(connection).kind == "first_release":
            context.get_context().stamp(context.script, migrations.FIRST_RELEASE)
        context.run_migrations()


def run_online():
    connection = config.attributes.get("connection")
    if connection is not None:  # serva init-db: already inside db.migrating()
        _run(connection)
        return
    from flask import current_app
    with db.migrating(current_app.extensions["serva.engine"]) as connection:
        _run(connection)


def run_offline():
    from flask import current_app
    _configure(url=current_app.extensions["serva.engine"].url, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
