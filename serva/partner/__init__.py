"""The partner's own records in the dashboard, beside /profile/api/: its orders
(/profile/orders/), its statement (/profile/statement/) and its webhook endpoint
(/profile/webhook/). Pages that work without JavaScript and at phone width; each list has a
CSV export."""
from . import orders, statement, webhook  # noqa: F401 - their routes are the blueprint's
from .blueprint import bp


def init_app(app):
    app.register_blueprint(bp)
