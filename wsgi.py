"""Production entry point: `waitress-serve --listen=127.0.0.1:8000 wsgi:app`.

Refuses to start on a database that `serva init-db` has not prepared, or that it cannot write."""
from serva import create_app
from serva.db import NotWritable, check_writable, get_engine, schema_version
from serva.serve import configure_logging

configure_logging()  # as `serva serve` does: INFO and up on stderr, written in blocks
app = create_app()
with app.app_context():
    if schema_version(get_engine()) is None:
        raise SystemExit("the database is not initialized: run `serva init-db` (and `serva demo` "
                         "for demo data) first")
    try:
        check_writable(get_engine())
    except NotWritable as error:
        raise SystemExit(f"serva: {error}") from None
