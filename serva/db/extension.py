"""The app's engine: Flask-SQLAlchemy's (`sqla.engine`), built from SQLALCHEMY_DATABASE_URI and
SQLALCHEMY_ENGINE_OPTIONS with Serva's pool settings and events added (serva.db.engine).
Statements stay SQLAlchemy Core on plain connections; Serva has no ORM models."""
import os

import click
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.engine import make_url

from .. import migrations, schema
from .engine import configure_engine, engine_options
from .lifecycle import require_schema

# Flask-SQLAlchemy's extension object. Its docs call it `db`, but `serva.db` is this package
# (transactions, the home every caller already imports), so the extension is `db.sqla`.
sqla = SQLAlchemy(metadata=schema.metadata, add_models_to_shell=False)
migrate = Migrate()


def database_uri(app):
    """SQLALCHEMY_DATABASE_URI as Flask-SQLAlchemy's users set it (a relative SQLite path is
    in the instance folder), else SERVA_DATABASE_URL / DATABASE_URL (relative to the working
    directory, as it always was)."""
    uri = app.config.get("SQLALCHEMY_DATABASE_URI")
    if uri:
        return uri
    url = make_url(app.config["DATABASE_URL"])
    if (url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
            and not url.database.startswith("file:") and not os.path.isabs(url.database)):
        url = url.set(database=os.path.abspath(url.database))
    return url.render_as_string(hide_password=False)


def init_app(app):
    uri = app.config["SQLALCHEMY_DATABASE_URI"] = database_uri(app)
    ours = engine_options(uri, app.config["WRITE_WAIT_SECONDS"])
    theirs = dict(app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    if "connect_args" in ours and "connect_args" in theirs:
        theirs["connect_args"] = {**ours["connect_args"], **theirs["connect_args"]}
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {**ours, **theirs}
    sqla.init_app(app)
    with app.app_context():
        engine = configure_engine(sqla.engine, app.config["SQLITE_SYNCHRONOUS"],
                                  app.config["WRITE_WAIT_SECONDS"])
    app.config["DATABASE_URL"] = engine.url.render_as_string(hide_password=False)
    app.extensions["serva.engine"] = engine  # what get_engine() returns
    migrate.init_app(app, sqla, directory=migrations.DIRECTORY)
    if click.get_current_context(silent=True) is None:
        # Serving: refuse a database behind or ahead of head. The CLI checks per command
        # instead, so `serva init-db` and `serva db upgrade` can open an old database.
        require_schema(engine, empty_ok=True)
