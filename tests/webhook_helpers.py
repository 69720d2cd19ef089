"""What the webhook tests share: an app whose webhooks may go to 127.0.0.1, a partner with an
endpoint pointed at a receiver, orders to move, and the worker's delivery pass."""
import itertools
import threading

from sqlalchemy import select, update

from serva import create_app, db, fulfilment, orders as orders_repo
from serva.schema import webhook_events
from serva.webhooks import delivery, endpoints

from conftest import make_partner

LINK = "https://example.com/post/1"
_QUANTITIES = itertools.count(100)  # the purchase guard refuses a repeat of one order


def webhook_app(url, **config):
    app = create_app({"TESTING": True, "SECRET_KEY": "test-secret", "DATABASE_URL": url,
                      "WEBHOOK_ALLOW_PRIVATE": True, "RATE_LIMIT_PER_KEY": "", **config})
    db.init_schema(app.extensions["serva.engine"])
    return app


def listening_partner(app, url, email="partner@example.com"):
    """(account_id, raw key, webhook secret) of a partner whose endpoint is `url`."""
    account_id, key = make_partner(app, email)
    with app.app_context(), db.write() as conn:
        secret = endpoints.set_url(conn, account_id, url, allow_private=True)
    return account_id, key, secret


def place(client, key, service="1234", quantity=None):
    quantity = str(next(_QUANTITIES)) if quantity is None else quantity
    response = client.post("/api/v1", data={"action": "add", "key": key, "service": service,
                                            "link": LINK, "quantity": quantity})
    assert response.status_code == 200, response.text
    assert "order" in response.get_json(), response.text
    return response.get_json()["order"]


def set_status(app, order_id, status, **values):
    with app.app_context(), db.write() as conn:
        return orders_repo.set_status(conn, order_id, status, **values)


def deliver(app, owner="test-worker"):
    """One delivery pass (everything due now); counts per result."""
    with app.app_context():
        return delivery.delivery_pass(owner, fulfilment.settings(), threading.Event())


def events(app):
    with app.app_context(), db.read() as conn:
        return conn.execute(select(webhook_events).order_by(webhook_events.c.id)).all()


def make_due(app):
    """Time passes: every waiting event is due now."""
    with app.app_context(), db.write() as conn:
        conn.execute(update(webhook_events).where(webhook_events.c.state == "pending")
                     .values(next_attempt_at=0))
