"""Production entry point: `waitress-serve --listen=127.0.0.1:8000 wsgi:app`.

Refuses to start on a database that `serva init-db` has not prepared."""
import logging

from serva import create_app
from serva.db import get_engine, schema_version

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
app = create_app()
with app.app_context():
    if schema_version(get_engine()) is None:
        raise SystemExit("the database is not initialized: run `serva init-db` (and `serva demo` "
                         "for demo data) first")
