"""Production entry point: `waitress-serve --listen=127.0.0.1:8000 wsgi:app`.

Refuses to start on a database that `serva init-db` has not prepared, that is behind or ahead
of this Serva's schema revision (it never migrates by itself), or that it cannot write."""
from serva import create_app
from serva.db import NotWritable, SchemaMismatch, check_writable, get_engine, require_schema
from serva.serve import configure_logging, load_frozen


def checked_app():
    app = create_app()
    with app.app_context():
        require_schema()
        check_writable(get_engine())
    return app


configure_logging()  # as `serva serve` does: INFO and up on stderr, each line written at once
try:
    app = load_frozen(checked_app)  # as `serva serve`'s workers: startup's objects frozen
except (SchemaMismatch, NotWritable) as error:
    raise SystemExit(f"serva: {error}") from None
