"""The operator console at /admin/: the CLI's rules in a browser.

Server-rendered pages over the same domain functions as `serva …` commands (each change with
its activity entry, in its transaction), behind its own sign-in with a second factor for
owners, its own cookie and server-side sessions (serva/console/base.py)."""
from . import accounts, auth, catalog, orders, overview, payments, queues  # noqa: F401 - the views
from .base import ConsoleSessions, bp
from .formatting import FILTERS

__all__ = ["ConsoleSessions", "init_app"]


def init_app(app):
    """Register the console; the app's CSRFProtect (made by the dashboard) checks its forms."""
    for name, function in FILTERS.items():
        app.jinja_env.filters.setdefault(f"console_{name}", function)
    app.register_blueprint(bp)
